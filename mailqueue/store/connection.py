"""The one way mailqueue reaches Redis: clients, error translation, replicated writes.

The URLs themselves are read (parsed, checked, masked) by ``core.urls``; its
names are re-exported here for the stores' callers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypedDict, cast
from urllib.parse import quote, unquote

import redis
from redis.client import Pipeline
from redis.connection import AbstractConnection, ConnectionPool
from redis.sentinel import Sentinel

from mailqueue.core.urls import (
    MASK,
    REDIS_SCHEMES,
    SENTINEL_SCHEME,
    SentinelTarget,
    check_url,
    is_sentinel,
    mask_url,
    parse_sentinel_url,
)
from mailqueue.core.urls import SECRET_QUERY as _SECRET_QUERY
from mailqueue.core.urls import TIMEOUTS as _TIMEOUTS
from mailqueue.errors import BrokerUnavailable, ConfigurationError, ReplicationTimeout

__all__ = [
    "REDIS_SCHEMES",
    "SENTINEL_SCHEME",
    "BrokerConfig",
    "SentinelTarget",
    "celery_broker",
    "check_master_name",
    "check_url",
    "connect",
    "connect_probe",
    "is_sentinel",
    "mask_url",
    "parse_sentinel_url",
    "redis_errors",
    "replicated_transaction",
    "unavailable",
]

# How long an enqueue waits for replicas to confirm its writes: replication
# on a healthy network takes well under a millisecond (WAIT makes the master
# ask its replicas at once), and the wait must end before the read timeout.
REPLICA_WAIT_TIMEOUT = 2.0
# A pooled connection idle this long is pinged before use, so a connection
# a firewall or a failover silently dropped is noticed before a command.
HEALTH_CHECK_INTERVAL = 30

#: The Celery transport for a Sentinel broker (``sentinel_broker``, imported by Celery).
SENTINEL_TRANSPORT = "mailqueue.tasks.sentinel_broker:SentinelTransport"

_PROBE_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}


def connect(url: str) -> redis.Redis:
    """A Redis client for ``url`` with mailqueue's timeouts; under Sentinel, its master.

    Nothing is opened here: the first command connects. A Sentinel client asks
    the sentinels for the master at each new connection, so after a failover
    it follows the new master by itself.
    """
    return _client(url, _TIMEOUTS, health_check_interval=HEALTH_CHECK_INTERVAL)


def connect_probe(url: str) -> redis.Redis:
    """Like ``connect``, for a metrics scrape: shorter timeouts and no retries.

    A scrape has about 10 s; a client retrying a dead Redis would spend them
    all and lose the scrape's other figures too.
    """
    return _client(url, _PROBE_TIMEOUTS, retry=None)


def _client(url: str, timeouts: dict[str, Any], **options: Any) -> redis.Redis:
    check_url(url, "redis_url")
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **timeouts, **options)
    target = parse_sentinel_url(url)
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels), sentinel_kwargs=target.sentinel_kwargs(), **timeouts
    )
    client = sentinel.master_for(  # type: ignore[no-untyped-call]
        target.master_name,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    return cast(redis.Redis, client)


@contextmanager
def redis_errors(url: str, *, doing: str) -> Iterator[None]:
    """Turn a ``redis.RedisError`` inside the block into BrokerUnavailable.

    The message names the (masked) URL and what was being done, e.g.
    ``cannot enqueue: Redis at redis://***@host:6379/0 is unavailable (...)``.
    """
    try:
        yield
    except redis.RedisError as exc:
        raise unavailable(url, doing, exc) from exc


def unavailable(url: str, doing: str, exc: redis.RedisError) -> BrokerUnavailable:
    """The error :func:`redis_errors` raises, for a boundary that must act before raising."""
    return BrokerUnavailable(
        f"cannot {doing}: Redis at {mask_url(url)} is unavailable "
        f"({type(exc).__name__}: {_scrub(str(exc), url)})"
    )


def _scrub(text: str, url: str) -> str:
    """``text`` without any secret of ``url`` (in case a driver error ever quotes one)."""
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def _secrets(url: str) -> set[str]:
    found: set[str] = set()
    for part in url.split(";"):
        authority = re.split(r"[/?#]", part.partition("://")[2], maxsplit=1)[0]
        userinfo, at, _ = authority.rpartition("@")
        if at:
            found.update(userinfo.split(":"))
    for match in _SECRET_QUERY.finditer(url):
        found.add(re.split(r"[&#]", url[match.end() :], maxsplit=1)[0])
    return {form for raw in found if raw for form in (raw, unquote(raw))}


class BrokerConfig(TypedDict):
    """The Celery settings that name the broker."""

    broker_url: str
    broker_transport: str | None
    broker_transport_options: dict[str, Any]


def celery_broker(url: str) -> BrokerConfig:
    """The Celery broker settings for ``url``.

    ``redis+sentinel://`` becomes a Sentinel transport (``sentinel_broker``):
    a ``sentinel://`` URL carrying the master's credentials and the db, and
    as transport options every sentinel, the master name and the sentinels'
    own credentials. Any other URL is Celery's business and passes unchanged.
    """
    if not is_sentinel(url):
        return {"broker_url": url, "broker_transport": None, "broker_transport_options": {}}
    target = parse_sentinel_url(url)
    userinfo = ""
    if target.username or target.password:
        user, password = (quote(part or "", safe="") for part in (target.username, target.password))
        userinfo = f"{user}:{password}@"
    host, port = target.sentinels[0]
    host = f"[{host}]" if ":" in host else host
    return {
        "broker_url": f"sentinel://{userinfo}{host}:{port}/{target.db}",
        "broker_transport": SENTINEL_TRANSPORT,
        "broker_transport_options": {
            "master_name": target.master_name,
            "sentinels": [list(address) for address in target.sentinels],
            "sentinel_kwargs": target.sentinel_kwargs(),
        },
    }


def check_master_name(options: Any) -> str:
    """The master name in the broker's transport options, or ConfigurationError.

    ``connection.celery_broker`` always sets it from the URL's path; a
    ``celeryconfig`` that selects this transport by hand may not. Without a
    name there is no master to ask the sentinels for.
    """
    name = options.get("master_name") if isinstance(options, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigurationError(
            "broker_transport_options: the Sentinel broker needs a master_name "
            "(give the broker URL as redis+sentinel://HOST:PORT/MASTER_NAME)",
            setting="broker_transport_options",
        )
    return name


# -- writes a failover cannot lose ----------------------------------------


@contextmanager
def replicated_transaction(
    client: redis.Redis, min_replicas: int, *, timeout: float = REPLICA_WAIT_TIMEOUT
) -> Iterator[Pipeline]:
    """A MULTI/EXEC pipeline whose executed writes ``min_replicas`` replicas hold on exit.

    Use as ``with replicated_transaction(r, n) as pipe: ...; pipe.execute()``.
    On leaving the block the master is asked (``WAIT``) until that many
    replicas have acknowledged the writes, capped at the replicas connected
    now: a master left with none still takes writes (a lone master after a
    failover), with the durability of a single Redis until a replica returns.

    Raises ReplicationTimeout when fewer replicas confirm within ``timeout``:
    the writes are on the master, yet a failover now could lose them, so the
    caller must not report them as safe. With ``min_replicas`` 0 this is a
    plain transaction and costs nothing more.
    """
    if min_replicas <= 0:
        with client.pipeline(transaction=True) as pipe:
            yield pipe
        return
    pool = client.connection_pool
    # WAIT covers the writes of the connection it is sent on, so the
    # transaction and the WAIT must share one connection: the pipeline
    # borrows it from a pool that always hands out that one.
    conn = pool.get_connection()
    try:
        pinned = cast(ConnectionPool, _PinnedPool(pool, conn))
        with Pipeline(pinned, client.response_callbacks, True, None) as pipe:
            yield pipe
        _wait_for_replicas(conn, min_replicas, timeout)
    finally:
        pool.release(conn)


def _wait_for_replicas(conn: AbstractConnection, wanted: int, timeout: float) -> None:
    # No health check here: a health check that reconnected (to a new
    # master, after a failover) would make WAIT count nothing of ours.
    conn.send_command("ROLE", check_health=False)  # type: ignore[no-untyped-call]
    role = conn.read_response()
    connected = len(role[2]) if role and role[0] in (b"master", "master") else 0
    needed = min(wanted, connected)
    if needed == 0:
        return
    conn.send_command(  # type: ignore[no-untyped-call]
        "WAIT", needed, int(timeout * 1000), check_health=False
    )
    acknowledged = int(conn.read_response())
    if acknowledged < needed:
        raise ReplicationTimeout(
            f"the write reached the Redis master but {acknowledged} of {needed} replicas "
            f"confirmed it within {timeout:g} s; a failover now could lose it"
        )


class _PinnedPool:
    """A connection pool that always lends the one connection it was given."""

    def __init__(self, pool: ConnectionPool, conn: AbstractConnection) -> None:
        self._pool = pool
        self._conn = conn

    def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        return self._conn

    def release(self, conn: AbstractConnection) -> None:
        """Kept by the owner of the pinned connection, which releases it once."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)
