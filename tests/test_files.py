"""File transfer: ``upload``/``download``/``list_files`` on both clients, the
server's ``root`` sandbox, cut and corrupt transfers, and the CLI's put/get/ls.

Every transfer is checked against ``hashlib`` and the bytes on disk; every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import doctest
import errno
import hashlib
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import platforms
import rframe
import rframe._files
from conftest import HANG_BOUND
from rframe.client import ProgressBar
from server_helpers import ENV, ROOT, CliServer, make_server, raise_open_files, running, wait_until

CHUNK = rframe._files.CHUNK


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_of(data: bytes, checksum: str = "blake3") -> str:
    """``data``'s hex digest, from the reference implementations (the
    ``blake3`` package's, ``hashlib``'s)."""
    import blake3

    return blake3.blake3(data).hexdigest() if checksum == "blake3" else hashlib.new(checksum, data).hexdigest()


def verified(name: str, data: bytes, checksum: str = "blake3") -> dict:
    """What an upload or download of ``data`` returns, verified with
    ``checksum``: blake3 unless another is asked for, between rframe peers."""
    digest = digest_of(data, checksum)
    return {"name": name, "size": len(data), "checksum": checksum, "digest": digest, checksum: digest}


def parts(directory) -> list[str]:
    """Temporary files of transfers in progress (or left behind) in ``directory``."""
    return [n for n in os.listdir(directory) if n.endswith(".rframe-part")]


class AsyncFacade:
    """An AsyncClient driven from a test like a blocking Client: one event
    loop for the client's life, each call run to completion on it."""

    def __init__(self, address, **kwargs):
        self._runner = asyncio.Runner()
        kwargs.setdefault("timeout", HANG_BOUND)
        if isinstance(address, str):
            connect = rframe.AsyncClient.connect(unix_path=address, **kwargs)
        else:
            connect = rframe.AsyncClient.connect(*address, **kwargs)
        self._client = self._runner.run(connect)

    def __getattr__(self, name):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            return self._runner.run(asyncio.wait_for(method(*args, **kwargs), HANG_BOUND * 3))

        return call

    @property
    def closed(self):
        return self._client.closed

    def close(self):
        if self._runner is not None:
            self._runner.run(self._client.close())
            self._runner.close()
            self._runner = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(params=["Client", "AsyncClient", "Client-tls", "AsyncClient-tls"])
def connect(request, monkeypatch):
    """connect(server, **kwargs): a client of the parametrized kind. The -tls
    kinds make every server the test starts serve TLS (rframe.Server and
    make_server take tls=True), and connect over it, pinned."""
    opened = []
    if request.param.endswith("-tls"):
        plain_server = rframe.Server
        monkeypatch.setattr(rframe, "Server", lambda *args, **kwargs: plain_server(*args, tls=True, **kwargs))

    def make(server, **kwargs):
        address = server.address
        fingerprint = getattr(server, "tls_fingerprint", None)  # (a fake server has none)
        if fingerprint is not None:
            kwargs.setdefault("tls", True)
            kwargs.setdefault("fingerprint", fingerprint)
        if request.param.startswith("Client"):
            kwargs.setdefault("timeout", HANG_BOUND)
            if isinstance(address, str):
                c = rframe.Client(unix_path=address, **kwargs)
            else:
                c = rframe.Client(*address, **kwargs)
        else:
            c = AsyncFacade(address, **kwargs)
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.close()


@pytest.fixture
def root(tmp_path):
    path = tmp_path / "root"
    path.mkdir()
    return path


@pytest.fixture
def here(tmp_path):
    path = tmp_path / "here"
    path.mkdir()
    return path


@pytest.fixture
def server(root):
    with running(rframe.Server(port=0, root=root)) as s:
        yield s


# --------------------------------------------------------------------------- round trips


SIZES = [0, 1, 1000, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip(connect, server, root, here, size):
    data = os.urandom(size)
    (here / "src.bin").write_bytes(data)
    calls = []
    with connect(server) as c:
        stored = c.upload(here / "src.bin", "dir.bin" if size else "empty", progress=lambda d, t: calls.append((d, t)))
        name = "dir.bin" if size else "empty"
        assert stored == verified(name, data)
        assert (root / name).read_bytes() == data
        saved = c.download(name, here / "back.bin")
    assert saved == verified(str(here / "back.bin"), data)
    assert (here / "back.bin").read_bytes() == data
    # progress: from (0, size) to (size, size), one call per chunk, never backwards
    assert calls[0] == (0, size) and calls[-1] == (size, size)
    assert len(calls) == 1 + -(-size // CHUNK)
    assert all(a[0] <= b[0] and a[1] == size for a, b in zip(calls, calls[1:]))
    assert parts(root) == [] and parts(here) == []


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_md5_and_unix_sockets(connect, root, here, tmp_path, kind):
    data = b"the course's md5 field, for real" * 1000
    (here / "a").write_bytes(data)
    with running(make_server(kind, tmp_path, root=root)) as s, connect(s) as c:
        stored = c.upload(here / "a", checksum="md5")
        assert stored == verified("a", data, "md5")
        saved = c.download("a", here / "b", checksum="md5")
        assert saved["md5"] == hashlib.md5(data).hexdigest()
        assert (here / "b").read_bytes() == data
        with pytest.raises(ValueError, match="checksum"):
            c.upload(here / "a", checksum="crc32")


def test_download_into_a_directory_and_by_default_name(connect, server, root, here, monkeypatch):
    (root / "sub").mkdir()
    (root / "sub" / "f.txt").write_bytes(b"x")
    with connect(server) as c:
        assert c.download("sub/f.txt", here)["name"] == str(here / "f.txt")
        monkeypatch.chdir(here / "..")
        assert c.download("sub/f.txt")["name"] == "f.txt"
    assert (here / "f.txt").read_bytes() == (here.parent / "f.txt").read_bytes() == b"x"


def test_small_max_body_makes_small_chunks(connect, root, here):
    data = os.urandom(10_000)
    (here / "a").write_bytes(data)
    calls = []
    with running(rframe.Server(port=0, root=root, codec=rframe.Codec(max_body=1000))) as s, connect(s) as c:
        c.upload(here / "a", progress=lambda d, t: calls.append(d))
    assert calls == list(range(0, 10_001, 1000))
    assert (root / "a").read_bytes() == data


def test_list_files(connect, server, root):
    (root / "b.txt").write_bytes(b"12345")
    (root / "a").mkdir()
    (root / "a" / "inner").write_bytes(b"")
    (root / ".a.1234.rframe-part").write_bytes(b"an upload in progress")
    with connect(server) as c:
        top = c.list_files()
        inner = c.list_files("a")
        with pytest.raises(FileNotFoundError):
            c.list_files("nope")
    assert [(e["name"], e["type"], e["size"]) for e in top] == [("a", "dir", top[0]["size"]), ("b.txt", "file", 5)]
    assert [e["name"] for e in inner] == ["inner"]
    assert abs(top[1]["mtime"] - os.stat(root / "b.txt").st_mtime) < 1


# --------------------------------------------------------------------------- rules


def test_overwrite_is_explicit_both_ways(connect, server, root, here):
    (here / "a").write_bytes(b"new")
    (root / "a").write_bytes(b"old")
    with connect(server) as c:
        with pytest.raises(FileExistsError) as info:
            c.upload(here / "a")
        assert isinstance(info.value, rframe.RemoteError) and info.value.code == "exists"
        assert (root / "a").read_bytes() == b"old"
        assert c.upload(here / "a", overwrite=True)["size"] == 3
        assert (root / "a").read_bytes() == b"new"
        (here / "b").write_bytes(b"local")
        with pytest.raises(FileExistsError):
            c.download("a", here / "b")
        assert (here / "b").read_bytes() == b"local"
        c.download("a", here / "b", overwrite=True)
        assert (here / "b").read_bytes() == b"new"
        assert c.run("echo usable").stdout == b"usable\n"
    assert parts(root) == [] and parts(here) == []


def test_missing_files(connect, server, here):
    with connect(server) as c:
        with pytest.raises(FileNotFoundError) as info:
            c.download("nope", here / "x")
        assert isinstance(info.value, rframe.RemoteError) and info.value.code == "not-found"
        with pytest.raises(FileNotFoundError):
            c.upload(here / "missing-locally")
        assert c.list_files() == []
    assert not (here / "x").exists() and parts(here) == []


def test_names_cannot_leave_the_root(connect, server, root, here, tmp_path):
    secret = tmp_path / "secret"
    secret.write_bytes(b"do not serve")
    (root / "abs_link").symlink_to(secret)
    (root / "rel_link").symlink_to("../secret")
    (root / "dir_link").symlink_to("..")
    (root / "inside").symlink_to(".")  # stays inside: allowed
    (here / "payload").write_bytes(b"payload")
    before = sorted(os.listdir(tmp_path))
    with connect(server) as c:
        for name in ["../secret", "/etc/passwd", "a/../../secret", "", ".", "abs_link", "rel_link", "dir_link/secret"]:
            with pytest.raises(rframe.RemoteError) as info:
                c.download(name, here / "got")
            assert info.value.code in ("bad-request", "not-allowed"), name
        for name in ["../evil", "/tmp/evil", "dir_link/evil", "abs_link/x"]:
            with pytest.raises(rframe.RemoteError) as info:
                c.upload(here / "payload", name, overwrite=True)
            assert info.value.code in ("bad-request", "not-allowed", "not-found"), name
        # A link's own name is a name in the root: overwriting replaces the
        # link itself, never the file it points to.
        with pytest.raises(FileExistsError):
            c.upload(here / "payload", "abs_link")
        c.upload(here / "payload", "abs_link", overwrite=True)
        assert not (root / "abs_link").is_symlink()
        for name in ["..", "dir_link", "/"]:
            with pytest.raises(rframe.RemoteError):
                c.list_files(name)
        assert c.upload(here / "payload", "inside/ok")["size"] == 7
    assert sorted(os.listdir(tmp_path)) == before
    assert secret.read_bytes() == b"do not serve"
    assert not (here / "got").exists()
    assert (root / "ok").read_bytes() == (root / "abs_link").read_bytes() == b"payload"


def test_servers_without_a_root_serve_no_files(connect, here):
    (here / "a").write_bytes(b"x")
    with running(rframe.Server(port=0)) as s, connect(s) as c:
        with pytest.raises(rframe.RemoteError, match="--root") as info:
            c.upload(here / "a")
        assert info.value.code == "not-allowed"


def test_root_must_be_a_directory_and_not_a_handler_server(tmp_path):
    with pytest.raises(FileNotFoundError):
        rframe.Server(port=0, root=tmp_path / "missing")
    with pytest.raises(ValueError, match="handler"):
        rframe.Server(port=0, root=tmp_path, handler=lambda f: b"")


def test_files_need_the_token(root, here):
    (here / "a").write_bytes(b"x")
    with running(rframe.Server(port=0, root=root, token="s3cret")) as s:
        with socket.create_connection(s.address, timeout=HANG_BOUND) as sock:
            rframe.send_frame(sock, header={"op": "list"})
            assert rframe.read_frame(sock).header["error"] == "auth"
        with rframe.Client(*s.address, token="s3cret", timeout=HANG_BOUND) as c:
            assert c.upload(here / "a")["size"] == 1


# --------------------------------------------------------------------------- cut and corrupt transfers


class Stop(Exception):
    pass


class StopRemote(rframe.RemoteError):
    """What a progress callback that talks to another server may raise: an
    error of the kind an error frame raises, but not from this transfer."""

    def __init__(self, done):
        super().__init__("io", f"the other server failed at {done}", {})


def stop_after(n_calls: int, stop=Stop):
    calls = []

    def progress(done, total):
        calls.append(done)
        if len(calls) > n_calls:
            raise stop(done)

    return progress


def test_a_cut_upload_keeps_the_old_file(connect, server, root, here):
    (root / "f").write_bytes(b"old")
    (here / "f").write_bytes(os.urandom(5 * CHUNK))
    with connect(server) as c:
        with pytest.raises(Stop):
            c.upload(here / "f", overwrite=True, progress=stop_after(2))
        assert c.closed  # mid-transfer: the connection was given up
    assert wait_until(lambda: parts(root) == [])
    assert (root / "f").read_bytes() == b"old"


@pytest.mark.parametrize("stop", [Stop, StopRemote])
def test_a_cut_download_leaves_nothing(connect, server, root, here, stop):
    (root / "f").write_bytes(os.urandom(5 * CHUNK))
    (here / "f").write_bytes(b"old")
    with connect(server) as c:
        with pytest.raises(stop):
            c.download("f", here / "f", overwrite=True, progress=stop_after(2, stop))
        assert c.closed  # data was still coming: the connection was given up
    assert (here / "f").read_bytes() == b"old"
    assert parts(here) == []


def transfer_killing_the_server(direction, root, here, resume=False):
    """Moves ``f`` to ``g`` (up from ``here`` or down from ``root``) through a
    server process SIGKILLed at the first progress call; the client must raise."""
    server = CliServer("--root", root)
    killed = []

    def kill(done, total):
        if done and not killed:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(HANG_BOUND)
            killed.append(done)

    try:
        with server.client() as c, pytest.raises((ConnectionError, EOFError, rframe.RemoteError)):
            if direction == "upload":
                c.upload(here / "f", "g", progress=kill, resume=resume)
            else:
                c.download("f", here / "g", progress=kill, resume=resume)
    finally:
        server.stop()
    assert killed


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_server_killed_mid_transfer(direction, root, here):
    """The client raises a connection error, never hangs, never keeps half a file."""
    (root / "f").write_bytes(os.urandom(64 * CHUNK))
    (here / "f").write_bytes(os.urandom(64 * CHUNK))
    transfer_killing_the_server(direction, root, here)
    assert not (here / "g").exists() and parts(here) == []
    assert not (root / "g").exists()


def test_a_restarted_server_removes_what_a_killed_upload_left(root, here):
    """A SIGKILLed server cannot remove its upload's temporary file; the next
    server on that root does, once the file is old enough to be certainly dead,
    and touches nothing else."""
    (here / "f").write_bytes(os.urandom(64 * CHUNK))
    transfer_killing_the_server("upload", root, here)
    [left] = parts(root)
    two_days_ago = time.time() - 2 * 86400
    os.utime(root / left, (two_days_ago, two_days_ago))
    # Another server's upload still writing, and ordinary old files.
    (root / ".h.0123456789ab.rframe-part").write_bytes(b"partial")
    for name in ("keep.txt", ".keep.rframe-part"):
        (root / name).write_bytes(b"k")
        os.utime(root / name, (two_days_ago, two_days_ago))
    with running(rframe.Server(port=0, root=root)):
        assert wait_until(lambda: not (root / left).exists(), HANG_BOUND)
    assert sorted(parts(root)) == [".h.0123456789ab.rframe-part", ".keep.rframe-part"]
    assert (root / "keep.txt").read_bytes() == b"k"


def raw_put(sock, name, body_chunks, digest, size=None):
    size = sum(map(len, body_chunks)) if size is None else size
    rframe.send_frame(sock, header={"op": "put", "name": name, "size": size})
    assert rframe.read_frame(sock).header["op"] == "ready"
    for chunk in body_chunks:
        rframe.send_frame(sock, chunk, {"op": "data"})
    rframe.send_frame(sock, header={"op": "end", "checksum": "sha256", "digest": digest})
    return rframe.read_frame(sock)


def test_a_corrupted_upload_is_not_stored(server, root):
    with socket.create_connection(server.address, timeout=HANG_BOUND) as sock:
        reply = raw_put(sock, "f", [b"hello ", b"world"], sha256(b"hello there"))
        assert reply.header["op"] == "error" and reply.header["error"] == "checksum"
        assert "not stored" in reply.header["message"]
        # in step: the same connection goes on
        reply = raw_put(sock, "f", [b"hello ", b"world"], sha256(b"hello world"))
        assert reply.header == {
            "checksum": "sha256",
            "digest": sha256(b"hello world"),
            "name": "f",
            "op": "stored",
            "size": 11,
            "total_size": 0,
        }
    assert (root / "f").read_bytes() == b"hello world"
    assert parts(root) == []


def test_upload_protocol_violations(server, root):
    with socket.create_connection(server.address, timeout=HANG_BOUND) as sock:
        reply = raw_put(sock, "short", [b"abc"], sha256(b"abc"), size=4)
        assert reply.header["error"] == "bad-request" and "announced 4 bytes and sent 3" in reply.header["message"]
        rframe.send_frame(sock, b"x", {"op": "data"})
        assert "outside a put" in rframe.read_frame(sock).header["message"]
        rframe.send_frame(sock, header={"op": "put", "name": "long", "size": 2})
        assert rframe.read_frame(sock).header["op"] == "ready"
        rframe.send_frame(sock, b"abc", {"op": "data"})
        reply = rframe.read_frame(sock)
        assert reply.header["error"] == "bad-request" and "more data" in reply.header["message"]
        assert sock.recv(1) == b""  # the stream lost its place: closed
    assert wait_until(lambda: parts(root) == [])
    assert os.listdir(root) == []


def one_shot_server(script):
    """A server for one connection, which ``script(conn)`` serves; then it
    waits until the client leaves."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(HANG_BOUND)

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(HANG_BOUND)
            script(conn)
            try:
                rframe.read_frame(conn)  # until the client leaves
            except (EOFError, OSError):
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return listener, t


def fake_server(frames_for_get):
    """A one-shot server that answers a get with ``frames_for_get``."""

    def script(conn):
        rframe.read_frame(conn)
        for header, body in frames_for_get:
            rframe.send_frame(conn, body, header)

    return one_shot_server(script)


@pytest.mark.parametrize(
    "frames, error",
    [
        (
            [
                ({"op": "file", "size": 5}, b""),
                ({"op": "data"}, b"hellp"),
                ({"op": "end", "size": 5, "checksum": "sha256", "digest": sha256(b"hello")}, b""),
            ],
            rframe.ChecksumError,
        ),
        (
            [
                ({"op": "file", "size": 5}, b""),
                ({"op": "data"}, b"hel"),
                ({"op": "end", "size": 5, "checksum": "sha256", "digest": sha256(b"hel")}, b""),
            ],
            rframe.RemoteError,
        ),
        ([({"op": "file", "size": 2}, b""), ({"op": "data"}, b"hel")], rframe.RemoteError),
        (
            [({"op": "file", "size": 5}, b""), ({"op": "error", "error": "io", "message": "disk gone"}, b"")],
            rframe.RemoteError,
        ),
    ],
    ids=["corrupt-chunk", "short", "too-much", "error-instead-of-end"],
)
def test_a_bad_download_is_not_saved(connect, here, frames, error):
    listener, t = fake_server(frames)
    with listener:

        class Address:
            address = listener.getsockname()

        c = connect(Address)
        with pytest.raises(error):
            c.download("f", here / "f", checksum="sha256")  # this fake server knows no features
        c.close()
        t.join(HANG_BOUND)
    assert not (here / "f").exists() and parts(here) == []


def old_server(requests: list[dict], replies: int):
    """A server from before ``features``: it answers that request as such a
    server does (``bad-request``), then ``replies`` gets with the file
    ``hello``, verified with what each get asked for; every request header is
    kept in ``requests``."""

    def script(conn):
        while len([r for r in requests if r["op"] == "get"]) < replies:
            header, _ = rframe.read_frame(conn)
            requests.append(header)
            if header["op"] != "get":
                message = f"unknown op {header['op']!r}: this server knows 'run', 'put', 'get' and 'list'"
                rframe.send_frame(conn, header={"op": "error", "error": "bad-request", "message": message})
                continue
            digest = hashlib.new(header["checksum"], b"hello").hexdigest()
            rframe.send_frame(conn, header={"op": "file", "size": 5})
            rframe.send_frame(conn, b"hello", {"op": "data"})
            rframe.send_frame(conn, header={"op": "end", "size": 5, "checksum": header["checksum"], "digest": digest})

    return one_shot_server(script)


def test_a_server_older_than_features_is_sent_sha256_and_asked_once(connect, here):
    requests: list[dict] = []
    listener, t = old_server(requests, replies=2)
    with listener:

        class Address:
            address = listener.getsockname()

        with connect(Address) as c:
            assert c.download("f", here / "a") == verified(str(here / "a"), b"hello", "sha256")
            assert c.download("f", here / "b") == verified(str(here / "b"), b"hello", "sha256")
        t.join(HANG_BOUND)
    assert [(r["op"], r.get("checksum")) for r in requests] == [
        ("features", None),
        ("get", "sha256"),
        ("get", "sha256"),
    ]


def test_the_server_offers_blake3_first_and_a_client_picks_it(connect, server, here):
    (here / "a").write_bytes(b"hello")
    with connect(server) as c:
        assert c.upload(here / "a")["checksum"] == "blake3"
        assert c.download("a", here / "b")["checksum"] == "blake3"
        # asked for by name, each algorithm is used as ever
        assert c.upload(here / "a", "c", checksum="sha256") == verified("c", b"hello", "sha256")
    with socket.create_connection(server.address, timeout=HANG_BOUND) as sock:
        rframe.send_frame(sock, header={"op": "features"})
        header, body = rframe.read_frame(sock)
    assert header == {"op": "features", "checksums": ["blake3", "sha256", "md5"], "total_size": 0} and body == b""


# --------------------------------------------------------------------------- edge cases


def test_a_checksum_codec_does_not_clash_with_the_file_digest(connect, root, here):
    """The codec's per-frame digest and the file's travel in different fields."""
    data = os.urandom(3 * CHUNK + 5)
    (here / "a").write_bytes(data)
    for algorithm in ("sha256", "md5"):
        codec = rframe.Codec(checksum=algorithm)
        with running(rframe.Server(port=0, root=root, codec=codec)) as s, connect(s, codec=codec) as c:
            for file_checksum in ("sha256", "md5"):
                c.upload(here / "a", f"{algorithm}-{file_checksum}", checksum=file_checksum)
                saved = c.download(f"{algorithm}-{file_checksum}", here, checksum=file_checksum)
                assert saved[file_checksum] == hashlib.new(file_checksum, data).hexdigest()
                assert (here / f"{algorithm}-{file_checksum}").read_bytes() == data


def test_small_max_body_both_ways(connect, root, here):
    data = os.urandom(300_000)
    (here / "a").write_bytes(data)
    codec = rframe.Codec(max_body=65536)
    with running(rframe.Server(port=0, root=root, codec=codec)) as s, connect(s, codec=codec) as c:
        c.upload(here / "a")
        c.download("a", here / "b")
        for i in range(300):  # a listing bigger than one body (~80 KB): cut short
            (root / f"{'x' * 200}-{i}").write_bytes(b"")
        listed = c.list_files()
    assert (here / "b").read_bytes() == data
    assert 100 < len(listed) < 301


def test_fifos_are_refused_without_waiting(connect, server, root, here):
    os.mkfifo(root / "pipe")
    os.mkfifo(here / "local-pipe")
    with connect(server) as c:
        with pytest.raises(rframe.RemoteError, match="not a regular file"):
            c.download("pipe", here / "x")
        with pytest.raises(ValueError, match="not a regular file"):
            c.upload(here / "local-pipe")
        assert {e["name"]: e["type"] for e in c.list_files()} == {"pipe": "other"}
        assert c.run("echo usable").stdout == b"usable\n"


def test_names_the_server_keeps_for_itself_or_for_directories(connect, server, root, here):
    (here / "a").write_bytes(b"x")
    (root / "d").mkdir()
    (root / "f").write_bytes(b"f")
    with connect(server) as c:
        for name in [".a.0123.rframe-part", "newdir/", "d/"]:
            with pytest.raises(rframe.RemoteError) as info:
                c.upload(here / "a", name)
            assert info.value.code == "bad-request", name
        with pytest.raises(rframe.RemoteError, match="not a directory ending"):
            c.download("f/", here / "g")
    assert sorted(os.listdir(root)) == ["d", "f"]


def test_long_multibyte_names(connect, server, root, here):
    name = "\N{GRINNING FACE}" * 60  # 240 bytes: a valid name, whose temporary name must still fit
    (here / "a").write_bytes(b"smile")
    with connect(server) as c:
        c.upload(here / "a", name)
        c.download(name, here / name)
    assert (root / name).read_bytes() == (here / name).read_bytes() == b"smile"


def test_data_frames_over_the_chunk_size_are_refused(root):
    codec = rframe.Codec(max_body=4096)
    with running(rframe.Server(port=0, root=root, codec=codec)) as s:
        with socket.create_connection(s.address, timeout=HANG_BOUND) as sock:
            rframe.send_frame(sock, header={"op": "put", "name": "f", "size": 8000})
            assert rframe.read_frame(sock).header == {"op": "ready", "chunk_size": 4096, "total_size": 0}
            rframe.send_frame(sock, b"x" * 4000, {"op": "data"})
            rframe.send_frame(sock, b"x" * 4000, {"op": "data"})
            rframe.send_frame(sock, header={"op": "end", "checksum": "sha256", "digest": sha256(b"x" * 8000)})
            assert rframe.read_frame(sock).header["op"] == "stored"
    # The server takes 16 MiB bodies, but a transfer's chunks only up to the chunk_size it said.
    with running(rframe.Server(port=0, root=root)) as s:
        with socket.create_connection(s.address, timeout=HANG_BOUND) as sock:
            rframe.send_frame(sock, header={"op": "put", "name": "g", "size": 3 * CHUNK})
            assert rframe.read_frame(sock).header["chunk_size"] == CHUNK
            rframe.send_frame(sock, b"x" * (2 * CHUNK), {"op": "data"})
            reply = rframe.read_frame(sock)
            assert reply.header["error"] == "too-large" and "chunk_size" in reply.header["message"]
            assert sock.recv(1) == b""
    assert wait_until(lambda: parts(root) == [])
    assert sorted(os.listdir(root)) == ["f"]


def test_stalled_transfers_hold_no_threads(root, here):
    """More stalled uploads and downloads than tokio's 512 blocking threads:
    other clients' file requests are still served."""
    raise_open_files(2 * 600 + 200)
    (root / "big").write_bytes(os.urandom(8 * CHUNK))
    (here / "a").write_bytes(b"still served")
    stalled = []
    with running(rframe.Server(port=0, root=root)) as s:
        try:
            for i in range(300):
                sock = socket.create_connection(s.address, timeout=HANG_BOUND)
                stalled.append(sock)
                rframe.send_frame(sock, header={"op": "put", "name": f"p{i}", "size": 10})
                assert rframe.read_frame(sock).header["op"] == "ready"  # and then nothing
            for _ in range(300):
                sock = socket.create_connection(s.address, timeout=HANG_BOUND)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                stalled.append(sock)
                rframe.send_frame(sock, header={"op": "get", "name": "big"})  # and never read
            with rframe.Client(*s.address, timeout=HANG_BOUND) as c:
                assert c.upload(here / "a")["size"] == 12
                assert "a" in [e["name"] for e in c.list_files()]
        finally:
            for sock in stalled:
                sock.close()
    assert wait_until(lambda: parts(root) == [])


# --------------------------------------------------------------------------- the async client


def test_async_calls_wait_for_a_transfer(server, root, here):
    data = os.urandom(4 * CHUNK)
    (here / "a").write_bytes(data)

    async def main():
        async with rframe.AsyncClient(*server.address, timeout=HANG_BOUND) as c:
            order = []

            async def echo():
                r = await c.run("echo hi")
                order.append("run")
                return r.stdout

            async def up():
                r = await c.upload(here / "a", progress=lambda d, t: d == t and order.append("uploaded"))
                return r["size"]

            return await asyncio.gather(up(), echo()), order

    (size, out), order = asyncio.run(main())
    assert (size, out) == (len(data), b"hi\n")
    assert order == ["uploaded", "run"]
    assert (root / "a").read_bytes() == data


def test_async_call_waiting_for_buffer_room_still_waits_for_a_transfer(server, root, here):
    """A call that waited for the write buffer to drain re-checks, before it
    writes, that no transfer began meanwhile (its frame would land inside it)."""
    data = os.urandom(2 * CHUNK)
    (here / "a").write_bytes(data)

    async def main():
        async with rframe.AsyncClient(*server.address, timeout=HANG_BOUND) as c:
            conn = c._conn
            conn.pause_writing()
            run = asyncio.ensure_future(c.run("echo x"))
            await asyncio.sleep(0)  # the run waits for buffer room
            upload = asyncio.ensure_future(c.upload(here / "a"))
            await asyncio.sleep(0)
            conn.resume_writing()
            return await asyncio.gather(run, upload)

    ran, stored = asyncio.run(main())
    assert ran.stdout == b"x\n" and stored["size"] == len(data)
    assert (root / "a").read_bytes() == data


def test_async_recv_waits_for_a_download(server, root, here):
    (root / "f").write_bytes(os.urandom(20 * CHUNK))

    async def main():
        async with rframe.AsyncClient(*server.address, timeout=HANG_BOUND) as c:
            download = asyncio.ensure_future(c.download("f", here / "f"))
            await asyncio.sleep(0.01)
            await c.send(header={"op": "list"})
            listing = await c.recv()  # not a chunk of the download
            return listing.header["op"], await download

    op, saved = asyncio.run(main())
    assert op == "listing" and saved["size"] == 20 * CHUNK
    assert (here / "f").read_bytes() == (root / "f").read_bytes()


def test_async_cancelled_upload_closes_and_stores_nothing(server, root, here):
    (here / "a").write_bytes(os.urandom(16 * CHUNK))

    async def main():
        async with rframe.AsyncClient(*server.address, timeout=HANG_BOUND) as c:
            started = asyncio.Event()
            task = asyncio.ensure_future(c.upload(here / "a", progress=lambda d, t: d and started.set()))
            await asyncio.wait_for(started.wait(), HANG_BOUND)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            with pytest.raises(ConnectionAbortedError, match="upload"):
                await c.run("echo no")

    asyncio.run(main())
    assert wait_until(lambda: parts(root) == [])
    assert os.listdir(root) == []


# --------------------------------------------------------------------------- big files, flat memory


def peak_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


@platforms.linux
def test_a_sparse_file_over_2_gib_moves_in_flat_memory(root, here):
    """2 GiB + 3 bytes: past every 32-bit size; both processes stay small."""
    size = (2 << 30) + 3
    with open(here / "big", "wb") as f:
        f.seek(size - 3)
        f.write(b"end")
    server = CliServer("--root", root)
    code = f"""
import rframe, resource, sys
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with rframe.Client("{server.host}", {server.port}, timeout=60) as c:
    up = c.upload(sys.argv[1], "big")
    down = c.download("big", sys.argv[2])
print(up["digest"] == down["digest"], up["size"], down["size"])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""
    try:
        r = subprocess.run(
            [sys.executable, "-c", code, str(here / "big"), str(here / "back")],
            capture_output=True,
            text=True,
            timeout=300,
            cwd=ROOT,
            env=ENV,
        )
        server_peak = peak_rss_kib(server.proc.pid)
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.wait()
    assert r.returncode == 0, r.stderr
    same, up_size, down_size, client_growth = r.stdout.split()
    assert (same, int(up_size), int(down_size)) == ("True", size, size)
    assert os.path.getsize(root / "big") == os.path.getsize(here / "back") == size
    with open(here / "back", "rb") as f:
        f.seek(size - 3)
        assert f.read() == b"end"
    # Flat: a few chunks in flight, not the file.
    assert int(client_growth) < 64 * 1024, f"client grew {client_growth} KiB"
    assert server_peak < 128 * 1024, f"server peaked at {server_peak} KiB"


# --------------------------------------------------------------------------- the CLI


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "rframe.client", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=HANG_BOUND * 3,
        cwd=cwd,
        env=ENV,
    )


def test_cli_put_get_ls(root, here):
    (here / "a.txt").write_bytes(b"hello")
    server = CliServer("--root", root)
    where = ("--port", server.port)
    try:
        r = cli(*where, "put", "a.txt", "docs/a.txt", cwd=here)  # docs/ is made
        assert r.returncode == 0, r.stderr
        assert r.stdout == f"stored docs/a.txt: 5 bytes, blake3 {digest_of(b'hello')}\n"
        assert r.stderr == ""  # no progress bar off a terminal
        r = cli("put", "a.txt", "docs/a.txt", *where, cwd=here)
        assert r.returncode == 1 and "--overwrite" in r.stderr
        assert cli("put", "a.txt", "docs/a.txt", "--overwrite", "--checksum", "md5", *where, cwd=here).returncode == 0
        r = cli("get", "docs/a.txt", *where, cwd=here / "..")
        assert r.returncode == 0 and r.stdout.startswith("saved a.txt: 5 bytes"), r.stderr
        assert (here.parent / "a.txt").read_bytes() == b"hello"
        r = cli("ls", *where, cwd=here)
        assert r.returncode == 0 and r.stdout.splitlines()[0].split()[0] == "d" and r.stdout.rstrip().endswith("docs/")
        r = cli("ls", "docs", *where, cwd=here)
        assert r.stdout.split()[1] == "5" and r.stdout.rstrip().endswith("a.txt")
        r = cli("get", "nope", *where, cwd=here)
        assert r.returncode == 1 and "nope" in r.stderr and not (here / "nope").exists()
        for bad in (("put", "/"), ("put", "/dev/null"), ("get", "/")):  # not files: refused, no traceback
            r = cli(*bad, *where, cwd=here)
            assert r.returncode == 1 and r.stderr.startswith(f"rframe: {bad[0]} failed: "), r.stderr
            assert "Traceback" not in r.stderr
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_progress_bar_draws_rate_and_time_left():
    out = io.StringIO()
    bar = ProgressBar("f.bin", out)
    bar(0, 4 << 20)
    bar(4 << 20, 4 << 20)
    text = out.getvalue()
    assert text.startswith("\rf.bin  [") and text.endswith("\n")
    first, last = text.split("\r")[1:]
    assert "0 B/4.0 MiB" in first and "done" not in first
    assert "4.0 MiB/4.0 MiB" in last and "/s" in last and last.rstrip().endswith("done")
    assert last.count("#") == ProgressBar.WIDTH and "#" not in first


def test_doctests():
    result = doctest.testmod(rframe._files, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_async_calls_behind_a_transfer_keep_their_timeout(server):
    async def main():
        async with rframe.AsyncClient(*server.address, timeout=0.2) as c:
            hold = c._hold()
            await hold.__aenter__()  # as a transfer does, for as long as it runs
            with pytest.raises(TimeoutError):
                await c.run("echo waiting")
            await hold.__aexit__(None, None, None)
            return (await c.run("echo after")).stdout

    assert asyncio.run(main()) == b"after\n"


def test_bench_files_quick():
    """bench/files.py --quick runs every transfer and prints its table."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "files.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=ENV,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in r.stdout.splitlines()
        if line.startswith("| upload") or line.startswith("| download")
    ]
    # rframe (blake3, sha256) against rsync, then against sendfile, then TLS
    # against plaintext, then trees against rsync
    assert [(cells[0], len(cells)) for cells in rows] == [("upload", 10), ("download", 10)] + [
        ("upload", 7),
        ("download", 7),
    ] * 3, r.stdout

    def cpu_total(cell, ticks=False):
        """CPU seconds per GiB, client + server = total; the rsync daemon's
        are counted in clock ticks, which a 16 MiB transfer may not reach."""
        client, server, whole = map(float, re.fullmatch(r"(\S+) \+ (\S+) = (\S+)", cell).groups())
        assert client > 0 and (server >= 0 if ticks else server > 0) and abs(client + server - whole) < 0.011, cell
        return whole

    for cells in rows[:2]:
        assert all(float(cells[i].replace(",", "")) > 0 for i in (1, 2)), cells
        rframe_cpu = cpu_total(cells[6])
        cpu_total(cells[7])
        if shutil.which("rsync"):
            assert float(cells[3].replace(",", "")) > 0 and re.fullmatch(r"\d+\.\d\dx", cells[4]), cells
            assert cells[5].startswith(">= 1.0x: ") and cells[9].startswith("blake3 <= rsync: "), cells
            rsync_cpu = cpu_total(cells[8], ticks=True)
            if abs(rframe_cpu - rsync_cpu) > 0.011:  # the verdict is made before rounding
                assert cells[9].endswith(": met") == (rframe_cpu < rsync_cpu), cells
        else:
            assert "rsync not installed" in cells[3] and cells[5] == cells[9] == "(skipped)", cells
    assert ("- rsync: not installed here" in r.stdout) != bool(shutil.which("rsync")), r.stdout
    assert re.search(r"^- work directory: .* on \S+", r.stdout, re.M), r.stdout
    assert "- load average (1 / 5 / 15 min): " in r.stdout, r.stdout
    for cells in rows[2:4]:
        assert all(float(cells[i].replace(",", "")) > 0 for i in (1, 2, 4)), cells
        assert cells[3].endswith("x") and cells[5].endswith("x"), cells
    for cells in rows[6:]:  # files/s, and CPU seconds (rsync's only where it is installed)
        assert float(cells[1].replace(",", "")) > 0 and float(cells[5]) > 0, cells
        if shutil.which("rsync"):
            assert float(cells[2].replace(",", "")) > 0 and cells[3].endswith("x"), cells
        else:
            assert "rsync not installed" in cells[2], cells
    assert "# trees: 200 files of 4,096 bytes" in r.stdout
    for cells in rows[4:6]:
        assert all(float(cells[i].replace(",", "")) > 0 for i in (1, 2)), cells
        assert re.fullmatch(r"\d+\.\d\dx", cells[3]) and cells[4].startswith(">= 0.85x"), cells
        for total in cells[5:]:
            cpu_total(total)
    assert "cp" in r.stdout and "peak RSS" in r.stdout


def test_a_download_in_progress_holds_its_temporary_file_locked(here):
    """The lock a server's start-up sweep asks before removing an old temporary file."""
    import fcntl

    target = rframe._files.LocalFile(str(here / "f"), overwrite=False, checksum="sha256")
    try:
        with open(target.temp, "rb") as probe:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        target.discard()
    assert parts(here) == []


# --------------------------------------------------------------------------- trees


def make_tree(top, files=20):
    """A tree with nested and empty directories, modes, small files and one
    over the inline size; returns {relative name: bytes} of its files."""
    contents = {}
    for i in range(files):
        name = f"d{i % 3}/sub{i % 2}/f{i}.txt"
        contents[name] = os.urandom(i * 37)
    contents["big.bin"] = os.urandom(rframe._files.INLINE_MAX + CHUNK + 5)
    contents["run.sh"] = b"#!/bin/sh\necho hi\n"
    for name, data in contents.items():
        path = top / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (top / "run.sh").chmod(0o755)
    (top / "d0" / "sub0" / "f0.txt").chmod(0o600)
    (top / "empty" / "deeper").mkdir(parents=True)
    (top / "private").mkdir()
    (top / "private").chmod(0o700)
    return contents


def tree_of(top):
    """{relative name: (kind, mode, bytes or link target)} beneath ``top``."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top).replace(os.sep, "/")
            st = os.lstat(path)
            if os.path.islink(path):
                found[rel] = ("link", None, os.readlink(path))
            elif os.path.isdir(path):
                found[rel] = ("dir", st.st_mode & 0o777, None)
            else:
                with open(path, "rb") as f:
                    found[rel] = ("file", st.st_mode & 0o777, f.read())
    return found


def test_a_tree_goes_up_and_down_with_its_directories_and_modes(connect, server, root, here):
    src = here / "src"
    contents = make_tree(src)
    with connect(server) as c:
        sent = c.upload_tree(src, "site")
        assert sent["files"] == len(contents) and sent["skipped"] == 0
        assert sent["bytes"] == sum(map(len, contents.values()))
        assert tree_of(root / "site") == tree_of(src)
        # Again: nothing changed, nothing sent.
        assert c.upload_tree(src, "site")["files"] == 0
        # One file changed (same size), one mode changed: those two go.
        (src / "d1" / "sub1" / "f1.txt").write_bytes(bytes(37))
        (src / "run.sh").chmod(0o700)
        again = c.upload_tree(src, "site")
        assert (again["files"], again["skipped"]) == (2, len(contents) - 2)
        assert tree_of(root / "site") == tree_of(src)
        names = [e["name"] for e in c.list_files("site", recursive=True)]
        assert names == sorted(tree_of(src)) and "empty/deeper" in names
        got = c.download_tree("site", here / "copy")
        assert got["files"] == len(contents)
        assert tree_of(here / "copy") == tree_of(src)
        assert c.download_tree("site", here / "copy")["files"] == 0
        (here / "copy" / "big.bin").write_bytes(b"corrupt")
        assert c.download_tree("site", here / "copy")["files"] == 1
        assert tree_of(here / "copy") == tree_of(src)
        # The whole root, and a tree at the top of it.
        assert c.upload_tree(src / "d0")["files"] > 0
        assert (root / "sub0" / "f0.txt").read_bytes() == contents["d0/sub0/f0.txt"]
        assert c.run("echo usable").stdout == b"usable\n"
    for d in (root, here):
        assert not [p for p in d.rglob("*") if p.name.endswith(".rframe-part")]


def test_trees_of_many_small_files_go_pipelined(connect, server, root, here):
    src = here / "many"
    src.mkdir()
    for i in range(600):
        (src / f"{i // 100:02}").mkdir(exist_ok=True)
        (src / f"{i // 100:02}" / f"{i}").write_bytes(i.to_bytes(4, "little") * 1024)
    with connect(server) as c:
        assert c.upload_tree(src, "many")["files"] == 600
        assert c.download_tree("many", here / "back")["files"] == 600
    assert tree_of(root / "many") == tree_of(src) == tree_of(here / "back")


def test_a_symlink_refuses_a_tree_unless_copied_and_never_leads_out(connect, server, root, here, tmp_path):
    src = here / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_bytes(b"a")
    (src / "d" / "link").symlink_to("a.txt")
    (src / "up").symlink_to("./d")
    with connect(server) as c:
        with pytest.raises(OSError, match="symlinks='copy'") as info:
            c.upload_tree(src, "t")
        assert info.value.errno == errno.ELOOP
        assert os.listdir(root) == []  # nothing was sent
        sent = c.upload_tree(src, "t", symlinks="copy")
        assert sent["links"] == 2
        assert os.readlink(root / "t" / "d" / "link") == "a.txt"
        # A link out of the tree is refused even then, before anything goes,
        # as is one that climbs after a name (through a link, that climbs out).
        for target in ["../../secret", "d/../d"]:
            (src / "out").symlink_to(target)
            with pytest.raises(OSError, match="leads out of the tree"):
                c.upload_tree(src, "t2", symlinks="copy")
            (src / "out").unlink()
            assert not (root / "t2").exists()
        # The server refuses one whoever asks, chained through links too:
        # with q -> ".", q/q/../x would be the root's parent's x.
        c.request(op="symlink", name="t/q", target=".")
        for name, target in [
            ("t/evil", "/etc/passwd"),
            ("t/evil", "../../x"),
            ("t/evil", "d/../../../x"),
            ("t/evil", "q/q/q/../../x"),
            ("t/q/evil", "../x"),
        ]:
            with pytest.raises(rframe.RemoteError) as info:
                c.request(op="symlink", name=name, target=target)
            assert info.value.code == "not-allowed", (name, target, info.value.code)
        assert not (root / "t" / "evil").exists() and sorted(os.listdir(root)) == ["t"]
        os.unlink(root / "t" / "q")
        # Downloads: a server's link refuses the tree by default; an escaping one always.
        with pytest.raises(OSError, match="symlinks='copy'"):
            c.download_tree("t", here / "copy")
        assert not (here / "copy").exists()
        c.download_tree("t", here / "copy", symlinks="copy")
        assert os.readlink(here / "copy" / "d" / "link") == "a.txt"
        (root / "t" / "evil").symlink_to(tmp_path)
        with pytest.raises(OSError, match="leads out of the tree"):
            c.download_tree("t", here / "copy2", symlinks="copy")
        assert not (here / "copy2").exists()


def test_a_tree_download_never_writes_through_a_local_symlink(connect, server, root, here, tmp_path):
    (root / "t" / "a").mkdir(parents=True)
    (root / "t" / "a" / "x").write_bytes(b"payload")
    (root / "t" / "a" / "deeper").mkdir()
    (root / "t" / "a" / "deeper" / "y").write_bytes(b"payload")
    outside = tmp_path / "outside"
    outside.mkdir()
    (here / "dst").mkdir()
    (here / "dst" / "a").symlink_to(outside)
    # A directory out there whose owner may not write it: never opened up.
    (outside / "deeper").mkdir(mode=0o500)
    with connect(server) as c:
        with pytest.raises(PermissionError, match="symlink on the way"):
            c.download_tree("t", here / "dst")
    assert os.listdir(outside) == ["deeper"] and os.listdir(outside / "deeper") == []
    assert (outside / "deeper").stat().st_mode & 0o777 == 0o500  # not even a directory made or changed there


def test_tree_arguments_and_names_are_checked(connect, server, root, here):
    (root / "file").write_bytes(b"f")
    with connect(server) as c:
        with pytest.raises(ValueError, match="symlinks must be"):
            c.upload_tree(here, "x", symlinks="follow")
        with pytest.raises(FileNotFoundError):
            c.upload_tree(here / "nope", "x")
        with pytest.raises(NotADirectoryError):
            c.upload_tree(root / "file", "x")
        with pytest.raises(FileNotFoundError):
            c.download_tree("nope", here / "x")
        with pytest.raises(rframe.RemoteError):
            c.download_tree("file", here / "x")
        (here / "f").write_bytes(b"")
        with pytest.raises(rframe.RemoteError):  # a file where a directory goes
            c.upload_tree(here, "file")
        with pytest.raises(rframe.RemoteError):
            c.list_files("../x", recursive=True)
        assert c.run("echo usable").stdout == b"usable\n"


def test_directories_made_for_an_upload_stay_beneath_the_root(connect, server, root, here, tmp_path):
    (here / "f").write_bytes(b"x")
    (root / "out").symlink_to(tmp_path)
    with connect(server) as c:
        assert c.upload(here / "f", "new/dirs/f")["size"] == 1
        assert (root / "new" / "dirs" / "f").read_bytes() == b"x"
        for name in ["out/made/f", "out/f"]:
            with pytest.raises(rframe.RemoteError) as info:
                c.upload(here / "f", name)
            assert info.value.code == "not-allowed", name
    assert not (tmp_path / "made").exists()


def test_cli_put_get_ls_recursive(root, here):
    src = here / "src"
    contents = make_tree(src, files=5)
    server = CliServer("--root", root)
    where = ("--port", server.port)
    try:
        r = cli(*where, "put", "-r", "src", "www", cwd=here)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith(f"stored src -> www: {len(contents)} files (")
        r = cli(*where, "put", "-r", "src", "www", cwd=here)
        assert f"0 files (0 bytes), {len(contents)} unchanged" in r.stdout
        r = cli(*where, "ls", "-r", "www", cwd=here)
        assert r.returncode == 0 and "d0/sub0/f0.txt" in r.stdout and "empty/deeper/" in r.stdout
        r = cli(*where, "get", "-r", "www", cwd=here)
        assert r.returncode == 0 and r.stdout.startswith("saved www -> www:"), r.stderr
        assert tree_of(here / "www") == tree_of(src)
        (src / "l").symlink_to("run.sh")
        r = cli(*where, "put", "-r", "src", "www", cwd=here)
        assert r.returncode == 1 and "symlinks='copy'" in r.stderr and "Traceback" not in r.stderr
        assert cli(*where, "put", "-r", "--symlinks", "copy", "src", "www", cwd=here).returncode == 0
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


def test_a_tree_over_one_listing_page_goes_whole(root, here):
    """10,000 small files in 101 directories: more entries than one page of a
    listing holds (download_tree reads its listing the same way)."""
    src = here / "src"
    for i in range(10_000):
        d = src / f"d{i // 100:03}"
        if i % 100 == 0:
            d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(i.to_bytes(4, "little") * 4)
    with running(rframe.Server(port=0, root=root)) as server, rframe.Client(*server.address, timeout=HANG_BOUND) as c:
        assert c.upload_tree(src, "big")["files"] == 10_000
        names = [e["name"] for e in c.list_files("big", recursive=True)]
        assert len(names) == len(set(names)) == 10_100
    assert tree_of(root / "big") == tree_of(src)


def test_blake3_digests_match_the_reference_implementation(connect, server, root, here):
    import blake3

    for size in (0, 1, 1024, 1025, CHUNK + 7):
        data = os.urandom(size)
        h = rframe._files.new_hash("blake3")
        h.update(data[: size // 2])
        h.update(data[size // 2 :])
        assert h.hexdigest() == blake3.blake3(data).hexdigest(), size
    data = os.urandom(2 * CHUNK + 99)
    (here / "b.bin").write_bytes(data)
    digest = blake3.blake3(data).hexdigest()
    with connect(server) as c:
        assert c.upload(here / "b.bin", checksum="blake3") == verified("b.bin", data)
        got = c.download("b.bin", here / "back.bin", checksum="blake3")
        assert got["blake3"] == digest and (here / "back.bin").read_bytes() == data
        (here / "t").mkdir()
        (here / "t" / "small").write_bytes(b"abc")
        assert c.upload_tree(here / "t", "t", checksum="blake3")["checksum"] == "blake3"
        listed = c.list_files("t", recursive=True)
        assert [e for e in listed if e["name"] == "small"] and (root / "t" / "small").read_bytes() == b"abc"
        # A digest that does not match is refused as with the others.
        wrong = blake3.blake3(b"abd").hexdigest()
        with pytest.raises(rframe.RemoteError) as info:
            c.request(b"abc", op="put", name="x", size=3, inline=True, checksum="blake3", digest=wrong)
        assert info.value.code == "checksum" and "blake3 mismatch" in info.value.message
    assert not (root / "x").exists()


def test_a_refused_file_of_a_tree_stops_it_with_the_rest_stored(connect, server, root, here):
    src = here / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    (src / "x").write_bytes(b"x")
    (src / "z").write_bytes(b"z")
    (root / "t" / "x").mkdir(parents=True)  # a directory where the tree has a file
    (root / "t" / "x" / "keep").write_bytes(b"keep")
    with connect(server) as c:
        with pytest.raises(rframe.RemoteError) as info:
            c.upload_tree(src, "t")
        assert info.value.code == "bad-request" and "is a directory" in info.value.message
        assert (root / "t" / "a").read_bytes() == b"a" and (root / "t" / "z").read_bytes() == b"z"
        assert (root / "t" / "x" / "keep").read_bytes() == b"keep"
        assert c.run("echo usable").stdout == b"usable\n"


# --------------------------------------------------------------------------- what a tree's client checks


def test_a_listing_that_pages_back_is_refused():
    header = {"recursive": True, "truncated": True}
    page = [{"name": "a/b"}, {"name": "a/c"}]
    assert rframe._files.next_page("t", header, page, True, after="a") == "a/c"
    for after in ("a/c", "b", "a/d"):  # the same page again, or one before it
        with pytest.raises(rframe.RemoteError, match="went back"):
            rframe._files.next_page("t", header, page, True, after=after)


@pytest.mark.parametrize(
    "names",
    [
        [("q", "link"), ("q/z", "file")],  # beneath a link: made through it, wherever it leads
        [("f", "file"), ("f/z", "file")],
        [("d/z", "file")],  # its directory never listed
        [("d", "dir"), ("d", "file")],
    ],
)
def test_a_listing_out_of_place_is_not_a_tree(names):
    entries = [{"name": n, "type": k, "target": "."} for n, k in names]
    with pytest.raises(rframe.RemoteError, match="out of place"):
        rframe._files.remote_tree(entries, "copy", "t")


def test_a_tree_deeper_than_can_be_listed_is_not_sent(tmp_path):
    deep = tmp_path.joinpath(*[str(i) for i in range(rframe._files.TREE_DEPTH + 1)])
    deep.mkdir(parents=True)
    with pytest.raises(ValueError, match="deeper than"):
        rframe._files.scan_tree(tmp_path, "refuse")
    deep.rmdir()
    assert rframe._files.scan_tree(tmp_path, "refuse")[-1].name.count("/") == rframe._files.TREE_DEPTH - 1


def test_a_directory_its_owner_cannot_write_is_opened_while_a_tree_goes_in():
    TreeItem = rframe._files.TreeItem
    source = [TreeItem("ro", "dir", 0o555), TreeItem("ro/f", "file", 0o644, size=1), TreeItem("rw", "dir", 0o755)]
    there = [TreeItem("ro", "dir", 0o555), TreeItem("rw", "dir", 0o755)]
    plan = rframe._files.TreePlan(source, there, "sha256")
    # Its mode is the source's already, but a second run must still write in it.
    assert [(d.name, oct(d.mode)) for d in plan.unlock] == [("ro", "0o755")]
    assert [d.name for d in plan.dirs] == ["ro"]  # its mode given back at the end


# --------------------------------------------------------------------------- resume


class Cut(Exception):
    pass


def cut_at(offset: int):
    """A progress callback that cuts the transfer once ``offset`` bytes moved."""

    def progress(done, total):
        if done >= offset:
            raise Cut(done)

    return progress


def counting(calls: list[int]):
    return lambda done, total: calls.append(done)


def kept_part(directory) -> bytes | None:
    """The bytes of the part a resumable transfer kept in ``directory`` once
    no transfer holds it (its identity file, small JSON, is beside it)."""
    import fcntl

    found = [n for n in parts(directory) if not (directory / n).read_bytes().startswith(b'{"size": ')]
    if not found:
        return None
    [name] = found

    def free():
        with open(directory / name, "rb") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

    assert wait_until(free), "the cut transfer let go of its part"
    return (directory / name).read_bytes()


def flip_byte(directory, at: int) -> None:
    [name] = [n for n in parts(directory) if not (directory / n).read_bytes().startswith(b'{"size": ')]
    data = bytearray((directory / name).read_bytes())
    data[at] ^= 0xFF
    (directory / name).write_bytes(bytes(data))


RESUME_SEEDS = [1, 2, 3]


def resume_setup(seed: int):
    """A random source size, chunk size and cut offset (reproducible by seed)."""
    import random

    rng = random.Random(seed)
    chunk = rng.randrange(2048, 16384)
    size = rng.randrange(20 * chunk, 40 * chunk)
    return os.urandom(size), chunk, rng.randrange(chunk, size - chunk)


@pytest.mark.parametrize("seed", RESUME_SEEDS)
def test_a_cut_upload_resumes_with_only_the_rest(connect, root, here, seed):
    data, chunk, cut = resume_setup(seed)
    (here / "f").write_bytes(data)
    codec = rframe.Codec(max_body=chunk)
    with running(rframe.Server(port=0, root=root, codec=codec)) as s:
        with connect(s, codec=codec) as c, pytest.raises(Cut):
            c.upload(here / "f", resume=True, progress=cut_at(cut))
        kept = kept_part(root)
        assert kept and len(kept) <= cut + chunk and data.startswith(kept)
        assert not (root / "f").exists()
        calls: list[int] = []
        with connect(s, codec=codec) as c:
            r = c.upload(here / "f", resume=True, progress=counting(calls))
    assert calls[0] == len(kept), "only the rest moved"
    assert calls[-1] == len(data) and r == verified("f", data)
    assert (root / "f").read_bytes() == data
    assert parts(root) == [], "the part took the name; its identity file is gone"


def test_an_upload_retried_right_after_a_cut_resumes(connect, root, here):
    """A retry at once, while the cut connection's task may still hold the
    part, waits for it rather than failing 'another transfer is under way'."""
    data = os.urandom(64 * CHUNK)
    (here / "f").write_bytes(data)
    codec = rframe.Codec(max_body=CHUNK)
    with running(rframe.Server(port=0, root=root, codec=codec)) as s:
        for attempt in range(1, 6):
            with connect(s, codec=codec) as c, pytest.raises(Cut):
                c.upload(here / "f", resume=True, overwrite=True, progress=cut_at(attempt * 8 * CHUNK))
        with connect(s, codec=codec) as c:
            r = c.upload(here / "f", resume=True, overwrite=True)
    assert r["size"] == len(data) and (root / "f").read_bytes() == data


def test_the_server_waits_while_a_resumed_upload_hashes_its_prefix(connect, root, here, monkeypatch):
    """The client hashes the offered bytes after ``ready``: the server's wait
    for the next frame allows for that beyond its idle timeout."""
    data = os.urandom(16 * CHUNK)
    (here / "f").write_bytes(data)
    real = rframe._files.hash_prefix

    def slow_hash(*args):
        time.sleep(0.8)
        return real(*args)

    with running(rframe.Server(port=0, root=root, idle_timeout=0.2)) as s:
        with connect(s) as c, pytest.raises(Cut):
            c.upload(here / "f", resume=True, progress=cut_at(4 * CHUNK))
        monkeypatch.setattr(rframe._files, "hash_prefix", slow_hash)
        with connect(s) as c:
            r = c.upload(here / "f", resume=True)
    assert r["size"] == len(data) and (root / "f").read_bytes() == data


def test_a_failed_resumable_transfer_leaves_no_empty_part(connect, server, root, here):
    """Nothing arrived: nothing is kept, on either side."""
    with connect(server) as c:
        with pytest.raises(FileNotFoundError):
            c.download("missing", here / "g", resume=True)
        (here / "f").write_bytes(b"x" * CHUNK)
        with pytest.raises(Cut):
            c.upload(here / "f", resume=True, progress=cut_at(0))
    assert parts(here) == []
    assert wait_until(lambda: parts(root) == []), "the server's part went with its connection"


@pytest.mark.parametrize("seed", RESUME_SEEDS)
def test_a_cut_download_resumes_with_only_the_rest(connect, root, here, seed):
    data, chunk, cut = resume_setup(seed)
    (root / "f").write_bytes(data)
    codec = rframe.Codec(max_body=chunk)
    with running(rframe.Server(port=0, root=root, codec=codec)) as s:
        with connect(s, codec=codec) as c, pytest.raises(Cut):
            c.download("f", here / "g", resume=True, progress=cut_at(cut))
        kept = kept_part(here)
        assert kept and cut <= len(kept) and data.startswith(kept)
        assert not (here / "g").exists()
        calls: list[int] = []
        with connect(s, codec=codec) as c:
            r = c.download("f", here / "g", resume=True, progress=counting(calls))
    assert calls[0] == len(kept), "only the rest moved"
    assert r == verified(str(here / "g"), data)
    assert (here / "g").read_bytes() == data
    assert parts(here) == []


@pytest.mark.parametrize("way", ["upload", "download"])
def test_a_part_kept_under_sha256_resumes_under_the_default_checksum(connect, root, here, way):
    """The kept bytes are hashed again with the checksum of the transfer that
    resumes them (a cut from before blake3 was the default, say)."""
    data, chunk, cut = resume_setup(RESUME_SEEDS[0])
    source, receiver = (here, root) if way == "upload" else (root, here)
    (source / "f").write_bytes(data)

    def transfer(c, **kw):
        if way == "upload":
            return c.upload(here / "f", resume=True, **kw)
        return c.download("f", here / "f", resume=True, **kw)

    codec = rframe.Codec(max_body=chunk)
    with running(rframe.Server(port=0, root=root, codec=codec)) as s:
        with connect(s, codec=codec) as c, pytest.raises(Cut):
            transfer(c, checksum="sha256", progress=cut_at(cut))
        kept = kept_part(receiver)
        assert kept and data.startswith(kept)
        calls: list[int] = []
        with connect(s, codec=codec) as c:
            r = transfer(c, progress=counting(calls))
    assert calls[0] == len(kept), "only the rest moved"
    assert r["checksum"] == "blake3" and r["digest"] == digest_of(data)
    assert (receiver / "f").read_bytes() == data and parts(receiver) == []


def test_concurrent_transfers_of_an_async_client_ask_the_features_once(here):
    requests: list[dict] = []
    listener, t = old_server(requests, replies=2)

    async def main():
        async with rframe.AsyncClient(*listener.getsockname(), timeout=HANG_BOUND) as c:
            return await asyncio.gather(c.download("f", here / "a"), c.download("f", here / "b"))

    with listener:
        got = asyncio.run(main())
        t.join(HANG_BOUND)
    assert [r["checksum"] for r in got] == ["sha256", "sha256"]
    assert [r["op"] for r in requests] == ["features", "get", "get"]


def test_a_cancelled_async_download_stops_hashing_its_kept_part(server, root, here, monkeypatch):
    data = os.urandom(32 * CHUNK)
    (root / "f").write_bytes(data)
    with rframe.Client(*server.address, timeout=HANG_BOUND) as c, pytest.raises(Cut):
        c.download("f", here / "g", resume=True, progress=cut_at(16 * CHUNK))
    assert len(kept_part(here)) >= 16 * CHUNK
    updates: list[int] = []
    real = rframe._files.new_hash

    class Slow:
        """A hasher that takes 50 ms a chunk, so the hashing is still under way when cancelled."""

        def __init__(self, checksum):
            self.h = real(checksum)

        def update(self, data):
            time.sleep(0.05)
            updates.append(len(data))
            self.h.update(data)

        def hexdigest(self):
            return self.h.hexdigest()

    monkeypatch.setattr(rframe._files, "new_hash", Slow)

    async def main():
        async with rframe.AsyncClient(*server.address, timeout=HANG_BOUND) as c:
            task = asyncio.create_task(c.download("f", here / "g", resume=True))
            async with asyncio.timeout(HANG_BOUND):
                while not updates:  # the hashing is under way
                    await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return len(updates)

    at_cancel = asyncio.run(main())  # which waits for the executor's threads
    assert 0 < at_cancel < 16 and len(updates) <= at_cancel + 1, (at_cancel, len(updates))
    assert kept_part(here), "the kept part stays for the next try"


def test_a_download_cut_by_a_killed_server_resumes(root, here):
    """A lost connection (the server SIGKILLed mid-transfer) keeps what arrived too."""
    data = os.urandom(64 * CHUNK)
    (root / "f").write_bytes(data)
    transfer_killing_the_server("download", root, here, resume=True)
    kept = kept_part(here)
    assert kept and data.startswith(kept)
    with running(rframe.Server(port=0, root=root)) as s, rframe.Client(*s.address, timeout=HANG_BOUND) as c:
        calls: list[int] = []
        c.download("f", here / "g", resume=True, progress=counting(calls))
    assert calls[0] == len(kept) and (here / "g").read_bytes() == data


@pytest.mark.parametrize("change", ["mtime", "size"])
def test_a_changed_source_refuses_to_resume(connect, server, root, here, change):
    data = os.urandom(8 * CHUNK)

    def change_file(path):
        if change == "mtime":
            st = os.stat(path)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        else:
            with open(path, "ab") as f:
                f.write(b"!")

    # Upload: the local file changed since the server kept its first bytes.
    (here / "f").write_bytes(data)
    with connect(server) as c, pytest.raises(Cut):
        c.upload(here / "f", resume=True, progress=cut_at(2 * CHUNK))
    kept = kept_part(root)
    change_file(here / "f")
    with connect(server) as c:
        with pytest.raises(rframe.SourceChangedError) as err:
            c.upload(here / "f", resume=True)
        assert err.value.code == "changed" and "changed" in str(err.value)
        assert kept_part(root) == kept, "what was kept is left as it was"
        assert not (root / "f").exists()
        # Starting over is explicit; the whole file then replaces what was kept.
        c.upload(here / "f", resume=False)
    assert (root / "f").read_bytes() == (here / "f").read_bytes()
    assert parts(root) == []
    # Download: the server's file changed since this side kept its first bytes.
    with connect(server) as c, pytest.raises(Cut):
        c.download("f", here / "g", resume=True, progress=cut_at(2 * CHUNK))
    kept = kept_part(here)
    change_file(root / "f")
    with connect(server) as c:
        with pytest.raises(rframe.SourceChangedError):
            c.download("f", here / "g", resume=True)
        assert kept_part(here) == kept and not (here / "g").exists()
        c.download("f", here / "g", resume=False)
        c.upload(here / "g", "f2", resume=True)  # and resuming works again, from nothing kept
    assert (here / "g").read_bytes() == (root / "f").read_bytes() == (root / "f2").read_bytes()
    assert parts(here) == [] and parts(root) == []


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_a_corrupted_kept_part_starts_over(connect, server, root, here, direction):
    data = os.urandom(8 * CHUNK + 77)
    (here / "f").write_bytes(data)
    (root / "f").write_bytes(data)
    receiver = root if direction == "upload" else here

    def transfer(c, **kwargs):
        if direction == "upload":
            return c.upload(here / "f", "g", resume=True, **kwargs)
        return c.download("f", here / "g", resume=True, **kwargs)

    with connect(server) as c, pytest.raises(Cut):
        transfer(c, progress=cut_at(3 * CHUNK))
    kept = kept_part(receiver)
    assert kept and len(kept) > 10
    flip_byte(receiver, len(kept) // 2)
    calls: list[int] = []
    with connect(server) as c:
        r = transfer(c, progress=counting(calls))
    assert calls[0] == 0, "the prefix did not match: all of it moved"
    assert r["digest"] == digest_of(data) and (receiver / "g").read_bytes() == data
    assert parts(receiver) == []


def test_without_resume_a_cut_keeps_nothing_and_a_resume_with_nothing_kept_starts_at_0(connect, server, root, here):
    data = os.urandom(6 * CHUNK)
    (here / "f").write_bytes(data)
    (root / "f").write_bytes(data)
    with connect(server) as c, pytest.raises(Cut):
        c.upload(here / "f", "g", progress=cut_at(2 * CHUNK))
    with connect(server) as c, pytest.raises(Cut):
        c.download("f", here / "g", progress=cut_at(2 * CHUNK))
    assert wait_until(lambda: parts(root) == []) and parts(here) == []
    for direction in ("upload", "download"):
        calls: list[int] = []
        with connect(server) as c:
            if direction == "upload":
                c.upload(here / "f", "g", resume=True, progress=counting(calls))
            else:
                c.download("f", here / "g", resume=True, progress=counting(calls))
        assert calls[0] == 0 and calls[-1] == len(data)
    assert (root / "g").read_bytes() == data == (here / "g").read_bytes()
    assert parts(root) == [] and parts(here) == []


def test_cli_put_and_get_resume_flag(root, here):
    """--resume continues (and refuses a changed source, saying how to start
    over); --no-resume and the default off a terminal start over."""
    data = os.urandom(8 * CHUNK)
    (here / "f").write_bytes(data)
    server = CliServer("--root", root)
    where = ("--port", server.port)
    try:
        with server.client() as c, pytest.raises(Cut):
            c.upload(here / "f", resume=True, progress=cut_at(2 * CHUNK))
        assert kept_part(root)
        r = cli("put", "f", "--resume", *where, cwd=here)
        assert r.returncode == 0 and r.stdout.startswith("stored f:"), r.stderr
        assert (root / "f").read_bytes() == data and parts(root) == []
        # A changed source: --resume refuses, --no-resume starts over.
        with server.client() as c, pytest.raises(Cut):
            c.upload(here / "f", "g", resume=True, progress=cut_at(2 * CHUNK))
        assert kept_part(root)
        (here / "f").write_bytes(data + b"more")
        r = cli("put", "f", "g", "--resume", *where, cwd=here)
        assert r.returncode == 1 and "--no-resume starts over" in r.stderr, r.stderr
        assert not (root / "g").exists()
        r = cli("put", "f", "g", "--no-resume", *where, cwd=here)
        assert r.returncode == 0 and (root / "g").read_bytes() == data + b"more", r.stderr
        # get: a kept local part is used with --resume.
        with server.client() as c, pytest.raises(Cut):
            c.download("g", here / "h", resume=True, progress=cut_at(2 * CHUNK))
        assert kept_part(here)
        r = cli("get", "g", "h", "--resume", *where, cwd=here)
        assert r.returncode == 0 and (here / "h").read_bytes() == data + b"more", r.stderr
        assert parts(here) == []
        # Many servers at once do not resume: said, not ignored.
        r = cli("--hosts", f"127.0.0.1:{server.port}", "get", "g", "--resume", cwd=here)
        assert r.returncode != 0 and "--resume is for one server" in r.stderr, r.stderr
        # Nor do trees.
        r = cli("put", "-r", here, "t", "--resume", *where, cwd=here)
        assert r.returncode == 2 and "not with -r" in r.stderr, r.stderr
    finally:
        server.proc.send_signal(signal.SIGTERM)
        assert server.wait() == 0


@pytest.mark.parametrize("offset", [None, 2], ids=["old-server", "offset-not-asked"])
def test_a_resumed_download_from_a_server_that_ignores_or_breaks_resume(connect, server, root, here, offset):
    """A server older than resume sends no offset and no mtime: the whole file
    comes, and is right; one that resumes at an offset not asked for is a
    broken protocol (RemoteError), and nothing wrong is saved."""
    data = os.urandom(4 * CHUNK)
    (root / "f").write_bytes(data)
    with connect(server) as c, pytest.raises(Cut):
        c.download("f", here / "f", resume=True, progress=cut_at(CHUNK))
    assert kept_part(here)
    head = {"op": "file", "size": len(data)} | ({} if offset is None else {"offset": offset})
    frames = [(head, b""), ({"op": "data"}, data), ({"op": "end", "size": len(data), "digest": sha256(data)}, b"")]
    listener, t = fake_server(frames if offset is None else frames[:1])  # (a client that gives up reads no more)
    with listener:

        class Address:
            address = listener.getsockname()

        calls: list[int] = []
        c = connect(Address)
        if offset is None:
            c.download("f", here / "f", resume=True, progress=counting(calls), checksum="sha256")
            assert calls[0] == 0 and (here / "f").read_bytes() == data
            assert parts(here) == []
        else:
            with pytest.raises(rframe.RemoteError):
                c.download("f", here / "f", resume=True, progress=counting(calls), checksum="sha256")
            assert not (here / "f").exists()
        c.close()
        t.join(HANG_BOUND)


@pytest.mark.parametrize("direction", ["upload", "download"])
def test_a_transfer_cut_after_its_last_byte_resumes_with_nothing_left_to_move(connect, server, root, here, direction):
    data = os.urandom(3 * CHUNK + 5)
    (here / "f").write_bytes(data)
    (root / "f").write_bytes(data)

    def transfer(c, **kwargs):
        if direction == "upload":
            return c.upload(here / "f", "g", resume=True, **kwargs)
        return c.download("f", here / "g", resume=True, **kwargs)

    with connect(server) as c, pytest.raises(Cut):
        transfer(c, progress=cut_at(len(data)))
    receiver = root if direction == "upload" else here
    assert kept_part(receiver) == data
    calls: list[int] = []
    with connect(server) as c:
        r = transfer(c, progress=counting(calls))
    assert calls == [len(data)] and r["digest"] == digest_of(data)
    assert (receiver / "g").read_bytes() == data and parts(receiver) == []
