"""What ``python -m rframe.server`` and ``python -m rframe.client`` share: the
argument types of their common flags, and how they find the token."""

from __future__ import annotations

import argparse
import os

from ._protocol import check_seconds

__all__ = ["port", "seconds", "read_token"]


def port(text: str) -> int:
    """``--port``: 0..65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535, got {value}")
    return value


def seconds(text: str) -> float:
    """``--timeout`` and the like: see :func:`rframe._protocol.check_seconds`."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    try:
        return check_seconds(value, "the value")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def read_token(token_file: str | None) -> bytes | None:
    """The token: ``token_file``'s contents (trailing whitespace stripped),
    else the ``RFRAME_TOKEN`` environment variable's bytes, else ``None``.

    Raises ``OSError`` if the file cannot be read and ``ValueError`` if it is
    empty (a token that silently became "no token" would turn authentication off).

    ``RFRAME_TOKEN`` is removed from the environment either way, so that no
    process started from here afterwards inherits the secret.
    """
    env = os.environ.pop("RFRAME_TOKEN", None)
    if token_file:
        with open(token_file, "rb") as f:
            token = f.read().rstrip()
        if not token:
            raise ValueError(f"the token file {token_file} is empty")
        return token
    # The bytes as the environment holds them, whatever the locale's encoding.
    return os.fsencode(env) if env else None
