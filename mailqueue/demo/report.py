"""The demo's tables: each message, its state, and every recipient's status."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Sent", "show"]


@dataclass
class Sent:
    """One message the demo queued: what it shows, and its send id."""

    label: str
    send_id: str


def show(
    echo: Callable[[str], None],
    title: str,
    sent: Sequence[Sent],
    records: Sequence[dict[str, Any]],
) -> None:
    """A table of every message's recipients under ``title``."""
    rows = [("MESSAGE", "SEND ID", "STATE", "RECIPIENT", "STATUS", "MESSAGE ID")]
    for item, record in zip(sent, records, strict=True):
        for index, (address, info) in enumerate(record["recipients"].items()):
            rows.append(
                (
                    item.label if index == 0 else "",
                    item.send_id[:8] if index == 0 else "",
                    record["state"] if index == 0 else "",
                    address,
                    str(info["status"]),
                    str(info.get("message_id") or "-"),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    echo("")
    echo(f"== {title}")
    for row in rows:
        echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
