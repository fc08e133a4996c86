"""Token and daemon hygiene: what a command inherits, its session, the socket
file's mode, log lines, and the memory that command output may take."""

from __future__ import annotations

import logging
import os
import socket
import unicodedata

import pytest

import platforms
import rframe
from conftest import HANG_BOUND
from server_helpers import ENV, CliProcess, CliServer, cli_server, client_for, running, wait_until

TOKEN = "s3cret-hygiene"


# --------------------------------------------------------------------------- the token stays with the server


def test_the_cli_server_keeps_its_token_from_commands():
    with cli_server(env=dict(ENV, RFRAME_TOKEN=TOKEN)) as server, server.client(token=TOKEN) as c:
        r = c.run("printenv RFRAME_TOKEN")
        assert (r.stdout, r.returncode) == (b"", 1)


def test_an_embedded_server_keeps_its_token_from_commands(monkeypatch):
    # The embedding process still has the variable: the command must not.
    monkeypatch.setenv("RFRAME_TOKEN", TOKEN)
    with running(rframe.Server(port=0, token=TOKEN)) as s, client_for(s, token=TOKEN) as c:
        r = c.run("printenv RFRAME_TOKEN")
        assert (r.stdout, r.returncode) == (b"", 1)
        # Nor can a request put it back.
        r = c.run("printenv RFRAME_TOKEN", env={"RFRAME_TOKEN": "from-the-client"})
        assert (r.stdout, r.returncode) == (b"", 1)
        assert c.run("printenv OTHER", env={"OTHER": "kept"}).stdout == b"kept\n"


def test_read_token_takes_the_variable_out_of_the_environment(monkeypatch, tmp_path):
    from rframe._cli import read_token

    monkeypatch.setenv("RFRAME_TOKEN", TOKEN)
    assert read_token(None) == TOKEN.encode()
    assert "RFRAME_TOKEN" not in os.environ
    # A token file wins, and the variable goes all the same.
    token_file = tmp_path / "token"
    token_file.write_text("from-the-file\n")
    monkeypatch.setenv("RFRAME_TOKEN", TOKEN)
    assert read_token(str(token_file)) == b"from-the-file"
    assert "RFRAME_TOKEN" not in os.environ


# --------------------------------------------------------------------------- a session of its own

# Starts the server as the leader of a new session whose controlling terminal
# is the pty named by argv[1], as a server started from a terminal is.
WITH_TTY = """\
import os, sys
os.setsid()
# A session leader's first terminal opened becomes its controlling terminal.
os.close(os.open(sys.argv[1], os.O_RDWR))
os.execv(sys.executable, [sys.executable, "-m", "rframe.server", *sys.argv[2:]])
"""


def _controlling_tty(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        # Field 7, tty_nr; the fields after the parenthesized name count from 3.
        return int(f.read().rpartition(")")[2].split()[4])


@platforms.linux
def test_a_command_that_opens_the_terminal_fails_at_once(tmp_path):
    try:
        master, slave = os.openpty()
    except OSError as e:
        pytest.skip(f"no pseudo-terminal: {e}")
    script = tmp_path / "with_tty.py"
    script.write_text(WITH_TTY)
    server = CliProcess(str(script), os.ttyname(slave), "--port", "0")
    os.close(slave)
    try:
        where = server.wait_line(CliServer.LINE).group(1)
        assert _controlling_tty(server.proc.pid) != 0, "the server got no terminal: the test proves nothing"
        host, _, port = where.rpartition(":")
        with rframe.Client(host, int(port), timeout=HANG_BOUND) as c:
            # Within the server's session this opens, and reading would stop
            # the command until its time limit.
            r = c.run("exec </dev/tty; echo opened", timeout=HANG_BOUND)
            assert r.returncode != 0 and r.stdout == b"", r
            r = c.run(["python3", "-c", "import os; print(os.getsid(0) == os.getpid())"])
            assert r.stdout == b"True\n"
    finally:
        server.stop()
        os.close(master)


# --------------------------------------------------------------------------- the socket file


@platforms.unix_sockets
def test_the_unix_socket_file_is_private_whatever_the_umask(tmp_path):
    path = tmp_path / "open.sock"
    old = os.umask(0o000)
    try:
        server = rframe.Server(unix_path=str(path))
    finally:
        os.umask(old)
    with running(server) as s, client_for(s) as c:
        assert path.stat().st_mode & 0o7777 == 0o600
        assert c.run("echo private").stdout == b"private\n"


# --------------------------------------------------------------------------- log lines


def _raw_controls(text: str) -> list[str]:
    return [c for c in text if unicodedata.category(c) == "Cc" or c in "\u2028\u2029"]


def _server_messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rframe.server"]


def _logged(caplog, *needles: str) -> bool:
    return all(any(n in m for m in _server_messages(caplog)) for n in needles)


def test_log_lines_quote_what_peers_send_on_one_line(caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="rframe.server")
    nasty = "a\nb\rc\x1b[31md\u2028e\u0085f\x7f"
    (tmp_path / "root").mkdir()
    local = tmp_path / "local.txt"
    local.write_bytes(b"x")
    with running(rframe.Server(port=0, root=str(tmp_path / "root"))) as s:
        with client_for(s) as c:
            c.run(f"true {nasty}")
            c.upload(str(local), "new\nline.txt")
        # A header whose total_size is a string holding a newline (escaped,
        # as JSON must) and a line separator (raw, as JSON may).
        with socket.create_connection(s.address, timeout=HANG_BOUND) as sock:
            head = '{"total_size": "1\\n2\u2028fake line"}'.encode()
            sock.sendall(len(head).to_bytes(4, "little") + head)
            assert rframe.read_frame(sock).header["error"] == "bad-request"

    def bad_handler(frame):
        raise ValueError(frame.body.decode())

    with running(rframe.Server(port=0, handler=bad_handler)) as s, client_for(s) as c:
        with pytest.raises(rframe.RemoteError):
            c.request(nasty.encode())
    expected = ["line.txt", "fake line", "ValueError: a\\nb\\rc\\x1b[31md\\u2028e\\u0085f\\x7f"]
    assert wait_until(lambda: _logged(caplog, *expected)), _server_messages(caplog)
    for message in _server_messages(caplog):
        assert _raw_controls(message) == [] and len(message.splitlines()) == 1, repr(message)
    assert _logged(caplog, "\\u2028fake line", "new\\nline.txt")


# --------------------------------------------------------------------------- the output budget

MiB = 1 << 20


def test_commands_share_one_output_budget(tmp_path, start_thread, caplog):
    caplog.set_level(logging.WARNING, logger="rframe.server")
    first, second = tmp_path / "first-printed", tmp_path / "second-printed"
    wait_for = "while [ ! -e {} ]; do sleep 0.01; done"
    # Each holds its output while the other prints: 2 MiB against 1 MiB.
    commands = [
        f"head -c {MiB} /dev/zero; touch {first}; {wait_for.format(second)}",
        f"{wait_for.format(first)}; head -c {MiB} /dev/zero; touch {second}",
    ]
    server = rframe.Server(port=0, max_output=MiB, output_budget=MiB)
    with running(server) as s:

        def run(cmd):
            with client_for(s) as c:
                return c.run(cmd, timeout=HANG_BOUND)

        results = [w.result() for w in [start_thread(run, cmd) for cmd in commands]]
        assert all(r.returncode == 0 for r in results), results
        assert sum(len(r.stdout) + len(r.stderr) for r in results) <= MiB
        assert any(r.stdout_truncated for r in results)
        assert wait_until(lambda: any("output budget" in m for m in _server_messages(caplog)))

        # Sent, their output gives its budget back.
        def whole():
            r = run(f"head -c {MiB} /dev/zero")
            return len(r.stdout) == MiB and not r.stdout_truncated

        assert wait_until(whole)


def test_the_output_budget_has_a_flag():
    with cli_server("--output-budget", "1K", "--max-output", "1M") as server, server.client() as c:
        r = c.run("head -c 5000 /dev/zero")
        assert (len(r.stdout), r.stdout_truncated) == (1024, True)
