"""Tell the application each send's final outcome, once, from the process that made it final.

The status store's write that ends a send's last part says so
(``status.became_final``); only that writer calls ``OutcomeHooks.announce``,
so each final outcome is told once, whether the last part ended on a first
call, a retry, a look-up in Email Logs or a worker taking over from a dead
one. A send requeued from the dead letters reaches a new final outcome and is
told again.

Receivers, each optional:

- ``on_outcome``: the dotted path of a callable, called as
  ``hook(send_id, record)`` with the status record ``get_status`` returns;
- ``on_outcome_task``: the name of a Celery task, sent with
  ``(send_id, record)`` to the queue ``on_outcome_queue``;
- Anymail's ``post_send``, in a worker running in a Django project with
  django-anymail installed (``mailqueue.django.signals``).

A receiver that raises is logged with the send id and the error's type, never
the message or the token, and delivery goes on.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from mailqueue.errors import ConfigurationError
from mailqueue.records import StatusRecord
from mailqueue.store.status import Recorded

if TYPE_CHECKING:
    from mailqueue.core.envelope import Envelope
    from mailqueue.store.stores import Stores

__all__ = ["Endings", "OutcomeHooks", "load_callable"]

log = logging.getLogger("mailqueue.outcome_hooks")

OutcomeHook = Callable[[str, StatusRecord], object]


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
    """The receivers of final outcomes configured for one process."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        settings = stores.settings
        self._hook = (
            load_callable(settings.on_outcome, "on_outcome") if settings.on_outcome else None
        )
        self._task = settings.on_outcome_task
        self._queue = settings.on_outcome_queue

    @property
    def wanted(self) -> bool:
        """Whether any receiver listens: without one, nothing is read to tell it."""
        return bool(self._hook or self._task or _post_send_sender())

    def announce(self, finished: Sequence[Envelope]) -> None:
        """Tell every receiver the final outcome of each send whose last part ``finished`` holds."""
        if not finished:
            return
        # Django receivers connect when their app loads: ask each time, it is cheap.
        post_send = _post_send_sender()
        if not (self._hook or self._task or post_send):
            return
        for envelope in finished:
            record = self._record(envelope.send_id)
            if record is None:
                continue
            self._tell(envelope.send_id, record)
            if post_send is not None:
                self._guarded("post_send", envelope.send_id, post_send, envelope, record)

    def announce_refused(self, send_id: str) -> None:
        """Tell ``on_outcome`` and ``on_outcome_task`` of a send refused in the worker.

        A message sent by task name that fails validation there ends ``failed``
        with no call: there is no queued call to rebuild a message from, so
        ``post_send`` is not sent.
        """
        if self._hook or self._task:
            record = self._record(send_id)
            if record is not None:
                self._tell(send_id, record)

    def _record(self, send_id: str) -> StatusRecord | None:
        try:
            return self.stores.store.get(send_id)
        except Exception as exc:  # the outcome is recorded; only the telling is lost
            log.error(
                "send %s: the outcome hooks cannot read its record (%s)",
                send_id,
                type(exc).__name__,
            )
            return None

    def _tell(self, send_id: str, record: StatusRecord) -> None:
        if self._hook is not None:
            self._guarded("on_outcome", send_id, self._hook, send_id, record)
        if self._task:
            self._guarded("on_outcome_task", send_id, self._send_task, send_id, record)

    def _send_task(self, send_id: str, record: StatusRecord) -> None:
        assert self._task is not None  # only called when set
        self.stores.send_task(self._task, args=[send_id, record], queue=self._queue)

    @staticmethod
    def _guarded(what: str, send_id: str, call: Callable[..., object], *args: Any) -> None:
        try:
            call(*args)
        except Exception as exc:
            # The error's type only: its text may quote the message.
            log.error("send %s: the %s hook raised %s", send_id, what, type(exc).__name__)


def _post_send_sender() -> Callable[[Envelope, StatusRecord], None] | None:
    """Anymail's ``post_send``, when this process runs in a Django project with receivers."""
    try:
        from django.conf import settings as django_settings
    except ImportError:
        return None
    if not django_settings.configured:
        return None
    from mailqueue.django.signals import post_send_available, send_post_send

    return send_post_send if post_send_available() else None
