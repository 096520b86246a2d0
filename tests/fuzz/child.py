"""The fuzzing process for one target: ``python -m tests.fuzz.child TARGET [libFuzzer flags]``.

libFuzzer owns the process it runs in (it exits on the first crash), so the
runner starts one of these per target. ``framework`` is imported here for
the first time, inside ``atheris.instrument_imports``, so its bytecode
reports coverage; the targets themselves (and ``framework.testing``, whose
``BUFFER_SLACK`` they use) are not instrumented.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable
from hashlib import sha1
from pathlib import Path
from typing import Any

import atheris


def _testing_kit() -> list[str]:
    """The modules of ``framework.testing``: the kit the checks use, not code under test.

    Found on disk: importing them to ask would import ``framework`` uninstrumented.
    """
    spec = importlib.util.find_spec("framework")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    kit = Path(next(iter(spec.submodule_search_locations))) / "testing"
    return ["framework.testing", *(f"framework.testing.{path.stem}" for path in kit.glob("*.py"))]


#: Where the runner wants a failing input kept (``tests/fuzz/crashes``).
KEEP = "WIREKIT_FUZZ_KEEP"


def _keeping(target: Any, directory: str | None) -> Callable[[bytes], None]:
    """``target.one_input``, saving a failing input itself before libFuzzer does.

    libFuzzer writes the reproducer as it exits, and a signal arriving then
    (its own timer's SIGALRM) can end the process first.
    """
    if directory is None:
        return target.one_input

    def one_input(data: bytes) -> None:
        try:
            target.one_input(data)
        except Exception:
            digest = sha1(data).hexdigest()
            (Path(directory) / f"{target.name}-failing-{digest}").write_bytes(data)
            raise

    return one_input


def main(argv: list[str]) -> None:
    """Instrument ``framework``, then hand the target to libFuzzer."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m tests.fuzz.child TARGET [libFuzzer flags]")
    with atheris.instrument_imports(include=["framework"], exclude=_testing_kit()):
        import framework  # noqa: F401 - the instrumented import is the point
        from tests.fuzz.targets import TARGETS

    target = TARGETS[argv[1]]
    # libFuzzer re-runs argv[0] through the shell for -minimize_crash and -fork:
    # make that re-run this module with the same target.
    again = f"{sys.executable} -m tests.fuzz.child {argv[1]}"
    atheris.Setup([again, *argv[2:]], _keeping(target, os.environ.get(KEEP)))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
