"""Real Ansible (ansible-core, a test extra) through rframe's connection plugin.

The hosts are rframe servers on loopback addresses of their own (127.0.0.2,
...), each with a token; one host of the inventory has nothing listening.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

import platforms
import rframe
from rframe.ansible import PLUGIN_DIR

pytestmark = platforms.commands

ansible = shutil.which("ansible", path=os.path.dirname(sys.executable)) or shutil.which("ansible")
ansible_playbook = shutil.which("ansible-playbook", path=os.path.dirname(sys.executable)) or shutil.which(
    "ansible-playbook"
)
needs_ansible = pytest.mark.skipif(ansible is None, reason="ansible-core is not installed (pip install ansible-core)")

TOKEN = "the fleet's token, long enough for any host"
HANG_BOUND = 180


@pytest.fixture
def fleet(tmp_path) -> Iterator[dict[str, str]]:
    """Three servers and a dead host, in an inventory file: ``{"inventory": path, ...}``."""
    servers = [rframe.Server(f"127.0.0.{i}", 0, token=TOKEN) for i in (2, 3, 4)]
    try:
        for s in servers:
            s.start()
        with socket.socket() as probe:
            probe.bind(("127.0.0.9", 0))
            dead_port = probe.getsockname()[1]
        lines = ["[fleet]"]
        lines += [f"h{i} ansible_host={h} ansible_port={p}" for i, (h, p) in enumerate(s.address for s in servers)]
        lines += [
            "",
            "[down]",
            f"gone ansible_host=127.0.0.9 ansible_port={dead_port}",
            "",
            "[all:vars]",
            "ansible_connection=rframe",
            f"rframe_token={TOKEN}",
            f"ansible_python_interpreter={sys.executable}",
            "rframe_timeout=10",
        ]
        inventory = tmp_path / "inventory.ini"
        inventory.write_text("\n".join(lines) + "\n")
        yield {"inventory": str(inventory), "tmp": str(tmp_path)}
    finally:
        for s in servers:
            s.stop()


def run_ansible(fleet: dict[str, str], *args: str, playbook: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_") and k != "RFRAME_TOKEN"}
    env.update(
        ANSIBLE_CONNECTION_PLUGINS=PLUGIN_DIR,
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_LOCAL_TEMP=os.path.join(fleet["tmp"], "local-tmp"),
        ANSIBLE_REMOTE_TMP=os.path.join(fleet["tmp"], "remote-tmp"),
        ANSIBLE_HOME=os.path.join(fleet["tmp"], "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_DEPRECATION_WARNINGS="False",
        PYTHONWARNINGS="ignore",
        LC_ALL="C.UTF-8",
    )
    program = ansible_playbook if playbook else ansible
    assert program is not None
    return subprocess.run(
        [program, "-i", fleet["inventory"], *args], capture_output=True, text=True, timeout=HANG_BOUND, env=env
    )


def test_the_plugin_directory_is_printed():
    out = subprocess.run([sys.executable, "-m", "rframe.ansible"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == PLUGIN_DIR and os.path.isfile(os.path.join(PLUGIN_DIR, "rframe.py"))


@needs_ansible
def test_ping_and_shell_on_every_host_and_a_host_that_is_down(fleet):
    r = run_ansible(fleet, "all", "-m", "ping")
    assert r.stdout.count("SUCCESS") == 3, r.stdout + r.stderr
    assert "gone | UNREACHABLE!" in r.stdout and "cannot reach 127.0.0.9" in r.stdout
    assert r.returncode == 4  # Ansible's status when a host is unreachable
    r = run_ansible(fleet, "fleet", "-m", "shell", "-a", "echo hi from $((6*7))")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("CHANGED | rc=0 >>\nhi from 42") == 3


@needs_ansible
def test_copy_and_fetch_move_files_anywhere_the_user_may_write(fleet, tmp_path):
    data = os.urandom(9 << 20)  # more than one step of the plugin's put and fetch
    src = tmp_path / "payload.bin"
    src.write_bytes(data)
    dest = tmp_path / "remote" / "{{ inventory_hostname }}.bin"
    (tmp_path / "remote").mkdir()
    r = run_ansible(fleet, "fleet", "-m", "copy", "-a", f"src={src} dest={dest}")
    assert r.returncode == 0, r.stdout + r.stderr
    for host in ("h0", "h1", "h2"):
        assert (tmp_path / "remote" / f"{host}.bin").read_bytes() == data
    fetched = tmp_path / "fetched"
    r = run_ansible(fleet, "fleet", "-m", "fetch", "-a", f"src={dest} dest={fetched}/ flat=no")
    assert r.returncode == 0, r.stdout + r.stderr
    digest = hashlib.sha256(data).hexdigest()
    for host in ("h0", "h1", "h2"):
        got = fetched / host / str(tmp_path / "remote" / f"{host}.bin").lstrip("/")
        assert hashlib.sha256(got.read_bytes()).hexdigest() == digest


@needs_ansible
def test_a_playbook_with_a_loop_of_twenty_tasks(fleet, tmp_path):
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        "- hosts: fleet\n"
        "  gather_facts: false\n"
        "  tasks:\n"
        "    - name: count\n"
        "      ansible.builtin.command: echo {{ item }}\n"
        "      loop: '{{ range(20) | list }}'\n"
        "      register: out\n"
        "    - name: all twenty\n"
        "      ansible.builtin.assert:\n"
        "        that: out.results | map(attribute='stdout') | list == range(20) | map('string') | list\n"
    )
    r = run_ansible(fleet, str(playbook), playbook=True)
    assert r.returncode == 0, r.stdout + r.stderr
    recap = [line for line in r.stdout.splitlines() if line.startswith(("h0 ", "h1 ", "h2 "))]
    assert len(recap) == 3 and all("ok=2" in line and "failed=0" in line for line in recap), r.stdout


@needs_ansible
def test_pipelining_runs_modules_through_stdin(fleet):
    r = run_ansible(
        fleet, "fleet", "-m", "ansible.builtin.setup", "-a", "gather_subset=min", "-e", "ansible_pipelining=true"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    facts = json.loads(r.stdout.split("SUCCESS => ", 1)[1].split("\nh", 1)[0])
    assert facts["ansible_facts"]["ansible_python"]["executable"] == sys.executable


@needs_ansible
def test_a_task_over_its_time_fails_and_the_host_stays_reachable(fleet):
    r = run_ansible(fleet, "h0", "-m", "shell", "-a", "sleep 5", "-e", "rframe_command_timeout=1")
    assert r.returncode == 2, r.stdout + r.stderr  # a failed task, not an unreachable host (4)
    out = r.stdout + r.stderr
    assert "Task failed: rframe: Command" in out and "timed out after 1.0 seconds" in out
    assert "UNREACHABLE" not in out
