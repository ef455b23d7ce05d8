"""End-to-end fixtures: a local Mailtrap, settings pointing at it, and real worker processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.worker import WorkerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    # Email Logs list a message shortly after accepting it, well inside the settle delay.
    with LocalMailtrap(logs_delay=0.2) as server:
        yield server


@pytest.fixture
def make_settings(redis_url: str, mailtrap: LocalMailtrap) -> Callable[..., Settings]:
    def build(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "reconcile_settle": 0.5,
            "connect_timeout": 2.0,
            "read_timeout": 2.0,
            "retry_backoff": 0.5,
            "retry_backoff_max": 2.0,
            "reclaim_idle": 10.0,
            "visibility_timeout": 15.0,
            "rate_limit": "1000/1s",
        }
        values.update(overrides)
        settings = mailtrap.settings(redis_url, **values)
        mailqueue.configure(settings)
        return settings

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def worker(settings: Settings) -> Iterator[WorkerProcess]:
    with WorkerProcess(settings, concurrency=2) as process:
        yield process
        # The test is over: a SIGKILL ends it at once, where a warm shutdown
        # waits for the pool to wind down. Shutdown has its own tests.
        process.kill()
