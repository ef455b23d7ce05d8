"""Celery tasks: decode, delegate, decide. No delivery logic lives here.

``send_email`` is the producer's entry point: its ``delay``/``apply_async``
validate and queue in the calling process and return an ``AsyncResult``
whose id is the send id. ``deliver`` is the wake-up a worker runs: it drains
the outbox until it is empty.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, bootsteps, signals
from celery.result import AsyncResult

from mailqueue.celery_app import app, ours
from mailqueue.client import Client, default, reset_default
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import ValidationError
from mailqueue.metrics import instruments as metrics
from mailqueue.store import keys
from mailqueue.tasks import worker_setup  # noqa: F401  (its worker signal receivers)
from mailqueue.tasks.send_result import SendResult

__all__ = ["deliver", "send_email"]

log = logging.getLogger("mailqueue.tasks")

# How often every worker looks for work that no live drain is taking.
SWEEP_INTERVAL = 5.0
# Work due for this long was not found by a live drain (which looks every
# second or so, transactional work first): its wake-up was lost, and a sweep
# wakes a drain for it.
OVERDUE = 3.0


def drainer() -> Drainer:
    """This process's drainer (one HTTP session, one limiter), built on first use."""
    return default().drainer


@signals.worker_process_init.connect
def _fresh_after_fork(**_: Any) -> None:
    # A forked pool child must not share the parent's sockets.
    if ours():
        reset_default()


@signals.worker_ready.connect
def _collect_leftovers(sender: Any = None, **_: Any) -> None:
    if not ours(sender):
        return
    # Work left by a worker that died (or queued while none ran) is picked up
    # as soon as a worker starts, without waiting for the next message.
    default().waker.wake()
    settings = default().settings
    if settings.metrics_port:
        metrics.start_metrics_server(
            settings.metrics_port,
            redis_url=settings.status_redis_url,
            key_space=default().keys,
        )


def sweep(rt: Client) -> bool:
    """Wake a drain when work waits that no drain is coming for; True when one was woken.

    Two wake-ups can go missing. A drain that died with its worker leaves its
    heartbeat behind for a while, and producers that see it publish none. And
    a scheduled wake-up (for a retry, or to reclaim a dead worker's envelopes)
    dies unrun with the worker that held it, while its note still tells every
    drain that one is on its way. So work waits for a wake-up when no drain is
    alive, or when it has been due for longer than a live drain takes to find
    it: a retry or a reclaim past its time, or transactional mail unread (a
    live drain reads it first, every round). Campaign mail may wait unread
    under a live drain for as long as the rate limit says. Sweeps of the whole
    fleet wake at most one drain for overdue work each ``OVERDUE`` seconds.
    """
    outbox = rt.outbox
    due = [
        at
        for at in (outbox.next_retry_due(), outbox.next_reclaim_due(), outbox.unread_since())
        if at is not None
    ]
    now = time.time()  # read after them: a reclaim due now is due at their own reading
    if any(at <= now - OVERDUE for at in due):
        return rt.waker.wake_for_overdue(int(OVERDUE * 1000))
    if rt.waker.drain_alive():
        return False
    if outbox.waiting() or any(at <= now for at in due):
        rt.waker.wake()
        return True
    return False


def _sweep() -> None:
    try:
        sweep(default())
        # The dashboard's backlog over the last hour: one sample a minute is
        # enough, the last sweep of the minute writes it.
        default().outbox.note_backlog()
    except Exception as exc:  # Redis or the broker is down: the next sweep tries again
        log.warning("sweep for waiting work failed: %s", type(exc).__name__)


class WakeOnConnect(bootsteps.StartStopStep):
    """Wake a drain each time the worker (re)connects to the broker, then sweep periodically.

    Drains cut off by a lost connection are cancelled, and the producers that
    failed meanwhile woke nobody: a reconnected worker must look for itself.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._timer: Any = None

    def start(self, parent: Any) -> None:
        _sweep()
        self._timer = parent.timer.call_repeatedly(SWEEP_INTERVAL, _sweep)

    def stop(self, parent: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


app.steps["consumer"].add(WakeOnConnect)


class SendEmailTask(Task):  # type: ignore[type-arg]
    """Validates and queues in the caller's process instead of publishing the message itself."""

    def apply_async(  # type: ignore[override]
        self,
        args: tuple[Any, ...] | list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        task_id: str | None = None,
        **options: Any,
    ) -> AsyncResult:  # type: ignore[type-arg]
        message = _single_message(args, kwargs)
        options.pop("producer", None)
        options.pop("link", None)
        options.pop("link_error", None)
        send_id = default().enqueue(message, **options)
        return self.AsyncResult(send_id)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:  # type: ignore[type-arg]
        return self.apply_async(args, kwargs)

    def AsyncResult(self, task_id: str, **kwargs: Any) -> SendResult:
        """A result read from the send's status record: there is no Celery result backend."""
        return SendResult(task_id, app=self.app, task_name=self.name, **kwargs)


@app.task(base=SendEmailTask, name="mailqueue.send_email", bind=True)
def send_email(self: Task[Any, Any], message: dict[str, Any]) -> str | None:
    """Run by a worker when a message arrives by task name (``send_task``) or is called directly.

    The task id becomes the send id, so ``send_task(...).id`` can be given to
    ``get_status``; a redelivered task queues nothing twice. A message that
    fails validation here is recorded as ``failed`` with the reason.
    """
    task_id = self.request.id
    try:
        if task_id is None:
            send_id = default().enqueue(message)
        else:
            send_id = default().enqueue(
                message, send_id=task_id, idempotency_key=f"celery-task:{task_id}"
            )
    except ValidationError as exc:
        log.warning("send %s refused: %s", task_id, exc)
        if task_id is not None and keys.safe_id(task_id):
            error = {"kind": "validation", "status_code": None, "message": str(exc)}
            if default().store.create_rejected(task_id, error):
                # Final now, here: the hooks hear of it once (a redelivery finds the record).
                default().outcome_hooks.announce_refused(task_id)
        return None
    drainer().drain()
    return send_id


@app.task(name="mailqueue.deliver", ignore_result=True)
def deliver() -> dict[str, int]:
    """Drain the outbox: the wake-up a producer or a retry schedules."""
    report = drainer().drain()
    return {
        "calls": report.calls,
        "sent": report.sent,
        "failed": report.failed,
        "retried": report.retried,
        "skipped": report.skipped,
    }


def _single_message(args: Any, kwargs: Any) -> dict[str, Any]:
    args = tuple(args or ())
    kwargs = dict(kwargs or {})
    if len(args) == 1 and not kwargs:
        message = args[0]
    elif not args and set(kwargs) == {"message"}:
        message = kwargs["message"]
    else:
        raise ValidationError("send_email takes exactly one message dict", field="message")
    if not isinstance(message, dict):
        raise ValidationError("the message must be a dict", field="message")
    return message
