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


class CliProcess:
    """``python -m MODULE ARGS`` (or ``python SCRIPT.py ARGS``) in the background,
    its output collected by threads.

    ``wait_line(regex)`` waits (bounded) for a stdout line matching ``regex``.
    """

    def __init__(self, module: str, *args: str, env=None):
        self.proc = subprocess.Popen(
            [sys.executable, *([module] if module.endswith(".py") else ["-m", module]), *map(str, args)],
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
            pytest.fail(f"no line matching {pattern!r} within {timeout} s; stdout={self.stdout!r} stderr={self.stderr!r}")
        return found[0]

    def wait(self, timeout: float = HANG_BOUND) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"process still running after {timeout} s; stderr={self.stderr!r}")
        for t in self._threads:
            t.join(HANG_BOUND)
        return code

    def stop(self) -> None:
        """Cleanup: SIGKILL if still running."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(HANG_BOUND)
        for t in self._threads:
            t.join(HANG_BOUND)


class CliServer(CliProcess):
    """``python -m rframe.server --port 0 ...``; ``host``/``port`` (or ``unix``) from its first line."""

    LINE = r"^rframe server listening on (.+) \(Ctrl-C to stop\)$"

    def __init__(self, *args: str, env=None):
        if "--unix" not in args and "--port" not in args:
            args = ("--port", "0", *args)
        super().__init__("rframe.server", *args, env=env)
        m = self.wait_line(self.LINE)
        self.where = m.group(1)
        host, _, port = self.where.rpartition(":")
        self.host, self.port = (host, int(port)) if port.isdigit() else (None, None)

    def client(self, **kwargs) -> rframe.Client:
        kwargs.setdefault("timeout", HANG_BOUND)
        if self.port is None:
            return rframe.Client(unix_path=self.where, **kwargs)
        return rframe.Client(self.host, self.port, **kwargs)
