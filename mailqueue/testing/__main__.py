"""``python -m mailqueue.testing``: run a LocalMailtrap until interrupted."""

from __future__ import annotations

from .mailtrap import main

raise SystemExit(main())
