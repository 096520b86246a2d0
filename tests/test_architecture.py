"""Imports flow one way: protocols → framework's public API; the core → nothing that does I/O."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = [
    "framing",
    "codecs",
    "security",
    "errors.py",
    "ratelimit.py",
    "messages.py",
    "pipeline.py",
    "_registry.py",
    "_flat.py",
]
RUNTIME_MODULES = {"app", "runtime", "transports", "cli", "config", "blocking"}


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement in a file, nested ones too."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def python_files(*parts: str) -> list[Path]:
    files: list[Path] = []
    for part in parts:
        path = ROOT.joinpath(*part.split("/"))
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


@pytest.mark.parametrize("path", python_files("protocols"), ids=lambda p: str(p.relative_to(ROOT)))
def test_protocols_use_only_the_public_api(path: Path) -> None:
    for module, names in imports(path):
        if module == "framework" or module.startswith("framework."):
            assert module in ("framework", "framework.testing"), (
                f"{path.name} imports {module}: protocols use `from framework import ...`"
            )
            private = [name for name in names if name.startswith("_")]
            assert not private, f"{path.name} imports private names {private}"


@pytest.mark.parametrize("path", python_files("framework"), ids=lambda p: str(p.relative_to(ROOT)))
def test_framework_never_imports_protocols(path: Path) -> None:
    for module, _ in imports(path):
        assert module.split(".")[0] != "protocols", f"{path.name} imports {module}"


@pytest.mark.parametrize(
    "path",
    python_files(*(f"framework/{part}" for part in CORE)),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_core_never_imports_the_runtime(path: Path) -> None:
    for module, _ in imports(path):
        parts = module.split(".")
        assert not (parts[0] == "framework" and len(parts) > 1 and parts[1] in RUNTIME_MODULES), (
            f"{path.name} imports {module}: the core must not depend on the I/O layers"
        )
