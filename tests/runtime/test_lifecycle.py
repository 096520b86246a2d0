"""Signals at every moment of a server's life: no process is ever left behind.

The building blocks first, in this process (and a fork of it): the workers'
parent's handlers come and go, a signal held during a fork is delivered
after it, and a worker that gets a stop signal before it serves ends.

Then the whole: ``wirekit serve --workers 2`` gets SIGINT or SIGTERM at each
step of its start-up (before it forks, just after a fork, while its workers
start listening, once it has announced them); whatever the moment, the
parent exits and every worker it started has gone with it. psutil watches the
processes: each run marks its environment, which forked workers inherit, so
a worker that outlived its parent is still found.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from framework.runtime import lifecycle

ROOT = Path(__file__).resolve().parents[2]
#: Bounds each wait of a run: start-up steps take a fraction of it.
STEP = 10.0
MARK = "WIREKIT_TEST_PROCESS_MARK"

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="workers need Linux's SO_REUSEPORT"
)


def test_supervisor_signals_route_stop_and_reload_then_restore_the_old_handlers() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    stops: list[int] = []
    reloads: list[bool] = []
    with lifecycle.supervisor_signals(stops.append, lambda: reloads.append(True)):
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGHUP)
    assert stops == [signal.SIGTERM, signal.SIGINT]
    assert reloads == [True]
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_signal_held_back_arrives_when_the_hold_ends() -> None:
    stops: list[int] = []
    with lifecycle.supervisor_signals(stops.append, lambda: None):
        with lifecycle.signals_held():
            signal.raise_signal(signal.SIGTERM)
            assert stops == []  # held: the handler has not run
        assert stops == [signal.SIGTERM]


def test_a_worker_signalled_during_its_fork_ends_once_it_has_the_default_handlers() -> None:
    """The child does not swallow it with its copy of the parent's handler."""
    stops: list[int] = []
    with lifecycle.supervisor_signals(stops.append, lambda: None):
        with lifecycle.signals_held(), warnings.catch_warnings():
            # Python 3.12 warns about forking a process with threads (pytest's
            # may have some): the child here only signals itself and exits.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
            if pid == 0:  # the child: signalled before it has its own handlers
                try:
                    os.kill(os.getpid(), signal.SIGTERM)
                    lifecycle.worker_signals()  # SIGTERM's default ends the process here
                finally:
                    os._exit(0)  # only reached if the signal was swallowed
        _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), status
    assert os.WTERMSIG(status) == signal.SIGTERM
    assert stops == []  # the child's signal was its own


def _children(parent: psutil.Process) -> list[psutil.Process]:
    try:
        return parent.children()
    except psutil.NoSuchProcess:
        return []


def _listening(process: psutil.Process) -> bool:
    try:
        return any(c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp"))
    except psutil.NoSuchProcess:
        return False


def _started(proc: subprocess.Popen[str], parent: psutil.Process) -> bool:
    return True


def _one_forked(proc: subprocess.Popen[str], parent: psutil.Process) -> bool:
    return len(_children(parent)) >= 1


def _all_forked(proc: subprocess.Popen[str], parent: psutil.Process) -> bool:
    return len(_children(parent)) >= 2


def _one_listening(proc: subprocess.Popen[str], parent: psutil.Process) -> bool:
    return any(_listening(child) for child in _children(parent))


def _announced(proc: subprocess.Popen[str], parent: psutil.Process) -> bool:
    assert proc.stderr is not None
    line = proc.stderr.readline()  # blocks until the parent says its workers serve
    assert "workers (pids" in line, line
    return True


#: The moments of the start-up a signal is sent at, in order.
MOMENTS: dict[str, Callable[[subprocess.Popen[str], psutil.Process], bool]] = {
    "at-once": _started,
    "one-worker-forked": _one_forked,
    "both-workers-forked": _all_forked,
    "a-worker-listening": _one_listening,
    "workers-announced": _announced,
}


def marked_processes(mark: str) -> list[psutil.Process]:
    """Every live process whose environment carries ``mark``."""
    found = []
    for process in psutil.process_iter(["environ"]):
        environ = process.info.get("environ") or {}
        if environ.get(MARK) == mark and process.status() != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_a_stop_signal_at_any_moment_of_the_start_up_leaves_no_worker_behind(
    moment: str, signum: signal.Signals
) -> None:
    mark = uuid.uuid4().hex
    command = [sys.executable, "-m", "framework", "serve", "protocols.echo"]
    command += ["--url", "tcp://127.0.0.1:0", "--workers", "2"]
    with subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), MARK: mark},
    ) as proc:
        assert proc.stderr is not None
        try:
            parent = psutil.Process(proc.pid)
            reached = MOMENTS[moment]
            deadline = time.monotonic() + STEP
            while not reached(proc, parent):
                assert proc.poll() is None, f"exited before {moment}: {proc.stderr.read()!r}"
                assert time.monotonic() < deadline, f"never reached {moment}"
                time.sleep(0.001)
            proc.send_signal(signum)
            try:
                status: int | None = proc.wait(timeout=STEP)
            except subprocess.TimeoutExpired:
                status = None
            left = [process for process in marked_processes(mark) if process.pid != proc.pid]
        finally:
            # Only after the verdict: a leftover is the failure. Killed, it
            # also lets go of the stderr pipe read below.
            for process in marked_processes(mark):
                process.kill()
            if proc.poll() is None:
                proc.kill()
        errors = proc.stderr.read()
    assert status is not None, f"{signum.name} {moment}: the parent did not exit; {errors}"
    assert left == [], f"{signum.name} {moment}: still running after the parent: {left}"
    if moment != "at-once":
        # The parent had its handlers in: a graceful stop, status 0. At once,
        # the signal may beat them (status -15, or 130 for Ctrl-C).
        assert status == 0, (status, errors)
    assert "Traceback" not in errors, errors
