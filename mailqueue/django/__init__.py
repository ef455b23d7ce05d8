"""Django integration: the queued ``EmailBackend`` and the tracking webhook view (``urls``)."""

from __future__ import annotations

from mailqueue.django.backend import EmailBackend

__all__ = ["EmailBackend"]
