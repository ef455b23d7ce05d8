"""The one way mailqueue reaches Redis: URLs, clients, masking and error translation.

Accepted URLs (for ``MAILQUEUE_REDIS_URL`` and ``MAILQUEUE_BROKER_URL``)::

    redis://[[user]:password@]host[:port][/db]      plain TCP, ACL user optional
    rediss://...                                     the same over TLS
    unix://[[user]:password@]/path/to/socket[?db=N]  a local socket
    redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER_NAME[/db]
                     [?sentinel_password=...&sentinel_username=...]

Under Sentinel the URL's credentials are the master's (and its replicas'),
the ones the data lives behind; the sentinels are often run without a
password, or with their own, so theirs comes separately as
``sentinel_password`` (and ``sentinel_username``) in the query.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypedDict, cast
from urllib.parse import parse_qs, quote, unquote

import redis
from redis.client import Pipeline
from redis.connection import AbstractConnection, ConnectionPool
from redis.sentinel import Sentinel

from .errors import BrokerUnavailable, ConfigurationError, ReplicationTimeout

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

# A producer must learn at once that Redis is down, not hang: bounded
# connect and read timeouts. A frozen server (accepting connections,
# answering nothing) costs one read timeout per call, so that timeout stays
# under the 5 s a web request can afford; every command mailqueue sends is
# short, none blocks.
SOCKET_CONNECT_TIMEOUT = 3.0
SOCKET_TIMEOUT = 4.0
# How long an enqueue waits for replicas to confirm its writes: replication
# on a healthy network takes well under a millisecond (WAIT makes the master
# ask its replicas at once), and the wait must end before the read timeout.
REPLICA_WAIT_TIMEOUT = 2.0
# A pooled connection idle this long is pinged before use, so a connection
# a firewall or a failover silently dropped is noticed before a command.
HEALTH_CHECK_INTERVAL = 30

SENTINEL_SCHEME = "redis+sentinel"
#: The Celery transport for a Sentinel broker (``sentinel_broker``, imported by Celery).
SENTINEL_TRANSPORT = "mailqueue.sentinel_broker:SentinelTransport"
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", SENTINEL_SCHEME})
DEFAULT_SENTINEL_PORT = 26379
MASK = "***"
_MASKED_VALUE = rf"\1{MASK}"

_TIMEOUTS: dict[str, Any] = {
    "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
    "socket_timeout": SOCKET_TIMEOUT,
}
_PROBE_TIMEOUTS: dict[str, Any] = {"socket_connect_timeout": 1.0, "socket_timeout": 2.0}
_SENTINEL_QUERY = frozenset({"sentinel_password", "sentinel_username"})
_SECRET_QUERY = re.compile(r"([?&][^=&#]*pass[^=&#]*=)[^&#]*", re.IGNORECASE)


@dataclass(frozen=True, repr=False)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        return (
            f"SentinelTarget(sentinels={self.sentinels!r}, master_name={self.master_name!r}, "
            f"db={self.db})"
        )

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection arguments for the sentinels themselves (not the master)."""
        kwargs = dict(_TIMEOUTS)
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url`` ('' when it has none)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names a Redis master through Sentinel."""
    return scheme_of(url) == SENTINEL_SCHEME


def check_url(url: str, setting: str, name: str | None = None) -> None:
    """Raise ConfigurationError for ``setting`` unless ``url`` is a Redis URL mailqueue takes.

    The message names ``name`` (the environment variable a person set) when given.
    """
    shown = name or setting
    scheme = scheme_of(url)
    if scheme not in REDIS_SCHEMES:
        accepted = ", ".join(f"{scheme}://" for scheme in sorted(REDIS_SCHEMES))
        raise ConfigurationError(
            f"{shown} must start with one of {accepted}, not {mask_url(url)!r}",
            setting=setting,
        )
    for part in url.split(";"):
        if _credentials_spill(part):
            raise ConfigurationError(
                f"{shown} is malformed: its user name or password holds '/', '?' or '#' "
                f"unencoded; percent-encode them (%2F, %3F, %23): {mask_url(url)!r}",
                setting=setting,
            )
    if scheme == SENTINEL_SCHEME:
        try:
            parse_sentinel_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"{shown} is malformed: {exc}", setting=setting) from None
    elif scheme in ("redis", "rediss", "unix"):
        try:
            redis.connection.parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError:
            # redis-py's own words may quote a piece of the password.
            raise ConfigurationError(
                f"{shown} is malformed: {mask_url(url)!r}", setting=setting
            ) from None


def _credentials_spill(url: str) -> bool:
    """Whether an ``@`` after the authority's end shows a password cut short by ``/?#``.

    ``redis://:pa/ss@host`` reads as host ``:pa`` and path ``/ss@host``; a
    query value holding ``@`` (``?sentinel_password=a@b``) is not that.
    """
    rest = url.partition("://")[2]
    if rest.startswith("/"):
        # No authority at all (unix:///run/redis@main.sock).
        return False
    end = _authority_end(rest)
    spill = rest.rfind("@")
    return spill >= end and "=" not in rest[end:spill]


def _authority_end(rest: str) -> int:
    return next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db]``.

    Raises ValueError saying what is wrong (never quoting a password).
    """
    if not is_sentinel(url):
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    rest = url.partition("://")[2]
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    sentinels = tuple(_host_port(part) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ValueError("no sentinel host:port given")
    segments = [unquote(segment) for segment in path.split("/") if segment]
    if not segments:
        raise ValueError("the master name is missing (…/MASTER_NAME[/DB])")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError("the path must be /MASTER_NAME or /MASTER_NAME/DB")
    options = {name: values[-1] for name, values in parse_qs(query).items()}
    unknown = sorted(set(options) - _SENTINEL_QUERY)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; accepted: {', '.join(_SENTINEL_QUERY)}")
    return SentinelTarget(
        sentinels=sentinels,
        master_name=segments[0],
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        # "redis://secret@host" is redis-py's reading too: a lone word is a password.
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"sentinel address {text!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel address {text!r} has no valid port")
    return host, int(port_text)


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


def mask_url(url: str) -> str:
    """``url`` with its user name, password and any ``*pass*`` query value replaced by ***.

    Also takes Celery's ``;``-separated broker lists. Safe for reprs, logs,
    error messages and metric labels.
    """
    return ";".join(_mask_one(part) for part in url.split(";"))


def _mask_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _SECRET_QUERY.sub(_MASKED_VALUE, url)
    if _credentials_spill(url):
        # A password holding '/', '?' or '#' unencoded: all up to its '@' is secret.
        return f"{scheme}://{MASK}@{rest[rest.rfind('@') + 1 :]}"
    end = _authority_end(rest)
    authority, tail = rest[:end], rest[end:]
    _, at, hosts = authority.rpartition("@")
    if at:
        authority = f"{MASK}@{hosts}"
    return f"{scheme}://{authority}{_SECRET_QUERY.sub(_MASKED_VALUE, tail)}"


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
