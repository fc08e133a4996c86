"""The Rust client session (``_rframe.ClientSession``) against a real server.

The session has no I/O: these tests are its driver. They move its bytes over
a real socket to a real ``rframe.Server`` on loopback, and do the disk work
and hashing of transfers themselves, so what the unit tests in
``src/protocol/client`` check byte by byte is proven against the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl

import pytest

import rframe
from conftest import HANG_BOUND
from rframe._protocol import run_request
from rframe._rframe import ClientSession
from rframe._tls import pinning_context
from server_helpers import running

TOKEN = b"t" * 40


class Driver:
    """The smallest blocking driver: a socket, a session, events by id."""

    def __init__(self, sock: socket.socket, session: ClientSession) -> None:
        self.sock = sock
        self.session = session
        self.events: list[tuple] = []

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def pump(self) -> None:
        """Reads once and records the events (answering the session's ``send``)."""
        data = self.sock.recv(1 << 16)
        if data:
            new = self.session.feed(data)
        else:
            self.session.receive_eof()
            new = []
            while (event := self.session.next_event()) is not None:
                new.append(event)
        for event in new:
            if event[0] == "send":
                self.send(event[1])
            else:
                self.events.append(event)
        if not data and not new:
            raise AssertionError("the server closed the connection with nothing left to say")

    def next_for(self, id_: int) -> tuple:
        """The next event about request ``id_`` (or about the connection)."""
        while True:
            for i, event in enumerate(self.events):
                if event[0] == "closed" or (len(event) > 1 and event[1] == id_):
                    return self.events.pop(i)
            self.pump()


@pytest.fixture
def root(tmp_path):
    (tmp_path / "root").mkdir()
    return tmp_path / "root"


@pytest.fixture
def server(root):
    with running(rframe.Server(port=0, token=TOKEN, root=root)) as s:
        yield s


def connect(server, *, tls: bool = False) -> Driver:
    sock = socket.create_connection(server.address, timeout=HANG_BOUND)
    binding = None
    if tls:
        sock = pinning_context().wrap_socket(sock)
        binding = hashlib.sha256(sock.getpeercert(binary_form=True)).digest()
    return Driver(sock, ClientSession(token=TOKEN, binding=binding))


def login(d: Driver) -> None:
    id_, hello = d.session.login()
    d.send(hello)
    assert d.next_for(id_) == ("logged-in", id_)
    assert d.session.logged_in


def test_login_and_run_a_command(server):
    d = connect(server)
    with d.sock:
        login(d)
        header, body, _ = run_request(["sh", "-c", "echo hi; echo oops >&2; exit 3"])
        id_, data = d.session.run(header, body)
        d.send(data)
        kind, got, frame = d.next_for(id_)
        assert (kind, got) == ("reply", id_)
        assert frame.header["op"] == "result" and frame.header["returncode"] == 3
        assert frame.body == b"hi\noops\n" and frame.header["stdout_size"] == 3


def test_pipelined_requests_come_back_in_order(server):
    d = connect(server)
    with d.sock:
        login(d)
        ids = []
        for word in ("one", "two", "three"):
            id_, data = d.session.run(*run_request(["echo", word])[:2])
            ids.append(id_)
            d.send(data)
        assert [d.next_for(i)[2].body for i in ids] == [b"one\n", b"two\n", b"three\n"]


def test_login_over_tls_binds_the_proofs_to_the_certificate(root, tmp_path):
    with running(rframe.Server(port=0, tls=True, tls_dir=tmp_path / "tls", token=TOKEN, root=root)) as s:
        d = connect(s, tls=True)
        with d.sock:
            login(d)
            id_, data = d.session.run(*run_request("echo bound")[:2])
            d.send(data)
            assert d.next_for(id_)[2].body == b"bound\n"
        # Plaintext to the same server: its challenge is bound to nothing, and
        # a session that believes it is on TLS refuses it before any proof.
        sock = socket.create_connection(s.address, timeout=HANG_BOUND)
        d = Driver(sock, ClientSession(token=TOKEN, binding=b"\x01" * 32))
        with d.sock:
            id_, hello = d.session.login()
            d.send(hello)
            kind, _got, message = d.next_for(id_)
            assert kind == "login-failed" and "no proof was sent" in message
            assert d.next_for(id_)[0] == "closed"


def test_a_wrong_token_fails_the_login(server):
    sock = socket.create_connection(server.address, timeout=HANG_BOUND)
    d = Driver(sock, ClientSession(token=b"wrong" * 8))
    with d.sock:
        id_, hello = d.session.login()
        d.send(hello)
        assert d.next_for(id_)[0] == "login-failed"
        kind, reason, error = d.next_for(id_)
        assert kind == "closed" and reason.startswith("the server refused") and error is None


def test_a_request_before_the_login_is_refused_and_closes(server):
    d = connect(server)
    with d.sock:
        id_, data = d.session.run(*run_request("true")[:2])
        d.send(data)
        kind, got, code, _message, closes, header = d.next_for(id_)
        assert (kind, got, code, closes) == ("remote-error", id_, "auth", True)
        assert header["op"] == "error"
        assert d.next_for(id_)[0] == "closed"
        assert d.session.closed


def test_a_missing_file_is_a_remote_error_and_the_connection_goes_on(server):
    d = connect(server)
    with d.sock:
        login(d)
        id_, data = d.session.get("nope.txt")
        d.send(data)
        kind, got, code, message, closes, _header = d.next_for(id_)
        assert (kind, got, code, closes) == ("remote-error", id_, "not-found", False)
        assert message
        id_, data = d.session.list("")
        d.send(data)
        assert d.next_for(id_)[0] == "reply"


def test_upload_then_download_with_the_driver_hashing(server, root, tmp_path):
    payload = os.urandom(300_000) + b"end"
    d = connect(server)
    with d.sock:
        login(d)
        # Upload: the session says when and how much; the test reads and hashes.
        id_, data = d.session.put("up.bin", len(payload), overwrite=False)
        d.send(data)
        kind, got, chunk, offset, prefix_digest = d.next_for(id_)
        assert kind == "upload-ready" and chunk > 0 and (offset, prefix_digest) == (0, None)
        digest = hashlib.sha256()
        for start in range(0, len(payload), chunk):
            piece = payload[start : start + chunk]
            digest.update(piece)
            d.send(d.session.put_data(piece))
        d.send(d.session.put_end(digest.hexdigest()))
        kind, got, name, size, checksum, sent_digest, header = d.next_for(id_)
        assert (kind, name, size, checksum, sent_digest) == (
            "transfer-end",
            "up.bin",
            len(payload),
            "sha256",
            digest.hexdigest(),
        )
        assert header["op"] == "stored"
        assert (root / "up.bin").read_bytes() == payload

        # Download: chunks to a local file, hashed here, checked against the end.
        id_, data = d.session.get("up.bin")
        d.send(data)
        mtime_ns = os.stat(root / "up.bin").st_mtime_ns  # (a resumed get's identity)
        assert d.next_for(id_) == ("download-started", id_, len(payload), 0, mtime_ns)
        got_hash = hashlib.sha256()
        with open(tmp_path / "down.bin", "wb") as f:
            while True:
                event = d.next_for(id_)
                if event[0] != "file-chunk":
                    break
                f.write(event[2])
                got_hash.update(event[2])
        kind, got, name, size, checksum, peer_digest, header = event
        assert (got, name, header["op"]) == (id_, "up.bin", "end")
        assert (kind, size, checksum) == ("transfer-end", len(payload), "sha256")
        assert peer_digest == got_hash.hexdigest() == digest.hexdigest()
        assert (tmp_path / "down.bin").read_bytes() == payload

        # The listing.
        id_, data = d.session.list("")
        d.send(data)
        kind, _got, frame = d.next_for(id_)
        assert frame.header["op"] == "listing"
        assert [e["name"] for e in json.loads(frame.body)] == ["up.bin"]

        # An existing name without overwrite: refused at once, still in step.
        id_, data = d.session.put("up.bin", 1)
        d.send(data)
        assert d.next_for(id_)[2] == "exists"
        assert not d.session.uploading


def test_a_cancelled_download_closes_and_a_cancelled_request_drops_its_reply(server, root):
    (root / "big.bin").write_bytes(b"x" * 3_000_000)
    d = connect(server)
    with d.sock:
        login(d)
        first, data = d.session.request(b"", {"op": "list", "name": ""})
        d.send(data)
        assert d.session.cancel(first) is None
        second, data = d.session.list("")
        d.send(data)
        kind, got, _frame = d.next_for(second)
        assert (kind, got) == ("reply", second), "the first reply was dropped"
        id_, data = d.session.get("big.bin")
        d.send(data)
        assert d.next_for(id_)[0] == "download-started"
        reason = d.session.cancel(id_)
        assert reason and "cancelled" in reason
        assert d.session.closed == reason
        assert d.session.feed(d.sock.recv(1 << 16)) == []
        with pytest.raises(ConnectionAbortedError):
            d.session.list("")


def test_a_session_that_believes_it_is_on_plaintext_refuses_a_tls_bound_challenge(root, tmp_path):
    # The other direction of the binding check: a session without a binding
    # is sent a challenge bound to TLS, and refuses it before any proof.
    with running(rframe.Server(port=0, tls=True, tls_dir=tmp_path / "tls", token=TOKEN, root=root)) as s:
        sock = pinning_context().wrap_socket(socket.create_connection(s.address, timeout=HANG_BOUND))
        d = Driver(sock, ClientSession(token=TOKEN))
        with d.sock:
            id_, hello = d.session.login()
            d.send(hello)
            kind, _got, message = d.next_for(id_)
            assert kind == "login-failed" and "binds its handshake to 'tls-server-end-point'" in message
        assert isinstance(sock, ssl.SSLSocket)


def test_read_event_reads_whole_frames_from_the_socket_and_hands_the_body_over():
    """The blocking driver's helper: frames read from the socket into the
    session (the body object itself is the event's), within the socket's
    timeout, a cancelled request's reply skipped."""
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(HANG_BOUND)
        session = ClientSession()
        dropped, _ = session.request(b"one")
        kept, _ = session.request(b"two")
        assert session.cancel(dropped) is None
        body = os.urandom(50_000)  # within the socket pair's buffer: sent before it is read
        b.sendall(rframe.pack_frame(b"first", n=1) + rframe.pack_frame(body, n=2))
        event = session.read_event(a)
        assert event[:2] == ("reply", kept) and event[2].header == {"n": 2, "total_size": len(body)}
        assert event[2].body == body
        session.get("f")
        b.sendall(rframe.pack_frame(op="file", size=3) + rframe.pack_frame(b"abc", op="data"))
        assert session.read_event(a)[0] == "download-started"
        assert session.read_event(a)[2] == b"abc"
        a.settimeout(0.2)
        with pytest.raises(TimeoutError):
            session.read_event(a)
        b.close()
        a.settimeout(HANG_BOUND)
        with pytest.raises(EOFError):
            session.read_event(a)


def test_send_data_sends_an_upload_chunk_as_its_data_frame():
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(HANG_BOUND)
        session = ClientSession()
        session.put("f", 5)
        session.feed(rframe.pack_frame(op="ready", chunk_size=4))
        session.send_data(a, memoryview(bytearray(b"abcd")))
        session.send_data(a, b"e")
        assert rframe.read_frame(b) == ({"op": "data", "total_size": 4}, b"abcd")
        assert rframe.read_frame(b).body == b"e"
        with pytest.raises(ValueError, match="more than the 5 announced"):
            session.send_data(a, b"x")


def test_read_event_puts_output_of_the_wanted_stream_straight_into_a_buffer():
    """A live command's reader: output of its stream that fits goes into its
    buffer (the count comes back); other output, or too much, comes back as
    the event; a buffer that cannot be written is refused before anything is
    read, so no output is lost."""
    a, b = socket.socketpair()
    with a, b:
        a.settimeout(HANG_BOUND)
        session = ClientSession()
        id_, _ = session.start({"op": "start", "cmd": "x"})
        b.sendall(rframe.pack_frame(op="started"))
        assert session.read_event(a) == ("started", id_)
        frames = [(1, b"hello\n"), (2, b"oops\n"), (1, b"x" * 100), (1, b""), (1, b"other\n"), (1, b"end\n")]
        for fd, data in frames:
            b.sendall(rframe.pack_frame(data, op="output", fd=fd))
        into = bytearray(64)
        assert session.read_event(a, into=into, want=(id_, 1)) == 6 and into[:6] == b"hello\n"
        assert session.read_event(a, into=into, want=(id_, 1)) == ("output", id_, 2, b"oops\n")
        assert session.read_event(a, into=into, want=(id_, 1)) == ("output", id_, 1, b"x" * 100)
        # Empty output is an event, never a count of 0 (which reads as the end).
        assert session.read_event(a, into=into, want=(id_, 1)) == ("output", id_, 1, b"")
        assert session.read_event(a, into=into, want=(id_ + 1, 1)) == ("output", id_, 1, b"other\n")
        for bad in [b"read-only", memoryview(bytearray(16))[::2]]:
            with pytest.raises(TypeError, match="writable, C-contiguous"):
                session.read_event(a, into=bad, want=(id_, 1))
        with pytest.raises(ValueError, match="go together"):
            session.read_event(a, into=into)
        view = memoryview(bytearray(8))
        assert session.read_event(a, into=view, want=(id_, 1)) == 4 and view[:4] == b"end\n"
