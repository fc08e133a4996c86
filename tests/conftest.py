"""Shared fixtures: connected socket pairs, a loopback listener, threads and hang guards,
and a command server with its clients (a module's own ``server`` fixture overrides it)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import socket
import sys
import tempfile
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import rframe  # noqa: E402 - after the path, as every test module

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is in the "test" extra
    uvloop = None

# A server's generated TLS certificate and the client CLI's known-servers file
# go to the per-user state and config directories: for the tests (and the
# servers and clients they start), a directory of their own, not the user's.
_HOME = tempfile.mkdtemp(prefix="rframe-tests-home-")
atexit.register(shutil.rmtree, _HOME, True)
os.environ["XDG_STATE_HOME"] = os.path.join(_HOME, "state")
os.environ["XDG_CONFIG_HOME"] = os.path.join(_HOME, "config")

# Hang bound: no single blocking step of a test may take longer than this.
HANG_BOUND = 10.0


def pytest_collection_modifyitems(config, items):
    """Where the command server does not run (Windows), its tests are skipped,
    saying so (tests/platforms.py)."""
    import platforms

    platforms.skip_command_server_modules(items)


@pytest.fixture
def listener():
    """A TCP socket listening on 127.0.0.1 on a free port."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(HANG_BOUND)
    yield srv
    srv.close()


def _tcp_pair(srv):
    client = socket.create_connection(srv.getsockname(), timeout=HANG_BOUND)
    client.settimeout(None)
    server, _ = srv.accept()
    server.settimeout(None)
    return server, client


@pytest.fixture(params=["socketpair", "tcp"])
def socket_pair(request):
    """(reader, writer): two connected blocking sockets, a Unix socketpair or loopback TCP."""
    if request.param == "socketpair":
        a, b = socket.socketpair()
    else:
        srv = socket.create_server(("127.0.0.1", 0))
        srv.settimeout(HANG_BOUND)
        try:
            a, b = _tcp_pair(srv)
        finally:
            srv.close()
    yield a, b
    a.close()
    b.close()


class Worker(threading.Thread):
    """A daemon thread whose exception, if any, is re-raised by ``result()``."""

    def __init__(self, fn, *args):
        super().__init__(daemon=True)
        self._fn, self._args = fn, args
        self._exc = None
        self._value = None

    def run(self):
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            self._exc = exc

    def result(self, timeout=HANG_BOUND):
        self.join(timeout)
        assert not self.is_alive(), f"worker {self._fn.__name__} still running after {timeout} s"
        if self._exc is not None:
            raise self._exc
        return self._value


@pytest.fixture
def start_thread():
    """start_thread(fn, *args) -> Worker, already started; every worker is joined at teardown."""
    workers = []

    def start(fn, *args):
        w = Worker(fn, *args)
        workers.append(w)
        w.start()
        return w

    yield start
    for w in workers:
        w.join(HANG_BOUND)


@pytest.fixture
def hang_guard():
    """hang_guard(sock, seconds) -> context manager.

    If the block is still running after ``seconds``, ``sock`` (the peer of the
    socket a call is blocked on) is shut down, so that call sees EOF and
    returns, and the test fails instead of hanging.
    """

    @contextlib.contextmanager
    def guard(sock, seconds=HANG_BOUND):
        fired = threading.Event()

        def fire():
            fired.set()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        timer = threading.Timer(seconds, fire)
        timer.daemon = True
        timer.start()
        try:
            yield fired
        except BaseException as exc:
            if fired.is_set():
                raise AssertionError(f"call did not return within {seconds} s (hang)") from exc
            raise
        finally:
            timer.cancel()
        assert not fired.is_set(), f"call did not return within {seconds} s (hang)"

    return guard


# --------------------------------------------------------------------------- a command server and its clients

#: The event loops the asyncio client's tests run on.
LOOPS = [
    "asyncio",
    pytest.param("uvloop", marks=pytest.mark.skipif(uvloop is None, reason="uvloop is not installed")),
]


@pytest.fixture(scope="module")
def server():
    """A command server on 127.0.0.1, port 0, for the module."""
    with rframe.Server(port=0) as s:
        yield s


@pytest.fixture
def client(server):
    with rframe.Client(*server.address, timeout=HANG_BOUND) as c:
        yield c


@pytest.fixture(params=LOOPS)
def arun(request, server):
    """arun(fn): runs ``await fn(client)`` with an AsyncClient on a fresh loop of the parametrized kind."""

    def run(fn, bound=HANG_BOUND * 2):
        factory = uvloop.new_event_loop if request.param == "uvloop" else None

        async def main():
            async with asyncio.timeout(bound):
                async with rframe.AsyncClient(*server.address, timeout=HANG_BOUND) as c:
                    return await fn(c)

        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(main())

    return run
