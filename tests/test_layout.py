"""The layout's arrows (README, "Layout"): each folder imports only the folders below it.

    experiments --> simulations --> server --> strategies --> tasks
                    simulations --> clients -------------> tasks
                    simulations --> deploy --------------> tasks

Imports are read statically (every `import` in a file, wherever it stands), so a lazy import
inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import functools
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {
    "tasks": set(),
    "strategies": {"tasks"},
    "clients": {"tasks"},
    "deploy": {"tasks"},
    "server": {"strategies", "tasks"},
    "simulations": {"server", "clients", "strategies", "deploy", "tasks"},
    "experiments": {"simulations", "server", "clients", "strategies", "deploy", "tasks"},
}


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The project's modules a file imports (`from strategies import fedbn` names flowerbed.strategies.fedbn)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                         for alias in node.names)
    return found & modules


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """module -> the project's modules it imports, for every file of the layout's folders."""
    files = {"flowerbed." + ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p
             for package in ALLOWED for p in sorted((ROOT / package).rglob("*.py"))}
    return {name: imported_modules(path, set(files)) - {name} for name, path in files.items()}


def test_every_folder_imports_only_what_the_design_allows():
    wrong = []
    for module, imports in import_graph().items():
        package = module.split(".")[1]
        for other in sorted({m.split(".")[1] for m in imports} - ALLOWED[package] - {package}):
            wrong.append(f"{module} imports {other}")
    assert not wrong, "\n".join(wrong)


def test_every_import_of_the_project_goes_through_the_one_name_flowerbed():
    """A bare `import tasks` would load a second copy of a module beside `flowerbed.tasks` (two
    registries) and break for a user whose own project has a `tasks.py` (issue 31, defect 4)."""
    bare = []
    for path in sorted(p for folder in [*ALLOWED, "tests"] for p in (ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            bare += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in ALLOWED]
    assert not bare, "\n".join(bare)


def test_no_import_cycles_between_files():
    """Within a folder too, files import one way: a cycle (cli -> bench -> cli) fails with its path."""
    graph = import_graph()
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the reading found the imports
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None
