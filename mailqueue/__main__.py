"""``python -m mailqueue``: the ``mailqueue`` command."""

from __future__ import annotations

from .cli import main

main()
