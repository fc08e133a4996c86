"""``python -m rframe.client --hosts ...``: one command, or one file transfer, on many servers.

Each host's output is printed when the host finishes, every line prefixed
``host | `` (names aligned, coloured per host on a terminal unless
``NO_COLOR`` is set), or with ``--by-host`` its stdout whole under a
``=== host ===`` line (stderr lines keep their prefix);
then one summary line on stderr, ``3 ok, 2 failed: web3 (timeout after
10s), web7 (exit 2)``. The exit status is 0 when every host succeeded (a
command's exit status 0 included), else 1; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from typing import Any, BinaryIO

from ._errors import AuthenticationError, CommandTimeout, FingerprintMismatch, RemoteError
from ._group import Group, GroupResult, parse_host
from ._known_servers import KnownServers, default_path
from ._protocol import REPLY_GRACE, where

__all__ = ["hosts_of", "main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

#: ANSI colours the host prefixes take in turn (red is left for failures).
_COLOURS = ("32", "33", "34", "35", "36", "92", "93", "94", "95", "96")


def hosts_of(listed: str | None, hosts_file: str | None) -> list[str]:
    """The hosts of ``--hosts a,b:8849`` and of ``--hosts-file FILE`` (one per
    line; blank lines and ``#`` comments skipped), in that order. Raises
    ``ValueError`` for a bad host and ``OSError`` for an unreadable file.

    >>> hosts_of("web1, web2:8849,,[::1]:9000", None)
    ['web1', 'web2:8849', '[::1]:9000']
    """
    hosts = [h.strip() for h in (listed or "").split(",") if h.strip()]
    if hosts_file is not None:
        with open(hosts_file, encoding="utf-8") as f:
            for line in f:
                text = line.split("#", 1)[0].strip()
                if text:
                    hosts.append(text)
    for host in hosts:
        parse_host(host)  # raises for a bad one
    return hosts


class _Printer:
    """Writes each host's output with its prefix (or under its heading)."""

    def __init__(self, names: Iterable[str], by_host: bool) -> None:
        names = list(names)
        self.width = max(map(len, names))
        self.by_host = by_host
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.colour = {n: _COLOURS[i % len(_COLOURS)] for i, n in enumerate(names)} if colour else {}

    def _label(self, name: str, text: str) -> bytes:
        code = self.colour.get(name)
        return (f"\x1b[{code}m{text}\x1b[0m" if code else text).encode()

    def output(self, name: str, stdout: bytes, stderr: bytes) -> None:
        out, err = sys.stdout.buffer, sys.stderr.buffer
        prefix = self._label(name, f"{name:<{self.width}}") + b" | "
        if self.by_host:
            out.write(self._label(name, f"=== {name} ===") + b"\n")
            out.write(stdout)
            if stdout and not stdout.endswith(b"\n"):
                out.write(b"\n")
            out.flush()
        else:
            _prefixed(out, prefix, stdout)
        _prefixed(err, prefix, stderr)  # stderr is told apart by its name either way

    def failure(self, name: str, why: str) -> None:
        prefix = self._label(name, f"{name:<{self.width}}") + b" | "
        _prefixed(sys.stderr.buffer, prefix, f"rframe: {why}\n".encode())


def _prefixed(stream: BinaryIO, prefix: bytes, data: bytes) -> None:
    if not data:
        return
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    stream.write(b"".join(prefix + line + b"\n" for line in lines))
    stream.flush()


def _why(exc: BaseException, timeout: float | None) -> str:
    """A failure in a few words, for the per-host line and the summary."""
    if isinstance(exc, CommandTimeout):
        return f"timeout after {exc.timeout:g}s"
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout:g}s" if timeout is not None else "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, FingerprintMismatch):
        return "REFUSED: its certificate is not the one recorded"
    if isinstance(exc, AuthenticationError):
        return "authentication failed"
    if isinstance(exc, RemoteError):
        return f"refused: {exc}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _summary(ok: int, failures: dict[str, str]) -> None:
    text = f"{ok} ok, {len(failures)} failed"
    if failures:
        text += ": " + ", ".join(f"{host} ({why})" for host, why in failures.items())
    sys.stdout.flush()
    print(text, file=sys.stderr, flush=True)


def main(args: argparse.Namespace, token: bytes | None) -> int:
    """``-c CMD``, ``put``, ``get`` or ``ls`` on every host of ``args``; the exit status."""
    try:
        hosts = hosts_of(args.hosts, args.hosts_file)
    except (OSError, ValueError) as e:
        print(f"rframe: bad --hosts: {e}", file=sys.stderr)
        return EXIT_USAGE
    if not hosts:
        print("rframe: --hosts and --hosts-file name no host", file=sys.stderr)
        return EXIT_USAGE
    if args.unix is not None or args.fingerprint is not None:
        print("rframe: --unix and --fingerprint name one server: not with --hosts", file=sys.stderr)
        return EXIT_USAGE
    if args.command is None and args.action is None:
        print("rframe: --hosts needs -c CMD, or put, get or ls", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "recursive", False):
        print("rframe: -r (a tree) is for one server, not with --hosts", file=sys.stderr)
        return EXIT_USAGE
    # The certificates recorded for them (python -m rframe.client records one
    # on a first connection to a single host).
    known = KnownServers(args.known_servers or default_path())
    fingerprints = {}
    for host in hosts:
        _, name, port = parse_host(host, args.port)
        recorded = known.lookup(where((name, port)))
        if recorded is not None:
            fingerprints[host] = recorded[0]
    # A command's own limit is --timeout, and a host has that and the grace
    # for its answer (connecting, the login and the reply on top); a file
    # transfer takes as long as it takes, each of its steps within --timeout
    # (as for one server).
    deadline = None
    if args.timeout is not None and args.command is not None:
        deadline = args.timeout + REPLY_GRACE
    step = args.timeout if args.command is None else None
    try:
        group = Group(
            hosts,
            port=args.port,
            token=token,
            tls=args.tls,
            fingerprints=fingerprints,
            timeout=deadline,
            max_concurrency=args.jobs,
            call_timeout=step,
        )
    except ValueError as e:
        print(f"rframe: {e}", file=sys.stderr)
        return EXIT_USAGE
    with group:
        printer = _Printer(group.hosts, getattr(args, "by_host", False))
        if args.command is not None:
            return _run(group, printer, args.command, args.timeout, deadline)
        return _files(group, printer, args, deadline)


def _run(group: Group, printer: _Printer, cmd: str, timeout: float | None, deadline: float | None) -> int:
    failures: dict[str, str] = {}
    ok = 0
    for host, result in group.run_iter(cmd, timeout=timeout):
        if isinstance(result, CommandTimeout):
            printer.output(host, result.stdout or b"", result.stderr or b"")  # what it wrote before its limit
        if isinstance(result, BaseException):
            failures[host] = _why(result, deadline)
            printer.failure(host, failures[host])
            continue
        printer.output(host, result.stdout, result.stderr)
        if result.returncode:
            code = result.returncode
            failures[host] = f"exit {code}" if code > 0 else f"killed by signal {-code}"
        else:
            ok += 1
    _summary(ok, failures)
    return EXIT_OK if not failures else EXIT_FAILURE


def _files(group: Group, printer: _Printer, args: argparse.Namespace, deadline: float | None) -> int:
    result: GroupResult
    try:
        if args.action == "put":
            result = group.upload(args.file, args.name, overwrite=args.overwrite, checksum=args.checksum)
        elif args.action == "get":
            result = group.download(args.name, args.file, overwrite=args.overwrite, checksum=args.checksum)
        else:
            result = group.list_files(args.name)
    except ValueError as e:  # a local path without {host}, say
        print(f"rframe: {args.action}: {e}", file=sys.stderr)
        return EXIT_USAGE
    failures: dict[str, str] = {}
    for host, r in result.items():
        if isinstance(r, BaseException):
            failures[host] = _why(r, deadline)
            printer.failure(host, failures[host])
        else:
            printer.output(host, _describe(args, r).encode(), b"")
    _summary(len(result) - len(failures), failures)
    return EXIT_OK if not failures else EXIT_FAILURE


def _describe(args: argparse.Namespace, r: Any) -> str:
    if args.action == "put":
        return f"stored {r['name']}: {r['size']} bytes, {args.checksum} {r[args.checksum]}\n"
    if args.action == "get":
        return f"saved {r['name']}: {r['size']} bytes, {args.checksum} {r[args.checksum]}\n"
    from .client import _listing_line

    return "".join(_listing_line(e) + "\n" for e in r)
