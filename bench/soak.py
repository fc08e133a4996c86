#!/usr/bin/env python3
"""Soak test: many clients, mixed ``run`` and ``request``, for minutes; nothing
may be lost or corrupted, and the servers may not grow.

Two servers, each in a process of its own, on free loopback ports:

* the command server, ``python -m rframe.server``, answers ``run``;
* an echo server, ``rframe.Server(handler=echo)`` (``soak.py --serve-echo``):
  the handler checks the sha256 the request carries in its header and sends
  the body back with its own sha256 and the request's ``seq``.

Two client processes drive them until ``--duration`` is over: one with
``--threads`` threads, each with a blocking ``rframe.Client`` per server, and
one with ``--async-conns`` pairs of ``rframe.AsyncClient`` connections, each
pair shared by ``--pipeline`` asyncio tasks (their requests are pipelined).
Every client closes its connections and opens new ones after 20 to 200
operations. Each operation is one of, at random:

* ``run`` of ``printf %s TOKEN`` (random hex): stdout must be the token;
* ``run`` of ``head -c N /dev/urandom | tee /dev/stderr | sha256sum``: stderr
  is N random bytes, stdout their sha256, which must match;
* ``run`` of ``cat`` with N random bytes as input: stdout must be them;
* ``request`` of N random bytes with ``{"seq": n, "sha256": digest}`` to the
  echo server: the reply must carry the body, its digest and ``seq``, and the
  server's check of the request must have passed.

N is log-uniform from 1 byte to ``--max-size`` (and sometimes 0). An
operation that raises (timeout, closed connection, error frame) is *lost*; a
reply that does not verify is *corrupted*.

Every ``--interval`` seconds the servers' file descriptors (``/proc/PID/fd``),
threads and RSS (``/proc/PID/status``) are sampled. Verdict: zero lost and
corrupted; after the clients left, each server's descriptors and threads are
back to what they were idle before the load; RSS under load does not grow
after the warm-up (mean of the last quarter of the samples against the mean
of the first quarter) by more than the tolerance. Exit status 1 otherwise.

Run::

    python bench/soak.py                 # 180 s
    python bench/soak.py --duration 20   # a short run
    python bench/soak.py --json out.json

See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402 - bench/machine.py
from server import LineReader, stop_process  # noqa: E402 - bench/server.py

HOST = "127.0.0.1"
PAGE = os.sysconf("SC_PAGE_SIZE")
OP_TIMEOUT = 60.0  # any one operation; the commands themselves take milliseconds
EXAMPLES = 5  # lost or corrupted operations described in the report, at most
KINDS = {
    "echo": "run `printf %s TOKEN`",
    "urandom": "run `head -c N /dev/urandom \\| tee /dev/stderr \\| sha256sum`",
    "cat": "run `cat` with N bytes of input",
    "request": "request of N bytes to the echo handler",
}
WEIGHTS = {"echo": 2, "urandom": 2, "cat": 2, "request": 6}
# RSS may settle for a while after the warm-up (allocator arenas, buffers at
# their high-water mark); growth past this is reported as a leak.
RSS_TOLERANCE_BYTES = 4 << 20
RSS_TOLERANCE_FRACTION = 0.10


# --------------------------------------------------------------------------
# The echo server (its own process: ``soak.py --serve-echo``)
# --------------------------------------------------------------------------


def serve_echo():
    import rframe

    def echo(frame):
        header = frame.header
        digest = hashlib.sha256(frame.body).hexdigest()
        return {"seq": header.get("seq"), "sha256": digest, "request_ok": digest == header.get("sha256")}, frame.body

    server = rframe.Server(HOST, 0, handler=echo)
    print(server.address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


# --------------------------------------------------------------------------
# Operations: what to send, and how to check the reply
# --------------------------------------------------------------------------


def random_size(rng, max_size):
    if rng.random() < 0.05:
        return 0
    return min(max_size, int(2 ** rng.uniform(0, math.log2(max_size))))


class Op:
    """One operation: ``server`` is "cmd" or "echo"; ``args``/``kwargs`` go to
    ``run`` or ``request``; ``check(reply)`` returns None or what is wrong."""

    def __init__(self, kind, server, args, kwargs, check, nbytes):
        self.kind, self.server, self.args, self.kwargs, self.check, self.nbytes = (
            kind,
            server,
            args,
            kwargs,
            check,
            nbytes,
        )


def _run_ok(r):
    if r.returncode != 0 or r.stdout_truncated or r.stderr_truncated:
        return (
            f"returncode {r.returncode}, truncated {r.stdout_truncated}/{r.stderr_truncated}, stderr {r.stderr[:200]!r}"
        )
    return None


def make_op(rng, seq, max_size):
    kind = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    if kind == "echo":
        token = rng.randbytes(rng.randint(4, 32)).hex()

        def check(r):
            bad = _run_ok(r)
            if bad or r.stdout != token.encode() or r.stderr:
                return bad or f"stdout {r.stdout[:80]!r} stderr {r.stderr[:80]!r}, expected {token!r}"
            return None

        return Op(kind, "cmd", (f"printf %s {token}",), {}, check, len(token))
    n = random_size(rng, max_size)
    if kind == "urandom":

        def check(r):
            bad = _run_ok(r)
            if bad:
                return bad
            digest = hashlib.sha256(r.stderr).hexdigest()
            if len(r.stderr) != n or r.stdout.split()[:1] != [digest.encode()]:
                return f"{len(r.stderr)} bytes of {n}, sha256 {digest}, stdout {r.stdout[:80]!r}"
            return None

        return Op(kind, "cmd", (f"head -c {n} /dev/urandom | tee /dev/stderr | sha256sum",), {}, check, n)
    body = rng.randbytes(n)
    if kind == "cat":

        def check(r):
            bad = _run_ok(r)
            if bad or r.stdout != body:
                return bad or f"stdout: {len(r.stdout)} bytes, not the {n} bytes sent"
            return None

        return Op(kind, "cmd", ("cat",), {"input": body}, check, n)
    digest = hashlib.sha256(body).hexdigest()

    def check(frame):
        h, got = frame.header, frame.body
        if not h.get("request_ok"):
            return f"seq {seq}: the server's sha256 of the request did not match: {h!r}"
        if h.get("seq") != seq or h.get("sha256") != digest or hashlib.sha256(got).hexdigest() != digest:
            return f"seq {seq}: reply {h!r} with {len(got)} bytes, expected {n} bytes with sha256 {digest}"
        return None

    return Op(kind, "echo", (body,), {"header": {"seq": seq, "sha256": digest}}, check, n)


class Stats:
    def __init__(self):
        self.counts = {k: {"done": 0, "ok": 0, "lost": 0, "corrupted": 0, "bytes": 0} for k in KINDS}
        self.examples = []
        self.connects = 0
        self.connect_errors = 0

    def record(self, op, error=None, lost=False):
        c = self.counts[op.kind]
        c["done"] += 1
        if lost:
            c["lost"] += 1
        elif error:
            c["corrupted"] += 1
        else:
            c["ok"] += 1
            c["bytes"] += op.nbytes
        if (lost or error) and len(self.examples) < EXAMPLES:
            self.examples.append(f"{'lost' if lost else 'corrupted'} {op.kind}: {error}")

    def merge(self, other):
        for k, c in other["counts"].items():
            for f, v in c.items():
                self.counts[k][f] += v
        self.examples += other["examples"][: EXAMPLES - len(self.examples)]
        self.connects += other["connects"]
        self.connect_errors += other["connect_errors"]

    def as_dict(self):
        return {
            "counts": self.counts,
            "examples": self.examples,
            "connects": self.connects,
            "connect_errors": self.connect_errors,
        }


# --------------------------------------------------------------------------
# The clients (their own processes: ``soak.py --_client JSON``)
# --------------------------------------------------------------------------


def _blocking_worker(cfg, index, stats):
    import rframe

    rng = random.Random(cfg["seed"] * 1000 + index)
    seq = index << 40
    while time.time() < cfg["stop_at"]:
        try:
            cmd = rframe.Client(HOST, cfg["cmd_port"], timeout=OP_TIMEOUT)
            echo = rframe.Client(HOST, cfg["echo_port"], timeout=OP_TIMEOUT)
        except OSError as e:
            stats.connect_errors += 1
            if len(stats.examples) < EXAMPLES:
                stats.examples.append(f"connect failed: {type(e).__name__}: {e}")
            time.sleep(0.1)
            continue
        stats.connects += 2
        with cmd, echo:
            for _ in range(rng.randint(20, 200)):
                if time.time() >= cfg["stop_at"]:
                    break
                seq += 1
                op = make_op(rng, seq, cfg["max_size"])
                try:
                    if op.server == "cmd":
                        reply = cmd.run(*op.args, timeout=OP_TIMEOUT, **op.kwargs)
                    else:
                        reply = echo.request(*op.args, **op.kwargs)
                except Exception as e:  # lost: the connection is closed, open new ones
                    stats.record(op, f"{type(e).__name__}: {e}", lost=True)
                    break
                stats.record(op, op.check(reply))


def run_threads(cfg):
    stats = [Stats() for _ in range(cfg["n"])]
    while time.time() < cfg["start_at"]:
        time.sleep(min(0.05, max(0.0, cfg["start_at"] - time.time())))
    threads = [threading.Thread(target=_blocking_worker, args=(cfg, i, s)) for i, s in enumerate(stats)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = Stats()
    for s in stats:
        total.merge(s.as_dict())
    return total


async def _async_group(cfg, index, stats):
    import rframe

    rng = random.Random(cfg["seed"] * 1000 + 500 + index)
    seq = [(500 + index) << 40]
    while time.time() < cfg["stop_at"]:
        try:
            cmd = await rframe.AsyncClient.connect(HOST, cfg["cmd_port"], timeout=OP_TIMEOUT)
        except OSError as e:
            stats.connect_errors += 1
            if len(stats.examples) < EXAMPLES:
                stats.examples.append(f"connect failed: {type(e).__name__}: {e}")
            await asyncio.sleep(0.1)
            continue
        try:
            echo = await rframe.AsyncClient.connect(HOST, cfg["echo_port"], timeout=OP_TIMEOUT)
        except OSError as e:
            await cmd.close()
            stats.connect_errors += 1
            if len(stats.examples) < EXAMPLES:
                stats.examples.append(f"connect failed: {type(e).__name__}: {e}")
            await asyncio.sleep(0.1)
            continue
        stats.connects += 2

        async def task(count, cmd=cmd, echo=echo):
            for _ in range(count):
                if time.time() >= cfg["stop_at"]:
                    return
                seq[0] += 1
                op = make_op(rng, seq[0], cfg["max_size"])
                try:
                    if op.server == "cmd":
                        reply = await cmd.run(*op.args, **op.kwargs)
                    else:
                        reply = await echo.request(*op.args, **op.kwargs)
                except Exception as e:  # lost: this connection is done
                    stats.record(op, f"{type(e).__name__}: {e}", lost=True)
                    return
                stats.record(op, op.check(reply))

        try:
            await asyncio.gather(*(task(rng.randint(20, 200) // cfg["pipeline"] + 1) for _ in range(cfg["pipeline"])))
        finally:
            await cmd.close()
            await echo.close()


async def _run_async(cfg):
    await asyncio.sleep(max(0.0, cfg["start_at"] - time.time()))
    stats = Stats()
    await asyncio.gather(*(_async_group(cfg, i, stats) for i in range(cfg["n"])))
    return stats


def client_entry(cfg_json):
    cfg = json.loads(cfg_json)
    try:
        stats = run_threads(cfg) if cfg["mode"] == "threads" else asyncio.run(_run_async(cfg))
    except Exception as e:  # report, so the driver can show it
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(stats.as_dict()), flush=True)
    return 0


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------


def resources(pid):
    """Open file descriptors, threads and RSS (bytes) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = rss = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    return {"fds": fds, "threads": threads, "rss": rss}


class Proc:
    """A server process whose first stdout line gives its port; stderr to a file."""

    def __init__(self, name, argv, parse_port):
        self.name = name
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.err, stdin=subprocess.DEVNULL)
        try:
            self.port = parse_port(LineReader(self.proc.stdout).readline(30))
        except (TimeoutError, EOFError, ValueError) as e:
            tail = self.stderr_tail()  # before close() closes the file
            self.close()
            raise RuntimeError(f"{name} did not start: {e}; stderr: {tail}") from None

    @property
    def pid(self):
        return self.proc.pid

    def stderr_tail(self, n=2000):
        self.err.seek(0)
        return self.err.read()[-n:].decode(errors="replace").strip() or "(empty)"

    def close(self):
        try:
            stop_process(self.proc)
        finally:
            self.proc.stdout.close()
            self.err.close()


def start_command_server(*extra):
    """``python -m rframe.server --port 0 ...``; returns a Proc with its port."""

    def parse(line):
        # "rframe server listening on 127.0.0.1:PORT (Ctrl-C to stop)"
        return int(line.split(" (")[0].rsplit(":", 1)[1])

    return Proc("command server", [sys.executable, "-m", "rframe.server", "--port", "0", *extra], parse)


def start_echo_server():
    return Proc("echo server", [sys.executable, os.path.abspath(__file__), "--serve-echo"], int)


def prime(cmd_port, echo_port):
    """One operation of each kind, so that what a server sets up on first use
    (the process reaper, buffers, the handler thread) is in the idle baseline."""
    import rframe

    rng = random.Random(0)
    with (
        rframe.Client(HOST, cmd_port, timeout=OP_TIMEOUT) as cmd,
        rframe.Client(HOST, echo_port, timeout=OP_TIMEOUT) as echo,
    ):
        done = set()
        seq = 0
        while done != set(KINDS):
            seq += 1
            op = make_op(rng, seq, 4096)
            reply = (
                cmd.run(*op.args, timeout=OP_TIMEOUT, **op.kwargs)
                if op.server == "cmd"
                else echo.request(*op.args, **op.kwargs)
            )
            bad = op.check(reply)
            if bad:
                raise RuntimeError(f"priming: {op.kind}: {bad}")
            done.add(op.kind)


def settle(servers, baseline, timeout):
    """Waits (bounded) until every server's fds and threads are back to at most
    ``baseline``; returns the last readings."""
    deadline = time.monotonic() + timeout
    while True:
        now = {s.name: resources(s.pid) for s in servers}
        if all(now[n]["fds"] <= baseline[n]["fds"] and now[n]["threads"] <= baseline[n]["threads"] for n in now):
            return now
        if time.monotonic() >= deadline:
            return now
        time.sleep(0.2)


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def soak(
    duration=180.0,
    threads=16,
    async_conns=8,
    pipeline=4,
    max_size=256 << 10,
    interval=2.0,
    warmup=None,
    seed=1,
    log=print,
):
    """Runs the soak test; returns a dict of everything measured (see main for
    how it is judged)."""
    warmup = min(30.0, duration / 6) if warmup is None else warmup
    servers = []
    clients = []
    try:
        servers.append(start_command_server())
        servers.append(start_echo_server())
        cmd_srv, echo_srv = servers
        prime(cmd_srv.port, echo_srv.port)
        time.sleep(0.5)
        idle_before = {s.name: resources(s.pid) for s in servers}
        start_at = time.time() + 3.0  # the client processes have started by then
        stop_at = start_at + duration
        base = {
            "cmd_port": cmd_srv.port,
            "echo_port": echo_srv.port,
            "max_size": max_size,
            "start_at": start_at,
            "stop_at": stop_at,
            "seed": seed,
        }
        for cfg in (
            {**base, "mode": "threads", "n": threads},
            {**base, "mode": "async", "n": async_conns, "pipeline": pipeline},
        ):
            if cfg["n"] > 0:
                clients.append(
                    subprocess.Popen(
                        [sys.executable, os.path.abspath(__file__), "--_client", json.dumps(cfg)],
                        stdout=subprocess.PIPE,
                        stdin=subprocess.DEVNULL,
                    )
                )
        samples = []  # (seconds since start_at, {server: resources})
        log(f"soaking for {duration:.0f} s (warm-up {warmup:.0f} s) ...")
        next_sample = start_at
        next_progress = start_at + 30
        give_up = stop_at + OP_TIMEOUT + 30
        while any(c.poll() is None for c in clients) and time.time() < give_up:
            now = time.time()
            if now >= next_sample and now <= stop_at:
                samples.append((now - start_at, {s.name: resources(s.pid) for s in servers}))
                next_sample += interval
            if now >= next_progress and now < stop_at:
                r = samples[-1][1]
                log(
                    f"  {now - start_at:.0f} s: "
                    + "; ".join(
                        f"{n}: {v['fds']} fds, {v['threads']} threads, {v['rss'] / 2**20:.1f} MiB" for n, v in r.items()
                    )
                )
                next_progress += 30
            time.sleep(0.1 if time.time() > stop_at else min(0.1, max(0.0, next_sample - time.time())))
        stats = Stats()
        client_errors = []
        for c in clients:
            if c.poll() is None:
                client_errors.append("a client process did not finish in time (killed)")
                stop_process(c)
            line = c.stdout.read().decode().strip().splitlines()
            out = json.loads(line[-1]) if line else {"error": f"exit status {c.returncode}, no output"}
            if "error" in out:
                client_errors.append(out["error"])
            else:
                stats.merge(out)
        for s in servers:
            if s.proc.poll() is not None:
                client_errors.append(f"the {s.name} exited: {s.stderr_tail()}")
        idle_after = settle(servers, idle_before, 30.0)
        elapsed = time.time() - start_at
        return {
            "duration": duration,
            "warmup": warmup,
            "interval": interval,
            "threads": threads,
            "async_conns": async_conns,
            "pipeline": pipeline,
            "max_size": max_size,
            "elapsed": elapsed,
            "stats": stats.as_dict(),
            "client_errors": client_errors,
            "samples": samples,
            "idle_before": idle_before,
            "idle_after": idle_after,
            "servers": [s.name for s in servers],
        }
    finally:
        for c in clients:
            stop_process(c)
            c.stdout.close()
        for s in servers:
            s.close()


def judge(result):
    """Adds the per-resource rows and the verdict to ``result``."""
    stats = result["stats"]
    totals = {f: sum(c[f] for c in stats["counts"].values()) for f in ("done", "ok", "lost", "corrupted", "bytes")}
    loaded = [(t, r) for t, r in result["samples"] if t >= result["warmup"]]
    quarter = max(1, len(loaded) // 4)
    rows = []
    problems = []
    for name in result["servers"]:
        for res in ("fds", "threads", "rss"):
            series = [r[name][res] for _, r in loaded]
            before, after = result["idle_before"][name][res], result["idle_after"][name][res]
            row = {
                "server": name,
                "resource": res,
                "idle_before": before,
                "idle_after": after,
                "start": series[0] if series else None,
                "end": series[-1] if series else None,
                "max": max(series) if series else None,
            }
            if res == "rss":
                first, last = mean(series[:quarter]), mean(series[-quarter:])
                row["growth"] = last - first
                row["tolerance"] = max(RSS_TOLERANCE_BYTES, RSS_TOLERANCE_FRACTION * first)
                row["ok"] = bool(series) and row["growth"] <= row["tolerance"]
                if not row["ok"]:
                    problems.append(f"{name} RSS grew by {row['growth'] / 2**20:.1f} MiB under load")
            else:
                row["growth"] = after - before
                row["tolerance"] = 0
                row["ok"] = after <= before
                if not row["ok"]:
                    problems.append(f"{name} has {after - before} more {res} idle after the load than before")
            rows.append(row)
    if totals["lost"] or totals["corrupted"]:
        problems.append(f"{totals['lost']} lost, {totals['corrupted']} corrupted")
    if stats["connect_errors"]:
        problems.append(f"{stats['connect_errors']} failed connections")
    if not totals["ok"]:
        problems.append("nothing was done")
    if len(loaded) < 4:
        problems.append(f"only {len(loaded)} samples after the warm-up")
    problems += result["client_errors"]
    result.update(totals=totals, rows=rows, problems=problems, passed=not problems)
    return result


def fmt_res(res, v):
    if v is None:
        return "n/a"
    if res == "rss":
        return f"{v / 2**20:,.1f} MiB"
    return f"{v:,}"


def report(result):
    t = result["totals"]
    print("# rframe soak test")
    print()
    print("\n".join(machine.describe()))
    print(
        f"- {result['duration']:.0f} s of load (the first {result['warmup']:.0f} s are warm-up); clients: "
        f"{result['threads']} threads with a blocking `rframe.Client` per server, and {result['async_conns']} "
        f"pairs of `rframe.AsyncClient` connections shared by {result['pipeline']} asyncio tasks each "
        f"(pipelined); new connections every 20..200 operations ({result['stats']['connects']:,} opened); "
        f"bodies 0..{result['max_size']:,} bytes; resources sampled every {result['interval']:g} s"
    )
    print()
    print("| operation | server | done | ok | lost | corrupted | MB verified | per second |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, label in KINDS.items():
        c = result["stats"]["counts"][kind]
        server = "echo handler" if kind == "request" else "command"
        print(
            f"| {label} | {server} | {c['done']:,} | {c['ok']:,} | {c['lost']:,} | {c['corrupted']:,} | "
            f"{c['bytes'] / 1e6:,.1f} | {c['done'] / result['duration']:,.0f} |"
        )
    print(
        f"| **total** | | {t['done']:,} | {t['ok']:,} | {t['lost']:,} | {t['corrupted']:,} | "
        f"{t['bytes'] / 1e6:,.1f} | {t['done'] / result['duration']:,.0f} |"
    )
    print()
    print(
        "| server | resource | idle before | load start | load end | load max | idle after | growth | tolerated | ok |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in result["rows"]:
        res = r["resource"]
        how = " (load, last vs first quarter)" if res == "rss" else " (idle after vs before)"
        growth = f"{r['growth'] / 2**20:+,.1f} MiB" if res == "rss" else f"{r['growth']:+,}"
        print(
            f"| {r['server']} | {res} | {fmt_res(res, r['idle_before'])} | {fmt_res(res, r['start'])} | "
            f"{fmt_res(res, r['end'])} | {fmt_res(res, r['max'])} | {fmt_res(res, r['idle_after'])} | "
            f"{growth}{how} | {fmt_res(res, r['tolerance'])} | {'yes' if r['ok'] else '**no**'} |"
        )
    print()
    for e in result["stats"]["examples"]:
        print(f"- {e}")
    if result["passed"]:
        print(
            f"Verdict: PASS: {t['done']:,} operations, 0 lost, 0 corrupted; descriptors and threads back to "
            f"their idle level after the load; RSS growth under load within the tolerance "
            f"(max of {RSS_TOLERANCE_BYTES >> 20} MiB and {RSS_TOLERANCE_FRACTION:.0%})."
        )
    else:
        print("Verdict: FAIL: " + "; ".join(result["problems"]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    ap.add_argument(
        "--warmup", type=float, help="seconds of load not judged for growth (default duration/6, at most 30)"
    )
    ap.add_argument("--threads", type=int, default=16, help="blocking client threads (default 16)")
    ap.add_argument("--async-conns", type=int, default=8, help="AsyncClient connection pairs (default 8)")
    ap.add_argument("--pipeline", type=int, default=4, help="asyncio tasks per connection pair (default 4)")
    ap.add_argument("--max-size", type=int, default=256 << 10, help="largest body or output, bytes (default 256 KiB)")
    ap.add_argument("--interval", type=float, default=2.0, help="seconds between resource samples (default 2)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="PATH", help="also write everything measured to PATH as JSON")
    ap.add_argument("--serve-echo", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_client", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_echo:
        serve_echo()
        return 0
    if args._client:
        return client_entry(args._client)
    result = judge(
        soak(
            args.duration,
            args.threads,
            args.async_conns,
            args.pipeline,
            args.max_size,
            args.interval,
            args.warmup,
            args.seed,
            log=lambda m: print(m, file=sys.stderr, flush=True),
        )
    )
    report(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
