"""How sends and campaigns read in `mailqueue status`, `mailqueue campaign` and on the dashboard.

Pure. A campaign reads as one line with a progress bar; a retrying send says what it
waits for and how many tries its retry budget has left.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["BAR_WIDTH", "campaign_line", "duration", "waiting_for"]

BAR_WIDTH = 30
# Points a recipient reaches only once it was handed to Mailtrap, or never will be:
# everything but ``waiting`` counts as done for the bar.
_ORDER = ("waiting", "sent", "delivered", "opened", "clicked", "failed", "suppressed")


def duration(seconds: float) -> str:
    """``1h 02m``, ``3m 05s``, ``12s``."""
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def campaign_line(record: Mapping[str, Any], width: int = BAR_WIDTH) -> str:
    """``spring  running  [#####.....]  48%  96000/200000  150.0/s  ETA 11m 33s  sent=...``."""
    total = int(record.get("recipients") or 0)
    counts: Mapping[str, int] = record.get("counts") or {}
    done = total - int(counts.get("waiting", 0))
    share = done / total if total else 1.0
    filled = int(share * width)
    bar = "#" * filled + "." * (width - filled)
    rate = record.get("rate_per_second")
    eta = record.get("eta_seconds")
    parts = [
        str(record.get("name", "")),
        str(record.get("state", "")),
        f"[{bar}]",
        f"{share:4.0%}",
        f"{done}/{total}",
        f"{rate:.1f}/s" if rate else "-/s",
        f"ETA {duration(eta)}" if eta is not None else "ETA -",
        _counts(counts),
    ]
    line = "  ".join(parts)
    if record.get("reason") and record.get("state") == "paused":
        line += f"  (paused: {record['reason']})"
    return line


def _counts(counts: Mapping[str, int]) -> str:
    known = [name for name in _ORDER if name in counts]
    rest = sorted(name for name in counts if name not in _ORDER)
    return "  ".join(f"{name}={counts[name]}" for name in (*known, *rest))


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
