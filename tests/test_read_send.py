"""Blocking I/O: read_frame / Codec.read from sockets and file-likes, send_frame / Codec.send."""

from __future__ import annotations

import hashlib
import io
import json
import random
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import platforms
import reference as ref
import rframe
from conftest import HANG_BOUND
from rframe import Codec, IncompleteFrame

MiB = 1 << 20


def recv_all(sock):
    """Everything the peer sends until it shuts down its side."""
    sock.settimeout(HANG_BOUND)
    data = bytearray()
    while chunk := sock.recv(MiB):
        data += chunk
    return bytes(data)


def send_in_pieces(sock, data, seed=0):
    """Send data in random small pieces with short sleeps, as a slow peer does."""
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.randint(1, 9)
        sock.sendall(data[i : i + n])
        i += n
        time.sleep(rng.choice([0, 0, 0.001, 0.003]))


def expected_pair(body, header=None, **fields):
    return json.loads(ref.Codec().header_bytes(body, header, **fields)), body


# ---------------------------------------------------------------- sockets


def test_read_frame_from_socket_sent_in_pieces(socket_pair, start_thread):
    a, b = socket_pair
    a.settimeout(HANG_BOUND)
    items = [({"n": i, "name": "é" * i}, bytes(range(i * 7 % 256)) * 3) for i in range(8)]
    stream = b"".join(ref.pack_frame(body, h) for h, body in items)
    sender = start_thread(send_in_pieces, b, stream)
    got = [rframe.read_frame(a) for _ in items]
    sender.result()
    assert got == [expected_pair(body, h) for h, body in items]


def test_request_reply_over_loopback_tcp(listener, start_thread):
    # The course's exchange: the client sends commands, the server answers each
    # with a framed reply, over a real TCP connection on 127.0.0.1.
    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(HANG_BOUND)
            while True:
                try:
                    header, body = rframe.read_frame(conn)
                except EOFError:
                    return
                rframe.send_frame(
                    conn, body.upper() * 1000, {"file_name": "text1", "md5": 54645898788}, seq=header["seq"]
                )

    server = start_thread(serve)
    with socket.create_connection(listener.getsockname(), timeout=HANG_BOUND) as client:
        replies = []
        for seq, command in enumerate([b"dir", b"ipconfig", b""]):
            client.sendall(ref.pack_frame(command, {"seq": seq}))
            replies.append(ref.recv_frame(client))
        client.shutdown(socket.SHUT_WR)
        server.result()
    assert replies == [
        ({"file_name": "text1", "md5": 54645898788, "seq": seq, "total_size": 1000 * len(cmd)}, cmd.upper() * 1000)
        for seq, cmd in enumerate([b"dir", b"ipconfig", b""])
    ]


def test_read_frame_several_frames_glued_in_one_sendall(socket_pair, hang_guard):
    a, b = socket_pair
    bodies = [b"one", b"", b"three" * 100]
    b.sendall(b"".join(ref.pack_frame(body, {"i": i}) for i, body in enumerate(bodies)))
    b.shutdown(socket.SHUT_WR)
    with hang_guard(b):
        got = [rframe.read_frame(a) for _ in bodies]
        with pytest.raises(EOFError):
            rframe.read_frame(a)
    assert got == [expected_pair(body, {"i": i}) for i, body in enumerate(bodies)]


def test_read_frame_leaves_bytes_after_the_frame_in_the_socket(socket_pair, hang_guard):
    a, b = socket_pair
    b.sendall(ref.pack_frame(b"frame") + b"TRAILER")
    b.shutdown(socket.SHUT_WR)
    with hang_guard(b):
        assert rframe.read_frame(a) == expected_pair(b"frame")
        assert recv_all(a) == b"TRAILER"


def test_read_frame_10_mib_body(socket_pair, start_thread):
    a, b = socket_pair
    a.settimeout(HANG_BOUND)
    body = random.Random(1).randbytes(10 * MiB)
    sender = start_thread(b.sendall, ref.pack_frame(body, {"file_name": "big.bin"}))
    frame = rframe.read_frame(a)
    sender.result()
    assert frame.header == {"file_name": "big.bin", "total_size": 10 * MiB}
    assert len(frame.body) == len(body) and frame.body == body


@pytest.mark.parametrize(
    "config",
    [{"byteorder": "big"}, {"json_header": False}, {"checksum": "sha256"}],
    ids=["big", "length-only", "sha256"],
)
def test_codec_read_from_socket_uses_the_codec(socket_pair, hang_guard, config):
    a, b = socket_pair
    data = ref.Codec(**config).pack(b"payload", None if config.get("json_header") is False else {"a": 1})
    b.sendall(data)
    with hang_guard(b):
        frame = Codec(**config).read(a)
    ((header, body),) = ref.Decoder(ref.Codec(**config)).feed(data)
    assert frame == (header, body)
    assert body == b"payload"


def test_read_frame_with_checksum_codec_raises_on_altered_body(socket_pair, hang_guard):
    a, b = socket_pair
    data = bytearray(ref.Codec(checksum="md5").pack(b"payload"))
    data[-1] ^= 1
    b.sendall(bytes(data))
    with hang_guard(b), pytest.raises(rframe.ChecksumError):
        Codec(checksum="md5").read(a)


def test_read_frame_clean_eof_between_frames_is_plain_eof_error(socket_pair, hang_guard):
    a, b = socket_pair
    b.sendall(ref.pack_frame(b"only"))
    b.shutdown(socket.SHUT_WR)
    with hang_guard(b):
        assert rframe.read_frame(a).body == b"only"
        with pytest.raises(EOFError) as ei:
            rframe.read_frame(a)
    assert not isinstance(ei.value, IncompleteFrame)


def test_read_frame_eof_before_any_byte_is_plain_eof_error(socket_pair, hang_guard):
    a, b = socket_pair
    b.shutdown(socket.SHUT_WR)
    with hang_guard(b), pytest.raises(EOFError) as ei:
        rframe.read_frame(a)
    assert not isinstance(ei.value, IncompleteFrame)


_HB = ref.Codec().header_bytes(b"0123456789", {"k": "v"})
TRUNCATIONS = {
    "length": (2, "length", 4, 2),
    "header": (4 + 5, "header", len(_HB), 5),
    "body": (4 + len(_HB) + 3, "body", 10, 3),
}


@pytest.mark.parametrize("cut,part,expected,received", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_read_frame_eof_mid_frame_raises_incomplete_frame(socket_pair, hang_guard, cut, part, expected, received):
    a, b = socket_pair
    b.sendall(ref.pack_frame(b"0123456789", {"k": "v"})[:cut])
    b.shutdown(socket.SHUT_WR)
    with hang_guard(b), pytest.raises(IncompleteFrame) as ei:
        rframe.read_frame(a)
    assert (ei.value.part, ei.value.expected, ei.value.received) == (part, expected, received)


def test_read_frame_timeout_when_nothing_is_sent(socket_pair, hang_guard):
    a, b = socket_pair
    a.settimeout(0.3)
    with hang_guard(b, 5), pytest.raises(TimeoutError):
        rframe.read_frame(a)


def test_read_frame_timeout_covers_the_whole_frame(socket_pair, start_thread):
    # Each byte arrives well within the timeout, the whole frame does not:
    # like sendall, the timeout bounds the whole call, not each recv.
    a, b = socket_pair
    data = ref.pack_frame(b"x" * 40)
    stop = threading.Event()

    def trickle():
        for i in range(len(data)):
            if stop.wait(0.05):
                return
            try:
                b.send(data[i : i + 1])
            except OSError:
                return

    a.settimeout(0.5)
    sender = start_thread(trickle)
    try:
        with pytest.raises(TimeoutError):
            rframe.read_frame(a)
    finally:
        stop.set()
        sender.result()


@pytest.mark.parametrize("make_nonblocking", ["settimeout0", "setblocking_false"])
def test_read_frame_non_blocking_socket_raises_value_error(socket_pair, hang_guard, make_nonblocking):
    a, b = socket_pair
    if make_nonblocking == "settimeout0":
        a.settimeout(0)
    else:
        a.setblocking(False)
    with hang_guard(b, 5), pytest.raises(ValueError):
        rframe.read_frame(a)


def test_read_frame_releases_the_gil_while_waiting(socket_pair, start_thread):
    # The peer only sends after a pure-Python thread has counted to a large
    # number; if read_frame held the GIL while blocked, the count could not
    # finish and the read would time out.
    a, b = socket_pair
    a.settimeout(HANG_BOUND)
    data = ref.pack_frame(b"after counting")

    def count_then_send():
        n = 0
        while n < 3_000_000:
            n += 1
        b.sendall(data)
        return n

    counter = start_thread(count_then_send)
    frame = rframe.read_frame(a)
    assert counter.result() == 3_000_000
    assert frame.body == b"after counting"


CTRL_C_SCRIPT = textwrap.dedent(
    """
    import socket, sys
    import rframe
    a, b = socket.socketpair()
    if sys.argv[1] != "none":
        a.settimeout(float(sys.argv[1]))
    print("ready", flush=True)
    rframe.read_frame(a)
    print("returned", flush=True)
    """
)


@platforms.posix
@pytest.mark.parametrize("timeout", ["none", "60"])
def test_read_frame_is_interrupted_by_ctrl_c(timeout):
    proc = subprocess.Popen(
        [sys.executable, "-c", CTRL_C_SCRIPT, timeout],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        time.sleep(0.3)  # let it block inside read_frame
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("read_frame did not return within 5 s of SIGINT (hang)")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "KeyboardInterrupt" in err, err
    assert "returned" not in out
    assert proc.returncode != 0


# ---------------------------------------------------------------- file-likes


class ShortReader:
    """Only .read(n), returning at most `step` bytes per call."""

    def __init__(self, data, step=3):
        self._data, self._pos, self._step = data, 0, step
        self.calls = 0

    def read(self, n):
        self.calls += 1
        chunk = self._data[self._pos : self._pos + min(n, self._step)]
        self._pos += len(chunk)
        return chunk


def test_read_frame_from_bytesio_reads_frames_in_turn():
    stream = ref.pack_frame(b"one", {"a": 1}) + ref.pack_frame(b"two") + b"rest"
    source = io.BytesIO(stream)
    assert rframe.read_frame(source) == expected_pair(b"one", {"a": 1})
    assert rframe.read_frame(source) == expected_pair(b"two")
    assert source.read() == b"rest"


def test_read_frame_from_bytesio_at_end_is_plain_eof_error():
    source = io.BytesIO(ref.pack_frame(b"x"))
    rframe.read_frame(source)
    with pytest.raises(EOFError) as ei:
        rframe.read_frame(source)
    assert not isinstance(ei.value, IncompleteFrame)


@pytest.mark.parametrize("buffering", [-1, 0], ids=["buffered", "raw"])
def test_read_frame_from_file_opened_rb(tmp_path, buffering):
    path = tmp_path / "frames.bin"
    bodies = [b"first", b"x" * 100_000, b""]
    path.write_bytes(b"".join(ref.pack_frame(body, {"i": i}) for i, body in enumerate(bodies)))
    with open(path, "rb", buffering=buffering) as f:
        got = [rframe.read_frame(f) for _ in bodies]
        with pytest.raises(EOFError):
            rframe.read_frame(f)
    assert got == [expected_pair(body, {"i": i}) for i, body in enumerate(bodies)]


def test_read_frame_from_object_with_only_short_reads():
    stream = ref.pack_frame(b"short reads " * 10, {"k": "v"}) + ref.pack_frame(b"again")
    source = ShortReader(stream)
    assert rframe.read_frame(source) == expected_pair(b"short reads " * 10, {"k": "v"})
    assert rframe.read_frame(source) == expected_pair(b"again")
    assert source.calls > len(stream) // 3 - 2  # it really was fed in short pieces


@pytest.mark.parametrize("cut,part,expected,received", TRUNCATIONS.values(), ids=TRUNCATIONS.keys())
def test_read_frame_from_file_like_truncated_raises_incomplete_frame(cut, part, expected, received):
    source = ShortReader(ref.pack_frame(b"0123456789", {"k": "v"})[:cut], step=2)
    with pytest.raises(IncompleteFrame) as ei:
        rframe.read_frame(source)
    assert (ei.value.part, ei.value.expected, ei.value.received) == (part, expected, received)


def test_read_frame_from_file_like_with_length_only_big_endian_codec():
    codec = Codec(json_header=False, byteorder="big")
    frame = codec.read(io.BytesIO(ref.Codec(json_header=False, byteorder="big").pack(b"abc")))
    assert frame == ({}, b"abc")


def test_module_read_frame_equals_default_codec_read():
    stream = ref.pack_frame(b"abc", {"z": [1, None]}, y=2.5)
    assert rframe.read_frame(io.BytesIO(stream)) == Codec().read(io.BytesIO(stream))
    assert rframe.read_frame(io.BytesIO(stream)) == expected_pair(b"abc", {"z": [1, None]}, y=2.5)


# ---------------------------------------------------------------- send


class SendallOnly:
    def __init__(self):
        self.chunks = []

    def sendall(self, data):
        self.chunks.append(bytes(data))

    def data(self):
        return b"".join(self.chunks)


class WriteOnly:
    def __init__(self):
        self.chunks = []

    def write(self, data):
        self.chunks.append(bytes(data))
        return len(data)

    def data(self):
        return b"".join(self.chunks)


def test_send_frame_bytes_equal_reference_pack(socket_pair, hang_guard):
    a, b = socket_pair
    rframe.send_frame(b, b"hello", {"file_name": "a.txt"}, md5=54645898788)
    b.shutdown(socket.SHUT_WR)
    with hang_guard(b):
        assert recv_all(a) == ref.pack_frame(b"hello", {"file_name": "a.txt"}, md5=54645898788)


@pytest.mark.parametrize(
    "config",
    [{}, {"byteorder": "big"}, {"json_header": False}, {"checksum": "sha256"}],
    ids=["default", "big", "length-only", "sha256"],
)
@pytest.mark.parametrize(
    "body",
    [b"bytes", bytearray(b"bytearray"), memoryview(b"memoryview"), "str é"],
    ids=["bytes", "bytearray", "memoryview", "str"],
)
def test_codec_send_bytes_equal_reference_pack(socket_pair, hang_guard, config, body):
    a, b = socket_pair
    Codec(**config).send(b, body)
    Codec(**config).send(b, body)
    b.shutdown(socket.SHUT_WR)
    with hang_guard(b):
        assert recv_all(a) == ref.Codec(**config).pack(body) * 2


def test_send_frame_32_mib_to_a_slow_reader(socket_pair, start_thread):
    a, b = socket_pair
    body = random.Random(2).randbytes(32 * MiB)
    expected = ref.pack_frame(body, {"file_name": "big"})

    def drain_slowly():
        a.settimeout(HANG_BOUND)
        data = bytearray()
        next_pause = MiB
        while len(data) < len(expected):
            chunk = a.recv(1 << 16)
            if not chunk:
                break
            data += chunk
            if len(data) >= next_pause:
                time.sleep(0.01)
                next_pause += MiB
        return bytes(data)

    reader = start_thread(drain_slowly)
    b.settimeout(HANG_BOUND)
    rframe.send_frame(b, body, {"file_name": "big"})
    received = reader.result()
    assert len(received) == len(expected)
    assert hashlib.sha256(received).digest() == hashlib.sha256(expected).digest()


def test_send_frame_then_read_frame_round_trip(socket_pair, hang_guard):
    a, b = socket_pair
    rframe.send_frame(b, "你好".encode("gbk"), encoding="gbk")
    with hang_guard(b):
        frame = rframe.read_frame(a)
    assert frame.text == "你好"


def test_send_frame_to_object_with_only_sendall():
    sink = SendallOnly()
    rframe.send_frame(sink, b"abc", {"a": 1}, b=2)
    assert sink.data() == ref.pack_frame(b"abc", {"a": 1}, b=2)


def test_send_frame_to_file_like_with_only_write():
    sink = WriteOnly()
    Codec(byteorder="big").send(sink, b"abc", {"a": 1})
    assert sink.data() == ref.Codec(byteorder="big").pack(b"abc", {"a": 1})


def test_send_frame_to_bytesio():
    sink = io.BytesIO()
    rframe.send_frame(sink, b"one")
    rframe.send_frame(sink, b"two", {"k": "v"})
    assert sink.getvalue() == ref.pack_frame(b"one") + ref.pack_frame(b"two", {"k": "v"})


def test_send_refuses_too_large_body_and_sends_nothing():
    sink = SendallOnly()
    with pytest.raises(rframe.FrameTooLarge):
        Codec(max_body=10).send(sink, b"x" * 11)
    assert sink.data() == b""


def test_send_refuses_invalid_header_and_sends_nothing():
    sink = SendallOnly()
    with pytest.raises(ValueError):
        rframe.send_frame(sink, b"x", {"v": float("nan")})
    with pytest.raises(TypeError):
        rframe.send_frame(sink, b"x", {"v": {1}})
    assert sink.data() == b""


def test_module_send_frame_equals_default_codec_send():
    one, two = SendallOnly(), SendallOnly()
    rframe.send_frame(one, b"abc", {"z": 1}, y=[2])
    Codec().send(two, b"abc", {"z": 1}, y=[2])
    assert one.data() == two.data() == ref.pack_frame(b"abc", {"z": 1}, y=[2])


def test_send_frame_hands_an_object_sink_the_body_itself():
    """An object with sendall (an ssl.SSLSocket, say) gets the head packed and
    the body object as it was given: a large body is not copied first."""

    class Sink:
        def __init__(self):
            self.sent = []

        def sendall(self, data):
            self.sent.append(data)

    sink = Sink()
    body = memoryview(bytearray(b"x" * 100_000))
    rframe.send_frame(sink, body, {"k": "v"})
    assert sink.sent[1] is body
    assert b"".join(bytes(d) for d in sink.sent) == rframe.pack_frame(bytes(body), {"k": "v"})
    sink = Sink()
    rframe.send_frame(sink, "text body")  # a str is sent as its UTF-8 bytes
    assert b"".join(sink.sent) == rframe.pack_frame(b"text body")
