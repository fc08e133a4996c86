"""Live commands on a terminal (issue 18, ``start(..., pty=True)``): both
clients, the asyncio one on the default loop and on uvloop, against real
servers on 127.0.0.1, port 0. Time bounds are generous hang guards only."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rframe
from conftest import HANG_BOUND
from server_helpers import cli_server, kill_all, pgrep, sleep_marker, wait_until

pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.skipif(sys.platform == "win32", reason="the command server does not run on Windows"),
]

#: What the tests ask of a terminal: `stty size` says "lines columns".
SIZE = (101, 31)


def lines(output: bytes) -> list[str]:
    """A terminal's lines (it ends them with CR LF), blank ones dropped."""
    return [line for line in output.decode().replace("\r\n", "\n").split("\n") if line]


# --------------------------------------------------------------------------- blocking client


def test_tty_names_a_pseudo_terminal(client):
    with client.start("tty", pty=True, size=SIZE) as proc:
        out = proc.stdout.read()
        assert proc.wait() == 0
    assert lines(out)[0].startswith("/dev/pts/"), out


def test_stdin_and_stdout_are_terminals(client):
    with client.start("test -t 0 && test -t 1 && test -t 2", pty=True, size=SIZE) as proc:
        assert proc.wait(timeout=HANG_BOUND) == 0
    # Without pty they are pipes.
    assert client.start("test -t 0 || test -t 1").wait(timeout=HANG_BOUND) == 1


def test_stty_size_is_the_size_asked_for(client):
    out, err = client.start("stty size", pty=True, size=SIZE).communicate()
    assert (lines(out), err) == (["31 101"], b"")


def test_resize_changes_the_size_and_the_command_hears_of_it(client):
    script = "trap 'stty size; exit 5' WINCH; stty size; echo ready; while :; do sleep 0.05; done"
    with client.start(script, pty=True, size=SIZE) as proc:
        assert lines(proc.stdout.readline()) == ["31 101"]
        assert lines(proc.stdout.readline()) == ["ready"]
        proc.resize(120, 40)
        assert proc.wait(timeout=HANG_BOUND) == 5
        assert lines(proc.stdout.read()) == ["40 120"]


def test_ctrl_c_written_to_stdin_interrupts_sleep(client):
    with client.start(["sleep", "100"], pty=True, size=SIZE) as proc:
        proc.stdin.write(b"\x03")
        assert proc.wait(timeout=HANG_BOUND) == -2


def test_commands_get_signals_the_server_ignores_at_their_defaults():
    # A server started with & from a script ignores SIGINT and SIGQUIT, and
    # an ignored signal stays ignored across exec: its commands must not.
    with cli_server(ignore=("SIGINT", "SIGQUIT")) as server, server.client() as c:
        with c.start(["sleep", "100"]) as proc:
            proc.send_signal("INT")
            assert proc.wait(timeout=HANG_BOUND) == -2
        with c.start(["sleep", "100"]) as proc:
            proc.send_signal("QUIT")
            assert proc.wait(timeout=HANG_BOUND) == -3
        with c.start(["sleep", "100"], pty=True, size=SIZE) as proc:
            proc.stdin.write(b"\x03")
            assert proc.wait(timeout=HANG_BOUND) == -2


def test_stderr_is_merged_into_stdout_as_on_any_terminal(client):
    out, err = client.start("echo out; echo err >&2", pty=True, size=SIZE).communicate()
    assert (lines(out), err) == (["out", "err"], b"")


def test_input_is_echoed_and_closing_stdin_is_ctrl_d(client):
    with client.start("cat", pty=True, size=SIZE) as proc:
        proc.stdin.write(b"hello\n")
        # The terminal echoes the line, then cat writes it.
        assert lines(proc.stdout.readline() + proc.stdout.readline()) == ["hello", "hello"]
        proc.stdin.close()
        assert proc.wait(timeout=HANG_BOUND) == 0


def test_closing_stdin_after_a_partial_line_ends_the_input(client):
    # One Ctrl-D after "abc" hands the partial line over; a second ends the input.
    with client.start("cat", pty=True, size=SIZE) as proc:
        proc.stdin.write(b"abc")
        proc.stdin.close()
        assert proc.wait(timeout=HANG_BOUND) == 0
        # The terminal echoes abc; then cat writes it.
        assert proc.stdout.read() == b"abcabc"


def test_term_is_the_one_given_else_the_clients_else_the_default(client, monkeypatch):
    def term(**kw):
        out, _ = client.start("echo $TERM", pty=True, size=SIZE, **kw).communicate()
        return lines(out)

    assert term(term="vt100") == ["vt100"]
    monkeypatch.setenv("TERM", "screen")
    assert term() == ["screen"]
    monkeypatch.delenv("TERM")
    assert term() == [rframe._rframe.DEFAULT_TERM] == ["xterm-256color"]


def test_the_size_defaults_to_the_clients_terminal_else_80x24(client):
    # The test runner's stdout is not a terminal (pytest captures it).
    out, _ = client.start("stty size", pty=True).communicate()
    assert lines(out) == ["24 80"]


def test_bad_terminal_arguments_are_value_errors(client):
    for kw in ({"size": (0, 24)}, {"size": (80, 70000)}, {"size": (80.5, 24)}):
        with pytest.raises(ValueError, match="from 1 to 65535"):
            client.start("true", pty=True, **kw)
    with pytest.raises(ValueError, match="pty=True"):
        client.start("true", size=(80, 24))
    with client.start("cat", pty=True, size=SIZE) as proc:
        with pytest.raises(ValueError, match="columns"):
            proc.resize(0, 10)
    with pytest.raises(rframe.RemoteError, match="term") as e:
        client.start("true", pty=True, term="x; rm -rf /")
    assert e.value.code == "bad-request"
    assert client.run("echo ok").stdout == b"ok\n", "the connection goes on"


def test_resize_without_a_terminal_is_a_usage_error(client):
    with client.start("cat") as proc:
        with pytest.raises(ValueError, match="pty=True"):
            proc.resize(80, 24)


def test_a_disconnect_kills_the_terminals_whole_session(server):
    marker = sleep_marker()
    try:
        c = rframe.Client(*server.address, timeout=HANG_BOUND)
        # A job in a process group of its own, as an interactive shell makes one.
        proc = c.start(f"set -m; sleep {marker} & echo ready; wait", pty=True, size=SIZE)
        assert lines(proc.stdout.readline()) == ["ready"]
        assert pgrep(f"sleep {marker}")
        c.close()
        assert wait_until(lambda: not pgrep(f"sleep {marker}"))
    finally:
        kill_all(f"sleep {marker}")


def test_the_time_limit_kills_a_terminals_command(client):
    with client.start("echo ready; sleep 100", pty=True, size=SIZE, timeout=0.5) as proc:
        assert proc.wait(timeout=HANG_BOUND) == -9
        assert proc.timed_out
        assert lines(proc.stdout.read()) == ["ready"]


def test_no_pty_refuses_a_terminal_with_a_typed_error():
    with rframe.Server(port=0, pty=False) as server, rframe.Client(*server.address, timeout=HANG_BOUND) as c:
        with pytest.raises(rframe.RemoteError, match="--no-pty") as e:
            c.start("tty", pty=True)
        assert e.value.code == "not-allowed"
        assert c.start("echo still").communicate() == (b"still\n", b"")


def test_an_allow_list_refuses_a_terminal_unless_allow_pty():
    with rframe.Server(port=0, allow=["tty"]) as server, rframe.Client(*server.address, timeout=HANG_BOUND) as c:
        with pytest.raises(rframe.RemoteError, match="--allow-pty") as e:
            c.start(["tty"], pty=True)
        assert e.value.code == "not-allowed"
    with (
        rframe.Server(port=0, allow=["tty"], allow_pty=True) as server,
        rframe.Client(*server.address, timeout=HANG_BOUND) as c,
    ):
        out, _ = c.start(["tty"], pty=True, size=SIZE).communicate()
        assert lines(out)[0].startswith("/dev/pts/")


# --------------------------------------------------------------------------- asyncio client


def test_async_a_terminal_its_size_and_a_resize(arun):
    async def main(c):
        script = "tty; test -t 0 && test -t 1 && echo both; stty size; read x; stty size"
        async with await c.start(script, pty=True, size=SIZE) as proc:
            got = [lines(await proc.stdout.readline()) for _ in range(3)]
            proc.resize(120, 40)
            proc.stdin.write(b"\n")
            await proc.stdin.drain()
            rest = lines(await proc.stdout.read())
            return got, rest, await proc.wait()

    got, rest, code = arun(main)
    assert got[0][0].startswith("/dev/pts/") and got[1:] == [["both"], ["31 101"]], got
    assert (rest, code) == (["40 120"], 0)


def test_async_ctrl_c_interrupts_sleep(arun):
    async def main(c):
        proc = await c.start(["sleep", "100"], pty=True, size=SIZE)
        proc.stdin.write(b"\x03")
        await proc.stdin.drain()
        return await proc.wait()

    assert arun(main) == -2


def test_async_refusals_are_typed(arun):
    async def main(c):
        with pytest.raises(ValueError, match="from 1 to 65535"):
            await c.start("true", pty=True, size=(0, 1))
        proc = await c.start("cat")
        with pytest.raises(ValueError, match="pty=True"):
            proc.resize(80, 24)
        proc.stdin.close()
        return await proc.wait()

    assert arun(main) == 0


def test_async_no_pty_server_refuses(arun):
    async def main(_c):
        with rframe.Server(port=0, pty=False) as server:
            async with rframe.AsyncClient(*server.address, timeout=HANG_BOUND) as c:
                with pytest.raises(rframe.RemoteError, match="--no-pty") as e:
                    await c.start("tty", pty=True)
                assert e.value.code == "not-allowed"
                return (await c.run("echo on")).stdout

    assert arun(main) == b"on\n"


# --------------------------------------------------------------------------- the command line's -t


def _cli(server, *args):
    return [sys.executable, "-m", "rframe.client", "--port", str(server.address[1]), *args]


def test_cli_t_with_stdin_not_a_terminal_runs_without_one_as_ssh_does(server):
    # On a terminal, the pipe's end would be no end of input: cat would wait until the time limit.
    r = subprocess.run(
        _cli(server, "-t", "-c", "cat; test -t 0 || echo no terminal"),
        input=b"hi\n",
        capture_output=True,
        timeout=HANG_BOUND,
    )
    assert (r.returncode, r.stdout) == (0, b"hi\nno terminal\n")
    assert r.stderr == b"rframe: pseudo-terminal will not be allocated because stdin is not a terminal\n"


def test_cli_tt_forces_a_terminal_and_the_pipes_end_is_its_end_of_input(server):
    r = subprocess.run(
        _cli(server, "-tt", "-c", "cat; test -t 0 && echo terminal"),
        input=b"hi\n",
        capture_output=True,
        timeout=HANG_BOUND,
    )
    # The terminal echoes the line, then cat writes it.
    assert (r.returncode, lines(r.stdout), r.stderr) == (0, ["hi", "hi", "terminal"], b"")


# --------------------------------------------------------------------------- the server's flags


def test_the_servers_no_pty_and_allow_pty_flags():
    with cli_server("--no-pty") as server, server.client() as c:
        with pytest.raises(rframe.RemoteError, match="--no-pty"):
            c.start("tty", pty=True)
    with cli_server("--allow", "tty") as server, server.client() as c:
        with pytest.raises(rframe.RemoteError, match="--allow-pty"):
            c.start(["tty"], pty=True)
    with cli_server("--allow", "tty", "--allow-pty") as server, server.client() as c:
        out, _ = c.start(["tty"], pty=True, size=SIZE).communicate()
        assert lines(out)[0].startswith("/dev/pts/")
