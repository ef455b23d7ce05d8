"""What each dashboard page shows, read through the stores' own functions (no key spelled here).

Every function returns plain JSON-ready data. Nothing here returns a message
body or a token: status records carry neither, and envelopes are never read.
"""

from __future__ import annotations

import time
from typing import Any

from mailqueue.client import Client
from mailqueue.produce.steering import translated
from mailqueue.store.fleet_limits import fleet_limits
from mailqueue.store.keys import safe_id
from mailqueue.store.message_index import recent_sends
from mailqueue.store.waker import fleet_activity

__all__ = ["FUNNEL", "campaign", "campaigns", "dead_letters", "fleet", "search", "suppressions"]

# The funnel's steps in order, then the ways out of it.
FUNNEL = ("waiting", "sent", "delivered", "opened", "clicked")
EXITS = (
    "bounced", "complained", "suppressed", "cancelled", "cancelling", "expired", "failed",
)  # fmt: skip
# The state changes counted per minute, in the order the fleet view draws them.
STATE_CHANGES = ("queued", "retrying", "sent", "partially_sent", "failed", "cancelled", "expired")


def fleet(rt: Client, now: float | None = None) -> dict[str, Any]:
    """The fleet now: drains, backlog per lane and stream, the workers' limiters, dead letters.

    The limiters are the ones the workers noted (``fleet_limits``), never this
    process's own: the dashboard may run with another token, or none.
    """
    now = time.time() if now is None else now
    activity = fleet_activity(waker=rt.waker, outbox=rt.outbox)
    with translated(rt.settings.status_redis_url, "read the fleet's figures"):
        lanes = [
            {
                "lane": stats.lane,
                "stream": stats.stream,
                "waiting": stats.waiting,
                "in_flight": stats.in_flight,
                "oldest_age": round(stats.oldest_seconds, 1)
                if stats.waiting + stats.in_flight
                else None,
                "campaigns": stats.campaigns,
                "paused": stats.paused,
            }
            for stats in rt.lane_stats()
        ]
        dead = len(rt.outbox.dead_letters(limit=1000))
        minutes = rt.store.states_by_minute(60, now)
        backlog = rt.outbox.backlog_by_minute(60, now)
        limits = fleet_limits(rt.redis, rt.keys, now)
    return {
        "live_drains": activity.live_drains,
        "idle_for": activity.idle_for(now),
        "waiting": activity.waiting,
        "lanes": lanes,
        "limits": limits,
        "backlog_minutes": [[minute, waiting] for minute, waiting in backlog],
        "dead_letters": dead,
        "last_hour": {
            "totals": {
                state: sum(counts.get(state, 0) for _, counts in minutes)
                for state in STATE_CHANGES
            },
            "minutes": [[start, counts] for start, counts in minutes],
        },
        "at": now,
    }


def campaigns(rt: Client) -> list[dict[str, Any]]:
    """The records of the most recently started campaigns, newest first."""
    with translated(rt.settings.status_redis_url, "list campaigns"):
        return [dict(record) for record in rt.campaigns.recent()]


def campaign(rt: Client, name: str, now: float | None = None) -> dict[str, Any] | None:
    """The campaign's record, with its recipients handed to Mailtrap in each of the last 60 min."""
    with translated(rt.settings.status_redis_url, "read a campaign"):
        record = rt.campaigns.get(name)
        if record is None:
            return None
        handed = rt.campaigns.handed_by_minute(record["name"], 60, now)
    return {**record, "handed_minutes": [[minute, count] for minute, count in handed]}


def search(rt: Client, query: str) -> dict[str, Any]:
    """A send by id (its record and history of events), or an address's suppression and sends.

    An address's sends are its recent lone sends (``message_index.note_send``); a
    campaign's recipients are not indexed one by one.
    """
    query = query.strip()
    found: dict[str, Any] = {"query": query, "send": None, "suppression": None, "sends": []}
    if not query:
        return found
    with translated(rt.settings.status_redis_url, "search sends and suppressions"):
        if "@" in query:
            found["suppression"] = rt.suppressions.get(query)
            address = query.lower()
            for send_id in recent_sends(query, status=rt.store):
                record = rt.store.get(send_id)
                if record is None:
                    continue
                mine = [r for a, r in record["recipients"].items() if a.lower() == address]
                found["sends"].append(
                    {
                        "id": send_id,
                        "state": record["state"],
                        "created_at": record["created_at"],
                        "status": mine[0]["status"] if mine else None,
                    }
                )
        elif safe_id(query) is not None:
            found["send"] = rt.store.get(query)
    return found


def dead_letters(rt: Client, limit: int = 100) -> list[dict[str, Any]]:
    return [
        {
            "send_id": letter.send_id,
            "failed_at": letter.failed_at,
            "state": letter.state,
            "error": letter.error,
        }
        for letter in rt.list_dead_letters(limit)
    ]


def suppressions(rt: Client, limit: int = 200) -> list[dict[str, Any]]:
    with translated(rt.settings.status_redis_url, "list suppressions"):
        entries = rt.suppressions.entries()
    return [dict(entry) for entry in entries[:limit]]
