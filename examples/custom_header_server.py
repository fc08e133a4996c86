#!/usr/bin/env python3
"""Remote command server with a custom JSON header (自定制包头), done right.

Replaces the server of course section 15 ("高大上版 解决粘包方式"), which built
``head_dic = {'file_name': 'text1', 'md5': 54645898788, 'total_size': ...}``,
``json.dumps`` + ``struct.pack('i', ...)`` it by hand and sent length, header
and result with three ``send`` calls. Here:

* the command arrives as one JSON-header frame (``rframe.read_frame``);
* the reply is sent with ``rframe.send_frame(sock, result, {"file_name": ...,
  "md5": ...})``: ``md5`` is the real hex digest of the result, and rframe
  adds ``total_size`` itself; the bytes on the wire are exactly the course's
  ``struct.pack('<i', len(hb)) + hb + body`` with ``hb = json.dumps(header)``;
* ``socketserver.ThreadingTCPServer`` serves many clients, and one leaving
  (cleanly, mid-frame or by a reset) only ends its own connection;
* the command runs with ``subprocess.run(shell=True, capture_output=True,
  timeout=...)``; the result is stdout + stderr.

Run:

    python examples/custom_header_server.py                  # 127.0.0.1:8848
    python examples/custom_header_server.py --port 0         # any free port
    python examples/custom_header_client.py --port PORT -c "echo hi"

The first line printed is ``listening on HOST:PORT``. Stop it with Ctrl-C or
SIGTERM. WARNING: it runs any shell command it is sent; keep it on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import signal
import socketserver
import subprocess
import sys
import threading

import rframe

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
    except OSError as e:
        return f"[cannot run command: {e}]\n".encode()


class CommandHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock = self.request
        peer = "{}:{}".format(*self.client_address[:2])
        log(f"client {peer} connected")
        how = "left"
        n = 0
        while True:
            try:
                header, body = rframe.read_frame(sock)
            except EOFError:  # clean close, or rframe.IncompleteFrame (mid-frame)
                break
            except rframe.FrameError as e:  # bad header, too large, ...
                how = f"dropped (bad frame: {e})"
                break
            except OSError as e:
                how = f"left ({e.__class__.__name__})"
                break
            cmd = body.decode("utf-8", "replace")
            if cmd.strip().upper() == "Q":
                break
            n += 1
            log(f"{peer} $ {cmd}")
            result = run_command(cmd, self.server.command_timeout)
            reply_header = {"file_name": f"result-{n}.txt", "md5": hashlib.md5(result).hexdigest()}
            try:
                rframe.send_frame(sock, result, reply_header)
            except OSError as e:
                how = f"left before the reply ({e.__class__.__name__})"
                break
        log(f"client {peer} {how}")


class CommandServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address, command_timeout: float):
        self.command_timeout = command_timeout
        super().__init__(address, CommandHandler)


def _stop(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Remote command server with a custom JSON header (rframe).")
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
