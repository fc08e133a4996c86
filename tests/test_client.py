"""rframe.Client and rframe.CommandResult: results, errors, timeouts, interruption."""

from __future__ import annotations

import _thread
import doctest
import pathlib
import pickle
import socket
import subprocess
import threading
import time

import pytest

import platforms
import rframe
import rframe._client
import rframe._errors
import rframe._known_servers
import rframe._protocol
import rframe._tls
from conftest import HANG_BOUND
from server_helpers import client_for, kill_all, pgrep, running, sleep_marker, wait_until


@pytest.fixture(scope="module")
def server():
    with running(rframe.Server(port=0)) as s:
        yield s


@pytest.fixture
def client(server):
    with client_for(server) as c:
        yield c


@pytest.fixture
def slow_server():
    """A handler server that answers after ``frame.header["delay"]`` seconds."""

    def handler(frame):
        time.sleep(frame.header.get("delay", 0))
        return frame.body

    with running(rframe.Server(port=0, handler=handler)) as s:
        yield s


# --------------------------------------------------------------------------- CommandResult


def test_command_result_is_shaped_like_completed_process():
    r = rframe.CommandResult(["ls", "-l"], 0, b"out", b"err")
    cp = subprocess.CompletedProcess(["ls", "-l"], 0, b"out", b"err")
    for name in ("args", "returncode", "stdout", "stderr"):
        assert getattr(r, name) == getattr(cp, name)
    assert r.ok and not r.stdout_truncated and not r.stderr_truncated
    r.check_returncode()  # no error
    assert repr(r) == "CommandResult(args=['ls', '-l'], returncode=0, stdout=b'out', stderr=b'err')"


def test_command_result_check_returncode_and_long_repr():
    r = rframe.CommandResult("false", 1, b"x" * 10000, b"", stdout_truncated=True)
    assert not r.ok
    with pytest.raises(rframe.CommandError) as info:
        r.check_returncode()
    assert isinstance(info.value, subprocess.CalledProcessError)
    assert (info.value.returncode, info.value.cmd, info.value.stdout) == (1, "false", b"x" * 10000)
    assert info.value.result is r
    text = repr(r)
    assert len(text) < 300 and "(10000 bytes)" in text and "stdout_truncated=True" in text


# --------------------------------------------------------------------------- run


def test_run_check_raises_command_error(client):
    with pytest.raises(rframe.CommandError) as info:
        client.run("echo partial; echo bad >&2; exit 5", check=True)
    e = info.value
    assert (e.returncode, e.stdout, e.stderr, e.cmd) == (
        5,
        b"partial\n",
        b"bad\n",
        "echo partial; echo bad >&2; exit 5",
    )
    assert "exit status 5" in str(e)
    assert client.run("true", check=True).ok


def test_run_text_decodes_once_with_replace(client):
    # a multibyte character split across many writes, and an invalid byte
    r = client.run(r"printf '\344\270'; printf '\255中\n'; printf '\377' >&2", text=True)
    assert r.stdout == "中中\n"
    assert r.stderr == "\ufffd"
    assert r.encoding == "utf-8"
    assert client.run("printf x", text=False).stdout == b"x"


def test_run_text_timeout_output(client):
    with pytest.raises(rframe.CommandTimeout) as info:
        client.run("echo so-far; sleep 5", timeout=0.3, text=True)
    assert info.value.stdout == "so-far\n"


def test_command_timeout_is_prompt_and_connection_reusable(client):
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired) as info:
        client.run("sleep 10", timeout=0.3)
    assert time.monotonic() - t0 < 2
    assert isinstance(info.value, rframe.CommandTimeout) and isinstance(info.value, TimeoutError)
    assert not client.closed
    assert client.run("echo next").stdout == b"next\n"


def test_run_accepts_paths_and_bytes(client, tmp_path):
    script = tmp_path / "hello.sh"
    script.write_text("#!/bin/sh\necho from-script\n")
    script.chmod(0o755)
    assert client.run(script).stdout == b"from-script\n"
    assert client.run([pathlib.Path("/bin/echo"), b"bytes", 3]).stdout == b"bytes 3\n"
    assert client.run(b"echo raw-bytes").stdout == b"raw-bytes\n"


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), 2e9])
def test_timeouts_are_validated(server, client, timeout):
    # (past 1e9 s a socket timeout overflows: OverflowError, not this)
    with pytest.raises(ValueError, match="at most 1e\\+09 seconds"):
        client.run("true", timeout=timeout)
    assert client.run("true").ok
    with pytest.raises(ValueError, match="at most 1e\\+09 seconds"):
        client_for(server, timeout=timeout)


def test_per_call_timeout_extends_the_socket_timeout(server):
    """Client(timeout=0.3) waits for a 1 s command run with timeout=5."""
    with client_for(server, timeout=0.3) as c:
        assert c.run("sleep 1; echo done", timeout=5).stdout == b"done\n"
        assert c._sock.gettimeout() == 0.3  # restored after the long wait
        # without a per-call timeout the client's own timeout applies
        with pytest.raises(TimeoutError):
            c.run("sleep 1")
        assert c.closed
        with pytest.raises(ConnectionAbortedError, match="open a new Client"):
            c.run("true")


# --------------------------------------------------------------------------- frames


def test_request_send_recv(slow_server):
    with client_for(slow_server) as c:
        f = c.request(b"body", {"delay": 0}, extra=1)
        assert isinstance(f, rframe.Frame)
        header, body = f
        assert body == b"body"
        c.send(b"a")
        c.send(b"b")
        assert c.recv().body == b"a" and c.recv().body == b"b"


def test_socket_timeout_mid_reply_closes_the_connection(slow_server):
    with client_for(slow_server, timeout=0.3) as c:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            c.request(b"late", delay=1.0)
        assert time.monotonic() - t0 < 1.0
        assert c.closed
        # the late reply is never mistaken for the next one's
        with pytest.raises(ConnectionAbortedError):
            c.request(b"next")


def test_keyboard_interrupt_mid_run_closes_and_kills(server):
    marker = sleep_marker()
    try:
        with client_for(server) as c:
            timer = threading.Thread(target=lambda: wait_until(lambda: pgrep(marker), 5) and _thread.interrupt_main())
            timer.start()
            t0 = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                c.run(f"sleep {marker}")
            timer.join(HANG_BOUND)
            assert time.monotonic() - t0 < 5
            assert c.closed
            with pytest.raises(ConnectionAbortedError, match="KeyboardInterrupt"):
                c.run("echo after")
            # the server noticed and killed the command
            assert wait_until(lambda: not pgrep(marker), 5)
        with client_for(server) as c2:
            assert c2.run("echo fresh").stdout == b"fresh\n"
    finally:
        kill_all(marker)


def test_close_from_another_thread_wakes_a_blocked_call(server):
    c = client_for(server)
    t = threading.Timer(0.3, c.close)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(ConnectionAbortedError, match="closed"):
        c.run("sleep 5")
    assert time.monotonic() - t0 < 3
    t.join(HANG_BOUND)


def test_closed_client(server):
    c = client_for(server)
    assert not c.closed and c.fileno() >= 0
    c.close()
    c.close()  # twice is fine
    assert c.closed and c.fileno() == -1
    assert "closed" in repr(c)
    with pytest.raises(ConnectionAbortedError, match="closed"):
        c.run("true")
    with pytest.raises(ConnectionAbortedError):
        c.recv()


def test_header_that_cannot_be_encoded_keeps_the_connection(client):
    with pytest.raises((TypeError, ValueError)):
        client.request(header={"x": object()})
    assert not client.closed
    assert client.run("echo fine").stdout == b"fine\n"


# --------------------------------------------------------------------------- connecting


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused_is_the_builtin():
    with pytest.raises(ConnectionRefusedError):
        rframe.Client("127.0.0.1", free_port(), timeout=HANG_BOUND)


@platforms.unix_sockets
def test_missing_unix_socket(tmp_path):
    with pytest.raises(FileNotFoundError):
        rframe.Client(unix_path=tmp_path / "nothing.sock", timeout=HANG_BOUND)


@platforms.unix_sockets
def test_unix_socket_client(tmp_path):
    path = tmp_path / "s.sock"
    with running(rframe.Server(unix_path=str(path))):
        with rframe.Client(unix_path=path) as c:
            assert c.address == str(path)
            assert c.run("echo over-unix").stdout == b"over-unix\n"


def test_tcp_nodelay():
    with running(rframe.Server(port=0)) as s, client_for(s) as c:
        assert c._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_server_that_goes_away_is_a_connection_error():
    s = rframe.Server(port=0)
    s.start()
    c = client_for(s)
    assert c.run("true").ok
    s.stop()
    with pytest.raises(ConnectionError):
        c.run("true")
    assert c.closed


def test_bad_arguments():
    with pytest.raises(ValueError):
        rframe.Client(port=free_port(), timeout=0)
    with pytest.raises(ValueError):
        rframe.Client(port=free_port(), token="")
    with pytest.raises(ValueError, match="JSON"):
        rframe.Client(port=free_port(), token="t", codec=rframe.Codec(json_header=False))


# --------------------------------------------------------------------------- errors


def test_error_classes():
    assert issubclass(rframe.CommandError, subprocess.CalledProcessError)
    assert issubclass(rframe.CommandTimeout, subprocess.TimeoutExpired)
    assert issubclass(rframe.CommandTimeout, TimeoutError)
    assert issubclass(rframe.AuthenticationError, ConnectionError)
    e = rframe.RemoteError("busy", "full", {"op": "error", "error": "busy", "message": "full", "total_size": 0})
    assert (e.code, e.message, e.header["error"]) == ("busy", "full", "busy")
    assert str(e) == "full [busy]"
    t = rframe.CommandTimeout("sleep 9", 0.5, b"out", b"err")
    assert (t.cmd, t.timeout, t.stdout, t.output, t.stderr) == ("sleep 9", 0.5, b"out", b"out", b"err")
    assert str(t) == "Command 'sleep 9' timed out after 0.5 seconds"
    assert t.errno is not None  # not the command mistaken for an errno
    with pytest.raises(TimeoutError):
        raise t


@pytest.mark.parametrize(
    "err",
    [
        rframe.CommandError(2, "x", b"o", b"e"),
        rframe.CommandTimeout("x", 1.5, b"o", b"e"),
        rframe.AuthenticationError("nope"),
        rframe.RemoteError("spawn", "no such program"),
    ],
)
def test_errors_pickle(err):
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is type(err) and str(back) == str(err)


def test_errors_exported():
    for name in ("Client", "CommandResult", "CommandError", "CommandTimeout", "AuthenticationError", "RemoteError"):
        assert name in rframe.__all__ and getattr(rframe, name)


@pytest.mark.parametrize(
    "module",
    [rframe._client, rframe._errors, rframe._tls, rframe._known_servers, rframe._protocol],
    ids=lambda m: m.__name__,
)
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
