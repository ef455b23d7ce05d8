"""An API call without the recipients that must not be mailed (pure, no I/O).

A worker takes suppressed recipients out of a call just before sending it:
from ``to``/``cc``/``bcc`` of a single send, and whole requests of a batch
whose ``to`` is suppressed (a batch request exists for that one recipient).
Addresses compare as ``addresses.comparable`` spells them, so the wire's IDNA
form matches the Unicode form the status record keys.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from .addresses import comparable
from .payload import ApiCall

__all__ = ["without_recipients"]

_FIELDS = ("to", "cc", "bcc")


def without_recipients(call: ApiCall, drop: Collection[str]) -> ApiCall | None:
    """``call`` without the recipients in ``drop`` (status keys); None when none is left."""
    if not drop:
        return call
    gone = {comparable(address) for address in drop}
    if call.is_batch:
        return _batch_without(call, gone)
    return _single_without(call, gone)


def _single_without(call: ApiCall, gone: set[str]) -> ApiCall | None:
    body = dict(call.json)
    left = 0
    for name in _FIELDS:
        entries = body.get(name)
        if not isinstance(entries, list):
            continue
        kept = [e for e in entries if comparable(str(e.get("email", ""))) not in gone]
        if kept:
            body[name] = kept
            left += len(kept)
        else:
            body.pop(name)
    if not left:
        return None
    recipients = tuple(
        tuple(address for address in group if comparable(address) not in gone)
        for group in call.recipients
    )
    return ApiCall(call.path, body, recipients)


def _batch_without(call: ApiCall, gone: set[str]) -> ApiCall | None:
    requests: list[Any] = list(call.json.get("requests", []))
    kept_requests = []
    kept_recipients = []
    for request, group in zip(requests, call.recipients, strict=True):
        if group and comparable(group[0]) in gone:
            continue
        kept_requests.append(request)
        kept_recipients.append(group)
    if not kept_requests:
        return None
    body = {**call.json, "requests": kept_requests}
    return ApiCall(call.path, body, tuple(kept_recipients))
