"""How long a send waits before its next attempt: a pure function of the attempt number."""

from __future__ import annotations

import random

__all__ = ["compute_backoff"]


def compute_backoff(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    floor: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    Exponential (``base``, twice that, four times, … at most ``cap``) with
    jitter: drawn between ``floor`` and that ceiling, so a fleet that failed
    together does not retry together. Without a ``floor``, "equal jitter":
    at least half the ceiling, never much sooner than planned. Mailtrap's
    ``Retry-After`` is a floor when it was given.
    """
    exponent = min(max(attempt, 1) - 1, 32)
    ceiling = min(cap, base * (2**exponent))
    low = ceiling / 2 if floor is None else min(floor, ceiling)
    delay: float = (rng or random).uniform(low, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
