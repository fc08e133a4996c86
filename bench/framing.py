#!/usr/bin/env python3
"""Benchmark rframe's framing core against the pure-Python code it replaces.

Every number is measured in this run, on this machine; nothing is hard-coded.
The peers are:

* "struct + json": the course's code (socket-tcp-sticky-packets, sections 9,
  13 and 15): ``struct.pack('<i', len(hb)) + hb + body`` with
  ``hb = json.dumps(header).encode()``.
* "struct + orjson": the same with orjson, the fastest thing a Python user can
  reasonably write (orjson emits compact separators, so its bytes differ).
* for decoding, a tuned incremental decoder (bytearray buffer, offsets,
  ``struct.Struct.unpack_from``) in three flavours: with the course's
  ``json.loads(head.decode('utf-8'))`` (the issue's "json decoder"), with
  json's C scanner called directly (skipping ``json.loads``'s per-call
  overhead: a stronger peer than the course's code, reported as well), and
  with ``orjson.loads``.
* for the large transfer, a ``recv_into`` loop into a preallocated bytearray,
  and, for scale, the course's ``data += sock.recv(1024)`` loop.

Run::

    python bench/framing.py            # full run, prints a markdown table
    python bench/framing.py --quick    # small sizes, a few seconds (smoke test)

See bench/README.md for what each row measures.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import time
from json.scanner import make_scanner

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is in the "bench" extra
    orjson = None

MiB = 1024 * 1024

# --------------------------------------------------------------------------
# Pure-Python peers
# --------------------------------------------------------------------------

_LEN = struct.Struct("<i")
_pack_len = _LEN.pack
_unpack_len_from = _LEN.unpack_from


def pack_json(body, header):
    """The course's packer (section 15), with the header dict built the same
    way rframe does: the caller's keys first, ``total_size`` set last."""
    d = {**header, "total_size": len(body)}
    hb = json.dumps(d).encode("utf-8")
    return struct.pack("<i", len(hb)) + hb + body


def pack_orjson(body, header):
    d = {**header, "total_size": len(body)}
    hb = orjson.dumps(d)
    return struct.pack("<i", len(hb)) + hb + body


_scan_json = make_scanner(json.JSONDecoder())


class PyFrameDecoder:
    """A tuned, correct, pure-Python incremental decoder for the same format.

    ``feed(chunk) -> list[(header, body)]``. The buffer is a bytearray that only
    grows by appends (so a large frame costs linear time); it is snapshotted to
    ``bytes`` once per feed that can complete something, so header and body are
    single-copy bytes slices. A parsed header waiting for its body is kept, so
    it is never parsed twice.
    """

    __slots__ = ("_buf", "_need", "_hdr", "_size", "_orjson", "_course", "max_header", "max_body")

    PARSERS = ("json", "json-scanner", "orjson")

    def __init__(self, parser="json", max_header=65536, max_body=268435456):
        if parser not in self.PARSERS:
            raise ValueError(f"parser must be one of {self.PARSERS}")
        if parser == "orjson" and orjson is None:
            raise RuntimeError("orjson is not installed (pip install '.[bench]')")
        self._buf = bytearray()
        self._need = 4  # bytes the buffer must hold before anything can progress
        self._hdr = None  # header whose body has not fully arrived yet
        self._size = 0
        # Chosen once, as flags: a per-frame string comparison would slow the
        # peers down (the faster ones are tested first).
        self._orjson = parser == "orjson"
        self._course = parser == "json"
        self.max_header = max_header
        self.max_body = max_body

    def feed(self, data):
        buf = self._buf
        buf += data
        if len(buf) < self._need:
            return []
        d = bytes(buf)
        end = len(d)
        pos = 0
        out = []
        hdr = self._hdr
        size = self._size
        use_orjson, course = self._orjson, self._course
        scan = _scan_json
        while True:
            if hdr is None:
                if end - pos < 4:
                    need = 4
                    break
                (hlen,) = _unpack_len_from(d, pos)
                if hlen < 0 or hlen > self.max_header:
                    raise ValueError(f"bad header length {hlen}")
                hend = pos + 4 + hlen
                if hend > end:
                    need = hend - pos
                    break
                if use_orjson:
                    hdr = orjson.loads(d[pos + 4 : hend])
                elif course:
                    # the course (section 15): json.loads(head_bytes.decode('utf-8'))
                    hdr = json.loads(d[pos + 4 : hend].decode("utf-8"))
                else:
                    # json.loads minus its per-call work: the C scanner parses
                    # one value from offset 0; if it does not consume the whole
                    # header (whitespace, garbage), json.loads accepts it or
                    # raises the proper error.
                    s = d[pos + 4 : hend].decode("utf-8")
                    try:
                        hdr, e = scan(s, 0)
                    except StopIteration:
                        e = -1
                    if e != len(s):
                        hdr = json.loads(s)
                if type(hdr) is not dict:
                    raise ValueError("header is not a JSON object")
                size = hdr.get("total_size")
                if type(size) is not int or size < 0 or size > self.max_body:
                    raise ValueError(f"bad total_size {size!r}")
                pos = hend
            bend = pos + size
            if bend > end:
                need = size
                break
            out.append((hdr, d[pos:bend]))
            pos = bend
            hdr = None
        del buf[:pos]
        self._need = need
        self._hdr = hdr
        self._size = size
        return out


def _recv_exact(sock, n):
    parts = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise EOFError("stream ended early")
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def py_read_frame_recv_into(sock):
    """Pure Python done right: parse the header, then recv_into one
    preallocated bytearray until the body is complete."""
    (hlen,) = struct.unpack("<i", _recv_exact(sock, 4))
    header = json.loads(_recv_exact(sock, hlen))
    n = header["total_size"]
    buf = bytearray(n)
    mv = memoryview(buf)
    got = 0
    recv_into = sock.recv_into
    while got < n:
        k = recv_into(mv[got:])
        if not k:
            raise EOFError("stream ended early")
        got += k
    mv.release()
    return header, buf


def course_read_frame(sock):
    """The course's client loop (section 15): ``total += recv(1024)``.

    Only change: a ``b''`` from recv raises instead of spinning forever.
    """
    (hlen,) = struct.unpack("<i", _recv_exact(sock, 4))
    header = json.loads(_recv_exact(sock, hlen).decode("utf-8"))
    total_ppt = b""
    while len(total_ppt) < header["total_size"]:
        chunk = sock.recv(1024)
        if not chunk:
            raise EOFError("stream ended early")
        total_ppt += chunk
    return header, total_ppt


# --------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------


def best_of(fn, repeat):
    """Run ``fn()`` ``repeat`` times with the GC off (as timeit does) and
    return (best seconds, last result)."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            t0 = time.perf_counter()
            result = fn()
            dt = time.perf_counter() - t0
        finally:
            gc.enable()
        best = min(best, dt)
    return best, result


def best_of_each(fns, repeat):
    """``best_of`` for several functions at once, interleaved: each round runs
    every one of them once, in an order that rotates, so a noisy moment on a
    shared machine hits them alike instead of one peer's whole series. Returns
    {name: (best seconds, last result)}."""
    names = list(fns)
    best = {name: (float("inf"), None) for name in names}
    for r in range(repeat):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            dt, result = best_of(fns[name], 1)
            best[name] = (min(best[name][0], dt), result)
    return best


# --------------------------------------------------------------------------
# Row 1: pack one small frame
# --------------------------------------------------------------------------

SMALL_HEADER = {"file_name": "text1", "md5": 54645898788}
SMALL_BODY = bytes(range(100))


def bench_pack(rframe, n, repeat):
    body, header = SMALL_BODY, SMALL_HEADER
    a = pack_json(body, header)
    r = rframe.pack_frame(body, header)
    if r != a:
        raise SystemExit(f"pack_frame is not byte-identical to struct+json:\n  json:   {a!r}\n  rframe: {r!r}")
    if orjson is not None:
        o = pack_orjson(body, header)
        if json.loads(o[4 : 4 + _unpack_len_from(o)[0]]) != json.loads(a[4 : 4 + _unpack_len_from(a)[0]]):
            raise SystemExit("orjson packer produced a different header")

    def loop(f):
        def run():
            for _ in range(n):
                f(body, header)

        return run

    fns = {"json": loop(pack_json), "rframe": loop(rframe.pack_frame)}
    if orjson is not None:
        fns["orjson"] = loop(pack_orjson)
    res = {name: dt / n * 1e9 for name, (dt, _) in best_of_each(fns, repeat).items()}
    res.setdefault("orjson", None)
    return res


# --------------------------------------------------------------------------
# Row 2: decode a stream of small frames fed in 1024-byte chunks
# --------------------------------------------------------------------------


def make_stream(nframes):
    frames = []
    for i in range(nframes):
        body = (b"%08d" % i) * 12 + b"body"  # 100 bytes
        frames.append(pack_json(body, {"file_name": f"text{i}", "md5": 54645898788 + i}))
    return b"".join(frames)


def bench_decode(rframe, nframes, chunk, repeat):
    stream = make_stream(nframes)
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    last_i = nframes - 1
    expected_last = (
        {"file_name": f"text{last_i}", "md5": 54645898788 + last_i, "total_size": 100},
        (b"%08d" % last_i) * 12 + b"body",
    )

    def driver(make):
        def run():
            feed = make().feed
            n = 0
            last = None
            for c in chunks:
                out = feed(c)
                if out:
                    n += len(out)
                    last = out[-1]
            return n, last

        return run

    res = {}
    peers = [
        ("json", lambda: PyFrameDecoder("json")),
        ("json-scanner", lambda: PyFrameDecoder("json-scanner")),
    ]
    if orjson is not None:
        peers.append(("orjson", lambda: PyFrameDecoder("orjson")))
    peers.append(("rframe", rframe.FrameDecoder))
    timed = best_of_each({name: driver(make) for name, make in peers}, repeat)
    for name, _ in peers:
        dt, (n, last) = timed[name]
        header, body = last  # a tuple, or an rframe.Frame
        if n != nframes or dict(header) != expected_last[0] or bytes(body) != expected_last[1]:
            raise SystemExit(
                f"decoder {name!r} disagrees: {n} frames (expected {nframes}), "
                f"last = {header!r}, {bytes(body)[:40]!r}..."
            )
        res[name] = dt / nframes * 1e9
    res.setdefault("orjson", None)
    res["bytes"] = len(stream)
    res["chunks"] = len(chunks)
    return res


# --------------------------------------------------------------------------
# Row 3: read one large frame over loopback TCP from a sender process
# --------------------------------------------------------------------------


def _sender_main(port, sizes):
    """Runs in a separate process: pre-builds one frame per size with plain
    struct+json, then for each connection reads the requested size (8 bytes)
    and sendall()s that frame. A request for size 0 ends it."""
    frames = {}
    for size in sizes:
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        header = {"file_name": "big.bin", "md5": hashlib.md5(body).hexdigest()}
        frames[size] = pack_json(body, header)
        del body
    while True:
        s = socket.create_connection(("127.0.0.1", port))
        (size,) = struct.unpack("<q", _recv_exact(s, 8))
        if size == 0:
            s.close()
            return
        s.sendall(frames[size])
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(1)  # wait for the reader to close
        except OSError:
            pass
        s.close()


class Sender:
    def __init__(self, sizes):
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.listener.settimeout(120)
        port = self.listener.getsockname()[1]
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--_sender", str(port)] + [str(s) for s in sizes],
        )

    def transfer(self, size, reader):
        """Accept the sender's connection, then time: request -> frame read."""
        conn, _ = self.listener.accept()
        conn.settimeout(120)
        try:
            gc.collect()
            gc.disable()
            try:
                t0 = time.perf_counter()
                conn.sendall(struct.pack("<q", size))
                header, body = reader(conn)
                dt = time.perf_counter() - t0
            finally:
                gc.enable()
        finally:
            conn.close()
        return dt, header, body

    def close(self):
        try:
            conn, _ = self.listener.accept()
            conn.sendall(struct.pack("<q", 0))
            conn.close()
        finally:
            self.listener.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench_transfer(sender, size, reader, repeat, budget=None):
    """Best-of-``repeat`` MB/s; stops early once ``budget`` seconds are spent.
    The body's md5 (carried in the header) is checked on every run, untimed."""
    best = float("inf")
    spent = 0.0
    runs = 0
    for _ in range(repeat):
        dt, header, body = sender.transfer(size, reader)
        if len(body) != size or header["total_size"] != size:
            raise SystemExit(f"short read: {len(body)} of {size} bytes")
        if hashlib.md5(body).hexdigest() != header["md5"]:
            raise SystemExit("md5 mismatch after transfer")
        del body
        best = min(best, dt)
        spent += dt
        runs += 1
        if budget is not None and spent > budget:
            break
    return size / best / 1e6, runs


def _rframe_reader(rframe):
    def read(sock):
        return rframe.read_frame(sock)

    return read


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def fmt_num(x, unit):
    if x is None:
        return "n/a"
    if unit == "ns":
        return f"{x:,.0f}"
    return f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def fmt_ratio(r):
    if r is None:
        return "n/a"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a few seconds), for smoke tests")
    ap.add_argument("--markdown", action="store_true", default=True, help="markdown table output (the default)")
    ap.add_argument("--_sender", nargs="+", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._sender:
        _sender_main(args._sender[0], args._sender[1:])
        return 0

    import rframe

    if args.quick:
        pack_n, micro_rep = 5_000, 2
        nframes = 5_000
        big, big_rep = 4 * MiB, 2
        course, course_rep = 256 * 1024, 1
    else:
        pack_n, micro_rep = 50_000, 5
        nframes = 100_000
        big, big_rep = 256 * MiB, 3
        course, course_rep = 8 * MiB, 3
    chunk = 1024

    t_start = time.perf_counter()
    pk = bench_pack(rframe, pack_n, micro_rep)
    dc = bench_decode(rframe, nframes, chunk, micro_rep)
    sender = Sender([big, course])
    try:
        py_big, _ = bench_transfer(sender, big, py_read_frame_recv_into, big_rep)
        rf_big, _ = bench_transfer(sender, big, _rframe_reader(rframe), big_rep)
        rf_course, _ = bench_transfer(sender, course, _rframe_reader(rframe), big_rep)
        # the course loop is quadratic: best of up to course_rep, within ~20 s
        course_mbs, course_runs = bench_transfer(sender, course, course_read_frame, course_rep, budget=20.0)
    finally:
        sender.close()
    elapsed = time.perf_counter() - t_start

    def size_label(n):
        return f"{n // MiB} MiB" if n >= MiB else f"{n // 1024} KiB"

    try:
        from importlib.metadata import version

        rver = version("rframe")
    except Exception:
        rver = "?"
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:
        ncpu = os.cpu_count()

    rows = []

    def add(label, unit, peer, peer_val, rf_val, higher_is_better, target, target_ok):
        if peer_val is None or rf_val is None:
            ratio = None
        else:
            ratio = rf_val / peer_val if higher_is_better else peer_val / rf_val
        ok = None if ratio is None else target_ok(ratio)
        met = "n/a" if ratio is None else ("-" if ok is None else ("yes" if ok else "no"))
        rows.append((label, peer, fmt_num(peer_val, unit), fmt_num(rf_val, unit), unit, fmt_ratio(ratio), target, met))

    pack_label = "pack small frame (2-key header, 100 B body)"
    add(pack_label, "ns", "struct + json (course)", pk["json"], pk["rframe"], False, ">= 5x", lambda r: r >= 5)
    add(pack_label, "ns", "struct + orjson", pk["orjson"], pk["rframe"], False, "> 1x", lambda r: r > 1)
    dec_label = f"decode {nframes:,} small frames, {chunk} B chunks"
    add(
        dec_label, "ns", "bytearray decoder + json (course)", dc["json"], dc["rframe"], False, ">= 8x", lambda r: r >= 8
    )
    add(
        dec_label,
        "ns",
        "bytearray decoder + json's C scanner",
        dc["json-scanner"],
        dc["rframe"],
        False,
        "(stronger peer)",
        lambda r: None,
    )
    add(dec_label, "ns", "bytearray decoder + orjson", dc["orjson"], dc["rframe"], False, ">= 3x", lambda r: r >= 3)
    add(
        f"read_frame {size_label(big)} over loopback TCP",
        "MB/s",
        "recv_into preallocated bytearray",
        py_big,
        rf_big,
        True,
        ">= 0.90x",
        lambda r: r >= 0.9,
    )
    add(
        f"read_frame {size_label(course)} over loopback TCP",
        "MB/s",
        f"course `data += recv(1024)` (best of {course_runs})",
        course_mbs,
        rf_course,
        True,
        "(scale only)",
        lambda r: None,
    )

    print("# rframe framing benchmark" + (" (--quick)" if args.quick else ""))
    print()
    print(f"- Python {platform.python_version()} ({platform.python_implementation()}), rframe {rver}")
    print(f"- machine: {platform.platform()}, {platform.machine()}, nproc={ncpu}")
    print(f"- orjson {getattr(orjson, '__version__', 'not installed')}")
    print(
        f"- best of {micro_rep} (micro), best of {big_rep} (transfers); pack: {pack_n:,} calls per run; "
        f"decode stream: {dc['bytes']:,} B in {dc['chunks']:,} chunks; whole run {elapsed:.1f} s"
    )
    print(
        "- ns = ns per frame (lower is better); MB/s = 10^6 bytes/s (higher is better); "
        "speed-up = how many times faster rframe is than the peer"
    )
    print()
    header = ("benchmark", "pure-Python peer", "peer", "rframe", "unit", "rframe speed-up", "target", "met")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---", "---", "---:", "---:", "---", "---:", "---", "---"]) + "|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
