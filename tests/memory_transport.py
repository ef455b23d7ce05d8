"""An in-memory stand-in for ``Transport``: the drain loop's branches without HTTP.

As httpx's ``MockTransport``: a handler decides each call's answer. It gets
the ``ApiCall`` and returns one ``RequestResult`` per request, or raises a
``DeliveryError``; every call is recorded.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import RequestResult
from mailqueue.errors import DeliveryError
from mailqueue.mailtrap.transport import Withdrawn

Handler = Callable[[ApiCall], list[RequestResult]]


def accept_all(call: ApiCall) -> list[RequestResult]:
    """Mailtrap accepting every request of ``call``, one message id per recipient."""
    return [
        RequestResult(message_ids={recipient: uuid.uuid4().hex for recipient in request})
        for request in call.recipients
    ]


class MemoryTransport:
    """What the drain needs of a transport: ``send`` and ``close``."""

    def __init__(self, handler: Handler = accept_all) -> None:
        self.handler = handler
        self.calls: list[ApiCall] = []
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
        pass

    def paths(self) -> list[str]:
        return [call.path for call in self.calls]
