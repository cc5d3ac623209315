"""The package's import graph: floors, lowest first, and no cycle between modules.

A module imports from its own floor or a lower one, never a higher one, at the top of the file
or inside a function alike: what the statistics, the store and the datasets do is usable, and
testable, without the commands, the workflow or the dashboard above them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import latentdask

PACKAGE = Path(latentdask.__file__).parent

#: the floors, lowest first; a package or top-level module of latentdask is on exactly one
FLOORS: list[set[str]] = [
    {"_version", "errors", "location", "progress", "device", "output", "reduction", "testing"},
    {"cluster"},
    {"data"},
    {"model"},
    {"store"},
    {"stats"},
    {"encode", "generate", "render"},
    {"workflow"},
    {"cli", "bench"},
    {"__init__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Every latentdask module → the latentdask modules it imports (a name imported from a package
    counts as its submodule when there is one)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            assert not (isinstance(node, ast.ImportFrom) and node.level), f"{name}: a relative import"
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "latentdask":
                targets = [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.split(".")[0] == "latentdask"]
            else:
                continue
            for target in targets:
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def floor(module: str) -> int:
    parts = module.split(".")
    place = parts[1] if len(parts) > 1 else "__init__"
    found = [k for k, names in enumerate(FLOORS) if place in names]
    assert len(found) == 1, f"{place} is on no floor (or on several): place it in FLOORS"
    return found[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a module from a higher floor than its own, as "module → imported"."""
    return sorted(f"{m} → {t}" for m, targets in graph.items() for t in targets if floor(t) > floor(m))


def test_no_module_imports_from_a_higher_floor() -> None:
    found = upward(imports())
    assert not found, "imports from a higher floor:\n" + "\n".join(found)


def test_no_two_modules_import_each_other_even_through_others() -> None:
    assert cycles(imports()) == []


def test_the_check_sees_an_upward_import_and_a_cycle() -> None:
    """The checks above can fail: a store module importing the dashboard, two modules in a ring."""
    bad = {"latentdask.store.points": {"latentdask.render.dashboard.app", "latentdask.errors"}}
    assert upward(bad) == ["latentdask.store.points → latentdask.render.dashboard.app"]
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(ring) == [["a", "b", "c"]]
    assert "latentdask.store.rows" in imports()["latentdask.generate.score"]
