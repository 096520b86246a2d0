"""``python -m benchmarks``: run the core throughput benchmarks."""

from benchmarks.cli import main

raise SystemExit(main())
