#!/usr/bin/env python3
"""Remote commands (the course's 远程执行命令 lesson) with ``rframe.Server`` and ``rframe.Client``.

Starts a command server on a free loopback port in this process, connects a
client, runs a few commands and prints what came back: stdout and stderr kept
apart, the exit status, a time limit that kills the whole process group, stdin
input, environment variables, and ``check=True``.

    python examples/remote_shell.py
    python examples/remote_shell.py --token s3cret     # with authentication
"""

from __future__ import annotations

import argparse
import logging
import sys

import rframe


def show(title: str, result: rframe.CommandResult) -> None:
    print(f"$ {title}")
    print(f"  returncode={result.returncode} stdout={result.stdout!r} stderr={result.stderr!r}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run a command server and a client in one process.")
    ap.add_argument("--token", help="require this token (the client proves it knows it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with rframe.Server(port=0, token=args.token, timeout=10) as server:
        host, port = server.address
        print(f"server listening on {host}:{port}")
        with rframe.Client(host, port, token=args.token, timeout=10) as client:
            show("echo hello; echo oops >&2; exit 3", client.run("echo hello; echo oops >&2; exit 3", text=True))
            show(
                "['printf', '%s|', 'no shell', '$HOME']", client.run(["printf", "%s|", "no shell", "$HOME"], text=True)
            )
            show(
                "tr a-z A-Z  (input='fed through stdin')",
                client.run("tr a-z A-Z", input="fed through stdin", text=True),
            )
            show(
                'echo "$GREETING"  (env)',
                client.run('echo "$GREETING"', env={"GREETING": "hi; not a command"}, text=True),
            )
            try:
                client.run("echo started; sleep 300 & wait", timeout=0.5)
            except rframe.CommandTimeout as e:
                print("$ echo started; sleep 300 & wait  (timeout=0.5)")
                print(f"  timed out: {e}; output so far {e.stdout!r}; the process group was killed")
            try:
                client.run("ls /no/such/dir", check=True)
            except rframe.CommandError as e:
                print("$ ls /no/such/dir  (check=True)")
                print(f"  CommandError: exit status {e.returncode}, stderr {e.stderr.decode().strip()!r}")
            show("echo the connection is still fine", client.run("echo the connection is still fine", text=True))
    print("server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
