"""What ``Client`` and ``AsyncClient`` share around the protocol's session.

The rules of the protocol are the Rust ``ClientSession``'s (both clients
drive one). This holds the Python side of them, once: the ``run`` request's
header from ``subprocess``-style arguments, a ``result`` frame as a
:class:`CommandResult` (or :class:`rframe.CommandTimeout` /
:class:`rframe.CommandError`), and a session's failure events as exceptions.

>>> header, body, wait = run_request(["echo", "hi"], timeout=2.0)
>>> header, body, wait
({'op': 'run', 'cmd': ['echo', 'hi'], 'timeout': 2.0}, b'', 7.0)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from ._errors import REMOTE_ERRORS, AuthenticationError, CommandError, CommandTimeout, RemoteError
from ._rframe import ERROR_CODES, MAX_SECONDS, Codec, Frame

__all__ = [
    "CommandResult",
    "REPLY_GRACE",
    "CLOSING_CODES",
    "MAX_SECONDS",
    "check_seconds",
    "check_client_timeout",
    "token_bytes",
    "where",
    "unix_socket",
    "run_request",
    "command_result",
    "remote_exception",
    "FAILURES",
    "event_failure",
]

#: How much longer than a command's own time limit the client waits for its
#: result: the server kills the command at its limit, then still has to collect
#: what is left in the pipes and send the reply.
REPLY_GRACE = 5.0

#: Error codes after which the server closes the connection (from the Rust
#: core's ``ERROR_CODES``: each code and whether it closes).
CLOSING_CODES = frozenset(code for code, closes in ERROR_CODES if closes)

_Body = bytes | bytearray | memoryview | str


# --------------------------------------------------------------------------- results


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    if isinstance(value, (bytes, str)) and len(text) > limit:
        return f"{text[:limit]}...({len(value)} {'bytes' if isinstance(value, bytes) else 'chars'})"
    return text


class CommandResult:
    """What a remote command did, shaped like :class:`subprocess.CompletedProcess`.

    ``args`` is the command as given to :meth:`Client.run`; ``returncode`` its
    exit status (negative: killed by that signal, as in :mod:`subprocess`);
    ``stdout`` and ``stderr`` its output, ``bytes`` (``str`` with
    ``text=True``); ``stdout_truncated``/``stderr_truncated`` are true when the
    server dropped output past its ``max_output``. ``duration`` is how long the
    command ran on the server, in seconds; ``encoding`` how the server says its
    output is encoded.

    >>> r = CommandResult("exit 3", 3, b"", b"oops\\n")
    >>> r
    CommandResult(args='exit 3', returncode=3, stdout=b'', stderr=b'oops\\n')
    >>> r.ok
    False
    >>> r.check_returncode()
    Traceback (most recent call last):
      ...
    rframe._errors.CommandError: Command 'exit 3' returned non-zero exit status 3.
    """

    __slots__ = (
        "args",
        "returncode",
        "stdout",
        "stderr",
        "stdout_truncated",
        "stderr_truncated",
        "duration",
        "encoding",
    )

    def __init__(
        self,
        args: Any,
        returncode: int,
        stdout: bytes | str = b"",
        stderr: bytes | str = b"",
        *,
        stdout_truncated: bool = False,
        stderr_truncated: bool = False,
        duration: float = 0.0,
        encoding: str = "utf-8",
    ) -> None:
        self.args = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.stdout_truncated = stdout_truncated
        self.stderr_truncated = stderr_truncated
        self.duration = duration
        self.encoding = encoding

    @property
    def ok(self) -> bool:
        """True if the command exited with status 0."""
        return self.returncode == 0

    def check_returncode(self) -> None:
        """Raise :class:`rframe.CommandError` if the exit status is non-zero."""
        if self.returncode:
            raise CommandError(self.returncode, self.args, self.stdout, self.stderr, result=self)

    def __repr__(self) -> str:
        parts = [
            f"args={_short(self.args)}",
            f"returncode={self.returncode!r}",
            f"stdout={_short(self.stdout)}",
            f"stderr={_short(self.stderr)}",
        ]
        if self.stdout_truncated:
            parts.append("stdout_truncated=True")
        if self.stderr_truncated:
            parts.append("stderr_truncated=True")
        return f"{type(self).__name__}({', '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CommandResult):
            return NotImplemented
        return all(getattr(self, k) == getattr(other, k) for k in self.__slots__ if k != "duration")

    __hash__ = None  # type: ignore[assignment]


def _decode(data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding, "replace")
    except LookupError:  # an encoding this Python does not know
        return data.decode("utf-8", "replace")


# --------------------------------------------------------------------------- arguments


# MAX_SECONDS (imported above from the Rust core, which bounds the server's
# limits by it too): the longest limit in seconds the server and the clients
# take (about 31 years); past it, what a limit is added to overflows.


def check_seconds(value: float, name: str = "timeout") -> float:
    """``value`` as a float; ``ValueError`` unless it is more than 0 and at
    most ``MAX_SECONDS``."""
    seconds = float(value)
    if not 0 < seconds <= MAX_SECONDS:  # (NaN fails too)
        raise ValueError(f"{name} must be more than 0 and at most {MAX_SECONDS:g} seconds, got {value!r}")
    return seconds


def check_client_timeout(timeout: float | None) -> None:
    """Raises ``ValueError`` unless ``timeout`` is ``None`` or passes :func:`check_seconds`."""
    if timeout is not None:
        check_seconds(timeout)


def where(address: Any) -> str:
    """``host:port`` (``[v6]:port``), or a Unix socket's path: a client's
    address as messages name it.

    >>> where(("::1", 8848)), where(("example.org", 8848)), where("/run/rframe.sock")
    ('[::1]:8848', 'example.org:8848', '/run/rframe.sock')
    """
    if isinstance(address, str):
        return address
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unix_socket() -> socket.socket:
    """A new Unix stream socket (``unix_path=``), or ``NotImplementedError``
    where the system has none (Windows)."""
    family = getattr(socket, "AF_UNIX", None)
    if family is None:
        raise NotImplementedError("Unix sockets (unix_path) are not available on this system: connect over TCP")
    return socket.socket(family, socket.SOCK_STREAM)


def token_bytes(token: str | bytes | None, codec: Codec) -> bytes | None:
    """The token as bytes (``str`` is UTF-8), or ``None``; ``ValueError`` if it is
    empty or the codec has no JSON header to carry the handshake."""
    if token is None:
        return None
    data = token.encode("utf-8") if isinstance(token, str) else bytes(token)
    if not data:
        raise ValueError("token must not be empty")
    if not codec.json_header:
        raise ValueError("token needs a JSON-header codec: the handshake travels in headers")
    return data


# --------------------------------------------------------------------------- run


def run_request(
    cmd: Any,
    *,
    timeout: float | None = None,
    input: _Body | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], _Body, float | None]:
    """The ``run`` request for these arguments: ``(header, body, wait)``.

    ``wait`` is how long a client should wait for the reply, in seconds
    (the command's own limit plus :data:`REPLY_GRACE`), or ``None`` when the
    command has no limit of its own. Raises ``ValueError`` for a bad
    ``timeout``, before anything is sent.

    >>> run_request("cat", input=b"x", env={"A": 1}, cwd="/tmp")
    ({'op': 'run', 'cmd': 'cat', 'env': {'A': '1'}, 'cwd': '/tmp', 'input': True}, b'x', None)
    """
    if isinstance(cmd, (str, bytes)):
        wire_cmd: Any = os.fsdecode(cmd)
    elif isinstance(cmd, os.PathLike):  # a program to run, as subprocess takes it
        wire_cmd = [os.fsdecode(cmd)]
    else:
        wire_cmd = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in cmd]
    header: dict[str, Any] = {"op": "run", "cmd": wire_cmd}
    if timeout is not None:
        header["timeout"] = check_seconds(timeout)
    if env is not None:
        header["env"] = {str(k): str(v) for k, v in env.items()}
    if cwd is not None:
        header["cwd"] = os.fsdecode(cwd)
    body: _Body = b""
    if input is not None:
        header["input"] = True
        body = input
    wait = timeout + REPLY_GRACE if timeout is not None else None
    return header, body, wait


def command_result(
    cmd: Any, reply: Frame, *, timeout: float | None = None, check: bool = False, text: bool = False
) -> CommandResult:
    """Turns the reply to a ``run`` request into a :class:`CommandResult`.

    Raises :class:`rframe.RemoteError` (``bad-response``) if the reply is not a
    ``result`` frame, :class:`rframe.CommandTimeout` if the server killed the
    command at its limit, and with ``check=True`` :class:`rframe.CommandError`
    on a non-zero exit status. Error frames must have been raised before
    (the session's failure events). ``timeout`` is the limit the caller asked for.
    """
    h = reply.header
    if h.get("op") != "result":
        raise RemoteError("bad-response", f"expected a result frame, got {h!r}", h)
    data = reply.body
    split = int(h.get("stdout_size", len(data)))
    stdout: bytes | str = data[:split]
    stderr: bytes | str = data[split:]
    encoding = str(h.get("encoding") or "utf-8")
    if text:
        stdout, stderr = _decode(data[:split], encoding), _decode(data[split:], encoding)
    result = CommandResult(
        cmd,
        int(h.get("returncode", 0)),
        stdout,
        stderr,
        stdout_truncated=bool(h.get("stdout_truncated", False)),
        stderr_truncated=bool(h.get("stderr_truncated", False)),
        duration=float(h.get("duration", 0.0)),
        encoding=encoding,
    )
    if h.get("timed_out"):
        limit = timeout if timeout is not None else round(result.duration, 3)
        raise CommandTimeout(cmd, limit, stdout, stderr, result=result)
    if check:
        result.check_returncode()
    return result


# --------------------------------------------------------------------------- errors


def remote_exception(code: str, message: str, header: Mapping[str, Any] | None) -> Exception:
    """The exception an error frame with this code stands for: ``auth`` is
    :class:`rframe.AuthenticationError`, ``not-found`` and ``exists`` the
    :class:`rframe.RemoteError` subclasses that are also ``FileNotFoundError``
    and ``FileExistsError``, any other code a :class:`rframe.RemoteError`."""
    if code == "auth":
        return AuthenticationError(message or "authentication failed")
    return REMOTE_ERRORS.get(code, RemoteError)(code, message, header)


#: The ``ClientSession`` events that stand for a failed request.
FAILURES = frozenset(("remote-error", "login-failed", "violation", "closed"))


def event_failure(event: tuple[Any, ...]) -> Exception:
    """The exception a failure event of a ``ClientSession`` (one of
    :data:`FAILURES`) stands for; the session decided what failed, and
    whether the connection closes.

    ``auth`` errors and failed logins are :class:`rframe.AuthenticationError`,
    other error frames :class:`rframe.RemoteError` (``not-found`` and
    ``exists`` as its subclasses that are also ``FileNotFoundError`` and
    ``FileExistsError``); a reply that broke the protocol is
    ``RemoteError("bad-response")``, a download announced without a size
    ``ConnectionAbortedError``.

    >>> err = event_failure(("remote-error", 3, "not-found", "no such file", False, None))
    >>> isinstance(err, FileNotFoundError), err.code, str(err)
    (True, 'not-found', 'no such file [not-found]')
    >>> event_failure(("violation", 3, "no-size", "the server announced no size for 'f'", True, None))
    ConnectionAbortedError("the server announced no size for 'f'")
    """
    kind = event[0]
    if kind == "remote-error":
        _, _, code, message, _, header = event
        return remote_exception(code, message, header)
    if kind == "login-failed":
        return AuthenticationError(event[2])
    if kind == "violation":
        _, _, what, message, _, header = event
        if what == "no-size":
            return ConnectionAbortedError(message)
        return RemoteError("bad-response", message, header)
    return ConnectionAbortedError(f"the connection was closed ({event[1]})")
