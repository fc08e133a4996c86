#!/usr/bin/env python3
"""Remote command client with a custom JSON header (自定制包头), done right.

Replaces the client of course section 15, which did ``recv(4)``,
``struct.unpack('i', ...)``, ``recv(header_len)``, ``json.loads`` and then
looped ``total_ppt += phone.recv(1024)`` until ``total_size`` (quadratic; and
a short ``recv(4)`` or ``recv(header_len)`` broke it). Here one
``rframe.read_frame(sock)`` returns ``(header, body)``, and the client checks
the body against the header's ``md5``.

Run (start examples/custom_header_server.py first):

    python examples/custom_header_client.py -c "echo hi"      # one command, then exit
    python examples/custom_header_client.py --port 8848       # prompt loop

Each reply is printed after a line like
``[result-1.txt, 3 bytes, md5 764efa883dda1e11db47671c4a3bbd9e ok]``.
In the prompt loop an empty line is refused and ``q`` (or end of input) quits.
Exit status: 0 ok, 1 connection problem, 3 md5 mismatch.
"""

from __future__ import annotations

import argparse
import hashlib
import socket
import sys

import rframe


def run_one(sock: socket.socket, cmd: str) -> int:
    """Send one command, check and print the reply; 0 ok, 1 lost, 3 bad md5."""
    try:
        rframe.send_frame(sock, cmd.encode("utf-8"), {})
        header, body = rframe.read_frame(sock)
    except EOFError:  # clean close or rframe.IncompleteFrame
        print("the server closed the connection", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"connection lost: {e}", file=sys.stderr)
        return 1
    actual = hashlib.md5(body).hexdigest()
    ok = header.get("md5") == actual and header.get("total_size") == len(body)
    status = "ok" if ok else f"MISMATCH (header says {header.get('md5')!r}, {header.get('total_size')!r} bytes)"
    print(f"[{header.get('file_name')}, {len(body)} bytes, md5 {actual} {status}]")
    out = body.decode("utf-8", "replace")
    sys.stdout.write(out if out.endswith("\n") or not out else out + "\n")
    sys.stdout.flush()
    return 0 if ok else 3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Remote command client with a custom JSON header (rframe).")
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
    sock.settimeout(None)

    with sock:
        if args.command is not None:
            return run_one(sock, args.command)
        rc = 0
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
            r = run_one(sock, cmd)
            if r == 1:
                return 1
            rc = rc or r
    return rc


if __name__ == "__main__":
    sys.exit(main())
