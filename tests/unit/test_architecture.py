"""The package reads top-down: no import cycles (lazy imports included), leaf modules import
nothing of the package, and only the entry layer (api, magic) and Run.plot reach the views."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__import__("pp_notebook").__file__).parent
LEAVES = {"pp_notebook.snapshot", "pp_notebook.errors", "pp_notebook.options",
          "pp_notebook.batching", "pp_notebook.fmt", "pp_notebook.engine",
          "pp_notebook.views.theme", "pp_notebook.tracebacks"}
REACH_VIEWS = {"pp_notebook", "pp_notebook.api", "pp_notebook.magic", "pp_notebook.run"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each module's imports of the package, wherever they stand (functions included), except
    those under `if TYPE_CHECKING:`."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(block.test)
                       for node in ast.walk(block)}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    target = f"{base}.{alias.name}"
                    found.add(target if target in modules else base)
            elif isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def test_there_is_no_import_cycle():
    graph = imports()
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in graph[name]:
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(trail + [name, target]))
            if target not in state:
                visit(target, trail + [name])
        state[name] = "done"

    for name in graph:
        if name not in state:
            visit(name, [])


def test_leaf_modules_import_nothing_of_the_package():
    graph = imports()
    assert LEAVES <= set(graph)
    assert {name: graph[name] for name in LEAVES if graph[name]} == {}


def test_the_task_table_knows_the_statuses_and_nothing_else_of_the_package():
    assert imports()["pp_notebook.tasktable"] == {"pp_notebook.snapshot"}


def test_only_the_entry_layer_reaches_the_views():
    graph = imports()
    reaching = {name for name, targets in graph.items() if not name.startswith(
        "pp_notebook.views") and any(t.startswith("pp_notebook.views") for t in targets)}
    assert reaching <= REACH_VIEWS, reaching
    views = {name: targets for name, targets in graph.items()
             if name.startswith("pp_notebook.views")}
    assert not {name for name, targets in views.items() if "pp_notebook.run" in targets}


def test_the_package_ships_its_type_information():
    assert (PACKAGE / "py.typed").exists()


def test_an_engine_importing_the_engine_module_loads_nothing_else_of_the_client():
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, pp_notebook.engine; print(sorted(m for m in "
         "sys.modules if m.split('.')[0] in ('pp_notebook', 'pandas', 'matplotlib', "
         "'ipyparallel')))"], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "['pp_notebook', 'pp_notebook.engine']"


def test_every_public_name_resolves_from_the_package():
    package = importlib.import_module("pp_notebook")
    for name in package.__all__:
        assert getattr(package, name) is not None, name
    assert set(package.__all__) <= set(dir(package))
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        package.nonesuch  # noqa: B018
