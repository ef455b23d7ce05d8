"""The process-wide context: the settings in force and the Redis clients built from them.

Everything is built lazily on first use and rebuilt by ``configure``, so that
importing mailqueue opens no connection.
"""

from __future__ import annotations

import threading
from functools import cached_property

import redis

from .connection import connect
from .outbox import Outbox
from .settings import Settings
from .status import StatusStore

__all__ = ["Runtime", "configure", "current", "reset"]


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings.status_redis_url)

    @cached_property
    def store(self) -> StatusStore:
        return StatusStore(self.redis, self.settings)

    @cached_property
    def outbox(self) -> Outbox:
        return Outbox(
            self.redis,
            reclaim_idle=self.settings.reclaim_idle,
            ttl=max(int(self.settings.status_ttl), 1),
        )

    def close(self) -> None:
        if "redis" in self.__dict__:
            self.redis.close()


_lock = threading.Lock()
_current: Runtime | None = None


def current() -> Runtime:
    """The runtime for the settings in force (from the environment unless configured)."""
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                _current = Runtime(Settings.from_env())
    return _current


def reset() -> None:
    """Forget this process's connections (after a fork), keeping the settings in force."""
    global _current
    with _lock:
        if _current is not None:
            _current = Runtime(_current.settings)


def configure(settings: Settings) -> Runtime:
    """Put ``settings`` in force for this process (producer and Celery app alike)."""
    global _current
    with _lock:
        if _current is not None:
            _current.close()
        _current = Runtime(settings)
    from .celery_app import apply_settings

    apply_settings(settings)
    return _current
