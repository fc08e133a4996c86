#!/usr/bin/env python3
"""Chat server (the course's chat lesson), on ``rframe.Server`` with a handler.

The course's chat server (sections 5-8 of the notes) accepted one client,
read a message with ``conn.recv(1024)``, printed it and answered with
``input()``. Here ``rframe.Server(handler=...)`` does the sockets: many
clients at once, one frame per message, a client that leaves costs nothing.
The handler prints each message and answers it upper-cased (the course's
``from_client_data.upper()``), or with ``--reply TEXT``.

Run:

    python examples/chat_server.py --port 0            # any free port
    python examples/chat_client.py --port PORT hello "how are you"

The first line printed is ``listening on HOST:PORT``. Ctrl-C or SIGTERM stops
it (exit status 0).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import rframe

_print_lock = threading.Lock()


def say(msg: str) -> None:
    with _print_lock:
        print(msg, flush=True)


def make_handler(reply: str | None):
    """handler(frame) -> (header, body): the server calls it once per message."""

    def handler(frame: rframe.Frame):
        name = frame.header.get("name", "someone")
        message = frame.body.decode("utf-8", "replace")
        say(f"{name}: {message}")
        answer = reply if reply is not None else message.upper()
        return {"from": "server"}, answer.encode("utf-8")

    return handler


class Stop(Exception):
    """Raised by the SIGTERM handler; serve_forever stops and re-raises it."""


def _on_sigterm(signum, frame):
    raise Stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Chat server: prints each message, answers it upper-cased.")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8848, help="port (default 8848; 0 = pick a free one)")
    ap.add_argument("--reply", metavar="TEXT", help="answer every message with TEXT instead of upper-casing it")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds a client may stay silent (default 300)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        server = rframe.Server(args.host, args.port, handler=make_handler(args.reply), idle_timeout=args.timeout)
    except (OSError, ValueError) as e:
        print(f"cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    host, port = server.address
    signal.signal(signal.SIGTERM, _on_sigterm)
    say(f"listening on {host}:{port}")
    try:
        server.serve_forever()
    except (KeyboardInterrupt, Stop):
        say("shutting down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
