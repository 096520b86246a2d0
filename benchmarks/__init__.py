"""wirekit's benchmarks: the sans-I/O core (the default suite) and I/O over loopback.

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

``python -m benchmarks io`` runs the I/O benchmark instead: wirekit servers
and peer servers (``benchmarks/peers/``) over loopback, loaded by one
independent load generator:

- :mod:`benchmarks.io_scenarios` — the loads, the servers, the goals;
- :mod:`benchmarks.io_servers` — starting and always stopping server processes;
- :mod:`benchmarks.io_load` — the plain-socket load generator (worker processes);
- :mod:`benchmarks.io_report` — the tables, the goals, the noise, the JSON;
- :mod:`benchmarks.io_cli` — its command line.

``python -m benchmarks fanout`` serves a chat room on one process with
``memory://`` and on two nodes with Redis and with NATS, and compares
deliveries per second, cross-node latency and broker messages per publish:

- :mod:`benchmarks.fanout` — the brokers, the chat processes, the rate search, the table;
- :mod:`benchmarks.fanout_load` — the members and senders (plain sockets, own processes).
"""
