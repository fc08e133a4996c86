"""``python -m rframe.ansible``: the directory to put in ``ANSIBLE_CONNECTION_PLUGINS``."""

from __future__ import annotations

from . import PLUGIN_DIR

print(PLUGIN_DIR)
