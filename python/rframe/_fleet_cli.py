"""``python -m rframe.client --hosts ...``: one command, or one file transfer, on many servers.

Each line of each host's output is printed as it arrives, prefixed ``host |
`` (names aligned, coloured per host on a terminal unless ``NO_COLOR`` is
set); Ctrl-C sends SIGINT to every command, a second within a second
disconnects (which kills them). With ``--by-host`` each host's stdout is
printed whole under a ``=== host ===`` line when the host finishes (stderr
lines keep their prefix). Then one summary line on stderr, ``3 ok, 2 failed: web3 (timeout after
10s), web7 (exit 2)``. The exit status is 0 when every host succeeded (a
command's exit status 0 included), else 1; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO, TextIO

from ._errors import AuthenticationError, CommandTimeout, FingerprintMismatch, RemoteError
from ._group import Group, GroupResult, HostCancelled, OutputLine, parse_host
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

    def prefix(self, name: str) -> bytes:
        return self._label(name, f"{name:<{self.width}}") + b" | "

    def lines(self, lines: Iterable[OutputLine]) -> None:
        """Lines as they arrived, each with its host's prefix (stderr's to
        stderr), a write for each run of lines to the same stream."""
        streams = {1: sys.stdout.buffer, 2: sys.stderr.buffer}
        run, fd = bytearray(), 1
        for line in lines:
            if line.fd != fd and run:
                _flush(streams[fd], run)
            fd = line.fd
            run += self.prefix(line.host)
            run += line.data
            if not line.data.endswith(b"\n"):
                run += b"\n"
        if run:
            _flush(streams[fd], run)

    def output(self, name: str, stdout: bytes, stderr: bytes) -> None:
        out, err = sys.stdout.buffer, sys.stderr.buffer
        prefix = self.prefix(name)
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
        _prefixed(sys.stderr.buffer, self.prefix(name), f"rframe: {why}\n".encode())


class _Progress:
    """``progress(host, done, total)`` for a terminal: one line a host
    (:class:`rframe.client.ProgressBar`'s), redrawn in place at most ten
    times a second; one line for all of them when they would not fit."""

    def __init__(self, names: Iterable[str], stream: TextIO) -> None:
        from .client import ProgressBar

        self.names = list(names)
        self.width = max(map(len, self.names))
        self.bars: dict[str, ProgressBar] = {}  # made on a host's first call: its rate counts from its start
        self.all = ProgressBar(f"{len(self.names)} hosts", stream)
        self.state: dict[str, tuple[int, int]] = {}
        self.ended: dict[str, float] = {}
        self.stream = stream
        self.columns, rows = _terminal_size(stream)
        self.one_line = len(self.names) > rows - 2
        self.drawn_at = 0.0
        self.drawn = 0  # lines on the screen

    def __call__(self, host: str, done: int, total: int) -> None:
        from .client import ProgressBar

        if host not in self.bars:
            self.bars[host] = ProgressBar(f"{host:<{self.width}}", self.stream)
        self.state[host] = (done, total)
        if done >= total:
            self.ended.setdefault(host, time.monotonic())  # its rate stays that of its end
        if time.monotonic() - self.drawn_at >= 0.1:
            self.draw()

    def draw(self) -> None:
        now = self.drawn_at = time.monotonic()
        if self.one_line:
            done = sum(d for d, _ in self.state.values())
            total = sum(t for _, t in self.state.values())
            lines = [f"{self.all.text(done, total, now)}, {len(self.state)} started"]
        else:
            lines = [
                self.bars[host].text(*self.state[host], self.ended.get(host, now))
                for host in self.names
                if host in self.state
            ]
        # One screen row a line, or moving back up would miss the rows a wrapped line took.
        lines = [line[: self.columns - 1] for line in lines]
        up = f"\x1b[{self.drawn}F" if self.drawn else ""  # back to the first line drawn
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self.drawn = len(lines)


def _terminal_size(stream: TextIO) -> tuple[int, int]:
    """The columns and rows of the terminal ``stream`` writes to."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a terminal (a test's StringIO)
        size = shutil.get_terminal_size()
    return size.columns, size.lines


def _flush(stream: BinaryIO, run: bytearray) -> None:
    stream.write(run)
    stream.flush()
    run.clear()


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
    if isinstance(exc, HostCancelled):
        return "cancelled"
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
    if getattr(args, "resume", None):
        print("rframe: --resume is for one server, not with --hosts", file=sys.stderr)
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
        if args.command is not None and printer.by_host:
            return _run(group, printer, args.command, args.timeout, deadline)
        if args.command is not None:
            return _stream(group, printer, args.command, args.timeout, deadline)
        return _files(group, printer, args, deadline)


def _stream(group: Group, printer: _Printer, cmd: str, timeout: float | None, deadline: float | None) -> int:
    """``-c CMD``: every host's lines as they come; the failures as the hosts end."""
    with group.start(cmd, timeout=timeout) as procs:
        last_interrupt = [0.0]

        def interrupt(signum: int, frame: Any) -> None:
            now = time.monotonic()
            if now - last_interrupt[0] < 1.0:
                raise KeyboardInterrupt  # leaving the with block kills every command
            last_interrupt[0] = now
            procs.send_signal("INT")

        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, interrupt)
        failed: dict[str, BaseException] = {}
        try:
            for lines, ended in procs._batches():
                printer.lines(lines)
                for host, result in ended:
                    if isinstance(result, BaseException):
                        failed[host] = result
                        printer.failure(host, _why(result, deadline))
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        result = procs.wait()
    return _report(printer, result.items(), deadline, printed=True, told=failed)


def _run(group: Group, printer: _Printer, cmd: str, timeout: float | None, deadline: float | None) -> int:
    """``--by-host -c CMD``: each host's whole output when it finishes."""
    return _report(printer, group.run_iter(cmd, timeout=timeout), deadline, printed=False)


def _report(
    printer: _Printer,
    results: Iterable[tuple[str, Any]],
    deadline: float | None,
    printed: bool,
    told: Mapping[str, BaseException] | None = None,
) -> int:
    """Prints each host's output (unless ``printed``) and failure (unless
    ``told`` already), then the summary; the exit status.

    A result is a return code (a live command's, its output already
    printed), a :class:`CommandResult`, or the exception the host raised."""
    failures: dict[str, str] = {}
    ok = 0
    for host, result in results:
        if isinstance(result, CommandTimeout) and not printed:
            printer.output(host, result.stdout or b"", result.stderr or b"")  # what it wrote before its limit
        if isinstance(result, BaseException):
            failures[host] = _why(result, deadline)
            if told is None or told.get(host) is not result:
                printer.failure(host, failures[host])
            continue
        if not printed:
            printer.output(host, result.stdout, result.stderr)
        code = result if isinstance(result, int) else result.returncode
        if code:
            failures[host] = f"exit {code}" if code > 0 else f"killed by signal {-code}"
        else:
            ok += 1
    _summary(ok, failures)
    return EXIT_OK if not failures else EXIT_FAILURE


def _files(group: Group, printer: _Printer, args: argparse.Namespace, deadline: float | None) -> int:
    result: GroupResult
    progress = _Progress(group.hosts, sys.stderr) if sys.stderr.isatty() else None
    try:
        if args.action == "put":
            result = group.upload(
                args.file, args.name, overwrite=args.overwrite, checksum=args.checksum, progress=progress
            )
        elif args.action == "get":
            result = group.download(
                args.name, args.file, overwrite=args.overwrite, checksum=args.checksum, progress=progress
            )
        else:
            result = group.list_files(args.name)
    except ValueError as e:  # a local path without {host}, say
        print(f"rframe: {args.action}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if progress is not None:
        progress.draw()  # each host's last state
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
    from .client import _listing_line, _transfer_line

    if args.action in ("put", "get"):
        return _transfer_line(args.action, r) + "\n"
    return "".join(_listing_line(e) + "\n" for e in r)
