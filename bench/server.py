#!/usr/bin/env python3
"""Benchmark rframe.Server against the Python servers it replaces.

Every number is measured in this run, on this machine; nothing is hard-coded.

1. Round trips of small frames (JSON header ``{"seq": n}`` and a 16..64-byte
   lowercase body) through a handler that upper-cases the body and echoes the
   header, 64 concurrent connections, each doing request/response in a loop.
   Every server runs in a process of its own, and the same client process
   (asyncio streams on uvloop, or plain asyncio without it) drives each one.
   The servers:

   * ``rframe.Server(handler=upper)``;
   * ``socketserver.ThreadingTCPServer``, the course's style: exact ``recv``
     loops, ``struct`` + ``json``, a thread per connection, and the reply
     written with three ``send`` calls (length, header, body) as the course does;
   * an asyncio streams server (``readexactly``, ``struct`` + ``json``);
   * the same on uvloop;
   * Twisted's ``Int32StringReceiver`` (big-endian length, no JSON header);
   * for comparison with Twisted, rframe with the same length-only codec;
   * both rframe servers again over TLS 1.3 (``tls=True``, a certificate
     generated into a temporary directory), driven by the same client with an
     ``ssl.SSLContext`` that checks the server's certificate fingerprint.
     Every connection, TLS handshake included, is opened before the warm-up:
     the timed rounds carry requests only.

   Reported: requests/s (wall time of the measured phase), per-request latency
   p50/p99 as the client sees it, and the server process's CPU time (user +
   system of all its threads, from its CPU-time clock) per request.

   Then the same servers (all but the course-style one) again, driven by a
   native client (``bench/loadgen``, Rust: tokio on one thread, rustls with
   the same fingerprint check, the same requests and checks), built with
   cargo on first use (skipped with a note where cargo is missing). The
   Python client spends 15-40 us of CPU per request, more than most servers
   do, and its TLS (CPython's ``ssl``) more still; on two cores that client
   sets the rate. The native client's rounds measure the servers, and the
   TLS targets are judged on them.

2. ``run("true")`` from 8 concurrent clients against rframe's command server,
   against the rate at which this machine spawns
   ``subprocess.run("true", shell=True)`` from 8 threads, in the same run.

Run::

    python bench/server.py              # full run, 2-3 minutes on 2 cores
    python bench/server.py --quick      # a few seconds (smoke test)
    python bench/server.py --json out.json

See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import select
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_seconds  # noqa: E402 - bench/machine.py

HOST = "127.0.0.1"

# --------------------------------------------------------------------------
# The servers (each runs in its own process: ``server.py --serve KIND``)
# --------------------------------------------------------------------------

# kind -> (client framing, description)
KINDS = {
    "rframe": ("json", "rframe.Server(handler=upper)"),
    "rframe-tls": ("json", "rframe.Server(handler=upper, tls=True), TLS 1.3"),
    "threading": ("json", "socketserver.ThreadingTCPServer, struct + json (course style)"),
    "asyncio": ("json", "asyncio streams, struct + json"),
    "uvloop": ("json", "asyncio streams on uvloop, struct + json"),
    "twisted": ("int32", "Twisted Int32StringReceiver (no JSON header)"),
    "rframe-int32": ("int32", "rframe.Server(handler=upper, codec=Codec(json_header=False, byteorder='big'))"),
    "rframe-int32-tls": (
        "int32",
        "rframe.Server(handler=upper, codec=Codec(json_header=False, byteorder='big'), tls=True), TLS 1.3",
    ),
    "rframe-cmd": ("json", "rframe.Server() command server"),
}


# the servers that speak TLS: the driver gives each a certificate directory
# of its own (--tls-dir) and pins the fingerprint the server announces
TLS_KINDS = {"rframe-tls", "rframe-int32-tls"}
ALPN = "rframe/1"


def _announce(port, fingerprint=None):
    """The first line of a server's stdout is its port, then, for a TLS
    server, a space and its certificate's fingerprint (hex SHA-256 of the DER)."""
    sys.stdout.write(f"{port}\n" if fingerprint is None else f"{port} {fingerprint}\n")
    sys.stdout.flush()


def serve_rframe(port, length_only=False, tls_dir=None):
    import rframe

    if length_only:

        def upper(frame):
            return frame.body.upper()

        codec = rframe.Codec(json_header=False, byteorder="big")
    else:

        def upper(frame):
            return frame.header, frame.body.upper()

        codec = None
    if tls_dir is None:
        server = rframe.Server(HOST, port, handler=upper, codec=codec)
    else:
        server = rframe.Server(HOST, port, handler=upper, codec=codec, tls=True, tls_dir=tls_dir)
    _announce(server.address[1], server.tls_fingerprint)
    server.serve_forever()


def serve_rframe_cmd(port):
    import rframe

    server = rframe.Server(HOST, port)
    _announce(server.address[1])
    server.serve_forever()


def _recv_exact(conn, n):
    """The course's loop: recv until n bytes arrived; None on a clean EOF."""
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            if data:
                raise ConnectionResetError("peer closed mid-frame")
            return None
        data += chunk
    return data


class CourseUpperHandler(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        while True:
            head = _recv_exact(conn, 4)
            if head is None:
                return
            hlen = struct.unpack("i", head)[0]
            header = json.loads(_recv_exact(conn, hlen).decode("utf-8"))
            body = _recv_exact(conn, header["total_size"]) if header["total_size"] else b""
            body = body.upper()
            header["total_size"] = len(body)
            head_bytes = json.dumps(header).encode("utf-8")
            # the course sends length, header and body with three calls
            conn.sendall(struct.pack("i", len(head_bytes)))
            conn.sendall(head_bytes)
            conn.sendall(body)


def serve_threading(port):
    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

    server = Server((HOST, port), CourseUpperHandler)
    _announce(server.server_address[1])
    server.serve_forever()


async def _asyncio_upper(reader, writer):
    unpack = struct.Struct("<i").unpack
    pack = struct.Struct("<i").pack
    try:
        while True:
            (hlen,) = unpack(await reader.readexactly(4))
            header = json.loads(await reader.readexactly(hlen))
            body = await reader.readexactly(header["total_size"])
            body = body.upper()
            header["total_size"] = len(body)
            hb = json.dumps(header).encode()
            writer.write(pack(len(hb)) + hb + body)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _asyncio_main(port):
    server = await asyncio.start_server(_asyncio_upper, HOST, port, backlog=128)
    _announce(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def serve_asyncio(port):
    asyncio.run(_asyncio_main(port))


def serve_uvloop(port):
    import uvloop

    uvloop.run(_asyncio_main(port))


def serve_twisted(port):
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import Int32StringReceiver

    class Upper(Int32StringReceiver):
        def stringReceived(self, string):
            self.sendString(string.upper())

    listening = reactor.listenTCP(port, Factory.forProtocol(Upper), backlog=128, interface=HOST)
    _announce(listening.getHost().port)
    reactor.run()


SERVE = {
    "rframe": serve_rframe,
    "rframe-tls": lambda port, tls_dir: serve_rframe(port, tls_dir=tls_dir),
    "rframe-int32": lambda port: serve_rframe(port, length_only=True),
    "rframe-int32-tls": lambda port, tls_dir: serve_rframe(port, length_only=True, tls_dir=tls_dir),
    "rframe-cmd": serve_rframe_cmd,
    "threading": serve_threading,
    "asyncio": serve_asyncio,
    "uvloop": serve_uvloop,
    "twisted": serve_twisted,
}


def serve(kind, port, tls_dir):
    """Runs one server in the foreground until SIGTERM or Ctrl-C. A TLS
    server without ``tls_dir`` keeps its certificate in a temporary
    directory, removed when it stops."""
    # SIGTERM (how the driver stops a server) as SystemExit, so that the
    # finally clauses run
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    if kind not in TLS_KINDS:
        SERVE[kind](port)
        return
    made = tls_dir is None
    if made:
        tls_dir = tempfile.mkdtemp(prefix="rframe-bench-tls-")
    try:
        SERVE[kind](port, tls_dir)
    finally:
        if made:
            shutil.rmtree(tls_dir, ignore_errors=True)


def available(kind):
    """None if the server can run here, else why not."""
    mod = {"uvloop": "uvloop", "twisted": "twisted"}.get(kind)
    if mod is None:
        return None
    try:
        __import__(mod)
    except ImportError:
        return f"`{mod}` is not installed (pip install {mod})"
    return None


# --------------------------------------------------------------------------
# The client (its own process: ``server.py --_client JSON``)
# --------------------------------------------------------------------------
#
# Talks to the driver through lines: after connecting and warming up it prints
# "ready"; then for each "go" on stdin it runs one measured round and prints
# its result as one JSON line; "quit" ends it.

_LE = struct.Struct("<i")
_BE = struct.Struct(">I")


def _json_frame(header, body):
    d = {**header, "total_size": len(body)}
    hb = json.dumps(d).encode()
    return _LE.pack(len(hb)) + hb + body


async def _read_json_frame(reader):
    (hlen,) = _LE.unpack(await reader.readexactly(4))
    header = json.loads(await reader.readexactly(hlen))
    size = header["total_size"]
    body = await reader.readexactly(size) if size else b""
    return header, body


async def _read_int32_frame(reader):
    (size,) = _BE.unpack(await reader.readexactly(4))
    return None, (await reader.readexactly(size) if size else b"")


def _make_work(workload, framing, n, rng, seq0):
    """Pre-built requests and a checker for each reply, so that the measured
    loop does only I/O, framing and one comparison."""
    reqs = []
    for i in range(n):
        seq = seq0 + i
        if workload == "run-true":
            reqs.append((_json_frame({"op": "run", "cmd": "true"}, b""), None))
            continue
        body = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(16, 64)))
        if framing == "json":
            wire = _json_frame({"seq": seq}, body)
        else:
            wire = _BE.pack(len(body)) + body
        reqs.append((wire, (seq, body.upper())))
    return reqs


def _check(workload, framing, expect, header, body):
    if workload == "run-true":
        if header.get("op") != "result" or header.get("returncode") != 0:
            raise RuntimeError(f"unexpected reply to run('true'): {header!r} {body[:200]!r}")
        return
    seq, upper = expect
    if body != upper or (framing == "json" and header.get("seq") != seq):
        raise RuntimeError(f"wrong reply: {header!r} {body!r}, expected seq {seq} and {upper!r}")


async def _client_conn(reader, writer, reqs, workload, framing, lat):
    read = _read_json_frame if framing == "json" else _read_int32_frame
    perf = time.perf_counter
    write = writer.write
    append = lat.append
    for wire, expect in reqs:
        t0 = perf()
        write(wire)
        header, body = await read(reader)
        append(perf() - t0)
        _check(workload, framing, expect, header, body)


def tls_context():
    """The client's TLS: 1.3 only, ALPN ``rframe/1``, no CA or host name check
    (the server's certificate is self-signed): the peer is judged by its
    fingerprint instead, checked after the handshake by :func:`check_peer`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols([ALPN])
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_peer(writer, fingerprint):
    """Before anything is sent: the server's certificate is the one it
    announced, and it chose rframe's protocol."""
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    got = hashlib.sha256(der).hexdigest() if der else None
    if got != fingerprint:
        raise RuntimeError(f"TLS: the server's certificate has fingerprint {got}, expected {fingerprint}")
    if ssl_object.version() != "TLSv1.3" or ssl_object.selected_alpn_protocol() != ALPN:
        raise RuntimeError(
            f"TLS: {ssl_object.version()} with ALPN {ssl_object.selected_alpn_protocol()!r}, "
            f"expected TLSv1.3 with {ALPN!r}"
        )


async def _client_main(cfg):
    port, framing, workload = cfg["port"], cfg["framing"], cfg["workload"]
    nconn, requests, warmup = cfg["conns"], cfg["requests"], cfg["warmup"]
    fingerprint = cfg.get("fingerprint")
    ctx = tls_context() if fingerprint else None
    rng = random.Random(1234)
    conns = []
    # every connection (and its TLS handshake) is made before the warm-up:
    # the rounds time requests only
    for _ in range(nconn):
        reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port, ssl=ctx), 10)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ctx is not None:
            check_peer(writer, fingerprint)
        conns.append((reader, writer))

    def split(total, seq0):
        per = [total // nconn + (1 if i < total % nconn else 0) for i in range(nconn)]
        out, s = [], seq0
        for k in per:
            out.append(_make_work(workload, framing, k, rng, s))
            s += k
        return out

    async def round_(work):
        lat = []
        t0 = time.perf_counter()
        await asyncio.gather(*(_client_conn(r, w, reqs, workload, framing, lat) for (r, w), reqs in zip(conns, work)))
        return time.perf_counter() - t0, lat

    loop = asyncio.get_running_loop()
    stdin_line = lambda: loop.run_in_executor(None, sys.stdin.readline)  # noqa: E731

    await round_(split(warmup, 0))
    seq0 = warmup
    print("ready", flush=True)
    while True:
        cmd = (await stdin_line()).strip()
        if cmd != "go":
            break
        work = split(requests, seq0)
        seq0 += requests
        t_cpu0 = time.process_time()
        wall, lat = await round_(work)
        t_cpu = time.process_time() - t_cpu0
        lat.sort()
        n = len(lat)
        print(
            json.dumps(
                {
                    "requests": n,
                    "wall": wall,
                    "p50": lat[n // 2],
                    "p99": lat[min(n - 1, (n * 99) // 100)],
                    "client_cpu": t_cpu,
                }
            ),
            flush=True,
        )
    for _, w in conns:
        w.close()


def client_entry(cfg_json):
    cfg = json.loads(cfg_json)
    try:
        if cfg.get("uvloop"):
            import uvloop

            uvloop.run(_client_main(cfg))
        else:
            asyncio.run(_client_main(cfg))
    except Exception as e:  # report, so the driver can show it
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    return 0


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------


class LineReader:
    """Lines from a child's pipe, each wait bounded."""

    def __init__(self, f):
        self.fd = f.fileno()
        self.buf = b""

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {timeout:.0f} s")
            r, _, _ = select.select([self.fd], [], [], left)
            if r:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise EOFError("the process exited")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def stop_process(proc, grace=5.0):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=grace)


class ServerProcess:
    def __init__(self, kind):
        self.kind = kind
        self.err = tempfile.TemporaryFile()
        self.tls_dir = tempfile.mkdtemp(prefix="rframe-bench-tls-") if kind in TLS_KINDS else None
        argv = [sys.executable, os.path.abspath(__file__), "--serve", kind, "--port", "0"]
        if self.tls_dir:
            argv += ["--tls-dir", self.tls_dir]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL)
        try:
            first = LineReader(self.proc.stdout).readline(30).split()
            self.port = int(first[0])
            self.fingerprint = first[1] if kind in TLS_KINDS else None
        except (TimeoutError, EOFError, ValueError, IndexError) as e:
            self.close()
            raise RuntimeError(f"server {kind!r} did not start: {e}; stderr: {self.stderr_tail()}") from None

    @property
    def pid(self):
        return self.proc.pid

    def stderr_tail(self):
        self.err.seek(0)
        return self.err.read()[-2000:].decode(errors="replace").strip() or "(empty)"

    def close(self):
        try:
            stop_process(self.proc)
        finally:
            self.proc.stdout.close()
            if self.tls_dir:
                shutil.rmtree(self.tls_dir, ignore_errors=True)


LOADGEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "loadgen")


def native_client():
    """The native client (bench/loadgen, Rust), built on first use: (path,
    None), or (None, why not)."""
    if shutil.which("cargo") is None:
        return None, "no `cargo` on PATH to build bench/loadgen"
    built = subprocess.run(
        ["cargo", "build", "--release", "--quiet", "--manifest-path", os.path.join(LOADGEN_DIR, "Cargo.toml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if built.returncode != 0:
        return None, "bench/loadgen did not build: " + built.stderr.strip()[-500:]
    return os.path.join(LOADGEN_DIR, "target", "release", "rframe-loadgen"), None


class ClientProcess:
    """The benchmark's client in a process of its own: the Python one
    (``native=None``), or the native one at that path."""

    def __init__(self, cfg, timeout, native=None):
        argv = [native] if native else [sys.executable, os.path.abspath(__file__), "--_client"]
        self.proc = subprocess.Popen(argv + [json.dumps(cfg)], stdout=subprocess.PIPE, stdin=subprocess.PIPE)
        self.lines = LineReader(self.proc.stdout)
        self.timeout = timeout
        line = self._line()
        if line != "ready":
            self.close()
            raise RuntimeError(f"client: {line}")

    def _line(self):
        line = self.lines.readline(self.timeout)
        if line.startswith("{") and "error" in json.loads(line):
            raise RuntimeError("client: " + json.loads(line)["error"])
        return line

    def go(self):
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()
        return json.loads(self._line())

    def close(self):
        try:
            if self.proc.poll() is None:
                try:
                    self.proc.stdin.write(b"quit\n")
                    self.proc.stdin.flush()
                    self.proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            stop_process(self.proc)
            self.proc.stdin.close()
            self.proc.stdout.close()


class Bench:
    """One server process and its client process, warmed up and ready for
    measured rounds."""

    def __init__(self, kind, framing, workload, conns, requests, warmup, use_uvloop, timeout, native=None):
        self.kind = kind
        self.server = ServerProcess(kind)
        self.client = None
        self.rounds = []
        try:
            cfg = {
                "port": self.server.port,
                "framing": framing,
                "workload": workload,
                "conns": conns,
                "requests": requests,
                "warmup": warmup,
                "uvloop": use_uvloop,
                "fingerprint": self.server.fingerprint,
            }
            self.client = ClientProcess(cfg, timeout, native)
        except Exception as e:
            self.close()
            raise RuntimeError(f"{kind}: {e}; server stderr: {self.server.stderr_tail()}") from None

    def round(self):
        """One measured round, bracketed by readings of the server's CPU time."""
        try:
            c0 = cpu_seconds(self.server.pid)
            r = self.client.go()
            r["server_cpu"] = cpu_seconds(self.server.pid) - c0
        except Exception as e:
            raise RuntimeError(f"{self.kind}: {e}; server stderr: {self.server.stderr_tail()}") from None
        self.rounds.append(r)
        return r

    def close(self):
        try:
            if self.client is not None:
                self.client.close()
        finally:
            self.server.close()


def measure(kinds, workload, conns, requests, warmup, rounds, budget, use_uvloop, timeout, failed, native=None):
    """Starts every server of ``kinds`` (each in its own process, with its own
    client process), warms each up, then runs up to ``rounds`` measured rounds
    round-robin (rotating the order), so that a noisy moment of the machine
    hits every server alike. A server stops getting rounds once ``budget``
    seconds of measured time were spent on it. Returns kind -> rounds."""
    benches = {}
    try:
        for kind in kinds:
            try:
                benches[kind] = Bench(
                    kind, KINDS[kind][0], workload, conns, requests, warmup, use_uvloop, timeout, native
                )
            except Exception as e:
                failed[kind] = str(e)
        live = list(benches)
        for i in range(rounds):
            order = live[i % len(live) :] + live[: i % len(live)] if live else []
            for kind in order:
                b = benches[kind]
                if sum(r["wall"] for r in b.rounds) > budget:
                    continue
                try:
                    b.round()
                except Exception as e:
                    failed[kind] = str(e)
                    live.remove(kind)
                    b.close()
        return {k: b.rounds for k, b in benches.items() if b.rounds and k not in failed}
    finally:
        for b in benches.values():
            b.close()


def summarize(rounds):
    """Best of the rounds: the highest rate and the lowest server CPU per
    request; latencies from the round with the highest rate."""
    best = max(rounds, key=lambda r: r["requests"] / r["wall"])
    return {
        "rate": best["requests"] / best["wall"],
        "p50_us": best["p50"] * 1e6,
        "p99_us": best["p99"] * 1e6,
        "server_cpu_us": min(r["server_cpu"] / r["requests"] for r in rounds) * 1e6,
        "server_busy": best["server_cpu"] / best["wall"],
        "client_cpu_us": best["client_cpu"] / best["requests"] * 1e6,
        "rounds": len(rounds),
        "raw": rounds,
    }


def local_spawn(n, threads, rounds):
    """Best-of-``rounds`` rate of ``subprocess.run("true", shell=True)`` from
    ``threads`` threads, ``n`` runs per round."""

    def one(_):
        return subprocess.run("true", shell=True).returncode

    best = 0.0
    raw = []
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(threads)))  # warm up the threads
        for _ in range(rounds):
            t0 = time.perf_counter()
            codes = list(pool.map(one, range(n)))
            dt = time.perf_counter() - t0
            if any(codes):
                raise RuntimeError(f"`true` failed locally: {set(codes)}")
            raw.append(dt)
            best = max(best, n / dt)
    return {"rate": best, "raw": raw}


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def fmt(x, nd=0):
    if x is None:
        return "n/a"
    return f"{x:,.{nd}f}"


def fmt_ratio(r):
    return "n/a" if r is None else f"{r:.2f}x"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a few seconds), for smoke tests")
    ap.add_argument("--markdown", action="store_true", default=True, help="markdown table output (the default)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers to PATH as JSON")
    ap.add_argument(
        "--only",
        metavar="KIND",
        action="append",
        choices=list(KINDS) + ["spawn"],
        help="run only these rows (repeatable; 'rframe-cmd' and 'spawn' make up part 2)",
    )
    ap.add_argument("--requests", type=int, help="requests per measured round (default 20000; --quick 2000)")
    ap.add_argument("--rounds", type=int, help="measured rounds per server, best of (default 7; --quick 1)")
    ap.add_argument("--no-uvloop-client", action="store_true", help="drive the servers with plain asyncio")
    ap.add_argument(
        "--no-native-client",
        action="store_true",
        help="skip the second pass, with the native client (bench/loadgen, built with cargo)",
    )
    ap.add_argument(
        "--serve",
        metavar="KIND",
        choices=list(SERVE),
        help="run one server in the foreground (prints its port first), e.g. for perf",
    )
    ap.add_argument("--port", type=int, default=0, help="port for --serve (0: a free one)")
    ap.add_argument(
        "--tls-dir",
        metavar="DIR",
        help="for --serve of a TLS server: where its generated certificate is kept "
        "(default: a temporary directory, removed when it stops)",
    )
    ap.add_argument(
        "--drive",
        metavar="PORT",
        type=int,
        help="only drive a server already listening on PORT (e.g. one started with --serve, "
        "to profile it) with the benchmark's client, and print each round",
    )
    ap.add_argument("--framing", choices=["json", "int32"], default="json", help="the client's framing for --drive")
    ap.add_argument(
        "--fingerprint",
        metavar="HEX",
        help="for --drive: connect with TLS and pin this certificate fingerprint "
        "(a TLS server started with --serve prints it after its port)",
    )
    ap.add_argument("--_client", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.serve:
        try:
            serve(args.serve, args.port, args.tls_dir)
        except KeyboardInterrupt:
            pass
        return 0
    if args._client:
        return client_entry(args._client)

    if args.quick:
        requests, rounds, run_n, run_rounds = 2_000, 1, 40, 1
    else:
        requests, rounds, run_n, run_rounds = 20_000, 7, 400, 3
    requests = args.requests or requests
    rounds = args.rounds or rounds
    conns, run_conns = 64, 8
    warmup = max(conns * 4, requests // 10)
    budget = 10.0 if args.quick else 20.0  # measured seconds per server, at most
    timeout = 180.0  # for any one answer from a client

    use_uvloop = not args.no_uvloop_client and available("uvloop") is None

    if args.drive:
        cfg = {
            "port": args.drive,
            "framing": args.framing,
            "workload": "upper",
            "conns": conns,
            "requests": requests,
            "warmup": warmup,
            "uvloop": use_uvloop,
            "fingerprint": args.fingerprint,
        }
        client = ClientProcess(cfg, timeout)
        try:
            for _ in range(rounds):
                r = client.go()
                print(
                    f"{r['requests'] / r['wall']:,.0f} req/s, p50 {r['p50'] * 1e6:,.0f} us, "
                    f"p99 {r['p99'] * 1e6:,.0f} us, client CPU {r['client_cpu'] / r['requests'] * 1e6:.1f} us/req",
                    flush=True,
                )
        finally:
            client.close()
        return 0
    only = set(args.only or [])
    want = lambda k: not only or k in only  # noqa: E731

    t_start = time.perf_counter()
    results, skipped, failed = {}, {}, {}
    order = ["rframe", "rframe-tls", "uvloop", "asyncio", "twisted", "rframe-int32", "rframe-int32-tls", "threading"]
    fast, slow = [], []
    for kind in order:
        if not want(kind):
            continue
        why = available(kind)
        if why:
            skipped[kind] = why
        else:
            (slow if kind == "threading" else fast).append(kind)
    # the course-style server is ~15x slower: it runs on its own afterwards,
    # within the same time budget
    for group in (fast, slow):
        if group:
            got = measure(group, "upper", conns, requests, warmup, rounds, budget, use_uvloop, timeout, failed)
            results.update((k, summarize(r)) for k, r in got.items())
    # the same servers again, driven by a client that costs a few us per
    # request where the Python one costs tens: these rounds measure the server
    native_results, native_failed = {}, {}
    native_skipped = "--no-native-client" if args.no_native_client else None
    if fast and not native_skipped:
        native, native_skipped = native_client()
        if native:
            got = measure(
                fast, "upper", conns, requests, warmup, rounds, budget, use_uvloop, timeout, native_failed, native
            )
            native_results.update((k, summarize(r)) for k, r in got.items())

    spawn = cmd = None
    if want("rframe-cmd") or want("spawn"):
        # interleave the two so that both see the same machine
        spawn_raw, cmd_raw = [], []
        bench = None
        try:
            if want("rframe-cmd"):
                bench = Bench("rframe-cmd", "json", "run-true", run_conns, run_n, run_conns * 2, use_uvloop, timeout)
            for _ in range(run_rounds):
                if want("spawn"):
                    spawn_raw.append(local_spawn(run_n, run_conns, 1)["raw"][0])
                if bench is not None:
                    cmd_raw.append(bench.round())
        except Exception as e:
            failed["rframe-cmd"] = str(e)
        finally:
            if bench is not None:
                bench.close()
        if spawn_raw:
            spawn = {"rate": max(run_n / dt for dt in spawn_raw), "raw": spawn_raw}
        if cmd_raw:
            cmd = summarize(cmd_raw)
    elapsed = time.perf_counter() - t_start

    # ------------------------------------------------------------------ output
    try:
        from importlib.metadata import version

        rver = version("rframe")
    except Exception:
        rver = "?"
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()

    def ver(mod):
        try:
            return __import__(mod).__version__
        except Exception:
            return "not installed"

    try:
        import twisted

        tw = twisted.__version__
    except Exception:
        tw = "not installed"

    print("# rframe server benchmark" + (" (--quick)" if args.quick else ""))
    print()
    print(
        f"- Python {platform.python_version()} ({platform.python_implementation()}), rframe {rver}, "
        f"uvloop {ver('uvloop')}, Twisted {tw}"
    )
    print(f"- machine: {platform.platform()}, {platform.machine()}, nproc={ncpu}")
    print(
        f"- client: asyncio streams{' on uvloop' if use_uvloop else ' (no uvloop)'}, one process, "
        f"{conns} connections, {requests:,} requests per round after {warmup:,} warm-up requests; "
        f"best of up to {rounds} rounds (highest req/s, lowest CPU/request); whole run {elapsed:.1f} s"
    )
    print(
        "- TLS rows: TLS 1.3, the client (the same one, with an ssl.SSLContext) checks the server's "
        "certificate fingerprint; connections and their handshakes are set up before the warm-up, "
        "so the timed rounds carry requests only"
    )
    print(
        "- latency: one request's write to its whole reply, as the client sees it (us); "
        "server CPU: user+system time of the server process, all threads (its CPU-time clock), "
        "per request (us); busy: server CPU time / wall time (1.00 = one core)"
    )
    print()
    framing_label = {"json": "struct `<i` + JSON header", "int32": "`>I` length only"}

    def table(results, kinds, failed):
        cols = (
            "server",
            "framing",
            "req/s",
            "p50 us",
            "p99 us",
            "server CPU us/req",
            "server busy",
            "client CPU us/req",
        )
        print("| " + " | ".join(cols) + " |")
        print("|" + "|".join(["---", "---", "---:", "---:", "---:", "---:", "---:", "---:"]) + "|")
        for kind in kinds:
            label = KINDS[kind][1]
            fl = framing_label[KINDS[kind][0]]
            if kind in results:
                r = results[kind]
                print(
                    f"| {label} | {fl} | {fmt(r['rate'])} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | "
                    f"{fmt(r['server_cpu_us'], 1)} | {r['server_busy']:.2f} | {fmt(r['client_cpu_us'], 1)} |"
                )
            elif kind in skipped:
                print(f"| {label} | {fl} | skipped: {skipped[kind]} | | | | | |")
            elif kind in failed:
                print(f"| {label} | {fl} | FAILED (see below) | | | | | |")
        print()

    table(results, order, failed)
    print(
        "The same servers driven by the native client (bench/loadgen: Rust, tokio on one thread, rustls with "
        "the same fingerprint check; the same connections, requests and checks), which spends a few us of CPU "
        "per request where the Python client spends tens: here the server, not the client, sets the rate."
    )
    print()
    if native_results or native_failed:
        table(native_results, fast, native_failed)
    else:
        print(f"Skipped: {native_skipped}.")
        print()

    if cmd or spawn:
        print(f'## run("true"), {run_conns} concurrent clients, {run_n} runs per round, best of {run_rounds}')
        print()
        print("| what | runs/s | p50 us | p99 us | server CPU us/run |")
        print("|---|---:|---:|---:|---:|")
        if spawn:
            print(f'| local `subprocess.run("true", shell=True)`, {run_conns} threads | {fmt(spawn["rate"])} | | | |')
        if cmd:
            print(
                f'| rframe command server, `{{"op": "run", "cmd": "true"}}` over {run_conns} connections | '
                f"{fmt(cmd['rate'])} | {fmt(cmd['p50_us'])} | {fmt(cmd['p99_us'])} | {fmt(cmd['server_cpu_us'], 1)} |"
            )
        print()

    ratios = []

    def ratio(name, num, den, target, ok):
        if num is None or den is None:
            ratios.append((name, None, target, "n/a"))
            return
        r = num / den
        ratios.append((name, r, target, "yes" if ok(r) else "no"))

    rf, uv = results.get("rframe"), results.get("uvloop")
    ratio(
        "rframe CPU/request vs the uvloop server's",
        rf and rf["server_cpu_us"],
        uv and uv["server_cpu_us"],
        "<= 0.67x",
        lambda r: r <= 2 / 3,
    )
    ratio("rframe req/s vs the uvloop server's", rf and rf["rate"], uv and uv["rate"], ">= 1x", lambda r: r >= 1)
    for peer in ("asyncio", "twisted", "threading"):
        p = results.get(peer)
        if p and rf:
            ratio(f"rframe CPU/request vs {peer}", rf["server_cpu_us"], p["server_cpu_us"], "(info)", lambda r: True)
    # TLS against plaintext: the targets are the server's, so they are judged
    # on the native client's rounds; the Python client's are shown beside
    nf, nt = native_results.get("rframe"), native_results.get("rframe-tls")
    ratio(
        "rframe TLS server CPU/request vs rframe plaintext, native client",
        nt and nt["server_cpu_us"],
        nf and nf["server_cpu_us"],
        "<= 1.3x",
        lambda r: r <= 1.3,
    )
    ratio(
        "rframe TLS req/s vs rframe plaintext, native client",
        nt and nt["rate"],
        nf and nf["rate"],
        ">= 0.8x",
        lambda r: r >= 0.8,
    )
    rt = results.get("rframe-tls")
    ratio(
        "rframe TLS server CPU/request vs rframe plaintext, Python client",
        rt and rt["server_cpu_us"],
        rf and rf["server_cpu_us"],
        "(info)",
        lambda r: True,
    )
    ratio(
        "rframe TLS req/s vs rframe plaintext, Python client (the client's TLS sets the rate)",
        rt and rt["rate"],
        rf and rf["rate"],
        "(info)",
        lambda r: True,
    )
    ri, tw_r = results.get("rframe-int32"), results.get("twisted")
    if ri and tw_r:
        ratio(
            "rframe length-only CPU/request vs Twisted",
            ri["server_cpu_us"],
            tw_r["server_cpu_us"],
            "(info)",
            lambda r: True,
        )
        ratio("rframe length-only req/s vs Twisted", ri["rate"], tw_r["rate"], "(info)", lambda r: True)
    rit = results.get("rframe-int32-tls")
    if ri and rit:
        ratio(
            "rframe length-only TLS server CPU/request vs plaintext",
            rit["server_cpu_us"],
            ri["server_cpu_us"],
            "(info)",
            lambda r: True,
        )
        ratio("rframe length-only TLS req/s vs plaintext", rit["rate"], ri["rate"], "(info)", lambda r: True)
    ratio(
        'rframe run("true") runs/s vs local subprocess.run',
        cmd and cmd["rate"],
        spawn and spawn["rate"],
        ">= 0.80x",
        lambda r: r >= 0.8,
    )

    print("## Ratios")
    print()
    print("| ratio | value | target | met |")
    print("|---|---:|---|---|")
    for name, r, target, met in ratios:
        if target == "(info)":
            met = "-"
        print(f"| {name} | {fmt_ratio(r)} | {target} | {met} |")

    for kind, why in skipped.items():
        print(f"\nNote: {kind} skipped: {why}")
    for kind, why in failed.items():
        print(f"\nFAILED {kind}: {why}")
    for kind, why in native_failed.items():
        print(f"\nFAILED {kind} (native client): {why}")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": platform.python_version(),
                    "machine": platform.platform(),
                    "nproc": ncpu,
                    "rframe": rver,
                    "client_uvloop": use_uvloop,
                    "quick": args.quick,
                    "conns": conns,
                    "requests": requests,
                    "warmup": warmup,
                    "servers": results,
                    "skipped": skipped,
                    "failed": failed,
                    "native_client": {"servers": native_results, "failed": native_failed, "skipped": native_skipped},
                    "run_true": {"conns": run_conns, "runs": run_n, "local_spawn": spawn, "rframe": cmd},
                    "ratios": [{"name": n, "value": r, "target": t, "met": m} for n, r, t, m in ratios],
                    "elapsed": elapsed,
                },
                f,
                indent=2,
            )
    return 1 if failed or native_failed else 0


if __name__ == "__main__":
    sys.exit(main())
