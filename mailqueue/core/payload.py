"""Build Mailtrap API calls from a message dict: pure, no I/O.

The payload is assembled into a dict by small steps in the order django-anymail's
Mailtrap backend applies them, so its quirks carry over (metadata is stringified,
a later Reply-To header overrides ``reply_to``) except where Mailtrap's published
schema refuses them: an empty ``text`` or ``html`` is left out, and header and
``custom_variables`` values are always strings.
Batch sends are burst into one request per ``to`` address and chunked to
Mailtrap's batch limits; :func:`coalesce` goes the other way, riding several
single sends on one batch call.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mailqueue.core.addresses import EmailAddress, comparable, parse_address_list
from mailqueue.core.message import NormalizedMessage, normalize_message, refuse_long_recipient_lists
from mailqueue.core.queued_message import QueuedMessage, names_sender
from mailqueue.core.rules import (
    MAX_BATCH_BYTES,
    MAX_BATCH_REQUESTS,
    MAX_CUSTOM_VARIABLES_BYTES,
    RuleError,
    batch_envelope_errors,
    custom_variables_size,
    merge_request,
    message_errors,
)
from mailqueue.errors import MailqueueError, ValidationError
from mailqueue.settings import Settings

__all__ = [
    "BATCH_WRAPPER_BYTES",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REQUESTS",
    "MAX_MESSAGE_BYTES",
    "ApiCall",
    "Prepared",
    "build_payload",
    "burst_for_batch",
    "call_size",
    "coalesce",
    "prepare",
    "render_part",
    "without_recipients",
]

# Mailtrap's documented limits, counted in decimal megabytes to stay on the safe side
# (MAX_BATCH_BYTES, the batch endpoints' own, is in mailtrap_rules).
MAX_MESSAGE_BYTES = 10_000_000

_RECIPIENT_KEYS = ("to", "cc", "bcc")
# json.dumps of {"base": B, "requests": [R]} adds this much around B and [R].
_BATCH_ENVELOPE = len(json.dumps({"base": None, "requests": None})) - 2 * len("null")
# What coalescing single calls into one batch call may add to the sum of
# their sizes: the wrapper, the list's brackets and separators, an empty base.
BATCH_WRAPPER_BYTES = _BATCH_ENVELOPE + 4

_default_settings: Settings | None = None


@dataclass(frozen=True)
class ApiCall:
    """One POST to Mailtrap: the path relative to the API base URL and the JSON body.

    ``recipients`` holds one tuple per Mailtrap message, in the order of Mailtrap's
    ``message_ids`` (to, cc, bcc, duplicates kept): one tuple for a single send, one
    per entry of ``json["requests"]`` for a batch. The strings are the status keys,
    the unencoded addr-spec (Unicode domain), as Anymail keys statuses.
    """

    path: str
    json: dict[str, Any]
    recipients: tuple[tuple[str, ...], ...]

    @property
    def is_batch(self) -> bool:
        """True for a ``batch`` (or ``batch/<sandbox id>``) call."""
        return self.path.partition("/")[0] == "batch"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, for queue envelopes."""
        return {
            "path": self.path,
            "json": self.json,
            "recipients": [list(group) for group in self.recipients],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ApiCall:
        """The inverse of :meth:`to_dict`; ValidationError when ``data`` is not one."""
        try:
            path, body, groups = data["path"], data["json"], data["recipients"]
            recipients = tuple(tuple(group) for group in groups)
        except (KeyError, TypeError) as error:
            raise ValidationError(f"not an ApiCall: {error}", field="call") from None
        if (
            not isinstance(path, str)
            or not isinstance(body, dict)
            or not all(isinstance(r, str) for group in recipients for r in group)
        ):
            raise ValidationError("not an ApiCall: wrong member types", field="call")
        return cls(path, body, recipients)


def build_payload(message: Mapping[str, Any], settings: Settings | None = None) -> list[ApiCall]:
    """Validate ``message`` and build its API calls.

    A single send gives one ``send`` call; a batch send (any ``merge_*`` key) one
    ``batch`` call per chunk of at most 500 requests and 50 MB.
    Raises ValidationError / UnsupportedFeature naming the offending field.
    """
    return prepare(message, settings).calls


@dataclass(frozen=True)
class Prepared:
    """A validated message: its normalized form, its calls, whether it named its sender."""

    message: NormalizedMessage
    calls: list[ApiCall]
    named_sender: bool


def prepare(message: Mapping[str, Any], settings: Settings | None = None) -> Prepared:
    """``build_payload``, keeping the normalized message the calls were built from."""
    settings = settings or _defaults()
    try:
        if isinstance(message, Mapping):
            # A list over Mailtrap's limit is refused before any walk of its items.
            refuse_long_recipient_lists(message)
        if _may_hold_lone_surrogates(message):
            _reject_lone_surrogates(message, "")
        msg = normalize_message(message, settings)
        calls = _calls(msg, settings)
        if msg.esp_extra:
            # esp_extra reaches the body unchecked; the body is checked instead.
            _check_extra_shaped_bodies(calls, settings)
        return Prepared(msg, calls, names_sender(message))
    except MailqueueError:
        raise
    except Exception as error:  # a last line of defence: never anything but ValidationError
        raise ValidationError(
            f"malformed message ({type(error).__name__})", field="message"
        ) from error


def _calls(msg: NormalizedMessage, settings: Settings) -> list[ApiCall]:
    if not msg.is_batch:
        return [_single_call(msg, _single_send_data(msg), settings)]
    # The batch base is the single-send payload without its recipients.
    return _batch_calls(msg, _single_send_data(msg, recipients=False), settings)


def render_part(queued: QueuedMessage, settings: Settings | None = None) -> ApiCall:
    """The one call of a queued part, rendered with ``settings`` (a worker's own).

    The message was validated when it was queued: it is rendered, not checked
    again, so a part the producer accepted always has a call. A batch part
    becomes one ``batch`` call of all its requests (it was cut to fit).
    Where the message named no sender, the worker's default sender wins over
    the producer's.
    """
    settings = settings or _defaults()
    msg = queued.message
    if not queued.named_sender:
        sender = _default_sender(settings.default_from_email, settings.allow_eai_from)
        if sender is not None and sender != msg.from_email:
            msg = dataclasses.replace(msg, from_email=sender)
    if not msg.is_batch:
        recipients = (tuple(a.addr_spec for a in (*msg.to, *msg.cc, *msg.bcc)),)
        return ApiCall(settings.endpoint("send"), _single_send_data(msg), recipients)
    base = _single_send_data(msg, recipients=False)
    requests, per_request = burst_for_batch(msg, base)
    return _batch_call(settings.endpoint("batch"), base, requests, per_request)


@lru_cache(maxsize=8)
def _default_sender(text: str | None, allow_eai: bool) -> EmailAddress | None:
    """A worker's default sender, when it is one the producer could have used."""
    if text is None:
        return None
    try:
        addresses = parse_address_list(text, "from_email")
    except ValidationError:
        return None
    if len(addresses) != 1 or (addresses[0].uses_eai and not allow_eai):
        return None
    return addresses[0]


# A lone surrogate survives json.dumps as a \\udXXX escape that Mailtrap cannot
# decode, and Redis cannot store it as UTF-8 (a recipient naming a status
# field): refused here, before anything is queued.
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_DEPTH = 64


# Larger lists and dicts than this are walked: a list of a million addresses
# (refused later for its length) is not serialized whole to be checked.
_SERIALIZED_CHECK_ITEMS = 1000


def _may_hold_lone_surrogates(message: object) -> bool:
    """False when no string of ``message`` holds a lone surrogate, told at C speed.

    UTF-8 has no encoding for a lone surrogate: a value that serializes and
    encodes holds none. Anything else (a value JSON cannot carry, a key that
    is not a string, nesting too deep, a top-level value of more than
    ``_SERIALIZED_CHECK_ITEMS`` items) is walked by ``_reject_lone_surrogates``,
    which names the field. A 500-recipient batch is checked in a fraction of
    the walk's time.
    """
    if not isinstance(message, Mapping):
        return True
    for value in message.values():
        if isinstance(value, list | tuple | Mapping) and len(value) > _SERIALIZED_CHECK_ITEMS:
            return True
    try:
        json.dumps(message, ensure_ascii=False, check_circular=False).encode("utf-8")
    except Exception:  # any doubt goes to the walk
        return True
    return False


def _reject_lone_surrogates(value: object, where: str, depth: int = 0) -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            field = where or "message"
            raise ValidationError(f"{field} holds a lone surrogate, not text", field=field)
        return
    if depth >= _SURROGATE_DEPTH:  # normalize_message refuses deeper nesting itself
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            # Escaped, so that the error itself can be printed and logged.
            text = str(key).encode("utf-8", "backslashreplace").decode("utf-8")
            name = f"{where}.{text}" if where else text
            if isinstance(key, str) and _SURROGATE.search(key):
                raise ValidationError(f"{name} has a lone surrogate in its name", field=name)
            _reject_lone_surrogates(item, name, depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _reject_lone_surrogates(item, f"{where}[{index}]", depth + 1)


def _defaults() -> Settings:
    global _default_settings
    if _default_settings is None:
        _default_settings = Settings()
    return _default_settings


# -- the single-send payload ----------------------------------------------


def _single_send_data(msg: NormalizedMessage, *, recipients: bool = True) -> dict[str, Any]:
    data: dict[str, Any] = {"from": msg.from_email.as_wire()}
    for key, addresses in (("to", msg.to), ("cc", msg.cc), ("bcc", msg.bcc)):
        if addresses and recipients:
            data[key] = [address.as_wire() for address in addresses]
    if msg.subject:
        # An empty subject is dropped, which is what lets templates work.
        data["subject"] = msg.subject
    for reply_to in msg.reply_to:
        _set_reply_to(data, reply_to)
    if msg.headers:
        data.setdefault("headers", {}).update(msg.headers)
    if msg.text:
        data["text"] = msg.text
    if msg.html:
        data["html"] = msg.html
    if msg.attachments:
        data["attachments"] = [_attachment(attachment) for attachment in msg.attachments]
    if msg.metadata is not None:
        data["custom_variables"] = msg.metadata
    if msg.category is not None:
        data["category"] = msg.category
    if msg.template_id is not None:
        data["template_uuid"] = msg.template_id
    if msg.merge_global_data is not None:
        data["template_variables"] = dict(msg.merge_global_data)
    if msg.esp_extra:
        _update_deep(data, msg.esp_extra)
    return data


def _check_extra_shaped_bodies(calls: list[ApiCall], settings: Settings) -> None:
    for call in calls:
        allow_eai = settings.allow_eai_from
        errors: list[RuleError] = []
        if call.is_batch:
            base = call.json.get("base", {})
            errors = batch_envelope_errors(call.json, allow_eai_from=allow_eai)
            bodies = [merge_request(base, request) for request in call.json["requests"]]
        else:
            bodies = [call.json]
        for body in bodies:
            errors = errors or message_errors(body, allow_eai_from=allow_eai)
            if errors:
                raise ValidationError(
                    f"esp_extra makes a body Mailtrap refuses: {errors[0].message}",
                    # esp_extra goes into base, so a base field is named as esp_extra's.
                    field=f"esp_extra.{errors[0].field.removeprefix('base.')}",
                )


def _set_reply_to(data: dict[str, Any], addresses: list[Any]) -> None:
    if len(addresses) == 1:
        # Mailtrap builds the header itself (and copes with EAI).
        data["reply_to"] = addresses[0].as_wire()
    elif addresses:
        # Mailtrap's reply_to takes one address; several go in a header we encode.
        header = ", ".join(address.format_header() for address in addresses)
        data.setdefault("headers", {})["Reply-To"] = header


def _attachment(attachment: Any) -> dict[str, str]:
    wire = {
        "filename": attachment.filename,
        "type": attachment.content_type,
        "content": attachment.content,
    }
    if attachment.inline:
        wire["disposition"] = "inline"
        wire["content_id"] = attachment.content_id
    return wire


def _update_deep(target: MutableMapping[str, Any], extra: Mapping[str, Any]) -> None:
    """Anymail's esp_extra merge: nested dicts merge, anything else replaces."""
    for key, value in extra.items():
        current = target.get(key)
        if isinstance(current, MutableMapping) and isinstance(value, Mapping):
            # Copy before merging so the caller's esp_extra is never modified.
            target[key] = merged = dict(current)
            _update_deep(merged, value)
        else:
            target[key] = value


def _single_call(msg: NormalizedMessage, data: dict[str, Any], settings: Settings) -> ApiCall:
    call = ApiCall(
        settings.endpoint("send"),
        data,
        (tuple(a.addr_spec for a in (*msg.to, *msg.cc, *msg.bcc)),),
    )
    size = _json_size(data)
    if size > MAX_MESSAGE_BYTES:
        raise ValidationError(
            f"the message is {size} bytes of JSON; Mailtrap allows {MAX_MESSAGE_BYTES}",
            field="message",
        )
    return call


# -- batch sends ----------------------------------------------------------


def burst_for_batch(
    msg: NormalizedMessage, base: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[tuple[str, ...]]]:
    """One request per ``to`` address, each also carrying the full cc and bcc lists.

    ``base`` is the payload without recipients. Returns the requests and, for
    each, its recipients in ``message_ids`` order.
    """
    shared: dict[str, Any] = {}
    if msg.cc:
        shared["cc"] = [address.as_wire() for address in msg.cc]
    if msg.bcc:
        shared["bcc"] = [address.as_wire() for address in msg.bcc]
    copies = tuple(a.addr_spec for a in (*msg.cc, *msg.bcc))
    merges = (
        ("template_variables", msg.merge_data or {}, base.get("template_variables") or {}),
        ("custom_variables", msg.merge_metadata or {}, base.get("custom_variables") or {}),
        ("headers", msg.merge_headers or {}, base.get("headers") or {}),
    )
    active = [merge for merge in merges if merge[1]]
    requests: list[dict[str, Any]] = []
    recipients: list[tuple[str, ...]] = []
    for index, address in enumerate(msg.to):
        wire = address.as_wire()
        request: dict[str, Any] = {"to": [wire], **shared}
        for key, entries, base_values in active:
            # Anymail matches the IDNA (wire) form only; the Unicode form also matches here.
            entry = entries.get(address.email)
            if entry is None and address.addr_spec != address.email:
                entry = entries.get(address.addr_spec)
            if entry is not None:
                # A request's key replaces base's outright, so carry base's values along.
                merged = dict(base_values)
                merged.update(entry)
                request[key] = merged
                if key == "custom_variables":
                    _check_custom_variables(merged, index)
        requests.append(request)
        recipients.append((address.addr_spec, *copies) if copies else (address.addr_spec,))
    return requests, recipients


def _check_custom_variables(variables: dict[str, Any], index: int) -> None:
    if custom_variables_size(variables) > MAX_CUSTOM_VARIABLES_BYTES:
        raise ValidationError(
            f"metadata merged for to[{index}] exceeds Mailtrap's"
            f" {MAX_CUSTOM_VARIABLES_BYTES} bytes",
            field="merge_metadata",
        )


def _batch_calls(msg: NormalizedMessage, base: dict[str, Any], settings: Settings) -> list[ApiCall]:
    requests, recipients = burst_for_batch(msg, base)
    path = settings.endpoint("batch")
    base_size = _json_size(base)
    calls: list[ApiCall] = []
    for start in range(0, len(requests), MAX_BATCH_REQUESTS):
        chunk = requests[start : start + MAX_BATCH_REQUESTS]
        chunk_recipients = recipients[start : start + MAX_BATCH_REQUESTS]
        chunk_size = _json_size(chunk)
        # Each request is smaller than the whole chunk, so one measurement usually
        # settles both limits; only an oversized chunk is measured request by request.
        if (
            base_size + chunk_size <= MAX_MESSAGE_BYTES
            and base_size + chunk_size + _BATCH_ENVELOPE <= MAX_BATCH_BYTES
        ):
            calls.append(_batch_call(path, base, chunk, chunk_recipients))
        else:
            calls.extend(_split_by_size(path, base, base_size, chunk, chunk_recipients, start))
    return calls


def _split_by_size(
    path: str,
    base: dict[str, Any],
    base_size: int,
    chunk: list[dict[str, Any]],
    recipients: list[tuple[str, ...]],
    offset: int,
) -> list[ApiCall]:
    calls: list[ApiCall] = []
    budget = MAX_BATCH_BYTES - base_size - _BATCH_ENVELOPE - 2
    start, used = 0, 0
    for index, request in enumerate(chunk):
        size = _json_size(request)
        if base_size + size > MAX_MESSAGE_BYTES:
            raise ValidationError(
                f"the message to to[{offset + index}] is over Mailtrap's {MAX_MESSAGE_BYTES} bytes",
                field="message",
            )
        if index > start and used + size + 2 > budget:
            calls.append(_batch_call(path, base, chunk[start:index], recipients[start:index]))
            start, used = index, 0
        used += size + 2  # the ", " separator
    calls.append(_batch_call(path, base, chunk[start:], recipients[start:]))
    return calls


def _batch_call(
    path: str,
    base: dict[str, Any],
    requests: list[dict[str, Any]],
    recipients: list[tuple[str, ...]],
) -> ApiCall:
    return ApiCall(path, {"base": base, "requests": requests}, tuple(recipients))


# -- coalescing -----------------------------------------------------------


def coalesce(calls: Sequence[ApiCall], settings: Settings | None = None) -> ApiCall:
    """Combine single-send calls into one batch call; request i delivers what calls[i] would.

    Keys with identical values in every call go into ``base``; the rest stay in
    each request. No key is ever in both, so whether Mailtrap merges a request
    into base shallowly or deeply makes no difference. The caller keeps it to
    at most 500 calls.
    """
    settings = settings or _defaults()
    if not calls:
        raise ValueError("coalesce needs at least one call")
    if any(call.is_batch for call in calls):
        raise ValueError("coalesce combines single sends only")
    bodies = [call.json for call in calls]
    first, rest = bodies[0], bodies[1:]
    base = {
        key: value
        for key, value in first.items()
        if key not in _RECIPIENT_KEYS
        and all(key in body and _same_json(body[key], value) for body in rest)
    }
    requests = [{k: v for k, v in body.items() if k not in base} for body in bodies]
    recipients = tuple(call.recipients[0] for call in calls)
    return ApiCall(settings.endpoint("batch"), {"base": base, "requests": requests}, recipients)


def _same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: unlike ``==``, ``1``, ``1.0`` and ``true`` differ."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


# -- sizes ----------------------------------------------------------------


def call_size(call: ApiCall) -> int:
    """Bytes of the call's JSON body as sent (``json.dumps`` defaults, ASCII only)."""
    return _json_size(call.json)


def _json_size(value: Any) -> int:
    # json.dumps escapes non-ASCII by default, so characters are bytes.
    return len(json.dumps(value, allow_nan=False))


# -- an API call without the recipients that must not be mailed -------------------------
#
# A worker takes suppressed recipients out of a call just before sending it:
# from ``to``/``cc``/``bcc`` of a single send; from a batch, whole requests
# whose ``to`` is suppressed (a batch request exists for that one recipient)
# and suppressed cc and bcc addresses from every request kept.
# Addresses compare as ``addresses.comparable`` spells them, so the wire's IDNA
# form matches the Unicode form the status record keys.

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
