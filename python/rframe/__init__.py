"""rframe: length-prefixed message framing for sockets, and a command server.

The wire format is the one Python socket courses teach to fix "sticky packets":
a 4-byte ``struct.pack('i', n)`` length, a JSON header that carries
``total_size``, then the body. ``rframe`` reads and writes it byte for byte.

>>> import rframe
>>> data = rframe.pack_frame(b"hello", file_name="a.txt")
>>> data[4:]
b'{"file_name": "a.txt", "total_size": 5}hello'
>>> header, body = rframe.FrameDecoder().feed(data)[0]
>>> header["file_name"], body
('a.txt', b'hello')
"""

from typing import TYPE_CHECKING

from ._client import Client, CommandResult
from ._errors import (
    AuthenticationError,
    ChecksumError,
    CommandError,
    CommandTimeout,
    FingerprintMismatch,
    FrameError,
    FrameTooLarge,
    HeaderError,
    IncompleteFrame,
    RemoteError,
    RemoteFileExistsError,
    RemoteFileNotFoundError,
    SourceChangedError,
)
from ._process import RemoteProcess
from ._rframe import Codec, Frame, FrameDecoder, Server, pack_frame, read_frame, send_frame
from ._tls import new_token

if TYPE_CHECKING:  # for type checkers; at run time, see __getattr__ below
    from ._async import AsyncClient, read_frame_async, send_frame_async
    from ._group import (
        AsyncGroup,
        AsyncGroupProcess,
        Group,
        GroupError,
        GroupProcess,
        GroupResult,
        HostCancelled,
        OutputLine,
    )

# The asyncio client, and the groups built on it, are imported on first use:
# importing asyncio costs every user of rframe (the CLIs included) tens of
# milliseconds.
_ASYNC = frozenset({"AsyncClient", "read_frame_async", "send_frame_async"})
_GROUP = frozenset(
    {
        "Group",
        "AsyncGroup",
        "GroupResult",
        "GroupError",
        "HostCancelled",
        "GroupProcess",
        "AsyncGroupProcess",
        "OutputLine",
    }
)


def __getattr__(name: str) -> object:
    if name in _ASYNC:
        from . import _async

        return getattr(_async, name)
    if name in _GROUP:
        from . import _group

        return getattr(_group, name)
    raise AttributeError(f"module 'rframe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _ASYNC | _GROUP)


__all__ = [
    "Codec",
    "Frame",
    "FrameDecoder",
    "pack_frame",
    "read_frame",
    "send_frame",
    "read_frame_async",
    "send_frame_async",
    "Server",
    "Client",
    "CommandResult",
    "RemoteProcess",
    "AsyncClient",
    "Group",
    "AsyncGroup",
    "GroupResult",
    "GroupError",
    "HostCancelled",
    "GroupProcess",
    "AsyncGroupProcess",
    "OutputLine",
    "FrameError",
    "HeaderError",
    "FrameTooLarge",
    "IncompleteFrame",
    "ChecksumError",
    "CommandError",
    "CommandTimeout",
    "AuthenticationError",
    "FingerprintMismatch",
    "new_token",
    "RemoteError",
    "RemoteFileNotFoundError",
    "RemoteFileExistsError",
    "SourceChangedError",
]
