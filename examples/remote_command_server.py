#!/usr/bin/env python3
"""Remote command server (远程执行命令), length-only framing, done right.

Replaces the server of course section 9 ("tcp 实例:远程执行命令"), which
read the command with a bare ``conn.recv(1024)``, served one client at a time
and wrote ``struct.pack('i', total_size)`` + result with two ``send`` calls.
Here:

* every message, both ways, is one frame of ``rframe.Codec(json_header=False)``,
  i.e. ``struct.pack('<i', len(body)) + body``, the course's wire format;
* ``socketserver.ThreadingTCPServer`` serves many clients at once, and a
  client that leaves (cleanly, mid-frame or by a reset) only ends its own
  connection;
* the command runs with ``subprocess.run(shell=True, capture_output=True,
  timeout=...)`` and the reply is stdout + stderr, as the course does.

Run:

    python examples/remote_command_server.py                 # 127.0.0.1:8848
    python examples/remote_command_server.py --port 0        # any free port
    python examples/remote_command_client.py --port PORT -c "echo hi"

The first line printed is ``listening on HOST:PORT``. Stop it with Ctrl-C or
SIGTERM. WARNING: it runs any shell command it is sent; keep it on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import signal
import socketserver
import subprocess
import sys
import threading

import rframe

CODEC = rframe.Codec(json_header=False)
_print_lock = threading.Lock()


def log(msg: str) -> None:
    with _print_lock:
        print(msg, flush=True)


def run_command(cmd: str, timeout: float) -> bytes:
    """stdout + stderr of ``cmd`` run by the shell (the course's result)."""
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
        return p.stdout + p.stderr
    except subprocess.TimeoutExpired as e:
        partial = (e.stdout or b"") + (e.stderr or b"")
        return partial + f"[command timed out after {timeout:g} s]\n".encode()
    except OSError as e:  # e.g. the shell could not be started
        return f"[cannot run command: {e}]\n".encode()


class CommandHandler(socketserver.BaseRequestHandler):
    """One connected client: read a command frame, reply with one frame."""

    def handle(self) -> None:
        sock = self.request
        peer = "{}:{}".format(*self.client_address[:2])
        log(f"client {peer} connected")
        how = "left"
        while True:
            try:
                frame = CODEC.read(sock)
            except EOFError:  # clean close, or rframe.IncompleteFrame (mid-frame)
                break
            except rframe.FrameError as e:  # garbage: the stream has lost its place
                how = f"dropped (bad frame: {e})"
                break
            except OSError as e:  # connection reset and friends
                how = f"left ({e.__class__.__name__})"
                break
            cmd = frame.body.decode("utf-8", "replace")
            if cmd.strip().upper() == "Q":  # the course's quit message
                break
            log(f"{peer} $ {cmd}")
            result = run_command(cmd, self.server.command_timeout)
            try:
                CODEC.send(sock, result)
            except OSError as e:
                how = f"left before the reply ({e.__class__.__name__})"
                break
        log(f"client {peer} {how}")


class CommandServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True  # a client stuck in a long command does not block shutdown

    def __init__(self, address, command_timeout: float):
        self.command_timeout = command_timeout
        super().__init__(address, CommandHandler)


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Remote command server (length-only rframe frames).")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8848, help="port (default 8848; 0 = pick a free one)")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds a command may run (default 30)")
    args = ap.parse_args(argv)

    try:
        server = CommandServer((args.host, args.port), args.timeout)
    except OSError as e:
        print(f"cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    host, port = server.server_address[:2]
    log(f"listening on {host}:{port}")
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log("shutting down")
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
