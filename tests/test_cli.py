"""``python -m rframe.server`` and ``python -m rframe.client`` as real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import rframe
from conftest import HANG_BOUND
from rframe.server import parse_size
from server_helpers import ENV, ROOT, CliProcess, CliServer, kill_all, pgrep, sleep_marker, wait_until


def run_client(*args, input=None, env=None, timeout=HANG_BOUND):
    return subprocess.run(
        [sys.executable, "-m", "rframe.client", *map(str, args)],
        input=input,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        env=env if env is not None else ENV,
    )


@pytest.fixture(scope="module")
def cli_server():
    server = CliServer()
    try:
        yield server
    finally:
        server.proc.send_signal(signal.SIGTERM)
        code = server.wait()
    assert code == 0, server.stderr


def connect_args(server):
    return ("--host", server.host, "--port", server.port)


# --------------------------------------------------------------------------- the server


def test_server_prints_one_line_and_logs_requests(cli_server):
    assert cli_server.host == "127.0.0.1" and cli_server.port > 0
    with cli_server.client() as c:
        assert c.run("echo cli-logged; exit 2").returncode == 2
    assert wait_until(lambda: "cli-logged" in cli_server.stderr, 5), cli_server.stderr
    line = next(ln for ln in cli_server.stderr.splitlines() if "cli-logged" in ln)
    assert "INFO" in line and "returncode 2" in line and "127.0.0.1:" in line and "bytes" in line
    assert len(cli_server.out) == 1  # exactly one line on stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_server_stops_on_signal_killing_commands(sig):
    marker = sleep_marker()
    server = CliServer()
    try:
        client = server.client()
        # a command is running and another client is idle when the signal comes
        idle = server.client()
        client.send(op="run", cmd=f"sleep {marker}")
        assert wait_until(lambda: pgrep(marker), 5)
        t0 = time.monotonic()
        server.proc.send_signal(sig)
        assert server.wait(HANG_BOUND) == 0, server.stderr
        assert time.monotonic() - t0 < 6.5  # within the stop grace
        assert "Traceback" not in server.stderr, server.stderr
        assert wait_until(lambda: not pgrep(marker), 5)
        with pytest.raises(ConnectionError):
            client.recv()
        client.close()
        idle.close()
    finally:
        server.stop()
        kill_all(marker)


def test_server_refuses_public_address_without_token():
    p = CliProcess("rframe.server", "--host", "0.0.0.0", "--port", "0")
    assert p.wait() == 2
    assert "token" in p.stderr and "Traceback" not in p.stderr
    assert p.stdout == ""


def test_server_insecure_warns():
    server = CliServer("--host", "0.0.0.0", "--insecure")
    try:
        assert server.host == "0.0.0.0"
        assert wait_until(lambda: "WARNING" in server.stderr, 5)
        with rframe.Client("127.0.0.1", server.port, timeout=HANG_BOUND) as c:
            assert c.run("echo open").stdout == b"open\n"
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_server_token_file_and_env(tmp_path):
    token_file = tmp_path / "token"
    file_token = "file-token-" + "x" * 32
    token_file.write_text(file_token + "\n")
    server = CliServer("--token-file", token_file, "--host", "0.0.0.0")
    try:
        with rframe.Client("127.0.0.1", server.port, token=file_token, timeout=HANG_BOUND) as c:
            assert c.run("echo with-file-token").stdout == b"with-file-token\n"
        with pytest.raises(rframe.AuthenticationError):
            rframe.Client("127.0.0.1", server.port, token="wrong", timeout=HANG_BOUND)
        # the client CLI reads the same file
        r = run_client("--port", server.port, "--token-file", token_file, "-c", "echo via-cli")
        assert (r.returncode, r.stdout) == (0, b"via-cli\n"), r.stderr
        r = run_client("--port", server.port, "-c", "echo no-token")
        assert r.returncode == 1 and b"authentication" in r.stderr
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    env = dict(ENV, RFRAME_TOKEN="env-token")
    server = CliServer(env=env)
    try:
        with server.client(token="env-token") as c:
            assert c.run("echo with-env-token").stdout == b"with-env-token\n"
        r = run_client("--port", server.port, "-c", "echo env-cli", env=env)
        assert (r.returncode, r.stdout) == (0, b"env-cli\n"), r.stderr
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_server_options(tmp_path):
    sock = tmp_path / "cli.sock"
    server = CliServer(
        "--unix",
        sock,
        "--max-output",
        "1K",
        "--timeout",
        "0.5",
        "--cwd",
        tmp_path,
        "--max-connections",
        "3",
        "--log-level",
        "warning",
    )
    try:
        assert server.where == str(sock)
        with server.client() as c:
            r = c.run("head -c 5000 /dev/zero; pwd >&2")
            assert (len(r.stdout), r.stdout_truncated) == (1024, True)
            assert r.stderr == f"{tmp_path}\n".encode()
            t0 = time.monotonic()
            with pytest.raises(rframe.CommandTimeout):
                c.run("sleep 5")
            assert time.monotonic() - t0 < 3
        assert "ran" not in server.stderr  # INFO lines are off at WARNING
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    assert not sock.exists()


def test_server_allow_and_no_shell():
    server = CliServer("--allow", "echo", "--allow", "printf")
    try:
        with server.client() as c:
            assert c.run("echo $HOME").stdout == b"$HOME\n"
            with pytest.raises(rframe.RemoteError) as info:
                c.run("ls")
            assert info.value.code == "not-allowed"
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    server = CliServer("--no-shell")
    try:
        with server.client() as c:
            assert c.run("echo 'a b' $HOME").stdout == b"a b $HOME\n"
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_server_help_explains_every_flag():
    p = CliProcess("rframe.server", "--help")
    assert p.wait() == 0
    for flag in (
        "--host",
        "--port",
        "--unix",
        "--token-file",
        "RFRAME_TOKEN",
        "--timeout",
        "--max-output",
        "--max-connections",
        "--header-timeout",
        "--allow",
        "--no-shell",
        "--cwd",
        "--insecure",
        "--log-level",
    ):
        assert flag in p.stdout, flag


@pytest.mark.parametrize(
    "args",
    [
        ["--max-output", "lots"],
        ["--port", "70000"],
        ["--timeout", "0"],
        ["--timeout", "inf"],
        ["--idle-timeout", "1e10"],
        ["--cwd", "/no/such/dir"],
    ],
)
def test_server_bad_arguments(args):
    p = CliProcess("rframe.server", *args)
    assert p.wait() == 2
    assert "Traceback" not in p.stderr and p.stderr.strip()


def test_parse_size():
    assert parse_size("16M") == 16 << 20
    assert parse_size("1k") == 1024 and parse_size("2G") == 2 << 30 and parse_size("7") == 7
    assert parse_size("1.5K") == 1536 and parse_size("3MiB") == 3 << 20


def test_server_main_in_process(capsys):
    """main(argv) returns the exit status instead of exiting."""
    from rframe.server import main

    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2
    assert "token" in capsys.readouterr().err


# --------------------------------------------------------------------------- the client


def test_client_c_exit_code_and_streams(cli_server):
    r = run_client(*connect_args(cli_server), "-c", "echo to-out; echo to-err >&2; exit 7")
    assert r.returncode == 7
    assert r.stdout == b"to-out\n"
    assert r.stderr == b"to-err\n"
    r = run_client(*connect_args(cli_server), "-c", "true")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"", b"")
    r = run_client(*connect_args(cli_server), "-c", "kill -KILL $$")
    assert r.returncode == 128 + 9


def test_client_c_binary_output_is_byte_exact(cli_server):
    r = run_client(*connect_args(cli_server), "-c", r"printf '\377\000\344\270\255'")
    assert r.stdout == b"\xff\x00\xe4\xb8\xad"


def test_client_timeout(cli_server):
    t0 = time.monotonic()
    r = run_client(*connect_args(cli_server), "--timeout", "0.5", "-c", "echo begun; sleep 5")
    assert time.monotonic() - t0 < 4
    assert r.returncode == 124
    assert r.stdout == b"begun\n" and b"timed out" in r.stderr


def test_client_prompt_loop(cli_server):
    script = "echo one\n\n   \necho two >&2\nexit 3\nq\necho never\n"
    r = run_client(*connect_args(cli_server), input=script.encode())
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"one\n"
    assert r.stderr.count(b"empty command refused") == 2
    assert b"two\n" in r.stderr and b"never" not in r.stdout + r.stderr


def test_client_prompt_loop_ends_at_end_of_input(cli_server):
    r = run_client(*connect_args(cli_server), input=b"echo last")
    assert (r.returncode, r.stdout) == (0, b"last\n")


def test_client_empty_command():
    r = run_client("-c", "  ")
    assert r.returncode == 2 and b"empty command refused" in r.stderr


def test_client_without_server():
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for stdin in (None, b"echo hi\n"):
        args = ("--port", port) if stdin else ("--port", port, "-c", "echo hi")
        r = run_client(*args, input=stdin)
        assert r.returncode == 1
        assert b"cannot connect" in r.stderr and b"refused" in r.stderr
        assert b"Traceback" not in r.stderr


def test_client_unix(tmp_path):
    sock = tmp_path / "c.sock"
    server = CliServer("--unix", sock)
    try:
        r = run_client("--unix", sock, "-c", "echo unix-cli")
        assert (r.returncode, r.stdout) == (0, b"unix-cli\n"), r.stderr
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0
    r = run_client("--unix", sock, "-c", "echo gone")
    assert r.returncode == 1 and b"cannot connect" in r.stderr


def test_client_help():
    r = run_client("--help")
    assert r.returncode == 0
    for flag in (b"--host", b"--port", b"--unix", b"--token-file", b"--timeout", b"-c"):
        assert flag in r.stdout


def test_client_main_in_process(cli_server, capfdbinary):
    from rframe.client import main

    assert main([*map(str, connect_args(cli_server)), "-c", "echo in-process; exit 4"]) == 4
    assert capfdbinary.readouterr().out == b"in-process\n"


def test_server_header_and_idle_timeouts_are_flags():
    import socket

    server = CliServer("--header-timeout", "0.5", "--idle-timeout", "0.5")
    try:
        with socket.create_connection((server.host, server.port), timeout=HANG_BOUND) as trickle:
            trickle.sendall(b"\x10\x00")  # half a length prefix, then nothing
            reply = rframe.read_frame(trickle)
            assert reply.header["error"] == "timeout"
        with socket.create_connection((server.host, server.port), timeout=HANG_BOUND) as idle:
            assert idle.recv(1) == b""  # closed quietly after the idle timeout
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0, server.stderr


# --------------------------------------------------------------------------- the client: edges


@pytest.mark.parametrize(
    "args", [["--port", "70000"], ["--port", "-1"], ["--timeout", "inf"], ["--timeout", "1e10"], ["--timeout", "nan"]]
)
def test_client_bad_arguments(args):
    # (--port 70000 would reach port 4464: getaddrinfo truncates it)
    r = run_client(*args, "-c", "echo never")
    assert r.returncode == 2 and b"Traceback" not in r.stderr and args[0].encode() in r.stderr, r.stderr


def test_client_token_file_and_environment(tmp_path, monkeypatch):
    from rframe._cli import read_token

    empty = tmp_path / "empty"
    empty.write_bytes(b" \n")
    r = run_client("--token-file", empty, "-c", "echo never")
    assert r.returncode == 2 and b"is empty" in r.stderr and b"Traceback" not in r.stderr
    # A token that is not UTF-8 in the environment: its bytes, on both sides.
    token = b"\xff\xfe-not-utf8"
    env = {**ENV, "RFRAME_TOKEN": os.fsdecode(token)}
    monkeypatch.setenv("RFRAME_TOKEN", os.fsdecode(token))
    assert read_token(None) == token
    server = CliServer(env=env)
    try:
        r = run_client(*connect_args(server), "-c", "echo with-token", env=env)
        assert (r.returncode, r.stdout) == (0, b"with-token\n"), r.stderr
        with pytest.raises(rframe.AuthenticationError):
            server.client(token=b"wrong")
    finally:
        server.terminate()


def test_client_stdout_closed_early_is_quiet(cli_server):
    # python -m rframe.client -c 'seq 200000' | true
    proc = subprocess.Popen(
        [sys.executable, "-m", "rframe.client", *map(str, connect_args(cli_server)), "-c", "seq 200000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=ENV,
    )
    with proc:
        proc.stdout.close()  # before the client writes anything
        proc.stdout = None
        try:
            _, err = proc.communicate(timeout=HANG_BOUND)
        finally:
            proc.kill()
    assert (proc.returncode, err) == (1, b""), err


@contextlib.contextmanager
def prompt_loop(server):
    """``python -m rframe.client`` (the prompt loop) against ``server``, its
    stdio piped; killed after HANG_BOUND, which bounds the block's readlines,
    and on the way out."""
    with subprocess.Popen(
        [sys.executable, "-m", "rframe.client", *map(str, connect_args(server))],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=ENV,
    ) as proc:
        watchdog = threading.Timer(HANG_BOUND, proc.kill)
        watchdog.start()
        try:
            yield proc
        finally:
            watchdog.cancel()
            proc.kill()


def test_client_prompt_loop_streams_each_commands_output(cli_server, tmp_path):
    go = tmp_path / "go"
    with prompt_loop(cli_server) as proc:
        # The command's first line shows while it still runs (it waits for
        # a file that is made only once the line is in), and its stdin is
        # not the loop's: the next line is the next command.
        proc.stdin.write(f"echo a; while [ ! -e {go} ]; do sleep 0.02; done; cat; echo b\n".encode())
        proc.stdin.write(b"echo next\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"a\n"
        go.touch()
        assert proc.stdout.readline() == b"b\n"
        assert proc.stdout.readline() == b"next\n"
        out, err = proc.communicate(timeout=HANG_BOUND)
    assert (proc.returncode, out) == (0, b""), err


def test_client_prompt_loop_ctrl_c_interrupts_the_command_not_the_loop(cli_server):
    with prompt_loop(cli_server) as proc:
        proc.stdin.write(b"trap 'echo caught; exit 5' INT; echo ready; while :; do sleep 0.02; done\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"ready\n"
        proc.send_signal(signal.SIGINT)  # one Ctrl-C: SIGINT to the command
        assert proc.stdout.readline() == b"caught\n"
        out, err = proc.communicate(b"echo still here\n", timeout=HANG_BOUND)
    assert (proc.returncode, out) == (0, b"still here\n"), err


def test_client_prompt_reconnects_after_the_server_closed_an_idle_connection():
    server = CliServer("--idle-timeout", "0.3")
    try:
        with prompt_loop(server) as proc:
            proc.stdin.write(b"echo before\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == b"before\n"
            time.sleep(1.0)  # the server closes the idle connection meanwhile
            out, err = proc.communicate(b"echo after\n", timeout=HANG_BOUND)
        assert (proc.returncode, out) == (0, b"after\n"), err
    finally:
        server.terminate()


def test_client_ctrl_c_while_logging_in_is_quiet(tmp_path):
    import socket

    # A server that accepts and never answers: the handshake waits (no --timeout).
    token = tmp_path / "token"
    token.write_bytes(b"s3cret")
    with socket.create_server(("127.0.0.1", 0)) as mute:
        mute.settimeout(HANG_BOUND)
        proc = CliProcess("rframe.client", "--port", mute.getsockname()[1], "--token-file", token)
        conn, _ = mute.accept()
        with conn:
            conn.settimeout(HANG_BOUND)
            assert conn.recv(64)  # the handshake's first frame is in
            proc.proc.send_signal(signal.SIGINT)
            assert proc.wait() == 130
    assert "Traceback" not in proc.stderr, proc.stderr
