"""mailqueue: queued email delivery through Mailtrap's Email API, on Celery and Redis.

import mailqueue
send_id = mailqueue.send_email.delay({"from_email": "...", "to": ["..."], ...}).id
mailqueue.get_status(send_id)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .celery_app import app
from .client import (
    Client,
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
from .errors import (
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
from .payload import ApiCall, build_payload
from .records import MessageDict, StatusRecord
from .settings import Settings
from .tasks import send_email

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
