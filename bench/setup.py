#!/usr/bin/env python3
"""Benchmark connection set-up: a fresh connection, its login, and one
``run("true")``, against OpenSSH and asyncssh on this machine.

Every number is measured in this run, on this machine; nothing is hard-coded.

Each round opens a new connection and closes it; the clock runs from before
the connect to after the connection is closed again:

* **rframe plaintext**: ``rframe.Client("127.0.0.1", port, token=TOKEN)``
  (TLS is off on loopback), ``run("true")``, close;
* **rframe TLS**: the same with ``tls=True`` and ``fingerprint=`` the server's
  certificate: TCP, the TLS 1.3 handshake, the fingerprint check, the token
  login (bound to the certificate), ``run("true")``, close;
* **ssh**: ``ssh -p PORT 127.0.0.1 true``, a process per round, against an
  ``sshd`` this script starts on a free loopback port with a configuration of
  its own (host key and user key generated for the run, ``-F /dev/null`` on the
  client so no user configuration, agent or connection sharing takes part);
* **asyncssh**: ``asyncssh.connect`` + ``conn.run("true")`` against the same
  sshd, in this process, on one event loop.

The rframe server (``rframe.Server(token=TOKEN, tls=True)``, a command
server) runs in a process of its own (``setup.py --_server``); both rframe rows
talk to it. Rounds take turns (each round runs every peer once, in a rotating
order), after one untimed connection of each. Reported: the median and the
90th percentile (nearest rank) in milliseconds, and each median over rframe
TLS's.

A peer that cannot run here (no ``sshd``, ``ssh``, ``ssh-keygen`` or
asyncssh, or an sshd that will not start) is skipped with a note; the rframe
rows always run.

Run::

    python bench/setup.py             # 50 rounds: about half a minute here
    python bench/setup.py --quick     # 5 rounds (smoke test)
    python bench/setup.py --no-ssh    # the rframe rows only
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import rframe

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402 - bench/machine.py

HOST = "127.0.0.1"
TIMEOUT = 30.0  # seconds, for any one connection of any peer


# --------------------------------------------------------------------------- the rframe server


def server_main(token_file: str, tls_dir: str) -> None:
    """The command server with a token and TLS; its first line is ``PORT FINGERPRINT``."""
    with open(token_file) as f:
        token = f.read().strip()
    server = rframe.Server(HOST, 0, token=token, tls=True, tls_dir=tls_dir)
    print(server.address[1], server.tls_fingerprint, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


def _die_with_parent() -> None:
    """In a child, before exec: SIGTERM when this script dies, even by
    SIGKILL, so that no sshd or server outlives it (Linux; elsewhere a no-op)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def start_rframe(work: str, token: str) -> tuple[subprocess.Popen, int, str]:
    token_file = os.path.join(work, "token")
    with open(os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
        f.write(token)
    proc = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--_server", token_file, os.path.join(work, "tls")],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        preexec_fn=_die_with_parent,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    m = re.fullmatch(r"(\d+) ([0-9a-f]{64})\n", line)
    if not m:
        stop(proc)
        raise RuntimeError(f"the rframe server did not start: {line!r}")
    return proc, int(m.group(1)), m.group(2)


# --------------------------------------------------------------------------- sshd


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def find_sshd() -> str | None:
    return shutil.which("sshd") or next(
        (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None
    )


class Sshd:
    """An sshd of this run's own: a free loopback port, a host key and a user
    key made for the run, its configuration and keys in ``work/ssh``."""

    def __init__(self, work: str, extra_config: str = "") -> None:
        self.proc: subprocess.Popen | None = None
        sshd, keygen = find_sshd(), shutil.which("ssh-keygen")
        if sshd is None:
            raise Unavailable("no sshd (Debian/Ubuntu: apt-get install openssh-server)")
        if keygen is None:
            raise Unavailable("no ssh-keygen (Debian/Ubuntu: apt-get install openssh-client)")
        self.dir = os.path.join(work, "ssh")
        os.mkdir(self.dir, 0o700)
        self.host_key = os.path.join(self.dir, "host_key")
        self.user_key = os.path.join(self.dir, "user_key")
        for path in (self.host_key, self.user_key):
            subprocess.run(
                [keygen, "-q", "-t", "ed25519", "-N", "", "-f", path],
                check=True,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=TIMEOUT,
            )
        shutil.copyfile(self.user_key + ".pub", os.path.join(self.dir, "authorized_keys"))
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.port = free_port()
        self.config = os.path.join(self.dir, "sshd_config")
        # SHLVL=1 in the session: bash, the login shell here, then does not
        # read ~/.bashrc for `bash -c true` (it does when it sees it was
        # started by sshd at the first level), so the rows time ssh, not the
        # account's shell start-up (root's .bashrc here runs `pyenv init`)
        with open(self.config, "w") as f:
            f.write(
                f"Port {self.port}\n"
                f"ListenAddress {HOST}\n"
                f"HostKey {self.host_key}\n"
                f"AuthorizedKeysFile {self.dir}/authorized_keys\n"
                "PidFile none\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "PermitRootLogin prohibit-password\n"
                "UseDNS no\n"
                "PrintMotd no\n"
                "PrintLastLog no\n"
                "X11Forwarding no\n"
                "AllowTcpForwarding no\n"
                "LogLevel ERROR\n"
                "SetEnv SHLVL=1\n" + extra_config
            )
        test = subprocess.run(
            [sshd, "-t", "-f", self.config], capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT
        )
        if test.returncode != 0:
            why = test.stderr.strip() or f"exit status {test.returncode}"
            if "privilege separation directory" in why:
                why += " (the ssh service creates it at start; as root: mkdir -m 755 /run/sshd)"
            raise Unavailable(f"sshd refuses its configuration: {why}")
        self.log = open(os.path.join(self.dir, "sshd.log"), "w+")
        self.proc = subprocess.Popen(
            [sshd, "-f", self.config, "-D", "-e"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            preexec_fn=_die_with_parent,
        )
        try:
            self._wait_listening()
        except BaseException:
            self.close()
            raise
        # "OpenSSH_9.2, OpenSSL ..." (older sshd print it in the usage message for -V)
        out = subprocess.run([sshd, "-V"], capture_output=True, text=True, timeout=TIMEOUT).stderr
        m = re.search(r"OpenSSH_[^\s,]+", out)
        self.version = m.group(0) if m else "version unknown"

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"sshd exited with status {self.proc.returncode}: {self.log_tail()}")
            try:
                # its banner, then ours, so that it logs no error for the probe
                with socket.create_connection((HOST, self.port), timeout=1) as probe:
                    if probe.recv(256).startswith(b"SSH-"):
                        probe.sendall(b"SSH-2.0-rframe-bench-probe\r\n")
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"sshd did not listen on port {self.port} within 10 s: {self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-1000:].strip() or "(no output)"

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
            self.proc = None
            self.log.close()


class Unavailable(Exception):
    """A peer that cannot run on this machine."""


# --------------------------------------------------------------------------- one round of each peer


def rframe_round(port: int, token: str, fingerprint: str | None) -> None:
    tls = {"tls": True, "fingerprint": fingerprint} if fingerprint else {}
    with rframe.Client(HOST, port, token=token, timeout=TIMEOUT, **tls) as client:
        result = client.run("true")
    if result.returncode != 0:
        raise RuntimeError(f"rframe: run('true') returned {result.returncode}: {result.stderr!r}")


def ssh_argv(ssh: str, sshd: Sshd) -> list[str]:
    return [
        ssh,
        "-F",
        "/dev/null",
        "-p",
        str(sshd.port),
        "-i",
        sshd.user_key,
        "-l",
        sshd.user,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "IdentityAgent=none",
        "-o",
        "ControlMaster=no",
        "-o",
        "ControlPath=none",
        "-o",
        "LogLevel=ERROR",
        "-n",
        "-T",
        HOST,
        "true",
    ]


def ssh_round(argv: list[str]) -> None:
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT)
    if r.returncode != 0:
        raise RuntimeError(f"ssh exited with status {r.returncode}: {r.stderr.decode(errors='replace').strip()}")


def import_asyncssh():
    """asyncssh, or ``None`` where it is not installed (its cryptography's
    deprecation warnings silenced)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its cryptography's deprecation of DSA
            import asyncssh
    except ImportError:
        return None
    return asyncssh


#: The note for a run without asyncssh.
NO_ASYNCSSH = "asyncssh skipped: not installed (pip install asyncssh)"


def asyncssh_connect(asyncssh, sshd: Sshd, key):
    """An asyncssh connection to ``sshd`` (``async with``): its key, and no
    known_hosts, agent, config file or GSS."""
    return asyncssh.connect(
        HOST,
        sshd.port,
        username=sshd.user,
        client_keys=[key],
        known_hosts=None,
        agent_path=None,
        config=[],
        gss_host=None,
        preferred_auth="publickey",
    )


async def asyncssh_true(asyncssh, sshd: Sshd, key) -> None:
    """One asyncssh connection to ``sshd``, ``run("true")``, closed."""
    async with asyncssh_connect(asyncssh, sshd, key) as conn:
        await conn.run("true", check=True)


def asyncssh_round(loop: asyncio.AbstractEventLoop, asyncssh, sshd: Sshd, key) -> None:
    loop.run_until_complete(asyncio.wait_for(asyncssh_true(asyncssh, sshd, key), TIMEOUT))


# --------------------------------------------------------------------------- the driver


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, help="fresh connections per peer (default 50; --quick 5)")
    ap.add_argument("--quick", action="store_true", help="5 rounds and a short time budget (smoke test)")
    ap.add_argument("--no-ssh", action="store_true", help="skip the ssh and asyncssh peers")
    ap.add_argument("--_server", nargs=2, metavar=("TOKEN_FILE", "TLS_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._server:
        server_main(*args._server)
        return 0
    rounds = args.rounds or (5 if args.quick else 50)
    budget = 15.0 if args.quick else 120.0  # seconds of rounds per peer, at most
    # SIGTERM as SystemExit: the finally clause stops sshd and the server and
    # removes the temporary directory
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))

    notes: list[str] = []
    load_before = os.getloadavg()
    work = tempfile.mkdtemp(prefix="rframe-bench-setup-")
    server = sshd = loop = None
    times: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    try:
        token = rframe.new_token()
        server, port, fingerprint = start_rframe(work, token)
        peers = {
            "rframe": lambda: rframe_round(port, token, None),
            "rframe-tls": lambda: rframe_round(port, token, fingerprint),
        }
        labels["rframe"] = f"rframe {machine.rframe_version()}, plaintext on loopback, token login"
        labels["rframe-tls"] = f"rframe {machine.rframe_version()}, TLS 1.3, token login + fingerprint pin"
        if args.no_ssh:
            notes.append("ssh and asyncssh skipped: --no-ssh")
        else:
            try:
                sshd = Sshd(work)
            except Unavailable as e:
                notes.append(f"ssh and asyncssh skipped: {e}")
            except (OSError, subprocess.SubprocessError) as e:
                notes.append(f"ssh and asyncssh skipped: setting up sshd failed: {type(e).__name__}: {e}")
            if sshd is not None:
                ssh = shutil.which("ssh")
                if ssh is None:
                    notes.append("ssh skipped: no ssh client (Debian/Ubuntu: apt-get install openssh-client)")
                else:
                    argv = ssh_argv(ssh, sshd)
                    peers["ssh"] = lambda: ssh_round(argv)
                    client_version = (
                        subprocess.run([ssh, "-V"], capture_output=True, text=True, timeout=TIMEOUT)
                        .stderr.strip()
                        .split(",")[0]
                    )
                    labels["ssh"] = f"`ssh -p PORT 127.0.0.1 true` ({client_version})"
                asyncssh = import_asyncssh()
                if asyncssh is None:
                    notes.append(NO_ASYNCSSH)
                else:
                    loop = asyncio.new_event_loop()
                    key = asyncssh.read_private_key(sshd.user_key)
                    peers["asyncssh"] = lambda: asyncssh_round(loop, asyncssh, sshd, key)
                    labels["asyncssh"] = f'asyncssh {asyncssh.__version__} `connect` + `run("true")`'

        def attempt(name: str, fn) -> bool:
            """Runs one round; a peer other than rframe that fails is dropped with a note."""
            try:
                fn()
                return True
            except Exception as e:  # noqa: BLE001
                if name.startswith("rframe"):
                    raise
                detail = f"; sshd: {sshd.log_tail()}" if sshd is not None else ""
                notes.append(f"{name} dropped after {len(times.get(name, []))} rounds: {type(e).__name__}: {e}{detail}")
                del peers[name]
                return False

        for name in list(peers):  # one untimed connection each: page cache, first-use set-up
            attempt(name, peers[name])
        spent = dict.fromkeys(peers, 0.0)
        for i in range(rounds):
            live = [name for name in peers if spent[name] <= budget]
            if not live:
                break
            for name in live[i % len(live) :] + live[: i % len(live)]:
                if name not in peers:
                    continue
                t0 = time.perf_counter()
                if attempt(name, peers[name]):
                    dt = time.perf_counter() - t0
                    times.setdefault(name, []).append(dt)
                    spent[name] += dt
        for name, got in times.items():
            if name in peers and len(got) < rounds:
                notes.append(f"{name}: {len(got)} rounds of {rounds}, its {budget:.0f} s budget spent")
    finally:
        if loop is not None:
            loop.close()
        if sshd is not None:
            sshd.close()
        if server is not None:
            stop(server)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    print('# Connection set-up: connect, log in, run("true"), close' + (" (--quick)" if args.quick else ""))
    print()
    print("\n".join(machine.describe()))
    print(
        f"- {rounds} rounds, each a fresh connection per peer, peers taking turns; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after (1 minute)"
    )
    if sshd is not None:
        print(f"- sshd: {sshd.version}, this run's own on 127.0.0.1 (ed25519 host and user keys made for the run)")
    print()
    print('| connection set-up + `run("true")` | median ms | p90 ms | rounds | median / rframe TLS\'s |')
    print("|---|---:|---:|---:|---:|")
    tls_median = statistics.median(times["rframe-tls"])
    for name in ("rframe", "rframe-tls", "ssh", "asyncssh"):
        got = times.get(name)
        if not got or name not in peers:
            continue
        med = statistics.median(got)
        print(
            f"| {labels[name]} | {med * 1e3:.2f} | {nearest_rank(got, 0.9) * 1e3:.2f} | {len(got)} | "
            f"{med / tls_median:.2f}x |"
        )
    for note in notes:
        print(f"\nNote: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
