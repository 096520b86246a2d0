"""The layers, read from the source: imports flow one way and never in a circle.

protocols → ``framework``'s public API; cli → runtime → core; testing →
runtime and core. No module imports another module's ``_private`` names, and
no chain of imports inside ``framework/`` comes back to where it started.
Imports under ``if TYPE_CHECKING:`` are annotations only and do not count;
imports inside functions do.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORK = ROOT / "framework"

#: What each layer may import from ``framework``, besides itself.
ALLOWED = {
    "core": set(),
    "runtime": {"core"},
    "cli": {"runtime", "core"},
    "testing": {"runtime", "core"},
}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import that runs, nested ones too."""
    found: list[tuple[str, list[str]]] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for rest in child.orelse:
                    visit(rest)
                continue
            if isinstance(child, ast.Import):
                found.extend((alias.name, []) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.append((child.module, [alias.name for alias in child.names]))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "framework" and len(parts) > 1 else None


def ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", python_files("protocols"), ids=ids)
def test_protocols_use_only_the_public_api(path: Path) -> None:
    for module, names in imports(path):
        if module == "framework" or module.startswith("framework."):
            assert module in ("framework", "framework.testing"), (
                f"{path.name} imports {module}: protocols use `from framework import ...`"
            )
            private = [name for name in names if name.startswith("_")]
            assert not private, f"{path.name} imports private names {private}"


@pytest.mark.parametrize("path", python_files("framework"), ids=ids)
def test_framework_never_imports_protocols(path: Path) -> None:
    for module, _ in imports(path):
        assert module.split(".")[0] != "protocols", f"{path.name} imports {module}"


@pytest.mark.parametrize("path", python_files("framework"), ids=ids)
def test_layers_import_only_the_layers_below(path: Path) -> None:
    own = layer(module_name(path))
    if own not in ALLOWED:
        return  # framework/__init__.py and __main__.py sit above every layer
    for module, _ in imports(path):
        other = layer(module)
        if other is None or other == own or module.split(".")[0] != "framework":
            continue
        assert other in ALLOWED[own], f"{ids(path)} ({own}) imports {module} ({other})"


@pytest.mark.parametrize("path", python_files("framework"), ids=ids)
def test_no_module_takes_another_modules_private_names(path: Path) -> None:
    for module, names in imports(path):
        if module.split(".")[0] != "framework":
            continue
        private = [name for name in names if name.startswith("_") and not name.startswith("__")]
        assert not private, f"{ids(path)} imports private names {private} from {module}"


def test_there_is_no_import_cycle_in_framework() -> None:
    graph: dict[str, set[str]] = {}
    known = {module_name(path): path for path in python_files("framework")}
    for name, path in known.items():
        edges: set[str] = set()
        for module, names in imports(path):
            # ``from package import submodule`` depends on the submodule, not
            # on what the package's __init__ imports.
            submodules = {f"{module}.{n}" for n in names} & known.keys()
            targets = submodules if submodules and len(submodules) == len(names) else {module}
            edges |= {target for target in targets | submodules if target in known}
        edges.discard(name)
        graph[name] = edges
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def walk(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt])
            elif nxt not in state:
                walk(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            walk(start, [start])
    assert not cycles, "import cycles: " + "; ".join(" → ".join(c) for c in cycles)


def test_the_checks_see_every_layer() -> None:
    layers = {layer(module_name(path)) for path in python_files("framework")}
    assert set(ALLOWED) <= layers
