"""``mailqueue reconcile``: what Email Logs say a send did, recorded and printed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
from click.testing import CliRunner, Result

import mailqueue
from mailqueue import build_payload
from mailqueue.cli import cli
from mailqueue.client import default
from mailqueue.core.calltag import Tag, tag_call
from mailqueue.settings import Settings
from mailqueue.store.status import PartRef, PartResult
from mailqueue.testing import LocalMailtrap

MESSAGE = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Receipt",
    "text": "Thanks",
}


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(logs_delay=0.0) as server:
        yield server


@pytest.fixture
def settings(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    configured = mailtrap.settings(redis_url)
    mailqueue.configure(configured)
    return configured


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def failed_send_that_went_out_twice(mailtrap: LocalMailtrap, send_id: str) -> None:
    """A send recorded failed (its answers were lost) that Mailtrap accepted on two attempts."""
    store = default().store
    with store.redis.pipeline() as pipe:
        store.create(pipe, send_id, parts=1, created_at="2020-01-01T00:00:00.000Z")
        store.record(pipe, PartRef(send_id, 0), PartResult("failed", {"alice@example.com": None}))
        store.note_doubtful(pipe, send_id)
        pipe.execute()
    (call,) = build_payload(MESSAGE, default().settings)
    for attempt in (0, 1):
        tagged, _ = tag_call(call, [Tag(send_id, 0, 0, attempt)])
        answer = requests.post(
            mailtrap.url + "send",
            json=tagged.json,
            headers={"Api-Token": mailtrap.token},
            timeout=5,
        )
        assert answer.status_code == 200


def test_reconcile_recovers_the_message_id_and_confirms_the_duplicate(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    failed_send_that_went_out_twice(mailtrap, "send-a")
    result = invoke("reconcile", "send-a")
    assert result.exit_code == 0
    assert "send-a" in result.output and "DUPLICATES" in result.output
    record = mailqueue.get_status("send-a")
    assert record is not None
    first = mailtrap.accepted[0].message_ids[0]
    assert record["recipients"]["alice@example.com"] == {"status": "queued", "message_id": first}
    assert record["confirmed_duplicates"] == 1


def test_reconcile_all_covers_every_doubtful_send(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    failed_send_that_went_out_twice(mailtrap, "send-b")
    result = invoke("reconcile", "--all")
    assert result.exit_code == 0
    (row,) = [line.split() for line in result.output.splitlines() if line.startswith("send-b")]
    assert row == ["send-b", "2", "1", "1"]


def test_an_unknown_send_is_one_error_line(settings: Settings) -> None:
    result = CliRunner().invoke(cli, ["reconcile", "nope"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: SEND_ID: no send 'nope'"


def test_logs_that_refuse_the_token_are_one_error_line(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    failed_send_that_went_out_twice(mailtrap, "send-c")
    mailtrap.email_logs.failure = 401
    result = CliRunner().invoke(cli, ["reconcile", "send-c"])
    assert result.exit_code == 1
    assert result.output.startswith("error: Email Logs")
    assert len(result.output.strip().splitlines()) == 1


def test_reconcile_takes_its_rate_limit_slots_under_the_key_prefix(
    redis_url: str, mailtrap: LocalMailtrap
) -> None:
    # The workers' limiters live under the prefix: a look-up from the command
    # line must count against the same fleet-wide windows, not a stray set.
    mailqueue.configure(mailtrap.settings(redis_url, key_prefix="shop"))
    failed_send_that_went_out_twice(mailtrap, "send-d")
    assert invoke("reconcile", "send-d").exit_code == 0
    names = [name.decode() for name in default().redis.scan_iter()]
    assert any(":rl:logs-list-" in name for name in names), names
    assert all(name.startswith("{shop}:") for name in names), names
