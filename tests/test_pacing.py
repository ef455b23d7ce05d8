"""Pacing of transactional calls: the schedule (pure), its spacing against the limiter's
window (the in-memory twin on a controlled clock), and the fleet-wide schedule in Redis."""

from __future__ import annotations

import itertools

import pytest
import redis

from mailqueue.settings import RateLimit, Settings
from mailqueue.store.keys import Keys
from mailqueue.store.pacing import Pacer, PaceRule, book, interval_for
from mailqueue.store.ratelimit import FleetRateLimiter, LaneShares, MemoryRateLimiter

TOKEN = "tok-5b1d-pacing-secret-token"
MAILTRAP = RateLimit(150, 10.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- the schedule, pure ----------------------------------------------------------


def test_an_idle_schedule_starts_a_call_at_once() -> None:
    booking = book(0.0, 50.0, 0.1, 4)
    assert booking.wait == 0.0
    assert booking.tat == pytest.approx(50.1)


def test_a_burst_starts_at_once_then_calls_are_spaced_by_the_interval() -> None:
    tat, waits = 0.0, []
    for _ in range(8):
        booking = book(tat, 10.0, 0.5, 3)
        tat = booking.tat
        waits.append(booking.wait)
    assert waits == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5])


def test_the_next_start_is_announced_with_each_booking() -> None:
    first = book(0.0, 10.0, 0.5, 1)
    assert first.wait == 0.0
    assert first.next_in == pytest.approx(0.5)
    second = book(first.tat, 10.0, 0.5, 1)
    assert second.wait == pytest.approx(first.next_in)


def test_a_schedule_left_idle_regains_its_burst() -> None:
    tat = 0.0
    for _ in range(6):
        tat = book(tat, 10.0, 0.5, 3).tat
    assert book(tat, 10.0, 0.5, 3).wait > 0
    assert book(tat, 10.0 + 3 * 0.5 + 1.5, 0.5, 3).wait == 0.0


@pytest.mark.parametrize("limit", [MAILTRAP, RateLimit(10, 1.0), RateLimit(1000, 60.0)])
def test_a_burst_and_the_spaced_calls_fit_one_window(limit: RateLimit) -> None:
    rule = PaceRule.of(limit, margin=0.25)
    window = limit.period + 0.25
    shares = LaneShares.of(limit)
    assert rule.burst + window / rule.interval <= limit.amount
    assert rule.burst + window / rule.interval_beside_bulk <= limit.amount - shares.bulk


def test_mailtraps_window_is_spent_at_fourteen_calls_a_second_or_more() -> None:
    # 1,000 messages a second need at least 67 a call under 150 calls a window.
    assert 1 / PaceRule.of(MAILTRAP).interval >= 14


# -- against the limiter's window (the in-memory twin, a controlled clock) ----------


def run_paced(seconds: float, *, with_bulk: bool) -> tuple[list[float], list[float], int]:
    """Transactional calls paced back to back beside a greedy campaign (or alone).

    A call the pacer lets start asks the limiter until it grants a slot, as
    the transport does. Returns when the pacer let calls start, when the
    limiter refused one of them, and the bulk calls granted.
    """
    clock = Clock()
    settings = Settings(api_token=TOKEN, rate_limit=MAILTRAP)
    transactional = MemoryRateLimiter(settings, clock=clock)
    bulk = transactional.for_lane("bulk")
    rule = PaceRule.of(MAILTRAP)
    window = MAILTRAP.period + transactional.margin
    tat, next_start, waiting = 0.0, clock.now, False
    starts: list[float] = []
    refused: list[float] = []
    granted_bulk = 0
    end = clock.now + seconds
    while clock.now < end:
        if with_bulk and bulk.try_acquire():
            granted_bulk += 1
        if not waiting and clock.now >= next_start:
            held = {lane: len(log) for lane, log in transactional._state.granted.items()}
            interval = interval_for(
                rule, window, MAILTRAP, held["transactional"], held["bulk"], with_bulk
            )
            booking = book(tat, clock.now, interval, rule.burst)
            tat, next_start = booking.tat, clock.now + booking.next_in
            waiting = booking.wait == 0
            if waiting:
                starts.append(clock.now)
        if waiting:
            waiting = not transactional.try_acquire()
            if waiting:
                refused.append(clock.now)
        clock.now += 0.002
    return starts, refused, granted_bulk


def test_steady_transactional_traffic_never_finds_the_window_spent() -> None:
    starts, refused, _ = run_paced(60.0, with_bulk=False)
    assert refused == []
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert max(gaps) <= PaceRule.of(MAILTRAP).interval + 0.004


def test_steady_transactional_traffic_beside_a_campaign_is_spread_over_the_window() -> None:
    # The campaign takes the window first; from its second window on, every
    # transactional call the pacer lets start finds a slot, and none waits
    # longer than its reserve spread over a window.
    starts, refused, _ = run_paced(60.0, with_bulk=True)
    rule = PaceRule.of(MAILTRAP)
    shares = LaneShares.of(MAILTRAP)
    window = MAILTRAP.period + 0.25
    settled = 1000.0 + 2 * window
    assert [t for t in refused if t >= settled] == []
    later = [t for t in starts if t >= settled]
    gaps = [b - a for a, b in itertools.pairwise(later)]
    assert max(gaps) <= window / (shares.reserve - rule.burst - 1) + 0.004
    assert len(later) >= (1060.0 - settled) / window * shares.reserve


def test_a_campaign_keeps_its_share_beside_steady_transactional_traffic() -> None:
    _, _, granted_bulk = run_paced(60.0, with_bulk=True)
    windows = 60.0 / (MAILTRAP.period + 0.25)
    assert granted_bulk >= LaneShares.of(MAILTRAP).bulk * int(windows)


# -- the fleet-wide schedule in Redis -------------------------------------------------


SLOW = RateLimit(40, 100.0)  # an interval of seconds: the test's own run time is noise


def pacer(client: redis.Redis, token_key: str = "tk") -> Pacer:
    return Pacer(client, SLOW, token_key, Keys("mq"))


def test_pacers_of_one_token_share_one_schedule(redis_client: redis.Redis) -> None:
    first, second = pacer(redis_client), pacer(redis_client)
    rule = first.rule
    waits = [(first if i % 2 else second).book() for i in range(rule.burst + 4)]
    assert waits[: rule.burst] == pytest.approx([0.0] * rule.burst, abs=0.5)
    for k, wait in enumerate(waits[rule.burst :], start=1):
        assert k * rule.interval - 1.0 <= wait <= k * rule.interval + 0.01


def test_a_pacer_that_booked_knows_when_its_next_start_is_due(redis_client: redis.Redis) -> None:
    own = pacer(redis_client)
    assert own.due() == 0.0
    for _ in range(own.rule.burst):
        own.book()
    assert own.due() > own.rule.interval - 1.0


def test_tokens_are_paced_apart(redis_client: redis.Redis) -> None:
    busy = pacer(redis_client, "one")
    for _ in range(busy.rule.burst + 2):
        busy.book()
    assert pacer(redis_client, "two").book() == 0.0


def test_transactional_calls_are_spaced_wider_while_bulk_mail_has_work(
    redis_client: redis.Redis,
) -> None:
    settings = Settings(api_token=TOKEN, rate_limit=SLOW, key_prefix="mq")
    FleetRateLimiter(redis_client, settings, lane="bulk", key_space=Keys("mq")).try_acquire()
    beside = Pacer(redis_client, SLOW, settings.token_key, Keys("mq"))
    waits = [beside.book() for _ in range(beside.rule.burst + 1)]
    assert waits[-1] >= beside.rule.interval_beside_bulk - 1.0
    assert beside.rule.interval_beside_bulk > beside.rule.interval


def test_a_campaign_holding_the_window_spreads_what_is_left_over_the_window(
    redis_client: redis.Redis,
) -> None:
    keys = Keys("mq")
    seconds, micros = redis_client.time()
    now_us = seconds * 1_000_000 + micros
    redis_client.zadd(keys.rate_limit_bulk("tk"), {f"b{i}": now_us for i in range(30)})
    redis_client.set(keys.bulk_demand("tk"), "1", px=60_000)
    beside = pacer(redis_client)
    waits = [beside.book() for _ in range(beside.rule.burst + 1)]
    window = SLOW.period + 0.25
    expected = interval_for(beside.rule, window, SLOW, 0, 30, True)
    assert expected > beside.rule.interval_beside_bulk  # what is left, not the base spacing
    assert waits[-1] == pytest.approx(expected, abs=0.5)
