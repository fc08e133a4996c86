"""Run rframe's command server: ``python -m rframe.server``.

Listens on 127.0.0.1:8848 (the course's port) and runs each command it is sent
with ``/bin/sh -c``, returning stdout, stderr and the exit status. Stop it with
Ctrl-C or SIGTERM: running commands are killed, and it exits with status 0.

    python -m rframe.server                          # 127.0.0.1:8848
    python -m rframe.server --port 0                 # any free port
    python -m rframe.server --unix /tmp/rframe.sock  # a Unix socket
    python -m rframe.server --root ~/shared          # also serve files: put, get, ls

On a network (TLS with a certificate made on first use, and a token):

    python -m rframe.server --new-token ~/.rframe-token     # 32 random bytes, mode 0600
    python -m rframe.server --host 0.0.0.0 --token-file ~/.rframe-token
    python -m rframe.server --fingerprint                   # what clients pin

Anything but loopback or a Unix socket needs a token of 32 or more characters
(``--token-file`` or ``RFRAME_TOKEN``), and serves TLS: whoever can reach the
port could otherwise run commands as you, and whoever is on the path could read
and change them. ``--insecure`` lifts both, loudly.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import types
import warnings
from collections.abc import Sequence
from typing import NoReturn

from ._cli import port, read_token, seconds
from ._rframe import DEFAULT_PORT, Server, server_fingerprint
from ._tls import new_token

__all__ = ["main", "parse_size"]

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from ``"16M"``-style text (K, M, G, T are powers of 1024).

    >>> parse_size("16M"), parse_size("512k"), parse_size("1GiB"), parse_size("100")
    (16777216, 524288, 1073741824, 100)
    """
    m = _SIZE.fullmatch(text)
    if not m or (m.group(3) and not m.group(2) and m.group(3).lower() != "b"):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 1048576, 512K, 16M, 1G)")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _max_startups(text: str) -> int | tuple[int, ...]:
    """``N`` or OpenSSH's ``START:RATE:FULL``, as ``rframe.Server(max_startups=...)`` takes it."""
    parts = text.split(":")
    try:
        numbers = [int(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) not in (1, 3):
        raise argparse.ArgumentTypeError(f"not N or START:RATE:FULL: {text!r} (example: 64:30:256)")
    return numbers[0] if len(numbers) == 1 else tuple(numbers)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m rframe.server",
        description="Serve rframe's remote command protocol: run the commands clients send, "
        "return stdout, stderr and the exit status.",
        epilog="Binding anything but loopback needs a token. Clients: python -m rframe.client, "
        "rframe.Client, or the course's section-15 client script.",
    )
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    ap.add_argument(
        "--port", type=port, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free one)"
    )
    ap.add_argument("--unix", metavar="PATH", help="listen on this Unix socket instead of TCP")
    ap.add_argument(
        "--token-file",
        metavar="PATH",
        help="file whose contents (trailing whitespace stripped) is the shared secret clients must prove they "
        "know; default: the RFRAME_TOKEN environment variable, else no authentication",
    )
    ap.add_argument(
        "--timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="longest a command that answers once it is done (Client.run, a course client's line) may run before "
        "its process group is killed (default 30; a client may ask for less); live ones: --live-timeout",
    )
    ap.add_argument(
        "--live-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="longest a live command (client -c and -t, Client.start) may run; default: no limit, it runs as long "
        "as its client stays connected (a disconnect kills it; keepalive probes find a client whose machine "
        "vanished), as over ssh",
    )
    ap.add_argument(
        "--max-output",
        type=parse_size,
        default=16 << 20,
        metavar="BYTES",
        help="bytes of stdout and of stderr kept per command; the rest is read and dropped and the result "
        "says so (K/M/G suffixes, default 16M)",
    )
    ap.add_argument(
        "--output-budget",
        type=parse_size,
        default=256 << 20,
        metavar="BYTES",
        help="bytes of command output held in memory at once, by all commands together; past it, output "
        "is read and dropped and the result says so (default 256M)",
    )
    ap.add_argument(
        "--max-connections",
        type=_positive_int,
        default=1024,
        metavar="N",
        help="connections served at once; one more is told 'busy' and closed (default 1024)",
    )
    ap.add_argument(
        "--max-startups",
        type=_max_startups,
        default=(64, 30, 256),
        metavar="START:RATE:FULL",
        help="with a token, connections that have not authenticated yet, as in sshd: past START, a new one is "
        "closed at once with a chance of RATE percent, rising to 100 at FULL; a single N closes every one past N "
        "(default 64:30:256)",
    )
    ap.add_argument(
        "--max-startups-per-source",
        type=_positive_int,
        default=16,
        metavar="N",
        help="with a token, connections from one address (IPv6: one /64) that have not authenticated yet; "
        "one more from there is closed at once (default 16)",
    )
    ap.add_argument(
        "--header-timeout",
        type=seconds,
        default=10.0,
        metavar="SECONDS",
        help="from a request's first byte to its complete header: one absolute deadline that trickled bytes do not "
        "extend (slowloris); before a token is proven, the whole login must fit in it (default 10)",
    )
    ap.add_argument(
        "--idle-timeout",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="how long a connection may sit between requests or stall inside a body before it is closed (default 300)",
    )
    ap.add_argument(
        "--allow",
        action="append",
        metavar="NAME",
        help="only this program may run (repeat for more); implies --no-shell",
    )
    ap.add_argument(
        "--no-shell",
        action="store_true",
        help="do not use /bin/sh: a command line is split with shell quoting rules and run directly",
    )
    ap.add_argument(
        "--no-pty",
        action="store_true",
        help="refuse live commands that ask for a terminal (start(..., pty=True), 'python -m rframe.client -t')",
    )
    ap.add_argument(
        "--allow-pty",
        action="store_true",
        help="with --allow: let the allowed programs run on a terminal too (refused otherwise: on a terminal, "
        "an allowed program can be driven as a person would drive it)",
    )
    ap.add_argument("--cwd", metavar="DIR", help="working directory of commands (default: the server's)")
    ap.add_argument(
        "--root",
        metavar="DIR",
        help="serve files beneath DIR to 'python -m rframe.client put/get/ls' (default: no files); "
        "names that lead out of it (.., absolute paths, symlinks) are refused",
    )
    ap.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address without a token, and serve it in plaintext unless --tls is given "
        "(anyone who can reach it can run commands; anyone on the path can read and change them)",
    )
    tls = ap.add_argument_group(
        "TLS",
        "A non-loopback address serves TLS 1.3 (unless --insecure); loopback and Unix sockets only with --tls. "
        "Either way plaintext is still served to clients on this machine, on the same port.",
    )
    tls.add_argument("--tls", action="store_true", help="serve TLS on any address, loopback included")
    tls.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="where the server's own certificate is made on first use and kept, with its key, mode 0600 "
        "(default $XDG_STATE_HOME/rframe, else ~/.local/state/rframe)",
    )
    tls.add_argument("--tls-cert", metavar="FILE", help="use this certificate (PEM; with --tls-key) instead")
    tls.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert (PEM)")
    tls.add_argument(
        "--fingerprint",
        action="store_true",
        help="print the SHA-256 fingerprint of the certificate (making it first if need be) and exit",
    )
    ap.add_argument(
        "--new-token",
        metavar="FILE",
        help="write a new random token (32 bytes, base64url) to FILE, readable by you alone, and exit; "
        "FILE must not exist",
    )
    ap.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        help="logging level; INFO logs one line per command (default INFO)",
    )
    return ap


class _Terminated(Exception):
    """Raised by the SIGTERM handler; serve_forever stops the server and re-raises it."""


def _on_sigterm(signum: int, frame: types.FrameType | None) -> NoReturn:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not interrupt the shutdown
    raise _Terminated()


def _raise_open_files_limit(max_connections: int, log: logging.Logger) -> None:
    """Raises the soft limit on open files to the hard limit, as servers do.

    Every connection is a file descriptor, and a login shell's soft limit is
    often 1024: past it, accept() fails and clients wait in the backlog, far
    below --max-connections. Commands the server runs inherit the raised limit.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # An unlimited hard limit cannot be the soft one on Linux (fs.nr_open caps
    # both); 2**20 is that cap's default.
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open files limit raised from %d to %d", soft, target)
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the open files limit from %d to %d: %s", soft, target, e)
    if soft != resource.RLIM_INFINITY and soft < max_connections + 64:
        log.warning(
            "the open files limit (%d) is below --max-connections (%d): connections past about %d will wait "
            "in the listen backlog (raise the hard limit: ulimit -Hn, or LimitNOFILE= in systemd)",
            soft,
            max_connections,
            max(soft - 64, 0),
        )


def _fail(message: str) -> int:
    print(f"rframe.server: error: {message}", file=sys.stderr, flush=True)
    return 2


def _write_new_token(path: str) -> int:
    """``--new-token FILE``: a new token in a new file that only its owner reads."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _fail(f"{path} exists: remove it first, or choose another name (a token is never overwritten)")
    except OSError as e:
        return _fail(f"cannot create {path}: {e.strerror or e}")
    with os.fdopen(fd, "w") as f:
        f.write(new_token() + "\n")
    print(f"wrote a new token to {path}; start the server with --token-file {path}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server until Ctrl-C or SIGTERM; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.new_token is not None:
        return _write_new_token(args.new_token)
    if args.fingerprint:
        try:
            print(f"sha256:{server_fingerprint(tls_cert=args.tls_cert, tls_key=args.tls_key, tls_dir=args.tls_dir)}")
        except (OSError, ValueError) as e:
            return _fail(f"cannot read or make the certificate: {e}")
        return 0
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("rframe.server")
    try:
        token = read_token(args.token_file)
    except (OSError, ValueError) as e:
        return _fail(f"cannot read the token: {e}")
    for flag, path in (("--cwd", args.cwd), ("--root", args.root)):
        if path is not None and not os.path.isdir(path):
            return _fail(f"{flag} {path}: not a directory")
    _raise_open_files_limit(args.max_connections, log)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)  # --insecure: printed below, in plain words
            server = Server(
                args.host,
                args.port,
                unix_path=args.unix,
                token=token,
                timeout=args.timeout,
                live_timeout=args.live_timeout,
                max_output=args.max_output,
                max_connections=args.max_connections,
                header_timeout=args.header_timeout,
                idle_timeout=args.idle_timeout,
                allow=args.allow,
                shell=not args.no_shell,
                pty=not args.no_pty,
                allow_pty=args.allow_pty,
                cwd=args.cwd,
                root=args.root,
                insecure=args.insecure,
                tls=True if args.tls else None,
                tls_cert=args.tls_cert,
                tls_key=args.tls_key,
                tls_dir=args.tls_dir,
                output_budget=args.output_budget,
                max_startups=args.max_startups,
                max_startups_per_source=args.max_startups_per_source,
            )
    except (ValueError, NotImplementedError) as e:  # NotImplementedError: not on this system (Windows)
        return _fail(str(e))
    except OSError as e:
        where = args.unix or f"{args.host}:{args.port}"
        if e.errno is None and str(e).startswith("TLS certificate:"):  # (from Server::bind)
            return _fail(str(e))
        return _fail(f"cannot listen on {where}: {e.strerror or e}")

    for w in caught:
        print(f"rframe.server: WARNING: {w.message}", file=sys.stderr, flush=True)
    address = server.address
    where = address if isinstance(address, str) else f"{address[0]}:{address[1]}"
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        print(f"rframe server listening on {where} (Ctrl-C to stop)", flush=True)
        if server.tls_fingerprint is not None:
            print(f"TLS certificate fingerprint: sha256:{server.tls_fingerprint}", flush=True)
        log.info(
            "serving on %s: %s, %s, timeout %gs (live commands: %s), max output %d bytes, %s",
            where,
            "token required" if token else "no token",
            "TLS (and plaintext from this machine)" if server.tls_fingerprint else "plaintext",
            args.timeout,
            f"{args.live_timeout:g}s" if args.live_timeout is not None else "none",
            args.max_output,
            f"allowed: {', '.join(args.allow)}" if args.allow else ("no shell" if args.no_shell else "/bin/sh -c"),
        )
        if args.root:
            log.info("serving files beneath %s", os.path.realpath(args.root))
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("interrupted: stopped")
    except _Terminated:
        log.info("terminated: stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()  # already stopped by serve_forever; a second call does nothing
    return 0


if __name__ == "__main__":
    sys.exit(main())
