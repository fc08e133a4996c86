#!/usr/bin/env python3
"""Benchmark rframe's file transfer against plain Python ``socket.sendfile`` and ``cp``.

Every number is measured in this run, on this machine; nothing is hard-coded.

A file of random bytes (1 GiB by default) is moved over loopback TCP, each way:

* **rframe**: ``Client.upload`` to, and ``Client.download`` from, an
  ``rframe.Server(root=DIR, tls=True)`` in a process of its own (``files.py
  --_server``: what ``python -m rframe.server --root DIR`` runs, with TLS on).
  Both ends hash the file (sha256), the receiver verifies the digest, fsyncs,
  and renames the file into place. Twice: a plaintext client (TLS is off on
  loopback unless asked for) and a TLS 1.3 client pinning the server's
  certificate fingerprint, each on one connection opened before the timed
  transfers (so the TLS handshake is not timed), their transfers taking turns.
* **sendfile**: the plain Python transfer. The sender calls
  ``socket.sendfile`` (zero-copy); the receiver, a loop of ``recv_into`` a
  1 MiB buffer and ``write`` to the file. No digest. Measured twice: as is
  (the data may still be in the page cache when the clock stops) and with an
  ``os.fsync`` at the end (as durable as rframe's).
* **cp**: the same file copied on the local disk (``cp``), and ``cp`` followed
  by ``sync FILE``, for scale.

The clock runs from the first byte of the request until the receiver is done
(rframe: the call returns; sendfile: the receiver says so). Each transfer runs
``--rounds`` times; the table shows the median. The source file stays in the
page cache (it was just written), so this measures the transfer, not the
source disk. Memory: the server's peak RSS (``VmHWM``) and this process's
peak RSS growth while it ran the rframe transfers.

Then a tree: 10,000 files of 4 KiB (``--tree-files``, ``--tree-size``) with
``Client.upload_tree`` / ``download_tree`` against ``rsync -r --fsync`` to and
from an rsync daemon on loopback (its config written to the work directory;
the rsync rows are skipped with a note where rsync is not installed), files
per second and CPU seconds of both ends.

Run::

    python bench/files.py                 # 1 GiB, 3 rounds: about a minute here
    python bench/files.py --tree          # the tree rows only
    python bench/files.py --size 256M     # smaller
    python bench/files.py --quick         # 16 MiB, 1 round (smoke test)
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
    work = tempfile.mkdtemp(prefix="rframe-bench-files-", dir=args.dir)
    root = os.path.join(work, "root")
    os.mkdir(root)
    src = os.path.join(work, "source.bin")
    make_source(src, size)
    server = Process(
        [sys.executable, os.path.abspath(__file__), "--_server", root, os.path.join(work, "tls")],
        r"^(\d+) ([0-9a-f]{64})$",
    )
    fingerprint = server.match.group(2)
    peer = Process([sys.executable, os.path.abspath(__file__), "--_peer"], r"^(\d+)$")
    view = memoryview(bytearray(BUF))
    times: dict[str, list[float]] = {}
    # CPU seconds of (this process, the server) per rframe transfer
    cpu: dict[str, list[tuple[float, float]]] = {}

    def record(name: str, fn) -> None:
        times.setdefault(name, []).append(timed(fn))

    def record_rframe(name: str, fn) -> None:
        mine, theirs = own_cpu(), machine.cpu_seconds(server.proc.pid)
        record(name, fn)
        cpu.setdefault(name, []).append((own_cpu() - mine, machine.cpu_seconds(server.proc.pid) - theirs))

    out = os.path.join(work, "out.bin")
    peer_out = os.path.join(work, "peer.bin")
    try:
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # both connections (the TLS one with its handshake) are made before
        # timing; their transfers take turns, so both meet the same machine
        with (
            rframe.Client("127.0.0.1", server.port, timeout=300) as plain,
            rframe.Client("127.0.0.1", server.port, tls=True, fingerprint=fingerprint, timeout=300) as tls,
        ):
            for _ in range(args.rounds):
                for tag, client in (("", plain), (" TLS", tls)):
                    record_rframe(
                        f"rframe{tag} upload", lambda client=client: client.upload(src, "up.bin", overwrite=True)
                    )
                    record_rframe(
                        f"rframe{tag} download", lambda client=client: client.download("up.bin", out, overwrite=True)
                    )
                    os.unlink(out)
                    os.unlink(os.path.join(root, "up.bin"))
        client_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        server_peak = server.peak_rss_kib()
        for _ in range(args.rounds):
            for sync in (False, True):
                tag = " + fsync" if sync else ""
                record(f"sendfile upload{tag}", lambda sync=sync: sendfile_upload(peer.port, src, peer_out, size, sync))
                os.unlink(peer_out)
                record(
                    f"sendfile download{tag}",
                    lambda sync=sync: sendfile_download(peer.port, src, out, size, sync, view),
                )
                os.unlink(out)
            record("cp", lambda: subprocess.run(["cp", src, out], check=True))
            os.unlink(out)
            record("cp + sync", lambda: subprocess.run(["sh", "-c", f"cp '{src}' '{out}' && sync '{out}'"], check=True))
            os.unlink(out)
    finally:
        try:
            with socket.create_connection(("127.0.0.1", peer.port), timeout=5) as s:
                s.sendall(b"quit\n")
        except OSError:
            pass
        peer.close()
        server.close()
        shutil.rmtree(work, ignore_errors=True)

    rate = {name: size / statistics.median(ts) / 1e6 for name, ts in times.items()}
    print(f"# rframe file transfer, {size / (1 << 20):.0f} MiB over loopback TCP, median of {args.rounds}")
    print()
    print("\n".join(machine.describe()))
    print()
    print(
        "| transfer | rframe MB/s | sendfile MB/s | rframe / sendfile "
        "| sendfile + fsync MB/s | rframe / (sendfile + fsync) | target |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    verdicts = []
    for way in ("upload", "download"):
        r, p, pf = rate[f"rframe {way}"], rate[f"sendfile {way}"], rate[f"sendfile {way} + fsync"]
        met = r / p >= 0.70
        verdicts.append(met)
        print(
            f"| {way} | {r:,.0f} | {p:,.0f} | {r / p:.2f}x | {pf:,.0f} | {r / pf:.2f}x | "
            f">= 0.70x sendfile: {'met' if met else '**missed**'} |"
        )
    print()
    print(
        "rframe over TLS 1.3 against rframe plaintext, the same server; each client's one connection "
        "(the TLS handshake included) opened before timing:"
    )
    print()
    gib = size / (1 << 30)

    def cpu_per_gib(name: str) -> str:
        """Median CPU seconds per GiB: client + server = total."""
        client = statistics.median(c for c, _ in cpu[name]) / gib
        server_ = statistics.median(s for _, s in cpu[name]) / gib
        return f"{client:.2f} + {server_:.2f} = {client + server_:.2f}"

    print(
        "| transfer | rframe plaintext MB/s | rframe TLS 1.3 MB/s | TLS / plaintext | target "
        "| CPU s/GiB plaintext (client + server) | CPU s/GiB TLS (client + server) |"
    )
    print("|---|---:|---:|---:|---|---:|---:|")
    for way in ("upload", "download"):
        r, t = rate[f"rframe {way}"], rate[f"rframe TLS {way}"]
        print(
            f"| {way} | {r:,.0f} | {t:,.0f} | {t / r:.2f}x | >= 0.85x: {'met' if t / r >= 0.85 else '**missed**'} "
            f"| {cpu_per_gib(f'rframe {way}')} | {cpu_per_gib(f'rframe TLS {way}')} |"
        )
    print()
    print(f"For scale: local `cp` {rate['cp']:,.0f} MB/s, `cp` + `sync FILE` {rate['cp + sync']:,.0f} MB/s.")
    print(
        f"Memory: the rframe server's peak RSS {server_peak / 1024:.0f} MiB; this process grew by "
        f"{client_growth / 1024:.0f} MiB during the rframe transfers (plaintext and TLS) of "
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
