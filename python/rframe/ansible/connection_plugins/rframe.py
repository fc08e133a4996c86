# rframe's connection plugin for Ansible: see rframe/ansible/__init__.py.
from __future__ import annotations

import os
from typing import Any

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

import rframe

DOCUMENTATION = """
    name: rframe
    short_description: run tasks through an rframe command server
    description:
        - Runs Ansible's commands on a host's rframe server (python -m rframe.server) over one
          connection per host, and moves Ansible's files through commands on that connection, so
          they may go wherever the server's user may write (the token that lets a client run
          commands authorizes both).
        - TLS and the token's handshake are rframe's; a host that is not loopback is reached over
          TLS, judged by rframe_fingerprint or by the token's channel binding.
    author: rframe
    options:
        host:
            description: The server's address.
            default: inventory_hostname
            vars:
                - name: inventory_hostname
                - name: ansible_host
        port:
            description: The server's port.
            type: int
            default: 8848
            vars:
                - name: ansible_port
        token:
            description: The server's token.
            vars:
                - name: rframe_token
            env:
                - name: RFRAME_TOKEN
        tls:
            description: Force TLS on or off (default, on to any host that is not loopback).
            type: bool
            vars:
                - name: rframe_tls
        fingerprint:
            description: The SHA-256 fingerprint of the server's certificate (a pin).
            vars:
                - name: rframe_fingerprint
        timeout:
            description: Seconds for connecting and logging in.
            type: int
            default: 30
            vars:
                - name: ansible_timeout
                - name: rframe_timeout
        command_timeout:
            description:
                - Seconds a task's command may run. The server's own limit (its --timeout, 30 s by default)
                  applies too, and the smaller one wins, so raise it on servers that run long tasks.
            type: int
            default: 3600
            vars:
                - name: rframe_command_timeout
    extends_documentation_fragment:
        - connection_pipelining
"""

display = Display()

#: Bytes of a file per command when putting or fetching: well within the
#: server's default limits on a request's body and a command's output (16 MiB).
STEP = 4 << 20

_WRITE_FIRST = 'cat > "$1"'
_WRITE_MORE = 'cat >> "$1"'
_SIZE = 'wc -c < "$1"'
_READ = 'tail -c +"$2" < "$1" | head -c "$3"'


class Connection(ConnectionBase):
    """One rframe connection per host, opened on first use."""

    transport = "rframe"
    has_pipelining = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rframe: rframe.Client | None = None

    def _connect(self) -> Connection:
        if self._rframe is None or self._rframe.closed:
            host, port = self.get_option("host"), int(self.get_option("port"))
            display.vvv(f"ESTABLISH RFRAME CONNECTION TO {host}:{port}", host=host)
            try:
                self._rframe = rframe.Client(
                    host,
                    port,
                    token=self.get_option("token") or None,
                    tls=self.get_option("tls"),
                    fingerprint=self.get_option("fingerprint") or None,
                    timeout=float(self.get_option("timeout")),
                )
            except (OSError, EOFError, ValueError, rframe.RemoteError) as e:
                raise AnsibleConnectionFailure(f"rframe: cannot reach {host}:{port}: {e}") from e
            self._connected = True
        return self

    def _run(self, argv: Any, data: bytes | None = None) -> rframe.CommandResult:
        self._connect()
        assert self._rframe is not None
        try:
            result = self._rframe.run(argv, input=data, timeout=float(self.get_option("command_timeout")))
        except rframe.CommandTimeout as e:
            # The server killed the command at its limit; the connection goes on.
            out = e.stdout.decode("utf-8", "replace") if isinstance(e.stdout, bytes) else e.stdout
            raise AnsibleError(f"rframe: {e} (its output so far: {out[-2000:]!r})") from e
        except rframe.RemoteError as e:
            raise AnsibleConnectionFailure(f"rframe: the server refused: {e}") from e
        except (OSError, EOFError) as e:  # the connection broke, or timed out
            self._rframe.close()
            raise AnsibleConnectionFailure(f"rframe: {type(e).__name__}: {e}") from e
        if result.stdout_truncated or result.stderr_truncated:
            raise AnsibleError("rframe: the command's output went over the server's --max-output")
        return result

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        display.vvv(f"EXEC {cmd}", host=self.get_option("host"))
        result = self._run(cmd, in_data)
        stdout, stderr = result.stdout, result.stderr
        assert isinstance(stdout, bytes) and isinstance(stderr, bytes)
        return result.returncode, stdout, stderr

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        display.vvv(f"PUT {in_path} TO {out_path}", host=self.get_option("host"))
        if not os.path.isfile(in_path):
            raise AnsibleFileNotFound(f"file or module does not exist: {in_path}")
        with open(in_path, "rb") as f:
            script = _WRITE_FIRST
            while True:
                chunk = f.read(STEP)
                result = self._run(["/bin/sh", "-c", script, "sh", out_path], chunk)
                if result.returncode:
                    raise AnsibleError(f"rframe: cannot write {out_path}: {_said(result)}")
                if len(chunk) < STEP:
                    return
                script = _WRITE_MORE

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        display.vvv(f"FETCH {in_path} TO {out_path}", host=self.get_option("host"))
        result = self._run(["/bin/sh", "-c", _SIZE, "sh", in_path])
        if result.returncode:
            raise AnsibleFileNotFound(f"rframe: cannot read {in_path}: {_said(result)}")
        size = int(result.stdout)
        with open(out_path, "wb") as f:
            done = 0
            while done < size:
                n = min(STEP, size - done)
                result = self._run(["/bin/sh", "-c", _READ, "sh", in_path, str(done + 1), str(n)])
                data = result.stdout
                assert isinstance(data, bytes)
                if result.returncode or len(data) != n:
                    raise AnsibleError(f"rframe: {in_path} changed while it was fetched: {_said(result)}")
                f.write(data)
                done += n

    def reset(self) -> None:
        self.close()

    def close(self) -> None:
        if self._rframe is not None:
            self._rframe.close()
            self._rframe = None
        self._connected = False


def _said(result: rframe.CommandResult) -> str:
    err = result.stderr
    text = err.decode("utf-8", "replace") if isinstance(err, bytes) else err
    return text.strip() or f"exit status {result.returncode}"
