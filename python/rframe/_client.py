"""The blocking client of rframe's command server (see PROTOCOL.md).

>>> from rframe import Client, Server
>>> with Server(port=0) as server, Client(*server.address) as client:
...     result = client.run("echo hi; echo oops >&2; exit 3")
>>> result.returncode, result.stdout, result.stderr
(3, b'hi\\n', b'oops\\n')
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any, Mapping, Optional, Sequence, Union

from ._errors import AuthenticationError, CommandError, CommandTimeout, RemoteError
from ._rframe import Codec, Frame, auth_nonce, auth_proof, auth_verify

__all__ = ["Client", "CommandResult"]

#: How much longer than a command's own time limit the client waits for its
#: result: the server kills the command at its limit, then still has to collect
#: what is left in the pipes and send the reply.
REPLY_GRACE = 5.0

#: Error codes after which the server closes the connection.
_CLOSING_CODES = frozenset({"auth", "busy", "too-large", "timeout"})

_Body = Union[bytes, bytearray, memoryview, str]


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

    __slots__ = ("args", "returncode", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "duration", "encoding")

    def __init__(
        self,
        args: Any,
        returncode: int,
        stdout: Union[bytes, str] = b"",
        stderr: Union[bytes, str] = b"",
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


# --------------------------------------------------------------------------- the client


class Client:
    """A connection to an rframe server; many requests, one at a time.

    Connects in the constructor: to ``(host, port)`` over TCP, or to the Unix
    socket ``unix_path``. ``timeout`` (seconds, ``None`` = wait forever) bounds
    connecting and each request's send and reply; :meth:`run` waits longer
    when the command itself has a longer ``timeout``. With ``token`` (``str``
    or ``bytes``) the client proves it holds the server's token, and checks the
    server's proof in turn, before the constructor returns (a server without a
    token accepts such a client too). ``codec`` must match the server's
    (default: the course's format, a JSON header).

    Connection failures are the builtin exceptions (``ConnectionRefusedError``,
    ``ConnectionResetError``, ``TimeoutError``, ...); an error frame from the
    server raises :class:`rframe.RemoteError`, a failed handshake
    :class:`rframe.AuthenticationError`. If a request is interrupted halfway
    (Ctrl-C, a timeout, a broken connection) the client closes the connection,
    whose stream has lost its place; later calls raise
    ``ConnectionAbortedError``.

    Run commands:

    >>> from rframe import Server
    >>> server = Server(port=0); server.start()
    >>> with Client(*server.address) as client:
    ...     client.run(["echo", "hello"]).stdout
    ...     client.run("cat", input="fed to stdin", text=True).stdout
    ...     client.run("echo $GREETING", env={"GREETING": "hi"}, text=True).stdout
    b'hello\\n'
    'fed to stdin'
    'hi\\n'

    Talk to a server with a ``handler`` (your own protocol):

    >>> echo = Server(port=0, handler=lambda frame: frame.body.upper())
    >>> echo.start()
    >>> with Client(*echo.address) as client:
    ...     client.request(b"hello").body
    b'HELLO'
    >>> echo.stop(); server.stop()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8848,
        *,
        unix_path: Optional[Union[str, os.PathLike]] = None,
        token: Optional[Union[str, bytes]] = None,
        codec: Optional[Codec] = None,
        timeout: Optional[float] = None,
    ) -> None:
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        self.codec = codec if codec is not None else Codec()
        self.timeout = timeout
        self._lock = threading.RLock()
        self._in_call = 0
        self._close_requested = False
        self._closed_reason: Optional[str] = None
        token_bytes = None
        if token is not None:
            token_bytes = token.encode("utf-8") if isinstance(token, str) else bytes(token)
            if not token_bytes:
                raise ValueError("token must not be empty")
            if not self.codec.json_header:
                raise ValueError("token needs a JSON-header codec: the handshake travels in headers")
        if unix_path is not None:
            self.address: Any = os.fspath(unix_path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.address)
            except BaseException:
                sock.close()
                raise
        else:
            self.address = (host, port)
            sock = socket.create_connection((host, port), timeout=timeout)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - not every platform allows it
                pass
        sock.settimeout(timeout)
        self._sock: Optional[socket.socket] = sock
        if token_bytes is not None:
            try:
                self._authenticate(token_bytes)
            except BaseException:
                self.close()
                raise

    # ------------------------------------------------------------------ lifecycle

    @property
    def closed(self) -> bool:
        """True once the connection is closed (by :meth:`close` or after a failure)."""
        return self._sock is None or self._close_requested

    def close(self) -> None:
        """Close the connection. Calling it again does nothing.

        Safe to call from another thread while a call waits on the server:
        that call wakes up and raises ``ConnectionAbortedError``.
        """
        sock = self._sock
        if sock is None or self._close_requested:
            return
        self._close_requested = True
        self._closed_reason = "the client was closed"
        if self._lock.acquire(blocking=False):
            try:
                if not self._in_call:
                    self._abort(self._closed_reason)
                    return
            finally:
                self._lock.release()
        # A call is under way: wake it; it closes the socket on its way out
        # (closing it here could hand its descriptor number to another socket).
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        sock = getattr(self, "_sock", None)
        if sock is not None:
            sock.close()

    def fileno(self) -> int:
        """The socket's file descriptor (for ``select``); -1 once closed."""
        return self._sock.fileno() if self._sock is not None else -1

    def __repr__(self) -> str:
        state = f"closed: {self._closed_reason}" if self.closed else "open"
        return f"<rframe.Client {self.address!r} {state}>"

    def _abort(self, reason: str) -> None:
        """Closes the connection (it is unusable: closed, failed or out of sync)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            if not self._close_requested:
                self._closed_reason = reason
            sock.close()

    def _require_sock(self) -> socket.socket:
        if self._sock is None or self._close_requested:
            raise ConnectionAbortedError(f"the connection is closed ({self._closed_reason}); open a new Client")
        return self._sock

    @contextlib.contextmanager
    def _call(self):
        """Holds the lock for one call; finishes a close() that came meanwhile."""
        with self._lock:
            self._in_call += 1
            try:
                yield
            except BaseException as exc:
                if self._close_requested and not isinstance(exc, ConnectionAbortedError):
                    self._abort("the client was closed")
                    raise ConnectionAbortedError(f"the connection was closed ({self._closed_reason})") from exc
                raise
            finally:
                self._in_call -= 1
                if self._close_requested and not self._in_call:
                    self._abort("the client was closed")

    # ------------------------------------------------------------------ frames

    def _write(self, body: _Body, header: Optional[Mapping[str, Any]], fields: Mapping[str, Any]) -> None:
        sock = self._require_sock()
        # Packed first: a header that cannot be encoded fails before a byte is sent.
        data = self.codec.pack(body, header, **fields)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as exc:
            # The server may have said why before it closed (busy, auth): that
            # answer is more useful than the broken pipe.
            pending = self._salvage(sock)
            self._abort(f"sending a frame failed: {type(exc).__name__}")
            if pending is not None:
                self._check_error(pending)
            raise
        except BaseException as exc:
            self._abort(f"sending a frame failed: {type(exc).__name__}")
            raise

    def _salvage(self, sock: socket.socket) -> Optional[Frame]:
        """A frame already waiting on a connection whose send side broke, if any."""
        if not self.codec.json_header:
            return None
        try:
            sock.settimeout(0.5)
            return self.codec.read(sock)
        except Exception:  # noqa: BLE001 - nothing to salvage
            return None

    def _read(self, wait: Optional[float] = None) -> Frame:
        """Reads one frame; ``wait`` extends the socket timeout for this read."""
        sock = self._require_sock()
        restore = None
        if wait is not None and self.timeout is not None and wait > self.timeout:
            restore = self.timeout
            sock.settimeout(wait)
        try:
            frame = self.codec.read(sock)
        except EOFError as exc:  # a clean close, or rframe.IncompleteFrame
            if self._close_requested:  # close() from another thread; _call says so
                raise
            self._abort("the server closed the connection")
            raise ConnectionResetError(f"the server closed the connection ({exc})") from exc
        except BaseException as exc:
            self._abort(f"reading a frame failed: {type(exc).__name__}")
            raise
        if restore is not None:
            sock.settimeout(restore)
        self._check_error(frame)
        return frame

    def _check_error(self, frame: Frame) -> None:
        header = frame.header
        if header.get("op") != "error":
            return
        code = str(header.get("error", "unknown"))
        message = str(header.get("message", ""))
        if code in _CLOSING_CODES:
            self._abort(f"the server refused: {message or code}")
        if code == "auth":
            raise AuthenticationError(message or "authentication failed")
        raise RemoteError(code, message, header)

    def _exchange(self, body: _Body, header: Optional[Mapping[str, Any]], fields: Mapping[str, Any], wait: Optional[float] = None) -> Frame:
        with self._call():
            self._write(body, header, fields)
            return self._read(wait)

    def send(self, body: _Body = b"", header: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Send one frame (arguments as for :func:`rframe.send_frame`) without waiting for a reply.

        Pair each :meth:`send` with a :meth:`recv`, or use :meth:`request`.
        """
        with self._call():
            self._write(body, header, fields)

    def recv(self) -> Frame:
        """Wait for the next frame from the server and return it.

        An error frame raises :class:`rframe.RemoteError`; a server that closed
        the connection, ``ConnectionResetError``.
        """
        with self._call():
            return self._read()

    def request(self, body: _Body = b"", header: Optional[Mapping[str, Any]] = None, **fields: Any) -> Frame:
        """Send one frame and return the one the server answers with.

        ``body``, ``header`` and ``fields`` are as for :func:`rframe.send_frame`.

        >>> from rframe import Server
        >>> def handler(frame):
        ...     return {"greeting": "hello " + frame.header["name"]}, b""
        >>> with Server(port=0, handler=handler) as server, Client(*server.address) as client:
        ...     client.request(name="world").header["greeting"]
        'hello world'
        """
        return self._exchange(body, header, fields)

    # ------------------------------------------------------------------ authentication

    def _authenticate(self, token: bytes) -> None:
        reply = self._exchange(b"", {"op": "auth"}, {})
        op = reply.header.get("op")
        if op == "welcome":
            return  # a server without a token
        if op != "challenge" or not isinstance(reply.header.get("nonce"), str):
            raise AuthenticationError(f"the server did not answer the handshake (got {reply.header!r})")
        server_nonce = reply.header["nonce"]
        client_nonce = auth_nonce()
        proof = auth_proof(token, "client", server_nonce, client_nonce)
        reply = self._exchange(b"", {"op": "auth", "nonce": server_nonce, "client_nonce": client_nonce, "proof": proof}, {})
        server_proof = reply.header.get("proof")
        if (
            reply.header.get("op") != "welcome"
            or not isinstance(server_proof, str)
            or not auth_verify(token, "server", server_nonce, client_nonce, server_proof)
        ):
            self._abort("the server failed to prove it holds the token")
            raise AuthenticationError("the server could not prove that it holds the token: wrong server, or a different token")

    # ------------------------------------------------------------------ commands

    def run(
        self,
        cmd: Union[str, Sequence[str]],
        *,
        timeout: Optional[float] = None,
        check: bool = False,
        input: Optional[_Body] = None,
        env: Optional[Mapping[str, str]] = None,
        cwd: Optional[Union[str, os.PathLike]] = None,
        text: bool = False,
    ) -> CommandResult:
        """Run a command on the server and return a :class:`CommandResult`.

        A string runs under ``/bin/sh -c`` (or is split with shell rules on a
        server without a shell); a list runs as argv, without a shell.
        ``input`` (``bytes`` or ``str``) is fed to the command's stdin, which is
        otherwise ``/dev/null``. ``env`` adds variables to the server's
        environment; ``cwd`` sets the working directory. Neither is ever spliced
        into the command line.

        ``timeout`` (seconds) limits the command; the server also applies its
        own limit, and the smaller one wins. At the limit the server kills the
        command's whole process group and this raises
        :class:`rframe.CommandTimeout` with the output so far; the connection
        stays usable. ``check=True`` raises :class:`rframe.CommandError` on a
        non-zero exit status. ``text=True`` decodes stdout and stderr once, at
        the end, with the encoding the server names and ``errors="replace"``.

        >>> from rframe import Server
        >>> server = Server(port=0); server.start()
        >>> client = Client(*server.address)
        >>> client.run("printf 'a\\\\nb'", text=True).stdout.splitlines()
        ['a', 'b']
        >>> client.run("sleep 5", timeout=0.2)
        Traceback (most recent call last):
          ...
        rframe._errors.CommandTimeout: Command 'sleep 5' timed out after 0.2 seconds
        >>> client.run("echo still usable").stdout
        b'still usable\\n'
        >>> client.close(); server.stop()
        """
        if isinstance(cmd, (str, bytes)):
            wire_cmd: Any = os.fsdecode(cmd)
        elif isinstance(cmd, os.PathLike):  # a program to run, as subprocess takes it
            wire_cmd = [os.fsdecode(cmd)]
        else:
            wire_cmd = [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in cmd]
        header: dict[str, Any] = {"op": "run", "cmd": wire_cmd}
        if timeout is not None:
            timeout = float(timeout)
            if not timeout > 0:
                raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
            header["timeout"] = timeout
        if env is not None:
            header["env"] = {str(k): str(v) for k, v in env.items()}
        if cwd is not None:
            header["cwd"] = os.fsdecode(cwd)
        body: _Body = b""
        if input is not None:
            header["input"] = True
            body = input
        wait = timeout + REPLY_GRACE if timeout is not None else None
        reply = self._exchange(body, header, {}, wait)
        h = reply.header
        if h.get("op") != "result":
            raise RemoteError("bad-response", f"expected a result frame, got {h!r}", h)
        data = reply.body
        split = int(h.get("stdout_size", len(data)))
        stdout, stderr = data[:split], data[split:]
        encoding = str(h.get("encoding") or "utf-8")
        if text:
            stdout, stderr = _decode(stdout, encoding), _decode(stderr, encoding)
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
