"""``mailqueue demo``: the whole pipeline on one machine, in about ten seconds.

It starts what is missing -- a private Redis unless a broker is configured,
the local Mailtrap stand-in unless an API token is configured -- plus a real
Celery worker and the tracking webhook on a loopback port. It then queues a
plain message, a template batch with merge data and a message with an
attachment, waits until Mailtrap accepted them, posts the tracking events
Mailtrap would send for their message ids (signed like Mailtrap signs them),
and prints the statuses after every step. Everything it started is stopped
on the way out, also after an error or Ctrl-C.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import requests

from .errors import ConfigurationError, MailqueueError
from .settings import DEFAULT_BROKER_URL, Settings

__all__ = ["DEMO_TRACKING_SECRET", "DemoError", "run"]

# Signs the simulated tracking events; only the demo's own webhook sees it.
DEMO_TRACKING_SECRET = "mailqueue-demo-tracking-secret"
LOCAL_FROM = "Demo Shop <shop@example.com>"
LOCAL_TEMPLATE_ID = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
LOCAL_RECIPIENTS = ("alice@example.com", "bob@example.com", "carol@example.com")
FINAL_STATES = frozenset({"sent", "partially_sent", "failed"})

Echo = Callable[[str], None]


class DemoError(MailqueueError):
    """A step of the demo did not do what it should."""


@dataclass
class Sent:
    """One message the demo queued: what it shows, and its send id."""

    label: str
    send_id: str


def run(
    *,
    to: Sequence[str] = (),
    from_email: str | None = None,
    template_id: str | None = None,
    settings: Settings | None = None,
    echo: Echo = print,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """Run the demo; returns the final status records. Raises MailqueueError on failure."""
    base = settings if settings is not None else Settings.from_env()
    with ExitStack() as stack:
        stop = stack.enter_context(_interruptible())
        settings, recipients, sender, template = _environment(
            base, stack, echo, to=to, from_email=from_email, template_id=template_id
        )
        from . import configure

        configure(settings)
        _start_worker(settings, stack, echo)
        stop.check()
        webhook_url = _start_webhook(settings, stack)
        echo(f"webhook: {webhook_url}")

        sent = _send_examples(recipients, sender, template, echo)
        records = _wait_sent(sent, timeout, stop)
        _show(echo, "accepted by Mailtrap", sent, records)

        delivery, engagement = _tracking_events(records)
        for title, events in (
            ("after delivery and bounce events", delivery),
            ("after open and click events", engagement),
        ):
            stop.check()
            _post_events(webhook_url, events)
            records = _records(sent)
            _show(echo, title, sent, records)
        _check_tracked(records, delivery + engagement)
        echo("demo finished: every status followed its events")
        return records
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack never swallows


# -- setting up -----------------------------------------------------------


class _Stop:
    """Ctrl-C (or SIGTERM) noted by a signal handler and acted on between steps.

    A KeyboardInterrupt raised at an arbitrary bytecode can land in a
    destructor (redis-py's parser has one), where Python prints and swallows
    it, and the demo would carry on. A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def _interruptible() -> Iterator[_Stop]:
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _environment(
    base: Settings,
    stack: ExitStack,
    echo: Echo,
    *,
    to: Sequence[str],
    from_email: str | None,
    template_id: str | None,
) -> tuple[Settings, list[str], str, str | None]:
    """Settings for the demo, starting a private Redis and a local Mailtrap when needed."""
    from .testing import LocalMailtrap, RedisServer

    changes: dict[str, Any] = {
        "tracking_secret": DEMO_TRACKING_SECRET,
        "webhook_secret": (),
    }
    if base.broker_url == DEFAULT_BROKER_URL and base.redis_url is None:
        server = RedisServer()  # ConfigurationError, saying what to install, when none exists
        stack.callback(server.stop)
        server.start()
        changes["broker_url"] = server.url
        echo(f"redis: private redis-server at {server.url}")
    else:
        echo("redis: using the configured broker")
    if base.api_token:
        if not to:
            raise ConfigurationError(
                "a Mailtrap API token is set, so the demo sends real email: give the "
                "recipients with --to ADDRESS (or unset MAILTRAP_API_TOKEN to use the "
                "local stand-in)",
                setting="to",
            )
        sender = from_email or base.default_from_email
        if not sender:
            raise ConfigurationError(
                "a Mailtrap API token is set: give a sender of a verified domain with --from "
                "(or MAILQUEUE_DEFAULT_FROM_EMAIL)",
                setting="from_email",
            )
        echo("mailtrap: the real API (tracking events below are simulated)")
        return base.replace(**changes), list(to), sender, template_id
    mailtrap = LocalMailtrap()
    stack.callback(mailtrap.stop)
    mailtrap.start()
    changes.update(api_token=mailtrap.token, api_url=mailtrap.url, sandbox_id=None)
    echo(f"mailtrap: local stand-in at {mailtrap.url}")
    recipients = list(to) or list(LOCAL_RECIPIENTS)
    return base.replace(**changes), recipients, from_email or LOCAL_FROM, LOCAL_TEMPLATE_ID


def _start_worker(settings: Settings, stack: ExitStack, echo: Echo) -> None:
    from .testing.worker import WorkerProcess

    worker = WorkerProcess(settings, concurrency=2)
    stack.callback(_remove, worker.log.name)
    stack.callback(worker.stop)
    echo("worker: starting celery -A mailqueue worker ...")
    try:
        worker.start()
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1:] or [""]
        raise DemoError(f"the Celery worker did not start: {last[0]}") from None
    echo("worker: ready")


def _remove(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _start_webhook(settings: Settings, stack: ExitStack) -> str:
    """Serve the tracking webhook app on a free loopback port; returns its URL."""
    from .webhooks import TRACKING_PATH, create_app

    server: WSGIServer = make_server(
        "127.0.0.1", 0, create_app(settings), handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="demo-webhook", daemon=True)
    thread.start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return f"http://127.0.0.1:{server.server_port}{TRACKING_PATH}"


# -- sending --------------------------------------------------------------


def _send_examples(
    recipients: Sequence[str], sender: str, template_id: str | None, echo: Echo
) -> list[Sent]:
    from .tasks import send_email

    messages: list[tuple[str, dict[str, Any]]] = [
        (
            "plain",
            {
                "from_email": sender,
                "to": [recipients[0]],
                "subject": "Your order has shipped",
                "text": "Order 1001 is on its way.",
                "html": "<p>Order <b>1001</b> is on its way.</p>",
                "tags": ["shipping"],
                "metadata": {"order": "1001"},
            },
        ),
    ]
    if template_id:
        messages.append(
            (
                "template batch",
                {
                    "from_email": sender,
                    "to": list(recipients),
                    "template_id": template_id,
                    "merge_global_data": {"shop": "Demo Shop"},
                    "merge_data": {
                        address: {"name": address.split("@")[0].title(), "code": f"SAVE{n}"}
                        for n, address in enumerate(recipients, start=10)
                    },
                },
            )
        )
    receipt = b"Order 1001: 2 x tea, 1 x mug\n"
    messages.append(
        (
            "attachment",
            {
                "from_email": sender,
                "to": [recipients[-1]],
                "subject": "Your receipt",
                "text": "Your receipt is attached.",
                "attachments": [
                    {
                        "filename": "receipt.txt",
                        "content": base64.b64encode(receipt).decode("ascii"),
                        "mimetype": "text/plain",
                    }
                ],
            },
        )
    )
    sent = []
    for label, message in messages:
        send_id = send_email.delay(message).id
        echo(f"queued {label}: send id {send_id}")
        sent.append(Sent(label, send_id))
    return sent


def _records(sent: Sequence[Sent]) -> list[dict[str, Any]]:
    from .client import get_status

    records = []
    for item in sent:
        record = get_status(item.send_id)
        if record is None:
            raise DemoError(f"the status record of {item.label} ({item.send_id}) vanished")
        records.append(record)
    return records


def _wait_sent(sent: Sequence[Sent], timeout: float, stop: _Stop) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        stop.check()
        records = _records(sent)
        if all(record["state"] in FINAL_STATES for record in records):
            break
        if time.monotonic() >= deadline:
            pairs = zip(sent, records, strict=True)
            states = ", ".join(f"{item.label}={record['state']}" for item, record in pairs)
            raise DemoError(f"sends not accepted after {timeout:g} s ({states})")
        time.sleep(0.1)
    for item, record in zip(sent, records, strict=True):
        if record["state"] != "sent":
            error = (record.get("error") or {}).get("message", "no error recorded")
            raise DemoError(f"{item.label} ended {record['state']}: {error}")
    return records


# -- tracking events ------------------------------------------------------


def _event(name: str, recipient: str, message_id: str, **extra: Any) -> dict[str, Any]:
    """One event as Mailtrap posts it."""
    return {
        "event": name,
        "message_id": message_id,
        "email": recipient,
        "timestamp": int(time.time()),
        "event_id": str(uuid.uuid4()),
        "sending_stream": "transactional",
        "sending_domain_name": "example.com",
        **extra,
    }


def _tracking_events(
    records: Sequence[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Events for every accepted recipient: (delivery and one bounce, then opens and a click)."""
    pairs = [
        (address, info["message_id"])
        for record in records
        for address, info in record["recipients"].items()
        if info.get("message_id")
    ]
    if not pairs:
        raise DemoError("Mailtrap returned no message ids")
    bounced = pairs[-1] if len(pairs) > 2 else None
    delivery = [
        _event(
            "bounce",
            address,
            message_id,
            bounce_category="badrecipient",
            response="550 5.1.1 user unknown",
            response_code=550,
        )
        if (address, message_id) == bounced
        else _event("delivery", address, message_id)
        for address, message_id in pairs
    ]
    first_address, first_id = pairs[0]
    engagement = [
        _event("open", first_address, first_id, user_agent="Mozilla/5.0"),
        _event(
            "click",
            first_address,
            first_id,
            url="https://example.com/orders/1001",
            user_agent="Mozilla/5.0",
        ),
    ]
    # One more open, by someone else who was not bounced.
    others = [pair for pair in pairs[1:-1] if pair[0] != first_address]
    if others:
        engagement.append(_event("open", *others[0], user_agent="Mozilla/5.0"))
    return delivery, engagement


def _post_events(url: str, events: Sequence[dict[str, Any]]) -> None:
    body = json.dumps({"events": list(events)}).encode()
    signature = hmac.new(DEMO_TRACKING_SECRET.encode(), body, hashlib.sha256).hexdigest()
    answer = requests.post(
        url,
        data=body,
        headers={"Content-Type": "application/json", "Mailtrap-Signature": signature},
        timeout=10,
    )
    if answer.status_code != 200:
        raise DemoError(f"the webhook answered {answer.status_code}: {answer.text[:200]}")


_EXPECTED = {"delivery": "delivered", "bounce": "bounced", "open": "opened", "click": "clicked"}
_RANK = ("delivered", "opened", "clicked")


def _check_tracked(records: Sequence[dict[str, Any]], events: Sequence[dict[str, Any]]) -> None:
    """Every recipient ends at the furthest status its events reached."""
    expected: dict[tuple[str, str], str] = {}
    for event in events:
        key = (event["email"], event["message_id"])
        status = _EXPECTED[event["event"]]
        old = expected.get(key)
        if old is None or (old in _RANK and _RANK.index(status) > _RANK.index(old)):
            expected[key] = status
    for record in records:
        for address, info in record["recipients"].items():
            want = expected.get((address, info.get("message_id")))
            if want is not None and info["status"] != want:
                raise DemoError(f"{address} is {info['status']}, expected {want} after its events")


# -- output ---------------------------------------------------------------


def _show(echo: Echo, title: str, sent: Sequence[Sent], records: Sequence[dict[str, Any]]) -> None:
    rows = [("MESSAGE", "SEND ID", "STATE", "RECIPIENT", "STATUS", "MESSAGE ID")]
    for item, record in zip(sent, records, strict=True):
        for index, (address, info) in enumerate(record["recipients"].items()):
            rows.append(
                (
                    item.label if index == 0 else "",
                    item.send_id[:8] if index == 0 else "",
                    record["state"] if index == 0 else "",
                    address,
                    str(info["status"]),
                    str(info.get("message_id") or "-"),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    echo("")
    echo(f"== {title}")
    for row in rows:
        echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
