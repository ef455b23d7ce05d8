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
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (``attempt`` counts from 1).

    Exponential (``base``, twice that, four times, … at most ``cap``) with "equal
    jitter": between half and all of that, so a fleet that failed together
    does not retry together, yet never retries much sooner than planned.
    Mailtrap's ``Retry-After`` is a floor when it was given.
    """
    exponent = min(max(attempt, 1) - 1, 32)
    ceiling = min(cap, base * (2**exponent))
    delay: float = ceiling / 2 + (rng or random).uniform(0, ceiling / 2)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
