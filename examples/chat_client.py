#!/usr/bin/env python3
"""Chat client (the course's chat lesson), on ``rframe.Client``.

Sends each message as one frame and prints the server's answer. Messages come
from the command line, or, without any, one per line from stdin (the course's
prompt loop: an empty line is refused, ``q`` quits).

    python examples/chat_client.py --port PORT hello "how are you"
    python examples/chat_client.py --port PORT            # type messages
"""

from __future__ import annotations

import argparse
import sys

import rframe


def chat(client: rframe.Client, name: str, message: str) -> None:
    reply = client.request(message.encode("utf-8"), name=name)
    print(f"server: {reply.body.decode('utf-8', 'replace')}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Chat client: send messages, print the server's answers.")
    ap.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8848, help="server port (default 8848)")
    ap.add_argument("--name", default="client", help="name shown by the server (default 'client')")
    ap.add_argument("messages", nargs="*", help="messages to send; none: read them from stdin")
    args = ap.parse_args(argv)

    try:
        client = rframe.Client(args.host, args.port, timeout=10)
    except OSError as e:
        print(f"cannot connect to {args.host}:{args.port}: {e} (is the server running?)", file=sys.stderr)
        return 1
    with client:
        try:
            if args.messages:
                for message in args.messages:
                    chat(client, args.name, message)
                return 0
            while True:
                try:
                    line = input(">>> " if sys.stdin.isatty() else "")
                except EOFError:
                    return 0
                message = line.strip()
                if not message:
                    print("empty message refused", flush=True)
                elif message.upper() == "Q":
                    print("bye", flush=True)
                    return 0
                else:
                    chat(client, args.name, message)
        except (OSError, rframe.RemoteError) as e:
            print(f"connection lost: {e}", file=sys.stderr)
            return 1


if __name__ == "__main__":
    sys.exit(main())
