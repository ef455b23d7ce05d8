"""InFlight: several calls at once, bounded, one thread always kept for transactional mail."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from mailqueue.deliver.inflight import InFlight

DEADLINE = 10.0


def blocked(gate: threading.Event, started: threading.Semaphore) -> Callable[[], None]:
    def call() -> None:
        started.release()
        assert gate.wait(DEADLINE)

    return call


def test_calls_run_at_once_up_to_the_bound() -> None:
    flight = InFlight(3)
    gate, started = threading.Event(), threading.Semaphore(0)
    try:
        for _ in range(3):
            flight.start("transactional", blocked(gate, started))
        assert all(started.acquire(timeout=DEADLINE) for _ in range(3))

        assert flight.running == 3
        assert flight.can_start("transactional") is False
    finally:
        gate.set()
        flight.join()
        flight.close()
    assert flight.running == 0


def test_bulk_calls_leave_one_thread_for_transactional_mail() -> None:
    flight = InFlight(3)
    gate, started = threading.Event(), threading.Semaphore(0)
    try:
        for _ in range(2):
            flight.start("bulk", blocked(gate, started))
        assert all(started.acquire(timeout=DEADLINE) for _ in range(2))

        assert flight.can_start("bulk") is False
        assert flight.can_start("transactional") is True
        flight.start("transactional", blocked(gate, started))
        assert started.acquire(timeout=DEADLINE)
    finally:
        gate.set()
        flight.join()
        flight.close()


def test_a_single_thread_serves_either_lane() -> None:
    flight = InFlight(1)
    try:
        assert flight.can_start("bulk") is True
    finally:
        flight.close()


def test_start_waits_for_room_in_its_lane() -> None:
    flight = InFlight(2)
    gate, started = threading.Event(), threading.Semaphore(0)
    done = threading.Event()
    try:
        flight.start("bulk", blocked(gate, started))
        assert started.acquire(timeout=DEADLINE)
        second = threading.Thread(target=flight.start, args=("bulk", done.set), daemon=True)
        second.start()
        assert not done.wait(0.05)  # the second bulk call has no room yet
        gate.set()
        assert done.wait(DEADLINE)
        second.join(DEADLINE)
    finally:
        gate.set()
        flight.join()
        flight.close()


def test_the_first_error_of_a_call_is_raised_by_join() -> None:
    flight = InFlight(2)

    def fails() -> None:
        raise RuntimeError("redis went away")

    flight.start("transactional", fails)
    with pytest.raises(RuntimeError, match="redis went away"):
        flight.join()
    flight.close()


def test_failed_tells_the_drain_to_stop_taking_work() -> None:
    flight = InFlight(2)
    ended = threading.Event()

    def fails() -> None:
        try:
            raise RuntimeError("boom")
        finally:
            ended.set()

    flight.start("bulk", fails)
    assert ended.wait(DEADLINE)
    while flight.running:
        flight.wait(DEADLINE)

    assert flight.failed() is True
    with pytest.raises(RuntimeError):
        flight.join()
    assert flight.failed() is False  # join handed the error over
    flight.close()
