"""The fuzzing process for one target: ``python -m tests.fuzz.child TARGET [libFuzzer flags]``.

libFuzzer owns the process it runs in (it exits on the first crash), so the
runner starts one of these per target. ``framework`` is imported here for
the first time, inside ``atheris.instrument_imports``, so its bytecode
reports coverage; the targets themselves are not instrumented.
"""

from __future__ import annotations

import sys

import atheris


def main(argv: list[str]) -> None:
    """Instrument ``framework``, then hand the target to libFuzzer."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m tests.fuzz.child TARGET [libFuzzer flags]")
    with atheris.instrument_imports(include=["framework"]):
        import framework  # noqa: F401 - the instrumented import is the point
        from tests.fuzz.targets import TARGETS

    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target.one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
