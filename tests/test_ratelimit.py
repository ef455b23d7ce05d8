"""The fleet-wide rate limiter: behaviour against Redis and the in-memory twin, fleet
properties against a real Redis shared by real processes."""

from __future__ import annotations

import multiprocessing
import random
import time
from multiprocessing.synchronize import Barrier, Event
from typing import Any, cast

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from mailqueue.errors import RateLimited, TransientDeliveryError
from mailqueue.settings import RateLimit, Settings
from mailqueue.store.keys import Keys
from mailqueue.store.ratelimit import (
    MAX_JITTER,
    FleetRateLimiter,
    LaneShares,
    MemoryRateLimiter,
    RateLimiter,
    default_margin,
)

TOKEN = "tok-3f9c1e7a-secret-api-token"


def make_settings(amount: int, period: float) -> Settings:
    return Settings(api_token=TOKEN, rate_limit=RateLimit(amount, period))


class FakeClock:
    """A clock that moves only when a limiter sleeps on it: waits cost no time."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class Limiters:
    """Builds limiters of one kind and reads what they admitted, on their own clock.

    The in-memory twin runs on a FakeClock; the Redis limiter on the Redis
    server's clock, read back from its log. Either way a test checks what was
    admitted per window, never how long anything took.
    """

    def __init__(self, client: redis.Redis | None) -> None:
        self.client = client
        self.clock = FakeClock()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.client is None:
            self.clock.sleep(seconds)
        else:
            time.sleep(seconds)

    def __call__(self, amount: int, period: float, margin: float | None = None) -> RateLimiter:
        settings = make_settings(amount, period)
        if self.client is None:
            return MemoryRateLimiter(settings, margin=margin, clock=self.clock, sleep=self.sleep)
        return FleetRateLimiter(self.client, settings, margin=margin, sleep=self.sleep)

    def acquire(self, limiter: RateLimiter) -> float:
        """Acquire a slot; returns when it was granted, on the limiter's clock (seconds)."""
        limiter.acquire()
        return self.granted_at(limiter)

    def granted_at(self, limiter: RateLimiter) -> float:
        """When ``limiter``'s lane was last granted a slot, on the limiter's clock (seconds)."""
        if isinstance(limiter, MemoryRateLimiter):
            return limiter._state.granted[limiter.lane][-1]
        assert self.client is not None
        log = Keys().rate_limit_bulk if limiter.lane == "bulk" else Keys().rate_limit
        newest: Any = self.client.zrange(log(TOKEN_KEY), -1, -1, withscores=True)
        return float(newest[0][1]) / 1_000_000

    def cooldown_ends(self, limiter: RateLimiter) -> float:
        """When the cool-down in force ends, on the limiter's clock (seconds)."""
        if isinstance(limiter, MemoryRateLimiter):
            return limiter._state.cooldown_until
        assert self.client is not None
        return int(self.client.get(Keys().cooldown(TOKEN_KEY)) or 0) / 1_000_000

    def wait_out_cooldown(self, limiter: RateLimiter) -> None:
        if self.client is None:
            self.clock.sleep(limiter.cooldown_remaining())
            return
        deadline = time.monotonic() + 10
        while limiter.cooldown_remaining() > 0:
            assert time.monotonic() < deadline, "the cool-down never ended"
            time.sleep(0.02)


TOKEN_KEY = make_settings(1, 1.0).token_key


@pytest.fixture(params=["redis", "memory"])
def make_limiter(request: pytest.FixtureRequest) -> Limiters:
    """``make_limiter(amount, period, margin=None)`` builds limiters of one kind."""
    if request.param == "memory":
        return Limiters(None)
    return Limiters(request.getfixturevalue("redis_client"))


def most_in_any_window(times: list[float], width: float) -> int:
    """The most timestamps that one closed window of ``width`` seconds can hold."""
    ordered = sorted(times)
    most, first = 0, 0
    for last, stamp in enumerate(ordered):
        while stamp - ordered[first] > width:
            first += 1
        most = max(most, last - first + 1)
    return most


# -- behaviour, on both implementations ------------------------------------------


def test_grants_amount_slots_at_once_then_refuses(make_limiter: Limiters) -> None:
    limiter = make_limiter(5, 10.0)
    assert [limiter.try_acquire() for _ in range(5)] == [True] * 5
    assert limiter.try_acquire() is False


def test_acquire_takes_a_free_slot_without_waiting(make_limiter: Limiters) -> None:
    make_limiter(5, 10.0).acquire()

    assert make_limiter.sleeps == []


def test_acquire_waits_until_the_oldest_slot_leaves_window_and_margin(
    make_limiter: Limiters,
) -> None:
    limiter = make_limiter(3, 0.3, margin=0.05)

    granted = [make_limiter.acquire(limiter) for _ in range(4)]

    assert make_limiter.sleeps, "the fourth slot was not waited for"
    assert granted[3] - granted[0] >= 0.35
    assert most_in_any_window(granted, 0.35) <= 3


def test_the_in_memory_twin_grants_as_soon_as_the_oldest_slot_leaves() -> None:
    make_limiter = Limiters(None)
    limiter = make_limiter(3, 0.3, margin=0.05)

    granted = [make_limiter.acquire(limiter) for _ in range(4)]

    assert granted[3] - granted[0] == pytest.approx(0.35, abs=MAX_JITTER + 1e-9)


def test_acquire_beyond_max_wait_raises_a_transient_error_naming_the_local_limiter(
    make_limiter: Limiters,
) -> None:
    limiter = make_limiter(1, 10.0)
    limiter.acquire()
    with pytest.raises(RateLimited) as caught:
        limiter.acquire(max_wait=0.2)
    assert make_limiter.sleeps == [], "should refuse at once, not wait max_wait first"
    assert isinstance(caught.value, TransientDeliveryError)
    assert "local" in str(caught.value)
    assert caught.value.retry_after is not None and caught.value.retry_after > 9


def test_acquire_refused_for_max_wait_consumes_no_slot(make_limiter: Limiters) -> None:
    limiter = make_limiter(3, 10.0)
    limiter.penalize(0.2)
    for _ in range(5):
        with pytest.raises(RateLimited):
            limiter.acquire(max_wait=0.05)
    make_limiter.wait_out_cooldown(limiter)
    assert [limiter.try_acquire() for _ in range(3)] == [True] * 3


def test_try_acquire_is_refused_during_a_cooldown(make_limiter: Limiters) -> None:
    limiter = make_limiter(5, 10.0)
    limiter.penalize(5.0)
    assert limiter.try_acquire() is False


def test_acquire_waits_out_a_cooldown(make_limiter: Limiters) -> None:
    limiter = make_limiter(5, 10.0)
    limiter.penalize(0.3)
    ends = make_limiter.cooldown_ends(limiter)

    granted = make_limiter.acquire(limiter)

    assert make_limiter.sleeps, "the cool-down was not waited for"
    assert granted >= ends


def test_penalize_sets_the_cooldown_to_retry_after(make_limiter: Limiters) -> None:
    limiter = make_limiter(5, 10.0)
    assert limiter.cooldown_remaining() == 0.0
    limiter.penalize(60.0)
    assert 50.0 < limiter.cooldown_remaining() <= 60.0


def test_penalize_never_shortens_a_longer_cooldown(make_limiter: Limiters) -> None:
    limiter = make_limiter(5, 10.0)
    limiter.penalize(60.0)
    limiter.penalize(0.1)
    assert limiter.cooldown_remaining() > 50.0


def test_penalize_lengthens_a_shorter_cooldown(make_limiter: Limiters) -> None:
    limiter = make_limiter(5, 10.0)
    limiter.penalize(0.1)
    limiter.penalize(60.0)
    assert limiter.cooldown_remaining() > 50.0


def test_penalize_without_retry_after_cools_down_for_one_period(
    make_limiter: Limiters,
) -> None:
    limiter = make_limiter(5, 60.0)
    limiter.penalize(None)
    assert 50.0 < limiter.cooldown_remaining() <= 60.0


def test_saturated_limiter_never_overruns_a_server_counting_arrivals_a_little_later(
    make_limiter: Limiters,
) -> None:
    # A strict server counts arrivals: grant time plus a network delay that
    # varies. With delays that vary by up to `spread`, the worst case is the
    # most grants in any window of period + spread; it must stay within amount.
    amount, period, spread = 10, 0.4, 0.008
    limiter = make_limiter(amount, period)

    granted = [make_limiter.acquire(limiter) for _ in range(3 * amount + 1)]

    assert most_in_any_window(granted, period + spread) <= amount
    rng = random.Random(7)
    arrivals = [stamp + rng.uniform(0.002, 0.002 + spread) for stamp in granted]
    assert most_in_any_window(arrivals, period) <= amount


# -- lanes, on both implementations ----------------------------------------------------
# amount 20: a reserve of 2 slots for transactional mail, a guaranteed share of 2 for bulk.


def test_lane_shares_of_mailtraps_limit_are_a_tenth_each() -> None:
    assert LaneShares.of(RateLimit(150, 10.0)) == LaneShares(reserve=15, bulk=15)
    assert LaneShares.of(RateLimit(1, 10.0)) == LaneShares(reserve=0, bulk=0)


def test_bulk_takes_all_but_the_reserve_which_stays_for_transactional_mail(
    make_limiter: Limiters,
) -> None:
    transactional = make_limiter(20, 10.0)
    bulk = transactional.for_lane("bulk")

    assert [bulk.try_acquire() for _ in range(19)] == [True] * 18 + [False]
    assert [transactional.try_acquire() for _ in range(3)] == [True, True, False]


def test_transactional_takes_every_slot_while_bulk_has_no_work(make_limiter: Limiters) -> None:
    transactional = make_limiter(20, 10.0)

    assert [transactional.try_acquire() for _ in range(21)] == [True] * 20 + [False]


def test_while_bulk_has_work_transactional_leaves_it_its_guaranteed_share(
    make_limiter: Limiters,
) -> None:
    transactional = make_limiter(20, 10.0)
    bulk = transactional.for_lane("bulk")
    assert bulk.try_acquire()

    assert [transactional.try_acquire() for _ in range(19)] == [True] * 18 + [False]
    assert bulk.try_acquire() is True
    assert bulk.try_acquire() is False


def test_a_bulk_wait_names_when_its_next_slot_frees(make_limiter: Limiters) -> None:
    bulk = make_limiter(20, 10.0, margin=0.0).for_lane("bulk")
    for _ in range(18):
        bulk.acquire()

    with pytest.raises(RateLimited) as caught:
        bulk.acquire(max_wait=0.0)

    assert caught.value.retry_after is not None and 9.0 < caught.value.retry_after <= 10.0


def test_a_cooldown_holds_both_lanes(make_limiter: Limiters) -> None:
    transactional = make_limiter(20, 10.0)
    transactional.for_lane("bulk").penalize(60.0)

    assert transactional.try_acquire() is False
    assert transactional.cooldown_remaining() > 50.0


def test_under_two_floods_both_lanes_are_served_and_the_window_is_kept(
    make_limiter: Limiters,
) -> None:
    amount, period, margin, windows = 20, 0.4, 0.02, 6
    # One thread takes turns for both lanes, tick by tick, on the limiter's own clock.
    transactional = make_limiter(amount, period, margin=margin)
    bulk = transactional.for_lane("bulk")
    granted: dict[str, list[float]] = {"transactional": [], "bulk": []}
    ticks = round(windows * (period + margin) / 0.01)
    for _ in range(ticks):
        # Both lanes take every slot they can, transactional first: the worst case for bulk.
        for limiter in (transactional, bulk):
            while limiter.try_acquire():
                granted[limiter.lane].append(make_limiter.granted_at(limiter))
        make_limiter.sleep(0.01)

    assert most_in_any_window(granted["transactional"] + granted["bulk"], period) <= amount
    # Neither lane is starved: each gets at least its share (2 of 20) of every window...
    assert len(granted["bulk"]) >= 2 * (windows - 1)
    assert len(granted["transactional"]) >= 2 * (windows - 1)
    # ...and transactional mail, asking first, gets all the rest.
    assert len(granted["transactional"]) > len(granted["bulk"])


# -- pure parts ---------------------------------------------------------------------


def test_default_margin_is_a_quarter_second_for_mailtraps_limit() -> None:
    assert default_margin(RateLimit(150, 10.0)) == 0.25


def test_default_margin_shrinks_with_short_periods() -> None:
    assert default_margin(RateLimit(20, 1.0)) == pytest.approx(0.05)


# -- fleet properties: real Redis, real processes ------------------------------------


def _take_slots(url: str, tries: int, start: Barrier, results: multiprocessing.Queue[int]) -> None:
    limiter = FleetRateLimiter(redis.Redis.from_url(url), make_settings(20, 60.0))
    start.wait()
    results.put(sum(limiter.try_acquire() for _ in range(tries)))


def test_processes_share_one_budget_and_use_all_of_it(redis_url: str) -> None:
    # Three processes each try for the whole budget at once: together they
    # get exactly all of it, never more, whatever order their tries land in.
    workers, tries = 3, 20
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(workers)
    results: multiprocessing.Queue[int] = ctx.Queue()
    processes = [
        ctx.Process(target=_take_slots, args=(redis_url, tries, start, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    granted = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=10)

    assert sum(granted) == 20


def _try_after_signal(
    url: str, ready: Event, go: Event, results: multiprocessing.Queue[bool]
) -> None:
    limiter = FleetRateLimiter(redis.Redis.from_url(url), make_settings(100, 10.0))
    ready.set()
    go.wait(timeout=30)
    results.put(limiter.try_acquire())


def test_cooldown_set_in_one_process_holds_back_another(
    redis_client: redis.Redis, redis_url: str
) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Event(), ctx.Event()
    results: multiprocessing.Queue[bool] = ctx.Queue()
    other = ctx.Process(target=_try_after_signal, args=(redis_url, ready, go, results))
    other.start()
    assert ready.wait(timeout=30)
    FleetRateLimiter(redis_client, make_settings(100, 10.0)).penalize(60.0)
    go.set()
    granted = results.get(timeout=30)
    other.join(timeout=10)
    assert granted is False


def test_processes_with_the_same_token_share_state_and_others_do_not(
    redis_client: redis.Redis,
) -> None:
    first = FleetRateLimiter(redis_client, make_settings(2, 10.0))
    same_token = FleetRateLimiter(redis_client, make_settings(2, 10.0))
    other_token = FleetRateLimiter(
        redis_client, Settings(api_token="another-token", rate_limit=RateLimit(2, 10.0))
    )
    assert first.try_acquire() and first.try_acquire()
    assert same_token.try_acquire() is False
    assert other_token.try_acquire() is True


def test_redis_holds_the_token_key_never_the_token(redis_client: redis.Redis) -> None:
    settings = make_settings(5, 10.0)
    limiter = FleetRateLimiter(redis_client, settings)
    limiter.acquire()
    limiter.penalize(5.0)

    names = sorted(name.decode() for name in redis_client.scan_iter())
    key_space = Keys()
    assert names == sorted(
        [key_space.rate_limit(settings.token_key), key_space.cooldown(settings.token_key)]
    )
    stored = [
        member.decode()
        for member in cast(
            list[bytes], redis_client.zrange(Keys().rate_limit(settings.token_key), 0, -1)
        )
    ]
    stored.append(redis_client.get(Keys().cooldown(settings.token_key)).decode())  # type: ignore[union-attr]
    assert all(TOKEN not in text for text in [*names, *stored])


def test_limiter_keys_expire_on_their_own(redis_client: redis.Redis) -> None:
    settings = make_settings(5, 10.0)
    limiter = FleetRateLimiter(redis_client, settings)
    limiter.acquire()
    limiter.penalize(5.0)
    assert 0 < redis_client.pttl(Keys().rate_limit(settings.token_key)) <= 11_300
    assert 0 < redis_client.pttl(Keys().cooldown(settings.token_key)) <= 5_001


def test_unreachable_redis_is_reported_as_broker_unavailable() -> None:
    from mailqueue.errors import BrokerUnavailable
    from mailqueue.testing.redis_server import free_port

    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    limiter = FleetRateLimiter(client, make_settings(5, 10.0))
    with pytest.raises(BrokerUnavailable):
        limiter.acquire()


def _acquire_once(limiter: FleetRateLimiter) -> None:
    limiter.acquire()


def test_a_limiter_copied_into_forked_workers_counts_every_grant(
    redis_client: redis.Redis,
) -> None:
    # Celery's prefork pool copies a limiter built before the fork into every child.
    settings = make_settings(10, 10.0)
    limiter = FleetRateLimiter(redis_client, settings)
    limiter.acquire()
    child = multiprocessing.get_context("fork").Process(target=_acquire_once, args=(limiter,))
    child.start()
    child.join(timeout=30)
    limiter.acquire()
    assert child.exitcode == 0
    assert redis_client.zcard(Keys().rate_limit(settings.token_key)) == 3


def test_bulk_lane_keys_hold_no_token_and_expire(redis_client: redis.Redis) -> None:
    settings = make_settings(5, 10.0)
    bulk = FleetRateLimiter(redis_client, settings, lane="bulk")
    bulk.acquire()

    names = sorted(name.decode() for name in redis_client.scan_iter())
    assert names == sorted(
        [Keys().rate_limit_bulk(settings.token_key), Keys().bulk_demand(settings.token_key)]
    )
    assert all(TOKEN not in name for name in names)
    assert all(0 < redis_client.pttl(name) <= 11_300 for name in names)


def test_a_route_picks_the_lane_and_the_tokens_window(redis_client: redis.Redis) -> None:
    from mailqueue.core.routing import resolve_route

    settings = make_settings(20, 10.0)
    bulk = FleetRateLimiter(redis_client, resolve_route(settings, stream="bulk"))
    transactional = FleetRateLimiter(redis_client, settings)

    assert bulk.lane == "bulk"
    assert [bulk.try_acquire() for _ in range(19)] == [True] * 18 + [False]
    assert transactional.try_acquire() is True
