"""The demo's one error."""

from __future__ import annotations

from mailqueue.errors import MailqueueError

__all__ = ["DemoError"]


class DemoError(MailqueueError):
    """A step of the demo did not do what it should."""
