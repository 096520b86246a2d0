"""Import rules: the core never touches I/O, and nothing anywhere uses pickle.

The sans-I/O core (``framework/core/``: framing, codecs, messages, pipeline,
errors, the connection state machine) turns bytes
into values and back; it must run without an event loop, a socket or a
thread. These tests read the source with ``ast``, so an import hidden inside
a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FRAMEWORK = ROOT / "framework"

CORE = sorted((FRAMEWORK / "core").rglob("*.py"))
IO_MODULES = frozenset({"asyncio", "socket", "ssl", "selectors", "threading"})
SERIALIZERS_THAT_RUN_CODE = frozenset({"pickle", "marshal"})


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth: ``a.b`` counts as ``a`` and ``a.b``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            # ``from os import path`` may import a submodule: count os.path too.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    tops = {name.split(".")[0] for name in names}
    return names | tops


def forbidden_in(path: Path, forbidden: frozenset[str]) -> set[str]:
    return {name for name in imported_modules(path) if name.split(".")[0] in forbidden}


def test_the_core_module_list_is_not_empty() -> None:
    assert len(CORE) >= 10
    assert all(path.is_file() for path in CORE)


def test_import_finder_sees_nested_and_dynamic_imports(tmp_path: Path) -> None:
    source = tmp_path / "sample.py"
    source.write_text(
        "import os\n"
        "def later():\n"
        "    import asyncio.events\n"
        "    from socket import socketpair\n"
        "class K:\n"
        "    def m(self):\n"
        "        __import__('ssl')\n"
        "        importlib.import_module('threading')\n"
        "from . import sibling\n",
        encoding="utf-8",
    )
    assert forbidden_in(source, IO_MODULES) == {
        "asyncio",
        "asyncio.events",
        "socket",
        "socket.socketpair",
        "ssl",
        "threading",
    }


@pytest.mark.parametrize("path", CORE, ids=lambda path: str(path.relative_to(ROOT)))
def test_core_module_imports_no_io(path: Path) -> None:
    assert not forbidden_in(path, IO_MODULES)


def test_importing_framework_loads_no_io_module() -> None:
    # attrs imports threading for a lock of its own: count only what
    # importing wirekit adds beyond its dependencies.
    script = (
        "import sys\n"
        "import attrs, cattrs, msgpack\n"
        "before = set(sys.modules)\n"
        "import framework\n"
        f"io = {sorted(IO_MODULES)!r}\n"
        "added = sorted(m for m in io if m in sys.modules and m not in before)\n"
        "loaded = sorted(m for m in io if m in sys.modules and m != 'threading')\n"
        "print(added, loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[] []"


def test_no_file_in_the_repo_imports_pickle_or_marshal() -> None:
    files = [
        path
        for folder in ("framework", "protocols", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
    ]
    assert len(files) > 20
    offenders = {
        str(path.relative_to(ROOT)): found
        for path in files
        if (found := forbidden_in(path, SERIALIZERS_THAT_RUN_CODE))
    }
    assert not offenders
