"""Anymail's signals, so that an app written for Anymail keeps its receivers.

``pre_send`` goes out in the producer, before a message is queued; a receiver
raising ``AnymailCancelSend`` keeps it out of the queue. ``post_send`` goes out
in the worker, once per send, when the send reaches its final outcome, with
Anymail's status objects and a message rebuilt from the queued call: it is
the outcome receiver ``POST_SEND``, which importing ``mailqueue.django`` adds
to every client of the process (``connect_post_send``; see
``mailqueue.deliver.hooks``). ``tracking`` goes out from the Django webhook
view, once per event, with Anymail's event objects. Without django-anymail installed
there is no receiver to tell, and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mailqueue.client import add_outcome_receiver
from mailqueue.core.addresses import parse_address_list
from mailqueue.core.events import TrackingEvent
from mailqueue.core.rules import merge_request
from mailqueue.deliver.hooks import OutcomeReceiver
from mailqueue.records import StatusRecord

if TYPE_CHECKING:
    from mailqueue.core.envelope import Envelope

__all__ = [
    "ESP_NAME",
    "POST_SEND",
    "anymail_status",
    "connect_post_send",
    "post_send_available",
    "queued_status",
    "rebuilt_message",
    "run_pre_send",
    "send_post_send",
    "send_tracking_signals",
    "to_anymail_event",
]

ESP_NAME = "Mailtrap"

try:
    from anymail.exceptions import AnymailCancelSend
    from anymail.message import AnymailMessage, AnymailRecipientStatus, AnymailStatus
    from anymail.signals import AnymailTrackingEvent, post_send, pre_send, tracking
except ImportError:  # pragma: no cover - django-anymail is optional
    AnymailCancelSend = None
    pre_send = post_send = tracking = None

# A recipient's status in the record, as Anymail's backends report a send:
# Mailtrap's "success" with a message id is Anymail's "queued" (as its Mailtrap
# backend says), a suppressed address one the ESP refused.
_ANYMAIL_STATUS = {"failed": "failed", "suppressed": "rejected"}


def run_pre_send(sender: type, message: Any) -> bool:
    """Send ``pre_send`` for ``message``; False when a receiver cancelled it."""
    if pre_send is None:
        return True
    try:
        pre_send.send(sender, message=message, esp_name=ESP_NAME)
    except AnymailCancelSend:
        return False
    return True


def to_anymail_event(event: TrackingEvent) -> Any:
    """Anymail's ``AnymailTrackingEvent`` for one normalized event."""
    return AnymailTrackingEvent(
        event_type=event.event_type,
        timestamp=datetime.fromisoformat(event.timestamp.replace("Z", "+00:00")),
        event_id=event.event_id,
        esp_event=event.to_json(),
        message_id=event.message_id,
        recipient=event.recipient,
        tags=list(event.tags),
        metadata=dict(event.metadata),
        reject_reason=event.reject_reason,
        mta_response=event.mta_response,
        description=event.reason,
        click_url=event.click_url,
        user_agent=event.user_agent,
    )


def send_tracking_signals(events: Sequence[TrackingEvent]) -> None:
    """Anymail's ``tracking`` signal for each event, in the order Mailtrap posted them."""
    if tracking is None:
        return
    for event in events:
        tracking.send(sender=TrackingEvent, event=to_anymail_event(event), esp_name=ESP_NAME)


def post_send_available() -> bool:
    """Whether django-anymail is installed and ``post_send`` has receivers to tell."""
    return post_send is not None and bool(post_send.has_listeners())


def anymail_status(record: StatusRecord) -> Any:
    """Anymail's ``AnymailStatus`` for a send's final record, one entry per recipient."""
    status = AnymailStatus()
    recipients = {}
    for address, entry in record["recipients"].items():
        message_id = entry.get("message_id")
        value = _ANYMAIL_STATUS.get(entry.get("status", ""), "failed")
        recipients[address] = AnymailRecipientStatus(message_id, "queued" if message_id else value)
    status.set_recipient_status(recipients)
    status.esp_response = None  # the answers were Mailtrap's to the worker, not kept
    return status


def queued_status(message: Mapping[str, Any], send_id: str) -> Any:
    """Anymail's ``AnymailStatus`` of a message just queued: each recipient ``queued``.

    As Anymail reports a send to an ESP that queues it: the id is the send id
    (Mailtrap's own ids come when a worker has sent it; ``post_send`` carries
    them). None without django-anymail.
    """
    if pre_send is None:
        return None
    recipients: dict[str, Any] = {}
    for field in ("to", "cc", "bcc"):
        for text in message.get(field) or ():
            for address in parse_address_list(text, field):
                recipients[address.email] = AnymailRecipientStatus(send_id, "queued")
    status = AnymailStatus()
    status.set_recipient_status(recipients)
    return status


def rebuilt_message(body: Mapping[str, Any], send_id: str) -> Any:
    """An ``AnymailMessage`` with what a receiver reads, rebuilt from a queued call's body.

    A batch call gives its base with its requests' recipients. A send of
    several calls is rebuilt from the call that ended it: its ``to`` lists that
    call's recipients, the status lists them all.
    """
    if "requests" in body:
        requests = [merge_request(body.get("base", {}), r) for r in body["requests"]]
    else:
        requests = [dict(body)]
    first = requests[0] if requests else {}

    def addresses(key: str) -> list[str]:
        found: list[str] = []
        for request in requests:
            for entry in request.get(key) or ():
                text = _address(entry)
                if text not in found:
                    found.append(text)
        return found

    message = AnymailMessage(
        subject=first.get("subject", ""),
        body=first.get("text", ""),
        from_email=_address(first["from"]) if first.get("from") else None,
        to=addresses("to"),
        cc=addresses("cc"),
        bcc=addresses("bcc"),
        reply_to=[_address(first["reply_to"])] if first.get("reply_to") else None,
        headers=dict(first.get("headers") or {}),
    )
    if first.get("html"):
        message.attach_alternative(first["html"], "text/html")
    if first.get("category"):
        message.tags = [first["category"]]
    if first.get("custom_variables"):
        message.metadata = dict(first["custom_variables"])
    if first.get("template_uuid"):
        message.template_id = first["template_uuid"]
    message.mailqueue_send_id = send_id
    return message


def send_post_send(envelope: Envelope, record: StatusRecord) -> None:
    """Anymail's ``post_send`` for a send's final outcome; a receiver's error is raised."""
    from mailqueue.django.backend import EmailBackend

    message = rebuilt_message(envelope.call.json, envelope.send_id)
    message.anymail_status = anymail_status(record)
    results = post_send.send_robust(
        EmailBackend, message=message, status=message.anymail_status, esp_name=ESP_NAME
    )
    for _, response in results:
        if isinstance(response, Exception):
            raise response


def _post_send_listening() -> bool:
    """Whether this process runs a Django project and ``post_send`` has receivers there."""
    from django.conf import settings as django_settings

    return bool(django_settings.configured) and post_send_available()


def _tell_post_send(send_id: str, record: StatusRecord, envelope: Envelope | None) -> None:
    if envelope is not None:
        send_post_send(envelope, record)


#: Anymail's ``post_send`` as a receiver of final outcomes.
POST_SEND = OutcomeReceiver(
    "post_send", _tell_post_send, listening=_post_send_listening, calls_only=True
)


def connect_post_send() -> None:
    """Send ``post_send`` for the final outcomes every client of this process sees."""
    add_outcome_receiver(POST_SEND)


def _address(entry: Any) -> str:
    """``Name <addr>`` (or the bare address) from a Mailtrap address object."""
    if isinstance(entry, str):
        return entry
    email, name = entry.get("email", ""), entry.get("name")
    return f"{name} <{email}>" if name else str(email)
