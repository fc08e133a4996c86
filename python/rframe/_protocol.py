"""The command protocol's client side without I/O, shared by ``Client`` and ``AsyncClient``.

Both clients move bytes their own way (a blocking socket, an asyncio
transport); everything about *what* the bytes mean lives here, once: the
``run`` request header, turning a ``result`` frame into a
:class:`CommandResult` (or :class:`rframe.CommandTimeout` /
:class:`rframe.CommandError`), error frames into exceptions, and the steps of
the token handshake (see PROTOCOL.md).

>>> header, body, wait = run_request(["echo", "hi"], timeout=2.0)
>>> header, body, wait
({'op': 'run', 'cmd': ['echo', 'hi'], 'timeout': 2.0}, b'', 7.0)
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import Any

from ._errors import REMOTE_ERRORS, AuthenticationError, CommandError, CommandTimeout, RemoteError
from ._rframe import (
    CHANNEL_BINDING_NONE,
    CHANNEL_BINDING_TLS,
    ERROR_CODES,
    MAX_SECONDS,
    Codec,
    Frame,
    auth_nonce,
    auth_proof,
    auth_verify,
)

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
    "raise_for_error",
    "FAILURES",
    "event_failure",
    "auth_hello",
    "auth_answer",
    "auth_check_welcome",
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
    (:func:`raise_for_error`). ``timeout`` is the limit the caller asked for.
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


def closing_reason(header: Mapping[str, Any]) -> str | None:
    """If ``header`` is an error after which the server closes the connection,
    why (for the client's "connection is closed" messages); else ``None``."""
    if header.get("op") == "error" and str(header.get("error", "unknown")) in CLOSING_CODES:
        return f"the server refused: {header.get('message', '') or header.get('error')}"
    return None


def raise_for_error(frame: Frame, abort: Callable[[str], None]) -> None:
    """Raises the exception an error frame (``"op": "error"``) stands for; other frames pass.

    ``auth`` errors raise :class:`rframe.AuthenticationError`, the others
    :class:`rframe.RemoteError` (``not-found`` and ``exists`` as its subclasses
    that are also ``FileNotFoundError`` and ``FileExistsError``). Before raising for an error after which the
    server closes the connection (``auth``, ``busy``, ``too-large``,
    ``timeout``), calls ``abort(reason)`` so the client closes its end too.
    """
    header = frame.header
    if header.get("op") != "error":
        return
    code = str(header.get("error", "unknown"))
    message = str(header.get("message", ""))
    if code in CLOSING_CODES:
        abort(f"the server refused: {message or code}")
    raise remote_exception(code, message, header)


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


# --------------------------------------------------------------------------- the token handshake
#
# A client drives it like this (each exchange is one request and its reply,
# error frames raised with raise_for_error; `binding` is the SHA-256 of the
# server's certificate on TLS, None in plaintext):
#
#     reply = exchange(auth_hello())
#     header, server_nonce, client_nonce = auth_answer(token, reply, binding)   # or close and raise
#     reply = exchange(header)
#     auth_check_welcome(token, reply, server_nonce, client_nonce, binding)     # or close and raise

#: Why a client closes its connection when the server's proof is wrong.
AUTH_SERVER_FAILED = "the server failed to prove it holds the token"


def auth_hello() -> dict[str, Any]:
    """Step 1: the header that opens the handshake."""
    return {"op": "auth"}


def auth_answer(token: bytes, reply: Frame, binding: bytes | None = None) -> tuple[dict[str, Any], str, str]:
    """Step 3: the answer to the server's challenge ``reply``:
    ``(header, server_nonce, client_nonce)``; the proof is bound to
    ``binding`` (the server certificate's SHA-256 on TLS).

    Raises :class:`rframe.AuthenticationError` if ``reply`` is no challenge,
    also if it is a welcome: a server without a token cannot prove that it
    holds ours, so it could be any server (one that took the port, or a
    machine in the middle answering for the real one). Also if the server's
    side of the channel is not ours: on TLS, a challenge not bound to TLS came
    from something that ended TLS in the middle, and nothing is sent to it.
    """
    h = reply.header
    op = h.get("op")
    if op == "welcome":
        raise AuthenticationError(
            "the server has no token, so it cannot prove that it holds yours: wrong server? "
            "(connect without a token to use a server that has none)"
        )
    if op != "challenge" or not isinstance(h.get("nonce"), str):
        raise AuthenticationError(f"the server did not answer the handshake (got {h!r})")
    theirs = h.get("channel_binding", CHANNEL_BINDING_NONE)
    ours = CHANNEL_BINDING_TLS if binding is not None else CHANNEL_BINDING_NONE
    if theirs != ours:
        if binding is not None:
            raise AuthenticationError(
                "this connection is TLS, but the server's handshake is not bound to it: something in the middle "
                "ended TLS (or the server predates TLS); no proof was sent"
            )
        raise AuthenticationError(
            f"the server binds its handshake to {theirs!r}, and this connection is plaintext: something in the "
            "middle stripped TLS? Connect with TLS (tls=True); no proof was sent"
        )
    server_nonce = h["nonce"]
    client_nonce = auth_nonce()
    proof = auth_proof(token, "client", server_nonce, client_nonce, binding=binding)
    header = {"op": "auth", "nonce": server_nonce, "client_nonce": client_nonce, "proof": proof}
    if binding is not None:
        header["channel_binding"] = CHANNEL_BINDING_TLS
    return header, server_nonce, client_nonce


def auth_check_welcome(
    token: bytes, reply: Frame, server_nonce: str, client_nonce: str, binding: bytes | None = None
) -> bool:
    """Step 4: true if ``reply`` is a welcome with the server's valid proof
    (bound to ``binding``, as in :func:`auth_answer`).

    On ``False`` the client must close the connection and raise
    :func:`auth_server_failed`.
    """
    proof = reply.header.get("proof")
    return (
        reply.header.get("op") == "welcome"
        and isinstance(proof, str)
        and auth_verify(token, "server", server_nonce, client_nonce, proof, binding=binding)
    )


def auth_server_failed() -> AuthenticationError:
    """The error for a server that could not prove it holds the token."""
    return AuthenticationError("the server could not prove that it holds the token: wrong server, or a different token")
