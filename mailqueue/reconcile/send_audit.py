"""After an incident: what Mailtrap's Email Logs say a send really did.

``reconcile_send`` searches the Email Logs for a send's recipients since the
send was created, keeps the messages carrying its tag, and records what it
learns: a recipient with no message id (its answer was lost, then the send
failed) gets the id Mailtrap gave it, and ``confirmed_duplicates`` counts
the messages Mailtrap accepted more than once. ``mailqueue reconcile`` is a
thin command over it. Untagged messages (metadata too large for the tag)
cannot be told apart here and are not counted.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from mailqueue.core.logmatch import address_key
from mailqueue.core.routing import Stream, resolve_route
from mailqueue.mailtrap.email_logs import EmailLogsClient, window

if TYPE_CHECKING:
    from mailqueue.reconcile.lookup import LimitersFor
    from mailqueue.settings import Settings
    from mailqueue.store.status import StatusStore

__all__ = ["SendReconciliation", "reconcile_doubtful", "reconcile_send"]


@dataclass(frozen=True)
class SendReconciliation:
    """What the Email Logs list for one send."""

    send_id: str
    messages: int  # messages carrying the send's tag
    duplicates: int  # of those, beyond one per recipient of each request
    recovered: int  # recipients that had no message id and now have Mailtrap's


def reconcile_send(
    send_id: str,
    *,
    settings: Settings,
    status: StatusStore,
    limiters: LimitersFor,
    stream: Stream = "transactional",
    account: str | None = None,
) -> SendReconciliation | None:
    """Look a send up in Email Logs and record what they show; None for an unknown send.

    ``stream`` and ``account`` choose the token that reads the logs (the one
    that sent the mail); ``limiters`` gives a token's fleet-wide look-up
    limiters. Raises ``EmailLogsUnavailable`` when the logs cannot answer.
    """
    record = status.get(send_id)
    if record is None:
        return None
    recipients = sorted(record["recipients"])
    if not recipients:
        return SendReconciliation(send_id, 0, 0, 0)
    route = resolve_route(settings, stream=stream, account=account)
    created = _timestamp(record.get("created_at")) or time.time() - settings.status_ttl
    since, until = window(created, time.time())
    with EmailLogsClient(settings, route.token, limiters(route)) as logs:
        logged = logs.search(recipients, since, until)
    ours = [item for item in logged if item.tag is not None and item.tag.send_id == send_id]
    copies = Counter(
        (item.tag.part, item.tag.request, address_key(item.to))
        for item in ours
        if item.tag is not None
    )
    duplicates = sum(count - 1 for count in copies.values())
    by_address = {address_key(r): r for r in recipients}
    # The message of each recipient's earliest attempt is the one to keep.
    found: dict[str, str] = {}
    for item in sorted(ours, key=lambda i: i.tag.attempt if i.tag is not None else 0):
        recipient = by_address.get(address_key(item.to))
        if recipient is not None:
            found.setdefault(recipient, item.message_id)
    known = record["recipients"]
    missing = {r: found[r] for r in recipients if r in found and not known[r].get("message_id")}
    status.add_found(send_id, missing, duplicates)
    return SendReconciliation(send_id, len(ours), duplicates, len(missing))


def reconcile_doubtful(
    *,
    settings: Settings,
    status: StatusStore,
    limiters: LimitersFor,
    stream: Stream = "transactional",
    account: str | None = None,
) -> list[SendReconciliation]:
    """``reconcile_send`` for every send listed as doubtful within the status TTL."""
    results = []
    for send_id in status.doubtful_sends():
        result = reconcile_send(
            send_id,
            settings=settings,
            status=status,
            limiters=limiters,
            stream=stream,
            account=account,
        )
        if result is not None:
            results.append(result)
    return results


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
