"""The root object: one configuration of mailqueue and everything built from it.

A ``Client`` owns its settings, its Redis client, the stores over it, the
fleet rate limiter, the waker and the Celery app it publishes wake-ups
through. Nothing is built until first use, so creating one does no I/O.
Clients are independent: two with different settings (another token,
another Redis) work side by side in one process.

The module-level API (``api.py``: ``mailqueue.enqueue``, ``get_status``, ...)
delegates to a default client, built on first use from the environment (or the
Django project's settings, in a process that runs one);
``configure`` replaces it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from celery import Celery

from mailqueue.settings import Settings
from mailqueue.store.base import RedisStore
from mailqueue.store.connection import connect

if TYPE_CHECKING:
    from mailqueue.deliver.drain import Drainer
    from mailqueue.produce.deadletters import DeadLetter
    from mailqueue.records import StatusRecord
    from mailqueue.store.campaigns import CampaignRecord, CampaignStore
    from mailqueue.store.caps import CapLimiter
    from mailqueue.store.groups import SendIds
    from mailqueue.store.keys import Keys
    from mailqueue.store.outbox import LaneStats, Outbox
    from mailqueue.store.ratelimit import FleetRateLimiter
    from mailqueue.store.status import StatusStore
    from mailqueue.store.suppressions import Suppression, SuppressionList
    from mailqueue.store.waker import Publish, Waker
    from mailqueue.webhooks.store import EventStore

__all__ = ["Client", "client_for_settings", "configure", "default", "reset_default"]

_S = TypeVar("_S", bound=RedisStore)
# The most recent campaigns whose pause ``lane_stats`` looks for.
PAUSED_LOOKED_AT = 1000


class Client:
    """One configuration of mailqueue: settings, Redis, stores, limiter, waker, Celery app.

    ``celery`` is the app wake-ups are published through; by default a
    private one configured from ``settings`` alone, so that this client's
    wake-ups reach its own broker whatever the process's Celery app says.
    ``publish`` replaces Celery altogether: it is handed the options of each
    wake-up (for tests and embedding).
    """

    def __init__(
        self, settings: Settings, *, celery: Celery | None = None, publish: Publish | None = None
    ) -> None:
        self.settings = settings
        self._celery = celery
        self._publish_to = publish
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Client({self.settings!r})"

    # -- parts, each built on first use ----------------------------------

    @cached_property
    def redis(self) -> redis.Redis:
        return connect(self.settings.status_redis_url)

    @cached_property
    def keys(self) -> Keys:
        from mailqueue.store.keys import Keys

        return Keys(self.settings.key_prefix)

    @cached_property
    def store(self) -> StatusStore:
        from mailqueue.store.status import StatusStore

        return StatusStore(self.redis, self.settings)

    def _store(self, kind: Callable[..., _S], *args: Any, **options: Any) -> _S:
        """A store of ``kind`` over this client's Redis and key space, its URL named in errors."""
        return kind(self.redis, self.keys, *args, url=self.settings.status_redis_url, **options)

    @cached_property
    def outbox(self) -> Outbox:
        from mailqueue.store.outbox import Outbox

        return self._store(
            Outbox,
            reclaim_idle=self.settings.reclaim_idle,
            ttl=max(int(self.settings.status_ttl), 1),
        )

    @cached_property
    def campaigns(self) -> CampaignStore:
        from mailqueue.store.campaigns import CampaignStore

        return CampaignStore(self.redis, self.settings)

    @cached_property
    def caps(self) -> CapLimiter:
        from mailqueue.store.caps import CapLimiter, Caps

        caps = Caps(
            hourly=self.settings.hourly_cap,
            daily=self.settings.daily_cap,
            reserve=self.settings.cap_transactional_reserve,
        )
        return self._store(CapLimiter, caps)

    @cached_property
    def suppressions(self) -> SuppressionList:
        from mailqueue.store.suppressions import SuppressionList

        return self._store(
            SuppressionList,
            soft_bounce_limit=self.settings.soft_bounce_limit,
            soft_bounce_days=self.settings.soft_bounce_days,
        )

    @cached_property
    def limiter(self) -> FleetRateLimiter:
        from mailqueue.store.ratelimit import FleetRateLimiter

        return FleetRateLimiter(self.redis, self.settings, key_space=self.keys)

    @cached_property
    def events(self) -> EventStore:
        from mailqueue.webhooks.store import EventStore

        return EventStore(self.redis, self.settings)

    @cached_property
    def celery(self) -> Celery:
        if self._celery is not None:
            return self._celery
        from mailqueue.tasks.app import celery_config

        # Publishing only: the tasks are found by name on the worker's side.
        app = Celery("mailqueue", set_as_current=False)
        app.conf.update(celery_config(self.settings))
        return app

    @cached_property
    def waker(self) -> Waker:
        from mailqueue.store.waker import Waker

        return self._store(Waker, self._publish)

    @cached_property
    def drainer(self) -> Drainer:
        """This process's drainer for this client (one HTTP session), built on first use."""
        from mailqueue.deliver.drain import Drainer

        return Drainer(self)

    # -- producing --------------------------------------------------------

    def enqueue(
        self,
        message: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        send_id: str | None = None,
        **celery_options: Any,
    ) -> str:
        """Validate and queue one message; returns its send id (see ``mailqueue.enqueue``)."""
        from mailqueue.produce.producer import enqueue

        return enqueue(
            self, message, idempotency_key=idempotency_key, send_id=send_id, **celery_options
        )

    def enqueue_many(
        self, messages: Iterable[Mapping[str, Any]], *, campaign: str | None = None
    ) -> SendIds:
        """Validate every message, then queue them all; ids in order (as ``enqueue_many``)."""
        from mailqueue.produce.producer import enqueue_many

        return enqueue_many(self, messages, campaign=campaign)

    def get_status(self, send_id: str) -> StatusRecord | None:
        """The status record of a send, or None for an unknown id."""
        from mailqueue.produce.producer import get_status

        return get_status(self, send_id)

    # -- campaigns, suppressions, schedules ---------------------------------

    def get_campaign(self, name: str) -> CampaignRecord | None:
        """The campaign's record (state, recipients, counts, ETA), or None."""
        from mailqueue.produce.steering import get_campaign

        return get_campaign(self, name)

    def pause_campaign(self, name: str) -> CampaignRecord:
        """Pause a campaign fleet-wide: no new call of it starts; returns its record."""
        from mailqueue.produce.steering import pause_campaign

        return pause_campaign(self, name)

    def resume_campaign(self, name: str) -> CampaignRecord:
        """Resume a paused campaign; ValidationError for a cancelled one."""
        from mailqueue.produce.steering import resume_campaign

        return resume_campaign(self, name)

    def cancel_campaign(self, name: str) -> CampaignRecord:
        """Cancel a campaign: recipients not yet handed to Mailtrap end ``cancelled``."""
        from mailqueue.produce.steering import cancel_campaign

        return cancel_campaign(self, name)

    def suppress(
        self, address: str, *, reason: str = "manual", stream: str | None = None
    ) -> Suppression:
        """Never mail ``address`` again (on ``stream`` only, when given)."""
        from mailqueue.produce.steering import translated

        with translated(self, "suppress an address"):
            return self.suppressions.suppress(address, reason=reason, stream=stream)

    def unsuppress(self, address: str) -> bool:
        """Let mail reach ``address`` again; True when it was suppressed."""
        from mailqueue.produce.steering import translated

        with translated(self, "unsuppress an address"):
            return self.suppressions.unsuppress(address)

    def get_suppression(self, address: str) -> Suppression | None:
        """The suppression of ``address``, or None."""
        from mailqueue.produce.steering import translated

        with translated(self, "read a suppression"):
            return self.suppressions.get(address)

    def cancel(self, send_id: str) -> StatusRecord:
        """Cancel a send not yet handed to Mailtrap; returns its status record."""
        from mailqueue.produce.steering import cancel_send

        return cancel_send(self, send_id)

    def reschedule(self, send_id: str, when: Any) -> StatusRecord:
        """Move a send not yet handed to Mailtrap to ``when``; returns its status record."""
        from mailqueue.produce.steering import reschedule_send

        return reschedule_send(self, send_id, when)

    def lane_stats(self) -> list[LaneStats]:
        """Work waiting per lane and Mailtrap stream: backlog, in flight, oldest age, paused."""
        states = self.campaigns.states(self.campaigns.names(PAUSED_LOOKED_AT))
        paused = {name for name, state in states.items() if state == "paused"}
        return self.outbox.lane_stats(paused=paused)

    # -- dead letters -------------------------------------------------------

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, oldest first."""
        from mailqueue.produce.deadletters import list_dead_letters

        return list_dead_letters(self, limit)

    def requeue_dead_letters(
        self, send_ids: Iterable[str] | None = None, *, wake: bool = True
    ) -> int:
        """Send dead-lettered sends again (all when ``send_ids`` is None); returns how many."""
        from mailqueue.produce.deadletters import requeue_dead_letters

        return requeue_dead_letters(self, send_ids, wake=wake)

    def purge_dead_letters(self, send_ids: Sequence[str] | None = None) -> int:
        """Forget dead letters (all when ``send_ids`` is None); returns how many."""
        from mailqueue.produce.deadletters import purge_dead_letters

        return purge_dead_letters(self, send_ids)

    # -- waking workers -----------------------------------------------------

    def _publish(self, options: dict[str, Any]) -> None:
        if self._publish_to is not None:
            self._publish_to(options)
            return
        from mailqueue.store.waker import DELIVER_TASK

        # By name: the producer side never imports the worker's tasks.
        self.celery.send_task(DELIVER_TASK, **options)

    # -- life cycle ---------------------------------------------------------

    def fresh(self) -> Client:
        """A client with the same settings and Celery app but no connection (after a fork)."""
        return Client(self.settings, celery=self._celery, publish=self._publish_to)

    def close(self) -> None:
        """Close what this client opened. Only for a client no thread uses any more."""
        drainer = self.__dict__.get("drainer")
        if drainer is not None:
            drainer.close()
        if "redis" in self.__dict__:
            self.redis.close()
        if self._celery is None and "celery" in self.__dict__:
            self.celery.close()


_lock = threading.Lock()
_default: Client | None = None


def default() -> Client:
    """The default client: ``Settings.from_process()`` at first use, unless ``configure`` chose."""
    global _default
    client = _default
    if client is None:
        with _lock:
            if _default is None:
                from mailqueue.tasks.app import app

                _default = Client(Settings.from_process(), celery=app)
            client = _default
    return client


def configure(settings: Settings) -> Client:
    """Make a client for ``settings`` the default in this process (producer and Celery app alike).

    The previous default is not closed: a thread still using it finishes its
    call on it. Code that needs another configuration beside the default
    should create its own ``Client`` instead.
    """
    global _default
    from mailqueue.tasks.app import app, apply_settings

    client = Client(settings, celery=app)
    with _lock:
        apply_settings(settings)
        _default = client
    return client


# Clients kept by ``client_for_settings``; settings compare by value (they are
# not hashable: the account table is a mapping).
_KEPT = 8
_kept: list[Client] = []


def client_for_settings(settings: Settings) -> Client:
    """A client for ``settings`` shared within the process (the same one for equal settings).

    For code that is handed settings again and again (a Django backend or
    view): each configuration reuses its Redis and broker connections.
    """
    with _lock:
        for client in _kept:
            if client.settings == settings:
                return client
        client = Client(settings)
        _kept.append(client)
        # A client dropped from the list is not closed: a thread may still use it.
        del _kept[:-_KEPT]
        return client


def reset_default() -> None:
    """Forget the default client's connections (after a fork), keeping its settings."""
    global _default
    with _lock:
        if _default is not None:
            _default = _default.fresh()
