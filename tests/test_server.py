"""rframe.Server: commands, limits, authentication and handlers, over real sockets.

Each test starts its own server on a free loopback port or a Unix socket in
tmp_path, and stops it. Processes that commands start are found with ``pgrep -f``
through a unique ``sleep 300.NNN`` argument.
"""

from __future__ import annotations

import hmac
import logging
import socket
import subprocess
import sys
import threading
import time

import pytest

import platforms
import rframe
from conftest import HANG_BOUND
from server_helpers import (
    client_for,
    connect_raw,
    kill_all,
    make_server,
    pgrep,
    read_all,
    running,
    sleep_marker,
    wait_until,
)

MiB = 1 << 20


@pytest.fixture(params=["tcp", "unix"])
def server(request, tmp_path):
    """A command server with default settings, on TCP or a Unix socket."""
    with running(make_server(request.param, tmp_path)) as s:
        yield s


def raw_socket(server) -> socket.socket:
    return connect_raw(server.address)


# --------------------------------------------------------------------------- running commands


def test_run_over_the_wire(server):
    """The protocol as PROTOCOL.md writes it, with plain send_frame/read_frame."""
    with raw_socket(server) as s:
        rframe.send_frame(s, b"", {"op": "run", "cmd": "echo out; echo err >&2; exit 3"})
        header, body = rframe.read_frame(s)
    assert header["op"] == "result"
    assert header["returncode"] == 3
    assert (header["stdout_size"], header["stderr_size"], header["total_size"]) == (4, 4, 8)
    assert body == b"out\nerr\n"
    assert header["stdout_truncated"] is False and header["stderr_truncated"] is False
    assert header["timed_out"] is False
    assert header["encoding"] == "utf-8"
    assert 0 <= header["duration"] < HANG_BOUND


def test_address(server, tmp_path):
    if isinstance(server.address, str):
        assert server.address == str(tmp_path / "rframe.sock")
    else:
        host, port = server.address
        assert host == "127.0.0.1" and port > 0


def test_client_runs_commands(server):
    with client_for(server) as c:
        r = c.run("echo out; echo err >&2; exit 3")
        assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
        assert not r.ok
        # many requests on one connection
        for i in range(20):
            assert c.run(f"echo {i}").stdout == f"{i}\n".encode()


def test_killed_by_a_signal_is_a_negative_returncode(server):
    with client_for(server) as c:
        assert c.run("kill -TERM $$").returncode == -15


def test_list_runs_without_a_shell(server):
    with client_for(server) as c:
        assert c.run(["echo", "$HOME;", "*"]).stdout == b"$HOME; *\n"


def test_env_cwd_and_input(server, tmp_path):
    with client_for(server) as c:
        r = c.run('printf %s "$GREETING"', env={"GREETING": "hi; rm -rf / $(id)"})
        assert r.stdout == b"hi; rm -rf / $(id)"
        workdir = tmp_path / "work dir"
        workdir.mkdir()
        (workdir / "marker-file").write_text("x")
        assert c.run("pwd; ls", cwd=workdir).stdout == f"{workdir}\nmarker-file\n".encode()
        assert c.run("cat", input=b"\x00fed\xff").stdout == b"\x00fed\xff"
        assert c.run(["wc", "-c"], input="héllo").stdout.strip() == b"6"


@platforms.linux
def test_stdin_is_dev_null_without_input(server):
    with client_for(server) as c:
        t0 = time.monotonic()
        r = c.run("cat; echo done", timeout=HANG_BOUND)
        assert r.stdout == b"done\n"
        assert time.monotonic() - t0 < 2
        assert c.run("readlink /proc/self/fd/0").stdout == b"/dev/null\n"


def test_stdout_and_stderr_drained_at_once(server):
    """10 MiB on each pipe at the same time: no deadlock, nothing lost."""
    cmd = f"yes out | head -c {10 * MiB} & yes err | head -c {10 * MiB} >&2; wait"
    with client_for(server) as c:
        r = c.run(cmd, timeout=HANG_BOUND)
    assert (len(r.stdout), len(r.stderr)) == (10 * MiB, 10 * MiB)
    assert r.stdout == (b"out\n" * (10 * MiB // 4))
    assert r.stderr == (b"err\n" * (10 * MiB // 4))
    assert not r.stdout_truncated and not r.stderr_truncated


def test_output_past_max_output_is_dropped_and_flagged(tmp_path):
    with running(rframe.Server(port=0, max_output=1000)) as s, client_for(s) as c:
        r = c.run("head -c 300000 /dev/zero; printf 12345 >&2")
        assert (len(r.stdout), r.stdout_truncated) == (1000, True)
        assert (r.stderr, r.stderr_truncated) == (b"12345", False)
        r = c.run("printf 1 ; head -c 5000 /dev/zero >&2")
        assert (r.stdout, r.stdout_truncated) == (b"1", False)
        assert (len(r.stderr), r.stderr_truncated) == (1000, True)
        assert "stderr_truncated=True" in repr(r)


def test_timeout_kills_the_process_group(server):
    """``sh -c 'sleep 300 & wait'`` at its time limit leaves no process behind,
    CommandTimeout comes promptly with the output so far, and the connection
    goes on."""
    marker = sleep_marker()
    try:
        with client_for(server) as c:
            seen = []
            watcher = threading.Thread(target=lambda: seen.append(wait_until(lambda: pgrep(marker), 5)), daemon=True)
            watcher.start()
            t0 = time.monotonic()
            with pytest.raises(rframe.CommandTimeout) as info:
                c.run(f"echo started; echo warn >&2; sh -c 'sleep {marker} & wait'", timeout=1)
            elapsed = time.monotonic() - t0
            watcher.join(HANG_BOUND)
            assert seen == [True], "the command never ran"
            assert 0.9 < elapsed < 3, elapsed
            err = info.value
            assert isinstance(err, TimeoutError)
            assert (err.stdout, err.output, err.stderr) == (b"started\n", b"started\n", b"warn\n")
            assert err.timeout == 1 and "sleep" in err.cmd
            assert err.result.returncode == -9
            assert wait_until(lambda: not pgrep(marker), 5), f"survivors: {pgrep(marker)}"
            # the connection is still usable
            assert c.run("echo again").stdout == b"again\n"
    finally:
        kill_all(marker)


def test_a_command_cannot_leave_its_group_and_its_time_limit_ends_it(server):
    """A command leads a session of its own, so it cannot move itself out of
    its process group (into the server's, say): the group kill at the time
    limit reaches it, and the call gets its CommandTimeout promptly."""
    marker = sleep_marker()
    leave = (
        "import os, time\n"
        "try:\n    os.setpgid(0, os.getpgid(os.getppid()))\n"
        "except PermissionError:\n    print('stayed', flush=True)\n"
        "else:\n    print('left', flush=True)\n"
        f"time.sleep({marker})\n"
    )
    try:
        with client_for(server) as c:
            t0 = time.monotonic()
            with pytest.raises(rframe.CommandTimeout) as info:
                c.run([sys.executable, "-c", leave], timeout=2)
            assert time.monotonic() - t0 < 5
            assert info.value.stdout == b"stayed\n" and info.value.result.returncode == -9
            assert wait_until(lambda: not pgrep(marker), 5), f"survivors: {pgrep(marker)}"
            assert c.run("echo again").stdout == b"again\n"
    finally:
        kill_all(marker)


def test_server_timeout_applies_when_smaller(tmp_path):
    with running(rframe.Server(port=0, timeout=0.5)) as s, client_for(s) as c:
        t0 = time.monotonic()
        with pytest.raises(rframe.CommandTimeout):
            c.run("sleep 5", timeout=30)
        assert time.monotonic() - t0 < 3


def test_client_leaving_mid_command_kills_it(server):
    marker = sleep_marker()
    try:
        s = raw_socket(server)
        rframe.send_frame(s, b"", {"op": "run", "cmd": f"sh -c 'sleep {marker} & wait'"})
        assert wait_until(lambda: pgrep(marker), 5), "the command never started"
        s.close()
        assert wait_until(lambda: not pgrep(marker), 5), f"survivors: {pgrep(marker)}"
        with client_for(server) as c:
            assert c.run("echo alive").stdout == b"alive\n"
    finally:
        kill_all(marker)


@platforms.linux
def test_stop_cuts_a_reply_the_peer_does_not_read():
    """A peer that stops reading a large result does not hold a stopping
    server's connection until the idle timeout: the reply is cut off."""

    def max_buffer(name):
        with open(f"/proc/sys/net/ipv4/{name}") as f:
            return int(f.read().split()[-1])

    # More than the two ends' socket buffers can hold unread, at their largest.
    size = max(12 << 20, 2 * (max_buffer("tcp_rmem") + max_buffer("tcp_wmem")))
    server = rframe.Server(port=0, max_output=size)
    server.start()
    try:
        with raw_socket(server) as s:
            rframe.send_frame(s, b"", {"op": "run", "cmd": f"head -c {size} /dev/zero"})
            # The reply fills the buffers and its write waits for this reader.
            s.settimeout(HANG_BOUND)
            first = s.recv(65536)
            assert first
            time.sleep(0.5)  # (let the command end and the write block: not synchronisation)
            server.stop()
            got = len(first)
            while chunk := s.recv(1 << 20):
                got += len(chunk)
            assert got < size, "the whole reply went out: the write outlived stop()"
    finally:
        server.stop()


def test_stop_from_a_handler():
    """A handler may stop another server (no panic from a runtime inside a
    runtime) or its own (it returns at once, not after the stop's grace)."""
    other = rframe.Server(port=0)
    other.start()

    def handler(frame):
        if frame.body == b"other":
            other.stop()
            return b"stopped other"
        me.stop()
        return b"stopping myself"

    me = rframe.Server(port=0, handler=handler)
    try:
        with running(me):
            with socket.create_connection(me.address, timeout=HANG_BOUND) as s:
                rframe.send_frame(s, b"other")
                assert rframe.read_frame(s).body == b"stopped other"
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(other.address, timeout=HANG_BOUND).close()
    finally:
        other.stop()
    # A handler's reply to the request that stopped its server still goes out
    # (every time: the stop must not race the write), and promptly: the
    # stop's grace is 5 s, a reply within 3 s shows it was not waited out.
    for _ in range(6):
        me = rframe.Server(port=0, handler=handler)
        with running(me):
            with socket.create_connection(me.address, timeout=3) as s:
                rframe.send_frame(s, b"self")
                assert rframe.read_frame(s).body == b"stopping myself"


def test_stop_kills_running_commands(tmp_path):
    marker = sleep_marker()
    server = rframe.Server(port=0)
    server.start()
    try:
        c = client_for(server)
        failure = []

        def run():
            try:
                c.run(f"sleep {marker}")
            except BaseException as e:  # noqa: BLE001
                failure.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        assert wait_until(lambda: pgrep(marker), 5)
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 5.5
        t.join(HANG_BOUND)
        assert not t.is_alive()
        assert failure and isinstance(failure[0], ConnectionError), failure
        assert wait_until(lambda: not pgrep(marker), 5)
    finally:
        server.stop()
        kill_all(marker)


def test_fifty_clients_at_once(server):
    n = 50
    results: dict[int, bytes] = {}
    errors = []
    barrier = threading.Barrier(n, timeout=HANG_BOUND)

    def one(i):
        try:
            with client_for(server) as c:
                barrier.wait()
                results[i] = c.run(f"sleep 0.5; echo client-{i}").stdout
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(HANG_BOUND)
    elapsed = time.monotonic() - t0
    assert not errors, errors[:3]
    assert results == {i: f"client-{i}\n".encode() for i in range(n)}
    assert elapsed < 5, f"not served concurrently: {elapsed:.1f} s"


def test_spawn_failure_is_a_remote_error(server):
    with client_for(server) as c:
        with pytest.raises(rframe.RemoteError) as info:
            c.run(["/no/such/program"])
        assert info.value.code == "spawn"
        with pytest.raises(rframe.RemoteError) as info:
            c.run("pwd", cwd="/no/such/dir")
        assert info.value.code == "spawn"
        assert c.run("echo ok").stdout == b"ok\n"  # the connection goes on


def test_bad_requests_are_refused_and_the_connection_goes_on(server):
    with client_for(server) as c:
        for fields, message in [
            ({}, "op"),
            ({"op": "dance"}, "dance"),
            ({"op": "run"}, "cmd"),
            ({"op": "run", "cmd": 5}, ""),
            ({"op": "run", "cmd": "  "}, "empty"),
            ({"op": "run", "cmd": "echo", "timeout": -1}, "timeout"),
        ]:
            with pytest.raises(rframe.RemoteError) as info:
                c.request(**fields)
            assert info.value.code == "bad-request", fields
            assert message in info.value.message
        with pytest.raises(rframe.RemoteError) as info:
            c.request(b"body without input", op="run", cmd="cat")
        assert info.value.code == "bad-request"
        assert c.run("echo ok").stdout == b"ok\n"


def test_allow_list_and_no_shell(tmp_path):
    with running(rframe.Server(port=0, allow=["echo", "printf"])) as s, client_for(s) as c:
        # a string is split with shell rules, never run by a shell
        assert c.run("echo 'a  b' $HOME ; ls").stdout == b"a  b $HOME ; ls\n"
        assert c.run(["printf", "%s", "x"]).stdout == b"x"
        for cmd in ("ls", ["sh", "-c", "echo hi"], "/bin/echo hi"):
            with pytest.raises(rframe.RemoteError) as info:
                c.run(cmd)
            assert info.value.code == "not-allowed"
            assert "allowed" in info.value.message
    with running(rframe.Server(port=0, shell=False)) as s, client_for(s) as c:
        assert c.run("echo $HOME ';' `x`").stdout == b"$HOME ; `x`\n"


def test_server_cwd(tmp_path):
    with running(rframe.Server(port=0, cwd=str(tmp_path))) as s, client_for(s) as c:
        assert c.run("pwd").stdout.strip() == str(tmp_path).encode()


EXIT_SCRIPT = """
import socket, sys
import rframe
server = rframe.Server(port=0)
server.start()
with socket.create_connection(server.address, timeout=10) as s:
    rframe.send_frame(s, b"", {"op": "run", "cmd": "echo hi"})
    assert rframe.read_frame(s).body == b"hi\\n"
server.stop()
print("done", flush=True)
"""


def test_process_exits_cleanly_after_serving():
    """The server's log lines reach Python on a thread of its own; a script
    that exits right after stop() must not crash (no "FATAL: exception not
    rethrown", status 134)."""
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", EXIT_SCRIPT], capture_output=True, text=True, timeout=HANG_BOUND)
        assert (r.returncode, r.stdout) == (0, "done\n"), r.stderr


def test_each_command_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="rframe.server")
    with running(rframe.Server(port=0)) as s, client_for(s) as c:
        c.run("echo logged-command; exit 4")

        def logged():
            return [r for r in caplog.records if r.name == "rframe.server" and "logged-command" in r.getMessage()]

        assert wait_until(logged, 5)
        line = logged()[0].getMessage()
        assert logged()[0].levelno == logging.INFO
        assert "127.0.0.1:" in line  # the peer
        assert "returncode 4" in line and "15 bytes" in line
        assert "s," in line  # the duration


# --------------------------------------------------------------------------- the course's raw requests


@pytest.mark.parametrize("cmd", [b"echo hi; echo err 1>&2", b"ls", "echo 中文".encode()])
def test_raw_command_line(server, cmd):
    """What the course client sends: the bare command, no frame."""
    with raw_socket(server) as s:
        s.sendall(cmd)
        header, body = rframe.read_frame(s)
        assert header["op"] == "result" and header["total_size"] == len(body)
        local = subprocess.run(
            cmd.decode(), shell=True, capture_output=True, stdin=subprocess.DEVNULL, timeout=HANG_BOUND
        )
        assert body == local.stdout + local.stderr
        # and the next raw command on the same connection
        s.sendall(b"echo second")
        assert rframe.read_frame(s).body == b"second\n"


def test_raw_command_from_a_sender_that_shut_down_its_side(server):
    """``printf 'cmd' | nc -N host port``: the end of stream ends the line, the
    command runs to its end and its result comes back; then the server closes."""
    with raw_socket(server) as s:
        s.sendall(b"sleep 0.3; echo half-closed")
        s.shutdown(socket.SHUT_WR)
        header, body = rframe.read_frame(s)
        assert (header["op"], header["returncode"], body) == ("result", 0, b"half-closed\n")
        with pytest.raises(EOFError):
            rframe.read_frame(s)


def test_raw_command_line_too_long_is_refused_not_split(server):
    """A line at the 64 KiB cap is refused whole: cut there, its rest would
    run as a command of its own."""
    with raw_socket(server) as s:
        s.sendall(b"echo " + b"a" * (70 * 1024))
        header, body = rframe.read_frame(s)
        assert (header["op"], header["error"]) == ("error", "too-large"), header
        assert "shorter than 64 KiB" in header["message"]
        with pytest.raises((EOFError, ConnectionResetError)):
            rframe.read_frame(s)
    with raw_socket(server) as s:  # just under the cap: one command, one result
        line = b"echo " + b"b" * (60 * 1024)
        s.sendall(line)
        header, body = rframe.read_frame(s)
        assert (header["op"], body) == ("result", b"b" * (60 * 1024) + b"\n")


def test_raw_command_line_still_arriving_at_the_header_deadline_is_refused_not_split():
    """A line trickled in, never pausing, past the header deadline: refused
    whole with ``timeout``; run as far as it came, its rest would be a second command."""
    with running(rframe.Server(port=0, header_timeout=0.4)) as server:
        for _ in range(5):
            with raw_socket(server) as s:
                s.sendall(b"echo ")
                stop = last = time.monotonic()
                stop += 1.0
                longest_gap = 0.0
                try:
                    while last < stop:
                        s.sendall(b"a")
                        time.sleep(0.005)  # well under the 20 ms pause that ends a line
                        now = time.monotonic()
                        longest_gap, last = max(longest_gap, now - last), now
                except OSError:  # refused and closed meanwhile
                    pass
                header, _ = rframe.read_frame(s)
            if longest_gap < 0.015:  # (else this machine paused the sender: a pause ends a line)
                break
        else:
            pytest.skip("the sender kept pausing for 15 ms or more")
        assert (header["op"], header["error"]) == ("error", "timeout"), header


def test_frame_split_after_its_first_byte_is_not_a_raw_command(server):
    """A run request's header is 32..126 bytes long, so its first byte is
    printable: arriving alone, it must still be read as a frame."""
    data = rframe.pack_frame(b"", op="run", cmd="echo framed")
    assert 32 <= data[0] < 127 and data[1:4] == b"\0\0\0"
    with raw_socket(server) as s:
        if s.family == socket.AF_INET:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(data[:1])
        time.sleep(0.02)  # deliberately two segments (not synchronisation)
        s.sendall(data[1:])
        header, body = rframe.read_frame(s)
    assert header["op"] == "result", header
    assert body == b"framed\n"


# --------------------------------------------------------------------------- limits


def test_max_connections(tmp_path):
    with running(rframe.Server(port=0, max_connections=2)) as s:
        a, b = client_for(s), client_for(s)
        try:
            assert a.run("echo a").stdout == b"a\n"  # both hold a slot now
            assert b.run("echo b").stdout == b"b\n"
            t0 = time.monotonic()
            with client_for(s) as third:
                with pytest.raises(rframe.RemoteError) as info:
                    third.run("echo c")
                assert info.value.code == "busy"
                assert third.closed
                with pytest.raises(ConnectionAbortedError, match="busy"):
                    third.run("echo c")
            assert time.monotonic() - t0 < 2  # refused, not left hanging
            # A request too large for the socket buffers, sent before the
            # refusal is read: its sender gets the "busy" frame, not a broken
            # pipe (the refused connection is drained for a moment).
            for _ in range(3):
                with socket.create_connection(s.address, timeout=HANG_BOUND) as raw:
                    raw.sendall(rframe.pack_frame(b"x" * (2 << 20), op="run", cmd="cat"))
                    assert rframe.read_frame(raw).header["error"] == "busy"
            a.close()

            def served():
                try:
                    with client_for(s) as c:
                        return c.run("echo d").stdout == b"d\n"
                except rframe.RemoteError as e:
                    assert e.code == "busy"
                    return False

            assert wait_until(served, 5)  # the freed slot is reused
        finally:
            a.close()
            b.close()


def test_idle_connections_are_closed(tmp_path):
    with running(rframe.Server(port=0, idle_timeout=0.5)) as s:
        with raw_socket(s) as idle:
            t0 = time.monotonic()
            assert read_all(idle) == b""  # closed by the server, quietly
            assert 0.4 < time.monotonic() - t0 < 3
        with client_for(s) as c:  # a busy connection is not idle
            assert c.run("sleep 0.8; echo busy").stdout == b"busy\n"


def test_a_slow_but_steady_reader_gets_a_large_result_whole():
    """The idle timeout bounds a stall in sending a reply, not the whole
    reply: 16 MiB read at about 8 MB/s takes longer than it, and arrives."""
    size = 16 << 20
    with running(rframe.Server(port=0, idle_timeout=0.5, max_output=size)) as s:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connecting: little buffered
            sock.settimeout(HANG_BOUND)
            sock.connect(s.address)
            rframe.send_frame(sock, b"", {"op": "run", "cmd": f"head -c {size} /dev/zero"})
            decoder, frames = rframe.FrameDecoder(), []
            t0 = time.monotonic()
            while not frames:
                chunk = sock.recv(64 * 1024)
                if not chunk:
                    decoder.close()  # raises IncompleteFrame if the reply was cut
                    pytest.fail("the server closed the connection before its reply")
                frames = decoder.feed(chunk)
                time.sleep(0.008)
            assert time.monotonic() - t0 > 0.5, "the test must outlast the idle timeout"
            header, body = frames[0]
            assert (header["op"], header["stdout_truncated"], len(body)) == ("result", False, size)


def test_garbage_and_half_frames_cost_only_their_connection(tmp_path):
    with running(rframe.Server(port=0, header_timeout=1.0)) as s:
        # a half frame, left open: the header deadline closes it with a "timeout" error
        half = raw_socket(s)
        half.sendall(b'\x40\x00\x00\x00{"tot')
        # binary garbage: a length over the header limit
        with raw_socket(s) as g:
            g.sendall(b"\x00\x01\x02\x03\x04\x05\x06\x07")
            header, _ = rframe.read_frame(g)
            assert (header["op"], header["error"]) == ("error", "too-large")
            assert read_all(g) == b""
        # bad JSON
        with raw_socket(s) as g:
            g.sendall(b"\x05\x00\x00\x00{abc}")
            header, _ = rframe.read_frame(g)
            assert header["error"] == "bad-request"
            assert read_all(g) == b""
        # a body over the request size cap (16 MiB)
        with client_for(s) as c:
            with pytest.raises(rframe.RemoteError) as info:
                c.run("cat", input=b"x" * (17 * MiB))
            assert info.value.code == "too-large"
            assert c.closed
        # a client that connects and leaves, and one that leaves mid-frame
        raw_socket(s).close()
        with raw_socket(s) as g:
            g.sendall(b'\x40\x00\x00\x00{"total_si')
        # meanwhile another client is served
        t0 = time.monotonic()
        with client_for(s) as c:
            assert c.run("echo served").stdout == b"served\n"
        assert time.monotonic() - t0 < 1
        # the half frame is closed at its deadline, with a reason
        with half:
            header, _ = rframe.read_frame(half)
            assert (header["op"], header["error"]) == ("error", "timeout")
            assert read_all(half) == b""


# --------------------------------------------------------------------------- authentication


@pytest.fixture(params=["tcp", "unix"])
def token_server(request, tmp_path):
    with running(make_server(request.param, tmp_path, token="s3cret token")) as s:
        yield s


def test_auth_success(token_server):
    with client_for(token_server, token="s3cret token") as c:
        assert c.run("echo authenticated").stdout == b"authenticated\n"
    with client_for(token_server, token=b"s3cret token") as c:
        assert c.run("echo bytes-token").stdout == b"bytes-token\n"


def test_auth_wrong_token(token_server, caplog):
    caplog.set_level(logging.WARNING, logger="rframe.server")
    t0 = time.monotonic()
    with pytest.raises(rframe.AuthenticationError) as info:
        client_for(token_server, token="wrong")
    assert isinstance(info.value, ConnectionError)
    assert "failed" in str(info.value)
    assert time.monotonic() - t0 < 3
    # the failed attempt is logged
    assert wait_until(lambda: any("authentication failed" in r.getMessage() for r in caplog.records), 5)


def test_proofs_without_a_challenge_do_not_hold_up_logins(token_server):
    """A proof sent with no challenge before it guesses nothing: it is refused
    without taking the login turn, which wrong guesses hold for 0.5 s each."""
    bogus = []
    try:
        for _ in range(12):  # 6 s of turns, were they taken
            s = raw_socket(token_server)
            bogus.append(s)
            rframe.send_frame(s, b"", {"op": "auth", "nonce": "00", "client_nonce": "00", "proof": "00"})
        with client_for(token_server, token="s3cret token", timeout=2.5) as c:
            assert c.run("echo let in").stdout == b"let in\n"
        for s in bogus:
            assert rframe.read_frame(s).header["error"] == "auth"
    finally:
        for s in bogus:
            s.close()


def test_stop_does_not_wait_for_logins_waiting_their_turn():
    """Wrong guesses are answered one at a time, 0.5 s apart: twelve of them
    queue for 6 s. stop() closes the waiting ones at once instead."""
    server = rframe.Server(port=0, token="s3cret", header_timeout=30)
    guesses = []

    def guess():
        s = raw_socket(server)
        guesses.append(s)
        rframe.send_frame(s, b"", {"op": "auth"})
        nonce = rframe.read_frame(s).header["nonce"]
        rframe.send_frame(s, b"", {"op": "auth", "nonce": nonce, "client_nonce": "00" * 32, "proof": "00" * 32})

    server.start()
    try:
        for _ in range(12):
            guess()
        time.sleep(0.3)  # the first holds the turn, the others wait for it
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 2.5
    finally:
        server.stop()
        for s in guesses:
            s.close()


def test_no_token_against_a_token_server(token_server):
    with client_for(token_server) as c:
        with pytest.raises(rframe.AuthenticationError, match="authentication required"):
            c.run("echo should-not-run")
        assert c.closed


def test_unauthenticated_request_with_a_body_gets_an_auth_error(token_server):
    """PROTOCOL.md: any request before authentication gets an ``auth`` error."""
    with client_for(token_server) as c:
        with pytest.raises(rframe.AuthenticationError):
            c.run("cat", input=b"x")
        assert c.closed


def test_raw_command_refused_with_token(token_server):
    with raw_socket(token_server) as s:
        s.sendall(b"echo should-not-run")
        header, body = rframe.read_frame(s)
        assert (header["op"], header["error"]) == ("error", "auth")
        assert b"should-not-run" not in body
        assert read_all(s) == b""


def test_handshake_by_hand(token_server):
    """PROTOCOL.md's handshake step by step; the server proves it holds the token."""
    token = b"s3cret token"
    with raw_socket(token_server) as s:
        rframe.send_frame(s, b"", {"op": "auth"})
        challenge = rframe.read_frame(s).header
        assert challenge["op"] == "challenge" and len(challenge["nonce"]) == 64
        sn, cn = challenge["nonce"], "ab" * 32
        proof = hmac.new(token, f"rframe-client:{sn}:{cn}".encode(), "sha256").hexdigest()
        rframe.send_frame(s, b"", {"op": "auth", "nonce": sn, "client_nonce": cn, "proof": proof})
        welcome = rframe.read_frame(s).header
        assert welcome["op"] == "welcome"
        expected = hmac.new(token, f"rframe-server:{sn}:{cn}".encode(), "sha256").hexdigest()
        assert hmac.compare_digest(welcome["proof"], expected)
        rframe.send_frame(s, b"", {"op": "run", "cmd": "echo in"})
        assert rframe.read_frame(s).body == b"in\n"


def test_token_client_refuses_a_server_without_token(server):
    # Such a server cannot prove the token: it could be anyone who took the port.
    with pytest.raises(rframe.AuthenticationError, match="has no token"):
        client_for(server, token="anything")
    with client_for(server) as c:  # without a token it serves
        assert c.run("echo ok").stdout == b"ok\n"


def test_client_rejects_a_server_that_cannot_prove_the_token(tmp_path):
    """A fake server that accepts any proof, but cannot make one."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(HANG_BOUND)

    def fake():
        conn, _ = listener.accept()
        with conn:
            rframe.read_frame(conn)
            rframe.send_frame(conn, b"", {"op": "challenge", "nonce": "cd" * 32})
            rframe.read_frame(conn)
            rframe.send_frame(conn, b"", {"op": "welcome", "proof": "00" * 32})
            read_all(conn)

    t = threading.Thread(target=fake, daemon=True)
    t.start()
    try:
        with pytest.raises(rframe.AuthenticationError, match="could not prove"):
            rframe.Client(*listener.getsockname(), token="tok", timeout=HANG_BOUND)
    finally:
        t.join(HANG_BOUND)
        listener.close()


def test_auth_helpers_match_hmac():
    r = rframe._rframe
    sn, cn = r.auth_nonce(), r.auth_nonce()
    assert len(sn) == 64 and sn != cn
    expected = hmac.new(b"k", f"rframe-client:{sn}:{cn}".encode(), "sha256").hexdigest()
    assert r.auth_proof(b"k", "client", sn, cn) == expected
    assert r.auth_verify(b"k", "client", sn, cn, expected)
    assert not r.auth_verify(b"k", "server", sn, cn, expected)
    assert not r.auth_verify(b"other", "client", sn, cn, expected)


@pytest.mark.parametrize("name", ["timeout", "header_timeout", "idle_timeout"])
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), 1e10, 1e30])
def test_time_limits_out_of_range_are_value_errors(name, value):
    """Not a panic (a BaseException) and not a server whose connections fail:
    a time limit past what the clock can add is refused up front."""
    with pytest.raises(ValueError, match=f"{name} must be a positive number of seconds"):
        rframe.Server(port=0, **{name: value})


def test_time_limits_at_the_cap_serve():
    with running(rframe.Server(port=0, timeout=1e9, header_timeout=1e9, idle_timeout=1e9)) as s, client_for(s) as c:
        assert c.run("echo fine").stdout == b"fine\n"


# --------------------------------------------------------------------------- protected mode


def test_protected_mode_refuses_public_bind_without_token():
    with pytest.raises(ValueError, match="token"):
        rframe.Server(host="0.0.0.0", port=0)


def test_protected_mode_insecure_or_token_binds():
    with pytest.warns(RuntimeWarning) as warned:
        s = rframe.Server(host="0.0.0.0", port=0, insecure=True)
    said = [str(w.message) for w in warned]
    assert any("without a token" in m for m in said) and any("without TLS" in m for m in said), said
    assert s.address[0] == "0.0.0.0" and s.address[1] > 0 and s.tls_fingerprint is None
    s.stop()
    token = rframe.new_token()
    with running(rframe.Server(host="0.0.0.0", port=0, token=token)) as s:
        # TLS, by default off loopback; plaintext still from this machine.
        assert s.tls_fingerprint is not None
        with rframe.Client("127.0.0.1", s.address[1], token=token, timeout=HANG_BOUND) as c:
            assert c.run("echo public").stdout == b"public\n"
            assert c.tls_fingerprint is None


# --------------------------------------------------------------------------- handlers


def test_handler_return_types(tmp_path):
    def handler(frame):
        kind = frame.header.get("kind")
        if kind == "bytes":
            return frame.body.upper()
        if kind == "str":
            return frame.body.decode().upper() + " ✓"
        if kind == "tuple":
            return {"echo": frame.header["n"] + 1}, frame.body[::-1]
        if kind == "frame":
            return rframe.Frame({"via": "frame"}, b"framed")
        if kind == "boom":
            raise KeyError("no such thing")
        return None

    with running(rframe.Server(port=0, handler=handler)) as s, client_for(s) as c:
        assert c.request(b"abc", kind="bytes").body == b"ABC"
        assert c.request(b"abc", kind="str").body == "ABC ✓".encode()
        f = c.request(b"abc", kind="tuple", n=41)
        assert (f.header["echo"], f.body) == (42, b"cba")
        f = c.request(kind="frame")
        assert (f.header["via"], f.body) == ("frame", b"framed")
        with pytest.raises(rframe.RemoteError) as info:
            c.request(kind="boom")
        assert info.value.code == "handler" and "KeyError" in info.value.message
        with pytest.raises(rframe.RemoteError) as info:
            c.request(kind="none")
        assert info.value.code == "handler"
        # the server and the connection go on
        assert c.request(b"still", kind="bytes").body == b"STILL"
        c.send(b"one", kind="bytes")
        c.send(b"two", kind="bytes")
        assert [c.recv().body, c.recv().body] == [b"ONE", b"TWO"]


def test_handler_gets_op_frames_too(tmp_path):
    """With a handler no op is interpreted: {"op": "run"} goes to the handler."""
    with running(rframe.Server(port=0, handler=lambda f: repr(f.header.get("cmd")))) as s, client_for(s) as c:
        assert c.request(op="run", cmd="echo hi").body == b"'echo hi'"


def test_handler_server_with_token(tmp_path):
    with running(rframe.Server(port=0, handler=lambda f: f.body * 2, token="tk")) as s:
        with client_for(s, token="tk") as c:
            assert c.request(b"ab").body == b"abab"
        with client_for(s) as c:
            with pytest.raises(rframe.AuthenticationError):
                c.request()


def test_length_only_codec_errors_close_the_connection(tmp_path):
    """PROTOCOL.md: a length-only codec has no header to carry an error, so the
    server closes the connection instead of answering."""

    def handler(frame):
        if frame.body == b"boom":
            raise RuntimeError("boom")
        return frame.body

    codec = rframe.Codec(json_header=False, byteorder="big")
    with running(rframe.Server(port=0, handler=handler, codec=codec)) as s, raw_socket(s) as sock:
        sock.sendall(b"\x00\x00\x00\x02ok")
        assert sock.recv(6) == b"\x00\x00\x00\x02ok"
        sock.sendall(b"\x00\x00\x00\x04boom")
        sock.settimeout(2)
        try:
            rest = read_all(sock)
        except TimeoutError:
            rest = None  # still open
        assert rest == b"", f"expected the connection closed, got {rest!r} (an error must not look like an empty reply)"


def test_length_only_codec_busy_closes_without_a_frame(tmp_path):
    codec = rframe.Codec(json_header=False, byteorder="big")
    with running(rframe.Server(port=0, handler=lambda f: f.body, codec=codec, max_connections=1)) as s:
        with raw_socket(s) as first:
            first.sendall(b"\x00\x00\x00\x01a")
            assert first.recv(5) == b"\x00\x00\x00\x01a"  # holds the only slot
            with raw_socket(s) as second:
                second.settimeout(2)
                try:
                    rest = read_all(second)
                except TimeoutError:
                    rest = None
                assert rest == b"", f"expected the connection closed, got {rest!r} (not an empty frame)"


def test_length_only_codec_handler(tmp_path):
    codec = rframe.Codec(json_header=False, byteorder="big")
    with running(rframe.Server(port=0, handler=lambda f: f.body[::-1], codec=codec)) as s:
        with raw_socket(s) as sock:
            sock.sendall(b"\x00\x00\x00\x03abc")
            assert sock.recv(7) == b"\x00\x00\x00\x03cba"
        with client_for(s, codec=codec) as c:
            assert c.request(b"hello").body == b"olleh"
