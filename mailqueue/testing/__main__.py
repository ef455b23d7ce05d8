"""``python -m mailqueue.testing``: the same as ``mailqueue local-mailtrap``."""

from __future__ import annotations

import sys

from mailqueue.cli import main

main(["local-mailtrap", *sys.argv[1:]])
