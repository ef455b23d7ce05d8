"""An in-memory transport: drive a drainer through its branches without HTTP.

As httpx's ``MockTransport``, a handler decides each call's answer: it gets
the ``ApiCall`` and returns one ``RequestResult`` per request, or raises a
``DeliveryError`` (``TransientDeliveryError`` for a 503 or a reset,
``PermanentDeliveryError`` for a 400, ``RateLimited`` for a 429). Every call
made is recorded in ``calls``. Hand it to a drainer over a real Redis::

    from mailqueue.deliver.drain import Drainer
    from mailqueue.testing import MemoryTransport

    transport = MemoryTransport()
    Drainer(client.drain_parts, transport).drain(budget=5)
    assert transport.paths() == ["send"]

Each call is tried once: the in-process retries of the HTTP transport are
its own business, and the drain's retries (later, with backoff) still happen.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.errors import DeliveryError
from mailqueue.mailtrap.transport import Withdrawn

__all__ = ["Handler", "MemoryTransport", "accept_all"]

# Decides one call's answer: a result per request, or a raised DeliveryError.
Handler = Callable[[ApiCall], list[RequestResult]]


def accept_all(call: ApiCall) -> list[RequestResult]:
    """Mailtrap accepting every request of ``call``, one message id per recipient."""
    return [
        RequestResult(message_ids={recipient: uuid.uuid4().hex for recipient in request})
        for request in call.recipients
    ]


class MemoryTransport:
    """A ``Sender`` whose answers come from ``handler``; safe to share between threads."""

    def __init__(self, handler: Handler = accept_all) -> None:
        self.handler = handler
        self.calls: list[ApiCall] = []
        self.closed = False
        self._lock = threading.Lock()

    def send(
        self,
        call: ApiCall,
        *,
        deadline: float | None = None,
        on_error: Callable[[DeliveryError], None] | None = None,
        proceed: Callable[[], bool] | None = None,
        give_up: Callable[[DeliveryError], bool] | None = None,
    ) -> list[RequestResult]:
        """Record ``call`` and answer it with the handler's results, or its error."""
        # One attempt per call: no retry for give_up to stop.
        if proceed is not None and not proceed():
            raise Withdrawn()
        with self._lock:
            self.calls.append(call)
        try:
            return self.handler(call)
        except DeliveryError as exc:
            if on_error is not None:
                on_error(exc)
            raise

    def close(self) -> None:
        self.closed = True

    def paths(self) -> list[str]:
        """The API path of every call made, in order (``send``, ``batch``, ...)."""
        with self._lock:
            return [call.path for call in self.calls]
