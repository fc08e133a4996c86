"""Helpers shared by the command-server tests: polling, process lookup, servers.

Every wait here is bounded (by conftest.HANG_BOUND unless told otherwise), and
polls a condition instead of sleeping a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import rframe
from conftest import HANG_BOUND

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
ENV.pop("RFRAME_TOKEN", None)


def wait_until(predicate, timeout: float = HANG_BOUND, interval: float = 0.02) -> bool:
    """Polls ``predicate`` until it is true (returns True) or ``timeout`` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def pgrep(pattern: str) -> list[int]:
    """Pids of processes whose full command line contains ``pattern`` (a regex)."""
    r = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True, timeout=HANG_BOUND)
    return [int(p) for p in r.stdout.split() if int(p) != os.getpid()]


def sleep_marker() -> str:
    """A unique argument for ``sleep`` (about 300 s), to find the process with pgrep."""
    return f"300.{random.randrange(10**8, 10**9)}"


def kill_all(pattern: str) -> None:
    """Cleanup: SIGKILL whatever a failed test left behind."""
    for pid in pgrep(pattern):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def connect_raw(address) -> socket.socket:
    """A plain socket connected to a server's address: ``(host, port)`` or a Unix socket path."""
    if isinstance(address, str):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(HANG_BOUND)
        s.connect(address)
        return s
    return socket.create_connection(address, timeout=HANG_BOUND)


def read_all(sock) -> bytes:
    """Everything until the peer closes (bounded by the socket's timeout)."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now), VmHWM (the peak resident) and VmSize of a process, in KiB.
    Linux only (/proc): elsewhere the test is skipped."""
    if sys.platform != "linux":
        pytest.skip("reads a process's memory from /proc (Linux)")
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM", "VmSize")}


def raise_open_files(n: int) -> None:
    """Raises this process's soft limit on open files to at least ``n`` (processes
    started afterwards inherit it), or skips the test if the hard limit is lower."""
    import resource  # POSIX only; this helper's callers run the command server

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip(f"needs {n} open files, the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


@contextlib.contextmanager
def running(server: rframe.Server):
    """Starts ``server`` and always stops it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def client_for(server: rframe.Server, **kwargs) -> rframe.Client:
    """A Client connected to ``server``, over TCP or its Unix socket."""
    kwargs.setdefault("timeout", HANG_BOUND)
    address = server.address
    if isinstance(address, str):
        return rframe.Client(unix_path=address, **kwargs)
    return rframe.Client(*address, **kwargs)


def make_server(kind: str, tmp_path: Path, **kwargs) -> rframe.Server:
    """A Server on a free loopback port (``kind="tcp"``) or a Unix socket in tmp_path."""
    if kind == "unix":
        return rframe.Server(unix_path=str(tmp_path / "rframe.sock"), **kwargs)
    return rframe.Server(port=0, **kwargs)


_IGNORING = """
import os, signal, sys
end = sys.argv.index("--")
for name in sys.argv[1:end]:
    signal.signal(getattr(signal, name), signal.SIG_IGN)
os.execv(sys.argv[end + 1], sys.argv[end + 1 :])
"""


class CliProcess:
    """``python -m MODULE ARGS`` (or ``python SCRIPT.py ARGS``) in the background,
    its output collected by threads.

    ``wait_line(regex)`` waits (bounded) for a stdout line matching ``regex``.
    ``ignore`` names signals (``"SIGINT"``) the process starts with ignored,
    as one started with ``&`` from a script does.
    """

    def __init__(self, module: str, *args: str, env=None, ignore: tuple[str, ...] = ()):
        argv = [sys.executable, *([module] if module.endswith(".py") else ["-m", module]), *map(str, args)]
        if ignore:
            # An ignored signal stays ignored across exec: the same process, its signals set first.
            argv = [sys.executable, "-c", _IGNORING, *ignore, "--", *argv]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            cwd=ROOT,
            env=env if env is not None else ENV,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _drain(stream, lines):
        for line in stream:
            lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_line(self, pattern: str, timeout: float = HANG_BOUND) -> re.Match:
        found = []

        def look():
            for line in list(self.out):
                m = re.search(pattern, line)
                if m:
                    found.append(m)
                    return True
            return self.proc.poll() is not None

        wait_until(look, timeout)
        if not found:
            self.stop()
            pytest.fail(
                f"no line matching {pattern!r} within {timeout} s; stdout={self.stdout!r} stderr={self.stderr!r}"
            )
        return found[0]

    def wait(self, timeout: float = HANG_BOUND) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"process still running after {timeout} s; stderr={self.stderr!r}")
        self._close_pipes()
        return code

    def stop(self) -> None:
        """Cleanup: SIGKILL if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(HANG_BOUND)
        self._close_pipes()

    def _close_pipes(self) -> None:
        # Left to the garbage collector, they would warn (ResourceWarning) in
        # whichever later test happened to collect them.
        for t in self._threads:
            t.join(HANG_BOUND)
        if any(t.is_alive() for t in self._threads):
            # Something else holds the pipe open (a child of the process?):
            # fail here, not in the later test that would collect it.
            pytest.fail(f"a pipe of {self.proc.args!r} is still open {HANG_BOUND} s after the process ended")
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class CliServer(CliProcess):
    """``python -m rframe.server --port 0 ...``; ``host``/``port`` (or ``unix``) from its first line."""

    LINE = r"^rframe server listening on (.+) \(Ctrl-C to stop\)$"

    def __init__(self, *args: str, env=None, ignore: tuple[str, ...] = ()):
        if "--unix" not in args and "--port" not in args:
            args = ("--port", "0", *args)
        super().__init__("rframe.server", *args, env=env, ignore=ignore)
        m = self.wait_line(self.LINE)
        self.where = m.group(1)
        host, _, port = self.where.rpartition(":")
        self.host, self.port = (host, int(port)) if port.isdigit() else (None, None)

    @property
    def address(self):
        """``(host, port)``, or the Unix socket's path."""
        return self.where if self.port is None else (self.host, self.port)

    def client(self, **kwargs) -> rframe.Client:
        kwargs.setdefault("timeout", HANG_BOUND)
        if self.port is None:
            return rframe.Client(unix_path=self.where, **kwargs)
        return rframe.Client(self.host, self.port, **kwargs)

    def connect(self) -> socket.socket:
        """A plain socket connected to the server."""
        return connect_raw(self.address)

    def memory_kib(self) -> dict[str, int]:
        return memory_kib(self.proc.pid)

    def terminate(self) -> None:
        """Stops the server with SIGTERM, as a user would; it must exit cleanly."""
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait()
        assert code == 0 and "Traceback" not in self.stderr, (code, self.stderr[-2000:])


@contextlib.contextmanager
def cli_server(*args, env=None, ignore: tuple[str, ...] = ()):
    """A ``python -m rframe.server`` process for the block (``ignore``: see
    ``CliProcess``); stopped with SIGTERM (and must exit with status 0), or
    killed if the block failed."""
    server = CliServer(*args, env=env, ignore=ignore)
    try:
        yield server
    except BaseException:
        server.stop()
        raise
    server.terminate()
