"""TLS, the channel-bound token, pins and trust on first use (PROTOCOL.md, "TLS").

Everything runs on loopback, where 127.0.0.1 is also "another machine" for a
server that is told its peers are not local only through a network namespace
(the last tests, which skip without root and ``ip netns``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

import rframe
from conftest import HANG_BOUND
from rframe._tls import pinning_context
from server_helpers import ENV, ROOT, CliProcess, CliServer, connect_raw, read_all, running, wait_until

TOKEN = "t" * 40


@pytest.fixture
def tls_dir(tmp_path):
    return tmp_path / "tls"


@pytest.fixture
def tls_server(tls_dir):
    with running(rframe.Server(port=0, tls=True, tls_dir=tls_dir, token=TOKEN)) as s:
        yield s


def server_log(caplog):
    caplog.set_level(logging.DEBUG, logger="rframe.server")
    return lambda: "\n".join(r.getMessage() for r in caplog.records if r.name == "rframe.server")


def client_hello() -> bytes:
    """The bytes of a real TLS 1.3 ClientHello (from the stdlib, never sent by it)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = pinning_context().wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


class Relay:
    """A machine in the middle, on loopback. It accepts clients (with TLS of
    a certificate of its own when ``tls`` is a server context) and forwards
    what they send to ``upstream`` (over TLS when ``upstream_tls``), and back.
    ``tamper(data) -> data`` may change what goes upstream."""

    def __init__(self, upstream, *, tls=None, upstream_tls=False, tamper=None):
        self.upstream, self.tls, self.upstream_tls, self.tamper = upstream, tls, upstream_tls, tamper
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(HANG_BOUND)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.tls))
        self.address = self.server.sockets[0].getsockname()[:2]
        ready.set()
        self.loop.run_forever()

    async def _handle(self, reader, writer):
        try:
            ssl_args = {"ssl": pinning_context(), "server_hostname": ""} if self.upstream_tls else {}
            up_reader, up_writer = await asyncio.open_connection(*self.upstream, **ssl_args)
        except OSError:
            writer.close()
            return

        async def pump(src, dst, tamper):
            try:
                while data := await src.read(65536):
                    dst.write(tamper(data) if tamper else data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer, self.tamper), pump(up_reader, writer, None))

    def close(self):
        async def stop():
            self.server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(HANG_BOUND)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_BOUND)
        self.loop.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def relay_context(tmp_path) -> ssl.SSLContext:
    """A TLS server context with a certificate that is not the real server's."""
    directory = tmp_path / "relay-tls"
    rframe._rframe.server_fingerprint(tls_dir=directory)  # makes one, as a server would
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(directory / "server.pem")
    return ctx


# --------------------------------------------------------------------------- the server's TLS


def test_a_generated_certificate_is_kept_and_reused(tls_dir):
    with running(rframe.Server(port=0, tls=True, tls_dir=tls_dir)) as s:
        first = s.tls_fingerprint
    assert len(first) == 64 and first == first.lower()
    assert oct((tls_dir / "server.pem").stat().st_mode & 0o777) == "0o600"
    with running(rframe.Server(port=0, tls=True, tls_dir=tls_dir)) as s:
        assert s.tls_fingerprint == first == rframe._rframe.server_fingerprint(tls_dir=tls_dir)
    with running(rframe.Server(port=0)) as s:
        assert s.tls_fingerprint is None


def test_a_live_command_over_tls_may_be_silent_past_the_timeout_which_is_kept(tls_dir):
    # The read of a live command's output waits as long as the command is
    # silent; an SSLSocket applies its own timeout, lifted for that read only.
    with running(rframe.Server(port=0, tls=True, tls_dir=tls_dir)) as s:
        with rframe.Client(*s.address, tls=True, fingerprint=s.tls_fingerprint, timeout=0.3) as c:
            with c.start("sleep 0.8; echo late") as proc:
                assert proc.stdout.readline() == b"late\n"
                assert proc.wait() == 0
            assert c._sock.gettimeout() == 0.3
            assert c.run("echo after").stdout == b"after\n"


def test_pem_files_are_used_as_given(tmp_path, tls_dir):
    pem = tls_dir / "server.pem"
    fingerprint = rframe._rframe.server_fingerprint(tls_dir=tls_dir)
    text = pem.read_text()
    cut = text.index("-----BEGIN PRIVATE KEY-----")
    (tmp_path / "cert.pem").write_text(text[:cut])
    (tmp_path / "key.pem").write_text(text[cut:])
    with running(rframe.Server(port=0, tls=True, tls_cert=tmp_path / "cert.pem", tls_key=tmp_path / "key.pem")) as s:
        assert s.tls_fingerprint == fingerprint
        with rframe.Client(*s.address, tls=True, fingerprint=fingerprint, timeout=HANG_BOUND) as c:
            assert c.run("echo pem").stdout == b"pem\n"
    with pytest.raises(ValueError, match="together"):
        rframe.Server(port=0, tls=True, tls_cert=tmp_path / "cert.pem")
    with pytest.raises(OSError, match="key.pem"):
        rframe.Server(port=0, tls=True, tls_cert=tmp_path / "key.pem", tls_key=tmp_path / "key.pem")


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_openssl_speaks_tls13_with_alpn_and_sees_the_fingerprint(tls_server):
    host, port = tls_server.address
    base = ["openssl", "s_client", "-connect", f"{host}:{port}", "-alpn", "rframe/1"]
    r = subprocess.run([*base, "-tls1_3"], input=b"", capture_output=True, timeout=HANG_BOUND)
    out = r.stdout.decode()
    assert "TLSv1.3" in out and "ALPN protocol: rframe/1" in out, out
    x509 = subprocess.run(
        ["openssl", "x509", "-noout", "-fingerprint", "-sha256"],
        input=r.stdout,
        capture_output=True,
        timeout=HANG_BOUND,
    )
    seen = x509.stdout.decode().strip().split("=", 1)[1].replace(":", "").lower()
    assert seen == tls_server.tls_fingerprint
    old = subprocess.run([*base, "-tls1_2"], input=b"", capture_output=True, timeout=HANG_BOUND)
    assert old.returncode != 0 and "Cipher is (NONE)" in old.stdout.decode() + old.stderr.decode()


def test_the_protocol_works_with_the_stdlib_alone(tls_server):
    """ssl + hmac + rframe.send_frame: the handshake as PROTOCOL.md gives it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with ctx.wrap_socket(socket.create_connection(tls_server.address, timeout=HANG_BOUND)) as s:
        cert = s.getpeercert(binary_form=True)
        assert hashlib.sha256(cert).hexdigest() == tls_server.tls_fingerprint
        rframe.send_frame(s, header={"op": "auth"})
        challenge = rframe.read_frame(s).header
        assert challenge["op"] == "challenge" and challenge["version"] == 1
        assert challenge["channel_binding"] == "tls-server-end-point"
        sn, cn, cb = challenge["nonce"], os.urandom(32).hex(), hashlib.sha256(cert).hexdigest()

        def proof(role):
            return hmac.new(TOKEN.encode(), f"rframe-{role}:{sn}:{cn}:{cb}".encode(), "sha256").hexdigest()

        answer = {
            "op": "auth",
            "nonce": sn,
            "client_nonce": cn,
            "proof": proof("client"),
            "channel_binding": "tls-server-end-point",
        }
        rframe.send_frame(s, header=answer)
        welcome = rframe.read_frame(s).header
        assert welcome["op"] == "welcome" and hmac.compare_digest(welcome["proof"], proof("server"))
        rframe.send_frame(s, header={"op": "run", "cmd": "echo over-tls"})
        assert rframe.read_frame(s).body == b"over-tls\n"


def test_both_clients_run_over_tls_with_a_token_alone(tls_server):
    with rframe.Client(*tls_server.address, tls=True, token=TOKEN, timeout=HANG_BOUND) as c:
        assert c.tls_fingerprint == tls_server.tls_fingerprint
        assert c.run("echo bound").stdout == b"bound\n"

    async def main():
        async with rframe.AsyncClient(*tls_server.address, tls=True, token=TOKEN, timeout=HANG_BOUND) as c:
            assert c.tls_fingerprint == tls_server.tls_fingerprint
            return (await c.run("echo async-bound")).stdout

    assert asyncio.run(main()) == b"async-bound\n"


def test_plaintext_from_this_machine_is_still_served_by_a_tls_server(tls_server):
    with rframe.Client(*tls_server.address, token=TOKEN, timeout=HANG_BOUND) as c:
        assert c.tls_fingerprint is None
        assert c.run("echo plain").stdout == b"plain\n"


def test_a_tls_bound_proof_is_refused_on_plaintext(tls_server, caplog):
    """The binding cannot be stripped: a proof made for the TLS channel, sent
    in plaintext, is refused, as is an unbound proof that claims a binding."""
    log = server_log(caplog)
    cert_hash = bytes.fromhex(tls_server.tls_fingerprint)
    with connect_raw(tls_server.address) as s:
        rframe.send_frame(s, header={"op": "auth"})
        challenge = rframe.read_frame(s).header
        assert challenge["channel_binding"] == "none"
        sn, cn = challenge["nonce"], rframe._rframe.auth_nonce()
        bound = rframe._rframe.auth_proof(TOKEN.encode(), "client", sn, cn, binding=cert_hash)
        answer = {
            "op": "auth",
            "nonce": sn,
            "client_nonce": cn,
            "proof": bound,
            "channel_binding": "tls-server-end-point",
        }
        rframe.send_frame(s, header=answer)
        reply = rframe.read_frame(s).header
    assert (reply["op"], reply["error"]) == ("error", "auth")
    assert wait_until(lambda: "channel binding mismatch" in log(), 5), log()


# --------------------------------------------------------------------------- the clients


def test_fingerprints_are_taken_in_any_spelling(tls_server):
    fp = tls_server.tls_fingerprint
    spellings = [fp.upper(), "sha256:" + fp, "SHA256:" + ":".join(fp[i : i + 2] for i in range(0, 64, 2))]
    for spelling in spellings:
        with rframe.Client(*tls_server.address, tls=True, fingerprint=spelling, timeout=HANG_BOUND) as c:
            assert c.tls_fingerprint == fp
    for bad in ["", fp[:-1], fp + "0", "zz" * 32, "md5:" + fp]:
        with pytest.raises(ValueError, match="fingerprint"):
            rframe.Client(*tls_server.address, tls=True, fingerprint=bad)


def test_tls_needs_something_that_says_whom_you_talk_to():
    with pytest.raises(ValueError, match="whom you talk to"):
        rframe.Client("127.0.0.1", 1, tls=True)
    # Off loopback TLS is the default, so the same: refused before any lookup
    # or connection (.invalid never resolves).
    with pytest.raises(ValueError, match="not a loopback address"):
        rframe.Client("rframe.invalid", 1)
    with pytest.raises(ValueError, match="whom you talk to"):
        rframe.AsyncClient("rframe.invalid", 1)
    with pytest.raises(ValueError, match="needs TLS"):
        rframe.Client("127.0.0.1", 1, tls=False, fingerprint="ab" * 32)
    with pytest.raises(TypeError):
        rframe.Client("127.0.0.1", 1, tls="yes")


@pytest.mark.parametrize("kind", ["Client", "AsyncClient"])
def test_a_wrong_fingerprint_is_refused_before_anything_is_sent(tmp_path, kind):
    """A TLS endpoint of the stdlib's, holding a certificate like any server's,
    records what it receives after the handshake: nothing, not even the
    handshake's first frame, reaches it from a client that pinned another."""
    fingerprint = rframe._rframe.server_fingerprint(tls_dir=tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    received = []

    def serve():
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            tls.settimeout(HANG_BOUND)
            try:
                while data := tls.recv(65536):
                    received.append(data)
            except (OSError, ssl.SSLError):
                pass
            received.append(b"<closed>")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    address, wrong = listener.getsockname(), "0" * 64
    try:
        with pytest.raises(rframe.FingerprintMismatch) as info:
            if kind == "Client":
                rframe.Client(*address, tls=True, token=TOKEN, fingerprint=wrong, timeout=HANG_BOUND)
            else:
                asyncio.run(
                    rframe.AsyncClient.connect(*address, tls=True, token=TOKEN, fingerprint=wrong, timeout=HANG_BOUND)
                )
        thread.join(HANG_BOUND)
    finally:
        listener.close()
    assert received == [b"<closed>"]
    err = info.value
    assert isinstance(err, ssl.SSLCertVerificationError)
    assert (err.expected, err.actual) == (wrong, fingerprint)
    assert wrong in str(err) and fingerprint in str(err)
    # The same endpoint, pinned right, gets the handshake's first frame: the
    # check above could have failed.
    listener = socket.create_server(("127.0.0.1", 0))
    received.clear()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises((ConnectionError, rframe.AuthenticationError, TimeoutError)):
            rframe.Client(*listener.getsockname(), tls=True, token=TOKEN, fingerprint=fingerprint, timeout=1)
        thread.join(HANG_BOUND)
    finally:
        listener.close()
    assert b"auth" in b"".join(received)


def test_a_second_server_with_the_same_token_is_refused_by_a_pinned_client(tls_server, tmp_path):
    with running(rframe.Server(port=0, tls=True, tls_dir=tmp_path / "other", token=TOKEN)) as other:
        assert other.tls_fingerprint != tls_server.tls_fingerprint
        with pytest.raises(rframe.FingerprintMismatch):
            rframe.Client(
                *other.address, token=TOKEN, tls=True, fingerprint=tls_server.tls_fingerprint, timeout=HANG_BOUND
            )


def test_a_relay_with_its_own_certificate_is_refused_by_both_ends(tls_server, tmp_path, caplog):
    log = server_log(caplog)
    with Relay(tls_server.address, tls=relay_context(tmp_path), upstream_tls=True) as relay:
        # A pinned client sees the relay's certificate and stops there.
        with pytest.raises(rframe.FingerprintMismatch):
            rframe.Client(
                *relay.address, tls=True, token=TOKEN, fingerprint=tls_server.tls_fingerprint, timeout=HANG_BOUND
            )
        # A client with the token alone proves it over the relay's channel:
        # the server, on its own channel, refuses the relayed proof.
        with pytest.raises(rframe.AuthenticationError):
            rframe.Client(*relay.address, tls=True, token=TOKEN, timeout=HANG_BOUND)
        assert wait_until(lambda: "authentication failed: wrong token" in log(), 5), log()
        assert "authenticated" not in log()


def test_a_relay_that_ends_tls_gets_no_proof(tls_server, tmp_path, caplog):
    """TLS to the relay, plaintext from it (on loopback, which the server
    serves): the server's challenge says "none", and the client stops."""
    log = server_log(caplog)
    with Relay(tls_server.address, tls=relay_context(tmp_path), upstream_tls=False) as relay:
        for kind in ("Client", "AsyncClient"):
            with pytest.raises(rframe.AuthenticationError, match="no proof was sent"):
                if kind == "Client":
                    rframe.Client(*relay.address, tls=True, token=TOKEN, timeout=HANG_BOUND)
                else:
                    asyncio.run(rframe.AsyncClient.connect(*relay.address, tls=True, token=TOKEN, timeout=HANG_BOUND))
    time.sleep(0.2)
    assert "authentication failed" not in log() and "authenticated" not in log()


def test_tls_never_falls_back_to_plaintext(tmp_path, caplog):
    log = server_log(caplog)
    with running(rframe.Server(port=0, token=TOKEN)) as plain:
        with pytest.raises(ssl.SSLError):
            rframe.Client(*plain.address, tls=True, token=TOKEN, timeout=HANG_BOUND)
        with pytest.raises(ssl.SSLError):
            asyncio.run(rframe.AsyncClient.connect(*plain.address, tls=True, token=TOKEN, timeout=HANG_BOUND))
        # A proxy that takes TLS off (plaintext to the client, TLS onwards).
        with running(rframe.Server(port=0, tls=True, tls_dir=tmp_path / "t", token=TOKEN)) as tls_server:
            with Relay(tls_server.address, tls=None, upstream_tls=True) as stripper:
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    rframe.Client(*stripper.address, tls=True, token=TOKEN, timeout=HANG_BOUND)
    assert "wrong token" not in log() and "authenticated" not in log()


# --------------------------------------------------------------------------- hostile TLS peers


def test_a_dribbled_handshake_is_closed_at_the_login_deadline(tmp_path):
    hello = client_hello()
    with running(rframe.Server(port=0, tls=True, tls_dir=tmp_path, token=TOKEN, header_timeout=1)) as s:
        with connect_raw(s.address) as sock:
            t0 = time.monotonic()
            closed = False
            for byte in hello[:60]:  # 60 bytes at 5 a second: 12 s, unless closed
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    closed = True
                    break
                time.sleep(0.2)
                sock.setblocking(False)
                try:
                    closed = sock.recv(1) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    closed = True
                sock.setblocking(True)
                if closed:
                    break
            assert closed and time.monotonic() - t0 < 6
        with rframe.Client(*s.address, tls=True, token=TOKEN, timeout=HANG_BOUND) as c:
            assert c.run("echo after").stdout == b"after\n"


def test_a_flood_of_hellos_and_garbage_leaves_the_server_serving(tmp_path):
    """Handshakes run in the connections' tasks, not in the accept loop. (The
    caps on unauthenticated connections are raised here: this is about TLS;
    tests/test_preauth.py floods them.)"""
    hello = client_hello()
    server = rframe.Server(
        port=0, tls=True, tls_dir=tmp_path, token=TOKEN, max_startups=400, max_startups_per_source=400
    )
    held = []
    with running(server) as s:
        try:
            for i in range(200):
                sock = connect_raw(s.address)
                held.append(sock)
                sock.sendall(hello[: 5 + i % 40])  # a record header, and a part of the hello
            for garbage in [b"\x16\x03\x01\x00\x20" + os.urandom(32), hello + os.urandom(200), b"\x16\x03\x03\xff\xff"]:
                with connect_raw(s.address) as sock:
                    sock.sendall(garbage)
                    sock.shutdown(socket.SHUT_WR)
                    read_all(sock)  # closed by the server, not hung
            with rframe.Client(*s.address, tls=True, token=TOKEN, timeout=HANG_BOUND) as c:
                assert c.run("echo still-serving").stdout == b"still-serving\n"
        finally:
            for sock in held:
                sock.close()


def test_a_flipped_bit_mid_frame_closes_that_connection_and_runs_nothing(tls_server, tmp_path):
    marker = tmp_path / "ran"
    armed = threading.Event()

    def flip(data):
        if armed.is_set():
            armed.clear()
            data = data[:-1] + bytes([data[-1] ^ 0x01])
        return data

    with Relay(tls_server.address, tamper=flip) as relay:  # bytes through, TLS end to end
        c = rframe.Client(
            *relay.address, tls=True, token=TOKEN, fingerprint=tls_server.tls_fingerprint, timeout=HANG_BOUND
        )
        with c:
            armed.set()
            with pytest.raises((ssl.SSLError, ConnectionError)):
                c.run(f"touch {marker}")
        with rframe.Client(*relay.address, tls=True, token=TOKEN, timeout=HANG_BOUND) as other:
            assert other.run("echo unharmed").stdout == b"unharmed\n"
    assert not marker.exists()


# --------------------------------------------------------------------------- safe by default


def test_the_network_needs_a_long_token_and_gets_tls(tmp_path):
    with pytest.raises(ValueError, match="6 bytes"):
        rframe.Server(host="0.0.0.0", port=0, token="s3cret")
    with pytest.raises(ValueError, match="without TLS"):
        rframe.Server(host="0.0.0.0", port=0, token=TOKEN, tls=False)
    with running(rframe.Server(host="0.0.0.0", port=0, token=TOKEN, tls_dir=tmp_path)) as s:
        assert s.tls_fingerprint is not None
    with pytest.warns(RuntimeWarning, match="without TLS"):
        s = rframe.Server(host="0.0.0.0", port=0, token=TOKEN, tls=False, insecure=True)
    assert s.tls_fingerprint is None
    s.stop()


def test_new_token_is_long_and_random():
    tokens = {rframe.new_token() for _ in range(20)}
    assert len(tokens) == 20 and all(len(t) >= 32 for t in tokens)


def test_cli_server_tls_flags(tmp_path):
    token_file = tmp_path / "token"
    p = CliProcess("rframe.server", "--new-token", token_file)
    assert p.wait() == 0, p.stderr
    assert oct(token_file.stat().st_mode & 0o777) == "0o600" and len(token_file.read_text().strip()) == 43
    again = CliProcess("rframe.server", "--new-token", token_file)
    assert again.wait() == 2 and "exists" in again.stderr
    fp = CliProcess("rframe.server", "--fingerprint", "--tls-dir", tmp_path / "tls")
    assert fp.wait() == 0, fp.stderr
    fingerprint = fp.stdout.strip().removeprefix("sha256:")
    assert len(fingerprint) == 64

    short = tmp_path / "short"
    short.write_text("s3cret\n")
    refused = CliProcess("rframe.server", "--host", "0.0.0.0", "--port", "0", "--token-file", short)
    assert refused.wait() == 2 and "6 bytes" in refused.stderr and "--new-token" in refused.stderr

    server = CliServer("--host", "0.0.0.0", "--token-file", token_file, "--tls-dir", tmp_path / "tls")
    try:
        assert wait_until(lambda: f"sha256:{fingerprint}" in server.stdout, 5), server.stdout
        token = token_file.read_text().strip()
        with rframe.Client(
            "127.0.0.1", server.port, tls=True, token=token, fingerprint=fingerprint, timeout=HANG_BOUND
        ) as c:
            assert c.run("echo cli-tls").stdout == b"cli-tls\n"
    finally:
        server.stop()


def run_client(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "rframe.client", *map(str, args)],
        capture_output=True,
        timeout=HANG_BOUND,
        cwd=ROOT,
        env=env if env is not None else ENV,
    )


def test_cli_client_trusts_on_first_use_and_refuses_a_changed_certificate(tls_server, tmp_path):
    known = tmp_path / "known_servers"
    host, port = tls_server.address
    env = dict(ENV, RFRAME_TOKEN=TOKEN)
    args = ("--host", host, "--port", port, "--tls", "--known-servers", known)
    first = run_client(*args, "-c", "echo first", env=env)
    assert (first.returncode, first.stdout) == (0, b"first\n"), first.stderr
    assert b"now trusted" in first.stderr and str(known).encode() in first.stderr
    assert known.read_text() == f"{host}:{port} sha256:{tls_server.tls_fingerprint}\n"
    second = run_client(*args, "-c", "echo second", env=env)
    assert (second.returncode, second.stdout, second.stderr) == (0, b"second\n", b"")

    known.write_text(f"# mine\n{host}:{port} sha256:{'ab' * 32}\n")
    changed = run_client(*args, "-c", "echo never", env=env)
    assert changed.returncode == 1 and changed.stdout == b""
    message = changed.stderr.decode()
    assert "REFUSED" in message and f"remove line 2 of {known}" in message and tls_server.tls_fingerprint in message

    pinned = run_client(
        "--host",
        host,
        "--port",
        port,
        "--tls",
        "--fingerprint",
        tls_server.tls_fingerprint.upper(),
        "-c",
        "echo pinned",
        env=env,
    )
    assert (pinned.returncode, pinned.stdout) == (0, b"pinned\n"), pinned.stderr
    bad = run_client("--host", host, "--port", port, "--fingerprint", "nope", "-c", "true", env=env)
    assert bad.returncode == 2 and b"fingerprint" in bad.stderr


# --------------------------------------------------------------------------- another machine (a namespace)

NETNS = f"rframe-test-{os.getpid()}"
HOST_SIDE, PEER_SIDE = "10.213.77.1", "10.213.77.2"


def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=HANG_BOUND)


@pytest.fixture
def peer_namespace():
    """A network namespace joined to this one by a veth pair: a peer at
    PEER_SIDE that reaches HOST_SIDE here, and nothing else."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and ip (iproute2) to make a network namespace")
    if _ip("netns", "add", NETNS).returncode != 0:
        pytest.skip("cannot make a network namespace here")
    try:
        steps = [
            ("link", "add", f"{NETNS[:10]}h", "type", "veth", "peer", "name", f"{NETNS[:10]}p"),
            ("link", "set", f"{NETNS[:10]}p", "netns", NETNS),
            ("addr", "add", f"{HOST_SIDE}/30", "dev", f"{NETNS[:10]}h"),
            ("link", "set", f"{NETNS[:10]}h", "up"),
            ("-n", NETNS, "addr", "add", f"{PEER_SIDE}/30", "dev", f"{NETNS[:10]}p"),
            ("-n", NETNS, "link", "set", f"{NETNS[:10]}p", "up"),
            ("-n", NETNS, "link", "set", "lo", "up"),
        ]
        for step in steps:
            r = _ip(*step)
            if r.returncode != 0:
                pytest.skip(f"cannot set up the namespace: ip {' '.join(step)}: {r.stderr.strip()}")
        yield NETNS
    finally:
        _ip("link", "del", f"{NETNS[:10]}h")
        _ip("netns", "del", NETNS)


PEER_SCRIPT = r"""
import json, socket, sys, rframe
host, port, token, fingerprint = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {}
with socket.create_connection((host, port), timeout=10) as s:      # a framed request in plaintext
    rframe.send_frame(s, header={"op": "run", "cmd": "echo plain"})
    out["frame"] = rframe.read_frame(s).header.get("error")
with socket.create_connection((host, port), timeout=10) as s:      # the course's raw line
    s.sendall(b"echo raw")
    n = int.from_bytes(s.recv(4), "little")
    out["raw"] = json.loads(s.recv(n)).get("error")
with rframe.Client(host, port, token=token, timeout=10) as c:      # TLS: the default off loopback
    out["tls"] = [c.tls_fingerprint == fingerprint, c.run("echo over-the-wire").stdout.decode()]
print(json.dumps(out))
"""


def test_a_peer_on_another_machine_needs_tls(peer_namespace, tmp_path):
    with running(rframe.Server(host=HOST_SIDE, port=0, token=TOKEN, tls_dir=tmp_path)) as s:
        r = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                peer_namespace,
                sys.executable,
                "-c",
                PEER_SCRIPT,
                HOST_SIDE,
                str(s.address[1]),
                TOKEN,
                s.tls_fingerprint,
            ],
            capture_output=True,
            text=True,
            timeout=HANG_BOUND * 3,
            env=ENV,
        )
    assert r.returncode == 0, r.stderr
    import json

    seen = json.loads(r.stdout)
    assert seen == {"frame": "tls-required", "raw": "tls-required", "tls": [True, "over-the-wire\n"]}


def test_a_context_of_the_callers_own_is_used_as_given(tls_server, tls_dir):
    # It verifies certificates against a CA, and the generated one is signed
    # by none the context knows: refused by the context itself.
    strict = ssl.create_default_context()
    with pytest.raises(ssl.SSLCertVerificationError):
        rframe.Client(*tls_server.address, tls=strict, token=TOKEN, timeout=HANG_BOUND)
    # Told to trust that very certificate (it names "rframe", not the address).
    trusting = ssl.create_default_context(cafile=tls_dir / "server.pem")
    trusting.check_hostname = False
    with rframe.Client(*tls_server.address, tls=trusting, token=TOKEN, timeout=HANG_BOUND) as c:
        assert c.tls_fingerprint == tls_server.tls_fingerprint
        assert c.run("echo ca").stdout == b"ca\n"


def test_a_local_frame_that_starts_like_a_hello_is_a_frame(tmp_path):
    """A header of 278 bytes (0x116) makes a frame start with 0x16, as a TLS
    record does: the next three bytes tell them apart, and a local client that
    waited before sending it (longer than a handshake may take) is served."""
    header = {"k": ""}
    while len(rframe.pack_frame(b"", header)) - 4 < 278:
        header["k"] += "x"
    frame = rframe.pack_frame(b"", header)
    assert frame[0] == 0x16
    with running(rframe.Server(port=0, tls=True, tls_dir=tmp_path, handler=lambda f: b"echo", header_timeout=0.5)) as s:
        with connect_raw(s.address) as sock:
            time.sleep(1.0)
            sock.sendall(frame[:2])
            time.sleep(0.2)
            sock.sendall(frame[2:])
            assert rframe.read_frame(sock).body == b"echo"


def test_a_peer_that_reads_nothing_gives_its_place_back_at_the_login_deadline(tmp_path):
    """Before login a stalled write lasts no longer than the login deadline,
    and closing (a close_notify nobody reads) is bounded too: otherwise a few
    such peers would hold every unauthenticated place for the idle timeout."""
    deadline = 2
    server = rframe.Server(
        port=0, tls=True, tls_dir=tmp_path, token=TOKEN, header_timeout=deadline, max_startups_per_source=1
    )

    def can_log_in():
        try:
            with rframe.Client(*s.address, tls=True, token=TOKEN, timeout=HANG_BOUND) as c:
                return c.run("echo in").stdout == b"in\n"
        except (ConnectionError, ssl.SSLError):
            return False  # closed at once: the one place of this address is taken

    with running(server) as s:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(HANG_BOUND)
        raw.connect(s.address)
        with pinning_context().wrap_socket(raw) as stuck:
            start = time.monotonic()
            assert not can_log_in()  # the place is this connection's
            # Hellos for a second, each answered with a challenge that nobody
            # reads, until the server's writes stall (how many that takes
            # depends on the socket buffers, which grow to megabytes on
            # loopback: the count is not the point, the deadline is).
            hellos = rframe.pack_frame(header={"op": "auth"}) * 100
            stuck.settimeout(0.5)
            sent = 0
            try:
                while time.monotonic() - start < 1:
                    stuck.sendall(hellos)
                    sent += 100
            except (TimeoutError, OSError):
                pass
            assert sent > 0
            assert wait_until(can_log_in, deadline + 10)
            # given back at the login deadline, not before it
            assert time.monotonic() - start >= deadline - 0.5


def test_a_reply_trickled_over_tls_is_bounded_by_the_clients_timeout(tmp_path):
    """On a plain socket the timeout bounds the whole reply; over TLS too, not
    each record (a byte every 0.2 s would otherwise never time out)."""
    rframe._rframe.server_fingerprint(tls_dir=tmp_path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "server.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with ctx.wrap_socket(conn, server_side=True) as tls:
            rframe.read_frame(tls)
            for byte in rframe.pack_frame(b"x" * 100, {"op": "slow"}):
                if stop.wait(0.2):
                    return
                tls.sendall(bytes([byte]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        fingerprint = rframe._rframe.server_fingerprint(tls_dir=tmp_path)
        with rframe.Client(*listener.getsockname(), tls=True, fingerprint=fingerprint, timeout=1) as c:
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                c.request(b"hi")
            assert time.monotonic() - t0 < 5  # the reply would take 26 s
    finally:
        stop.set()
        thread.join(HANG_BOUND)
        listener.close()


def test_tls_arguments_imply_tls_and_bad_ones_say_so(tmp_path):
    with running(rframe.Server(port=0, tls_dir=tmp_path / "tls")) as s:  # loopback, but TLS was meant
        assert s.tls_fingerprint is not None
        # A pin implies TLS too, on loopback.
        with rframe.Client(*s.address, fingerprint=s.tls_fingerprint, timeout=HANG_BOUND) as c:
            assert c.tls_fingerprint == s.tls_fingerprint
    junk = tmp_path / "junk.pem"
    junk.write_text("junk\n")
    p = CliProcess("rframe.server", "--port", "0", "--tls-cert", junk, "--tls-key", junk)
    assert p.wait() == 2
    assert "TLS certificate" in p.stderr and "junk.pem" in p.stderr and "cannot listen" not in p.stderr
    # A codec that would read a TLS hello as a frame cannot share its port with TLS.
    with pytest.raises(ValueError, match="hello"):
        rframe.Server(
            port=0, tls=True, tls_dir=tmp_path / "tls", handler=lambda f: f.body, codec=rframe.Codec(json_header=False)
        )


def test_plaintext_by_name_is_checked_against_the_address_reached(monkeypatch):
    """A name taken for loopback (plaintext) must reach loopback: if it
    resolved elsewhere, the client closes before it sends a byte."""
    with running(rframe.Server(port=0)) as s:
        real = socket.socket.getpeername

        def elsewhere(sock):
            host, port = real(sock)[:2]
            return ("192.0.2.7", port)  # what a lying resolver would have led to (never contacted)

        monkeypatch.setattr(socket.socket, "getpeername", elsewhere)
        with pytest.raises(ConnectionRefusedError, match="not a loopback address"):
            rframe.Client("localhost", s.address[1], timeout=HANG_BOUND)
        with pytest.raises(ConnectionRefusedError, match="not a loopback address"):
            asyncio.run(rframe.AsyncClient.connect("localhost", s.address[1], timeout=HANG_BOUND))
        monkeypatch.undo()
        with rframe.Client("localhost", s.address[1], timeout=HANG_BOUND) as c:
            assert c.run("echo local").stdout == b"local\n"


def test_a_reply_larger_than_the_socket_buffers_arrives_whole_over_tls(tmp_path):
    """The end of a reply that TLS could not write at once (the peer was not
    reading) goes out when the peer reads, not with the next reply, which the
    peer never asks for while it waits for this one."""
    with running(rframe.Server(port=0, tls=True, tls_dir=tmp_path)) as s:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(HANG_BOUND)
        raw.connect(s.address)
        with pinning_context().wrap_socket(raw) as tls:
            for size in (4 << 20, 9 << 20 | 12345):
                rframe.send_frame(tls, header={"op": "run", "cmd": f"head -c {size} /dev/zero"})
                time.sleep(0.5)  # the server writes until every buffer is full, and waits
                reply = rframe.read_frame(tls)
                assert (reply.header["op"], len(reply.body)) == ("result", size)
