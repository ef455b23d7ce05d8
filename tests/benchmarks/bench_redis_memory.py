"""Redis memory per queued message and per status record, for sizing a deployment.

    .venv/bin/python tests/benchmarks/bench_redis_memory.py [--quick]

For each kind of send it enqueues N of them with no worker running and reads
Redis' ``used_memory`` before and after (what the queue costs), then starts a
worker, waits until all are sent, and reads it again (what the status records
that stay for MAILQUEUE_STATUS_TTL cost). ``MEMORY USAGE`` of a few keys of
each type shows where the bytes are. Everything runs against a private
redis-server with default settings (listpack encodings below 128 fields).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing.worker import WorkerProcess
from mailqueue.webhooks.handler import TrackingHandler
from tests.benchmarks.harness import machine, stack, wait_final

TEXT = "Your order has shipped. " * 20  # about 500 bytes of body


def plain(i: int) -> dict[str, Any]:
    return {
        "from_email": "Shop <shop@example.com>",
        "to": [f"customer{i}@example.com"],
        "subject": f"Your order {i}",
        "text": TEXT,
        "tags": ["orders"],
        "metadata": {"order": str(i)},
    }


def with_attachment(i: int) -> dict[str, Any]:
    content = base64.b64encode(bytes(range(256)) * 40).decode()  # a 10 KB file
    return {
        **plain(i),
        "attachments": [
            {"filename": "invoice.pdf", "content": content, "mimetype": "application/pdf"}
        ],
    }


def batch_of(recipients: int) -> Callable[[int], dict[str, Any]]:
    def build(i: int) -> dict[str, Any]:
        to = [f"r{i}-{n}@example.com" for n in range(recipients)]
        return {
            "from_email": "News <news@example.com>",
            "to": to,
            "template_id": "3f5d9a66-5b43-4bb4-9a46-61b1f8c4e3a1",
            "merge_data": {address: {"name": f"R{n}"} for n, address in enumerate(to)},
        }

    return build


def used(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def key_kinds(client: redis.Redis) -> dict[str, list[int]]:
    """MEMORY USAGE of every key, grouped by the key's kind (its name without the id)."""
    sizes: dict[str, list[int]] = defaultdict(list)
    for key in client.scan_iter(count=1000):
        name = key.decode()
        parts = name.split(":")
        kind = ":".join(parts[:2]) if len(parts) > 2 else name
        sizes[kind].append(int(client.memory_usage(key, samples=0) or 0))
    return sizes


EVENT_NAMES = ("delivery", "open", "click")


def track(settings: Settings, client: redis.Redis, ids: list[str], per_recipient: int) -> None:
    """Post ``per_recipient`` tracking events for every recipient, as Mailtrap would."""
    handler = TrackingHandler.from_settings(settings, client)
    auth = "Basic " + base64.b64encode(b"mailtrap:secret").decode()
    events = []
    for send_id in ids:
        record = mailqueue.get_status(send_id)
        assert record is not None
        for address, recipient in record["recipients"].items():
            for n in range(per_recipient):
                events.append(
                    {
                        "event": EVENT_NAMES[n % len(EVENT_NAMES)],
                        "message_id": recipient["message_id"],
                        "email": address,
                        "timestamp": 1714564800 + n,
                        "event_id": str(uuid.uuid4()),
                    }
                )
    for start in range(0, len(events), 500):
        body = json.dumps({"events": events[start : start + 500]}).encode()
        answer = handler.handle("POST", {"authorization": auth}, body)
        assert answer.status == 200, answer.body


def measure(
    label: str, build: Callable[[int], dict[str, Any]], count: int, events: int = 0
) -> None:
    with stack(latency=0.0) as st:
        settings = st.settings(rate_limit="100000/1s", webhook_secret=("mailtrap:secret",))
        client = st.client
        before = used(client)
        ids = [mailqueue.send_email.delay(build(i)).id for i in range(count)]
        queued = used(client)
        queued_kinds = key_kinds(client)
        with WorkerProcess(settings, concurrency=2):
            _, states = wait_final(client, ids, timeout=600)
        assert set(states.values()) == {"sent"}, set(states.values())
        sent = used(client)
        sent_kinds = key_kinds(client)
        if events:
            track(settings, client, ids, events)
            tracked = used(client)
            tracked_kinds = key_kinds(client)

    print(f"== {label}: {count} sends")
    print(f"queued   {(queued - before) / count:9.0f} bytes per send (used_memory)")
    print(f"sent     {(sent - before) / count:9.0f} bytes per send (used_memory)")
    phases = [("queued", queued_kinds), ("sent", sent_kinds)]
    if events:
        print(
            f"tracked  {(tracked - before) / count:9.0f} bytes per send (used_memory), "
            f"after {events} events per recipient"
        )
        phases.append(("tracked", tracked_kinds))
    for title, kinds in phases:
        for kind, sizes in sorted(kinds.items()):
            per = sum(sizes) / count
            print(f"  {title:<7} {kind:<22} {len(sizes):6} keys  {per:9.0f} bytes per send")
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count = 200 if args.quick else 2000
    print(f"{machine()}; redis-server defaults, no persistence\n")
    measure("single message, 500-byte text", plain, count, events=3)
    measure("single message with a 10 KB attachment", with_attachment, count // 4)
    measure("batch send, 100 recipients with merge data", batch_of(100), max(count // 100, 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
