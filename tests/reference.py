"""Pure-Python reference of the course's struct + json framing.

This is the code from the "sticky packets" course notes (section 15), made
reusable and nothing more: a 4-byte ``struct`` length, a ``json.dumps`` header
that carries ``total_size``, then the body. It is deliberately small so it is
obviously correct; the test suite checks rframe against it byte for byte, and
the benchmark compares rframe's speed with it.

It does no validation beyond what ``struct``/``json`` do themselves: it is the
oracle for valid input, not a model of rframe's error handling.
"""

from __future__ import annotations

import hashlib
import json
import struct

__all__ = ["Codec", "Decoder", "pack_frame", "recv_frame"]


def _as_bytes(body) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8")
    return bytes(body)


class Codec:
    """The wire format: JSON-header (course) or length-only, little or big endian."""

    def __init__(self, *, json_header=True, byteorder="little", checksum=None):
        self.json_header = json_header
        self.fmt = "<i" if byteorder == "little" else ">i"
        self.checksum = checksum

    def header_bytes(self, body=b"", header=None, /, **fields) -> bytes:
        """The JSON header exactly as the course builds it."""
        body = _as_bytes(body)
        d = dict(header or {})
        d.update(fields)
        if self.checksum:
            d[self.checksum] = hashlib.new(self.checksum, body).hexdigest()
        d["total_size"] = len(body)
        return json.dumps(d, allow_nan=False).encode("utf-8")

    def pack(self, body=b"", header=None, /, **fields) -> bytes:
        body = _as_bytes(body)
        if not self.json_header:
            return struct.pack(self.fmt, len(body)) + body
        hb = self.header_bytes(body, header, **fields)
        return struct.pack(self.fmt, len(hb)) + hb + body

    def decoder(self) -> Decoder:
        return Decoder(self)


def pack_frame(body=b"", header=None, /, **fields) -> bytes:
    """The course's server side: ``struct.pack('<i', len(hb)) + hb + body``."""
    return Codec().pack(body, header, **fields)


class Decoder:
    """Incremental decoder: ``feed(chunk)`` returns the complete (header, body) pairs."""

    def __init__(self, codec: Codec | None = None):
        self.codec = codec or Codec()
        self.buf = bytearray()

    def feed(self, data) -> list:
        self.buf += data
        frames = []
        while len(self.buf) >= 4:
            (n,) = struct.unpack(self.codec.fmt, self.buf[:4])
            if not self.codec.json_header:
                if len(self.buf) < 4 + n:
                    break
                frames.append(({}, bytes(self.buf[4 : 4 + n])))
                del self.buf[: 4 + n]
                continue
            if len(self.buf) < 4 + n:
                break
            header = json.loads(self.buf[4 : 4 + n].decode("utf-8"))
            end = 4 + n + header["total_size"]
            if len(self.buf) < end:
                break
            frames.append((header, bytes(self.buf[4 + n : end])))
            del self.buf[:end]
        return frames


def _recv_exactly(sock, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(min(n - len(data), 1 << 20))
        if not chunk:
            raise EOFError("stream ended")
        data += chunk
    return bytes(data)


def recv_frame(sock, codec: Codec | None = None):
    """The course's client side, for one frame: returns (header, body)."""
    codec = codec or Codec()
    (n,) = struct.unpack(codec.fmt, _recv_exactly(sock, 4))
    if not codec.json_header:
        return {}, _recv_exactly(sock, n)
    header = json.loads(_recv_exactly(sock, n).decode("utf-8"))
    return header, _recv_exactly(sock, header["total_size"])
