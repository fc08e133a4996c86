#!/usr/bin/env python3
"""Benchmark rframe's file transfer against ``rsync --fsync``, plain Python ``socket.sendfile`` and ``cp``.

Every number is measured in this run, on this machine; nothing is hard-coded.

A file of random bytes (1 GiB by default) is moved over loopback TCP, each way,
everything (the source, every peer's destination, the rsync daemon's module,
the TLS certificate) under one work directory: a new one under ``--dir``
(default: the system temp dir; ``--dir /dev/shm`` for tmpfs). The header
names the work directory's file system (from ``/proc/self/mountinfo``) and
the load average when the run started and ended.

* **rframe**: ``Client.upload`` to, and ``Client.download`` from, an
  ``rframe.Server(root=DIR, tls=True)`` in a process of its own (``files.py
  --_server``: what ``python -m rframe.server --root DIR`` runs, with TLS on).
  Both ends hash the file, the receiver verifies the digest, fsyncs, and
  renames the file into place. Three clients, each on one connection opened
  before the timed transfers (so no connection set-up or TLS handshake is
  timed): plaintext with ``checksum="blake3"``, plaintext with
  ``checksum="sha256"`` (both named explicitly, whatever the default), and a
  TLS 1.3 client pinning the server's certificate fingerprint, with
  ``checksum="blake3"``. Each download fetches the file its upload just sent.
* **rsync**: ``rsync --fsync FILE rsync://127.0.0.1:PORT/dst/NAME`` (upload)
  and ``rsync --fsync rsync://127.0.0.1:PORT/dst/NAME FILE`` (download, the
  file that upload just sent) against ``rsync --daemon`` on loopback, its
  config and module directory in the work directory. rsync also writes to a
  temporary name, fsyncs and renames; the destination never exists
  beforehand, so the whole file is sent (no delta). Its whole-file checksum
  is the one client and daemon negotiate (the header names it, from an
  untimed ``--debug=NSTR`` transfer). Each transfer is a new ``rsync``
  process and connection, and that start-up is timed: it is how rsync is
  used. Skipped, with a note, where rsync is not installed.
* **sendfile**: the plain Python transfer. The sender calls
  ``socket.sendfile`` (zero-copy); the receiver, a loop of ``recv_into`` a
  1 MiB buffer and ``write`` to the file. No digest. Measured twice: as is
  (the data may still be in the page cache when the clock stops) and with an
  ``os.fsync`` at the end (as durable as rframe's).
* **cp**: the same file copied in the work directory (``cp``), and ``cp``
  followed by ``sync FILE``, for scale.

Each round runs every transfer once; the peers (rframe blake3, rframe
sha256, rframe TLS, rsync, sendfile, cp) take turns, their order rotated by
one each round, so a busy moment on the machine meets all of them. Before
each timed transfer (every peer's alike), off the clock, ``settle()``:
``os.sync()`` writes out the dirty pages left by earlier transfers, so one
transfer's writeback does not land on the next one's clock; then 1.5 times
the file's size goes to a scratch file in the work directory, which is
deleted (and synced), so the page cache the transfer fills is memory the
machine has touched already. On a virtual machine whose host backs guest memory lazily (as
here), writing into memory first touched costs about ten times the CPU
(measured here: 1 GiB written into fresh page cache, 2.5 s of system time;
into pages just freed, 0.25 s), and which transfer met it decided its time.
It needs that much free memory besides the files (on tmpfs, 3.5 times the
file's size free). The clock runs from the first
byte of the request until the receiver is done (rframe: the call returns;
rsync: its process exits; sendfile: the receiver says so). Each transfer
runs ``--rounds`` times; the tables show the median, and a line below the
first the slowest and fastest round of its rframe and rsync columns. The
source file stays in the page cache (it was just written), so this measures
the transfer, not the source disk.

CPU seconds per GiB, medians: rframe's are this process's (the client;
nothing else runs in it during an rframe transfer) plus the server
process's; rsync's are its client process (a reaped child of this process,
with the process it forks when it receives) plus the daemon and its children
(it forks one per connection, which may fork again; their times counted once
the daemon reaped them). The targets (issue 20): rframe blake3 at least 1.0x
rsync's MB/s each way, and its CPU per GiB at most rsync's. Memory: the
server's peak RSS (``VmHWM``) and this process's peak RSS growth while it
ran the transfers (the other peers are processes of their own; the sendfile
receiver's buffer is allocated before).

Then a tree: 10,000 files of 4 KiB (``--tree-files``, ``--tree-size``) with
``Client.upload_tree`` / ``download_tree`` against ``rsync -r --fsync`` to and
from an rsync daemon on loopback (its config written to the work directory;
the rsync rows are skipped with a note where rsync is not installed), files
per second and CPU seconds of both ends.

Run::

    python bench/files.py                    # 1 GiB, 3 rounds: a few minutes here
    python bench/files.py --dir /dev/shm     # the same on tmpfs
    python bench/files.py --tree             # the tree rows only
    python bench/files.py --size 256M        # smaller
    python bench/files.py --quick            # 16 MiB, 1 round (smoke test)
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import rframe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402 - bench/machine.py

BUF = 1 << 20


# --------------------------------------------------------------------------- the sendfile peer


def peer_main() -> None:
    """A plain Python transfer peer: one command line per connection.

    ``recv PATH SIZE FSYNC``: receive SIZE bytes into PATH (recv_into + write),
    fsync if FSYNC is 1, then answer ``ok``. ``send PATH``: sendfile PATH.
    """
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    buf = bytearray(BUF)
    view = memoryview(buf)
    while True:
        conn, _ = srv.accept()
        with conn:
            line = b""
            while not line.endswith(b"\n"):
                part = conn.recv(1)
                if not part:
                    break
                line += part
            cmd = line.decode().split()
            if not cmd:
                continue
            if cmd[0] == "quit":
                return
            if cmd[0] == "recv":
                path, size, sync = cmd[1], int(cmd[2]), cmd[3] == "1"
                receive_into(conn, path, size, sync, view)
                conn.sendall(b"ok\n")
            elif cmd[0] == "send":
                with open(cmd[1], "rb") as f:
                    conn.sendfile(f)


def server_main(root: str, tls_dir: str) -> None:
    """The rframe server, as ``python -m rframe.server --root ROOT --log-level
    WARNING --idle-timeout 3600`` would run it, with TLS on (a certificate
    generated into ``tls_dir``). Its first line is ``PORT FINGERPRINT``."""
    logging.basicConfig(level=logging.WARNING)
    # idle_timeout: each client's connection waits while the other's
    # transfers run, which on a busy disk has taken longer than the default
    # 300 s (the server then closed the waiting connection)
    server = rframe.Server("127.0.0.1", 0, root=root, tls=True, tls_dir=tls_dir, idle_timeout=3600)
    print(server.address[1], server.tls_fingerprint, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def receive_into(conn: socket.socket, path: str, size: int, sync: bool, view: memoryview) -> None:
    with open(path, "wb") as out:
        left = size
        while left:
            n = conn.recv_into(view, min(BUF, left))
            if not n:
                raise EOFError(f"{left} bytes short")
            out.write(view[:n])
            left -= n
        if sync:
            out.flush()
            os.fsync(out.fileno())


class Process:
    """A child process whose first stdout line is its port (or a server banner)."""

    def __init__(self, argv: list[str], pattern: str) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        m = re.search(pattern, line)
        if not m:
            self.close()
            raise RuntimeError(f"{argv} did not start: {line!r}")
        self.port = int(m.group(1))
        self.match = m

    def peak_rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --------------------------------------------------------------------------- the transfers


def settle(work: str, size: int) -> None:
    """Before a timed transfer, off the clock: earlier transfers' dirty pages
    written out, and 1.5 times ``size`` of page cache touched and freed
    again, so the transfer writes into memory the machine has backed
    already (see the module's docstring)."""
    os.sync()
    scratch = os.path.join(work, "settle.bin")
    block = bytes(BUF)
    with open(scratch, "wb", buffering=0) as f:
        for _ in range(-(-size * 3 // 2 // BUF)):
            f.write(block)
    os.unlink(scratch)  # the pages go back to the free list
    os.sync()  # again: the scratch file's own metadata, off the clock too


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def sendfile_upload(port: int, src: str, dst: str, size: int, sync: bool) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s, open(src, "rb") as f:
        s.sendall(f"recv {dst} {size} {int(sync)}\n".encode())
        s.sendfile(f)
        if s.recv(3) != b"ok\n":
            raise RuntimeError("the peer did not confirm")


def sendfile_download(port: int, src: str, dst: str, size: int, sync: bool, view: memoryview) -> None:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(f"send {src}\n".encode())
        receive_into(s, dst, size, sync, view)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)


def file_system(path: str) -> str:
    """The type and source of the file system ``path`` is on, from
    ``/proc/self/mountinfo`` (the mount with its device, deepest first)."""
    st = os.stat(path)
    dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    real = os.path.realpath(path)
    best = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, right = line.split(" - ", 1)
                fields, (fstype, source, *_) = left.split(), right.split()
                point = fields[4].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if fields[2] == dev and inside and (best is None or len(point) > len(best[0])):
                    best = (point, fstype, source)
    except OSError:
        pass
    if best is None:
        kind = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True).stdout.strip()
        return kind or "?"
    return f"{best[1]} ({best[2]}, mounted on {best[0]})"


def rsync_describe(work: str, port: int, module_dir: str) -> str:
    """rsync's version and the whole-file checksum its client and daemon
    negotiate, from one small untimed transfer into ``module_dir``."""
    version = subprocess.run(["rsync", "--version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    m = re.search(r"version (\S+)", version)
    probe = os.path.join(work, "probe.bin")
    with open(probe, "wb") as f:
        f.write(os.urandom(4096))
    said = subprocess.run(
        ["rsync", "--fsync", "--debug=NSTR", probe, f"rsync://127.0.0.1:{port}/dst/probe.bin"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(probe)
    os.unlink(os.path.join(module_dir, "probe.bin"))
    c = re.search(r"negotiated checksum: (\S+)", said)
    return (
        f"rsync {m.group(1) if m else '?'} (daemon on loopback), whole-file checksum negotiated: "
        f"{c.group(1) if c else '?'}"
    )


def make_source(path: str, size: int) -> None:
    with open(path, "wb") as f:
        left = size
        block = os.urandom(BUF)
        while left:
            # random, but not the same MiB over and over: nothing compresses or dedupes
            f.write(block[: min(BUF, left)])
            block = block[1:] + block[:1]
            left -= min(BUF, left)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+)([KMG]?)", text.upper())
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30}[m.group(2)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=parse_size, default=1 << 30, help="file size (K/M/G suffixes; default 1G)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="16 MiB, 1 round")
    ap.add_argument("--dir", help="work directory (default: a new one under the system temp dir)")
    ap.add_argument("--tree", action="store_true", help="only the tree rows: many small files, against rsync")
    ap.add_argument("--tree-files", type=int, default=10_000, help="files in the tree rows (default 10,000)")
    ap.add_argument("--tree-size", type=parse_size, default=4096, help="size of each (default 4K)")
    ap.add_argument("--_peer", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--_server", nargs=2, metavar=("ROOT", "TLS_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._peer:
        peer_main()
        return 0
    if args._server:
        server_main(*args._server)
        return 0
    if args.quick:
        args.size, args.rounds = 16 << 20, 1
        args.tree_files = min(args.tree_files, 200)
    if args.tree:
        return tree_bench(args)
    size = args.size
    gib = size / (1 << 30)
    load_start = os.getloadavg()
    work = tempfile.mkdtemp(prefix="rframe-bench-files-", dir=args.dir)
    fs = file_system(work)
    root = os.path.join(work, "root")
    rroot = os.path.join(work, "rsync")
    for d in (root, rroot):
        os.mkdir(d)
    src = os.path.join(work, "source.bin")
    out = os.path.join(work, "out.bin")
    peer_out = os.path.join(work, "peer.bin")
    make_source(src, size)
    times: dict[str, list[float]] = {}
    # CPU seconds of (the client, the server) per transfer
    cpu: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, fn, client_cpu=None, server_cpu=None) -> None:
        settle(work, size)
        before = (client_cpu(), server_cpu()) if client_cpu is not None else (0.0, 0.0)
        times.setdefault(name, []).append(timed(fn))
        if client_cpu is not None:
            cpu.setdefault(name, []).append((client_cpu() - before[0], server_cpu() - before[1]))

    server = peer = rsync = None
    rsync_about = "rsync: not installed here, its columns skipped (install rsync for them)"
    try:
        server = Process(
            [sys.executable, os.path.abspath(__file__), "--_server", root, os.path.join(work, "tls")],
            r"^(\d+) ([0-9a-f]{64})$",
        )
        fingerprint = server.match.group(2)
        peer = Process([sys.executable, os.path.abspath(__file__), "--_peer"], r"^(\d+)$")
        if shutil.which("rsync"):
            rsync = RsyncDaemon(work, rroot)
            rsync_about = rsync_describe(work, rsync.port, rroot)
        url = f"rsync://127.0.0.1:{rsync.port}/dst" if rsync is not None else ""
        view = memoryview(bytearray(BUF))

        def server_cpu() -> float:
            return machine.cpu_seconds(server.proc.pid)

        def daemon_cpu() -> float:
            return proc_cpu_with_children(rsync.proc.pid)

        def rframe_pair(tag: str, client: rframe.Client, checksum: str) -> None:
            record(
                f"rframe {tag} upload",
                lambda: client.upload(src, "up.bin", overwrite=True, checksum=checksum),
                own_cpu,
                server_cpu,
            )
            record(
                f"rframe {tag} download",
                lambda: client.download("up.bin", out, overwrite=True, checksum=checksum),
                own_cpu,
                server_cpu,
            )
            os.unlink(out)
            os.unlink(os.path.join(root, "up.bin"))

        def rsync_pair() -> None:
            if rsync is None:
                return
            record("rsync upload", lambda: run(["rsync", "--fsync", src, f"{url}/up.bin"]), children_cpu, daemon_cpu)
            record("rsync download", lambda: run(["rsync", "--fsync", f"{url}/up.bin", out]), children_cpu, daemon_cpu)
            os.unlink(out)
            os.unlink(os.path.join(rroot, "up.bin"))

        def sendfile_pairs() -> None:
            for sync in (False, True):
                tag = " + fsync" if sync else ""
                record(f"sendfile upload{tag}", lambda sync=sync: sendfile_upload(peer.port, src, peer_out, size, sync))
                os.unlink(peer_out)
                record(
                    f"sendfile download{tag}",
                    lambda sync=sync: sendfile_download(peer.port, src, out, size, sync, view),
                )
                os.unlink(out)

        def cp_pair() -> None:
            record("cp", lambda: run(["cp", src, out]))
            os.unlink(out)
            record("cp + sync", lambda: run(["sh", "-c", 'cp "$0" "$1" && sync "$1"', src, out]))
            os.unlink(out)

        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # every connection (the TLS one with its handshake) is made before
        # timing; the peers take turns, their order rotated each round
        with (
            rframe.Client("127.0.0.1", server.port, timeout=300) as plain,
            rframe.Client("127.0.0.1", server.port, timeout=300) as plain_sha,
            rframe.Client("127.0.0.1", server.port, tls=True, fingerprint=fingerprint, timeout=300) as tls,
        ):
            steps = [
                lambda: rframe_pair("blake3", plain, "blake3"),
                lambda: rframe_pair("sha256", plain_sha, "sha256"),
                lambda: rframe_pair("TLS blake3", tls, "blake3"),
                rsync_pair,
                sendfile_pairs,
                cp_pair,
            ]
            for i in range(args.rounds):
                k = i % len(steps)
                for step in steps[k:] + steps[:k]:
                    step()
        client_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        server_peak = server.peak_rss_kib()
    finally:
        if peer is not None:
            try:
                with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as s:
                    s.sendall(b"quit\n")
            except OSError:
                pass
            peer.close()
        if rsync is not None:
            rsync.close()
        if server is not None:
            server.close()
        shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()

    rate = {name: size / statistics.median(ts) / 1e6 for name, ts in times.items()}

    def cpu_split(name: str) -> tuple[float, float]:
        """Median CPU seconds per GiB: (client, server)."""
        return (
            statistics.median(c for c, _ in cpu[name]) / gib,
            statistics.median(s for _, s in cpu[name]) / gib,
        )

    def cpu_cell(name: str) -> str:
        client, server_ = cpu_split(name)
        return f"{client:.2f} + {server_:.2f} = {client + server_:.2f}"

    def load(avg: tuple[float, float, float]) -> str:
        return " / ".join(f"{x:.2f}" for x in avg)

    print(f"# rframe file transfer, {size / (1 << 20):.0f} MiB over loopback TCP, median of {args.rounds}")
    print()
    print("\n".join(machine.describe()))
    print(f"- work directory: {work} on {fs}")
    print(f"- load average (1 / 5 / 15 min): {load(load_start)} at the start, {load(load_end)} at the end")
    print(f"- {rsync_about}")
    print()
    print(
        "| transfer | rframe blake3 MB/s | rframe sha256 MB/s | rsync --fsync MB/s | rframe (blake3) / rsync | target "
        "| CPU s/GiB rframe blake3 (client + server) | CPU s/GiB rframe sha256 (client + server) "
        "| CPU s/GiB rsync (client + daemon) | CPU target |"
    )
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for way in ("upload", "download"):
        b3, sha = rate[f"rframe blake3 {way}"], rate[f"rframe sha256 {way}"]
        cells = [way, f"{b3:,.0f}", f"{sha:,.0f}"]
        if rsync is None:
            cells += ["(rsync not installed: skipped)", "", "(skipped)"]
        else:
            r = rate[f"rsync {way}"]
            cells += [f"{r:,.0f}", f"{b3 / r:.2f}x", f">= 1.0x: {'met' if b3 >= r else '**missed**'}"]
        cells += [cpu_cell(f"rframe blake3 {way}"), cpu_cell(f"rframe sha256 {way}")]
        if rsync is None:
            cells += ["", "(skipped)"]
        else:
            cheaper = sum(cpu_split(f"rframe blake3 {way}")) <= sum(cpu_split(f"rsync {way}"))
            cells += [cpu_cell(f"rsync {way}"), f"blake3 <= rsync: {'met' if cheaper else '**missed**'}"]
        print("| " + " | ".join(cells) + " |")
    print()
    if args.rounds > 1:
        peers = ["rframe blake3", "rframe sha256"] + (["rsync"] if rsync is not None else [])
        spread = "; ".join(
            f"{way}: "
            + ", ".join(
                f"{p} {size / max(times[f'{p} {way}']) / 1e6:,.0f}-{size / min(times[f'{p} {way}']) / 1e6:,.0f}"
                for p in peers
            )
            for way in ("upload", "download")
        )
        print(f"The rounds' range, slowest-fastest MB/s: {spread}.")
        print()
    print("For scale, rframe (plaintext, blake3) against the plain Python `socket.sendfile` peer:")
    print()
    print(
        "| transfer | rframe blake3 MB/s | sendfile MB/s | rframe / sendfile "
        "| sendfile + fsync MB/s | rframe / (sendfile + fsync) | target |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for way in ("upload", "download"):
        r, p, pf = rate[f"rframe blake3 {way}"], rate[f"sendfile {way}"], rate[f"sendfile {way} + fsync"]
        print(
            f"| {way} | {r:,.0f} | {p:,.0f} | {r / p:.2f}x | {pf:,.0f} | {r / pf:.2f}x | "
            f">= 0.70x sendfile: {'met' if r / p >= 0.70 else '**missed**'} |"
        )
    print()
    print(
        "rframe over TLS 1.3 against rframe plaintext (both blake3), the same server; each client's one connection "
        "(the TLS handshake included) opened before timing:"
    )
    print()
    print(
        "| transfer | rframe plaintext MB/s | rframe TLS 1.3 MB/s | TLS / plaintext | target "
        "| CPU s/GiB plaintext (client + server) | CPU s/GiB TLS (client + server) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for way in ("upload", "download"):
        r, t = rate[f"rframe blake3 {way}"], rate[f"rframe TLS blake3 {way}"]
        print(
            f"| {way} | {r:,.0f} | {t:,.0f} | {t / r:.2f}x | >= 0.85x: {'met' if t / r >= 0.85 else '**missed**'} "
            f"| {cpu_cell(f'rframe blake3 {way}')} | {cpu_cell(f'rframe TLS blake3 {way}')} |"
        )
    print()
    print(f"For scale: local `cp` {rate['cp']:,.0f} MB/s, `cp` + `sync FILE` {rate['cp + sync']:,.0f} MB/s.")
    print(
        f"Memory: the rframe server's peak RSS {server_peak / 1024:.0f} MiB; this process grew by "
        f"{client_growth / 1024:.0f} MiB during the transfers (rframe's clients are in it) of "
        f"{size / (1 << 20):.0f} MiB files."
    )
    print()
    return tree_bench(args)


# --------------------------------------------------------------------------- trees


def make_tree(top: str, count: int, size: int) -> None:
    """``count`` files of ``size`` random bytes, 100 to a directory."""
    for i in range(count):
        d = os.path.join(top, f"d{i // 100:03}")
        if i % 100 == 0:
            os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i:05}"), "wb") as f:
            f.write(os.urandom(size))


def proc_cpu_with_children(pid: int) -> float:
    """user + system seconds of a process and its reaped children (the rsync
    daemon forks one per connection: waits, briefly, until it reaped them)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                if not f.read().strip():
                    break
        except OSError:
            break
        time.sleep(0.01)
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class RsyncDaemon:
    """``rsync --daemon`` on a free loopback port, its config in ``work``,
    serving module ``dst`` (read-write) at ``path``."""

    def __init__(self, work: str, path: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = os.path.join(work, "rsyncd.conf")
        with open(conf, "w") as f:
            f.write(
                f"port = {self.port}\naddress = 127.0.0.1\nuse chroot = false\npid file = {work}/rsyncd.pid\n"
                f"log file = {work}/rsyncd.log\n[dst]\npath = {path}\nread only = false\n"
                f"uid = {os.getuid()}\ngid = {os.getgid()}\n"
            )
        self.proc = subprocess.Popen(
            ["rsync", "--daemon", "--no-detach", f"--config={conf}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("rsync --daemon did not start") from None
                time.sleep(0.05)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def tree_bench(args: argparse.Namespace) -> int:
    """10,000 files of 4 KiB (``--tree-files``, ``--tree-size``): rframe's
    ``upload_tree`` / ``download_tree`` against ``rsync -r --fsync`` to and
    from an rsync daemon on loopback, files per second, medians; CPU seconds
    (client + server) of each."""
    count, fsize = args.tree_files, args.tree_size
    work = tempfile.mkdtemp(prefix="rframe-bench-tree-", dir=args.dir)
    src = os.path.join(work, "src")
    root = os.path.join(work, "root")
    rroot = os.path.join(work, "rsync")
    for d in (src, root, rroot):
        os.mkdir(d)
    make_tree(src, count, fsize)
    server = Process(
        [sys.executable, os.path.abspath(__file__), "--_server", root, os.path.join(work, "tls")],
        r"^(\d+) ([0-9a-f]{64})$",
    )
    rsync = None
    if shutil.which("rsync"):
        rsync = RsyncDaemon(work, rroot)
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    url = f"rsync://127.0.0.1:{rsync.port}/dst" if rsync is not None else ""

    def record(name: str, fn, peer_cpu) -> None:
        settle(work, args.tree_files * args.tree_size)
        before = own_cpu() + children_cpu() + peer_cpu()
        times.setdefault(name, []).append(timed(fn))
        cpu.setdefault(name, []).append(own_cpu() + children_cpu() + peer_cpu() - before)

    try:
        with rframe.Client("127.0.0.1", server.port, timeout=300) as client:
            for i in range(args.rounds):
                record(
                    "rframe upload",
                    lambda i=i: client.upload_tree(src, f"t{i}"),
                    lambda: machine.cpu_seconds(server.proc.pid),
                )
                record(
                    "rframe download",
                    lambda i=i: client.download_tree(f"t{i}", os.path.join(work, f"back{i}")),
                    lambda: machine.cpu_seconds(server.proc.pid),
                )
                if rsync is not None:
                    record(
                        "rsync upload",
                        lambda i=i: subprocess.run(["rsync", "-r", "--fsync", f"{src}/", f"{url}/t{i}/"], check=True),
                        lambda: proc_cpu_with_children(rsync.proc.pid),
                    )
                    record(
                        "rsync download",
                        lambda i=i: subprocess.run(
                            ["rsync", "-r", "--fsync", f"{url}/t{i}/", os.path.join(work, f"rback{i}") + "/"],
                            check=True,
                        ),
                        lambda: proc_cpu_with_children(rsync.proc.pid),
                    )
    finally:
        if rsync is not None:
            rsync.close()
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"# trees: {count:,} files of {fsize:,} bytes over loopback TCP, median of {args.rounds}")
    print()
    print("| transfer | rframe files/s | rsync -r --fsync files/s | rframe / rsync | target | CPU s: rframe | rsync |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for way in ("upload", "download"):
        r = count / statistics.median(times[f"rframe {way}"])
        rc = statistics.median(cpu[f"rframe {way}"])
        if rsync is None:
            print(f"| {way} | {r:,.0f} | (rsync not installed: row skipped) | | | {rc:.2f} | |")
            continue
        s = count / statistics.median(times[f"rsync {way}"])
        sc = statistics.median(cpu[f"rsync {way}"])
        target = (">= 1.0x: met" if r >= s else ">= 1.0x: **missed**") if way == "upload" else "(none)"
        print(f"| {way} | {r:,.0f} | {s:,.0f} | {r / s:.2f}x | {target} | {rc:.2f} | {sc:.2f} |")
    print()
    print(
        "CPU seconds: this process and its children, plus the server (rframe) or the daemon and its children (rsync)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
