"""The import graph of ``src/tidal``: no cycles, and every import points down a layer.

The layers of DESIGN.md, top to bottom::

    cli -> apps -> pipeline -> runtime / flink -> io / ml / observe -> core -> errors

Every module under ``src/tidal`` is parsed with :mod:`ast` (nothing is imported), and every
``import tidal...`` / ``from tidal... import ...`` counts: at module level, inside a
function (a lazy import is still a dependency) and under ``if TYPE_CHECKING:`` (a type
named in a signature is part of what the module means, and a cycle through it still ties
two modules together). A module may import its own layer or any layer below; the layers
``io``, ``ml`` and ``observe`` sit side by side and may use each other.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: dict[str, int] = {
    "errors": 0,
    "core": 1,
    "io": 2,
    "ml": 2,
    "observe": 2,
    "runtime": 3,
    "flink": 3,  # Tidal steps as PyFlink functions: uses ml, core and runtime's snapshots
    "pipeline": 4,
    "apps": 5,
    "cli": 6,
}
"""Layer of each top-level part of the package (higher imports lower)."""

FACADES: dict[str, str] = {
    "tidal": "pipeline",  # the curated flat API: the builder and what it needs
    "tidal.testing": "pipeline",  # in-memory helpers and run(): beside the builder
    "tidal.aggregations": "core",  # re-exports of tidal.core.aggregations
    "tidal.windows": "core",  # re-exports of tidal.core.windows
    "tidal.__main__": "cli",
}
"""Modules outside the layer packages, and the layer each one belongs to."""


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "tidal").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement in ``tree``, at any depth."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``tidal`` modules it imports (a name imported from a package that is
    itself a module counts as that module)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(a.name for a in node.names)
                continue
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                targets.add(sub if sub in modules else base)
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def layer_of(module: str) -> str:
    """The layer a module belongs to."""
    if module in FACADES:
        return FACADES[module]
    part = module.split(".")[1]
    if part not in LAYERS:
        msg = f"{module} belongs to no layer: add it to LAYERS or FACADES in {__file__}"
        raise AssertionError(msg)
    return part


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def a_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """One shortest cycle through the component's first module, as a path back to it."""
    start, inside = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & inside):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    return component  # unreachable for a strongly connected component


def test_the_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert "tidal.core.batch" in graph["tidal.pipeline"]  # module level
    assert "tidal.runtime.executor" in graph["tidal.pipeline"]  # inside Pipeline.run
    assert "tidal.apps.demo" in graph["tidal.cli"]  # inside the demo command
    assert "tidal.ml.handler" in graph["tidal.pipeline"]  # under TYPE_CHECKING
    assert all(t.startswith("tidal") for targets in graph.values() for t in targets)


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert a_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    found = cycles(graph)
    shown = "\n".join(f"  {', '.join(c)}\n    e.g. {' -> '.join(a_cycle(graph, c))}" for c in found)
    assert not found, (
        f"{len(found)} group(s) of modules in src/tidal import each other; move what they "
        f"share into a lower module:\n{shown}"
    )


def test_every_import_points_down_a_layer() -> None:
    graph = import_graph()
    upward = sorted(
        f"  {src} ({layer_of(src)}) imports {dst} ({layer_of(dst)})"
        for src, targets in graph.items()
        for dst in targets
        if LAYERS[layer_of(dst)] > LAYERS[layer_of(src)]
    )
    levels = sorted(set(LAYERS.values()), reverse=True)
    order = " -> ".join("/".join(n for n in LAYERS if LAYERS[n] == level) for level in levels)
    assert not upward, f"imports that reach up a layer ({order}):\n" + "\n".join(upward)


@pytest.mark.parametrize("module", sorted(_modules()))
def test_every_module_has_a_layer(module: str) -> None:
    assert layer_of(module) in LAYERS
