"""The command-line client's trust on first use, like ssh's ``known_hosts``.

The first TLS connection to a server records its certificate's fingerprint;
later connections pin it, and a changed certificate is a hard error that says
which file and line to remove. One line per server::

    # comments and blank lines are kept as they are
    example.org:8848 sha256:3f1c...e0
    [fd00::1]:8848 sha256:a2b4...19

>>> import tempfile, os
>>> known = KnownServers(os.path.join(tempfile.mkdtemp(), "known_servers"))
>>> known.lookup("h:1") is None
True
>>> known.add("h:1", "ab" * 32)
>>> known.lookup("h:1") == ("ab" * 32, 1)
True
"""

from __future__ import annotations

import os

from ._tls import normalize_fingerprint

__all__ = ["KnownServers", "default_path"]


def default_path() -> str:
    """``$XDG_CONFIG_HOME/rframe/known_servers``, else ``~/.config/rframe/known_servers``."""
    config = os.environ.get("XDG_CONFIG_HOME")
    if not config or not os.path.isabs(config):
        config = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "rframe", "known_servers")


class KnownServers:
    """The known-servers file at ``path`` (which need not exist yet)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def lookup(self, server: str) -> tuple[str, int] | None:
        """``(fingerprint, line number)`` recorded for ``server`` (``host:port``),
        or ``None``. A line that cannot be read is a ``ValueError`` naming it:
        a pin that silently stopped counting would check nothing."""
        try:
            with open(self.path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return None
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = text.split()
            if len(parts) != 2:
                raise ValueError(f"{self.path} line {number}: expected 'HOST:PORT sha256:FINGERPRINT', got {line!r}")
            if parts[0].lower() == server.lower():
                try:
                    return normalize_fingerprint(parts[1]), number
                except ValueError as e:
                    raise ValueError(f"{self.path} line {number}: {e}") from None
        return None

    def add(self, server: str, fingerprint: str) -> None:
        """Records ``server``'s fingerprint (the file and its directory are
        made, readable by their owner alone, if they do not exist)."""
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write(f"{server} sha256:{normalize_fingerprint(fingerprint)}\n")
