"""Mailtrap tracking webhooks: verify, parse, normalize, and record events.

``create_app()`` gives the WSGI application for ``POST /mailtrap/tracking/``;
``mailqueue.django.urls`` mounts the same logic in a Django project.
"""

from __future__ import annotations

from .app import TRACKING_PATH, TrackingApp, create_app, serve
from .events import EVENT_TYPES, TrackingEvent, normalize_event
from .handler import Response, TrackingHandler
from .store import STATUS_RANK, ApplyResult, EventStore

__all__ = [
    "EVENT_TYPES",
    "STATUS_RANK",
    "TRACKING_PATH",
    "ApplyResult",
    "EventStore",
    "Response",
    "TrackingApp",
    "TrackingEvent",
    "TrackingHandler",
    "create_app",
    "normalize_event",
    "serve",
]
