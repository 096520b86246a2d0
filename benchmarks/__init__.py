"""Throughput benchmarks for wirekit's sans-I/O core.

Run them with ``python -m benchmarks`` (or ``make bench``). Every scenario
times wirekit side by side with a minimal hand-written baseline in the same
run and reports the ratio wirekit/baseline. The benchmarks are not part of
the test suite: timings belong here, never in timed tests.

Modules:

- :mod:`benchmarks.timing` — interleaved, repeated ``perf_counter_ns`` timing;
- :mod:`benchmarks.workloads` — the input buffers and the ``Position`` message;
- :mod:`benchmarks.baselines` — the hand-written code wirekit is measured against;
- :mod:`benchmarks.scenarios` — which wirekit call is paired with which baseline;
- :mod:`benchmarks.report` — the printed table and the JSON results file;
- :mod:`benchmarks.cli` — the command line.
"""
