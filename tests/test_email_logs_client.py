"""The Email Logs client over real HTTP to the local Mailtrap: look-ups, paging, errors."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import requests

from mailqueue import Settings
from mailqueue.core.calltag import TAG_KEY
from mailqueue.errors import EmailLogsBusy, EmailLogsUnavailable
from mailqueue.mailtrap.email_logs import EmailLogsClient, LogsLimiters, window
from mailqueue.settings import RateLimit
from mailqueue.store.ratelimit import MemoryRateLimiter
from mailqueue.testing import LocalMailtrap


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(logs_delay=0.0) as server:
        yield server


def settings_for(mailtrap: LocalMailtrap) -> Settings:
    return Settings(
        api_token=mailtrap.token,
        api_url=mailtrap.url,
        general_api_url=mailtrap.general_url,
        connect_timeout=1.0,
        read_timeout=2.0,
    )


def client_for(mailtrap: LocalMailtrap, limiters: LogsLimiters | None = None) -> EmailLogsClient:
    return EmailLogsClient(settings_for(mailtrap), mailtrap.token, limiters)


def send(mailtrap: LocalMailtrap, to: str, tag: str | None = None) -> str:
    body = {
        "from": {"email": "sender@example.com"},
        "to": [{"email": to}],
        "subject": "Hi",
        "text": "Hello",
    }
    if tag is not None:
        body["custom_variables"] = {TAG_KEY: tag}
    answer = requests.post(
        mailtrap.url + "send", json=body, headers={"Api-Token": mailtrap.token}, timeout=5
    )
    message_id: str = answer.json()["message_ids"][0]
    return message_id


def now_window() -> tuple:  # type: ignore[type-arg]
    return window(time.time() - 1, time.time())


def test_the_window_spans_the_call_start_to_the_look_up_with_a_margin() -> None:
    since, until = window(1000.0, 1100.0, margin=5.0)
    assert (since.timestamp(), until.timestamp()) == (995.0, 1106.0)
    # A start stamped by a host whose clock runs ahead never makes the
    # window end before it begins (Mailtrap refuses such a window).
    since, until = window(1200.0, 1100.0, margin=5.0)
    assert since < until and since.timestamp() == 1095.0


def test_search_finds_the_recipients_messages_with_their_tags(mailtrap: LocalMailtrap) -> None:
    wanted = send(mailtrap, "a@example.com", "s1.0.0.0")
    send(mailtrap, "other@example.com", "s2.0.0.0")
    with client_for(mailtrap) as logs:
        found = logs.search(["a@example.com"], *now_window())
    assert [(item.message_id, str(item.tag)) for item in found] == [(wanted, "s1.0.0.0")]


def test_search_follows_pages_and_splits_long_recipient_lists(mailtrap: LocalMailtrap) -> None:
    mailtrap.email_logs.page_size = 3
    recipients = [f"recipient-{i:03}-{'x' * 40}@example.com" for i in range(80)]
    ids = {send(mailtrap, address) for address in recipients}
    with client_for(mailtrap) as logs:
        found = logs.search(recipients, *now_window())
    assert {item.message_id for item in found} == ids
    assert mailtrap.email_logs.requests["list"] > 27  # several pages of several requests


def test_a_window_before_the_send_finds_nothing(mailtrap: LocalMailtrap) -> None:
    send(mailtrap, "a@example.com")
    since, until = window(time.time() - 3600, time.time() - 3000)
    with client_for(mailtrap) as logs:
        assert logs.search(["a@example.com"], since, until) == []


def test_get_reads_one_message_or_none(mailtrap: LocalMailtrap) -> None:
    message_id = send(mailtrap, "a@example.com", "s1.0.0.0")
    with client_for(mailtrap) as logs:
        item = logs.get(message_id)
        assert item is not None and item.to == "a@example.com"
        assert logs.get("00000000-0000-0000-0000-000000000000") is None


def test_a_429_is_waited_out_and_the_fleet_cools_down(mailtrap: LocalMailtrap) -> None:
    send(mailtrap, "a@example.com")
    mailtrap.email_logs.list_limit = (1, 0.5)
    limiter = MemoryRateLimiter(Settings(rate_limit=RateLimit(100, 0.5)))
    with client_for(mailtrap, LogsLimiters(limiter, None, None)) as logs:
        first = logs.search(["a@example.com"], *now_window())
        second = logs.search(["a@example.com"], *now_window())
    assert len(first) == len(second) == 1
    assert mailtrap.stats.by_status[429] >= 1


def test_a_rate_limit_longer_than_the_deadline_is_busy_not_absent(
    mailtrap: LocalMailtrap,
) -> None:
    limiter = MemoryRateLimiter(Settings(rate_limit=RateLimit(1, 60.0)))
    limiter.acquire()
    with (
        client_for(mailtrap, LogsLimiters(limiter, None, None)) as logs,
        pytest.raises(EmailLogsBusy),
    ):
        logs.search(["a@example.com"], *now_window(), deadline=time.monotonic() + 0.1)
    assert mailtrap.email_logs.requests["list"] == 0


def test_every_look_up_takes_a_slot_of_the_sending_limit(mailtrap: LocalMailtrap) -> None:
    sending = MemoryRateLimiter(Settings(rate_limit=RateLimit(2, 60.0)))
    with client_for(mailtrap, LogsLimiters(None, None, sending)) as logs:
        logs.search(["a@example.com"], *now_window())
        logs.get("00000000-0000-0000-0000-000000000000")
        assert not sending.try_acquire()  # both slots were taken by the look-ups


def test_a_refused_token_is_unavailable_as_refused(mailtrap: LocalMailtrap) -> None:
    with (
        EmailLogsClient(settings_for(mailtrap), "wrong-token") as logs,
        pytest.raises(EmailLogsUnavailable) as caught,
    ):
        logs.search(["a@example.com"], *now_window())
    assert caught.value.reason == "refused"


def test_a_logs_api_that_keeps_failing_is_unavailable(mailtrap: LocalMailtrap) -> None:
    mailtrap.email_logs.failure = 503
    with client_for(mailtrap) as logs, pytest.raises(EmailLogsUnavailable) as caught:
        logs.search(["a@example.com"], *now_window())
    assert caught.value.reason == "unreachable"
    assert mailtrap.email_logs.requests["list"] == 3


def test_an_unreachable_logs_api_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        api_token="t", general_api_url=f"http://127.0.0.1:{port}/api/", connect_timeout=0.5
    )
    with EmailLogsClient(settings, "t") as logs, pytest.raises(EmailLogsUnavailable) as caught:
        logs.search(["a@example.com"], *now_window())
    assert caught.value.reason == "unreachable"


def test_a_429_without_a_limiter_is_waited_out_by_the_client_itself(
    mailtrap: LocalMailtrap,
) -> None:
    # No fleet limiter to cool down: the client waits (here past its deadline:
    # busy), never asks again at once, and never reads the 429 as "absent".
    send(mailtrap, "a@example.com")
    mailtrap.email_logs.list_limit = (1, 60.0)
    with client_for(mailtrap) as logs:
        assert len(logs.search(["a@example.com"], *now_window())) == 1
        with pytest.raises(EmailLogsBusy):
            logs.search(["a@example.com"], *now_window(), deadline=time.monotonic() + 0.5)
    assert mailtrap.email_logs.requests["list"] == 2
