"""Typed shapes mailqueue takes and gives: the message dict, the status record, group counts.

They describe plain dicts (what callers write and ``get_status`` returns),
so they cost nothing at run time; mypy checks the code that builds and reads
them against DESIGN.md's contract.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "FINAL_STATES",
    "ErrorRecord",
    "GroupRecord",
    "MessageDict",
    "RecipientStatus",
    "State",
    "StatusRecord",
]

# A send's state. A recipient's own status (``RecipientStatus``) follows webhook events.
State = Literal[
    "queued", "sending", "retrying", "sent", "partially_sent", "failed", "cancelled", "expired"
]
# States a send never leaves.
FINAL_STATES: frozenset[State] = frozenset(
    {"sent", "partially_sent", "failed", "cancelled", "expired"}
)


class Attachment(TypedDict, total=False):
    filename: str
    content: str  # base64
    mimetype: str
    inline: bool
    content_id: str


class MessageDict(TypedDict, total=False):
    """A message as producers hand it over: Anymail's attribute names (see README)."""

    from_email: str
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: list[str]
    subject: str
    text: str
    html: str
    attachments: list[Attachment]
    headers: dict[str, str]
    tags: list[str]
    metadata: dict[str, Any]
    template_id: str
    merge_global_data: dict[str, Any]
    merge_data: dict[str, dict[str, Any]]
    merge_metadata: dict[str, dict[str, Any]]
    merge_headers: dict[str, dict[str, str]]
    esp_extra: dict[str, Any]
    send_at: Any  # datetime, ISO 8601 string or Unix timestamp
    account: str
    stream: str
    campaign: str
    expires_at: Any  # as send_at


class ErrorRecord(TypedDict):
    """Why a send failed or waits for a retry."""

    kind: str  # "transient", "permanent", "validation", ...
    status_code: int | None
    message: str


class RecipientStatus(TypedDict):
    status: str  # "queued", "failed", then webhook statuses: "delivered", "opened", ...
    message_id: str | None


class _StatusRecordFields(TypedDict):
    id: str
    state: State
    attempts: int
    created_at: str | None
    updated_at: str | None
    error: ErrorRecord | None
    recipients: dict[str, RecipientStatus]
    parts: int
    possible_duplicates: int
    reconciled: int
    reconcile_fallbacks: int


class StatusRecord(_StatusRecordFields, total=False):
    """What ``get_status`` returns (DESIGN.md, "The status record"); extra keys are optional."""

    next_attempt_at: str
    # While retrying: what the send waits for ("retry", or "look-up" in Email
    # Logs after a lost answer) and how many more calls its retry budget allows.
    waiting_for: str
    tries_left: int
    group: str
    campaign: str
    send_at: str  # ISO 8601 UTC: held by the queue until then
    expires_at: str
    events: list[dict[str, Any]]
    confirmed_duplicates: int


class GroupRecord(TypedDict, total=False):
    """Per-state counts of the sends of one ``enqueue_many`` call (absent: none)."""

    queued: int
    sending: int
    retrying: int
    sent: int
    partially_sent: int
    failed: int
    cancelled: int
    expired: int
