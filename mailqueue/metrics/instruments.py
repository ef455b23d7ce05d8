"""Prometheus metrics: what the worker and the webhook did, and how much work is waiting.

    mailqueue_sends_total{outcome}             sends that ended sent / partially_sent / failed,
                                               or were put back for a later attempt (retried)
    mailqueue_api_requests_total{path,status}  API calls by endpoint ("send", "batch") and HTTP
                                               status ("error" when no answer came)
    mailqueue_api_request_seconds{path}        API call latency
    mailqueue_retries_total                    in-process HTTP retries (before a send is put back)
    mailqueue_rate_limit_wait_seconds          time spent waiting on the fleet-wide rate limiter
    mailqueue_reconcile_total{outcome}         requests of calls whose answer was lost, by what
                                               Email Logs said: found (not sent again), absent
                                               (sent again), unsure (sent again); and look-ups
                                               that could not be made: fallback (sent again),
                                               busy (the logs API's rate limit; looked up later)
    mailqueue_webhook_events_total{type,result} tracking events received
    mailqueue_failed_logins_total{server}      requests refused for their credentials, by server
                                               ("webhook", "dashboard")
    mailqueue_queue_depth{queue}               read from Redis at scrape time: "outbox" (single
                                               sends), "batch", "retry", "dead"
    mailqueue_lane_*{lane,stream}              backlog, in flight and oldest age per lane
                                               (see lane_metrics.py)

Labels never carry the API token, an address or a sandbox id.

Celery's prefork pool runs deliveries in child processes, whose counters the
parent cannot see. A worker therefore always counts in prometheus_client's
multiprocess mode (:func:`use_multiprocess_dir`, run in its main process before
the pool forks): every process writes its samples to a folder, and
:func:`start_metrics_server` adds them up. The folder is
``PROMETHEUS_MULTIPROC_DIR`` when set (it must be an empty, writable directory),
else a private one removed when the worker exits. A single-process server (the
webhook) keeps its samples in memory (:func:`use_process_memory`).

The instruments are made on first use, not at import: a process that imports
mailqueue without counting anything (a producer, ``celery inspect ping``) leaves
no file in the folder.

The lane gauges are read from Redis at each scrape::

    mailqueue_lane_backlog{lane,stream}          envelopes no worker has read yet
    mailqueue_lane_in_flight{lane,stream}        envelopes read and not yet acknowledged
    mailqueue_lane_oldest_seconds{lane,stream}   age of the oldest envelope still waiting
    mailqueue_lane_campaigns{stream}             campaigns of the bulk lane with work left

``lane`` is ``transactional`` or ``bulk`` (campaigns, big sends, Mailtrap's
bulk stream); ``stream`` is Mailtrap's sending stream. A KEDA trigger per
lane scales the workers on ``mailqueue_lane_backlog`` (deploy/k8s/keda.yaml).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    start_http_server,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from mailqueue.errors import BrokerUnavailable, ConfigurationError
from mailqueue.store.connection import connect_probe
from mailqueue.store.keys import Keys

if TYPE_CHECKING:
    from mailqueue.store.outbox import Outbox

__all__ = [
    "SEND_OUTCOMES",
    "LaneCollector",
    "QueueDepthCollector",
    "count_reconcile",
    "count_retries",
    "count_sends",
    "count_webhook_event",
    "exposition_registry",
    "multiprocess_mode",
    "observe_api_request",
    "observe_rate_limit_wait",
    "scrape_client",
    "start_metrics_server",
    "use_multiprocess_dir",
    "use_process_memory",
]

log = logging.getLogger("mailqueue.metrics")

SEND_OUTCOMES = frozenset({"sent", "partially_sent", "failed", "retried"})
# Anymail's normalized event types: anything else is counted as "unknown", so
# that a hostile webhook body cannot mint new time series.
WEBHOOK_EVENT_TYPES = frozenset(
    {
        "queued", "sent", "rejected", "failed", "bounced", "deferred", "delivered",
        "autoresponded", "opened", "clicked", "complained", "unsubscribed", "subscribed",
        "unknown", "all",
    }
)  # fmt: skip
# "received" per event as parsed; the store's verdicts ("recorded", "duplicate",
# "unknown_message") come per batch, counted with type "all"; "rejected" is a
# request refused before parsing (verification, malformed body), also "all".
WEBHOOK_RESULTS = frozenset({"received", "recorded", "duplicate", "unknown_message", "rejected"})
API_PATHS = frozenset({"send", "batch"})
LOGIN_SERVERS = frozenset({"webhook", "dashboard"})
RECONCILE_OUTCOMES = frozenset({"found", "absent", "unsure", "fallback", "busy"})
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class _Instruments:
    """The metrics mailqueue counts into, registered in prometheus_client's default registry."""

    def __init__(self) -> None:
        self.sends = Counter("mailqueue_sends", "Sends by outcome.", ["outcome"])
        self.api_requests = Counter(
            "mailqueue_api_requests",
            "Mailtrap API requests by endpoint and HTTP status.",
            ["path", "status"],
        )
        self.api_seconds = Histogram(
            "mailqueue_api_request_seconds",
            "Mailtrap API request latency.",
            ["path"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
        )
        self.retries = Counter("mailqueue_retries", "In-process retries of Mailtrap API requests.")
        self.rate_limit_wait = Histogram(
            "mailqueue_rate_limit_wait_seconds",
            "Time spent waiting for the fleet-wide rate limiter.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
        )
        self.reconcile = Counter(
            "mailqueue_reconcile",
            "Requests with a lost answer by what Email Logs said, and look-ups not made.",
            ["outcome"],
        )
        self.webhook_events = Counter(
            "mailqueue_webhook_events",
            "Tracking webhook events by type and result.",
            ["type", "result"],
        )
        self.failed_logins = Counter(
            "mailqueue_failed_logins",
            "Requests refused for their credentials, by server.",
            ["server"],
        )

    def unregister(self) -> None:
        for metric in vars(self).values():
            REGISTRY.unregister(metric)


_instruments: _Instruments | None = None
_instruments_lock = threading.Lock()


def _metrics() -> _Instruments:
    global _instruments
    if _instruments is None:
        with _instruments_lock:
            if _instruments is None:
                _instruments = _Instruments()
    return _instruments


def _switch_value_class(value_class: type) -> None:
    """Count in a new way from now on; what this process counted so far is dropped."""
    global _instruments
    with _instruments_lock:
        if _instruments is not None:
            _instruments.unregister()
            _instruments = None
        values.ValueClass = value_class


def use_process_memory() -> None:
    """Keep this process's samples in memory, whatever ``PROMETHEUS_MULTIPROC_DIR`` says.

    For a server that runs in one process (the webhook under waitress): it has
    nothing to add up, so it needs no folder, and a read-only one cannot stop it.
    """
    _switch_value_class(values.MutexValue)


def use_multiprocess_dir(directory: str | None = None) -> str:
    """Count through files in a folder, for this process and the children it forks later.

    The folder is ``directory``, else ``PROMETHEUS_MULTIPROC_DIR``, else a private
    temporary one removed when this process exits. Returns its path; raises
    ConfigurationError naming the setting when it is not a writable directory.
    """
    given = directory or os.environ.get(MULTIPROC_ENV)
    if given:
        if not _can_write_in(given):
            raise ConfigurationError(
                f"{MULTIPROC_ENV}={given} is not a writable directory: mount an empty, "
                "writable folder there (a tmpfs or emptyDir), or unset it",
                setting=MULTIPROC_ENV,
            )
        path = given
    else:
        try:
            path = tempfile.mkdtemp(prefix="mailqueue-metrics-")
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create a metrics folder in {tempfile.gettempdir()} "
                f"({exc.strerror}): set {MULTIPROC_ENV} to a writable directory",
                setting=MULTIPROC_ENV,
            ) from None
        atexit.register(_remove_private_dir, path, os.getpid())
    # Children read the folder from the environment; so does MultiProcessCollector.
    os.environ[MULTIPROC_ENV] = path
    _switch_value_class(values.MultiProcessValue())  # type: ignore[no-untyped-call]
    return path


def _can_write_in(directory: str) -> bool:
    # Try it: permission bits say nothing of a read-only mount, and root passes them all.
    try:
        with tempfile.TemporaryFile(dir=directory):
            return True
    except OSError:
        return False


def _remove_private_dir(path: str, owner: int) -> None:
    # Forked children inherit exit handlers: only the process that made the folder removes it.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def count_sends(outcome: str, n: int = 1) -> None:
    """Count ``n`` sends that ended in ``outcome`` (sent, partially_sent, failed, retried)."""
    if outcome not in SEND_OUTCOMES:
        raise ValueError(f"unknown send outcome {outcome!r}")
    if n > 0:
        _metrics().sends.labels(outcome=outcome).inc(n)


def observe_api_request(path: str, status: int | None, seconds: float) -> None:
    """Record one API call: ``path`` as in ``ApiCall.path``, ``status`` None when no answer came."""
    endpoint = path.strip("/").partition("/")[0]
    # "send/<inbox id>" counts as "send": the sandbox id stays out of the labels.
    endpoint = endpoint if endpoint in API_PATHS else "other"
    status_label = "error" if status is None else str(status)
    _metrics().api_requests.labels(path=endpoint, status=status_label).inc()
    _metrics().api_seconds.labels(path=endpoint).observe(max(seconds, 0.0))


def count_retries(n: int = 1) -> None:
    """Count ``n`` in-process retries of an API request."""
    if n > 0:
        _metrics().retries.inc(n)


def count_reconcile(outcome: str, n: int = 1) -> None:
    """Count ``n`` requests (or look-ups, for fallback and busy) by reconciliation outcome."""
    if outcome not in RECONCILE_OUTCOMES:
        raise ValueError(f"unknown reconcile outcome {outcome!r}")
    if n > 0:
        _metrics().reconcile.labels(outcome=outcome).inc(n)


def observe_rate_limit_wait(seconds: float) -> None:
    """Record how long one acquire of the fleet rate limiter waited."""
    _metrics().rate_limit_wait.observe(max(seconds, 0.0))


def count_webhook_event(event_type: str, result: str, n: int = 1) -> None:
    """Count ``n`` tracking events of a normalized type (or "all") by what became of them."""
    if result not in WEBHOOK_RESULTS:
        raise ValueError(f"unknown webhook result {result!r}")
    kind = event_type if event_type in WEBHOOK_EVENT_TYPES else "unknown"
    if n > 0:
        _metrics().webhook_events.labels(type=kind, result=result).inc(n)


def count_failed_login(server: str) -> None:
    """Count one request refused for its credentials by ``server`` ("webhook", "dashboard")."""
    if server not in LOGIN_SERVERS:
        raise ValueError(f"unknown server {server!r}")
    _metrics().failed_logins.labels(server=server).inc()


class QueueDepthCollector:
    """``mailqueue_queue_depth{queue}`` read from Redis at each scrape, not cached.

    The outbox counts its own streams and sets (``Outbox.depths``): these are
    the queue's figures in Redis, not Prometheus' bookkeeping.
    """

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        depth, up = self._families()
        try:
            counts = self.outbox.depths()
        except (redis.RedisError, BrokerUnavailable) as exc:
            # A scrape must still serve the counters when Redis is away.
            log.warning("queue depth unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        for name, count in counts.items():
            depth.add_metric([name], count)
        up.add_metric([], 1)
        yield depth
        yield up

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily(
                "mailqueue_queue_depth",
                "Envelopes waiting or in flight, by queue.",
                labels=["queue"],
            ),
            GaugeMetricFamily("mailqueue_redis_up", "1 when the queue depth could be read."),
        )


def multiprocess_mode() -> bool:
    """True when prometheus_client writes samples to ``PROMETHEUS_MULTIPROC_DIR``."""
    return values.ValueClass is not values.MutexValue


class _ProcessRegistry:
    """Serves this process's default registry through another registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def exposition_registry(
    redis_client: redis.Redis | None = None, key_space: Keys | None = None
) -> CollectorRegistry:
    """A registry to serve: every process's samples (or this one's), plus the queue depth."""
    registry = CollectorRegistry()
    _metrics()  # every family is listed from the first scrape, before anything is counted
    if multiprocess_mode():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessRegistry())  # type: ignore[arg-type]
    if redis_client is not None:
        outbox = reading_outbox(redis_client, key_space or Keys())
        registry.register(QueueDepthCollector(outbox))  # type: ignore[arg-type]
        registry.register(LaneCollector(outbox))  # type: ignore[arg-type]
    return registry


def scrape_client(redis_url: str) -> redis.Redis:
    """A Redis client for the queue depth: short timeouts and no retries."""
    return connect_probe(redis_url)


def start_metrics_server(
    port: int,
    *,
    addr: str = "0.0.0.0",
    redis_url: str | None = None,
    redis_client: redis.Redis | None = None,
    key_space: Keys | None = None,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the server and thread.

    ``port`` 0 picks a free port (``server.server_port``). With ``redis_url``
    (or a ready ``redis_client``) the queue depth is included, read under
    ``key_space`` (the default prefix when None).
    """
    if redis_client is None and redis_url is not None:
        redis_client = scrape_client(redis_url)
    registry = exposition_registry(redis_client, key_space)
    server, thread = start_http_server(port, addr, registry=registry)
    return server, thread


# -- the lanes, read at each scrape ---------------------------------------------------


def reading_outbox(client: redis.Redis, keys: Keys) -> Outbox:
    """An outbox the scrapes only read: its reclaim and expiry settings play no part."""
    from mailqueue.store.outbox import Outbox

    return Outbox(client, keys, reclaim_idle=0.0, ttl=1)


class LaneCollector:
    """The lane gauges, read from Redis at each scrape, not cached."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        try:
            stats = self.outbox.lane_stats()
        except (redis.RedisError, BrokerUnavailable) as exc:
            # mailqueue_redis_up (the queue depth collector) says so already.
            log.warning("lane gauges unavailable: %s", type(exc).__name__)
            return
        backlog, in_flight, oldest, campaigns = self._families()
        for entry in stats:
            labels = [entry.lane, entry.stream]
            backlog.add_metric(labels, entry.waiting)
            in_flight.add_metric(labels, entry.in_flight)
            oldest.add_metric(labels, round(entry.oldest_seconds, 3))
            if entry.lane == "bulk":
                campaigns.add_metric([entry.stream], entry.campaigns)
        yield from (backlog, in_flight, oldest, campaigns)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        lane = ["lane", "stream"]
        return (
            GaugeMetricFamily(
                "mailqueue_lane_backlog", "Envelopes no worker has read yet.", labels=lane
            ),
            GaugeMetricFamily(
                "mailqueue_lane_in_flight",
                "Envelopes read by a worker and not yet acknowledged.",
                labels=lane,
            ),
            GaugeMetricFamily(
                "mailqueue_lane_oldest_seconds",
                "Age of the oldest envelope still waiting or in flight.",
                labels=lane,
            ),
            GaugeMetricFamily(
                "mailqueue_lane_campaigns",
                "Campaigns of the bulk lane with work left.",
                labels=["stream"],
            ),
        )
