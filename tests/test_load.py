"""Short versions of the load scripts (bench/soak.py, bench/idle.py), and what
they found: the listen backlog, and the server CLI's open files limit.

The full runs take minutes and live in bench/ (see bench/README.md); these
check the same behaviour in seconds: nothing lost or corrupted under mixed
load, descriptors and threads back to their idle level afterwards, many idle
connections all served, a burst of connections all accepted.
"""

from __future__ import annotations

import errno
import hashlib
import random
import select
import socket
import subprocess
import sys

import pytest

import platforms
import rframe
from conftest import HANG_BOUND
from server_helpers import ENV, ROOT, wait_until

resource = pytest.importorskip("resource", reason="needs POSIX resource limits (and the command server)")

sys.path.insert(0, str(ROOT / "bench"))
import idle  # noqa: E402 - bench/idle.py
import soak  # noqa: E402 - bench/soak.py

# --------------------------------------------------------------------------- soak


def test_soak_short():
    result = soak.judge(
        soak.soak(
            duration=6,
            threads=3,
            async_conns=2,
            pipeline=3,
            max_size=64 << 10,
            interval=0.5,
            warmup=1,
            log=lambda m: None,
        )
    )
    stats = result["stats"]
    assert not result["client_errors"], result["client_errors"]
    assert stats["connect_errors"] == 0, stats["examples"]
    for kind, c in stats["counts"].items():
        assert c["lost"] == 0 and c["corrupted"] == 0, (kind, c, stats["examples"])
        assert c["ok"] > 0 and c["ok"] == c["done"], (kind, c)
    # after the clients left, each server holds no more descriptors or threads
    # than it did idle before the load
    for row in result["rows"]:
        if row["resource"] in ("fds", "threads"):
            assert row["ok"], row


def _result(stdout=b"", stderr=b"", returncode=0):
    return rframe.CommandResult("cmd", returncode, stdout, stderr)


@pytest.mark.parametrize("kind", list(soak.KINDS))
def test_soak_checks_catch_corruption(kind):
    """Every check of bench/soak.py accepts the right reply and refuses a reply
    with one byte changed, or a failed command."""
    rng = random.Random(7)
    seq = 0
    while True:
        seq += 1
        op = soak.make_op(rng, seq, 4096)
        if op.kind == kind and (kind == "echo" or op.nbytes > 0):
            break

    def flip(data):
        return data[:-1] + bytes([data[-1] ^ 1])

    if kind == "echo":
        token = op.args[0].split()[-1].encode()
        good, bad = _result(token), _result(flip(token))
    elif kind == "urandom":
        data = rng.randbytes(op.nbytes)
        digest = hashlib.sha256(data).hexdigest().encode() + b"  -\n"
        good, bad = _result(digest, data), _result(digest, flip(data))
    elif kind == "cat":
        data = op.kwargs["input"]
        good, bad = _result(data), _result(flip(data))
    else:
        body, header = op.args[0], op.kwargs["header"]
        reply = {"seq": seq, "sha256": header["sha256"], "request_ok": True}
        good = rframe.Frame(dict(reply, total_size=len(body)), body)
        bad = rframe.Frame(dict(reply, total_size=len(body)), flip(body))
        refused = rframe.Frame(dict(reply, request_ok=False, total_size=len(body)), body)
        assert op.check(refused) is not None
    assert op.check(good) is None
    assert op.check(bad) is not None
    if kind != "request":
        assert op.check(_result(good.stdout, good.stderr, returncode=1)) is not None


# --------------------------------------------------------------------------- idle connections


def test_idle_connections_short():
    result = idle.judge(idle.idle(600, log=lambda m: None))
    assert result["accepted"], result
    assert result["answered"] == 600 and not result["answer_errors"], result["answer_errors"][:3]
    assert result["still_open"] >= 600
    assert result["serving"]  # a fresh client's run, with 600 connections open
    assert result["closed"]  # the server's descriptors back to the baseline


# --------------------------------------------------------------------------- what the load found


def _somaxconn():
    """The kernel's cap on a listen backlog; 0 where it cannot be read (off Linux)."""
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except OSError:
        return 0


BURST = 600


@platforms.linux
@pytest.mark.skipif(_somaxconn() < BURST + 2, reason="net.core.somaxconn caps the listen backlog below the burst")
def test_listen_backlog_holds_a_burst():
    """A burst of connects completes its handshakes even before the server
    accepts any: the listen backlog is not std's 128. With 128, the kernel drops
    the rest of the burst's handshakes and they wait for retransmits (1, 2,
    4... s); under a steady burst some are reset (bench/idle.py saw 281 of
    10,000)."""
    server = rframe.Server(port=0)  # bound and listening, not accepting yet
    socks = []
    try:
        for _ in range(BURST):
            s = socket.socket()
            s.setblocking(False)
            socks.append(s)
            assert s.connect_ex(server.address) in (0, errno.EINPROGRESS)
        poll = select.poll()
        for s in socks:
            poll.register(s, select.POLLOUT)

        def connected():
            return len(poll.poll(0)) == len(socks)

        assert wait_until(connected, HANG_BOUND), "the burst did not fit in the listen backlog"
        for s in socks:
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        server.start()  # and every one of them is served
        for s in socks[:5]:
            s.setblocking(True)
            s.settimeout(HANG_BOUND)
            s.sendall(rframe.pack_frame(b"", {"op": "auth"}))
            assert rframe.read_frame(s).header["op"] == "welcome"
    finally:
        for s in socks:
            s.close()
        server.stop()


def _cli_stderr(*args, preexec_fn=None):
    """Starts ``python -m rframe.server --port 0 ARGS``, waits until it listens,
    reads its open files limit, stops it; returns (limits, stderr)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "rframe.server", "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=ENV,
        cwd=ROOT,
        preexec_fn=preexec_fn,
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], HANG_BOUND)
        assert ready and b"listening on" in proc.stdout.readline(), "the server did not start"
        limits = idle.nofile_of(proc.pid)
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=HANG_BOUND)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=HANG_BOUND)
    return limits, err.decode(errors="replace")


def test_cli_raises_its_open_files_limit():
    """python -m rframe.server raises its soft limit on open files to the hard
    limit, as servers do: a shell's soft limit (often 1024) would cap its
    connections far below --max-connections."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 256:
        pytest.skip(f"the hard limit on open files is {hard}")

    def lower():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    limits, err = _cli_stderr(preexec_fn=lower)
    expected = hard if hard != resource.RLIM_INFINITY else 1 << 20
    assert limits == (expected, hard), limits
    assert "open files limit raised from 256 to" in err, err


def test_cli_warns_when_the_limit_is_below_max_connections():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit on open files")
    _, err = _cli_stderr("--max-connections", str(hard + 1000))
    assert f"is below --max-connections ({hard + 1000})" in err, err
