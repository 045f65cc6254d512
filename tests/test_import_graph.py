"""The package's import graph: arrows point one way (DESIGN.md §2), no cycle, client and server apart.

Every module of ``fedbip_nvflare`` is parsed with ``ast``; every import statement counts, at module level or inside
a function (a lazy import is still an arrow). ``from a import b`` is an edge to ``a.b`` when that is a module, else
to ``a``; importing a submodule from outside its package also runs the package's ``__init__``, so it is an edge to
each package on the way too.
"""

import ast
import pathlib
from typing import Dict, List, Optional, Set

import pytest

import fedbip_nvflare

PACKAGE = "fedbip_nvflare"
ROOT = pathlib.Path(fedbip_nvflare.__file__).parent

# layer -> the layers it must never import (a module's layer is its first name below the package)
FORBIDDEN = {
    "core": {"models", "data", "client", "server", "recipes", "modalities"},
    "models": {"client", "server", "recipes", "data", "modalities"},
    "data": {"client", "server", "models", "recipes", "modalities"},
    "client": {"server", "recipes", "modalities"},
    "server": {"client", "recipes", "modalities"},
}


def _modules() -> Dict[str, pathlib.Path]:
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> Optional[str]:
    if not node.level:
        return node.module
    base = module.split(".") if _is_package(module) else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _with_packages(importer: str, target: str) -> Set[str]:
    """``target`` and the packages its import runs that ``importer`` is not inside of."""
    parts = target.split(".")
    found = {target}
    for k in range(2, len(parts)):
        package = ".".join(parts[:k])
        if not (importer == package or importer.startswith(package + ".")):
            found.add(package)
    return found


def _imports(module: str) -> Set[str]:
    targets: Set[str] = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, node)
            if base is None:
                continue
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    edges: Set[str] = set()
    for target in targets:
        if target in MODULES and target != PACKAGE:
            edges |= _with_packages(module, target)
    edges.discard(module)
    return edges


GRAPH: Dict[str, Set[str]] = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _cycles() -> List[List[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
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

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_the_walk_sees_the_package():
    assert {"fedbip_nvflare.core.aggregation", "fedbip_nvflare.client.site", "fedbip_nvflare.server.state"} <= set(
        MODULES
    )
    # a function-level import is an edge, and `from package import module` resolves to the module
    assert "fedbip_nvflare.recipes.dropin" in GRAPH[PACKAGE]
    assert "fedbip_nvflare.assets" in GRAPH["fedbip_nvflare.models.resolve"]


def test_no_import_cycle():
    assert _cycles() == []


def test_client_and_server_never_import_each_other():
    crossing = [
        f"{m} -> {t}" for m, targets in GRAPH.items() for t in targets if {_layer(m), _layer(t)} == {"client", "server"}
    ]
    assert crossing == []


def _reachable(start: str) -> Set[str]:
    seen: Set[str] = set()
    todo = [start]
    while todo:
        for target in GRAPH[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


@pytest.mark.parametrize("side, other", [("server", "client"), ("client", "server")])
def test_client_and_server_never_reach_each_other(side, other):
    """Not even through a module on top (e.g. ``modalities``, which joins the client's trainers)."""
    reached = [f"{m} ~> {t}" for m in MODULES if _layer(m) == side for t in sorted(_reachable(m)) if _layer(t) == other]
    assert reached == []


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_arrows_point_one_way(layer):
    wrong = [
        f"{m} -> {t}"
        for m, targets in GRAPH.items()
        if _layer(m) == layer
        for t in sorted(targets)
        if _layer(t) in FORBIDDEN[layer]
    ]
    assert wrong == []


def test_core_imports_only_core():
    outside = [
        f"{m} -> {t}" for m, targets in GRAPH.items() if _layer(m) == "core" for t in targets if _layer(t) != "core"
    ]
    assert outside == []
