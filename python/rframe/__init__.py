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

from ._errors import (
    AuthenticationError,
    ChecksumError,
    CommandError,
    CommandTimeout,
    FrameError,
    FrameTooLarge,
    HeaderError,
    IncompleteFrame,
    RemoteError,
)
from ._rframe import Codec, Frame, FrameDecoder, Server, pack_frame, read_frame, send_frame
from ._client import Client, CommandResult

__all__ = [
    "Codec",
    "Frame",
    "FrameDecoder",
    "pack_frame",
    "read_frame",
    "send_frame",
    "Server",
    "Client",
    "CommandResult",
    "FrameError",
    "HeaderError",
    "FrameTooLarge",
    "IncompleteFrame",
    "ChecksumError",
    "CommandError",
    "CommandTimeout",
    "AuthenticationError",
    "RemoteError",
]
