"""Several API calls in flight per worker process, bounded, one always kept for transactional mail.

A call spends most of its time waiting: for Mailtrap's answer (100 ms and
more), or for a slot of the fleet rate limiter. One call at a time per
process leaves the rate limit unused, so a drain hands each call to a small
thread pool and goes on reading. Bulk calls may occupy every thread but one:
a bulk call waiting for the limiter never keeps a transactional call from
starting. Each call keeps its own claim, lease and outcome pipeline, exactly
as when calls ran one after another.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from mailqueue.core.routing import Lane

__all__ = ["InFlight"]

log = logging.getLogger("mailqueue.inflight")


class InFlight:
    """At most ``size`` calls at once, at most ``size - 1`` of them bulk (when ``size`` > 1)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._limits: dict[Lane, int] = {"transactional": size, "bulk": max(size - 1, 1)}
        self._running: dict[Lane, int] = {"transactional": 0, "bulk": 0}
        self._changed = threading.Condition()
        self._failure: BaseException | None = None
        self._pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix="mailqueue-call")

    def can_start(self, lane: Lane) -> bool:
        """True when a call of ``lane`` may start now."""
        with self._changed:
            return self._free(lane)

    def start(self, lane: Lane, call: Callable[[], None]) -> None:
        """Run ``call`` on a pool thread, waiting first until ``lane`` has room."""
        with self._changed:
            while not self._free(lane):
                self._changed.wait()
            self._running[lane] += 1
        self._pool.submit(self._run, lane, call)

    def wait(self, timeout: float) -> None:
        """Return when a call ends, or after ``timeout`` seconds."""
        with self._changed:
            self._changed.wait(timeout)

    @property
    def running(self) -> int:
        with self._changed:
            return sum(self._running.values())

    def join(self) -> None:
        """Wait until no call is running, then re-raise the first error a call raised."""
        with self._changed:
            while sum(self._running.values()):
                self._changed.wait()
            failure, self._failure = self._failure, None
        if failure is not None:
            raise failure

    def failed(self) -> bool:
        """True once a call raised; the drain stops taking work and ``join`` re-raises it."""
        with self._changed:
            return self._failure is not None

    def close(self) -> None:
        """Stop the threads (after the calls running now)."""
        self._pool.shutdown(wait=True)

    def _free(self, lane: Lane) -> bool:
        return sum(self._running.values()) < self.size and self._running[lane] < self._limits[lane]

    def _run(self, lane: Lane, call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:  # handed to the drain, which re-raises it in its own thread
            log.debug("call failed: %s", type(exc).__name__)
            with self._changed:
                if self._failure is None:
                    self._failure = exc
        finally:
            with self._changed:
                self._running[lane] -= 1
                self._changed.notify_all()
