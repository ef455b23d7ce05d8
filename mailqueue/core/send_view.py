"""How a retrying send's wait reads, in ``mailqueue status`` and on the dashboard."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["waiting_for"]


def waiting_for(record: Mapping[str, Any]) -> str:
    """What a retrying send waits for, and how many tries its retry budget has left."""
    if record.get("waiting_for") == "look-up":
        what = "a look-up in Email Logs (Mailtrap's answer was lost)"
    else:
        what = "its next try"
    left = record.get("tries_left")
    if left is None:
        return what
    if left == 0:
        return f"{what}; no try left: unless found there, it ends failed"
    return f"{what}; {left} {'try' if left == 1 else 'tries'} left"
