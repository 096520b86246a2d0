"""Server processes of the I/O benchmark: start a peer script, read its port, stop it.

Every server is a script in ``benchmarks/peers/`` that prints ``ready PORT``
once listening. :class:`ServerPool` starts them and stops all of them on
exit, on an error and on Ctrl-C alike (SIGTERM, then SIGKILL); on Linux
each server also gets SIGKILL should the benchmark itself die.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import psutil

__all__ = ["PEERS_DIR", "ServerPool", "ServerProcess", "ServerSpec", "ServerUnavailable"]

PEERS_DIR = Path(__file__).resolve().parent / "peers"
REPO_ROOT = PEERS_DIR.parent.parent
READY_TIMEOUT = 20.0
# What a peer script's exit status 3 means: an optional dependency is missing.
EXIT_NOT_INSTALLED = 3


class ServerUnavailable(Exception):
    """The server cannot run here (``not installed``) or did not start."""


@dataclass(frozen=True)
class ServerSpec:
    """One contender: a peer script, its options, and what it needs."""

    key: str  # short and stable, used in the JSON
    label: str  # as printed in the table
    script: str  # file name in benchmarks/peers/
    args: tuple[str, ...] = ()
    requires: str | None = None  # an optional module the script imports
    wirekit: bool = False

    def command(self, profile: Path | None = None) -> list[str]:
        """The command line that starts this server on an OS-chosen port."""
        extra = ["--profile", str(profile)] if profile is not None and self.wirekit else []
        return [sys.executable, str(PEERS_DIR / self.script), "0", *self.args, *extra]

    def available(self) -> bool:
        """Whether the optional module this server needs is importable."""
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: have the kernel SIGKILL this child if the benchmark process dies."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class ServerProcess:
    """A running peer server."""

    spec: ServerSpec
    popen: subprocess.Popen[bytes]
    port: int
    log_path: Path
    profile_path: Path | None = None
    _ps: psutil.Process = field(init=False, repr=False)
    _rss_samples: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self._ps = psutil.Process(self.popen.pid)

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens."""
        return ("127.0.0.1", self.port)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (all its threads)."""
        times = self._ps.cpu_times()
        return times.user + times.system

    def sample_rss(self) -> None:
        """Remember the current RSS (the fallback where peak RSS is not reported)."""
        with contextlib.suppress(psutil.Error):
            self._rss_samples.append(self._ps.memory_info().rss)

    def peak_rss(self) -> int | None:
        """Peak resident memory in bytes: ``VmHWM`` on Linux, else the largest sample."""
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.popen.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        self.sample_rss()
        return max(self._rss_samples, default=None)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines the server wrote to stderr."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a graceful shutdown, which also writes a profile), then SIGKILL."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def start_server(spec: ServerSpec, log_dir: Path, profile_dir: Path | None = None) -> ServerProcess:
    """Start ``spec`` and wait for its ``ready PORT`` line."""
    if not spec.available():
        raise ServerUnavailable("not installed")
    log_path = log_dir / f"{spec.key}.log"
    profile = profile_dir / f"{spec.key}.prof" if profile_dir is not None and spec.wirekit else None
    env = dict(os.environ)
    # The framework of this working tree, whatever is installed.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONHASHSEED", "0")
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            spec.command(profile),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            cwd=REPO_ROOT,
            env=env,
            start_new_session=True,  # the terminal's Ctrl-C reaches us; we stop them
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    try:
        port = _read_port(popen)
    except BaseException:
        _kill(popen)
        raise
    if port is None:
        status = _kill(popen)
        if status == EXIT_NOT_INSTALLED:
            raise ServerUnavailable("not installed")
        tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
        raise ServerUnavailable(f"did not start (exit {status}): {' | '.join(tail)}")
    return ServerProcess(spec, popen, port, log_path, profile)


def _read_port(popen: subprocess.Popen[bytes]) -> int | None:
    """The port of the first ``ready PORT`` line, or ``None`` if the process ends first."""
    assert popen.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT
    line = b""
    with selectors.DefaultSelector() as selector:
        selector.register(popen.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=0.1):
                if popen.poll() is not None:
                    return None
                continue
            byte = os.read(popen.stdout.fileno(), 1)
            if not byte:
                return None
            if byte != b"\n":
                line += byte
                continue
            words = line.split()
            if len(words) == 2 and words[0] == b"ready":
                return int(words[1])
            line = b""
    raise ServerUnavailable(f"no 'ready PORT' line within {READY_TIMEOUT:.0f} s")


def _kill(popen: subprocess.Popen[bytes]) -> int | None:
    if popen.poll() is None:
        popen.kill()
    status = popen.wait()
    if popen.stdout is not None:
        popen.stdout.close()
    return status


class ServerPool:
    """Servers started for one scenario; every one is stopped on exit, whatever happens."""

    def __init__(self, profile_dir: Path | None = None) -> None:
        self.servers: dict[str, ServerProcess] = {}
        self.unavailable: dict[str, str] = {}
        self._profile_dir = profile_dir
        self._log_dir = Path(tempfile.mkdtemp(prefix="wirekit-io-bench-"))

    def start(self, spec: ServerSpec) -> ServerProcess | None:
        """Start ``spec``; on failure remember why and return ``None``."""
        try:
            server = start_server(spec, self._log_dir, self._profile_dir)
        except ServerUnavailable as exc:
            self.unavailable[spec.key] = str(exc)
            return None
        self.servers[spec.key] = server
        return server

    def stop_all(self) -> None:
        """Stop every server (SIGTERM, then SIGKILL); keep going past errors."""
        for server in self.servers.values():
            try:
                server.stop()
            except Exception:  # stop the others whatever happens to one
                with contextlib.suppress(Exception):
                    server.popen.kill()

    def __enter__(self) -> ServerPool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
        for path in self._log_dir.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self._log_dir.rmdir()
