"""rframe as an Ansible connection: ``ansible_connection=rframe``.

The plugin is ``connection_plugins/rframe.py`` beside this file; Ansible finds it
through ``ANSIBLE_CONNECTION_PLUGINS`` (or ``connection_plugins`` in
``ansible.cfg``), which ``python -m rframe.ansible`` prints::

    export ANSIBLE_CONNECTION_PLUGINS=$(python -m rframe.ansible)
    ansible all -i inventory.ini -c rframe -m ping

It runs Ansible's commands with :meth:`rframe.Client.run` and moves Ansible's
files through commands too (``cat`` into the destination, ``tail | head`` out
of the source), so they may go wherever the server's user may write, not only
beneath its ``--root``: whoever may run commands on a server may write its
files anyway, and the same token authorizes both.
"""

from __future__ import annotations

import os

__all__ = ["PLUGIN_DIR"]

#: The directory to put in ``ANSIBLE_CONNECTION_PLUGINS``.
PLUGIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "connection_plugins")
