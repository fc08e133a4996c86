#!/usr/bin/env python3
"""Live commands: how soon output written on the server is in the client's hands, how
fast a stream moves, and what an idle one costs; rframe against asyncssh.

Every number is measured in this run, on this machine; nothing is hard-coded.

* **Latency**: the command writes 1,000 lines a few milliseconds apart, each
  holding the time it was written (``time.time_ns()``, one clock: both ends
  are on this machine); the client reads them one by one (rframe
  ``Client.start`` and ``proc.stdout.readline()``; asyncssh
  ``conn.create_process`` and ``await process.stdout.readline()``) and takes
  the time each arrived. Median and p99 of the differences. The lines go in
  rounds, every reader taking its turn in each, so that the machine's slow
  and fast moments fall on all of them.
* **References**, in the same rounds, for scale: the writer's pipe read
  locally (one hop, no server); the same lines relayed by ``socat`` (a C
  poll loop, no framing) and read from a plain socket with ``readline``: two
  hops and nothing else, the least any remote reader can take here; and the
  rframe server's frames read by a bare ``recv`` loop and a
  ``FrameDecoder``, which leaves out the client's ``RemoteProcess`` (the
  difference is the client library's share).
* **Throughput**: ``head -c SIZE /dev/zero`` streamed and read in 1 MiB reads;
  CPU per GiB of the client process, and of the rframe server's (an sshd
  serves each connection in processes of its own: no column for it).
* **Idle**: the rframe server's CPU time over ``sleep 10`` running as a live
  command with nothing written (no polling loop: target under 1 ms).

The rframe server runs in a process of its own on 127.0.0.1; asyncssh talks
to an sshd of this run's own on loopback (``bench/setup.py``'s). Targets
(issue 18): median latency under 200 us and at most 1/3 of asyncssh's;
throughput at least 1 GB/s and at least 2x asyncssh's.

    python bench/stream.py            # full run, about a minute
    python bench/stream.py --quick    # 100 lines, 64 MiB, 1 s idle, no asyncssh (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import rframe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402 - bench/machine.py
import setup as setup_bench  # noqa: E402 - bench/setup.py: its sshd of a run's own

HOST = "127.0.0.1"
REF_LOCAL = "the writer's pipe read locally: one hop, no server (reference)"
REF_RELAY = "socat relaying the pipe, a plain socket's readline: two hops, no framing (reference)"
REF_BARE = "the rframe server's frames read by a bare recv loop, no RemoteProcess (reference)"


WRITER = (
    "import sys, time\n"
    "lines, gap = int(sys.argv[1]), float(sys.argv[2])\n"
    "for _ in range(lines):\n"
    "    sys.stdout.write(f'{time.time_ns()}\\n'); sys.stdout.flush()\n"
    "    time.sleep(gap)\n"
)


def writer(lines: int, gap: float) -> str:
    """The command that writes ``lines`` time-stamped lines, ``gap`` seconds apart."""
    return f"{sys.executable} -c {_quote(WRITER)} {lines} {gap}"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# --------------------------------------------------------------------------- rframe


def serve() -> None:
    """``--_serve``: the rframe server, its port on stdout, until stdin closes."""
    with rframe.Server(HOST, 0) as server:
        print(server.address[1], flush=True)
        sys.stdin.read()


def rframe_latency(port: int, lines: int, gap: float) -> list[float]:
    delays = []
    with rframe.Client(HOST, port, timeout=60) as client, client.start(writer(lines, gap)) as proc:
        for line in proc.stdout:
            delays.append((time.time_ns() - int(line)) / 1e3)
        proc.wait()
    return delays


def local_latency(lines: int, gap: float) -> list[float]:
    """The same lines read straight from the writer's pipe by this process: one
    hop, no server and no network (a reference, not a peer)."""
    delays = []
    with subprocess.Popen(writer(lines, gap), shell=True, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            delays.append((time.time_ns() - int(line)) / 1e3)
    return delays


def bare_latency(port: int, lines: int, gap: float) -> list[float]:
    """The rframe server's output frames read by a bare ``recv`` loop and a
    ``FrameDecoder``, not by ``RemoteProcess``: the client library left out."""
    delays = []
    with rframe.Client(HOST, port, timeout=60) as client:
        client.start(writer(lines, gap))  # its frames are read below, not through it
        with socket.socket(fileno=os.dup(client.fileno())) as sock:
            sock.settimeout(60)
            decoder = rframe.FrameDecoder()
            while True:
                data = sock.recv(65536)
                if not data:
                    raise RuntimeError("bare reader: the server closed the connection")
                for frame in decoder.feed(data):
                    if frame.header.get("op") == "output":
                        now = time.time_ns()  # a frame may hold more than one line
                        delays += [(now - int(line)) / 1e3 for line in frame.body.splitlines()]
                    elif frame.header.get("op") == "exit":
                        return delays


#: Characters socat's address syntax gives a meaning of its own.
SOCAT_SPECIAL = set(" :,!'\"\\")


def relay_unavailable(work: str) -> str | None:
    """Why the socat relay reference cannot run here, or ``None``."""
    if shutil.which("socat") is None:
        return "socat is not installed (apt-get install socat)"
    if SOCAT_SPECIAL & set(sys.executable + work):
        return f"socat cannot name {sys.executable} or {work} in an address"
    return None


def relay_latency(work: str, lines: int, gap: float) -> list[float]:
    """The writer's lines relayed by ``socat`` (its stdout a pipe, copied to
    a TCP connection to us, no framing) and read from a plain socket: two
    hops and nothing else."""
    script = os.path.join(work, "writer.py")
    if not os.path.exists(script):
        with open(script, "w") as f:
            f.write(WRITER)
    with socket.create_server((HOST, 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        relay = subprocess.Popen(
            ["socat", "-u", f"EXEC:{sys.executable} {script} {lines} {gap},pipes", f"TCP:{HOST}:{port},nodelay"]
        )
        try:
            sock, _ = listener.accept()
            sock.settimeout(60)
            delays = []
            with sock, sock.makefile("rb") as f:
                for line in f:
                    delays.append((time.time_ns() - int(line)) / 1e3)
            relay.wait(60)
        finally:
            if relay.poll() is None:
                relay.kill()
                relay.wait()
    return delays


def rframe_throughput(port: int, size: int) -> float:
    with rframe.Client(HOST, port, timeout=60) as client, client.start(f"head -c {size} /dev/zero") as proc:
        t0, got = time.perf_counter(), 0
        while chunk := proc.stdout.read1(1 << 20):
            got += len(chunk)
        elapsed = time.perf_counter() - t0
        proc.wait()
    if got != size:
        raise RuntimeError(f"rframe: {got} bytes of {size}")
    return size / elapsed


def rframe_idle(port: int, server_pid: int, seconds: float) -> float:
    """The server's CPU seconds while a live ``sleep`` runs and nothing moves."""
    with rframe.Client(HOST, port, timeout=60) as client, client.start(f"sleep {seconds + 1}") as proc:
        time.sleep(0.5)  # past the start
        before = machine.cpu_seconds(server_pid)
        time.sleep(seconds)
        spent = machine.cpu_seconds(server_pid) - before
        proc.wait()
    return spent


# --------------------------------------------------------------------------- asyncssh


async def asyncssh_latency(asyncssh, sshd, key, lines: int, gap: float) -> list[float]:
    delays = []
    async with setup_bench.asyncssh_connect(asyncssh, sshd, key) as conn:
        process = await conn.create_process(writer(lines, gap), encoding=None)
        while line := await process.stdout.readline():
            delays.append((time.time_ns() - int(line)) / 1e3)
        await process.wait()
    return delays


async def asyncssh_throughput(asyncssh, sshd, key, size: int) -> float:
    async with setup_bench.asyncssh_connect(asyncssh, sshd, key) as conn:
        process = await conn.create_process(f"head -c {size} /dev/zero", encoding=None)
        t0, got = time.perf_counter(), 0
        while chunk := await process.stdout.read(1 << 20):
            got += len(chunk)
        elapsed = time.perf_counter() - t0
        await process.wait()
    if got != size:
        raise RuntimeError(f"asyncssh: {got} bytes of {size}")
    return size / elapsed


# --------------------------------------------------------------------------- the driver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 lines, 64 MiB, 1 s idle, no asyncssh (smoke test)")
    ap.add_argument("--no-ssh", action="store_true", help="skip asyncssh")
    ap.add_argument("--rounds", type=int, default=3, help="throughput rounds per client, medians (default 3)")
    ap.add_argument("--_serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._serve:
        serve()
        return 0
    lines, gap = (100, 0.002) if args.quick else (1000, 0.004)
    size = (64 << 20) if args.quick else (1 << 30)
    idle = 1.0 if args.quick else 10.0
    rounds = 1 if args.quick else args.rounds
    latency_rounds = 1 if args.quick else 5
    notes: list[str] = []
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--_serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    work = tempfile.mkdtemp(prefix="rframe-bench-stream-")
    sshd = None
    rows: dict[str, dict[str, float]] = {}
    floors: dict[str, dict[str, float]] = {}
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        # Each reader: a function of how many lines to read, giving their delays.
        readers: dict[str, Callable[[int], list[float]]] = {"rframe": lambda n: rframe_latency(port, n, gap)}
        references: dict[str, Callable[[int], list[float]]] = {
            REF_LOCAL: lambda n: local_latency(n, gap),
            REF_BARE: lambda n: bare_latency(port, n, gap),
        }
        why = relay_unavailable(work)
        if why is not None:
            notes.append(f"the socat relay reference skipped: {why}")
        else:
            references[REF_RELAY] = lambda n: relay_latency(work, n, gap)
        # The throughput rounds take turns with asyncssh's, so that a busy
        # moment of the machine falls on both.
        streams = {"rframe": lambda: rframe_throughput(port, size)}
        if args.quick or args.no_ssh:
            notes.append("asyncssh skipped: " + ("--quick" if args.quick else "--no-ssh"))
        else:
            asyncssh = setup_bench.import_asyncssh()
            if asyncssh is None:
                notes.append(setup_bench.NO_ASYNCSSH)
            else:
                try:
                    sshd = setup_bench.Sshd(work)
                except (setup_bench.Unavailable, OSError, subprocess.SubprocessError) as e:
                    notes.append(f"asyncssh skipped: {e}")
                else:
                    key = asyncssh.read_private_key(sshd.user_key)
                    readers["asyncssh"] = lambda n: asyncio.run(asyncssh_latency(asyncssh, sshd, key, n, gap))
                    streams["asyncssh"] = lambda: asyncio.run(asyncssh_throughput(asyncssh, sshd, key, size))
                    notes.append(f"asyncssh {asyncssh.__version__} to {sshd.version}, ed25519 keys made for the run")
        every = {**readers, **references}
        delays: dict[str, list[float]] = {name: [] for name in every}
        for read in every.values():
            read(10)  # warm-up
        for turn in range(latency_rounds):
            # Each round in another order: no reader always follows the same one.
            names = list(every)
            for name in names[turn % len(names) :] + names[: turn % len(names)]:
                delays[name] += every[name](lines // latency_rounds)
        for name, got in delays.items():
            summary = {"median": statistics.median(got), "p99": percentile(got, 0.99)}
            if name in readers:
                rows[name] = summary
            else:
                floors[name] = summary
        rates: dict[str, list[float]] = {name: [] for name in streams}
        cpu: dict[str, list[float]] = {name: [] for name in streams}
        server_cpu: list[float] = []  # the rframe server's (an sshd's children are not one process's)
        gib = size / (1 << 30)
        for _ in range(rounds):
            for name, stream in streams.items():
                before, server_before = time.process_time(), machine.cpu_seconds(server.pid)
                rates[name].append(stream())
                cpu[name].append((time.process_time() - before) / gib)
                if name == "rframe":
                    server_cpu.append((machine.cpu_seconds(server.pid) - server_before) / gib)
        for name in streams:
            rows[name]["rate"] = statistics.median(rates[name])
            rows[name]["cpu"] = statistics.median(cpu[name])
        rows["rframe"]["server_cpu"] = statistics.median(server_cpu)
        rows["rframe"]["idle"] = rframe_idle(port, server.pid, idle)
    finally:
        if sshd is not None:
            sshd.close()
        if server.stdin is not None:
            server.stdin.close()
        server.wait(60)
        setup_bench.shutil.rmtree(work, ignore_errors=True)

    print("# Live commands: latency, throughput, idle cost" + (" (--quick)" if args.quick else ""))
    print()
    print("\n".join(machine.describe()))
    print(
        f"- {lines} lines {gap * 1e3:g} ms apart a reader, in {latency_rounds} round(s) every reader taking its turn;"
        f" {size >> 20} MiB of zeros streamed, {rounds} round(s) a client"
        f" taking turns, medians; {idle:g} s idle"
    )
    print()
    print(
        "| client | latency median us | latency p99 us | throughput MB/s | client CPU s per GiB"
        " | server CPU s per GiB | server CPU idle ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        idle_ms = f"{r['idle'] * 1e3:.2f}" if "idle" in r else ""
        served = f"{r['server_cpu']:.2f}" if "server_cpu" in r else ""
        print(
            f"| {name} | {r['median']:.0f} | {r['p99']:.0f} | {r['rate'] / 1e6:,.0f} | {r['cpu']:.2f}"
            f" | {served} | {idle_ms} |"
        )
    for name, floor in floors.items():
        print(f"| {name} | {floor['median']:.0f} | {floor['p99']:.0f} | | | | |")
    ours = rows["rframe"]
    checks = [
        ("median latency", f"{ours['median']:.0f} us", "< 200 us", ours["median"] < 200),
        ("throughput", f"{ours['rate'] / 1e6:,.0f} MB/s", ">= 1,000 MB/s", ours["rate"] >= 1e9),
        ("server CPU while idle", f"{ours['idle'] * 1e3:.2f} ms", "< 1 ms", ours["idle"] < 1e-3),
    ]
    if "asyncssh" in rows:
        theirs = rows["asyncssh"]
        ratio = ours["median"] / theirs["median"]
        checks.append(("median latency / asyncssh's", f"{ratio:.2f}x", "<= 0.33x", ratio <= 1 / 3))
        speed = ours["rate"] / theirs["rate"]
        checks.append(("throughput / asyncssh's", f"{speed:.2f}x", ">= 2x", speed >= 2))
    print()
    print("| target | value | wanted | met |")
    print("|---|---:|---|---|")
    for what, value, wanted, met in checks:
        print(f"| {what} | {value} | {wanted} | {'yes' if met else '**no**'} |")
    for note in notes:
        print(f"\nNote: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
