"""Mailtrap tracking webhooks: verify, parse, normalize, and record events.

``create_app()`` gives the WSGI application for ``POST /mailtrap/tracking/``;
``mailqueue.django.urls`` mounts the same logic in a Django project.
"""

from __future__ import annotations

from mailqueue.core.events import EVENT_TYPES, TrackingEvent, normalize_event
from mailqueue.store.events import STATUS_RANK, ApplyResult, EventStore
from mailqueue.webhooks.app import TRACKING_PATH, TrackingApp, create_app, serve
from mailqueue.webhooks.handler import Response, TrackingHandler

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
