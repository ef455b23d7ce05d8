"""The Celery app: ``celery -A mailqueue worker`` starts a worker.

Its configuration is read when it is first needed (the worker starting, or a
first publish), never at import: mailqueue's settings (the environment, or the
Django project's settings under ``DJANGO_SETTINGS_MODULE``), then
a ``celeryconfig`` module when one is importable (Celery's own convention).
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterator, Mapping
from typing import Any, cast

import click
from celery import Celery

from mailqueue.errors import ConfigurationError, MailqueueError
from mailqueue.settings import Settings
from mailqueue.store.connection import SENTINEL_TRANSPORT, celery_broker, check_master_name

__all__ = ["app", "apply_settings", "celery_config", "ours", "refuse_in_celery_command"]


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery settings mailqueue needs, each chosen for an email queue."""
    broker = celery_broker(settings.broker_url)
    return {
        "broker_url": broker["broker_url"],
        "broker_transport": broker["broker_transport"],
        # JSON only: a pickled message from the broker could run code.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # Statuses live in mailqueue's own records; Celery results would only
        # duplicate them (and grow Redis).
        "task_ignore_result": True,
        "result_backend": None,
        "task_default_queue": settings.queue,
        # A drain acknowledges its Celery message only when it has finished, so
        # a worker that dies mid-drain has the message redelivered...
        "task_acks_late": True,
        # ...also when only a pool child dies (OOM, SIGKILL): re-queue at once
        # instead of acknowledging. Safe here: a drain is idempotent (every send
        # is claimed before its call), so the documented loop risk is a repeat
        # of a no-op, not of a send.
        "task_reject_on_worker_lost": True,
        # Drains are long-ish and wait on the fleet rate limiter: a process
        # should not hoard wake-ups that another idle process could run.
        "worker_prefetch_multiplier": 1,
        # Redelivery of an unacknowledged wake-up after a lost worker. Sends do
        # not depend on it (abandoned envelopes are reclaimed from the outbox
        # stream after reclaim_idle), and no mailqueue countdown exceeds 60 s,
        # so a short timeout cannot redeliver a scheduled retry early.
        "broker_transport_options": {
            **broker["broker_transport_options"],
            "visibility_timeout": settings.visibility_timeout,
            "socket_connect_timeout": 3,
            "socket_timeout": 10,
        },
        "broker_connection_retry_on_startup": True,
        # A drain goes on when the broker connection drops (a Sentinel failover
        # cuts it): its calls in flight still record Mailtrap's answers once a
        # master is back. Cancelling it would make them forget what Mailtrap
        # accepted; its wake-up, redelivered, only starts a drain with nothing to do.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # A producer facing a down broker gets an error quickly, not a hang.
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        # A drain stops taking new work after DRAIN_BUDGET seconds; the limits
        # only catch a drain stuck past every HTTP and Redis timeout.
        "task_soft_time_limit": 240,
        "task_time_limit": 300,
        # Flower and `celery events` see tasks.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
    }


def apply_settings(settings: Settings) -> None:
    """(Re)configure the app for ``settings`` (an explicit call wins over ``celeryconfig``).

    Before the configuration was first read, the environment is then never
    read for it: explicit settings replace it.
    """
    if not _process_config.read:
        _process_config.explicit = settings
        return
    app.conf.update(celery_config(settings))
    # The app keeps the pools it took for the broker then in force: without
    # forgetting them (as Celery itself does after a fork), wake-ups would
    # still go to the previous broker. They are kombu's pools, shared by URL,
    # so they are left open for whoever else uses that broker.
    state = vars(app)
    state["_pool"] = None
    if state.get("amqp") is not None:
        state["amqp"]._producer_pool = None


def _celeryconfig_overrides() -> dict[str, Any]:
    """Lower-case names from an importable ``celeryconfig`` module, Celery's convention."""
    try:
        module = importlib.import_module("celeryconfig")
    except ImportError:
        return {}
    return {
        name: value
        for name, value in vars(module).items()
        if name.islower()
        and not name.startswith("_")
        and not callable(value)
        and not isinstance(value, types.ModuleType)
    }


class _ProcessConfig(Mapping[str, Any]):
    """The process's Celery configuration, computed when Celery first reads it.

    Celery's ``config_from_object`` keeps the object and reads it only when
    the configuration is first used, so importing mailqueue reads no
    environment variable and imports no ``celeryconfig``.
    """

    def __init__(self) -> None:
        self._values: dict[str, Any] | None = None
        # Settings given to ``configure`` before the configuration was read.
        self.explicit: Settings | None = None

    @property
    def read(self) -> bool:
        """Whether Celery has read the configuration already."""
        return self._values is not None

    def _loaded(self) -> dict[str, Any]:
        if self._values is None:
            if self.explicit is not None:
                self._values = {**_celeryconfig_overrides(), **celery_config(self.explicit)}
                return self._values
            try:
                settings = Settings.from_process()
                # A broker URL Celery cannot use (a typo) fails here in one line,
                # not in kombu's transport lookup with a traceback.
                _ = settings.status_redis_url
            except ConfigurationError as exc:
                refuse_in_celery_command(exc)
                raise
            values = {**celery_config(settings), **_celeryconfig_overrides()}
            if values.get("broker_transport") == SENTINEL_TRANSPORT:
                try:
                    check_master_name(values.get("broker_transport_options"))
                except ConfigurationError as exc:
                    refuse_in_celery_command(exc)
                    raise
            self._values = values
        return self._values

    def __getitem__(self, name: str) -> Any:
        return self._loaded()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


_process_config = _ProcessConfig()
app = Celery("mailqueue", include=["mailqueue.tasks", "mailqueue.tasks.worker_setup"])
app.config_from_object(_process_config)


def ours(sender: Any = None) -> bool:
    """Whether a worker signal concerns mailqueue's own app, not another app in the process.

    Celery's worker signals go to every receiver in the process: a project
    whose own worker imports mailqueue (to publish sends) must not have
    mailqueue's worker set-up run in it. ``sender`` is what the signal was
    sent by (the worker, its consumer); without an app of its own, as for
    ``worker_process_init``, the app the process was started for decides.
    """
    from celery import current_app

    owner = getattr(sender, "app", None)
    if owner is None:
        owner = cast(Any, current_app)._get_current_object()
    return owner is app


def refuse_in_celery_command(exc: MailqueueError) -> None:
    """End Celery's own command line (``celery -A mailqueue worker``) with one line for ``exc``.

    Celery reads its configuration while it parses the worker's options, long
    before ``worker_init``; a malformed setting found then would otherwise end
    in a traceback. Anywhere else (a web process publishing) this does nothing
    and the caller raises as usual.
    """
    context = click.get_current_context(silent=True)
    if context is None:
        return
    from celery.bin.celery import celery as celery_command

    if context.find_root().command is celery_command:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1)
