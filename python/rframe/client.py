"""Run commands on an rframe server: ``python -m rframe.client``.

The course's remote-command client, done right: each line you type runs on the
server; its stdout goes to your stdout and its stderr to your stderr, byte for
byte, as the command writes them. Ctrl-C sends SIGINT to the command (a second
within a second disconnects, which kills it). ``q`` (or end of input) quits; an
empty line is refused.

    python -m rframe.client                      # prompt loop, 127.0.0.1:8848
    python -m rframe.client -c "uname -a"        # one command; exit with its status
    python -m rframe.client --unix /tmp/rframe.sock -c "ls"

Any host that is not loopback is reached over TLS. The first connection to a
server records its certificate's fingerprint in the known-servers file
(``~/.config/rframe/known_servers``), as ssh records host keys; later ones
refuse a different certificate. ``--fingerprint`` pins one instead:

    python -m rframe.client --host 192.168.14.97 --token-file ~/.rframe-token -c "uname -a"

``-t`` asks for a terminal, as ``ssh -t`` does: with ``-c`` the command runs
on one (``top``, ``vim``, ``sudo`` prompts work), alone it opens an interactive
shell on the server (the server's ``$SHELL``, else ``/bin/sh``). Your terminal
is in raw mode meanwhile (every key goes to the server, Ctrl-C included) and is
restored however the session ends; window resizes are forwarded. As with ssh,
there is a terminal only if stdin is one (a pipe's end is no key a terminal
could pass on: a line on stderr says the command runs without), unless ``-tt``.

    python -m rframe.client -t                   # a shell on the server
    python -m rframe.client -t -c "top"

With ``-c`` the exit status is the command's (128+N if signal N killed it, 124
if it timed out, 1 if the server could not be reached or refused).

Files, with a server started with ``--root DIR``:

    python -m rframe.client put report.pdf            # upload as report.pdf
    python -m rframe.client put report.pdf docs/r.pdf --overwrite
    python -m rframe.client get docs/r.pdf            # download to ./r.pdf
    python -m rframe.client ls docs
    python -m rframe.client put -r site/ www         # a whole tree, beneath www/
    python -m rframe.client get -r www site-copy     # and back
    python -m rframe.client ls -r www

With ``-r`` directories are made as needed and modes kept; a file already
there with the same size, digest and mode is skipped, any other replaced
(``--overwrite`` is implied); a symlink refuses the tree unless
``--symlinks copy``.

On a terminal a progress bar (rate, time left) runs on stderr; otherwise
only the one-line summary is printed. Exit status 0, or 1 on any failure.

``put`` and ``get`` of a single file resume (``--resume``, the default
when stderr is a terminal; ``--no-resume`` to turn it off): a transfer cut
by Ctrl-C or a lost connection keeps what arrived, and the same command
again sends only the rest, once the kept bytes are proven to be the
source's first ones. A source whose size or mtime changed since is
refused; ``--no-resume`` starts over.

Many servers at once (``-j`` at most at a time; each host's output prefixed
with its name, then a summary; exit status 0 only if every host succeeded):

    python -m rframe.client --hosts web1,web2,db:8849 -c "uptime"
    python -m rframe.client --hosts-file fleet.txt --by-host -c "df -h /"
    python -m rframe.client --hosts-file fleet.txt get logs/app.log "{host}/app.log"
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, TextIO

from ._cli import port, read_token, seconds
from ._client import Client
from ._errors import AuthenticationError, FingerprintMismatch, RemoteError, SourceChangedError
from ._files import CHECKSUMS, SYMLINKS
from ._known_servers import KnownServers, default_path
from ._process import RemoteProcess
from ._protocol import where
from ._rframe import DEFAULT_PORT, DEFAULT_TERMINAL_SIZE
from ._tls import normalize_fingerprint, pinning_context, uses_tls

__all__ = ["main"]

#: Exit statuses of ``-c`` besides the command's own (as timeout(1) and ssh do).
EXIT_FAILURE = 1
EXIT_TIMEOUT = 124

#: What ``-t`` without ``-c`` runs: the server user's shell, interactive (as ssh does).
INTERACTIVE_SHELL = 'exec "${SHELL:-/bin/sh}" -i'


def _connection_options(ap: argparse.ArgumentParser, defaults: bool) -> None:
    """The options that say where the server is; given before or after a subcommand."""

    def default(value: Any) -> Any:
        # In a subcommand an option not given must not overwrite the main one.
        return value if defaults else argparse.SUPPRESS

    ap.add_argument("--host", default=default("127.0.0.1"), help="server address (default 127.0.0.1)")
    ap.add_argument("--port", type=port, default=default(DEFAULT_PORT), help=f"server port (default {DEFAULT_PORT})")
    ap.add_argument("--unix", metavar="PATH", default=default(None), help="connect to this Unix socket instead of TCP")
    ap.add_argument(
        "--token-file",
        metavar="PATH",
        default=default(None),
        help="file holding the server's token (trailing whitespace stripped); default: the RFRAME_TOKEN "
        "environment variable, else no authentication",
    )
    ap.add_argument(
        "--timeout",
        type=seconds,
        metavar="SECONDS",
        default=default(None),
        help="limit for connecting and for each command or step of a transfer (the server's own limit applies "
        "too); default: no client-side limit",
    )
    ap.add_argument(
        "--tls",
        dest="tls",
        action="store_const",
        const=True,
        default=default(None),
        help="use TLS even on loopback or a Unix socket (default: TLS to any host that is not loopback)",
    )
    ap.add_argument(
        "--no-tls",
        dest="tls",
        action="store_const",
        const=False,
        default=default(None),
        help="plaintext even to another host (for a server started with --insecure)",
    )
    ap.add_argument(
        "--fingerprint",
        metavar="FP",
        type=_fingerprint,
        default=default(None),
        help="the server certificate's SHA-256 fingerprint (python -m rframe.server --fingerprint prints it); "
        "default: the one recorded in the known-servers file, or recorded there on first use",
    )
    ap.add_argument(
        "--hosts",
        metavar="H1,H2:PORT",
        default=default(None),
        help="run on each of these servers at once (host, host:port or [v6]:port, comma-separated): "
        "-c, put, get (FILE may hold {host}; default ./HOST/NAME) and ls",
    )
    ap.add_argument(
        "--hosts-file",
        metavar="FILE",
        default=default(None),
        help="the servers of --hosts, one per line ('#' comments)",
    )
    ap.add_argument(
        "-j",
        "--jobs",
        type=_jobs,
        metavar="N",
        default=default(64),
        help="with --hosts: at most N servers at once (default 64)",
    )
    ap.add_argument(
        "--known-servers",
        metavar="FILE",
        default=default(None),
        help="where fingerprints are recorded on first use (default $XDG_CONFIG_HOME/rframe/known_servers, "
        "else ~/.config/rframe/known_servers)",
    )


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"at least 1, got {value}")
    return value


def _fingerprint(text: str) -> str:
    try:
        return normalize_fingerprint(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _transfer_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "-r",
        "--recursive",
        action="store_true",
        help="a whole directory tree: directories made, modes kept, files with the same size and digest "
        "skipped, others replaced",
    )
    ap.add_argument(
        "--symlinks",
        choices=SYMLINKS,
        default="refuse",
        help="with -r: refuse a tree that holds a symlink (default), or copy links whose target stays inside",
    )
    ap.add_argument("--overwrite", action="store_true", help="replace a file of that name (default: refuse)")
    ap.add_argument(
        "--resume",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a single file: keep what arrived if the transfer is cut, and continue from what an earlier cut "
        "transfer kept, if its source is unchanged (default: on when stderr is a terminal)",
    )
    ap.add_argument(
        "--checksum",
        choices=CHECKSUMS,
        default=None,
        help="digest verified by the receiver (default: the fastest the server offers, blake3, else sha256)",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m rframe.client",
        description="Run commands on an rframe server (python -m rframe.server): one with -c, "
        "or one per line in a prompt loop ('q' quits); or move files with put, get and ls "
        "(a server started with --root).",
    )
    _connection_options(ap, defaults=True)
    ap.add_argument("-c", "--command", metavar="CMD", help="run this one command and exit with its status")
    ap.add_argument(
        "-t",
        "--tty",
        action="count",
        default=0,
        help="ask for a terminal: with -c the command runs on one; alone, an interactive shell on the server "
        "(your terminal goes to raw mode until it ends). As with ssh, none if stdin is not a terminal, "
        "unless given twice (-tt)",
    )
    ap.add_argument(
        "--by-host",
        action="store_true",
        help="with --hosts: each server's whole output under a heading, not line by line with its name",
    )
    sub = ap.add_subparsers(dest="action", metavar="{put,get,ls}", title="file transfer")
    put = sub.add_parser(
        "put", help="upload FILE (as NAME)", description="Upload a file (or with -r a tree) beneath the server's root."
    )
    put.add_argument("file", metavar="FILE", help="local file (with -r: directory) to send")
    put.add_argument("name", metavar="NAME", nargs="?", help="name on the server (default: FILE's own name)")
    _transfer_options(put)
    get = sub.add_parser(
        "get", help="download NAME (to FILE)", description="Download a file (or with -r a tree) from the server's root."
    )
    get.add_argument("name", metavar="NAME", help="file on the server, relative to its root")
    get.add_argument("file", metavar="FILE", nargs="?", help="where to save it (default: NAME's own name, here)")
    _transfer_options(get)
    ls = sub.add_parser("ls", help="list a directory", description="List a directory beneath the server's root.")
    ls.add_argument("name", metavar="DIR", nargs="?", default="", help="directory (default: the root)")
    ls.add_argument("-r", "--recursive", action="store_true", help="the whole tree beneath DIR")
    for p in (put, get, ls):
        _connection_options(p, defaults=False)
    return ap


def _say(message: str) -> None:
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)


class _Session:
    """A connection that is (re)opened on demand: after Ctrl-C or a lost
    connection, the next command gets a fresh one."""

    def __init__(self, args: argparse.Namespace, token: bytes | None):
        self.args = args
        self.token = token
        self.client: Client | None = None

    def where(self) -> str:
        return self.args.unix or f"{self.args.host}:{self.args.port}"

    def connect(self) -> Client:
        if self.client is not None and not self.client.closed and _readable(self.client.fileno()):
            # Between commands nothing is due: the server closed the idle
            # connection (--idle-timeout), or it is out of step. A new one.
            self.client.close()
        if self.client is None or self.client.closed:
            self.client = self._open()
        return self.client

    def _open(self) -> Client:
        a = self.args
        common: dict[str, Any] = {"unix_path": a.unix, "token": self.token, "timeout": a.timeout}
        if a.unix is not None or a.fingerprint is not None or not uses_tls(a.tls, a.host):
            return Client(a.host, a.port, tls=a.tls, fingerprint=a.fingerprint, **common)
        # Trust on first use, as ssh: a recorded certificate is pinned...
        known = KnownServers(a.known_servers or default_path())
        server = where((a.host, a.port))
        recorded = known.lookup(server)
        if recorded is not None:
            pinned, line = recorded
            try:
                return Client(a.host, a.port, tls=True, fingerprint=pinned, **common)
            except FingerprintMismatch as e:
                hint = f"if the server really has a new certificate, remove line {line} of {known.path}"
                raise FingerprintMismatch(server, pinned, e.actual, hint) from None
        # ...and a new server's is recorded once it is reached (and, with a
        # token, has proven that it holds it).
        client = Client(a.host, a.port, tls=True if self.token is not None else pinning_context(), **common)
        assert client.tls_fingerprint is not None
        try:
            known.add(server, client.tls_fingerprint)
        except BaseException:
            client.close()
            raise
        _say(
            f"rframe: first connection to {server}: its certificate sha256:{client.tls_fingerprint} "
            f"is now trusted (recorded in {known.path})"
        )
        return client

    @property
    def connected(self) -> bool:
        return self.client is not None and not self.client.closed

    def close(self) -> None:
        if self.client is not None:
            self.client.close()

    def failure(self, exc: BaseException) -> int:
        """Reports a failure to reach or talk to the server; the exit status."""
        if isinstance(exc, ConnectionRefusedError):
            why = "connection refused (is python -m rframe.server running?)"
            _say(f"rframe: cannot connect to {self.where()}: {why}")
        elif isinstance(exc, FileNotFoundError):
            _say(f"rframe: cannot connect to {self.where()}: no such socket (is python -m rframe.server running?)")
        elif isinstance(exc, FingerprintMismatch):
            _say(f"rframe: REFUSED: {exc}")
        elif isinstance(exc, AuthenticationError):
            _say(f"rframe: authentication failed: {exc} (check --token-file or RFRAME_TOKEN)")
        elif isinstance(exc, RemoteError):
            _say(f"rframe: the server refused: {exc}")
        else:
            _say(f"rframe: connection to {self.where()} failed: {exc or type(exc).__name__}")
        return EXIT_FAILURE

    def check(self) -> int:
        """Connects now; 0, or the exit status after reporting why it failed."""
        try:
            self.connect()
        except (OSError, EOFError, ValueError, RemoteError) as e:  # (FrameError is a ValueError)
            return self.failure(e)
        return 0

    def stream(self, cmd: str, *, pty: bool = False, stdin: bool = True) -> int:
        """Runs one command live (``-c``, and each of the prompt loop's): its
        output copied as it is written, stdin forwarded unless it is a
        terminal (or ``stdin`` is false: the prompt loop reads it), Ctrl-C
        sent as SIGINT (a second within a second disconnects, which kills
        it); the exit status.

        With ``pty`` (``-t``) the command runs on a terminal: stdin is
        forwarded, from this terminal in raw mode (restored on every way out)
        if it is one, and window resizes follow."""
        pending: list[str] = []  # signals that came before the command started
        last_interrupt = [0.0]
        proc: RemoteProcess | None = None

        def interrupt(signum: int, frame: Any) -> None:
            now = time.monotonic()
            if now - last_interrupt[0] < 1.0 or (proc is not None and proc.returncode is not None):
                raise KeyboardInterrupt
            last_interrupt[0] = now
            if proc is None:
                pending.append("INT")
            else:
                _control(proc.send_signal, "INT")

        def winch(signum: int, frame: Any) -> None:
            if proc is not None:
                _control(proc.resize, *_terminal_size())

        handlers = {signal.SIGINT: interrupt}
        if pty and hasattr(signal, "SIGWINCH"):
            handlers[signal.SIGWINCH] = winch
        with _handling(handlers):
            try:
                proc = self.connect().start(
                    cmd, timeout=self.args.timeout, pty=pty, size=_terminal_size() if pty else None
                )
            except (OSError, EOFError, ValueError, RemoteError) as e:  # (FrameError is a ValueError)
                return self.failure(e)
            for name in pending:
                _control(proc.send_signal, name)
            stdin_tty = sys.stdin is not None and sys.stdin.isatty()
            with _raw_terminal(sys.stdin.fileno() if pty and stdin_tty else None) as restore:
                if stdin and (pty or not stdin_tty):
                    # A terminal in raw mode gives no end of input (Ctrl-D is
                    # a byte); a pipe's end (-tt) goes as the terminal's Ctrl-D.
                    threading.Thread(target=_forward_stdin, args=(proc,), name="rframe-stdin", daemon=True).start()
                else:
                    proc.stdin.close()
                try:
                    self._copy_output(proc)
                except BrokenPipeError:
                    raise  # whoever read our stdout is gone: main() says nothing
                except (OSError, EOFError, ValueError, RemoteError) as e:
                    restore()
                    return self.failure(e)
        if proc.timed_out:
            _say(f"rframe: timed out after {proc.duration or 0:.3g} s (the command was killed)")
            return EXIT_TIMEOUT
        code = proc.wait()
        return 128 - code if code < 0 else code

    @staticmethod
    def _copy_output(proc: RemoteProcess) -> None:
        """Copies the command's output to ours as it comes, to its end."""
        proc._unbounded = True  # copied out at once
        out, err = sys.stdout.buffer, sys.stderr.buffer
        with proc._cond:
            while not proc._done:
                proc._pump(None, None)
                for data, stream in ((proc._buffers[1], out), (proc._buffers[2], err)):
                    if data:
                        stream.write(data)
                        stream.flush()
                        data.clear()


def _control(call: Any, *args: Any) -> None:
    """Makes a control call (a signal, a resize) from a thread of its own: a
    signal handler must not wait for the connection, which the stdin
    forwarder may hold while the server takes its bytes."""

    def send() -> None:
        with contextlib.suppress(OSError, ValueError, RuntimeError, EOFError):
            call(*args)

    threading.Thread(target=send, name="rframe-control", daemon=True).start()


@contextlib.contextmanager
def _handling(handlers: dict[signal.Signals, Any]) -> Any:
    """These signal handlers for the block (on the main thread only), the previous ones after."""
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum, handler in handlers.items():
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _terminal_size() -> tuple[int, int]:
    """This terminal's (columns, lines), from whichever of stdin, stdout, stderr is one."""
    for fd in (0, 1, 2):
        with contextlib.suppress(OSError):
            got = os.get_terminal_size(fd)
            if got.columns > 0 and got.lines > 0:
                return got.columns, got.lines
    return DEFAULT_TERMINAL_SIZE


@contextlib.contextmanager
def _raw_terminal(fd: int | None) -> Any:
    """The terminal ``fd`` (if not ``None``) in raw mode for the block; its
    settings put back on every way out: the block's end, an exception, Ctrl-C,
    SIGTERM or SIGHUP (which raise ``SystemExit`` meanwhile, so that this runs).
    Yields ``restore()``, to put them back early (before a message is printed)."""
    if fd is None:
        yield lambda: None
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    restored = [False]

    def restore() -> None:
        if not restored[0]:
            restored[0] = True
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    def leave(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    with _handling({signal.SIGTERM: leave, signal.SIGHUP: leave}):
        try:
            tty.setraw(fd, termios.TCSADRAIN)
            yield restore
        finally:
            restore()


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


class ProgressBar:
    """``progress(done, total)`` for a terminal: bar, bytes, rate, time left.

    Redraws at most ten times a second, on one line of ``stream``.
    """

    WIDTH = 24

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.start = time.monotonic()
        self.drawn = 0.0
        #: What was there before this run (a resumed transfer's kept part):
        #: not counted in the rate.
        self.base: int | None = None

    def __call__(self, done: int, total: int) -> None:
        if self.base is None:
            self.base = done
        now = time.monotonic()
        if done < total and now - self.drawn < 0.1:
            return
        self.drawn = now
        self.stream.write(f"\r{self.text(done, total, now)}  ")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()

    def text(self, done: int, total: int, now: float) -> str:
        """The bar's line, without its redrawing."""
        elapsed = max(now - self.start, 1e-6)
        rate = (done - (self.base or 0)) / elapsed
        fill = self.WIDTH * done // total if total else self.WIDTH
        if done >= total:
            left = "done"
        else:
            left = f"{(total - done) / rate:.0f}s left" if rate > 0 else ""
        bar = f"[{'#' * fill}{'.' * (self.WIDTH - fill)}]"
        return f"{self.label}  {bar} {_size(done)}/{_size(total)}  {_size(rate)}/s  {left}"


def _progress(label: str) -> ProgressBar | None:
    return ProgressBar(label, sys.stderr) if sys.stderr.isatty() else None


def _resume(args: argparse.Namespace) -> bool:
    """``--resume`` / ``--no-resume``; by default, on when stderr is a
    terminal (someone there may press Ctrl-C, and try again)."""
    return sys.stderr.isatty() if args.resume is None else bool(args.resume)


def _files(session: _Session, args: argparse.Namespace) -> int:
    """put, get or ls; the exit status."""
    # What to print is printed after the transfer: a BrokenPipeError from stdout
    # must not read as one from the connection.
    try:
        client = session.connect()
        if args.action in ("put", "get") and args.recursive:
            lines = [_tree(client, args)]
        elif args.action == "put":
            r = client.upload(
                args.file,
                args.name,
                overwrite=args.overwrite,
                checksum=args.checksum,
                progress=_progress(args.file),
                resume=_resume(args),
            )
            lines = [_transfer_line("put", r)]
        elif args.action == "get":
            r = client.download(
                args.name,
                args.file,
                overwrite=args.overwrite,
                checksum=args.checksum,
                progress=_progress(args.name),
                resume=_resume(args),
            )
            lines = [_transfer_line("get", r)]
        else:
            lines = [_listing_line(e) for e in client.list_files(args.name, recursive=args.recursive)]
    except FileExistsError as e:
        what = f"{e.filename}: {e.strerror}" if e.filename else str(e)
        _say(f"rframe: {args.action} failed: {what} (--overwrite replaces it)")
        return EXIT_FAILURE
    except SourceChangedError as e:
        _say(f"rframe: {args.action} failed: {e.message} (--no-resume starts over)")
        return EXIT_FAILURE
    except (OSError, EOFError, ValueError, RemoteError) as e:  # (FrameError is a ValueError, as a bad local path is)
        if isinstance(e, RemoteError) or session.connected or not isinstance(e, (ConnectionError, FileNotFoundError)):
            _say(f"rframe: {args.action} failed: {e}")
            return EXIT_FAILURE
        return session.failure(e)
    for line in lines:
        print(line)
    sys.stdout.flush()
    return 0


def _tree(client: Client, args: argparse.Namespace) -> str:
    """put -r or get -r; the line that says what moved."""
    if args.action == "put":
        remote = args.name if args.name is not None else os.path.basename(os.path.normpath(args.file))
        r = client.upload_tree(args.file, remote, checksum=args.checksum, symlinks=args.symlinks)
        verb, where = "stored", f"{r['local']} -> {r['remote'] or '.'}"
    else:
        local = args.file if args.file is not None else (args.name.rstrip("/").rpartition("/")[2] or ".")
        r = client.download_tree(args.name, local, checksum=args.checksum, symlinks=args.symlinks)
        verb, where = "saved", f"{r['remote'] or '.'} -> {r['local']}"
    return (
        f"{verb} {where}: {r['files']} files ({r['bytes']} bytes), {r['skipped']} unchanged, "
        f"{r['dirs']} directories, {r['links']} links, {r['checksum']}"
    )


def _transfer_line(action: str, result: dict[str, Any]) -> str:
    """What a put or get says it did (here and for each host of --hosts)."""
    done = "stored" if action == "put" else "saved"
    return f"{done} {result['name']}: {result['size']} bytes, {result['checksum']} {result['digest']}"


def _listing_line(entry: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry["mtime"]))
    kind = "d" if entry["type"] == "dir" else "-"
    return f"{kind} {entry['size']:>12} {when} {entry['name']}{'/' if kind == 'd' else ''}"


def _forward_stdin(proc: RemoteProcess) -> None:
    """Copies this process's stdin to the command's, then ends its input
    (on a terminal, the server types Ctrl-D: no hangup)."""
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        while data := os.read(sys.stdin.fileno(), 65536):
            proc.stdin.write(data)
        proc.stdin.close()


def _loop(session: _Session) -> int:
    interactive = sys.stdin.isatty()
    prompt = f"rframe {session.where()}> " if interactive else ""
    # Fail early, before the first line is read.
    code = session.check()
    if code:
        return code
    while True:
        try:
            line = input(prompt)
        except EOFError:
            if interactive:
                print()
            return 0
        except KeyboardInterrupt:
            print()
            return 130
        cmd = line.strip()
        if not cmd:
            _say("empty command refused")
            continue
        if cmd.upper() == "Q":
            return 0
        try:
            code = session.stream(cmd, stdin=False)
        except KeyboardInterrupt:
            # A second Ctrl-C: the connection is dropped, so the server kills
            # the command; the next one gets a new connection.
            session.close()
            _say("^C: interrupted (the command was killed)")
            continue
        if code == EXIT_FAILURE and not session.connected:
            return code  # the server is gone


def main(argv: Sequence[str] | None = None) -> int:
    """Run the client; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        token = read_token(args.token_file)
    except (OSError, ValueError) as e:
        _say(f"rframe: cannot read the token: {e}")
        return 2
    if args.hosts is not None or args.hosts_file is not None:
        from . import _fleet_cli

        if args.tty:
            _say("rframe: -t is for one server (a terminal cannot be shared by many)")
            return 2
        try:
            return _fleet_cli.main(args, token)
        except KeyboardInterrupt:
            _say("^C: interrupted (the commands still running were killed)")
            return 130
    session = _Session(args, token)
    try:
        return _main(session, args)
    except BrokenPipeError:
        # Whoever read our stdout is gone (python -m rframe.client -c 'seq 1e6' | head -1).
        # Quiet, as cat is; stdout goes to /dev/null so that closing it at exit cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_FAILURE
    finally:
        session.close()


def _main(session: _Session, args: argparse.Namespace) -> int:
    if args.action is not None:
        if args.command is not None or args.tty:
            _say("rframe: -c or -t and put/get/ls do not go together")
            return 2
        if args.action in ("put", "get") and args.recursive and args.resume:
            _say("rframe: --resume is for one file, not with -r (trees do not resume)")
            return 2
        try:
            return _files(session, args)
        except KeyboardInterrupt:
            _say("^C: interrupted (a transfer cut before its end is not kept)")
            return 130
    if args.command is not None or args.tty:
        command = args.command if args.command is not None else INTERACTIVE_SHELL
        if not command.strip():
            _say("empty command refused")
            return 2
        pty = args.tty > 0
        if args.tty == 1 and not (sys.stdin is not None and sys.stdin.isatty()):
            # As ssh -t: a terminal's input is keys, and a pipe's end is no
            # key (the command would wait for more until the time limit).
            _say("rframe: pseudo-terminal will not be allocated because stdin is not a terminal")
            pty = False
        try:
            return session.stream(command, pty=pty)
        except KeyboardInterrupt:
            _say("^C: interrupted (the command was killed)")
            return 130
    try:
        return _loop(session)
    except KeyboardInterrupt:  # while connecting, before the prompt
        print()
        return 130


if __name__ == "__main__":
    sys.exit(main())
