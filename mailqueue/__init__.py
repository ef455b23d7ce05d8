"""mailqueue: queued email delivery through Mailtrap's Email API."""

from __future__ import annotations

from .errors import (
    BrokerUnavailable,
    ConfigurationError,
    DeliveryError,
    MailqueueError,
    PermanentDeliveryError,
    RateLimited,
    TransientDeliveryError,
    UnsupportedFeature,
    ValidationError,
)
from .settings import Settings

__version__ = "0.1.0"

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "DeliveryError",
    "MailqueueError",
    "PermanentDeliveryError",
    "RateLimited",
    "Settings",
    "TransientDeliveryError",
    "UnsupportedFeature",
    "ValidationError",
    "__version__",
]
