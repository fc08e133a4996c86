#!/usr/bin/env python3
"""Many servers: one ``run("true")`` on every host, fresh connections, rframe against asyncssh.

Every number is measured in this run, on this machine; nothing is hard-coded.

* **rframe**: N command servers, each on a loopback address of its own
  (127.0.0.2, 127.0.0.3, ...) with a token, in one process of their own;
  ``rframe.Group(hosts, token=...).run("true")`` from this process, a new
  group (so new connections and logins) per round.
* **asyncssh**: ``asyncio.gather`` of N ``asyncssh.connect`` + ``run("true")``
  to one sshd of this run's own on 127.0.0.1 (ed25519 keys made for the run;
  ``MaxStartups`` raised so that sshd lets N handshakes in at once), in this
  process. An OpenSSH ``sshd`` and asyncssh are needed; the row is skipped
  with a note where either is missing.

Reported: the wall time of a round (median of the rounds) and the client
process's CPU time per host (``time.process_time()``), and the ratio of the
wall times. Target: rframe at most 1/10 of asyncssh's wall time.

Run::

    python bench/fleet.py               # 100 hosts, 5 rounds
    python bench/fleet.py --quick       # 10 hosts, 1 round, no asyncssh (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import rframe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402 - bench/machine.py
import setup as setup_bench  # noqa: E402 - bench/setup.py: its sshd of a run's own

TIMEOUT = 60.0  # seconds, for a whole round of either peer


def serve(count: int, token: str) -> None:
    """``--_servers``: ``count`` command servers on 127.0.0.2..., their
    addresses on stdout, until stdin closes."""
    servers = [rframe.Server(f"127.0.0.{2 + i}", 0, token=token) for i in range(count)]
    for s in servers:
        s.start()
    print(" ".join(f"{h}:{p}" for h, p in (s.address for s in servers)), flush=True)
    sys.stdin.read()
    for s in servers:
        s.stop()


def rframe_round(hosts: list[str], token: str) -> None:
    with rframe.Group(hosts, token=token, timeout=TIMEOUT) as group:
        result = group.run("true", check=True)
    if len(result.succeeded) != len(hosts):
        raise RuntimeError(f"rframe: {result!r}")


def asyncssh_round(loop: asyncio.AbstractEventLoop, asyncssh, sshd, key, count: int) -> None:
    async def one() -> None:
        async with asyncssh.connect(
            "127.0.0.1",
            sshd.port,
            username=sshd.user,
            client_keys=[key],
            known_hosts=None,
            agent_path=None,
            config=[],
            gss_host=None,
            preferred_auth="publickey",
        ) as conn:
            await conn.run("true", check=True)

    async def all_of_them() -> None:
        await asyncio.gather(*(one() for _ in range(count)))

    loop.run_until_complete(asyncio.wait_for(all_of_them(), TIMEOUT))


def timed(fn) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds of ``fn()``."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, help="hosts (default 100; --quick 10)")
    ap.add_argument("--rounds", type=int, help="rounds, medians reported (default 5; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="10 hosts, 1 round, no asyncssh (smoke test)")
    ap.add_argument("--no-ssh", action="store_true", help="skip the asyncssh peer")
    ap.add_argument("--_servers", nargs=2, metavar=("COUNT", "TOKEN"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._servers:
        serve(int(args._servers[0]), args._servers[1])
        return 0
    count = args.hosts or (10 if args.quick else 100)
    rounds = args.rounds or (1 if args.quick else 5)
    if not 1 <= count <= 250:
        ap.error("--hosts: 1 to 250 (one loopback address each, 127.0.0.2 on)")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))

    notes: list[str] = []
    token = rframe.new_token()
    work = tempfile.mkdtemp(prefix="rframe-bench-fleet-")
    server = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--_servers", str(count), token],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    sshd = loop = None
    times: dict[str, list[tuple[float, float]]] = {}
    labels = {"rframe": f"rframe {machine.rframe_version()} `Group(hosts, token=...).run('true')`"}
    try:
        assert server.stdout is not None
        hosts = server.stdout.readline().split()
        if len(hosts) != count:
            raise RuntimeError(f"the servers' process gave {len(hosts)} addresses, not {count}")
        peers = {"rframe": lambda: rframe_round(hosts, token)}
        if args.quick or args.no_ssh:
            notes.append("asyncssh skipped: " + ("--quick" if args.quick else "--no-ssh"))
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # its cryptography's deprecation of DSA
                    import asyncssh
            except ImportError:
                notes.append("asyncssh skipped: not installed (pip install asyncssh)")
            else:
                try:
                    sshd = setup_bench.Sshd(work, extra_config=f"MaxStartups {count * 2}\nMaxSessions {count}\n")
                except (setup_bench.Unavailable, OSError, subprocess.SubprocessError) as e:
                    notes.append(f"asyncssh skipped: {e}")
                else:
                    loop = asyncio.new_event_loop()
                    key = asyncssh.read_private_key(sshd.user_key)
                    peers["asyncssh"] = lambda: asyncssh_round(loop, asyncssh, sshd, key, count)
                    labels["asyncssh"] = (
                        f"asyncssh {asyncssh.__version__}: `asyncio.gather` of {count} `connect` + `run('true')` "
                        f"to {sshd.version}"
                    )
        for fn in peers.values():  # one untimed round each: first-use set-up, page cache
            fn()
        for i in range(rounds):
            for name in list(peers)[i % len(peers) :] + list(peers)[: i % len(peers)]:
                times.setdefault(name, []).append(timed(peers[name]))
    finally:
        if loop is not None:
            loop.close()
        if sshd is not None:
            sshd.close()
        if server.stdin is not None:
            server.stdin.close()
        server.wait(TIMEOUT)
        setup_bench.shutil.rmtree(work, ignore_errors=True)

    print(f'# Many servers: `run("true")` on {count} hosts, fresh connections' + (" (--quick)" if args.quick else ""))
    print()
    print("\n".join(machine.describe()))
    print(
        f"- {count} rframe servers on 127.0.0.2 to 127.0.0.{count + 1}, one process; {rounds} round(s) per peer, "
        "peers taking turns, medians; client CPU is this process's"
    )
    print()
    print("| peer | wall ms | client CPU ms per host | wall / rframe's |")
    print("|---|---:|---:|---:|")
    wall = {name: statistics.median(w for w, _ in got) for name, got in times.items()}
    for name, got in times.items():
        cpu = statistics.median(c for _, c in got) / count
        print(f"| {labels[name]} | {wall[name] * 1e3:.1f} | {cpu * 1e3:.2f} | {wall[name] / wall['rframe']:.1f}x |")
    if "asyncssh" in wall:
        ratio = wall["rframe"] / wall["asyncssh"]
        met = "met" if ratio <= 0.1 else "**missed**"
        print()
        print("| ratio | value | target |")
        print("|---|---:|---|")
        print(f"| rframe wall time / asyncssh's | {ratio:.3f}x | <= 0.1x: {met} |")
    for note in notes:
        print(f"\nNote: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
