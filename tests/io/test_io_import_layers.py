"""The modules of ``tidal.io`` import each other in one direction only (issue 8, section 6).

The graph is read from the source with ``ast`` (imports inside functions and
``TYPE_CHECKING`` blocks count too), so a lazy re-export cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tidal

SRC = Path(tidal.__file__).parent


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph(package: str) -> dict[str, set[str]]:
    root = SRC.parent.joinpath(*package.split("."))
    files = {_module(p): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            deps |= {t for t in targets if t in files and t != name}
        graph[name] = deps
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_io_modules_have_no_import_cycle() -> None:
    graph = _graph("tidal.io")
    assert "tidal.io.csv" in graph and "tidal.io.fileutil" in graph["tidal.io.csv"]
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_connectors_import_from_tidal_io_and_tidal_io_files() -> None:
    from tidal.io import CsvSource, JsonlSink, ParquetPartSink, files

    assert files.CsvSource is CsvSource and files.JsonlSink is JsonlSink
    assert files.ParquetPartSink is ParquetPartSink
