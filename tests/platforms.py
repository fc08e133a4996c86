"""Which tests need which system: skip marks with the reason, for Windows and macOS.

The command server (``rframe.Server`` without a handler) runs on Linux and macOS;
on Windows it refuses to start (``NotImplementedError``, README "Platforms"). Unix
sockets are not on Windows; ``/proc`` and ``openat2`` are Linux's alone.
"""

from __future__ import annotations

import os
import socket
import sys

import pytest

#: Runs commands through the command server (POSIX process groups, /bin/sh).
commands = pytest.mark.skipif(
    os.name != "posix", reason="the command server runs on Linux and macOS only (Windows refuses it)"
)
#: Needs POSIX itself: signals sent to processes, fork, resource limits, terminals.
posix = pytest.mark.skipif(os.name != "posix", reason="needs POSIX (signals, fork, resource limits)")
#: A server or client on a Unix socket (``unix_path``).
unix_sockets = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets on this system")
#: Reads /proc, or relies on what only Linux has (openat2, /proc/self/fd).
linux = pytest.mark.skipif(sys.platform != "linux", reason="needs Linux (/proc, openat2)")

#: Modules every test of which runs the command server (or the CLIs serving it):
#: skipped as a whole where it does not run. conftest.py applies this, so that a
#: module needs no mark of its own (tests/test_async.py among them).
COMMAND_SERVER_MODULES = frozenset(
    {
        "test_async",
        "test_cli",
        "test_client",
        "test_client_session",
        "test_course_scripts",
        "test_examples",
        "test_faults",
        "test_files",
        "test_hardening",
        "test_hygiene",
        "test_load",
        "test_preauth",
        "test_server",
        "test_tls",
        "test_twisted",
    }
)


def skip_command_server_modules(items: list[pytest.Item]) -> None:
    """Marks every test of :data:`COMMAND_SERVER_MODULES` with :data:`commands`."""
    for item in items:
        module = getattr(item, "module", None)
        if module is not None and module.__name__ in COMMAND_SERVER_MODULES:
            item.add_marker(commands)
