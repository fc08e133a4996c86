#!/usr/bin/env python3
"""Benchmark rframe.AsyncClient against a pure-asyncio client.

Every number is measured in this run, on this machine; nothing is hard-coded.

Echo round trips of small frames (JSON header ``{"seq": n}``, a 16..64-byte
body) over 50 connections from one event loop, each connection doing request,
whole reply, next request. The server is ``rframe.Server(handler=echo)`` in a
process of its own; the clients run in this process, one at a time:

* rframe: ``await client.request(body, seq=n)`` on ``rframe.AsyncClient``;
* pure asyncio: ``asyncio.open_connection``, ``json.dumps`` + ``struct.pack``
  and one ``write`` per request, ``readexactly`` for the length, the header
  and the body, ``json.loads``.

Both on the default event loop and on uvloop. Reported: requests/s (wall time
of the measured phase) and the client process's CPU time per request
(``time.process_time()``: user + system, all threads). If the
``rframe_wakeup_probe`` module (bench/wakeup) is installed, also the CPU an
event loop spends per await of an awaitable that a tokio thread completes
through pyo3-async-runtimes, the design rframe did not take.

Run::

    python bench/async.py            # full run, about a minute on 2 cores
    python bench/async.py --quick    # a few seconds (smoke test)

See bench/README.md for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import platform
import random
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HOST = "127.0.0.1"

# --------------------------------------------------------------------------
# The server (its own process: ``async.py --serve``)
# --------------------------------------------------------------------------


def serve(port):
    import rframe

    def echo(frame):
        return frame

    server = rframe.Server(HOST, port, handler=echo)
    sys.stdout.write(f"{server.address[1]}\n")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


class ServerProcess:
    def __init__(self):
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=self.err,
            stdin=subprocess.DEVNULL,
        )
        try:
            ready, _, _ = select.select([self.proc.stdout], [], [], 30)
            line = self.proc.stdout.readline() if ready else b""
            self.port = int(line)
        except ValueError:
            self.close()
            self.err.seek(0)
            raise RuntimeError(
                f"the server did not start: {self.err.read()[-2000:].decode(errors='replace')}"
            ) from None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc.stdout.close()
        self.err.close()


# --------------------------------------------------------------------------
# The clients
# --------------------------------------------------------------------------

_LE = struct.Struct("<i")


def make_work(nconn, total, rng, seq0=0):
    """Per connection, a list of (seq, body): the bodies are built before timing."""
    per = [total // nconn + (1 if i < total % nconn else 0) for i in range(nconn)]
    work, seq = [], seq0
    for k in per:
        reqs = []
        for _ in range(k):
            body = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(16, 64)))
            reqs.append((seq, body))
            seq += 1
        work.append(reqs)
    return work


def _bad(seq, header, body, expected):
    raise RuntimeError(f"wrong reply {header!r} {body!r} to seq {seq}, expected {expected!r}")


# -- rframe


async def _open_rframe(port):
    import rframe

    return await rframe.AsyncClient.connect(HOST, port)


async def _close_rframe(client):
    await client.close()


async def _rframe_sequential(client, reqs):
    request = client.request
    for seq, body in reqs:
        frame = await request(body, seq=seq)
        if frame.body != body or frame.header["seq"] != seq:
            _bad(seq, frame.header, frame.body, body)


async def _rframe_one(client, seq, body):
    frame = await client.request(body, seq=seq)
    if frame.body != body or frame.header["seq"] != seq:
        _bad(seq, frame.header, frame.body, body)


# -- pure asyncio


async def _open_pure(port):
    return await asyncio.wait_for(asyncio.open_connection(HOST, port), 30)


async def _close_pure(conn):
    conn[1].close()
    await conn[1].wait_closed()


async def _pure_sequential(conn, reqs):
    reader, writer = conn
    dumps, loads, pack, unpack = json.dumps, json.loads, _LE.pack, _LE.unpack
    write, readexactly = writer.write, reader.readexactly
    for seq, body in reqs:
        hb = dumps({"seq": seq, "total_size": len(body)}).encode()
        write(pack(len(hb)) + hb + body)
        (hlen,) = unpack(await readexactly(4))
        header = loads(await readexactly(hlen))
        size = header["total_size"]
        got = await readexactly(size) if size else b""
        if got != body or header["seq"] != seq:
            _bad(seq, header, got, body)


class PurePipelined:
    """The pure-asyncio way to have many requests in flight on one connection:
    each request writes its frame and waits on a future; one reader task per
    connection reads the replies (in order) and resolves the futures FIFO."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.pending = collections.deque()
        self.loop = asyncio.get_running_loop()
        self.task = asyncio.ensure_future(self._read_replies())

    async def _read_replies(self):
        loads, unpack, readexactly, pending = json.loads, _LE.unpack, self.reader.readexactly, self.pending
        try:
            while True:
                (hlen,) = unpack(await readexactly(4))
                header = loads(await readexactly(hlen))
                size = header["total_size"]
                body = await readexactly(size) if size else b""
                fut = pending.popleft()
                if not fut.done():
                    fut.set_result((header, body))
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            while pending:
                fut = pending.popleft()
                if not fut.done():
                    fut.set_exception(ConnectionResetError(str(exc)))

    async def request(self, seq, body):
        hb = json.dumps({"seq": seq, "total_size": len(body)}).encode()
        fut = self.loop.create_future()
        self.pending.append(fut)
        self.writer.write(_LE.pack(len(hb)) + hb + body)
        return await fut


async def _open_pure_pipelined(port):
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 30)
    return PurePipelined(reader, writer)


async def _close_pure_pipelined(conn):
    conn.writer.close()
    await conn.writer.wait_closed()
    await asyncio.wait_for(conn.task, 30)


async def _pure_one(conn, seq, body):
    header, got = await conn.request(seq, body)
    if got != body or header["seq"] != seq:
        _bad(seq, header, got, body)


# -- the floor: no framing at all


class _Floor(asyncio.BufferedProtocol):
    """Writes one prebuilt frame per request and takes each read as the whole
    reply (true for these small echoes on loopback; the size is checked): what
    any asyncio client pays per round trip before it frames anything."""

    def __init__(self):
        self.buf = memoryview(bytearray(256 * 1024))
        self.fut = None
        self.transport = None
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        fut, self.fut = self.fut, None
        if fut is not None and not fut.done():
            fut.set_result(nbytes)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(None)


_FLOOR_HEADER = json.dumps({"seq": 1, "total_size": 40}).encode()
_FLOOR_FRAME = _LE.pack(len(_FLOOR_HEADER)) + _FLOOR_HEADER + b"x" * 40
_FLOOR_SIZE = len(_FLOOR_FRAME)


async def _open_floor(port):
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(_Floor, HOST, port), 30)
    return proto


async def _close_floor(proto):
    proto.transport.close()
    await asyncio.wait_for(proto.lost, 30)


async def _floor_sequential(proto, reqs):
    loop = asyncio.get_running_loop()
    write, frame, size = proto.transport.write, _FLOOR_FRAME, len(_FLOOR_FRAME)
    for _ in reqs:
        proto.fut = fut = loop.create_future()
        write(frame)
        if await fut != size:
            raise RuntimeError("the floor client got a reply split over two reads; its numbers would be wrong")


class _FloorPipelined(_Floor):
    """The floor with many requests in flight: each request is a coroutine (a
    task under ``gather``, as rframe's and the peer's are) that queues the
    prebuilt frame (one write per connection per loop iteration, as rframe
    joins them) and waits on a future; every whole reply's worth of bytes read
    resolves the oldest future. No framing, no checks."""

    def __init__(self):
        super().__init__()
        self.loop = asyncio.get_running_loop()
        self.waiters = collections.deque()
        self.outbuf = []
        self.partial = 0

    def buffer_updated(self, nbytes):
        self.partial += nbytes
        waiters = self.waiters
        while self.partial >= _FLOOR_SIZE:
            self.partial -= _FLOOR_SIZE
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def flush(self):
        buf, self.outbuf = self.outbuf, []
        self.transport.write(b"".join(buf))

    async def request(self):
        fut = self.loop.create_future()
        self.waiters.append(fut)
        if not self.outbuf:
            self.loop.call_soon(self.flush)
        self.outbuf.append(_FLOOR_FRAME)
        await fut


async def _open_floor_pipelined(port):
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(_FloorPipelined, HOST, port), 30)
    return proto


async def _floor_one(proto, seq, body):
    await proto.request()


# -- the framing floor: the floor plus rframe's framing, no client


class _FramedFloor(_Floor):
    """The sequential floor with the framing rframe's client does, and nothing
    else of a client: each request made by the client's protocol session
    (``ClientSession.request``), each read decoded by the session and the
    reply handed to the future waiting for its id by the Rust reader
    ``AsyncClient`` uses. No coroutine per request, no checks of the
    connection's state, no timeouts, no error events: how far above the floor
    framing alone puts a client, which the CPU target must leave room for."""

    def __init__(self):  # (not _Floor's: the reader brings its own buffer)
        from rframe._rframe import ClientSession, _SessionReader

        self.transport = None
        self.lost = asyncio.get_running_loop().create_future()
        self.session = ClientSession()
        self.reader = _SessionReader(self.session)
        self.get_buffer = self.reader.get_buffer
        self.waiters = {}

    def buffer_updated(self, nbytes):
        # (An exception raised here would only be logged by the loop.)
        if self.reader.deliver(nbytes, self.waiters) is not None:
            self._fail(RuntimeError("the framing floor got an event other than an awaited reply"))

    def connection_lost(self, exc):
        self._fail(ConnectionResetError(f"the framing floor's connection was lost: {exc}"))
        super().connection_lost(exc)

    def _fail(self, exc):
        waiters, self.waiters = self.waiters, {}
        for fut in waiters.values():
            if not fut.done():
                fut.set_exception(exc)


async def _open_framed_floor(port):
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(_FramedFloor, HOST, port), 30)
    return proto


async def _framed_floor_sequential(proto, reqs):
    create_future, write, request, waiters = (
        asyncio.get_running_loop().create_future,
        proto.transport.write,
        proto.session.request,
        proto.waiters,
    )
    for seq, body in reqs:
        id, data = request(body, {"seq": seq})
        fut = create_future()
        waiters[id] = fut
        write(data)
        frame = await fut
        if frame.body != body or frame.header["seq"] != seq:
            _bad(seq, frame.header, frame.body, body)


# kind -> workload -> (label, open, close, driver); a "sequential" driver runs
# one connection's requests one after another, a "pipelined" one makes one request.
CLIENTS = {
    "rframe": {
        "sequential": ("rframe `AsyncClient.request`", _open_rframe, _close_rframe, _rframe_sequential),
        "pipelined": ("rframe `AsyncClient.request`", _open_rframe, _close_rframe, _rframe_one),
    },
    "asyncio": {
        "sequential": (
            "pure asyncio: `open_connection`, struct + json, `readexactly`",
            _open_pure,
            _close_pure,
            _pure_sequential,
        ),
        "pipelined": (
            "pure asyncio: the same, a reader task per connection resolving a FIFO of futures",
            _open_pure_pipelined,
            _close_pure_pipelined,
            _pure_one,
        ),
    },
}
CLIENTS["floor"] = {
    "sequential": (
        "floor, no framing: write a prebuilt frame, one future per read (reference, not a client)",
        _open_floor,
        _close_floor,
        _floor_sequential,
    ),
    "pipelined": (
        "floor, no framing: prebuilt frames, writes joined per iteration, a future per reply's worth "
        "of bytes (reference, not a client)",
        _open_floor_pipelined,
        _close_floor,
        _floor_one,
    ),
}
CLIENTS["framing floor"] = {
    "sequential": (
        "framing floor: the sequential floor plus rframe's protocol session and Rust reply reader, "
        "no client logic (reference, not a client)",
        _open_framed_floor,
        _close_floor,
        _framed_floor_sequential,
    ),
}
WORKLOADS = ("sequential", "pipelined")


async def _drive(workload, driver, conns, work):
    if workload == "sequential":
        await asyncio.gather(*(driver(c, w) for c, w in zip(conns, work)))
    else:  # every request in flight at once
        await asyncio.gather(*(driver(c, seq, body) for c, w in zip(conns, work) for seq, body in w))


async def _round(kind, workload, port, warm, work):
    _, open_, close, driver = CLIENTS[kind][workload]
    conns = [await open_(port) for _ in range(len(work))]
    try:
        await _drive(workload, driver, conns, warm)
        gc.collect()
        gc.disable()
        try:
            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.wait_for(_drive(workload, driver, conns, work), 300)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        finally:
            gc.enable()
    finally:
        for c in conns:
            await close(c)
    return {"requests": sum(map(len, work)), "wall": wall, "cpu": cpu}


async def _probe_round(n, conc):
    import rframe_wakeup_probe

    ping = rframe_wakeup_probe.ping

    async def one(k):
        for _ in range(k):
            await ping()

    per = [n // conc + (1 if i < n % conc else 0) for i in range(conc)]
    await asyncio.gather(*(one(k) for k in per[:2]))  # warm up: the tokio runtime starts
    gc.collect()
    gc.disable()
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        await asyncio.wait_for(asyncio.gather(*(one(k) for k in per)), 300)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        gc.enable()
    return {"requests": n, "wall": wall, "cpu": cpu}


def run_on(loop_name, coro):
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def available(mod):
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------
# Driver and output
# --------------------------------------------------------------------------


def fmt(x, nd=0):
    return "n/a" if x is None else f"{x:,.{nd}f}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small counts (a few seconds), for smoke tests")
    ap.add_argument("--markdown", action="store_true", default=True, help="markdown table output (the default)")
    ap.add_argument("--requests", type=int, help="round trips per measured round (default 20000; --quick 1000)")
    ap.add_argument("--conns", type=int, default=50, help="connections, all from one event loop (default 50)")
    ap.add_argument("--rounds", type=int, help="measured rounds per client, best of (default 5; --quick 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers to PATH as JSON")
    ap.add_argument(
        "--fresh-malloc",
        action="store_true",
        help="skip the 1 MiB malloc warm-up (see README): asyncio's reads then go through mmap",
    )
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve(args.port)

    requests = args.requests or (1_000 if args.quick else 20_000)
    rounds = args.rounds or (1 if args.quick else 5)
    nconn = args.conns
    warmup = max(nconn * 4, requests // 10)
    loops = ["asyncio"] + (["uvloop"] if available("uvloop") else [])
    has_probe = available("rframe_wakeup_probe")
    variants = [
        (workload, kind, loop)
        for workload in WORKLOADS
        for loop in loops
        for kind in CLIENTS
        if workload in CLIENTS[kind]
    ]

    # glibc serves a malloc of 256 KiB (asyncio's read size on 3.11: each
    # data_received gets a fresh bytes object of that size, then shrunk) with
    # mmap until a freed chunk raises its dynamic mmap threshold; in a fresh
    # process that costs the pure-asyncio client tens of us per read. Freeing
    # one 1 MiB block first puts it on the heap, the peer's best case.
    # (rframe reads into a reused buffer either way.)
    if not args.fresh_malloc:
        _big = bytes(1 << 20)
        del _big

    t_start = time.perf_counter()
    rng = random.Random(1234)
    raw = {v: [] for v in variants}
    probe_raw = {loop: [] for loop in loops} if has_probe else {}
    server = ServerProcess()
    try:
        for r in range(rounds):
            # round-robin, rotating the order, so a noisy moment hits all alike
            order = variants[r % len(variants) :] + variants[: r % len(variants)]
            for workload, kind, loop in order:
                warm = make_work(nconn, warmup, rng)
                work = make_work(nconn, requests, rng, seq0=warmup)
                raw[(workload, kind, loop)].append(run_on(loop, _round(kind, workload, server.port, warm, work)))
            for loop in probe_raw:
                probe_raw[loop].append(run_on(loop, _probe_round(requests, nconn)))
    finally:
        server.close()
    elapsed = time.perf_counter() - t_start

    def summary(rs):
        return {
            "rate": max(x["requests"] / x["wall"] for x in rs),
            "cpu_us": min(x["cpu"] / x["requests"] for x in rs) * 1e6,
        }

    res = {v: summary(rs) for v, rs in raw.items()}
    probe = {loop: summary(rs) for loop, rs in probe_raw.items()}

    def ver(mod):
        try:
            from importlib.metadata import version

            return version(mod)
        except Exception:
            return "not installed"

    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()

    print("# rframe AsyncClient benchmark" + (" (--quick)" if args.quick else ""))
    print()
    print(
        f"- Python {platform.python_version()} ({platform.python_implementation()}), rframe {ver('rframe')}, "
        f"uvloop {ver('uvloop')}"
    )
    print(f"- machine: {platform.platform()}, {platform.machine()}, nproc={ncpu}")
    print(
        f"- {requests:,} echo round trips per round over {nconn} connections from one event loop, "
        f"after {warmup:,} warm-up round trips; server `rframe.Server(handler=echo)` in its own process; "
        f"best of {rounds} rounds (highest req/s, lowest CPU/request), clients in turn; whole run {elapsed:.1f} s"
    )
    print(
        "- sequential: each connection does request, whole reply, next request; "
        f"pipelined: all {requests:,} requests in flight at once (`asyncio.gather`)"
    )
    print(
        "- client CPU: `time.process_time()` of the client process (user + system, all threads) "
        "over the measured phase, per request (us)"
    )
    print(
        "- "
        + (
            "no malloc warm-up (--fresh-malloc): asyncio's 256 KiB reads are mmap'ed"
            if args.fresh_malloc
            else "malloc warm-up: 1 MiB allocated and freed first, so asyncio's 256 KiB reads come from the heap"
        )
    )
    print()
    print("| workload | client | event loop | req/s | client CPU us/req |")
    print("|---|---|---|---:|---:|")
    for workload, kind, loop in variants:
        r = res[(workload, kind, loop)]
        print(f"| {workload} | {CLIENTS[kind][workload][0]} | {loop} | {fmt(r['rate'])} | {fmt(r['cpu_us'], 1)} |")
    if not available("uvloop"):
        print("| (uvloop rows skipped: `uvloop` is not installed) | | | | |")
    print()

    ratios = []
    for workload in WORKLOADS:
        for loop in loops:
            rf, pa = res[(workload, "rframe", loop)], res[(workload, "asyncio", loop)]
            cpu = rf["cpu_us"] / pa["cpu_us"]
            rate = rf["rate"] / pa["rate"]
            ratios.append((f"{workload}, {loop}: rframe CPU/request vs pure asyncio", cpu, "<= 0.50x", cpu <= 0.5))
            ratios.append((f"{workload}, {loop}: rframe req/s vs pure asyncio", rate, ">= 1x", rate >= 1.0))
    print("## Ratios")
    print()
    print("| ratio | value | target | met |")
    print("|---|---:|---|---|")
    for name, value, target, ok in ratios:
        print(f"| {name} | {value:.2f}x | {target} | {'yes' if ok else 'no'} |")
    # The floor does no framing at all: its CPU over the peer's is about the
    # ratio the loop and the kernel leave to any asyncio client of this shape.
    for workload in WORKLOADS:
        for loop in loops:
            rf, fl, pa = (res[(workload, k, loop)] for k in ("rframe", "floor", "asyncio"))
            print(
                f"| {workload}, {loop}: no-framing floor CPU/request vs pure asyncio | "
                f"{fl['cpu_us'] / pa['cpu_us']:.2f}x | (info) | - |"
            )
            print(
                f"| {workload}, {loop}: CPU/request above the floor, rframe / pure asyncio | "
                f"{fmt(rf['cpu_us'] - fl['cpu_us'], 1)} / {fmt(pa['cpu_us'] - fl['cpu_us'], 1)} us | (info) | - |"
            )
            # Rounds take turns, so round r of each client ran within moments
            # of the others': a ratio per round pairs clients that met the
            # same machine, and its median is less moved by one lucky round
            # than the ratio of the best rounds above.
            for kind in ("rframe", "framing floor"):
                if (workload, kind, loop) in raw:
                    paired = statistics.median(
                        a["cpu"] / a["requests"] / (b["cpu"] / b["requests"])
                        for a, b in zip(raw[(workload, kind, loop)], raw[(workload, "asyncio", loop)])
                    )
                    print(
                        f"| {workload}, {loop}: {kind} CPU/request vs pure asyncio, median of the rounds' ratios | "
                        f"{paired:.2f}x | (info) | - |"
                    )
            framed = res.get((workload, "framing floor", loop))
            if framed is not None:
                # What the CPU target leaves a client above the floor, and
                # how much of it the framing alone takes.
                print(
                    f"| {workload}, {loop}: framing floor's CPU/request over the floor / the target's room over it | "
                    f"{fmt(framed['cpu_us'] - fl['cpu_us'], 1)} / {fmt(pa['cpu_us'] / 2 - fl['cpu_us'], 1)} us "
                    f"| (info) | - |"
                )
    print()

    if probe:
        print("## The design not taken: completing awaitables from tokio")
        print()
        print(
            f"`rframe_wakeup_probe.ping()` (bench/wakeup): a `pyo3-async-runtimes` `future_into_py` awaitable "
            f"that a tokio thread completes at once; {requests:,} awaits, {nconn} concurrent, best of {rounds}. "
            "A client built that way pays this for every reply, on top of the I/O."
        )
        print()
        print("| event loop | CPU us per `await ping()` | pure-asyncio sequential round trip, CPU us/req | ratio |")
        print("|---|---:|---:|---:|")
        for loop in loops:
            p, pa = probe[loop], res[("sequential", "asyncio", loop)]
            print(f"| {loop} | {fmt(p['cpu_us'], 1)} | {fmt(pa['cpu_us'], 1)} | {p['cpu_us'] / pa['cpu_us']:.2f}x |")
    else:
        print("Note: `rframe_wakeup_probe` is not installed (pip install bench/wakeup): no wake-up probe row.")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": platform.python_version(),
                    "machine": platform.platform(),
                    "nproc": ncpu,
                    "requests": requests,
                    "conns": nconn,
                    "rounds": rounds,
                    "elapsed": elapsed,
                    "raw": {f"{w}/{k}/{loop}": rs for (w, k, loop), rs in raw.items()},
                    "probe_raw": probe_raw,
                    "ratios": [{"name": n, "value": v, "target": t, "met": ok} for n, v, t, ok in ratios],
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
