"""The sync with Mailtrap's own suppression list: the local stand-in over HTTP and a real Redis."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

import mailqueue
from mailqueue.cli import cli
from mailqueue.client import Client
from mailqueue.errors import SuppressionSyncError
from mailqueue.mailtrap.suppression_sync import MailtrapSuppressions, SyncReport, sync_suppressions
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap() as server:
        server.suppressions.page_size = 2  # several pages from a handful of records
        yield server


def sync(client: Client, api: MailtrapSuppressions | None = None) -> SyncReport:
    return sync_suppressions(settings=client.settings, suppressions=client.suppressions, api=api)


@pytest.fixture
def client(redis_url: str, mailtrap: LocalMailtrap) -> Iterator[Client]:
    client = Client(mailtrap.settings(redis_url), publish=lambda options: None)
    yield client
    client.close()


def test_every_page_of_mailtraps_list_is_added_here_with_its_stream(
    client: Client, mailtrap: LocalMailtrap
) -> None:
    mailtrap.suppressions.add("Bounced@Example.com", kind="hard bounce")
    mailtrap.suppressions.add("left@example.com", kind="unsubscription", stream="bulk")
    mailtrap.suppressions.add("angry@example.com", kind="spam complaint", stream="any")

    report = sync(client)

    assert (report.listed, report.added, report.lifted) == (3, 3, 0)
    bounced = client.suppressions.get("bounced@example.com")
    assert bounced is not None
    assert (bounced["reason"], bounced["stream"]) == ("mailtrap:hard_bounce", None)
    left = client.suppressions.get("left@example.com")
    assert left is not None and left["stream"] == "bulk"
    assert client.suppressions.suppressed(["left@example.com"], "transactional") == set()
    # Two pages of two records, and the empty one that ends the list.
    assert mailtrap.suppressions.requests["GET"] == 3
    assert sync(client).added == 0  # nothing new the second time


def test_a_suppression_here_is_kept_and_not_narrowed(
    client: Client, mailtrap: LocalMailtrap
) -> None:
    client.suppressions.suppress("x@example.com", reason="manual")
    mailtrap.suppressions.add("x@example.com", kind="unsubscription", stream="bulk")

    assert sync(client).added == 0
    kept = client.suppressions.get("x@example.com")
    assert kept is not None and (kept["reason"], kept["stream"]) == ("manual", None)


def test_a_lift_here_is_made_at_mailtrap_too_and_then_forgotten(
    client: Client, mailtrap: LocalMailtrap
) -> None:
    mailtrap.suppressions.add("back@example.com")
    mailtrap.suppressions.add("still@example.com")
    sync(client)

    assert client.suppressions.unsuppress("BACK@example.com")
    report = sync(client)

    assert report.lifted == 1
    assert mailtrap.suppressions.emails() == {"still@example.com"}
    assert client.suppressions.get("back@example.com") is None
    assert client.suppressions.lifted() == {}


def test_suppressing_again_here_cancels_the_lift(client: Client, mailtrap: LocalMailtrap) -> None:
    mailtrap.suppressions.add("flip@example.com")
    sync(client)
    client.suppressions.unsuppress("flip@example.com")
    client.suppressions.suppress("flip@example.com", reason="manual")

    assert sync(client).lifted == 0
    assert mailtrap.suppressions.emails() == {"flip@example.com"}


def test_a_suppression_mailtrap_made_after_the_lift_stays(
    client: Client, mailtrap: LocalMailtrap
) -> None:
    client.suppressions.suppress("again@example.com")
    client.suppressions.unsuppress("again@example.com")
    lifted_at = datetime.fromisoformat(client.suppressions.lifted()["again@example.com"])
    # Mailtrap bounced it again a second after the lift.
    mailtrap.suppressions.add("again@example.com", created_at=lifted_at + timedelta(seconds=1))

    report = sync(client)

    assert (report.lifted, report.added) == (0, 1)
    assert client.suppressions.get("again@example.com") is not None


def test_a_refused_token_is_one_clear_error(client: Client, mailtrap: LocalMailtrap) -> None:
    with (
        MailtrapSuppressions(mailtrap.general_url, "not-the-token") as api,
        pytest.raises(SuppressionSyncError, match="refused the API token") as caught,
    ):
        sync(client, api)
    assert caught.value.status_code == 401


def test_without_a_token_nothing_is_asked(redis_url: str) -> None:
    client = Client(Settings(broker_url=redis_url), publish=lambda options: None)
    try:
        with pytest.raises(SuppressionSyncError, match="MAILTRAP_API_TOKEN"):
            sync(client)
    finally:
        client.close()


def test_the_command_reports_what_it_did_or_one_error_line(
    redis_url: str, mailtrap: LocalMailtrap
) -> None:
    mailtrap.suppressions.add("gone@example.com")
    settings = mailtrap.settings(redis_url)
    mailqueue.configure(settings)
    done = CliRunner().invoke(cli, ["suppressions", "sync"], catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "Mailtrap lists 1: 1 added here, 0 lifted at Mailtrap"

    mailqueue.configure(dataclasses.replace(settings, api_token="refused"))
    refused = CliRunner().invoke(cli, ["suppressions", "sync"], catch_exceptions=False)
    assert refused.exit_code == 1
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("error: ") and "refused the API token" in line
