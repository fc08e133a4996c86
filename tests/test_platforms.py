"""What differs between systems, tested on every system: a handler server and both
clients over TCP (what Windows serves), the encoding a server reports for
``text=True``, and the clear errors where a feature is missing (Unix sockets, the
command server on Windows)."""

from __future__ import annotations

import asyncio
import os
import socket
import types

import pytest

import platforms
import rframe
from conftest import HANG_BOUND

#: "中文输出" and an error line, as a Windows server's cmd.exe writes them (code page 936).
GBK_OUT = "中文输出\r\n".encode("gbk")
GBK_ERR = "错误\r\n".encode("gbk")


def fake_command_server(encoding: str) -> rframe.Server:
    """A handler server that answers every ``run`` as a command server on a
    system with ``encoding`` would: the output's bytes and the encoding named."""

    def handler(frame: rframe.Frame):
        assert frame.header["op"] == "run", frame.header
        header = {
            "op": "result",
            "returncode": 0,
            "stdout_size": len(GBK_OUT),
            "encoding": encoding,
            "duration": 0.01,
        }
        return header, GBK_OUT + GBK_ERR

    return rframe.Server(port=0, handler=handler)


@pytest.fixture
def gbk_server():
    server = fake_command_server("gbk")
    server.start()
    yield server
    server.stop()


def test_text_uses_the_encoding_the_server_reports(gbk_server):
    with rframe.Client(*gbk_server.address, timeout=HANG_BOUND) as c:
        raw = c.run("dir")
        assert (raw.stdout, raw.stderr, raw.encoding) == (GBK_OUT, GBK_ERR, "gbk")
        text = c.run("dir", text=True)
        assert (text.stdout, text.stderr) == ("中文输出\r\n", "错误\r\n")
        # Decoded as UTF-8 instead, the same bytes would be mojibake.
        assert GBK_OUT.decode("utf-8", "replace") != text.stdout


def test_the_async_client_decodes_the_same(gbk_server):
    async def main():
        async with rframe.AsyncClient(*gbk_server.address, timeout=HANG_BOUND) as c:
            return await c.run("dir", text=True)

    result = asyncio.run(main())
    assert (result.stdout, result.stderr, result.encoding) == ("中文输出\r\n", "错误\r\n", "gbk")


def test_an_encoding_this_python_does_not_know_falls_back_to_utf8():
    server = fake_command_server("no-such-codec")
    server.start()
    try:
        with rframe.Client(*server.address, timeout=HANG_BOUND) as c:
            result = c.run("dir", text=True)
    finally:
        server.stop()
    assert result.stdout == GBK_OUT.decode("utf-8", "replace")


@platforms.commands
def test_the_cli_passes_the_servers_bytes_through():
    # The CLI's -c streams a live command: the bytes the command writes reach
    # the terminal as they are, whatever their encoding.
    import subprocess
    import sys

    code = f"import sys; sys.stdout.buffer.write({GBK_OUT!r}); sys.stderr.buffer.write({GBK_ERR!r})"
    with rframe.Server(port=0) as server:
        host, port = server.address
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "rframe.client",
                "--host",
                host,
                "--port",
                str(port),
                "-c",
                f'{sys.executable} -c "{code}"',
            ],
            capture_output=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if k != "RFRAME_TOKEN"},
        )
    assert (r.returncode, r.stdout, r.stderr) == (0, GBK_OUT, GBK_ERR), r


def test_unix_sockets_missing_is_a_clear_error(monkeypatch, tmp_path):
    # The socket module as the clients see it on Windows: no AF_UNIX (asyncio's
    # own socketpair keeps the real one).
    without_unix = types.SimpleNamespace(socket=socket.socket, SOCK_STREAM=socket.SOCK_STREAM)
    monkeypatch.setattr(rframe._protocol, "socket", without_unix)
    with pytest.raises(NotImplementedError, match="Unix sockets"):
        rframe.Client(unix_path=tmp_path / "s.sock", timeout=HANG_BOUND)

    async def connect():
        await rframe.AsyncClient.connect(unix_path=tmp_path / "s.sock", timeout=HANG_BOUND)

    with pytest.raises(NotImplementedError, match="Unix sockets"):
        asyncio.run(connect())


@pytest.mark.skipif(os.name == "posix", reason="the command server runs here; Windows refuses it")
def test_the_command_server_refuses_to_start_saying_why():
    with pytest.raises(NotImplementedError, match="handler"):
        rframe.Server(port=0)
    with pytest.raises(NotImplementedError, match="Unix sockets"):
        rframe.Server(unix_path="s.sock", handler=lambda frame: b"")
