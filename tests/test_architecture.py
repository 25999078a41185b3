"""The arrows of docs/architecture.md, checked on the source: every import of the package, module-level
or inside a function, except those only a type checker sees (``if TYPE_CHECKING:``). (What
``smoltui --help`` loads at run time is checked in test_cli.py.)"""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smoltui"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module named by an import statement in the file (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _graph() -> dict[str, set[str]]:
    """smoltui module -> the smoltui modules it imports."""
    return {name: {i for i in _imports(path) if i in MODULES and i != name} for name, path in MODULES.items()}


def _external(name: str) -> set[str]:
    return {i.split(".")[0] for i in _imports(MODULES[name]) if not i.startswith("smoltui")}


def _top_level_external(name: str) -> set[str]:
    return {i.split(".")[0] for i in _top_level_imports(name) if not i.startswith("smoltui")}


def _top_level_imports(name: str) -> set[str]:
    """What a module imports when it is imported (not what its functions import when called)."""
    names: set[str] = set()
    for node in ast.parse(MODULES[name].read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


GRAPH = _graph()


def test_the_package_imports_form_no_cycle() -> None:
    try:
        tuple(graphlib.TopologicalSorter(GRAPH).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check above can fail: a made-up edge back from the store to the core is a cycle."""
    graph = {name: set(deps) for name, deps in GRAPH.items()}
    graph["smoltui.orchestrator.store"].add("smoltui.core")
    with pytest.raises(graphlib.CycleError):
        tuple(graphlib.TopologicalSorter(graph).static_order())


@pytest.mark.parametrize("layer", ["smoltui.orchestrator", "smoltui.backends", "smoltui.tools"])
def test_no_layer_below_the_front_ends_imports_textual(layer: str) -> None:
    offenders = {name: sorted(_external(name) & {"textual", "rich"}) for name in MODULES
                 if name.startswith(layer) and _external(name) & {"textual"}}
    assert not offenders, offenders


def test_config_reaches_neither_the_orchestrator_nor_the_backends() -> None:
    reached = _reach(GRAPH, "smoltui.config")
    assert not {m for m in reached if m.startswith(("smoltui.orchestrator", "smoltui.backends"))}, reached


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("smoltui.backends", ("smoltui.orchestrator", "smoltui.core", "smoltui.cli", "smoltui.screens", "smoltui.app",
                          "smoltui.tools", "smoltui.server")),
    ("smoltui.tools", ("smoltui.orchestrator", "smoltui.backends", "smoltui.core", "smoltui.cli", "smoltui.screens",
                       "smoltui.app", "smoltui.server")),
    ("smoltui.orchestrator", ("smoltui.core", "smoltui.cli", "smoltui.screens", "smoltui.app", "smoltui.server")),
    # The server is a front end: it reaches the core and what is below, never another front end.
    ("smoltui.server", ("smoltui.cli", "smoltui.screens", "smoltui.app")),
])
def test_arrows_point_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    wrong = {name: sorted(d for d in deps if d.startswith(forbidden))
             for name, deps in GRAPH.items() if name.startswith(layer) and any(d.startswith(forbidden) for d in deps)}
    assert not wrong, wrong


def test_only_the_core_and_the_front_ends_build_a_core() -> None:
    """One composition root: the orchestrator, backends and tools never reach core.py."""
    importers = {name for name, deps in GRAPH.items() if "smoltui.core" in deps}
    front_ends = ("smoltui.cli", "smoltui.app", "smoltui.screens", "smoltui.server")
    assert importers and all(name.startswith(front_ends) for name in importers), importers


def test_the_server_never_imports_textual() -> None:
    offenders = {name for name in MODULES if name.startswith("smoltui.server") and _external(name) & {"textual"}}
    assert not offenders, offenders


@pytest.mark.parametrize("name", ["smoltui.server", "smoltui.server.client", "smoltui.server.locations",
                                  "smoltui.server.errors", "smoltui.cli.serve"])
def test_a_client_of_the_server_loads_neither_fastapi_nor_uvicorn(name: str) -> None:
    """What a front end imports to talk to a server (or to ask whether one runs) stays light: the
    web framework loads only in the process that serves."""
    top_level = {m: {i for i in _top_level_imports(m) if i in MODULES and i != m} for m in MODULES}
    reached = {name} | _reach(top_level, name)
    heavy = {m: sorted(_top_level_external(m) & {"fastapi", "uvicorn", "starlette"}) for m in reached}
    assert not {m: h for m, h in heavy.items() if h}, heavy


def test_the_command_line_imports_only_the_standard_library_until_a_command_runs() -> None:
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    for name in ("smoltui", "smoltui.__main__", "smoltui.cli", "smoltui.cli.parser"):
        imported = _top_level_imports(name)
        ours = {i for i in imported if i.startswith("smoltui")}
        assert ours <= {"smoltui", "smoltui.cli", "smoltui.cli.parser"}, (name, ours)
        assert {i.split(".")[0] for i in imported - ours} <= stdlib, (name, imported)
