"""Exceptions raised by rframe.

They live in Python (not in the compiled module) so that one class can have two
builtin bases, as ``IncompleteFrame`` does, and so that each has a docstring
that ``help()`` shows. The Rust bindings import this module to raise them.
"""

from __future__ import annotations

import errno as _errno
import ssl
import subprocess
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

if TYPE_CHECKING:
    from ._protocol import CommandResult

__all__ = [
    "FrameError",
    "HeaderError",
    "FrameTooLarge",
    "IncompleteFrame",
    "ChecksumError",
    "CommandError",
    "CommandTimeout",
    "AuthenticationError",
    "RemoteError",
    "RemoteFileNotFoundError",
    "RemoteFileExistsError",
    "SourceChangedError",
    "FingerprintMismatch",
]


class FrameError(ValueError):
    """The bytes on the wire are not a valid frame.

    The base of every framing error. A decoder that raised one refuses further
    input with the same error: the stream has lost its place, and the only safe
    move is to close the connection.
    """


class HeaderError(FrameError):
    """The JSON header is not valid: bad JSON, not an object, or a missing,
    non-integer or negative ``total_size``."""


class FrameTooLarge(FrameError):
    """A length is larger than the codec allows, or than the 4-byte field can hold.

    ``part`` is ``"header"`` or ``"body"``, ``size`` the declared or given length,
    ``limit`` the largest length allowed.
    """

    def __init__(self, message: str, *, part: str = "body", size: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.part = part
        self.size = size
        self.limit = limit


class IncompleteFrame(FrameError, EOFError):
    """The stream ended in the middle of a frame.

    ``part`` is ``"length"``, ``header`` or ``body``: where the stream ended;
    ``expected`` is how many bytes of that part were announced, ``received`` how
    many arrived. A stream that ends cleanly between two frames raises a plain
    ``EOFError`` instead, so ``except EOFError`` ends a read loop either way.
    """

    def __init__(self, message: str, *, part: str = "body", expected: int = 0, received: int = 0) -> None:
        super().__init__(message)
        self.part = part
        self.expected = expected
        self.received = received


class ChecksumError(FrameError):
    """The body's digest does not match the one in the header.

    ``algorithm`` is the checksum's name (``"blake3"``, ``"sha256"`` or
    ``"md5"``); ``expected`` is the digest the
    header carried (``None`` if it carried none), ``actual`` the body's digest.
    """

    def __init__(
        self, message: str, *, algorithm: str = "sha256", expected: str | None = None, actual: str = ""
    ) -> None:
        super().__init__(message)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual


# --------------------------------------------------------------------------- command server


class CommandError(subprocess.CalledProcessError):
    """A remote command exited with a non-zero status (``run(..., check=True)``).

    The same attributes as :class:`subprocess.CalledProcessError`: ``returncode``
    (negative: killed by that signal), ``cmd``, ``output``/``stdout`` and
    ``stderr``; ``result`` is the whole :class:`rframe.CommandResult`.

    >>> err = CommandError(3, "exit 3", b"", b"oops\\n")
    >>> str(err)
    "Command 'exit 3' returned non-zero exit status 3."
    >>> isinstance(err, subprocess.CalledProcessError)
    True
    """

    def __init__(
        self,
        returncode: int,
        cmd: str | Sequence[str],
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
        *,
        result: CommandResult | None = None,
    ) -> None:
        super().__init__(returncode, cmd, output, stderr)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.returncode, self.cmd, self.output, self.stderr), self.__dict__))


class CommandTimeout(subprocess.TimeoutExpired, TimeoutError):
    """A remote command ran past its time limit; the server killed its process group.

    Catch it as :class:`subprocess.TimeoutExpired` or as the builtin
    :class:`TimeoutError`. Like ``TimeoutExpired`` it carries ``cmd``,
    ``timeout`` and the output produced before the kill: ``output``/``stdout``
    and ``stderr``. The connection it came through stays usable.

    >>> err = CommandTimeout("sleep 9", 0.5, output=b"started\\n", stderr=b"")
    >>> str(err)
    "Command 'sleep 9' timed out after 0.5 seconds"
    >>> isinstance(err, TimeoutError), err.stdout
    (True, b'started\\n')
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Self:
        # OSError.__new__ would read (cmd, timeout) as (errno, strerror).
        return TimeoutError.__new__(cls)

    def __init__(
        self,
        cmd: str | Sequence[str],
        timeout: float,
        output: bytes | str | None = None,
        stderr: bytes | str | None = None,
        *,
        result: CommandResult | None = None,
    ) -> None:
        subprocess.TimeoutExpired.__init__(self, cmd, timeout, output, stderr)
        self.args = (cmd, timeout)
        self.errno = _errno.ETIMEDOUT
        self.strerror = str(self)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), (self.cmd, self.timeout, self.output, self.stderr), self.__dict__))


class AuthenticationError(ConnectionError):
    """The token handshake failed: the server refused our proof (wrong or
    missing token), or the server could not prove that it holds the token.

    The connection is closed. ``code`` is ``"auth"``, ``message`` says why.
    """

    code = "auth"

    def __init__(self, message: str = "authentication failed") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.message,))


class RemoteError(Exception):
    """The server answered with an error frame (``"op": "error"``).

    ``code`` is the protocol's machine-readable code (``"bad-request"``,
    ``"not-allowed"``, ``"busy"``, ``"too-large"``, ``"timeout"``,
    ``"handler"``, ``"spawn"``, ``"not-found"``, ``"exists"``, ``"checksum"``,
    ``"io"``, ``"tls-required"``, ``"changed"``; see PROTOCOL.md), ``message`` the server's
    explanation, ``header`` the whole error header.

    >>> err = RemoteError("not-allowed", "'rm' is not an allowed program")
    >>> str(err), err.code
    ("'rm' is not an allowed program [not-allowed]", 'not-allowed')
    """

    def __init__(self, code: str, message: str = "", header: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, message)
        self._remember(code, message, header)

    def _remember(self, code: str, message: str, header: Mapping[str, Any] | None) -> None:
        self.code = code
        self.message = message
        self.header = dict(header) if header is not None else {"op": "error", "error": code, "message": message}

    def __str__(self) -> str:
        return f"{self.message} [{self.code}]" if self.message else str(self.code)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message, self.header))


class RemoteFileNotFoundError(RemoteError, FileNotFoundError):
    """The server has no such file or directory (code ``"not-found"``).

    Catch it as the builtin :class:`FileNotFoundError` or as :class:`RemoteError`.
    """

    def __init__(self, code: str = "not-found", message: str = "", header: Mapping[str, Any] | None = None) -> None:
        OSError.__init__(self, _errno.ENOENT, message)
        self._remember(code, message, header)

    __str__ = RemoteError.__str__


class RemoteFileExistsError(RemoteError, FileExistsError):
    """The server already has a file of that name (code ``"exists"``) and
    ``overwrite`` was not given. Catch it as :class:`FileExistsError` too."""

    def __init__(self, code: str = "exists", message: str = "", header: Mapping[str, Any] | None = None) -> None:
        OSError.__init__(self, _errno.EEXIST, message)
        self._remember(code, message, header)

    __str__ = RemoteError.__str__


class SourceChangedError(RemoteError):
    """A resumed transfer was refused (code ``"changed"``): its source is
    not the file whose first bytes were kept (another size or mtime). Nothing
    moved; what was kept is left as it was. Transfer again with
    ``resume=False`` to start over.

    >>> err = SourceChangedError(message="'a.bin': the source changed")
    >>> err.code, isinstance(err, RemoteError)
    ('changed', True)
    """

    def __init__(self, code: str = "changed", message: str = "", header: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, message, header)


class FingerprintMismatch(ssl.SSLCertVerificationError):
    """The server's TLS certificate is not the one pinned (``fingerprint=``,
    or the CLI's known-servers file): it may be another machine in the middle.

    Raised after the TLS handshake and before the first frame, so nothing of
    the token or of any request was sent. ``server`` is where the client
    connected, ``expected`` and ``actual`` the lowercase hex SHA-256 of the
    pinned and the presented certificates.

    >>> err = FingerprintMismatch("h:1", "aa" * 32, "bb" * 32)
    >>> isinstance(err, ssl.SSLCertVerificationError), err.actual[:4]
    (True, 'bbbb')
    """

    #: OpenSSL's X509_V_ERR_CERT_REJECTED: "certificate rejected".
    CERT_REJECTED = 28

    def __init__(self, server: str, expected: str, actual: str, hint: str = "") -> None:
        message = (
            f"the TLS certificate of {server} has fingerprint sha256:{actual}, "
            f"but sha256:{expected} was pinned: someone may be in the middle"
        )
        if hint:
            message += f"; {hint}"
        super().__init__(self.CERT_REJECTED, message)
        self.server = server
        self.expected = expected
        self.actual = actual
        self.hint = hint
        self.verify_code = self.CERT_REJECTED
        self.verify_message = message

    def __str__(self) -> str:
        return self.verify_message

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.server, self.expected, self.actual, self.hint))


#: The error codes raised as a subclass of RemoteError (and of a builtin).
REMOTE_ERRORS: dict[str, type[RemoteError]] = {
    "not-found": RemoteFileNotFoundError,
    "exists": RemoteFileExistsError,
    "changed": SourceChangedError,
}


_E = TypeVar("_E", bound=BaseException)


def _rebuild(cls: type[_E], args: tuple[Any, ...], state: dict[str, Any]) -> _E:
    obj = cls(*args)
    obj.__dict__.update(state)
    return obj
