"""Validate a message dict and normalize it, with django-anymail's Mailtrap semantics.

:func:`normalize_message` is the one entry point. Every problem becomes a
``ValidationError`` (or ``UnsupportedFeature``) whose ``field`` names the culprit,
e.g. ``to[2]``, ``attachments[0].content``, ``headers.X-Foo``. Fields are checked
in the order Anymail processes them, so the first error raised is the one Anymail
would raise.
"""

from __future__ import annotations

import binascii
import json
import math
import mimetypes
import re
from base64 import b64decode, b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import unquote
from typing import Any, TypeVar

from mailqueue.core.addresses import EmailAddress, parse_address_list
from mailqueue.core.rules import (
    MAX_ADDRESSES_PER_FIELD,
    MAX_CATEGORY_CHARS,
    MAX_CUSTOM_VARIABLES_BYTES,
    RESERVED_HEADERS,
    custom_variables_size,
    is_template_uuid,
)
from mailqueue.core.schedule import parse_when
from mailqueue.errors import UnsupportedFeature, ValidationError
from mailqueue.settings import Settings, valid_account_name

__all__ = [
    "MESSAGE_KEYS",
    "Attachment",
    "NormalizedMessage",
    "campaign_name",
    "check_json",
    "custom_variables_size",
    "normalize_message",
    "refuse_long_recipient_lists",
]

_T = TypeVar("_T")

MESSAGE_KEYS = frozenset(
    {
        "from_email", "to", "cc", "bcc", "reply_to", "subject", "text", "html",
        "attachments", "headers", "tags", "metadata", "template_id",
        "merge_global_data", "merge_data", "merge_metadata", "merge_headers",
        "esp_extra", "send_at", "track_opens", "track_clicks", "envelope_sender",
        "stream", "account", "campaign", "expires_at",
    }
)  # fmt: skip
ATTACHMENT_KEYS = frozenset({"filename", "content", "mimetype", "inline", "content_id"})
BATCH_KEYS = ("merge_data", "merge_metadata", "merge_headers")

# Deeper JSON than this is refused rather than risk the encoder's recursion limit.
MAX_JSON_DEPTH = 64

_SCALARS = (str, int, type(None))
_B64_WHITESPACE = str.maketrans("", "", " \t\r\n")
_HEADER_FORBIDDEN = frozenset(":\r\n \t\0")


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment, ready for the wire: ``content`` is canonical base64."""

    filename: str
    content_type: str
    content: str
    inline: bool
    content_id: str


@dataclass(slots=True)
class NormalizedMessage:
    """A validated message. Optional parts are None when the message did not set them."""

    from_email: EmailAddress
    to: list[EmailAddress]
    cc: list[EmailAddress]
    bcc: list[EmailAddress]
    # Anymail applies message.reply_to and then a Reply-To header one after the
    # other, and the second may leave part of the first in place; both are kept.
    reply_to: list[list[EmailAddress]] = field(default_factory=list)
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    headers: dict[str, str] | None = None
    attachments: list[Attachment] = field(default_factory=list)
    category: str | None = None
    metadata: dict[str, str] | None = None
    template_id: str | None = None
    merge_global_data: dict[str, Any] | None = None
    merge_data: dict[str, Any] | None = None
    merge_metadata: dict[str, dict[str, str]] | None = None
    merge_headers: dict[str, dict[str, str]] | None = None
    esp_extra: dict[str, Any] | None = None
    # Routing facts, resolved by the worker that sends the message (see routing.py).
    stream: str = "transactional"
    account: str | None = None
    # Groups sends for progress, pause, resume and cancel (see campaigns.py).
    campaign: str | None = None

    @property
    def is_batch(self) -> bool:
        """Any merge_* key, even ``{}``, makes a batch send (as in Anymail)."""
        return (
            self.merge_data is not None
            or self.merge_metadata is not None
            or self.merge_headers is not None
        )


def normalize_message(message: object, settings: Settings) -> NormalizedMessage:
    """Validate ``message`` fully and return its normalized form."""
    if not isinstance(message, Mapping):
        raise ValidationError(
            f"a message must be a dict, not {type(message).__name__}", field="message"
        )
    for key in message:
        if key not in MESSAGE_KEYS:
            name = key if isinstance(key, str) and key else repr(key)
            raise ValidationError(f"unknown message key {name!r}", field=str(name))
    get = message.get
    unsupported = _Unsupported(settings.ignore_unsupported_features)

    from_list = _from_list(get("from_email"), settings)
    if len(from_list) > 1:
        unsupported.feature("multiple from emails")
    refuse_long_recipient_lists(message)
    to = _recipients(get("to"), "to")
    cc = _recipients(get("cc"), "cc")
    bcc = _recipients(get("bcc"), "bcc")
    subject = _one_line(get("subject"), "subject")
    reply_to: list[list[EmailAddress]] = []
    raw_reply_to = get("reply_to")
    if raw_reply_to is not None:
        reply_to.append(_recipients(raw_reply_to, "reply_to"))
        _check_reply_to(reply_to[-1], unsupported)
    headers = None
    if get("headers") is not None:
        headers, header_reply_to, header_from, header_to = _extra_headers(get("headers"))
        if header_reply_to:
            reply_to.append(header_reply_to)
            _check_reply_to(header_reply_to, unsupported)
        if header_from is not None:
            # A From header replaces from_email, which would become the envelope sender.
            if len(header_from) > 1:
                unsupported.feature("multiple from emails")
            if len(from_list) > 1:
                raise ValidationError(
                    "from_email must be a single address when a From header is set",
                    field="from_email",
                )
            from_list = header_from
            unsupported.feature("envelope_sender")
        if header_to is not None:
            unsupported.feature("spoofing `To` header")
    if not from_list:
        raise ValidationError(
            "from_email is required (or set a default sender: MAILQUEUE_DEFAULT_FROM_EMAIL)",
            field="from_email",
        )
    text = _optional_str(get("text"), "text")
    html = _optional_str(get("html"), "html")
    attachments = _attachments(get("attachments"))
    if get("envelope_sender") is not None:
        _envelope_sender(get("envelope_sender"))
        unsupported.feature("envelope_sender")
    # Mailtrap has no delayed sending: the queue holds the message until then,
    # and neither time reaches the body.
    for name in ("send_at", "expires_at"):
        if get(name) is not None:
            parse_when(get(name), name)
    metadata = _metadata(get("metadata"))
    tags = _tags(get("tags"))
    if len(tags) > 1:
        unsupported.feature("multiple tags")
    for name in ("track_clicks", "track_opens"):
        if get(name) is not None:
            check_json(get(name), name)
            unsupported.feature(name)
    template_id = _optional_str(get("template_id"), "template_id")
    merge_data = _merge_dicts(get("merge_data"), "merge_data")
    merge_global_data = _json_dict(get("merge_global_data"), "merge_global_data")
    merge_headers = _merge_headers(get("merge_headers"))
    merge_metadata = _merge_metadata(get("merge_metadata"))
    esp_extra = _json_dict(get("esp_extra"), "esp_extra")

    normalized = NormalizedMessage(
        from_email=from_list[0],
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        subject=subject,
        text=text,
        html=html,
        headers=headers,
        attachments=attachments,
        category=tags[0] if tags else None,
        metadata=metadata,
        template_id=template_id,
        merge_global_data=merge_global_data,
        merge_data=merge_data,
        merge_metadata=merge_metadata,
        merge_headers=merge_headers,
        esp_extra=esp_extra,
        stream=_stream(get("stream")),
        account=_account(get("account"), settings),
        campaign=campaign_name(get("campaign")),
    )
    _check_mailtrap_rules(normalized, tags)
    _check_schema_rules(normalized, settings)
    return normalized


def _stream(value: object) -> str:
    if value is None:
        return "transactional"
    if value not in ("transactional", "bulk"):
        raise ValidationError("stream must be 'transactional' or 'bulk'", field="stream")
    return str(value)


_CAMPAIGN_RE = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def campaign_name(value: object, field: str = "campaign") -> str | None:
    """A valid campaign name (letters, digits, ``._:-``, at most 100), or None when absent."""
    if value is None:
        return None
    if not isinstance(value, str) or not _CAMPAIGN_RE.match(value):
        raise ValidationError(
            "campaign must be a name of letters, digits and '._:-' (at most 100 characters)",
            field=field,
        )
    return value


def _account(value: object, settings: Settings) -> str | None:
    # A producer needs no Mailtrap settings: only one that lists accounts can
    # refuse a name it does not know; otherwise the worker's settings decide.
    if value is None:
        return None
    if not valid_account_name(value):
        raise ValidationError(
            "account must be an account name (letters, digits, '_' and '-', at most 64)",
            field="account",
        )
    name = str(value)
    if settings.accounts and name not in settings.accounts:
        raise ValidationError(f"no account named {name!r} is configured", field="account")
    return name


class _Unsupported:
    def __init__(self, ignore: bool) -> None:
        self.ignore = ignore

    def feature(self, name: str) -> None:
        if not self.ignore:
            raise UnsupportedFeature(f"Mailtrap does not support {name}", field=name)


def _check_reply_to(addresses: list[EmailAddress], unsupported: _Unsupported) -> None:
    # Several addresses go into a header we must encode, and an EAI local part
    # has no 7-bit form.
    if len(addresses) > 1 and any(address.uses_eai for address in addresses):
        unsupported.feature("EAI with multiple reply_to addresses")


def _check_schema_rules(msg: NormalizedMessage, settings: Settings) -> None:
    """Rules of Mailtrap's published request schema that Anymail lets through."""
    if msg.from_email.uses_eai and not settings.allow_eai_from:
        raise ValidationError(
            "from_email has a non-ASCII local part, which Mailtrap refuses ('From' header"
            " does not match the sender's domain); MAILQUEUE_ALLOW_EAI_FROM allows it",
            field="from_email",
        )
    if msg.template_id is not None and not is_template_uuid(msg.template_id):
        raise ValidationError(
            "template_id must be a template UUID (8-4-4-4-12 hex digits)", field="template_id"
        )
    for name in msg.headers or {}:
        _refuse_reserved_header(name, f"headers.{name}")
    for address, entry in (msg.merge_headers or {}).items():
        for name in entry:
            _refuse_reserved_header(name, f"merge_headers.{address}.{name}")
    for index, attachment in enumerate(msg.attachments):
        if not attachment.content:
            raise ValidationError(
                "an attachment must not be empty", field=f"attachments[{index}].content"
            )


def _refuse_reserved_header(name: str, where: str) -> None:
    if name.isascii() and name.lower() in RESERVED_HEADERS:
        raise ValidationError(
            f"{name} is a header Mailtrap reserves; use the message's own field", field=where
        )


def _check_mailtrap_rules(msg: NormalizedMessage, tags: list[str]) -> None:
    """What Mailtrap is documented to reject, refused here instead of failing later."""
    if not (msg.to or msg.cc or msg.bcc):
        raise ValidationError("a message needs at least one to, cc or bcc recipient", field="to")
    limited: tuple[tuple[str, list[EmailAddress]], ...]
    if msg.is_batch:
        if not msg.to:
            raise ValidationError("a batch send (merge_*) needs to recipients", field="to")
        limited = (("cc", msg.cc), ("bcc", msg.bcc))
    else:
        limited = (("to", msg.to), ("cc", msg.cc), ("bcc", msg.bcc))
    for name, addresses in limited:
        if len(addresses) > MAX_ADDRESSES_PER_FIELD:
            raise ValidationError(
                f"{name} has {len(addresses)} addresses; Mailtrap allows {MAX_ADDRESSES_PER_FIELD}",
                field=name,
            )
    if msg.category is not None and len(msg.category) > MAX_CATEGORY_CHARS:
        raise ValidationError(
            f"a tag may have at most {MAX_CATEGORY_CHARS} characters", field="tags[0]"
        )
    if (
        msg.metadata is not None
        and custom_variables_size(msg.metadata) > MAX_CUSTOM_VARIABLES_BYTES
    ):
        raise ValidationError(
            f"metadata exceeds Mailtrap's {MAX_CUSTOM_VARIABLES_BYTES} bytes", field="metadata"
        )
    extra = msg.esp_extra or {}
    if msg.template_id is not None:
        # Mailtrap rejects these alongside template_uuid.
        for name, value in (("subject", msg.subject), ("text", msg.text), ("html", msg.html)):
            if value:
                raise ValidationError(f"{name} cannot be combined with template_id", field=name)
        if tags:
            raise ValidationError("tags cannot be combined with template_id", field="tags")
    elif not extra.get("template_uuid"):
        # Mailtrap's schema requires a subject unless a template supplies it.
        if not (msg.subject or extra.get("subject")):
            raise ValidationError(
                "a subject is required unless template_id is used", field="subject"
            )
        if not (msg.text or msg.html or extra.get("text") or extra.get("html")):
            raise ValidationError("a message needs text, html or template_id", field="text")
    for key in ("to", "cc", "bcc"):
        if key in extra:
            # Statuses are keyed by the recipients parsed here; esp_extra must not change them.
            raise ValidationError(
                f"esp_extra cannot set {key}; use the {key} key", field=f"esp_extra.{key}"
            )


# -- addresses ------------------------------------------------------------


def _from_list(value: object, settings: Settings) -> list[EmailAddress]:
    if value is None:
        value = settings.default_from_email
        if value is None:
            return []
    return parse_address_list(value, "from_email")


def _envelope_sender(value: object) -> EmailAddress:
    """The one address of ``envelope_sender``, which Mailtrap has no field for.

    Anymail parses it as a single address before it finds the feature
    unsupported, so a malformed one is refused even when unsupported
    features are ignored.
    """
    parsed = parse_address_list(value, "envelope_sender")
    if len(parsed) != 1:
        raise ValidationError(
            f"envelope_sender must be one address, not {len(parsed)}", field="envelope_sender"
        )
    return parsed[0]


def refuse_long_recipient_lists(message: Mapping[Any, Any]) -> None:
    """Refuse an over-long list before parsing it: a million addresses cost a million parses.

    Each item holds at least one address (or is invalid), so the item count is a
    floor of the address count checked after parsing.
    """
    batch = any(message.get(key) is not None for key in _MERGE_KEYS)
    for name in ("cc", "bcc") if batch else ("to", "cc", "bcc"):
        items = message.get(name)
        if isinstance(items, (list, tuple)) and len(items) > MAX_ADDRESSES_PER_FIELD:
            raise ValidationError(
                f"{name} has {len(items)} addresses; Mailtrap allows {MAX_ADDRESSES_PER_FIELD}",
                field=name,
            )


_MERGE_KEYS = ("merge_data", "merge_metadata", "merge_headers")


def _recipients(value: object, name: str) -> list[EmailAddress]:
    if value is None:
        return []
    value = _expect(value, (list, tuple), "a list of addresses", name)
    result: list[EmailAddress] = []
    for index, item in enumerate(value):
        result.extend(parse_address_list(item, f"{name}[{index}]"))
    return result


# -- headers --------------------------------------------------------------


def _extra_headers(
    value: object,
) -> tuple[
    dict[str, str] | None,
    list[EmailAddress],
    list[EmailAddress] | None,
    str | None,
]:
    """Headers minus Reply-To, From and To (matched case-insensitively, as Anymail)."""
    headers = _header_dict(value, "headers")
    # The last spelling of a name wins, in the position of the first (requests'
    # CaseInsensitiveDict, which Anymail uses).
    folded: dict[str, tuple[str, str]] = {}
    for name, header_value in headers.items():
        folded[name.lower()] = (name, header_value)
    reply_to: list[EmailAddress] = []
    raw = folded.pop("reply-to", None)
    if raw is not None and raw[1]:
        reply_to = parse_address_list(raw[1], f"headers.{raw[0]}")
    header_from = None
    raw = folded.pop("from", None)
    if raw is not None:
        header_from = parse_address_list(raw[1], f"headers.{raw[0]}")
    raw = folded.pop("to", None)
    header_to = None if raw is None else raw[0]
    rest = {name: header_value for name, header_value in folded.values()}
    return (rest or None), reply_to, header_from, header_to


def _header_dict(value: object, where: str) -> dict[str, str]:
    value = _expect(value, Mapping, "a dict of header names to values", where)
    for name, header_value in value.items():
        if not isinstance(name, str) or not name or not _HEADER_FORBIDDEN.isdisjoint(name):
            raise ValidationError(
                f"invalid header name {name!r} in {where}", field=f"{where}.{name}"
            )
        if isinstance(header_value, str):
            if "\r" in header_value or "\n" in header_value:
                raise ValidationError(
                    f"header {name} must not contain line breaks", field=f"{where}.{name}"
                )
        elif (
            isinstance(header_value, bool)
            or not isinstance(header_value, (int, float))
            or (isinstance(header_value, float) and not math.isfinite(header_value))
        ):
            raise ValidationError(
                f"header {name} must be a string, not {type(header_value).__name__}",
                field=f"{where}.{name}",
            )
    # Mailtrap's schema takes string values only; a number goes as its text.
    return {name: _header_text(header_value) for name, header_value in value.items()}


def _header_text(value: str | int | float) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# -- simple fields --------------------------------------------------------


def _expect(value: object, types: type[_T] | tuple[type[_T], ...], what: str, name: str) -> _T:
    """``value``, refused (field ``name``) unless it is one of ``types``, which ``what`` names."""
    if not isinstance(value, types):
        raise ValidationError(f"{name} must be {what}, not {type(value).__name__}", field=name)
    return value


def _optional_str(value: object, name: str) -> str | None:
    if value is None:
        return None
    return _expect(value, str, "a string", name)


def _one_line(value: object, name: str) -> str | None:
    """``value`` when it is None or a string of one line; refused, naming ``name``, otherwise.

    Each of these fields ends up in a header line of the mail Mailtrap
    builds (Subject, a part's Content-Type or Content-ID, X-MT-Category,
    X-MT-Custom-Variables): a line break there is header injection, or a
    message Mailtrap refuses later, after the queue has accepted it.
    """
    text = _optional_str(value, name)
    if text is not None and ("\r" in text or "\n" in text):
        raise ValidationError(f"{name} must not contain line breaks", field=name)
    return text


def _tags(value: object) -> list[str]:
    if value is None:
        return []
    tags = _expect(value, (list, tuple), "a list of strings", "tags")
    return [
        _one_line(_expect(tag, str, "a string", f"tags[{index}]"), f"tags[{index}]") or ""
        for index, tag in enumerate(tags)
    ]


def _metadata(value: object) -> dict[str, str] | None:
    if value is None:
        return None
    return _stringified(_expect(value, Mapping, "a dict", "metadata"), "metadata")


def _stringified(value: Mapping[Any, Any], where: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, item in value.items():
        # Anymail sends str() of keys and values: 6 -> "6", None -> "None".
        try:
            result[str(key)] = str(item)
        except Exception:  # str() of an arbitrary object may fail in any way
            raise ValidationError(
                f"{where} value for {key!r} cannot be converted to a string",
                field=f"{where}.{key}",
            ) from None
        if "\r" in str(key) or "\n" in str(key):
            raise ValidationError(
                f"{where} keys must not contain line breaks", field=f"{where}.{key!r}"
            )
    return result


# -- attachments ----------------------------------------------------------


def _attachments(value: object) -> list[Attachment]:
    if value is None:
        return []
    value = _expect(value, (list, tuple), "a list", "attachments")
    return [_attachment(item, f"attachments[{index}]") for index, item in enumerate(value)]


def _attachment(item: object, where: str) -> Attachment:
    item = _expect(item, Mapping, "a dict", where)
    for key in item:
        if key not in ATTACHMENT_KEYS:
            raise ValidationError(f"unknown attachment key {key!r}", field=f"{where}.{key}")
    filename = _one_line(item.get("filename"), f"{where}.filename")
    mimetype = _one_line(item.get("mimetype"), f"{where}.mimetype")
    content_id = _one_line(item.get("content_id"), f"{where}.content_id")
    inline = item.get("inline")
    if inline is not None and not isinstance(inline, bool):
        raise ValidationError(f"{where}.inline must be true or false", field=f"{where}.inline")
    content = item.get("content")
    if not isinstance(content, str):
        raise ValidationError(f"{where}.content must be a base64 string", field=f"{where}.content")
    try:
        raw = _b64decode(content)
    except (binascii.Error, ValueError):
        raise ValidationError(
            f"{where}.content is not valid base64", field=f"{where}.content"
        ) from None
    if mimetype is None and filename:
        mimetype = mimetypes.guess_type(filename)[0]
    if mimetype is None:
        mimetype = "application/octet-stream"
    maintype, slash, subtype = mimetype.partition("/")
    if not slash or not maintype or not subtype.strip():
        raise ValidationError(
            f"{where}.mimetype must look like 'type/subtype'", field=f"{where}.mimetype"
        )
    content_type = mimetype
    if maintype == "text" and "charset=" not in mimetype.lower():
        # Anymail labels text parts with their charset; content is sent as given.
        content_type = f'{mimetype}; charset="utf-8"'
    # Like a MIME part: no disposition but a Content-ID means inline.
    is_inline = inline if inline is not None else bool(content_id)
    return Attachment(
        filename=filename or "attachment",
        content_type=content_type,
        content=b64encode(raw).decode("ascii"),
        inline=is_inline,
        content_id=unquote(content_id) if (is_inline and content_id) else "",
    )


def _b64decode(content: str) -> bytes:
    try:
        return b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        # MIME-style base64 wraps lines; anything else outside the alphabet is an error.
        return b64decode(content.translate(_B64_WHITESPACE), validate=True)


# -- JSON values ----------------------------------------------------------


def _json_dict(value: object, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    value = _expect(value, Mapping, "a dict", name)
    check_json(value, name)
    return dict(value)


def _merge_dicts(value: object, name: str) -> dict[str, Any] | None:
    """merge_data / merge_metadata: recipient address -> dict of JSON values."""
    if value is None:
        return None
    value = _expect(value, Mapping, "a dict", name)
    for address, entry in value.items():
        where = f"{name}.{address}"
        if not isinstance(address, str):
            raise ValidationError(f"{name} keys must be addresses", field=f"{name}.{address!r}")
        entry = _expect(entry, Mapping, "a dict", where)
        check_json(entry, where)
    return value if isinstance(value, dict) else dict(value)


def _merge_metadata(value: object) -> dict[str, dict[str, str]] | None:
    """merge_metadata, its values strings as metadata's are (Mailtrap's schema wants strings)."""
    checked = _merge_dicts(value, "merge_metadata")
    if checked is None:
        return None
    return {
        address: _stringified(entry, f"merge_metadata.{address}")
        for address, entry in checked.items()
    }


def _merge_headers(value: object) -> dict[str, dict[str, str]] | None:
    if value is None:
        return None
    value = _expect(value, Mapping, "a dict", "merge_headers")
    result: dict[str, dict[str, str]] = {}
    for address, entry in value.items():
        if not isinstance(address, str):
            raise ValidationError(
                "merge_headers keys must be addresses", field=f"merge_headers.{address!r}"
            )
        result[address] = _header_dict(entry, f"merge_headers.{address}")
    return result


def check_json(value: object, where: str, depth: int = 0) -> None:
    """Raise ValidationError naming the path unless ``value`` is plain, finite JSON."""
    kind = type(value)
    if kind in _SCALARS or kind is bool:
        return
    if kind is float:
        if not math.isfinite(value):  # type: ignore[arg-type]
            raise ValidationError(f"{where} is not a finite number", field=where)
        return
    if depth >= MAX_JSON_DEPTH:
        raise ValidationError(f"{where} is nested too deeply", field=where)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(
                    f"{where} has a non-string key {key!r}", field=f"{where}.{key!r}"
                )
            if type(item) not in _SCALARS:
                check_json(item, f"{where}.{key}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            if type(item) not in _SCALARS:
                check_json(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return
    if isinstance(value, float):
        check_json(float(value), where, depth)
        return
    raise ValidationError(f"{where} holds a {kind.__name__}, which JSON cannot carry", field=where)
