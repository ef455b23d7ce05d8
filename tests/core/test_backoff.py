"""Retry delays: exponential, jittered, capped, and never shorter than Retry-After."""

from __future__ import annotations

import random

from mailqueue.core.backoff import compute_backoff


def test_delay_doubles_per_attempt_within_jitter() -> None:
    rng = random.Random(1)
    for attempt, ceiling in [(1, 30), (2, 60), (3, 120), (4, 240)]:
        delay = compute_backoff(attempt, base=30, cap=3600, rng=rng)
        assert ceiling / 2 <= delay <= ceiling


def test_delay_is_capped() -> None:
    assert compute_backoff(40, base=30, cap=100, rng=random.Random(2)) <= 100


def test_retry_after_is_a_floor() -> None:
    assert compute_backoff(1, base=1, cap=10, retry_after=42.0) == 42.0


def test_jitter_spreads_a_fleet_that_failed_together() -> None:
    rng = random.Random(3)
    delays = {round(compute_backoff(3, base=30, cap=3600, rng=rng), 3) for _ in range(50)}
    assert len(delays) > 40
