"""``python -m mailqueue``: the ``mailqueue`` command."""

from __future__ import annotations

from mailqueue.cli import main

main()
