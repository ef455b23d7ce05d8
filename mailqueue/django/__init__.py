"""Django integration: the queued ``EmailBackend`` and the tracking webhook view (``urls``)."""

from __future__ import annotations

from .backend import EmailBackend

__all__ = ["EmailBackend"]
