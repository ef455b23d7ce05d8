"""An API call without the recipients that must not be mailed (pure, no I/O).

A worker takes suppressed recipients out of a call just before sending it:
from ``to``/``cc``/``bcc`` of a single send; from a batch, whole requests
whose ``to`` is suppressed (a batch request exists for that one recipient)
and suppressed cc and bcc addresses from every request kept.
Addresses compare as ``addresses.comparable`` spells them, so the wire's IDNA
form matches the Unicode form the status record keys.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from mailqueue.core.addresses import comparable
from mailqueue.core.payload import ApiCall

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
    body, left = _fields_without(call.json, gone)
    if not left:
        return None
    recipients = tuple(_group_without(group, gone) for group in call.recipients)
    return ApiCall(call.path, body, recipients)


def _batch_without(call: ApiCall, gone: set[str]) -> ApiCall | None:
    """Drop the requests whose ``to`` is suppressed, and suppressed copies from the rest.

    Each request of a batch part carries the whole cc and bcc lists, so a
    suppressed cc or bcc address is taken out of every request kept.
    """
    requests: list[Any] = list(call.json.get("requests", []))
    kept_requests = []
    kept_recipients = []
    for request, group in zip(requests, call.recipients, strict=True):
        if group and comparable(group[0]) in gone:
            continue
        kept, _ = _fields_without(request, gone)
        kept_requests.append(kept)
        kept_recipients.append(_group_without(group, gone))
    if not kept_requests:
        return None
    body = {**call.json, "requests": kept_requests}
    return ApiCall(call.path, body, tuple(kept_recipients))


def _fields_without(data: dict[str, Any], gone: set[str]) -> tuple[dict[str, Any], int]:
    """``data`` without the gone addresses in ``to``/``cc``/``bcc``, and how many are left."""
    body = dict(data)
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
    return body, left


def _group_without(group: tuple[str, ...], gone: set[str]) -> tuple[str, ...]:
    return tuple(address for address in group if comparable(address) not in gone)
