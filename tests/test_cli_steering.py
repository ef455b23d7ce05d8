"""mailqueue campaign status|pause|resume|cancel, suppressions and scheduled, on a private Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import mailqueue
from mailqueue.cli import cli
from mailqueue.client import Client, default
from mailqueue.core.views import campaign_line, duration
from mailqueue.deliver.drain import Drainer
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import MemoryTransport

TEMPLATE = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    mailqueue.configure(
        Settings(
            broker_url=redis_url,
            api_token="t",
            rate_limit=RateLimit.parse("100000/1s"),
            coalesce=False,
        )
    )
    yield default()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def drain(client: Client) -> MemoryTransport:
    transport = MemoryTransport()
    Drainer(client.drain_parts, transport=transport).drain(budget=5)
    return transport


def message(index: int) -> dict[str, object]:
    return {
        "from_email": "news@example.com",
        "to": [f"reader{index}@example.com"],
        "subject": "News",
        "text": "Hello",
    }


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


# -- the line, pure ------------------------------------------------------------


def test_the_line_shows_bar_share_rate_eta_and_counts() -> None:
    record = {
        "name": "spring",
        "state": "running",
        "recipients": 200,
        "counts": {"waiting": 150, "sent": 40, "delivered": 10},
        "rate_per_second": 12.5,
        "eta_seconds": 12.0,
    }
    line = campaign_line(record, width=10)
    assert line.startswith("spring  running  [##........]   25%  50/200  12.5/s  ETA 12s")
    assert line.endswith("waiting=150  sent=40  delivered=10")


def test_a_paused_line_says_why() -> None:
    record = {"name": "c", "state": "paused", "recipients": 1, "counts": {"waiting": 1}}
    assert campaign_line({**record, "reason": "bounce rate 9%", "eta_seconds": None}).endswith(
        "(paused: bounce rate 9%)"
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (59.6, "1m 00s"), (125, "2m 05s"), (3725, "1h 02m")]
)
def test_durations_read_as_people_write_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


# -- campaign --------------------------------------------------------------------


def test_campaign_status_pause_resume_cancel_by_name(client: Client) -> None:
    client.enqueue_many([message(i) for i in range(3)], campaign="spring")
    status = invoke("campaign", "status", "spring")
    assert status.exit_code == 0 and "spring  running" in status.stdout and "0/3" in status.stdout
    assert "spring  paused" in invoke("campaign", "pause", "spring").stdout
    assert drain(client).calls == []
    assert "spring  running" in invoke("campaign", "resume", "spring").stdout
    drain(client)
    assert "spring  finished" in invoke("campaign", "status", "spring").stdout
    assert "spring  cancelled" in invoke("campaign", "cancel", "spring").stdout
    assert_one_error_line(invoke("campaign", "resume", "spring"), "cancelled")


def test_campaign_status_watch_ends_when_the_campaign_is_finished(client: Client) -> None:
    client.enqueue_many([message(i) for i in range(2)], campaign="spring")
    drain(client)
    result = invoke("campaign", "status", "spring", "--watch", "--interval", "0.1")
    assert result.exit_code == 0
    assert "finished" in result.stdout.splitlines()[-1]


def test_campaign_status_watch_gives_up_at_its_timeout(client: Client) -> None:
    client.enqueue_many([message(0)], campaign="spring")
    client.pause_campaign("spring")
    result = invoke(
        "campaign", "status", "spring", "--watch", "--interval", "0.1", "--timeout", "0.3"
    )
    assert_one_error_line(result, "--timeout", "paused")


def test_an_unknown_campaign_is_one_error_line(client: Client) -> None:
    assert_one_error_line(invoke("campaign", "status", "nothing"), "no campaign named 'nothing'")
    assert_one_error_line(invoke("campaign", "pause", "nothing"), "no campaign named 'nothing'")


def test_a_csv_campaign_with_a_name_can_be_steered(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text("email,first\na@example.com,A\nb@example.com,B\n")
    result = invoke(
        "campaign", str(path), "--template-id", TEMPLATE, "--from", "n@example.com",
        "--individual", "--name", "csv-2030",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = client.get_campaign("csv-2030")
    assert record is not None and record["recipients"] == 2
    batch = invoke(
        "campaign", str(path), "--template-id", TEMPLATE, "--from", "n@example.com",
        "--name", "csv-batch",
    )  # fmt: skip
    assert batch.exit_code == 0, batch.output
    record = client.get_campaign("csv-batch")
    assert record is not None and record["recipients"] == 2


# -- suppressions ----------------------------------------------------------------


def test_suppressions_add_list_remove(client: Client) -> None:
    added = invoke(
        "suppressions", "add", "Alice@Example.com", "--stream", "bulk", "--reason", "asked"
    )
    assert added.exit_code == 0 and "bulk" in added.stdout
    listed = invoke("suppressions", "list").stdout
    assert "Alice@Example.com" in listed and "asked" in listed
    assert "unsuppressed" in invoke("suppressions", "remove", "alice@example.com").stdout
    assert invoke("suppressions", "list").stdout.strip() == "none"


def test_suppressions_export_then_import_round_trips(client: Client, tmp_path: Path) -> None:
    client.suppress("a@example.com", reason="hard_bounce")
    client.suppress("b@example.com", stream="bulk", reason="unsubscribe")
    exported = invoke("suppressions", "export").stdout
    for address in ("a@example.com", "b@example.com"):
        client.unsuppress(address)
    path = tmp_path / "s.csv"
    path.write_text(exported)
    assert "imported 2" in invoke("suppressions", "import", str(path)).stdout
    found = client.get_suppression("b@example.com")
    assert found is not None and (found["stream"], found["reason"]) == ("bulk", "unsubscribe")


def test_a_bad_import_row_is_named_and_nothing_is_imported(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("email\na@example.com\nnot-an-address\n")
    assert_one_error_line(invoke("suppressions", "import", str(path)), "row 3")
    assert len(client.suppressions) == 0


def test_an_import_error_names_the_file_and_row_in_its_own_words(
    client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "s.csv"
    path.write_text("address,reason,stream\na@example.com,x,\nb@example.com,y,marketing\n")

    result = invoke("suppressions", "import", str(path))

    assert_one_error_line(result, f"{path}: row 3: stream must be 'transactional', 'bulk'")
    assert "messages[" not in result.stderr and "None" not in result.stderr
    assert len(client.suppressions) == 0


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ('"a@example.com, b@example.org",x\n', "row 2: the 'address' cell holds 2 addresses"),
        ('"a@example.com\r\nBcc: b@example.org",x\n', "row 2: the 'address' cell holds a line"),
        ('a@example.com,"x\nb@example.com,y\n', "row 2: a quoted cell is never closed"),
        ("bad@,x\n", "row 2: 'bad@' is not an email address (nothing after the @)"),
    ],
    ids=["two addresses", "CRLF and Bcc", "open quote", "bad address"],
)
def test_an_import_takes_one_address_per_row_or_refuses_the_file(
    client: Client, tmp_path: Path, rows: str, fragment: str
) -> None:
    path = tmp_path / "s.csv"
    path.write_text("address,reason\n" + rows)

    result = invoke("suppressions", "import", str(path))

    assert_one_error_line(result, fragment)
    assert "string index" not in result.stderr
    assert len(client.suppressions) == 0


def test_an_excel_import_with_a_repeated_address_is_one_suppression_of_both_streams(
    client: Client, tmp_path: Path
) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(
        "\ufeffEmail;Reason;Stream\r\nann@example.com;a;bulk\r\n"
        "ANN@Example.com;b;transactional\r\nben@example.com;c;\r\n".encode()
    )

    result = invoke("suppressions", "import", str(path))

    assert result.stdout.strip() == "imported 2 suppressions; 1 repeated address merged (row 3)"
    found = client.get_suppression("ann@example.com")
    assert found is not None and found["stream"] is None  # both streams: every stream
    assert len(client.suppressions) == 2


def test_export_guards_formula_cells_and_import_reads_them_back(
    client: Client, tmp_path: Path
) -> None:
    addresses = ["=cmd@example.com", "+sum@example.com", "-x@example.com", "plain@example.com"]
    for address in addresses:
        client.suppress(address, reason="=HYPERLINK(1)")
    exported = invoke("suppressions", "export").stdout

    cells = [cell for line in exported.splitlines()[1:] for cell in line.split(",")[:2]]
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@"))], exported
    assert "'=cmd@example.com" in cells and "plain@example.com" in cells
    for address in addresses:
        client.unsuppress(address)
    path = tmp_path / "s.csv"
    path.write_text(exported)
    assert "imported 4" in invoke("suppressions", "import", str(path)).stdout
    for address in addresses:
        found = client.get_suppression(address)
        assert found is not None, address
        assert (found["address"], found["reason"]) == (address, "=HYPERLINK(1)")


def test_a_missing_import_file_is_one_error_line(client: Client, tmp_path: Path) -> None:
    assert_one_error_line(invoke("suppressions", "import", str(tmp_path / "none.csv")), "CSV")


def test_a_bad_address_is_one_error_line(client: Client) -> None:
    assert_one_error_line(invoke("suppressions", "add", "nobody"), "address")


# -- scheduled -------------------------------------------------------------------


def test_scheduled_list_cancel_reschedule(client: Client) -> None:
    later = time.time() + 3600
    first = client.enqueue({**message(0), "send_at": later})
    second = client.enqueue({**message(1), "send_at": later + 60})
    listed = invoke("scheduled", "list").stdout
    assert listed.index(first) < listed.index(second)
    assert f"{first} cancelled" in invoke("scheduled", "cancel", first).stdout
    assert first not in invoke("scheduled", "list").stdout
    moved = invoke("scheduled", "reschedule", second, "2031-01-01T00:00:00Z")
    assert "until 2031-01-01T00:00:00Z" in moved.stdout
    assert_one_error_line(invoke("scheduled", "cancel", first), "cancelled")
    assert_one_error_line(invoke("scheduled", "reschedule", second, "someday"), "when")
