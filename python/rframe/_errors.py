"""Exceptions raised by rframe.

They live in Python (not in the compiled module) so that one class can have two
builtin bases, as ``IncompleteFrame`` does, and so that each has a docstring
that ``help()`` shows. The Rust bindings import this module to raise them.
"""

from __future__ import annotations

__all__ = [
    "FrameError",
    "HeaderError",
    "FrameTooLarge",
    "IncompleteFrame",
    "ChecksumError",
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

    def __init__(self, message: str, *, part: str = "body", size: int = 0, limit: int = 0):
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

    def __init__(self, message: str, *, part: str = "body", expected: int = 0, received: int = 0):
        super().__init__(message)
        self.part = part
        self.expected = expected
        self.received = received


class ChecksumError(FrameError):
    """The body's digest does not match the one in the header.

    ``algorithm`` is ``"md5"`` or ``"sha256"``; ``expected`` is the digest the
    header carried (``None`` if it carried none), ``actual`` the body's digest.
    """

    def __init__(self, message: str, *, algorithm: str = "sha256", expected: str | None = None, actual: str = ""):
        super().__init__(message)
        self.algorithm = algorithm
        self.expected = expected
        self.actual = actual
