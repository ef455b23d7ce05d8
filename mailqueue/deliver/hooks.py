"""Tell the application each send's final outcome, once, from the process that made it final.

The status store's write that ends a send's last part says so
(``status.became_final``); only that writer calls ``OutcomeHooks.announce``,
so each final outcome is told once, whether the last part ended on a first
call, a retry, a look-up in Email Logs or a worker taking over from a dead
one. A send requeued from the dead letters reaches a new final outcome and is
told again.

``OutcomeHooks`` holds the receivers; ``Client`` builds it. From the settings
(``receivers_from_settings``), each optional:

- ``on_outcome``: the dotted path of a callable, called as
  ``hook(send_id, record)`` with the status record ``get_status`` returns;
- ``on_outcome_task``: the name of a Celery task, sent with
  ``(send_id, record)`` to the queue ``on_outcome_queue``.

A face adds its own for the whole process with
``mailqueue.client.add_outcome_receiver``: the Django integration adds
Anymail's ``post_send`` (``mailqueue.django.signals``).

A receiver that raises is logged with the send id and the error's type, never
the message or the token, and delivery goes on.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mailqueue.errors import ConfigurationError
from mailqueue.records import StatusRecord
from mailqueue.store.status import Recorded

if TYPE_CHECKING:
    from mailqueue.core.envelope import Envelope
    from mailqueue.settings import Settings
    from mailqueue.store.status import StatusStore
    from mailqueue.store.stores import SendTask

__all__ = [
    "Endings",
    "OutcomeHooks",
    "OutcomeReceiver",
    "load_callable",
    "receivers_from_settings",
]

log = logging.getLogger("mailqueue.outcome_hooks")

OutcomeHook = Callable[[str, StatusRecord], object]


def _always() -> bool:
    return True


@dataclass(frozen=True)
class OutcomeReceiver:
    """One receiver of final outcomes.

    ``tell(send_id, record, envelope)`` is called once per final outcome;
    ``envelope`` is the part whose write ended the send, or None for a send
    refused in the worker before any call. ``name`` is how an error's log
    line calls it. ``listening`` is asked before each announcement: without a
    receiver listening, no record is read. ``calls_only`` receivers are not
    told of a refused send (there is no call to tell of).
    """

    name: str
    tell: Callable[[str, StatusRecord, Envelope | None], object]
    listening: Callable[[], bool] = _always
    calls_only: bool = False


def load_callable(path: str, setting: str) -> OutcomeHook:
    """The callable named by ``path`` (``package.module.name`` or ``package.module:name``)."""
    module_name, sep, name = path.partition(":")
    if not sep:
        module_name, _, name = path.rpartition(".")
    if not module_name or not name:
        raise ConfigurationError(
            f"{setting} must name a callable as 'package.module.name', not {path!r}",
            setting=setting,
        )
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"{setting} names {path!r}, which cannot be imported: {exc}", setting=setting
        ) from None
    if not callable(found):
        raise ConfigurationError(
            f"{setting} names {path!r}, which is not callable", setting=setting
        )
    return found  # type: ignore[no-any-return]


def receivers_from_settings(settings: Settings, send_task: SendTask) -> list[OutcomeReceiver]:
    """The receivers ``on_outcome`` and ``on_outcome_task`` name; ConfigurationError for a bad path.

    ``send_task`` sends a Celery task by name (the client's app).
    """
    receivers = []
    if settings.on_outcome:
        hook = load_callable(settings.on_outcome, "on_outcome")
        receivers.append(
            OutcomeReceiver("on_outcome", lambda send_id, record, _: hook(send_id, record))
        )
    if settings.on_outcome_task:
        task, queue = settings.on_outcome_task, settings.on_outcome_queue

        def send(send_id: str, record: StatusRecord, _: Envelope | None) -> None:
            send_task(task, args=[send_id, record], queue=queue)

        receivers.append(OutcomeReceiver("on_outcome_task", send))
    return receivers


class Endings:
    """The part outcomes queued on one pipeline, to learn which made their send final."""

    def __init__(self) -> None:
        self._queued: list[tuple[Recorded, Envelope]] = []

    def add(self, recorded: Recorded, envelope: Envelope) -> None:
        self._queued.append((recorded, envelope))

    def finished(self, results: Sequence[Any]) -> list[Envelope]:
        """The envelopes whose write made their send final, from the pipeline's ``results``."""
        return [envelope for recorded, envelope in self._queued if recorded.became_final(results)]


class OutcomeHooks:
    """The receivers of final outcomes of one client, and the status store they are read from.

    ``receivers`` are the client's own (its settings'); ``process_receivers``
    are those a face added for the whole process, read at each announcement
    so that one added after this was built is told too.
    """

    status: StatusStore
    receivers: Sequence[OutcomeReceiver]
    process_receivers: Sequence[OutcomeReceiver]

    def __init__(
        self,
        *,
        status: StatusStore,
        receivers: Sequence[OutcomeReceiver] = (),
        process_receivers: Sequence[OutcomeReceiver] = (),
    ) -> None:
        self.status = status
        self.receivers = receivers
        self.process_receivers = process_receivers

    @property
    def wanted(self) -> bool:
        """Whether any receiver listens: without one, nothing is read to tell it."""
        return bool(self._listening())

    def announce(self, finished: Sequence[Envelope]) -> None:
        """Tell every receiver the final outcome of each send whose last part ``finished`` holds."""
        if not finished:
            return
        listening = self._listening()
        if not listening:
            return
        for envelope in finished:
            record = self._record(envelope.send_id)
            if record is not None:
                for receiver in listening:
                    self._guarded(receiver, envelope.send_id, record, envelope)

    def announce_refused(self, send_id: str) -> None:
        """Tell the receivers of a send refused in the worker.

        A message sent by task name that fails validation there ends ``failed``
        with no call: receivers of calls only (Anymail's ``post_send``, which
        rebuilds the message from the call) are not told.
        """
        listening = [receiver for receiver in self._listening() if not receiver.calls_only]
        if listening:
            record = self._record(send_id)
            if record is not None:
                for receiver in listening:
                    self._guarded(receiver, send_id, record, None)

    def _listening(self) -> list[OutcomeReceiver]:
        # Django's receivers connect when their app loads: ask each time, it is cheap.
        return [r for r in (*self.receivers, *self.process_receivers) if r.listening()]

    def _record(self, send_id: str) -> StatusRecord | None:
        try:
            return self.status.get(send_id)
        except Exception as exc:  # the outcome is recorded; only the telling is lost
            log.error(
                "send %s: the outcome hooks cannot read its record (%s)",
                send_id,
                type(exc).__name__,
            )
            return None

    @staticmethod
    def _guarded(
        receiver: OutcomeReceiver, send_id: str, record: StatusRecord, envelope: Envelope | None
    ) -> None:
        try:
            receiver.tell(send_id, record, envelope)
        except Exception as exc:
            # The error's type only: its text may quote the message.
            log.error("send %s: the %s hook raised %s", send_id, receiver.name, type(exc).__name__)
