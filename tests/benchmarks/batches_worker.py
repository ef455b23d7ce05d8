"""The celery-batches side of bench_mechanism: a buffered Celery task that posts coalesced batches.

``celery -A batches_worker worker`` (from this directory) runs it; it needs
``pip install --no-deps celery-batches`` (its ``celery<5.7`` pin would
downgrade Celery). Settings come from the same environment variables a
mailqueue worker reads (``Settings.from_env``); the benchmark sets them.
``BENCH_FLUSH_INTERVAL`` overrides the 0.01 s flush interval;
``BENCH_READY_FILE``, when set, is created once the worker consumes.

Each flush turns the buffered messages into payloads with
``mailqueue.build_payload``, combines them with ``mailqueue.core.payload.coalesce``
(at most 500 per call; a lone message goes out as a plain ``send``, as in
mailqueue) and posts them through ``mailqueue.mailtrap.transport.Transport`` with the
fleet-wide ``FleetRateLimiter``. No status is recorded and a call that still
fails after the transport's short retries is dropped: this side does less
work than mailqueue's worker.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery, signals
from celery_batches import Batches, SimpleRequest  # type: ignore[import-untyped]

from mailqueue.core.payload import ApiCall, build_payload, coalesce
from mailqueue.errors import DeliveryError
from mailqueue.mailtrap.transport import Transport
from mailqueue.settings import Settings
from mailqueue.store.ratelimit import FleetRateLimiter

QUEUE = "bench-batches"
FLUSH_EVERY = 500
# A benchmark variant sets a longer interval through the environment.
FLUSH_INTERVAL = float(os.environ.get("BENCH_FLUSH_INTERVAL", "0.01"))
BATCH_LIMIT = 500

log = logging.getLogger(__name__)

# No default: a producer that forgot to set it would publish to some other Redis.
app = Celery("batches_worker", broker=os.environ["MAILQUEUE_BROKER_URL"])
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    task_default_queue=QUEUE,
    # celery-batches buffers in the consumer: the prefetch limit must be at
    # least flush_every or a flush never fills. 0 means unlimited.
    worker_prefetch_multiplier=0,
    worker_hijack_root_logger=False,
)


@dataclass
class _Sender:
    settings: Settings
    transport: Transport
    pid: int


_sender: _Sender | None = None


def sender() -> _Sender:
    """This process's transport, built on first use (pool children are forked after import)."""
    global _sender
    if _sender is None or _sender.pid != os.getpid():
        settings = Settings.from_env()
        client = redis.Redis.from_url(settings.status_redis_url)
        limiter = FleetRateLimiter(client, settings)
        _sender = _Sender(settings, Transport(settings, limiter), os.getpid())
    return _sender


def api_calls(messages: list[dict[str, Any]], settings: Settings) -> list[ApiCall]:
    """One call per 500 single sends; a lone message stays a plain ``send``."""
    singles = [call for message in messages for call in build_payload(message, settings)]
    calls = []
    for start in range(0, len(singles), BATCH_LIMIT):
        chunk = singles[start : start + BATCH_LIMIT]
        calls.append(chunk[0] if len(chunk) == 1 else coalesce(chunk, settings))
    return calls


@app.task(
    name="bench.deliver", base=Batches, flush_every=FLUSH_EVERY, flush_interval=FLUSH_INTERVAL
)
def deliver(requests: list[SimpleRequest]) -> None:
    """Post every buffered message, coalesced."""
    current = sender()
    for call in api_calls([request.args[0] for request in requests], current.settings):
        try:
            current.transport.send(call)
        except DeliveryError as exc:
            log.warning("dropped %d messages: %s", len(call.recipients), exc)


@signals.worker_ready.connect
def _announce_ready(**_: Any) -> None:
    ready_file = os.environ.get("BENCH_READY_FILE")
    if ready_file:
        Path(ready_file).touch()
