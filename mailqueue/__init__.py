"""mailqueue: queued email delivery through Mailtrap's Email API, on Celery and Redis.

import mailqueue
send_id = mailqueue.send_email.delay({"from_email": "...", "to": ["..."], ...}).id
mailqueue.get_status(send_id)

Every name below is imported on first use (PEP 562), so importing the pure
core (``from mailqueue import build_payload, Settings``) loads no Celery,
Redis or HTTP library; ``mailqueue.app`` (``celery -A mailqueue``) loads the
worker's tasks with the app, and in a Django project the Django integration,
which sends Anymail's ``post_send`` from the worker.
"""

from __future__ import annotations

import importlib as _importlib
import importlib.util as _importlib_util
import os as _os
import sys as _sys
import typing as _typing

from mailqueue.version import __version__

if _typing.TYPE_CHECKING:
    from celery import Celery as _Celery

    from mailqueue.api import (
        cancel,
        cancel_campaign,
        configure,
        enqueue,
        enqueue_many,
        get_campaign,
        get_status,
        get_suppression,
        pause_campaign,
        reschedule,
        resume_campaign,
        suppress,
        unsuppress,
    )
    from mailqueue.client import Client
    from mailqueue.core.payload import ApiCall, build_payload
    from mailqueue.errors import (
        BrokerUnavailable,
        ConfigurationError,
        DeliveryError,
        MailqueueError,
        PermanentDeliveryError,
        RateLimited,
        ReplicationTimeout,
        TransientDeliveryError,
        UnsupportedFeature,
        ValidationError,
    )
    from mailqueue.records import MessageDict, StatusRecord
    from mailqueue.settings import Settings
    from mailqueue.tasks import send_email

    app: _Celery
    celery: _Celery

# Where each public name lives: the module to import on first use.
_EXPORTS: dict[str, str] = {
    "ApiCall": "mailqueue.core.payload",
    "build_payload": "mailqueue.core.payload",
    "BrokerUnavailable": "mailqueue.errors",
    "ConfigurationError": "mailqueue.errors",
    "DeliveryError": "mailqueue.errors",
    "MailqueueError": "mailqueue.errors",
    "PermanentDeliveryError": "mailqueue.errors",
    "RateLimited": "mailqueue.errors",
    "ReplicationTimeout": "mailqueue.errors",
    "TransientDeliveryError": "mailqueue.errors",
    "UnsupportedFeature": "mailqueue.errors",
    "ValidationError": "mailqueue.errors",
    "MessageDict": "mailqueue.records",
    "StatusRecord": "mailqueue.records",
    "Settings": "mailqueue.settings",
    "Client": "mailqueue.client",
    "send_email": "mailqueue.tasks",
    # The default client's functions: mailqueue.enqueue, mailqueue.get_status, ...
    **dict.fromkeys(
        [
            "cancel",
            "cancel_campaign",
            "configure",
            "enqueue",
            "enqueue_many",
            "get_campaign",
            "get_status",
            "get_suppression",
            "pause_campaign",
            "reschedule",
            "resume_campaign",
            "suppress",
            "unsuppress",
        ],
        "mailqueue.api",
    ),
}
# The Celery app, under the two names ``celery -A mailqueue`` looks for.
_APP_NAMES = ("app", "celery")

__all__ = [
    "ApiCall",
    "BrokerUnavailable",
    "Client",
    "ConfigurationError",
    "DeliveryError",
    "MailqueueError",
    "MessageDict",
    "PermanentDeliveryError",
    "RateLimited",
    "ReplicationTimeout",
    "Settings",
    "StatusRecord",
    "TransientDeliveryError",
    "UnsupportedFeature",
    "ValidationError",
    "__version__",
    "app",
    "build_payload",
    "cancel",
    "cancel_campaign",
    "celery",
    "configure",
    "enqueue",
    "enqueue_many",
    "get_campaign",
    "get_status",
    "get_suppression",
    "pause_campaign",
    "reschedule",
    "resume_campaign",
    "send_email",
    "suppress",
    "unsuppress",
]


def __getattr__(name: str) -> _typing.Any:
    if name in _EXPORTS:
        value = getattr(_importlib.import_module(_EXPORTS[name]), name)
    elif name in _APP_NAMES:
        # The app with its tasks registered, as a worker and ``app.tasks`` expect.
        _importlib.import_module("mailqueue.tasks")
        if _django_project():
            _importlib.import_module("mailqueue.django")
        value = _importlib.import_module("mailqueue.celery_app").app
    else:
        try:
            # A submodule named as an attribute (``mailqueue.tasks``, ``mailqueue.api``).
            return _importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def _django_project() -> bool:
    """Whether this process runs a Django project: set up, or named as Celery's fix-up finds it."""
    conf = _sys.modules.get("django.conf")
    if conf is not None and conf.settings.configured:
        return True
    named = bool((_os.environ.get("DJANGO_SETTINGS_MODULE") or "").strip())
    return named and _importlib_util.find_spec("django") is not None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
