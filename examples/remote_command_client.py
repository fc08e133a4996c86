#!/usr/bin/env python3
"""Remote command client (远程执行命令), length-only framing, done right.

Replaces the client of course section 9, which sent the command with a bare
``send``, read the length with ``recv(4)`` and then looped
``total += recv(1024)`` (quadratic, and stuck forever if the server vanished).
Here the command goes out as one ``rframe.Codec(json_header=False)`` frame and
the whole reply comes back with one ``codec.read(sock)``.

Run (start examples/remote_command_server.py first):

    python examples/remote_command_client.py -c "echo hi"     # one command, then exit
    python examples/remote_command_client.py --port 8848      # prompt loop

In the prompt loop an empty line is refused and ``q`` (or end of input) quits.
"""

from __future__ import annotations

import argparse
import socket
import sys

import rframe

CODEC = rframe.Codec(json_header=False)


def run_one(sock: socket.socket, cmd: str) -> bool:
    """Send one command, print its output; False if the server went away."""
    try:
        CODEC.send(sock, cmd.encode("utf-8"))
        frame = CODEC.read(sock)
    except EOFError:  # clean close or rframe.IncompleteFrame
        print("the server closed the connection", file=sys.stderr)
        return False
    except OSError as e:
        print(f"connection lost: {e}", file=sys.stderr)
        return False
    out = frame.body.decode("utf-8", "replace")
    sys.stdout.write(out if out.endswith("\n") or not out else out + "\n")
    sys.stdout.flush()
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Remote command client (length-only rframe frames).")
    ap.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=8848, help="server port (default 8848)")
    ap.add_argument("-c", "--command", help="run this one command, print its output and exit")
    args = ap.parse_args(argv)

    if args.command is not None and not args.command.strip():
        print("empty command refused", file=sys.stderr)
        return 2
    try:
        sock = socket.create_connection((args.host, args.port), timeout=10)
    except OSError as e:
        print(f"cannot connect to {args.host}:{args.port}: {e} (is the server running?)", file=sys.stderr)
        return 1
    sock.settimeout(None)  # a command may take a while; the server enforces its own timeout

    with sock:
        if args.command is not None:
            return 0 if run_one(sock, args.command) else 1
        while True:
            try:
                line = input(">>> ")
            except EOFError:
                print()
                break
            cmd = line.strip()
            if not cmd:
                print("empty command refused")
                continue
            if cmd.upper() == "Q":
                print("bye")
                break
            if not run_one(sock, cmd):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
