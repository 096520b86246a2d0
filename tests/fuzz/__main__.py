"""``python -m tests.fuzz TARGET|all --seconds N``: fuzz, or replay a crash.

Examples::

    python -m tests.fuzz --list
    python -m tests.fuzz all --seconds 3 --jobs 2          # the CI run (make fuzz-short)
    python -m tests.fuzz delimited --seconds 600           # a long run of one target
    python -m tests.fuzz delimited --replay tests/fuzz/crashes/delimited-crash-1a2b...
    python -m tests.fuzz server --seconds 60 -- -seed=1    # flags after -- go to libFuzzer

Exits non-zero if any target crashed (or a replayed input still fails).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description="Coverage-guided fuzzing of wirekit (atheris)."
    )
    parser.add_argument("target", nargs="?", help="a target name, or 'all'")
    parser.add_argument("--list", action="store_true", help="list the targets and exit")
    parser.add_argument("--seconds", type=float, default=10.0, help="fuzzing time per target")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once")
    parser.add_argument(
        "--corpus-dir", type=Path, default=None, help="corpus root (default tests/fuzz/corpus)"
    )
    parser.add_argument(
        "--replay", nargs="+", type=Path, metavar="FILE", help="run these inputs once, no fuzzing"
    )
    parser.epilog = "Arguments after -- go to libFuzzer, e.g. -- -seed=7 -max_len=8192."
    return parser


def _replay(target: Any, files: list[Path]) -> int:
    failed = 0
    for path in files:
        try:
            count = target.run(path.read_bytes())
        except Exception:
            failed += 1
            print(f"{path}: FAILS", flush=True)
            traceback.print_exc()
        else:
            print(f"{path}: ok ({count} values decoded)", flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Parse the command line; fuzz or replay; return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after "--" is libFuzzer's (its flags start with one dash).
    libfuzzer = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = _parser().parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    from .runner import CORPUS, fuzz
    from .targets import TARGETS

    if args.list:
        for name, target in TARGETS.items():
            print(f"{name:<16} {target.description}")
        return 0
    if args.target is None:
        _parser().error("name a target, or 'all' (see --list)")
    if args.target != "all" and args.target not in TARGETS:
        _parser().error(f"unknown target {args.target!r}; one of: all, {', '.join(TARGETS)}")
    names = list(TARGETS) if args.target == "all" else [args.target]
    if args.replay:
        if len(names) != 1:
            _parser().error("--replay needs one target")
        target = TARGETS[names[0]]
        try:
            return _replay(target, args.replay)
        finally:
            if target.close is not None:
                target.close()
    results = fuzz(
        names,
        {name: TARGETS[name].seeds() for name in names},
        max_len={name: TARGETS[name].max_len for name in names},
        seconds=args.seconds,
        jobs=args.jobs,
        corpus_root=args.corpus_dir or CORPUS,
        extra=libfuzzer,
    )
    return 1 if any(result.crashed for result in results) else 0


if __name__ == "__main__":
    sys.exit(main())
