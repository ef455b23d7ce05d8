"""Receivers the outcome-hook tests hand to a worker: each writes what it got into Redis.

The test process reads the list ``outcomes`` of the Redis at
``OUTCOME_RECEIVER_REDIS_URL`` (set in the worker's environment).
"""

from __future__ import annotations

import json
import os
from typing import Any

import redis

LIST = "test:outcomes"


def note(entry: dict[str, Any], name: str = LIST) -> None:
    """Append ``entry`` to the list ``name`` the test reads."""
    client = redis.Redis.from_url(os.environ["OUTCOME_RECEIVER_REDIS_URL"])
    try:
        client.rpush(name, json.dumps(entry))
    finally:
        client.close()


def record_outcome(send_id: str, record: dict[str, Any]) -> None:
    """The ``on_outcome`` hook: note the outcome; refuse a send to a ``boom`` address after."""
    note({"hook": "on_outcome", "id": send_id, "record": record})
    if any(address.startswith("boom") for address in record["recipients"]):
        raise RuntimeError("the application's own bug")
