"""A Django email backend that queues through mailqueue instead of sending inline.

Set ``EMAIL_BACKEND = "mailqueue.django.EmailBackend"``: ``send_mail``,
``EmailMessage.send()`` and ``send_messages`` convert each Django message into
a mailqueue message dict (Anymail's attribute names: ``tags``, ``metadata``,
``template_id``, ``merge_data``, ...), validate it in the calling process and
queue it. Settings come from ``Settings.from_django()``, so an Anymail project's
``ANYMAIL = {"MAILTRAP_API_TOKEN": ...}`` works as is. Each queued message gets
``mailqueue_send_id`` for ``mailqueue.get_status``.

Routing: ``get_connection(stream="bulk")`` (or ``account="eu"``) queues every
message of that connection for Mailtrap's bulk stream (or that account); a
message's own ``stream`` / ``account`` attribute wins over the connection's.

Unlike a backend that pickles or JSON-encodes the ``EmailMessage`` itself, the
Anymail attributes travel as plain keys of the message dict, so nothing such as
``template_id`` or ``merge_data`` is lost on the way to the worker.
"""

from __future__ import annotations

import email.message
import mimetypes
from base64 import b64encode
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any

from django.conf import settings as django_settings
from django.core.mail import EmailMessage
from django.core.mail.backends.base import BaseEmailBackend
from django.utils.encoding import force_str

from mailqueue.client import Client, client_for_settings, configure, default
from mailqueue.core.payload import build_payload
from mailqueue.django.signals import queued_status, run_pre_send
from mailqueue.errors import ConfigurationError, MailqueueError, UnsupportedFeature, ValidationError
from mailqueue.settings import Settings

__all__ = ["ANYMAIL_ATTRIBUTES", "EmailBackend", "to_message_dict"]

try:  # AnymailMessage sets every attribute it knows, to UNSET when not given.
    from anymail.utils import UNSET as _UNSET
except ImportError:  # pragma: no cover - django-anymail is optional
    _UNSET = object()

ANYMAIL_ATTRIBUTES = (
    "tags", "metadata", "template_id", "merge_data", "merge_global_data",
    "merge_metadata", "merge_headers", "esp_extra", "send_at", "track_opens",
    "track_clicks", "envelope_sender",
)  # fmt: skip

# mailqueue's routing facts, read from a message attribute or the connection.
ROUTING_ATTRIBUTES = ("stream", "account")

DEFAULT_ATTACHMENT_TYPE = "application/octet-stream"
# Django's send_mail hands these to get_connection; they mean nothing to an API.
_SMTP_KWARGS = frozenset({"username", "password"})


class EmailBackend(BaseEmailBackend):  # type: ignore[misc]
    """Validate and queue Django email messages; ``send_messages`` returns how many were queued.

    Keyword arguments (e.g. from ``get_connection(api_token=...)``) override the
    ``Settings`` field of the same name; ``stream`` and ``account`` route every
    message of the connection that does not choose for itself.
    """

    def __init__(self, fail_silently: bool = False, **kwargs: Any) -> None:
        super().__init__(fail_silently=fail_silently)
        self.routing = {name: kwargs.pop(name) for name in ROUTING_ATTRIBUTES if name in kwargs}
        if self.routing.get("stream", "transactional") not in ("transactional", "bulk"):
            raise ConfigurationError(
                "stream must be 'transactional' or 'bulk'", setting="stream"
            )
        overrides = {name: value for name, value in kwargs.items() if name not in _SMTP_KWARGS}
        settings = Settings.from_django()
        try:
            self.settings = settings.replace(**overrides) if overrides else settings
            # The project's own settings are the process's; a connection with
            # overrides (get_connection(api_token=...)) keeps to itself.
            self._shared = not overrides
        except TypeError:
            unknown = sorted(set(overrides) - set(Settings.__dataclass_fields__))
            raise ConfigurationError(
                f"unknown mailqueue setting {unknown[0]!r}", setting=unknown[0]
            ) from None

    def send_messages(self, email_messages: Iterable[EmailMessage]) -> int:
        # Anymail's pre_send first: a receiver may change a message, or cancel it.
        messages = [m for m in email_messages if run_pre_send(type(self), m)]
        if not messages:
            return 0
        rt = client_for(self.settings, shared=self._shared)
        if self.fail_silently:
            return self._queue_silently(messages, rt)
        dicts = []
        for index, message in enumerate(messages):
            try:
                dicts.append(self._message_dict(message))
            except ValidationError as exc:
                if len(messages) > 1:
                    exc.index = index
                raise
        send_ids = [rt.enqueue(dicts[0])] if len(dicts) == 1 else rt.enqueue_many(dicts)
        for message, converted, send_id in zip(messages, dicts, send_ids, strict=True):
            _queued(message, converted, send_id)
        return len(send_ids)

    def _queue_silently(self, messages: Sequence[EmailMessage], rt: Client) -> int:
        # Django's contract: a message that cannot be sent is skipped, not
        # raised; the count says how many went. Validating each one first keeps
        # one bad message from holding back the others.
        accepted: list[tuple[EmailMessage, dict[str, Any]]] = []
        for message in messages:
            try:
                converted = self._message_dict(message)
                build_payload(converted, self.settings)
            except MailqueueError:
                continue
            accepted.append((message, converted))
        if not accepted:
            return 0
        try:
            send_ids = rt.enqueue_many([converted for _, converted in accepted])
        except MailqueueError:
            return 0
        for (message, converted), send_id in zip(accepted, send_ids, strict=True):
            _queued(message, converted, send_id)
        return len(send_ids)


    def _message_dict(self, message: EmailMessage) -> dict[str, Any]:
        return {**self.routing, **to_message_dict(message, self.settings)}


def _queued(message: EmailMessage, converted: dict[str, Any], send_id: str) -> None:
    """Mark a queued message: its send id, and Anymail's status as for an ESP that queues."""
    message.mailqueue_send_id = send_id
    status = queued_status(converted, send_id)
    if status is not None:
        message.anymail_status = status


def client_for(settings: Settings, *, shared: bool) -> Client:
    """The client a backend sends through.

    The project's settings (``shared``) are the process's: its default client,
    made the default when it is not yet, so that ``mailqueue.get_status`` reads
    where the backend wrote. A backend with overrides gets a client of its own
    and leaves the default alone.
    """
    if not shared:
        return client_for_settings(settings)
    try:
        current: Client | None = default()
    except ConfigurationError:  # the environment alone is not a usable configuration
        current = None
    if current is not None and current.settings == settings:
        return current
    return configure(settings)


def to_message_dict(message: EmailMessage, settings: Settings | None = None) -> dict[str, Any]:
    """The mailqueue message dict for a Django ``EmailMessage`` (Anymail attributes included).

    Raises ``UnsupportedFeature`` for alternatives Mailtrap cannot carry, unless
    ``settings.ignore_unsupported_features``; everything else is checked when
    the dict is queued.
    """
    settings = settings or Settings()
    result: dict[str, Any] = {
        "from_email": force_str(message.from_email or django_settings.DEFAULT_FROM_EMAIL)
    }
    for name in ("to", "cc", "bcc", "reply_to"):
        addresses = getattr(message, name, None)
        if addresses:
            result[name] = [force_str(address) for address in addresses]
    if message.subject:
        result["subject"] = force_str(message.subject)
    result.update(_bodies(message, settings.ignore_unsupported_features))
    if message.extra_headers:
        result["headers"] = {str(name): value for name, value in message.extra_headers.items()}
    if message.attachments:
        charset = django_settings.DEFAULT_CHARSET or "utf-8"
        result["attachments"] = [_attachment(item, charset) for item in message.attachments]
    for name in (*ANYMAIL_ATTRIBUTES, *ROUTING_ATTRIBUTES):
        value = getattr(message, name, None)
        if value is not None and value is not _UNSET:
            result[name] = _iso(value) if name == "send_at" else value
    return result


def _bodies(message: EmailMessage, ignore_unsupported: bool) -> dict[str, str]:
    """``text`` / ``html`` from the body and the alternatives, in Anymail's order."""
    bodies: dict[str, str] = {}

    def unsupported(feature: str) -> None:
        if not ignore_unsupported:
            raise UnsupportedFeature(f"Mailtrap does not support {feature}", field="alternatives")

    def set_html(content: str) -> None:
        if "html" in bodies:
            unsupported("multiple html parts")
        bodies["html"] = content

    def add_alternative(content: str, mimetype: str) -> None:
        if mimetype == "text/plain":
            unsupported("multiple plaintext parts")
        elif mimetype == "text/html":
            unsupported("multiple html parts")
        else:
            unsupported(f"alternative part with type '{mimetype}'")

    body = force_str(message.body or "")
    subtype = message.content_subtype
    if subtype == "plain":
        if body:
            bodies["text"] = body
    elif subtype == "html":
        # An empty html body still counts as the html part, as in Anymail (a
        # second one is "multiple html parts"); build_payload leaves it out.
        set_html(body)
    else:
        add_alternative(body, f"text/{subtype}")
    has_plain = subtype == "plain" and bool(body)
    has_html = subtype == "html" and bool(body)
    for content, mimetype in getattr(message, "alternatives", None) or ():
        text = force_str(content)
        if mimetype == "text/plain" and not has_plain:
            if text:
                bodies["text"] = text
            has_plain = True
        elif mimetype == "text/html" and not has_html:
            set_html(text)
            has_html = True
        else:
            add_alternative(text, mimetype)
    return bodies


def _attachment(item: Any, default_charset: str) -> dict[str, Any]:
    """One Django attachment (a ``(filename, content, mimetype)`` tuple or a MIME part)."""
    mimetype: str | None
    if isinstance(item, email.message.Message):
        filename = item.get_filename()
        mimetype = item.get_content_type()
        charset = item.get_content_charset()
        content = item.get_payload(decode=True)
        if not isinstance(content, bytes):  # a multipart attachment
            content = item.as_bytes()
        disposition = item.get_content_disposition()
        content_id = item["Content-ID"]
        is_str = False
        # A MIME part without a disposition but with a Content-ID is inline.
        inline = disposition == "inline" or (disposition is None and content_id is not None)
    else:
        filename, raw, mimetype = item
        filename = force_str(filename) if filename is not None else None
        charset, content_id, inline = None, None, False
        is_str = isinstance(raw, str)
        if isinstance(raw, EmailMessage):
            raw = raw.message()
        if isinstance(raw, email.message.Message):
            raw = raw.as_bytes()
            mimetype = mimetype or "message/rfc822"
        if isinstance(raw, str):
            charset = default_charset
            raw = raw.encode(charset)
        content = raw
    if not mimetype and filename:
        mimetype = mimetypes.guess_type(filename)[0]
    content_type = mimetype or DEFAULT_ATTACHMENT_TYPE
    # Anymail labels text (and str content) with its charset; the bytes are sent as they are.
    if (content_type.startswith("text/") or is_str) and "charset=" not in content_type.lower():
        content_type = f'{content_type}; charset="{charset or default_charset}"'
    result: dict[str, Any] = {
        "content": b64encode(bytes(content)).decode("ascii"),
        "mimetype": content_type,
        "inline": inline,
    }
    if filename:
        result["filename"] = filename
    if inline and content_id:
        result["content_id"] = str(content_id)
    return result


def _iso(value: Any) -> Any:
    # send_at travels as ISO 8601 (the message dict stays JSON); the queue holds it.
    return value.isoformat() if isinstance(value, (datetime, date)) else value
