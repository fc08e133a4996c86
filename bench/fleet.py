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

* **parallel-ssh** (where installed): ``ParallelSSHClient`` of N hosts (all the
  same sshd) ``run_command("true")`` and ``join``, a new client per round, in
  a process of its own (it runs on gevent), its rounds timed there.
* **Ansible** (where ``ansible`` is installed): ``ansible all -f 20 -m shell
  -a true`` over 20 of the hosts, through rframe's connection plugin
  (``-c rframe``, fresh connections each run) against ``-c ssh`` to the same
  sshd under 20 inventory names, with ``ControlPersist`` on (the untimed
  first run opens the master connections, the timed runs reuse them: ssh's
  best case); and, for reference, the same with ``ansible_connection=local``:
  no transport at all, what Ansible costs itself. ``ANSIBLE_PIPELINING`` is
  passed on (default off, as Ansible's).

Reported: the wall time of a round (median of the rounds) and the client
process's CPU time per host (``time.process_time()``; for Ansible, of its
processes, which with ``-c local`` run the modules too), and the ratios of the
wall times. Targets: rframe at most 1/10 of
asyncssh's wall time; Ansible with rframe at least 2x as fast as with ssh.

Run::

    python bench/fleet.py               # 100 hosts, 5 rounds
    python bench/fleet.py --quick       # 10 hosts, 1 round, no asyncssh (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import rframe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402 - bench/machine.py
import setup as setup_bench  # noqa: E402 - bench/setup.py: its sshd of a run's own

TIMEOUT = 60.0  # seconds, for a whole round of either peer
#: How the servers' process gets its token.
TOKEN_VARIABLE = "RFRAME_BENCH_TOKEN"


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


def pssh_main(port: int, user: str, key: str, count: int, rounds: int) -> None:
    """``--_pssh``: parallel-ssh's rounds, timed in this process; JSON on stdout."""
    from pssh.clients import ParallelSSHClient

    times = []
    for i in range(rounds + 1):  # the first untimed, as the others' first round
        w0, c0 = time.perf_counter(), time.process_time()
        client = ParallelSSHClient(
            ["127.0.0.1"] * count, port=port, user=user, pkey=key, num_retries=0, timeout=TIMEOUT, pool_size=count
        )
        output = client.run_command("true")
        client.join(output)
        codes = [o.exit_code for o in output]
        if codes != [0] * count:
            raise RuntimeError(f"parallel-ssh: exit codes {codes}")
        del client, output
        if i:
            times.append((time.perf_counter() - w0, time.process_time() - c0))
    print(json.dumps(times))


def rframe_round(hosts: list[str], token: str) -> None:
    with rframe.Group(hosts, token=token, timeout=TIMEOUT) as group:
        result = group.run("true", check=True)
    if len(result.succeeded) != len(hosts):
        raise RuntimeError(f"rframe: {result!r}")


def asyncssh_round(loop: asyncio.AbstractEventLoop, asyncssh, sshd, key, count: int) -> None:
    async def all_of_them() -> None:
        await asyncio.gather(*(setup_bench.asyncssh_true(asyncssh, sshd, key) for _ in range(count)))

    loop.run_until_complete(asyncio.wait_for(all_of_them(), TIMEOUT))


ANSIBLE_HOSTS = 20


def ansible_env(work: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "RFRAME_TOKEN"}
    env.update(
        ANSIBLE_CONNECTION_PLUGINS=rframe_ansible_dir(),
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_LOCAL_TEMP=os.path.join(work, "ansible-local"),
        ANSIBLE_REMOTE_TMP=os.path.join(work, "ansible-remote"),
        ANSIBLE_HOME=os.path.join(work, "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PIPELINING=os.environ.get("ANSIBLE_PIPELINING", "False"),
        PYTHONWARNINGS="ignore",
        LC_ALL="C.UTF-8",
    )
    return env


def rframe_ansible_dir() -> str:
    from rframe.ansible import PLUGIN_DIR

    return PLUGIN_DIR


def ansible_inventories(work: str, hosts: list[str], token: str, sshd) -> dict[str, str]:
    """``{"rframe": path, "ssh": path}`` (``ssh`` only with an sshd)."""
    common = [f"ansible_python_interpreter={sys.executable}"]
    lines = ["[all]"] + [
        f"h{i} ansible_host={h.rsplit(':', 1)[0]} ansible_port={h.rsplit(':', 1)[1]}"
        for i, h in enumerate(hosts[:ANSIBLE_HOSTS])
    ]
    lines += ["[all:vars]", "ansible_connection=rframe", f"rframe_token={token}", *common]
    paths = {"rframe": os.path.join(work, "rframe.ini")}
    with open(paths["rframe"], "w") as f:
        f.write("\n".join(lines) + "\n")
    if sshd is not None:
        control = os.path.join(work, "cp-%C")
        ssh_args = (
            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes "
            f"-o ControlMaster=auto -o ControlPersist=120s -o ControlPath={control}"
        )
        lines = ["[all]"] + [f"s{i} ansible_host=127.0.0.1 ansible_port={sshd.port}" for i in range(ANSIBLE_HOSTS)]
        lines += [
            "[all:vars]",
            "ansible_connection=ssh",
            f"ansible_user={sshd.user}",
            f"ansible_ssh_private_key_file={sshd.user_key}",
            f"ansible_ssh_common_args='{ssh_args}'",
            *common,
        ]
        paths["ssh"] = os.path.join(work, "ssh.ini")
        with open(paths["ssh"], "w") as f:
            f.write("\n".join(lines) + "\n")
    return paths


def ansible_round(ansible: str, inventory: str, env: dict[str, str], *extra: str) -> None:
    argv = [ansible, "all", "-i", inventory, "-f", str(ANSIBLE_HOSTS), "-m", "shell", "-a", "true", *extra]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT * 2, env=env)
    if r.returncode != 0 or r.stdout.count("CHANGED | rc=0") != ANSIBLE_HOSTS:
        raise RuntimeError(f"ansible failed (status {r.returncode}): {(r.stdout + r.stderr)[-2000:]}")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn) -> tuple[float, float]:
    """Wall seconds and CPU seconds of ``fn()``: this process's, and its
    finished children's (Ansible runs in processes of its own)."""
    w0, c0, k0 = time.perf_counter(), time.process_time(), children_cpu()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0 + children_cpu() - k0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, help="hosts (default 100; --quick 10)")
    ap.add_argument("--rounds", type=int, help="rounds, medians reported (default 5; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="10 hosts, 1 round, no asyncssh (smoke test)")
    ap.add_argument("--no-ssh", action="store_true", help="skip the asyncssh and Ansible-over-ssh peers")
    ap.add_argument("--no-ansible", action="store_true", help="skip the Ansible rows")
    ap.add_argument("--_servers", type=int, metavar="COUNT", help=argparse.SUPPRESS)
    ap.add_argument("--_pssh", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._servers:
        # The token comes in the environment (and leaves it, so the servers'
        # commands do not inherit it): on the command line, ps would show it,
        # and one that begins with "-" would read as an option.
        serve(args._servers, os.environ.pop(TOKEN_VARIABLE))
        return 0
    if args._pssh:
        port, user, key, n, r = args._pssh
        pssh_main(int(port), user, key, int(n), int(r))
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
        [sys.executable, os.path.abspath(__file__), "--_servers", str(count)],
        env={**os.environ, TOKEN_VARIABLE: token},
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
            asyncssh = setup_bench.import_asyncssh()
            if asyncssh is None:
                notes.append(setup_bench.NO_ASYNCSSH)
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
        ansible = shutil.which("ansible", path=os.path.dirname(sys.executable)) or shutil.which("ansible")
        if args.quick or args.no_ansible:
            notes.append("Ansible skipped: " + ("--quick" if args.quick else "--no-ansible"))
        elif ansible is None:
            notes.append("Ansible skipped: not installed (pip install ansible-core)")
        elif count < ANSIBLE_HOSTS:
            notes.append(f"Ansible skipped: it runs on {ANSIBLE_HOSTS} hosts, and --hosts is {count}")
        else:
            env = ansible_env(work)
            inventories = ansible_inventories(work, hosts, token, sshd)
            peers["ansible-rframe"] = lambda: ansible_round(ansible, inventories["rframe"], env)
            labels["ansible-rframe"] = (
                f"`ansible all -f {ANSIBLE_HOSTS} -m shell -a true -c rframe`, {ANSIBLE_HOSTS} hosts"
            )
            # Ansible with no transport at all: what it costs itself, the floor of every plugin.
            peers["ansible-local"] = lambda: ansible_round(
                ansible, inventories["rframe"], env, "-e", "ansible_connection=local"
            )
            labels["ansible-local"] = "the same `-c local`: no transport, Ansible's own floor (reference)"
            if "ssh" in inventories:
                peers["ansible-ssh"] = lambda: ansible_round(ansible, inventories["ssh"], env)
                labels["ansible-ssh"] = (
                    f"the same `-c ssh`, ControlPersist on, {ANSIBLE_HOSTS} names for one sshd ({sshd.version})"
                )
            else:
                notes.append("Ansible over ssh skipped: no sshd (see the asyncssh note)")
        if sshd is not None:
            try:
                import pssh  # noqa: F401 - only whether it is here; it runs in a process of its own
            except ImportError:
                notes.append("parallel-ssh skipped: not installed (pip install parallel-ssh)")
            else:
                r = subprocess.run(
                    [sys.executable, os.path.abspath(__file__), "--_pssh", str(sshd.port), sshd.user, sshd.user_key]
                    + [str(count), str(rounds)],
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT * (rounds + 2),
                )
                if r.returncode == 0:
                    pssh_version = importlib.metadata.version("parallel-ssh")

                    times["parallel-ssh"] = [tuple(t) for t in json.loads(r.stdout)]
                    labels["parallel-ssh"] = (
                        f"parallel-ssh {pssh_version}: `ParallelSSHClient` of {count}, `run_command('true')` + `join` "
                        "(its own process, rounds in a row)"
                    )
                else:
                    notes.append(f"parallel-ssh dropped: {(r.stdout + r.stderr).strip()[-500:]}")
        for fn in peers.values():  # one untimed round each: first-use set-up, page cache, ssh's masters
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
    order = ["rframe", "asyncssh", "parallel-ssh", "ansible-rframe", "ansible-local", "ansible-ssh"]
    for name, got in sorted(times.items(), key=lambda item: order.index(item[0])):
        hosts_of_peer = ANSIBLE_HOSTS if name.startswith("ansible") else count
        cpu = statistics.median(c for _, c in got) / hosts_of_peer
        print(f"| {labels[name]} | {wall[name] * 1e3:.1f} | {cpu * 1e3:.2f} | {wall[name] / wall['rframe']:.1f}x |")
    ratios = []
    if "asyncssh" in wall:
        ratio = wall["rframe"] / wall["asyncssh"]
        ratios.append(
            f"| rframe wall time / asyncssh's | {ratio:.3f}x | <= 0.1x: {'met' if ratio <= 0.1 else '**missed**'} |"
        )
    if "ansible-ssh" in wall:
        speedup = wall["ansible-ssh"] / wall["ansible-rframe"]
        met = "met" if speedup >= 2 else "**missed**"
        ratios.append(f"| Ansible: `-c ssh` wall time / `-c rframe`'s | {speedup:.2f}x | >= 2x: {met} |")
    if ratios:
        print()
        print("| ratio | value | target |")
        print("|---|---:|---|")
        print("\n".join(ratios))
    for note in notes:
        print(f"\nNote: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
