"""Which requests of a doubtful call Mailtrap's Email Logs show as accepted. Pure.

A tagged request is found when any logged message carries its tag (from
any attempt: an earlier doubtful attempt that went out counts too). An
untagged request (its metadata left no room for the tag) is found when each
of its recipients has exactly one untagged message with its subject in the
window, and no other untagged request of the look-up could claim the same
messages; it is absent when none of its recipients has one; anything else
cannot be decided, and the caller falls back to sending again.
"""

from __future__ import annotations

import contextlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from mailqueue.core.addresses import idna_encode
from mailqueue.core.calltag import Tag, parse_tag

__all__ = ["Logged", "Pending", "Verdict", "address_key", "match_requests", "parse_logged"]

Outcome = Literal["found", "absent", "unsure"]


@dataclass(frozen=True)
class Logged:
    """One message as Email Logs list it (one recipient)."""

    message_id: str
    to: str
    subject: str | None
    sent_at: datetime | None
    tag: Tag | None


@dataclass(frozen=True)
class Pending:
    """One request of a call whose outcome is unknown."""

    tag: Tag  # names the request, whether or not it went out on the wire
    tagged: bool
    recipients: tuple[str, ...]  # status keys, in message_ids order
    subject: str | None


@dataclass(frozen=True)
class Verdict:
    """What the logs say about one request."""

    outcome: Outcome
    # For a found request: recipient -> Mailtrap message id (None when not listed yet).
    message_ids: dict[str, str | None] = field(default_factory=dict)
    # How many attempts of a tagged request Mailtrap accepted (more than one: sent twice).
    copies: int = 0


def address_key(address: str) -> str:
    """A form of ``address`` that compares as Mailtrap's case-insensitive filter does."""
    local, at, domain = address.rpartition("@")
    if not at:
        return address.casefold()
    if not domain.isascii():
        # An undecodable domain compares as written.
        with contextlib.suppress(Exception):
            domain = idna_encode(domain)
    return f"{local}@{domain}".casefold()


def parse_logged(data: Mapping[str, Any]) -> Logged | None:
    """A ``Logged`` from one item of an Email Logs answer, or None when it is not one."""
    message_id, to = data.get("message_id"), data.get("to")
    if not isinstance(message_id, str) or not isinstance(to, str):
        return None
    subject = data.get("subject")
    return Logged(
        message_id=message_id,
        to=to,
        subject=subject if isinstance(subject, str) else None,
        sent_at=_parse_time(data.get("sent_at")),
        tag=parse_tag(data.get("custom_variables")),
    )


def match_requests(pending: Sequence[Pending], logged: Iterable[Logged]) -> list[Verdict]:
    """One verdict per pending request, from the messages the logs listed."""
    by_request: dict[tuple[str, int, int], list[Logged]] = defaultdict(list)
    untagged: dict[tuple[str, str | None], list[Logged]] = defaultdict(list)
    for item in logged:
        if item.tag is not None:
            by_request[item.tag.request_key].append(item)
        else:
            untagged[(address_key(item.to), item.subject)].append(item)
    # How many untagged requests of this look-up could claim each (recipient, subject).
    claims = Counter(
        (address_key(r), p.subject) for p in pending if not p.tagged for r in set(p.recipients)
    )
    verdicts = []
    for request in pending:
        if request.tagged:
            verdicts.append(_tagged_verdict(request, by_request.get(request.tag.request_key, [])))
        else:
            verdicts.append(_untagged_verdict(request, untagged, claims))
    return verdicts


def _tagged_verdict(request: Pending, items: list[Logged]) -> Verdict:
    if not items:
        return Verdict("absent")
    # The logs may also hold a different attempt of this request; the ids
    # recorded are those of the earliest attempt found.
    attempts = sorted({item.tag.attempt for item in items if item.tag is not None})
    first = [item for item in items if item.tag is not None and item.tag.attempt == attempts[0]]
    return Verdict("found", _ids_for(request.recipients, first), copies=len(attempts))


def _untagged_verdict(
    request: Pending,
    untagged: Mapping[tuple[str, str | None], list[Logged]],
    claims: Counter[tuple[str, str | None]],
) -> Verdict:
    counts = [len(untagged.get((address_key(r), request.subject), [])) for r in request.recipients]
    if not any(counts):
        return Verdict("absent")
    unique = all(
        count == 1 and claims[(address_key(r), request.subject)] == 1
        for r, count in zip(request.recipients, counts, strict=True)
    )
    if not unique:
        return Verdict("unsure")
    items = [untagged[(address_key(r), request.subject)][0] for r in request.recipients]
    return Verdict("found", _ids_for(request.recipients, items), copies=1)


def _ids_for(recipients: Sequence[str], items: Sequence[Logged]) -> dict[str, str | None]:
    by_address: dict[str, list[str]] = defaultdict(list)
    for item in items:
        by_address[address_key(item.to)].append(item.message_id)
    ids: dict[str, str | None] = {}
    for recipient in recipients:
        found = by_address.get(address_key(recipient))
        # A recipient listed twice in one request (to and cc) takes the ids in turn.
        ids[recipient] = found.pop(0) if found else ids.get(recipient)
    return ids


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
