"""Prometheus gauges of the lanes, read from Redis at each scrape:

    mailqueue_lane_backlog{lane,stream}          envelopes no worker has read yet
    mailqueue_lane_in_flight{lane,stream}        envelopes read and not yet acknowledged
    mailqueue_lane_oldest_seconds{lane,stream}   age of the oldest envelope still waiting
    mailqueue_lane_campaigns{stream}             campaigns of the bulk lane with work left

``lane`` is ``transactional`` or ``bulk`` (campaigns, big sends, Mailtrap's
bulk stream); ``stream`` is Mailtrap's sending stream. A KEDA trigger per
lane scales the workers on ``mailqueue_lane_backlog`` (deploy/k8s/keda.yaml).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily, Metric

from mailqueue.errors import BrokerUnavailable
from mailqueue.store.keys import Keys
from mailqueue.store.outbox import LaneStats, Outbox

__all__ = ["LaneCollector", "format_lanes", "reading_outbox"]

log = logging.getLogger("mailqueue.metrics")


def reading_outbox(client: redis.Redis, keys: Keys) -> Outbox:
    """An outbox the scrapes only read: its reclaim and expiry settings play no part."""
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


def format_lanes(stats: Iterable[LaneStats]) -> list[str]:
    """A table of the lanes for a terminal."""
    lines = [
        f"{'lane':<14}{'stream':<15}{'waiting':>9}{'in flight':>11}{'oldest':>10}{'paused':>9}"
    ]
    for entry in stats:
        lines.append(
            f"{entry.lane:<14}{entry.stream:<15}{entry.waiting:>9}{entry.in_flight:>11}"
            f"{entry.oldest_seconds:>9.1f}s{entry.paused:>9}"
            + (f"  ({entry.campaigns} campaigns)" if entry.campaigns else "")
        )
    return lines
