"""The package's import graph: no loops, and no layer importing a higher one.

Layers, lowest first (DESIGN.md): `core` and `config` are pure and import neither each
other's I/O nor anything above; `dataplane` (the worker) imports those; `controlplane`
(the supervisor) may import everything below it; `cli` sits on top. `TYPE_CHECKING`
imports count: a lower module that knows a higher one's types is a loop in the design.
The pure core also never imports asyncio (it is driven by values and bytes).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "fastgw"
LAYER = {"core": 0, "config": 0, "dataplane": 1, "controlplane": 2, "cli": 3}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            parts = name.split(".")
            is_pkg = path.name == "__init__.py"
            base = node.module if node.level == 0 else ".".join(
                parts[: len(parts) - node.level + (1 if is_pkg else 0)] + [node.module])
            for alias in node.names:
                for candidate in (f"{base}.{alias.name}", base):
                    if candidate in modules and candidate != name:
                        found.add(candidate)
                        break
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in modules and alias.name != name:
                    found.add(alias.name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER.get(parts[1]) if len(parts) > 1 else None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_loops() -> None:
    assert _cycles(_graph()) == []


def test_no_layer_imports_a_higher_one() -> None:
    wrong = []
    for module, imported in _graph().items():
        mine = _layer(module)
        for other in imported:
            theirs = _layer(other)
            if mine is not None and theirs is not None and theirs > mine:
                wrong.append(f"{module} -> {other}")
    assert wrong == []


def test_core_and_config_do_no_io() -> None:
    """The pure layers never import asyncio or sockets (config's store lives elsewhere)."""
    offenders = []
    for path in list((ROOT / "core").rglob("*.py")) + list((ROOT / "config").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for n in names:
                if n.split(".")[0] in ("asyncio", "socket", "uvloop"):
                    offenders.append(f"{path.relative_to(ROOT)}: {n}")
    assert offenders == []


def test_the_checker_sees_a_loop() -> None:
    """The checker itself: a two-module loop is found."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
