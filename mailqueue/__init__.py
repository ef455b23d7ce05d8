"""mailqueue: queued email delivery through Mailtrap's Email API, on Celery and Redis.

import mailqueue
send_id = mailqueue.send_email.delay({"from_email": "...", "to": ["..."], ...}).id
mailqueue.get_status(send_id)
"""

from __future__ import annotations

from mailqueue import api
from mailqueue.api import *  # noqa: F403  (the names in api.__all__, re-exported below)
from mailqueue.celery_app import app
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
from mailqueue.version import __version__

celery = app

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
    "celery",
    "send_email",
]
# The default client's functions: mailqueue.enqueue, mailqueue.get_status, ...
__all__ += api.__all__
