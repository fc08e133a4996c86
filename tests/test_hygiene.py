"""Token and daemon hygiene: what a command inherits, its session, the socket
file's mode, log lines, and the memory that command output may take."""

from __future__ import annotations

import os

import rframe
from server_helpers import ENV, cli_server, client_for, running

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
