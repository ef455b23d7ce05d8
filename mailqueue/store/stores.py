"""The one way to build the stores of one configuration, each on first use over one Redis client.

``Client`` builds one ``Stores`` and takes from it the parts it hands each
service (a status store, an outbox, a limiter factory, ...): no service is
handed the bundle, and none imports the client. Tests and the webhook app
build stores over an open connection with ``Stores.over``. Nothing is built
until first use, so creating one does no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from typing import Any, NoReturn, TypeVar

import redis

from mailqueue.core.routing import Lane, Route
from mailqueue.settings import Settings
from mailqueue.store.base import RedisStore
from mailqueue.store.batch import Batches, batches_over
from mailqueue.store.campaigns import CampaignStore
from mailqueue.store.caps import CapLimiter, Caps
from mailqueue.store.events import EventStore
from mailqueue.store.fleet_limits import LimitNotices
from mailqueue.store.keys import Keys
from mailqueue.store.message_index import MessageIndex
from mailqueue.store.outbox import Outbox
from mailqueue.store.pacing import Pacer
from mailqueue.store.ratelimit import FleetRateLimiter
from mailqueue.store.status import StatusStore
from mailqueue.store.steering import SteeringStore
from mailqueue.store.suppressions import SuppressionList
from mailqueue.store.waker import Publish, Waker

__all__ = ["SendTask", "Stores"]

#: Sends a Celery task by name: ``send_task(name, args=[...], queue=...)``.
SendTask = Callable[..., object]

_S = TypeVar("_S", bound=RedisStore)


class Stores:
    """Settings, Redis and the stores over it, each built one way, for the client to hand out.

    ``redis`` opens the connection when first asked; ``publish`` is handed
    each wake-up's options (the waker's way out); it comes from the client,
    which owns the Celery side.
    """

    def __init__(
        self, settings: Settings, *, redis: Callable[[], redis.Redis], publish: Publish
    ) -> None:
        self.settings = settings
        self._connect = redis
        self._publish = publish

    @classmethod
    def over(cls, client: redis.Redis, settings: Settings) -> Stores:
        """Stores over an open ``client`` with no Celery side (the webhook app, tests).

        Their waker refuses to publish: only a ``Client`` has a broker.
        """
        return cls(settings, redis=lambda: client, publish=_no_broker)

    def __repr__(self) -> str:
        return f"Stores({self.settings!r})"

    @cached_property
    def redis(self) -> redis.Redis:
        return self._connect()

    @cached_property
    def keys(self) -> Keys:
        return Keys(self.settings.key_prefix)

    def _store(self, kind: Callable[..., _S], **options: Any) -> _S:
        """A store of ``kind`` over this Redis and key space, its URL named in errors."""
        return kind(self.redis, self.keys, url=self.settings.status_redis_url, **options)

    @cached_property
    def ttl(self) -> int:
        """How long status records and what hangs on them live (seconds)."""
        return max(int(self.settings.status_ttl), 1)

    @cached_property
    def message_index(self) -> MessageIndex:
        return self._store(MessageIndex, ttl=self.ttl)

    @cached_property
    def store(self) -> StatusStore:
        return self._store(StatusStore, ttl=self.ttl, message_index=self.message_index)

    @cached_property
    def outbox(self) -> Outbox:
        return self._store(Outbox, reclaim_idle=self.settings.reclaim_idle, ttl=self.ttl)

    @cached_property
    def campaigns(self) -> CampaignStore:
        return self._store(CampaignStore, ttl=self.ttl, thresholds=self.settings)

    @cached_property
    def caps(self) -> CapLimiter:
        caps = Caps(
            hourly=self.settings.hourly_cap,
            daily=self.settings.daily_cap,
            reserve=self.settings.cap_transactional_reserve,
        )
        return self._store(CapLimiter, caps=caps)

    @cached_property
    def suppressions(self) -> SuppressionList:
        return self._store(
            SuppressionList,
            soft_bounce_limit=self.settings.soft_bounce_limit,
            soft_bounce_days=self.settings.soft_bounce_days,
        )

    @cached_property
    def limiter(self) -> FleetRateLimiter:
        # A limiter per route, not a store of this key space: deliver/ builds one per
        # route it sends through; this one is the settings' own route.
        return FleetRateLimiter(self.redis, self.settings, key_space=self.keys)

    def rate_limiter(self, route: Route, lane: Lane) -> FleetRateLimiter:
        """The fleet rate limiter of ``route``'s token in ``lane`` (one per route a worker uses)."""
        return FleetRateLimiter(self.redis, route, lane=lane, key_space=self.keys)

    def pacer(self) -> Pacer:
        """The fleet-wide pace of the settings' token's transactional calls."""
        return Pacer(self.redis, self.settings.rate_limit, self.settings.token_key, self.keys)

    @cached_property
    def limit_notices(self) -> LimitNotices:
        return LimitNotices(self.redis, self.keys)

    @cached_property
    def batches(self) -> Batches:
        """Writes of several stores in one pipeline over this Redis (``store/batch.py``)."""
        return batches_over(self.redis)

    @cached_property
    def events(self) -> EventStore:
        return self._store(
            EventStore,
            ttl=self.ttl,
            index=self.message_index,
            suppressions=self.suppressions,
            campaigns=self.campaigns,
        )

    @cached_property
    def steering(self) -> SteeringStore:
        return self._store(SteeringStore, status=self.store, outbox=self.outbox)

    @cached_property
    def waker(self) -> Waker:
        return self._store(Waker, publish=self._publish)


def _no_broker(*args: Any, **kwargs: Any) -> NoReturn:
    raise RuntimeError("these stores have no broker: build them through a Client to publish")
