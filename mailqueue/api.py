"""The module-level API: each function is the default client's method of that name.

``mailqueue`` re-exports them all. The default client is built from the
environment (or the Django project's settings) on first use; ``configure``
replaces it (``client.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from mailqueue.client import configure, default

if TYPE_CHECKING:
    from mailqueue.records import StatusRecord
    from mailqueue.store.campaigns import CampaignRecord
    from mailqueue.store.groups import SendIds
    from mailqueue.store.suppressions import Suppression

__all__ = [
    "cancel",
    "cancel_campaign",
    "configure",
    "enqueue",
    "enqueue_many",
    "get_campaign",
    "get_status",
    "get_suppression",
    "pause_campaign",
    "reschedule",
    "resume_campaign",
    "suppress",
    "unsuppress",
]


def enqueue(
    message: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
    send_id: str | None = None,
    **celery_options: Any,
) -> str:
    """Validate and queue one message; returns its send id.

    With an ``idempotency_key`` seen before (within the status TTL) nothing is
    queued and the first send's id is returned. ``countdown`` or ``eta`` delay
    the first attempt; other Celery options go to the wake-up task. ``send_id``
    chooses the id (letters, digits and ``._@:+=-``) instead of a new one.
    """
    return default().enqueue(
        message, idempotency_key=idempotency_key, send_id=send_id, **celery_options
    )


def enqueue_many(messages: Iterable[Mapping[str, Any]], *, campaign: str | None = None) -> SendIds:
    """Validate every message, then queue them all with pipelined writes; ids in order.

    A bad message raises ValidationError naming its index, and nothing is queued.
    The sends share a group id (``group`` in their records) whose per-state
    counts follow the campaign's progress. ``campaign`` names the campaign of
    every message (``get_campaign``, ``pause_campaign``, ...).
    """
    return default().enqueue_many(messages, campaign=campaign)


def get_status(send_id: str) -> StatusRecord | None:
    """The status record of a send, or None for an unknown id."""
    return default().get_status(send_id)


def get_campaign(name: str) -> CampaignRecord | None:
    """The campaign's record: name, state, recipients, counts, eta_seconds; None if unknown."""
    return default().get_campaign(name)


def pause_campaign(name: str) -> CampaignRecord:
    """Pause a campaign fleet-wide (within 2 s no new call of it starts); returns its record."""
    return default().pause_campaign(name)


def resume_campaign(name: str) -> CampaignRecord:
    """Resume a paused campaign; ValidationError for a cancelled one."""
    return default().resume_campaign(name)


def cancel_campaign(name: str) -> CampaignRecord:
    """Cancel a campaign: every recipient not yet handed to Mailtrap ends ``cancelled``."""
    return default().cancel_campaign(name)


def suppress(address: str, *, reason: str = "manual", stream: str | None = None) -> Suppression:
    """Never mail ``address`` again (on ``stream`` only, when given)."""
    return default().suppress(address, reason=reason, stream=stream)


def unsuppress(address: str) -> bool:
    """Let mail reach ``address`` again; True when it was suppressed."""
    return default().unsuppress(address)


def get_suppression(address: str) -> Suppression | None:
    """The suppression of ``address`` (address, reason, stream, created_at), or None."""
    return default().get_suppression(address)


def cancel(send_id: str) -> StatusRecord:
    """Cancel a send not yet handed to Mailtrap; returns its status record."""
    return default().cancel(send_id)


def reschedule(send_id: str, when: Any) -> StatusRecord:
    """Move a send not yet handed to Mailtrap to ``when`` (datetime, ISO 8601 or Unix time)."""
    return default().reschedule(send_id, when)
