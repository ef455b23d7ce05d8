"""An address's recent sends, for the dashboard's search: a small index, not a scan.

A lone send (no campaign, one call, a few recipients) notes its send id under
each recipient's address when it is queued: a sorted set by the address's
SHA-256, scored by the time, trimmed to the newest ``KEPT_PER_ADDRESS`` and
living as long as the status records. A campaign's recipients are not
indexed one by one: that would cost Redis bytes per recipient, which a
campaign of a million must not spend; the search shows such an address's
suppression instead.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import redis

from mailqueue.core.payload import ApiCall

if TYPE_CHECKING:
    from mailqueue.store.status import StatusStore

__all__ = ["KEPT_PER_ADDRESS", "MAX_INDEXED_RECIPIENTS", "note_send", "recent_sends"]

# Sends remembered per address, newest first.
KEPT_PER_ADDRESS = 20
# A send to more recipients than this is a mailing, not a lone send: not indexed.
MAX_INDEXED_RECIPIENTS = 50


def note_send(
    pipe: redis.client.Pipeline,
    send_id: str,
    calls: Sequence[ApiCall],
    *,
    campaign: str | None,
    status: StatusStore,
) -> None:
    """Queue noting ``send_id`` under each of its recipients, when it is a lone send.

    The index lives in ``status``'s key space, as long as its records.
    """
    if campaign or len(calls) != 1:
        return
    addresses = {address.lower() for request in calls[0].recipients for address in request}
    if not addresses or len(addresses) > MAX_INDEXED_RECIPIENTS:
        return
    now = time.time()
    for address in sorted(addresses):
        key = status.keys.address_sends(address)
        pipe.zadd(key, {send_id: now})
        pipe.zremrangebyrank(key, 0, -KEPT_PER_ADDRESS - 1)
        pipe.expire(key, status.ttl)


def recent_sends(address: str, *, status: StatusStore) -> list[str]:
    """The send ids noted for ``address`` within the status TTL, newest first."""
    key = status.keys.address_sends(address.strip().lower())
    since = time.time() - status.ttl
    found = status.redis.zrevrangebyscore(key, "+inf", since)
    return [item.decode() if isinstance(item, bytes) else str(item) for item in found]
