"""``python -m rframe.client -t`` (issue 18): an interactive shell on the
server, driven in a real terminal, tmux's (send-keys, capture-pane). The local
terminal's settings (``stty -a``) must be the same before and after, however
the session ends. Time bounds are generous hang guards only."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import HANG_BOUND
from server_helpers import ENV, CliServer, wait_until

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="the command server does not run on Windows"),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
]


class Tmux:
    """A tmux server of the test's own (its socket in tmp_path), one window running ``sh``."""

    def __init__(self, tmp_path):
        self.socket = str(tmp_path / "tmux.sock")
        env = {"PATH": ENV["PATH"], "HOME": str(tmp_path), "TERM": "xterm", "PS1": "local$ ", "LANG": "C"}
        self._tmux("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", "sh", env=env)

    def _tmux(self, *args, env=None):
        return subprocess.run(
            ["tmux", "-S", self.socket, *args], capture_output=True, text=True, timeout=HANG_BOUND, env=env, check=True
        ).stdout

    def type(self, line: str) -> None:
        """Types ``line`` and Enter."""
        self._tmux("send-keys", "-t", "t", "-l", line)
        self._tmux("send-keys", "-t", "t", "Enter")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", "t", "-S", "-100")

    def wait_for(self, text: str) -> str:
        """Waits (bounded) for ``text`` on a line of its own on the screen."""
        if not wait_until(lambda: text in [line.strip() for line in self.screen().splitlines()], HANG_BOUND * 2):
            pytest.fail(f"{text!r} never showed; the screen:\n{self.screen()}")
        return self.screen()

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=HANG_BOUND)


@pytest.fixture
def tmux(tmp_path):
    t = Tmux(tmp_path)
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def server():
    # The shell -t opens is the server's $SHELL; a prompt of its own to tell it apart.
    s = CliServer(env=dict(ENV, SHELL="/bin/sh", PS1="remote$ ", ENV=""))
    try:
        yield s
    finally:
        s.stop()


def _client(server) -> str:
    return shlex.join([sys.executable, "-m", "rframe.client", "--port", str(server.port), "-t"])


def _session(tmux, tmp_path, server, *, kill_server: bool) -> str:
    before, after = tmp_path / "before", tmp_path / "after"
    tmux.type(f"stty -a > {before}; echo saved")
    tmux.wait_for("saved")
    tmux.type(f"{_client(server)}; echo status=$?")
    tmux.wait_for("remote$")
    tmux.type("tty; echo $((6*7))")
    screen = tmux.wait_for("42")
    assert "/dev/pts/" in screen, screen
    if kill_server:
        server.stop()
    else:
        tmux.type("exit")
    screen = tmux.wait_for("status=0" if not kill_server else "status=1")
    tmux.type(f"stty -a > {after}; echo again")
    tmux.wait_for("again")
    assert before.read_text() == after.read_text(), "the local terminal's settings changed"
    return screen


def test_t_opens_a_shell_on_the_server_and_exit_comes_back(tmux, tmp_path, server):
    _session(tmux, tmp_path, server, kill_server=False)


def test_the_terminal_is_restored_when_the_server_dies_mid_session(tmux, tmp_path, server):
    screen = _session(tmux, tmp_path, server, kill_server=True)
    assert "rframe: connection to" in screen or "rframe:" in screen, screen


def test_t_with_c_runs_the_command_on_a_terminal(tmux, tmp_path, server):
    tmux.type(f"{_client(server)} -c 'tty; stty size'; echo status=$?")
    screen = tmux.wait_for("status=0")
    assert "/dev/pts/" in screen and "30 100" in screen, screen


def test_a_window_resize_reaches_the_command(tmux, tmp_path, server):
    tmux.type(
        f"{_client(server)} -c \"trap 'stty size; exit 3' WINCH; echo ready; while :; do sleep 0.1; done\"; echo status=$?"
    )
    tmux.wait_for("ready")
    tmux._tmux("resize-window", "-t", "t", "-x", "90", "-y", "25")
    screen = tmux.wait_for("status=3")
    assert "25 90" in screen, screen
