"""``mailqueue demo``: the whole pipeline on one machine, in about ten seconds.

It starts what is missing -- a private Redis unless a broker is configured,
the local Mailtrap stand-in unless an API token is configured -- plus a real
Celery worker and the tracking webhook on a loopback port. It then queues a
plain message, a template batch with merge data and a message with an
attachment, waits until Mailtrap accepted them, posts the tracking events
Mailtrap would send for their message ids (signed like Mailtrap signs them),
and prints the statuses after every step. With the local stand-in it then
sends one message whose answer the stand-in drops after accepting it: the
worker finds it in the stand-in's Email Logs and does not send it again.
Everything it started is stopped on the way out, also after an error or Ctrl-C.

It ships in the package, with the local parts it starts (``mailqueue.testing``),
so that an installed wheel runs it without a Mailtrap account. It uses its own
``Client`` and leaves the process's default alone.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, cast

from mailqueue.client import Client
from mailqueue.core.calltag import parse_tag
from mailqueue.demo.errors import DemoError
from mailqueue.demo.local import Echo, Stop, interruptible, prepare, start_webhook, start_worker
from mailqueue.demo.report import Sent, show
from mailqueue.demo.script import (
    DEMO_TRACKING_SECRET,
    check_tracked,
    example_messages,
    lost_answer_message,
    post_events,
    tracking_events,
)
from mailqueue.records import FINAL_STATES
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap

__all__ = ["DEMO_TRACKING_SECRET", "DemoError", "run"]


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
        stop = stack.enter_context(interruptible())
        settings, recipients, sender, template, mailtrap = prepare(
            base, stack, echo, to=to, from_email=from_email, template_id=template_id
        )
        client = Client(settings)
        stack.callback(client.close)
        start_worker(settings, stack, echo)
        stop.check()
        webhook_url = start_webhook(settings, stack)
        echo(f"webhook: {webhook_url}")

        sent = []
        for label, message in example_messages(recipients, sender, template):
            send_id = client.enqueue(message)
            echo(f"queued {label}: send id {send_id}")
            sent.append(Sent(label, send_id))
        records = _wait_sent(client, sent, timeout, stop)
        show(echo, "accepted by Mailtrap", sent, records)
        if mailtrap is not None:
            _check_streams(mailtrap, echo)

        delivery, engagement = tracking_events(records)
        for title, events in (
            ("after delivery and bounce events", delivery),
            ("after open and click events", engagement),
        ):
            stop.check()
            post_events(webhook_url, events)
            records = _records(client, sent)
            show(echo, title, sent, records)
        check_tracked(records, delivery + engagement)
        if mailtrap is not None:
            stop.check()
            message = lost_answer_message(recipients, sender)
            records.append(_lost_answer(client, mailtrap, message, timeout, stop, echo))
        echo("demo finished: every status followed its events")
        return records
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack never swallows


def _check_streams(mailtrap: LocalMailtrap, echo: Echo) -> None:
    """Say which of the stand-in's streams took the demo's mail; the template batch is bulk."""
    streams = Counter(accepted.stream for accepted in mailtrap.accepted)
    if not streams["bulk"]:
        raise DemoError("the template batch did not reach the stand-in's bulk stream")
    shown = ", ".join(f"{count} on {stream}" for stream, count in sorted(streams.items()))
    echo(f"streams: {shown} (the bulk stream at {mailtrap.bulk_url})")


def _lost_answer(
    client: Client,
    mailtrap: LocalMailtrap,
    message: dict[str, Any],
    timeout: float,
    stop: Stop,
    echo: Echo,
) -> dict[str, Any]:
    """Send ``message`` while the local Mailtrap drops its answer after accepting it.

    The worker cannot tell whether its call went out: it looks the message up
    in Email Logs after the settle delay, finds it, and records it sent with
    Mailtrap's message id instead of sending it again.
    """
    mailtrap.inject("lost")
    item = Sent("lost answer", client.enqueue(message))
    echo(f"queued {item.label}: send id {item.send_id} (accepted, then its answer dropped)")
    (record,) = _wait_sent(client, [item], timeout, stop)
    show(echo, "after a lost answer, looked up in Email Logs", [item], [record])
    copies = 0
    for accepted in mailtrap.accepted:
        tag = parse_tag(accepted.payload.get("custom_variables"))
        copies += tag is not None and tag.send_id == item.send_id
    if copies != 1 or record.get("reconciled") != 1:
        raise DemoError(
            f"the message whose answer was lost was accepted {copies} time(s), "
            f"{record.get('reconciled', 0)} found in Email Logs"
        )
    echo(f"{item.label}: found in Email Logs, accepted once, not sent again")
    return record


def _records(client: Client, sent: Sequence[Sent]) -> list[dict[str, Any]]:
    records = []
    for item in sent:
        record = client.get_status(item.send_id)
        if record is None:
            raise DemoError(f"the status record of {item.label} ({item.send_id}) vanished")
        records.append(cast(dict[str, Any], record))
    return records


def _wait_sent(
    client: Client, sent: Sequence[Sent], timeout: float, stop: Stop
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        stop.check()
        records = _records(client, sent)
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
