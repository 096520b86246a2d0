# Two entry points for newcomers: `make demo` and `make test`. Both create the
# virtual environment on first use, so a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck check bench soak fuzz fuzz-short clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/wirekit demo

# The whole suite on asyncio's loop, then the tests that do I/O again on uvloop,
# which wirekit uses whenever it is installed. The UDP transport is wirekit's
# own on both loops: its tests run on both.
# A hang on uvloop can escape pytest-timeout's signal: the thread method ends it.
UVLOOP_TESTS := tests/runtime/test_runtime_streams.py tests/runtime/test_runtime_udp.py tests/runtime/test_runtime_tls.py \
	tests/runtime/test_runtime_limits.py tests/runtime/test_stream_limits.py tests/runtime/test_hot_path.py \
	tests/runtime/test_shutdown.py tests/runtime/test_reconnect.py tests/runtime/test_peer_limits.py \
	tests/runtime/test_udp_security.py tests/runtime/test_blocking.py tests/runtime/test_udp_transport.py tests/runtime/test_udp_send_queue.py \
	tests/runtime/test_udp_batch_send.py tests/runtime/test_metrics.py tests/runtime/test_metrics_listeners.py \
	tests/runtime/test_websocket.py tests/runtime/test_websocket_pages.py tests/runtime/test_websocket_hostile.py \
	tests/runtime/test_websocket_node.py tests/runtime/test_multi_listener.py tests/runtime/test_websocket_faults.py \
	tests/runtime/test_runtime_groups.py tests/runtime/test_backplane_memory.py \
	tests/runtime/test_backplane_contract.py tests/runtime/test_groups_brokers.py \
	tests/protocols/test_echo.py tests/protocols/test_game.py tests/protocols/test_rpc.py tests/protocols/test_chat.py \
	tests/protocols/test_web_pages.py

test: $(STAMP)
	$(PY) -m pytest -n auto
	WIREKIT_TEST_LOOP=uvloop $(PY) -m pytest -n auto -q --timeout-method=thread $(UVLOOP_TESTS)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck

bench: $(STAMP)
	$(PY) -m benchmarks

# Ten minutes of TCP and UDP load on one server; prints the memory curve.
soak: $(STAMP)
	$(PY) -m benchmarks.soak --minutes 10

# Coverage-guided fuzzing (atheris, the fuzz extra); see docs/howto/fuzzing.md.
FUZZ_STAMP := $(VENV)/.fuzz-installed
FUZZ_TARGET ?= all
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1

$(FUZZ_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,fuzz]'
	touch $(FUZZ_STAMP)

# The long run: make fuzz FUZZ_TARGET=delimited FUZZ_SECONDS=600 FUZZ_JOBS=2
fuzz: $(FUZZ_STAMP)
	$(PY) -m tests.fuzz $(FUZZ_TARGET) --seconds $(FUZZ_SECONDS) --jobs $(FUZZ_JOBS)

# The CI run: a few seconds per target, two at a time (under a minute on 2 cores).
fuzz-short: $(FUZZ_STAMP)
	$(PY) -m tests.fuzz all --seconds 3 --jobs 2

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
