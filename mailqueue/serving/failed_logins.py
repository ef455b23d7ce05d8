"""Failed logins on the servers: counted, logged sparingly, and throttled per client.

Every request refused for its credentials is counted in
``mailqueue_failed_logins_total{server}``. The log gets one line when a
burst starts and then at most one line per ``log_every`` seconds with the
count since the last line, so a guessing run cannot flood it; no line
carries what was tried, only the client's address. A client with ``limit``
failures within ``window`` seconds is refused (429) without its credentials
being checked until the window has passed: guessing is slowed to ``limit``
tries per window, and a burst costs no HMAC per request.

Behind a proxy every request comes from the proxy's address, so the proxy's
own clients share one budget; a legitimate sender then waits out the
window like everyone else (Mailtrap retries a webhook for hours).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from mailqueue.metrics import instruments as metrics

__all__ = ["FailedLogins"]

logger = logging.getLogger(__name__)

# Clients remembered at most: a scan from many addresses must not grow memory.
MAX_CLIENTS = 10_000


class FailedLogins:
    """Failed credentials of one server (``"webhook"`` or ``"dashboard"``), per client."""

    def __init__(
        self,
        server: str,
        *,
        limit: int = 20,
        window: float = 60.0,
        log_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.server = server
        self.limit = limit
        self.window = window
        self.log_every = log_every
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, deque[float]] = {}
        self._unlogged = 0
        self._unlogged_clients: set[str] = set()
        self._logged_at: float | None = None

    def retry_after(self, client: str) -> float | None:
        """Seconds ``client`` must wait before its credentials are checked again, or None."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                return None
            self._forget_old(times, now)
            if len(times) < self.limit:
                return None
            return max(times[0] + self.window - now, 0.0) or None

    def failed(self, client: str) -> None:
        """Note one refused request of ``client``: counted, perhaps logged, towards throttling."""
        metrics.count_failed_login(self.server)
        now = self._clock()
        with self._lock:
            times = self._failures.get(client)
            if times is None:
                if len(self._failures) >= MAX_CLIENTS:
                    self._failures.pop(next(iter(self._failures)))
                times = self._failures[client] = deque()
            times.append(now)
            self._forget_old(times, now)
            while len(times) > self.limit:
                times.popleft()
            self._unlogged += 1
            self._unlogged_clients.add(client)
            if self._logged_at is not None and now - self._logged_at < self.log_every:
                return
            count, clients = self._unlogged, sorted(self._unlogged_clients)
            self._unlogged, self._unlogged_clients = 0, set()
            self._logged_at = now
        shown = ", ".join(clients[:5]) + (
            f" and {len(clients) - 5} more" if len(clients) > 5 else ""
        )
        logger.warning(
            "%s: %d request(s) refused for their credentials since the last report, from %s",
            self.server,
            count,
            shown,
        )

    def _forget_old(self, times: deque[float], now: float) -> None:
        while times and now - times[0] >= self.window:
            times.popleft()
