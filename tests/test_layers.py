"""The import layers the README's Architecture section states (issue 24): ``methods/`` never imports
``benchmarks/``; a command module (``benchmarks/commands/``) imports no other command, only the
shared ``arguments`` and ``common``; nothing below the command line imports it; and no project
module imports itself back through others (any import, at module level or in a function)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("benchmarks", "methods")
SHARED_BY_COMMANDS = {"benchmarks.commands.arguments", "benchmarks.commands.common"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {_module_name(path): path for package in PACKAGES for path in (ROOT / package).rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports (``from package import module`` counts as the module;
    relative imports resolved; ``if TYPE_CHECKING`` imports count too)."""
    package = _module_name(path).split(".")
    package = package if path.name == "__init__.py" else package[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            parent = package[: len(package) - node.level + 1] if node.level else []
            base = ".".join([*parent, *([node.module] if node.module else [])])
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    for name in graph:  # importing a.b runs the package a first: not an edge of a's own choosing
        graph[name] -= {parent for parent in graph if name.startswith(parent + ".")}
    return graph


def test_methods_never_import_the_harness():
    wrong = {name: sorted(i for i in imported if i.startswith("benchmarks"))
             for name, imported in _graph().items() if name.startswith("methods")}
    assert not {name: imported for name, imported in wrong.items() if imported}


def test_no_command_imports_another_and_nothing_below_imports_the_command_line():
    graph = _graph()
    commands = {name for name in graph if name.startswith("benchmarks.commands.")} - SHARED_BY_COMMANDS
    assert len(commands) >= 13, sorted(commands)
    for name, imported in graph.items():
        if name in commands:
            assert not imported & commands, (name, imported & commands)
        elif name not in ("benchmarks.cli", "benchmarks.commands", "benchmarks.__main__"):
            assert not imported & (commands | {"benchmarks.cli"}), (name, imported & (commands | {"benchmarks.cli"}))


def test_no_import_cycle():
    graph, cycles = _graph(), []

    def visit(name: str, path: list[str], done: set[str]) -> None:
        for imported in sorted(graph[name]):
            if imported in path:
                cycles.append([*path[path.index(imported):], imported])
            elif imported not in done:
                visit(imported, [*path, imported], done)
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        if name not in done:
            visit(name, [name], done)
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)
