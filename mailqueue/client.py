"""The root object: one configuration of mailqueue and everything built from it.

A ``Client`` owns its settings, its Redis client, the stores over it, the
fleet rate limiter, the waker and the Celery app it publishes wake-ups
through. Nothing is built until first use, so creating one does no I/O.

It is the composition root: it builds the stores (through
``store.stores.Stores``, their one builder) and the outcome hooks, and hands
each service only the parts it uses: keyword arguments to steering, dead
letters and the other services, a ``Producer`` to queueing, a
``DrainParts`` to the drainer, which gives each stage its share. None of
them imports this module.
Clients are independent: two with different settings (another token,
another Redis) work side by side in one process.

The module-level API (``api.py``: ``mailqueue.enqueue``, ``get_status``, ...)
delegates to a default client, built on first use from the environment (or the
Django project's settings, in a process that runs one);
``configure`` replaces it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery

from mailqueue.settings import Settings
from mailqueue.store.connection import connect
from mailqueue.store.stores import Stores

if TYPE_CHECKING:
    from mailqueue.core.routing import Route
    from mailqueue.deliver.drain import Drainer, DrainParts
    from mailqueue.deliver.hooks import OutcomeHooks, OutcomeReceiver
    from mailqueue.mailtrap.email_logs import LogsLimiters
    from mailqueue.produce.deadletters import DeadLetter
    from mailqueue.produce.producer import Producer
    from mailqueue.records import StatusRecord
    from mailqueue.store.campaigns import CampaignRecord, CampaignStore
    from mailqueue.store.caps import CapLimiter
    from mailqueue.store.events import EventStore
    from mailqueue.store.groups import SendIds
    from mailqueue.store.keys import Keys
    from mailqueue.store.outbox import LaneStats, Outbox
    from mailqueue.store.ratelimit import FleetRateLimiter
    from mailqueue.store.status import StatusStore
    from mailqueue.store.suppressions import Suppression, SuppressionList
    from mailqueue.store.waker import Publish, Waker

__all__ = [
    "Client",
    "add_outcome_receiver",
    "client_for_settings",
    "configure",
    "default",
    "reset_default",
]

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
    def stores(self) -> Stores:
        """The builder of the stores over this client's Redis; services get single stores."""
        return Stores(self.settings, redis=lambda: self.redis, publish=self._publish)

    @property
    def keys(self) -> Keys:
        return self.stores.keys

    @property
    def store(self) -> StatusStore:
        return self.stores.store

    @property
    def outbox(self) -> Outbox:
        return self.stores.outbox

    @property
    def campaigns(self) -> CampaignStore:
        return self.stores.campaigns

    @property
    def caps(self) -> CapLimiter:
        return self.stores.caps

    @property
    def suppressions(self) -> SuppressionList:
        return self.stores.suppressions

    @property
    def limiter(self) -> FleetRateLimiter:
        return self.stores.limiter

    @property
    def events(self) -> EventStore:
        return self.stores.events

    @property
    def waker(self) -> Waker:
        return self.stores.waker

    @cached_property
    def outcome_hooks(self) -> OutcomeHooks:
        """The receivers of final outcomes: this client's settings', then the process's."""
        from mailqueue.deliver.hooks import OutcomeHooks, receivers_from_settings

        return OutcomeHooks(
            status=self.store,
            receivers=receivers_from_settings(self.settings, self.send_task),
            process_receivers=_process_receivers,
        )

    def email_logs_limiters(self, route: Route) -> LogsLimiters:
        """The fleet-wide limiters of Email Logs look-ups with ``route``'s token."""
        from mailqueue.mailtrap.email_logs import fleet_limiters

        return fleet_limiters(
            self.redis, route, self.settings.email_logs_rate_limit, key_space=self.keys
        )

    @cached_property
    def celery(self) -> Celery:
        if self._celery is not None:
            return self._celery
        from mailqueue.celery_app import celery_config

        # Publishing only: the tasks are found by name on the worker's side.
        app = Celery("mailqueue", set_as_current=False)
        app.conf.update(celery_config(self.settings))
        return app

    @cached_property
    def producer(self) -> Producer:
        """What queueing writes through (``produce/producer.py``)."""
        from mailqueue.produce.producer import Producer

        stores = self.stores
        return Producer(
            settings=self.settings,
            batches=stores.batches,
            status=stores.store,
            outbox=stores.outbox,
            campaigns=stores.campaigns,
            waker=stores.waker,
        )

    @cached_property
    def drain_parts(self) -> DrainParts:
        """What this client's drains use, each stage handed its own share by the drainer."""
        from mailqueue.deliver.drain import DrainParts

        stores = self.stores
        return DrainParts(
            settings=self.settings,
            keys=stores.keys,
            status=stores.store,
            outbox=stores.outbox,
            waker=stores.waker,
            suppressions=stores.suppressions,
            caps=stores.caps,
            campaigns=stores.campaigns,
            hooks=self.outcome_hooks,
            batches=stores.batches,
            limit_notices=stores.limit_notices,
            rate_limiters=stores.rate_limiter,
            email_logs_limiters=self.email_logs_limiters,
            pacer=stores.pacer,
        )

    @cached_property
    def drainer(self) -> Drainer:
        """This process's drainer for this client (one HTTP session), built on first use."""
        from mailqueue.deliver.drain import Drainer

        return Drainer(self.drain_parts)

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
            self.producer,
            message,
            idempotency_key=idempotency_key,
            send_id=send_id,
            **celery_options,
        )

    def enqueue_many(
        self, messages: Iterable[Mapping[str, Any]], *, campaign: str | None = None
    ) -> SendIds:
        """Validate every message, then queue them all; ids in order (as ``enqueue_many``)."""
        from mailqueue.produce.producer import enqueue_many

        return enqueue_many(self.producer, messages, campaign=campaign)

    def get_status(self, send_id: str) -> StatusRecord | None:
        """The status record of a send, or None for an unknown id."""
        from mailqueue.produce.producer import get_status

        return get_status(self.store, send_id)

    # -- campaigns, suppressions, schedules ---------------------------------

    def get_campaign(self, name: str) -> CampaignRecord | None:
        """The campaign's record (state, recipients, counts, ETA), or None."""
        from mailqueue.produce.steering import get_campaign

        return get_campaign(name, campaigns=self.campaigns)

    def pause_campaign(self, name: str) -> CampaignRecord:
        """Pause a campaign fleet-wide: no new call of it starts; returns its record."""
        from mailqueue.produce.steering import pause_campaign

        return pause_campaign(name, campaigns=self.campaigns)

    def resume_campaign(self, name: str) -> CampaignRecord:
        """Resume a paused campaign; ValidationError for a cancelled one."""
        from mailqueue.produce.steering import resume_campaign

        return resume_campaign(name, campaigns=self.campaigns, outbox=self.outbox, waker=self.waker)

    def cancel_campaign(self, name: str) -> CampaignRecord:
        """Cancel a campaign: recipients not yet handed to Mailtrap end ``cancelled``."""
        from mailqueue.produce.steering import cancel_campaign

        return cancel_campaign(name, campaigns=self.campaigns, outbox=self.outbox, waker=self.waker)

    def suppress(
        self, address: str, *, reason: str = "manual", stream: str | None = None
    ) -> Suppression:
        """Never mail ``address`` again (on ``stream`` only, when given)."""
        from mailqueue.produce.steering import translated

        with translated(self.settings.status_redis_url, "suppress an address"):
            return self.suppressions.suppress(address, reason=reason, stream=stream)

    def unsuppress(self, address: str) -> bool:
        """Let mail reach ``address`` again; True when it was suppressed."""
        from mailqueue.produce.steering import translated

        with translated(self.settings.status_redis_url, "unsuppress an address"):
            return self.suppressions.unsuppress(address)

    def get_suppression(self, address: str) -> Suppression | None:
        """The suppression of ``address``, or None."""
        from mailqueue.produce.steering import translated

        with translated(self.settings.status_redis_url, "read a suppression"):
            return self.suppressions.get(address)

    def cancel(self, send_id: str) -> StatusRecord:
        """Cancel a send not yet handed to Mailtrap; returns its status record."""
        from mailqueue.produce.steering import cancel_send

        return cancel_send(
            send_id,
            status=self.store,
            steering=self.stores.steering,
            waker=self.waker,
            hooks=self.outcome_hooks,
        )

    def reschedule(self, send_id: str, when: Any) -> StatusRecord:
        """Move a send not yet handed to Mailtrap to ``when``; returns its status record."""
        from mailqueue.produce.steering import reschedule_send

        return reschedule_send(
            send_id, when, status=self.store, outbox=self.outbox, waker=self.waker
        )

    def lane_stats(self) -> list[LaneStats]:
        """Work waiting per lane and Mailtrap stream: backlog, in flight, oldest age, paused."""
        states = self.campaigns.states(self.campaigns.names(PAUSED_LOOKED_AT))
        paused = {name for name, state in states.items() if state == "paused"}
        return self.outbox.lane_stats(paused=paused)

    # -- dead letters -------------------------------------------------------

    def list_dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters, oldest first."""
        from mailqueue.produce.deadletters import list_dead_letters

        return list_dead_letters(limit, status=self.store, outbox=self.outbox)

    def requeue_dead_letters(
        self, send_ids: Iterable[str] | None = None, *, wake: bool = True
    ) -> int:
        """Send dead-lettered sends again (all when ``send_ids`` is None); returns how many."""
        from mailqueue.produce.deadletters import requeue_dead_letters

        return requeue_dead_letters(
            send_ids, wake=wake, status=self.store, outbox=self.outbox, waker=self.waker
        )

    def purge_dead_letters(self, send_ids: Sequence[str] | None = None) -> int:
        """Forget dead letters (all when ``send_ids`` is None); returns how many."""
        from mailqueue.produce.deadletters import purge_dead_letters

        return purge_dead_letters(send_ids, outbox=self.outbox)

    # -- waking workers, sending outcome tasks ---------------------------------

    def send_task(self, name: str, **options: Any) -> None:
        """Send the Celery task ``name`` through this client's app (outcome tasks)."""
        self.celery.send_task(name, **options)

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
# Receivers every client of the process tells (a face's own, e.g. Anymail's post_send).
_process_receivers: list[OutcomeReceiver] = []


def add_outcome_receiver(receiver: OutcomeReceiver) -> None:
    """Tell ``receiver`` the final outcomes every client of this process sees; once per receiver."""
    with _lock:
        if receiver not in _process_receivers:
            _process_receivers.append(receiver)


def default() -> Client:
    """The default client: ``Settings.from_process()`` at first use, unless ``configure`` chose."""
    global _default
    client = _default
    if client is None:
        with _lock:
            if _default is None:
                from mailqueue.celery_app import app

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
    from mailqueue.celery_app import app, apply_settings

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
