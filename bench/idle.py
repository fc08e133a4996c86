#!/usr/bin/env python3
"""Idle connections: how much server memory does each one cost?

Starts the command server (``python -m rframe.server``, which raises its soft
limit on open files to the hard limit) on a free loopback port with
``--max-connections`` above N, raises this process's limit the same way, and
opens N (default 10,000) TCP connections to it from this process (plain
non-blocking sockets, in batches). It measures the server process's memory
(``VmRSS`` from ``/proc/PID/status``; ``Pss`` and private pages from
``/proc/PID/smaps_rollup``) at four points:

1. idle, before: after one connection has done a ``run`` and an ``auth``
   request and closed (so what a server sets up on first use is in the
   baseline);
2. N accepted, silent: once the server holds N more descriptors;
3. N after one request each: every connection sends ``{"op": "auth"}`` and
   reads the ``welcome`` reply (so each is really served, its read buffer
   used), then all sit idle;
4. after closing them all.

Bytes per connection = (memory at 2 or 3 - memory at 1) / N. The issue's
target is under 32 KiB each. It also checks that a fresh client still gets a
``run`` answered with N connections open, and that the server's descriptors
come back to the baseline after they close. Exit status 1 if any connection
was not accepted or answered, or the target is missed.

The server closes connections idle for 300 s: the measurement takes seconds.

Run::

    python bench/idle.py             # 10,000 connections
    python bench/idle.py -n 2000
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402 - bench/machine.py
from soak import HOST, PAGE, resources, start_command_server  # noqa: E402 - bench/soak.py

TARGET = 32 << 10  # bytes of server memory per idle connection, at most
MARGIN = 64  # descriptors either process needs besides the connections
CONNECT_BATCH = 256  # connects in flight at once: the listen backlog's order of size
STEP_TIMEOUT = 120.0  # any one phase (connecting, answering, closing)


def raise_nofile():
    """Soft limit on open files up to the hard limit; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def nofile_of(pid):
    """(soft, hard) limit on open files of a process, from /proc/PID/limits."""
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return tuple(resource.RLIM_INFINITY if v == "unlimited" else int(v) for v in (soft, hard))
    raise RuntimeError("no 'Max open files' in /proc/PID/limits")


def memory(pid):
    """The process's VmRSS, Pss and private (clean + dirty) bytes, with its fds
    and threads."""
    roll = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, value = line.partition(":")
            parts = value.split()
            if len(parts) == 2 and parts[1] == "kB":
                roll[key] = int(parts[0]) * 1024
    r = resources(pid)
    return {**r, "pss": roll["Pss"], "private": roll["Private_Clean"] + roll["Private_Dirty"]}


def tcp_kernel_pages():
    """Pages of socket buffers of all TCP sockets of the machine (both ends)."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                fields = line.split()[1:]
                return int(dict(zip(fields[::2], fields[1::2]))["mem"])
    return None


def wait_for(predicate, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def open_connections(port, n):
    """N connected non-blocking sockets, ``CONNECT_BATCH`` connects in flight."""
    sel = selectors.DefaultSelector()
    socks, pending, started = [], 0, 0
    deadline = time.monotonic() + STEP_TIMEOUT
    try:
        while len(socks) < n:
            while pending < CONNECT_BATCH and started < n:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex((HOST, port))
                if err not in (0, errno.EINPROGRESS):
                    s.close()
                    raise OSError(err, f"connection {started + 1}: {os.strerror(err)}")
                sel.register(s, selectors.EVENT_WRITE)
                pending += 1
                started += 1
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{len(socks)} of {n} connections within {STEP_TIMEOUT:.0f} s")
            for key, _ in sel.select(timeout=left):
                s = key.fileobj
                sel.unregister(s)
                pending -= 1
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    s.close()
                    raise OSError(err, f"connection {len(socks) + 1}: {os.strerror(err)}")
                socks.append(s)
    except BaseException:
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()
    return socks


def one_request_each(socks):
    """Sends ``{"op": "auth"}`` on every socket and reads each ``welcome``;
    returns how many were answered so, and the errors of those that were not."""
    import rframe

    hello = rframe.pack_frame(b"", {"op": "auth"})
    sel = selectors.DefaultSelector()
    decoders = {}
    for s in socks:
        s.send(hello)  # 30 bytes into an empty socket buffer: all of it
        sel.register(s, selectors.EVENT_READ)
        decoders[s] = rframe.FrameDecoder()
    answered = 0
    errors = []
    deadline = time.monotonic() + STEP_TIMEOUT
    try:
        while decoders and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=max(0.0, deadline - time.monotonic())):
                s = key.fileobj
                try:
                    data = s.recv(4096)
                except OSError as e:  # not answered: counted, and the first error kept
                    errors.append(f"{type(e).__name__}: {e}")
                    data = b""
                frames = decoders[s].feed(data) if data else []
                if not data or frames:
                    sel.unregister(s)
                    del decoders[s]
                    if frames and frames[0].header.get("op") == "welcome":
                        answered += 1
    finally:
        sel.close()
    return answered, errors


def idle(n=10_000, log=print):
    """Runs the measurement; returns a dict of everything measured."""
    import rframe

    soft, hard = raise_nofile()
    wanted = n
    limit_note = None
    if soft != resource.RLIM_INFINITY and soft < n + MARGIN:
        n = soft - MARGIN
        limit_note = f"{wanted:,} connections wanted, {n:,} opened: the hard limit on open files here is {hard:,}"
    server = start_command_server("--max-connections", str(n + MARGIN))
    socks = []
    try:
        server_nofile = nofile_of(server.pid)
        if server_nofile[0] != resource.RLIM_INFINITY and server_nofile[0] < n + MARGIN:
            raise RuntimeError(f"the server's open files limit is {server_nofile}: too low for {n:,} connections")
        with rframe.Client(HOST, server.port, timeout=30) as c:
            c.run("true", check=True)
            c.request(b"", {"op": "auth"})
        time.sleep(0.5)  # the server closes its end
        stages = {"idle, before": memory(server.pid)}
        kernel = {"idle, before": tcp_kernel_pages()}
        base_fds = stages["idle, before"]["fds"]

        log(f"opening {n:,} connections ...")
        t0 = time.monotonic()
        socks = open_connections(server.port, n)
        accepted = wait_for(lambda: resources(server.pid)["fds"] >= base_fds + n, STEP_TIMEOUT)
        time.sleep(1.0)
        stages["accepted, silent"] = memory(server.pid)
        kernel["accepted, silent"] = tcp_kernel_pages()
        connect_seconds = time.monotonic() - t0

        log("one request on each ...")
        answered, answer_errors = one_request_each(socks)
        time.sleep(1.0)
        stages["after one request each, idle"] = memory(server.pid)
        kernel["after one request each, idle"] = tcp_kernel_pages()
        still_open = stages["after one request each, idle"]["fds"] - base_fds
        with rframe.Client(HOST, server.port, timeout=30) as c:
            serving = c.run("echo still serving").stdout == b"still serving\n"
        held_seconds = time.monotonic() - t0

        for s in socks:
            s.close()
        socks = []
        closed = wait_for(lambda: resources(server.pid)["fds"] <= base_fds, STEP_TIMEOUT)
        time.sleep(0.5)
        stages["after closing"] = memory(server.pid)
        kernel["after closing"] = tcp_kernel_pages()
        return {
            "n": n,
            "wanted": wanted,
            "limit_note": limit_note,
            "client_nofile": (soft, hard),
            "server_nofile": server_nofile,
            "accepted": accepted,
            "answered": answered,
            "answer_errors": answer_errors,
            "still_open": still_open,
            "serving": serving,
            "closed": closed,
            "stages": stages,
            "kernel_pages": kernel,
            "connect_seconds": connect_seconds,
            "held_seconds": held_seconds,
            "server_stderr": server.stderr_tail(),
        }
    finally:
        for s in socks:
            s.close()
        server.close()


def per_conn(result, stage, key):
    return (result["stages"][stage][key] - result["stages"]["idle, before"][key]) / result["n"]


def judge(result):
    n = result["n"]
    problems = []
    if not result["accepted"]:
        problems.append("the server did not accept every connection")
    if result["answered"] != n:
        errors = result["answer_errors"]
        problems.append(
            f"{result['answered']:,} of {n:,} connections answered"
            + (f" ({len(errors):,} errors, the first: {errors[0]})" if errors else "")
        )
    if result["still_open"] < n:
        problems.append(f"only {result['still_open']:,} of {n:,} connections still open after their request")
    if not result["serving"]:
        problems.append("a fresh client was not served")
    if not result["closed"]:
        problems.append("the server's descriptors did not come back to the baseline after closing")
    worst = max(per_conn(result, s, "rss") for s in ("accepted, silent", "after one request each, idle"))
    if worst >= TARGET:
        problems.append(f"{worst:,.0f} bytes of RSS per connection: not under {TARGET:,}")
    result.update(problems=problems, passed=not problems, worst=worst)
    return result


def report(result):
    n = result["n"]
    print("# rframe idle connections")
    print()
    print("\n".join(machine.describe()))
    print(
        f"- {n:,} TCP connections over loopback to `python -m rframe.server --max-connections {n + MARGIN}`, "
        f"opened in {result['connect_seconds']:.1f} s and held {result['held_seconds']:.1f} s; open files limit "
        f"(soft, hard): this process {result['client_nofile'][0]:,}, {result['client_nofile'][1]:,}; "
        f"the server {result['server_nofile'][0]:,}, {result['server_nofile'][1]:,}"
    )
    if result["limit_note"]:
        print(f"- {result['limit_note']}")
    print()
    print("| server | connections | fds | threads | VmRSS | Pss | private | TCP buffers, whole machine (kernel) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    counts = {"idle, before": 0, "accepted, silent": n, "after one request each, idle": n, "after closing": 0}
    for stage, m in result["stages"].items():
        pages = result["kernel_pages"][stage]
        print(
            f"| {stage} | {counts[stage]:,} | {m['fds']:,} | {m['threads']} | {m['rss'] / 2**20:,.1f} MiB | "
            f"{m['pss'] / 2**20:,.1f} MiB | {m['private'] / 2**20:,.1f} MiB | "
            f"{'n/a' if pages is None else f'{pages * PAGE / 2**20:,.1f} MiB'} |"
        )
    print()
    print("| per connection (memory - idle before) / N | VmRSS | Pss | private | target | met |")
    print("|---|---:|---:|---:|---|---|")
    for stage in ("accepted, silent", "after one request each, idle"):
        rss, pss, priv = (per_conn(result, stage, k) for k in ("rss", "pss", "private"))
        print(
            f"| {stage} | {rss:,.0f} B | {pss:,.0f} B | {priv:,.0f} B | < {TARGET:,} B (VmRSS) | "
            f"{'yes' if rss < TARGET else '**no**'} |"
        )
    print()
    print(
        f"- every connection accepted: {'yes' if result['accepted'] else 'no'}; answered `auth`: "
        f"{result['answered']:,} of {n:,}; still open afterwards: {result['still_open']:,}; a fresh client's "
        f"`run` answered meanwhile: {'yes' if result['serving'] else 'no'}; descriptors back to the baseline "
        f"after closing: {'yes' if result['closed'] else 'no'}"
    )
    if result["passed"]:
        print(
            f"Verdict: PASS: {n:,} idle connections at {result['worst']:,.0f} bytes of server RSS each "
            f"(target: under {TARGET:,})."
        )
    else:
        print("Verdict: FAIL: " + "; ".join(result["problems"]))
        print()
        print("The server's stderr, its end:")
        print(result["server_stderr"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--connections", type=int, default=10_000, help="idle connections (default 10000)")
    args = ap.parse_args(argv)
    result = judge(idle(args.connections, log=lambda m: print(m, file=sys.stderr, flush=True)))
    report(result)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
