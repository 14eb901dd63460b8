"""Imports inside ``tidal.ml`` point one way: no two modules import each other, even lazily.

Every ``import`` counts, including those under ``TYPE_CHECKING`` and inside functions: a
lazy import still ties two modules together, and a cycle is what lets a later change turn
into an import-order bug.
"""

from __future__ import annotations

import ast
from pathlib import Path

import tidal.ml

ML = Path(tidal.ml.__file__).parent


def _module_names() -> dict[str, Path]:
    return {f"tidal.ml.{p.stem}": p for p in ML.glob("*.py") if p.stem != "__init__"}


def _imports(path: Path, known: set[str]) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        out.update(n for n in names if n in known)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_in_tidal_ml() -> None:
    mods = _module_names()
    graph = {m: _imports(p, set(mods)) - {m} for m, p in mods.items()}
    assert "tidal.ml.handler" in graph["tidal.ml.swap"]  # the scan sees real imports
    assert _cycles(graph) == []


def test_public_names_stay_where_the_docs_use_them() -> None:
    from tidal.ml import compress, evalset, registry, versions

    assert compress.EvalSet is evalset.EvalSet
    assert compress.read_features is evalset.read_features
    for name in ("Canary", "Lineage", "ModelVersion", "Stages", "parse_version"):
        assert getattr(registry, name) is getattr(versions, name)
    for module in (compress, registry):
        assert all(hasattr(module, name) for name in module.__all__)
