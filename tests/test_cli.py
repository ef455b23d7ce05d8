"""The ``mailqueue`` command line, against a private Redis and the local Mailtrap over HTTP."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from click.testing import CliRunner, Result

import mailqueue
import mailqueue.store.status as status_module
from mailqueue.cli import cli, message_from_options
from mailqueue.client import default
from mailqueue.deliver.drain import Drainer
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import free_port
from mailqueue.testing.worker import WorkerProcess, settings_env

TOKEN = "cli-test-token-5f0c9e"
FROM = "Shop <shop@example.com>"
TEMPLATE = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(token=TOKEN) as server:
        yield server


@pytest.fixture
def settings(redis_url: str, mailtrap: LocalMailtrap) -> Settings:
    configured = mailtrap.settings(
        redis_url,
        rate_limit="1000/1s",
        connect_timeout=2.0,
        read_timeout=2.0,
        max_retries=0,
    )
    mailqueue.configure(configured)
    return configured


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def drain() -> None:
    """Deliver what is queued, in this process (a worker's drain without a worker)."""
    drainer = Drainer(default().drain_parts)
    try:
        drainer.drain(budget=10)
    finally:
        drainer.close()


def send_plain(*extra: str) -> str:
    result = invoke(
        "send",
        "--from",
        FROM,
        "--to",
        "alice@example.com",
        "--subject",
        "Hi",
        "--text",
        "Hello",
        *extra,
    )
    assert result.exit_code == 0, result.output
    return result.stdout.strip()


def assert_one_error_line(result: Result, *fragments: str) -> None:
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.output


# -- send -------------------------------------------------------------------


def test_send_prints_the_send_id_of_a_queued_record(settings: Settings) -> None:
    send_id = send_plain()

    record = mailqueue.get_status(send_id)
    assert record is not None
    assert record["state"] == "queued"


def test_send_with_flags_reaches_mailtrap_with_every_field(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    attachment = tmp_path / "invoice.pdf"
    attachment.write_bytes(b"%PDF-1.4 demo")

    send_plain(
        "--cc",
        "bob@example.com",
        "--tag",
        "orders",
        "--metadata",
        "order=42",
        "--attach",
        str(attachment),
    )
    drain()

    payload = mailtrap.accepted[0].payload
    assert payload["cc"] == [{"email": "bob@example.com"}]
    assert payload["category"] == "orders"
    variables = dict(payload["custom_variables"])
    # The worker adds its tag on the wire, for Email Logs look-ups after a lost answer.
    assert variables.pop("mq_tag").endswith(".0.0.0")
    assert variables == {"order": "42"}
    assert payload["attachments"][0]["filename"] == "invoice.pdf"
    assert payload["attachments"][0]["type"] == "application/pdf"
    assert base64.b64decode(payload["attachments"][0]["content"]) == b"%PDF-1.4 demo"


def test_send_reads_a_json_message_from_stdin(settings: Settings, mailtrap: LocalMailtrap) -> None:
    message = {"from_email": FROM, "to": ["carol@example.com"], "subject": "S", "text": "T"}

    result = invoke("send", "--json", "-", input=json.dumps(message))
    drain()

    assert result.exit_code == 0, result.output
    assert mailtrap.accepted[0].recipients == ("carol@example.com",)


def test_send_flags_override_the_json_message(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    source = tmp_path / "message.json"
    source.write_text(
        json.dumps({"from_email": FROM, "to": ["a@example.com"], "subject": "Old", "text": "T"})
    )

    result = invoke("send", "--json", str(source), "--subject", "New")
    drain()

    assert result.exit_code == 0, result.output
    assert mailtrap.accepted[0].payload["subject"] == "New"


def test_send_with_a_repeated_idempotency_key_prints_the_first_send_id(settings: Settings) -> None:
    first = send_plain("--idempotency-key", "order-42")
    second = send_plain("--idempotency-key", "order-42")

    assert second == first


def test_bad_address_prints_one_error_line_naming_the_field_and_enqueues_nothing(
    settings: Settings, redis_client: redis.Redis
) -> None:
    result = invoke(
        "send", "--from", FROM, "--to", "not an address", "--subject", "S", "--text", "T"
    )

    # The flag and the value typed, not the message's field and index.
    assert_one_error_line(result, "--to 'not an address': not an email address")
    assert redis_client.keys("{mq}:send:*") == []


def test_a_bad_address_from_json_names_its_key(settings: Settings) -> None:
    message = {"from_email": FROM, "to": ["ok@example.com", "bad@"], "subject": "S", "text": "T"}

    result = invoke("send", "--json", "-", input=json.dumps(message))

    assert_one_error_line(result, "Invalid email address in to[1]: 'bad@' (nothing after the @)")


def test_missing_from_address_names_the_flag_and_the_default_setting(settings: Settings) -> None:
    result = invoke("send", "--to", "a@example.com", "--subject", "S", "--text", "T")

    assert_one_error_line(result, "--from is required", "MAILQUEUE_DEFAULT_FROM_EMAIL")


def test_unreadable_json_file_names_the_option_and_the_file(settings: Settings) -> None:
    result = invoke("send", "--json", "/nonexistent/message.json")

    assert_one_error_line(result, "--json", "/nonexistent/message.json")


def test_json_that_is_not_an_object_is_refused(settings: Settings) -> None:
    result = invoke("send", "--json", "-", input="[1, 2]")

    assert_one_error_line(result, "--json", "object")


def test_malformed_metadata_names_the_option(settings: Settings) -> None:
    result = invoke(
        "send", "--from", FROM, "--to", "a@example.com", "--text", "T", "--metadata", "novalue"
    )

    assert_one_error_line(result, "--metadata[0]", "KEY=VALUE")


def test_missing_attachment_names_the_option_and_the_file(settings: Settings) -> None:
    result = invoke(
        "send",
        "--from",
        FROM,
        "--to",
        "a@example.com",
        "--text",
        "T",
        "--attach",
        "/nonexistent/file.pdf",
    )

    assert_one_error_line(result, "--attach[0]", "/nonexistent/file.pdf")


def test_unreachable_redis_is_one_error_line_naming_the_url_without_its_password(
    mailtrap: LocalMailtrap,
) -> None:
    port = free_port()
    mailqueue.configure(
        Settings(
            api_token=TOKEN, api_url=mailtrap.url, broker_url=f"redis://:hunter2@127.0.0.1:{port}/0"
        )
    )

    result = invoke(
        "send", "--from", FROM, "--to", "a@example.com", "--subject", "S", "--text", "T"
    )

    assert_one_error_line(result, "Redis", f"127.0.0.1:{port}")
    assert "hunter2" not in result.output


def test_message_from_options_keeps_only_the_flags_given() -> None:
    message = message_from_options(from_email=FROM, to=["a@example.com"], text="T")

    assert message == {"from_email": FROM, "to": ["a@example.com"], "text": "T"}


# -- status -----------------------------------------------------------------


def test_status_json_is_the_status_record(settings: Settings) -> None:
    send_id = send_plain()
    drain()

    result = invoke("status", send_id, "--json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == mailqueue.get_status(send_id)


def test_status_table_shows_state_recipients_and_message_ids(
    settings: Settings, mailtrap: LocalMailtrap
) -> None:
    send_id = send_plain()
    drain()

    result = invoke("status", send_id)

    assert result.exit_code == 0, result.output
    assert "sent" in result.stdout
    assert "alice@example.com" in result.stdout
    assert mailtrap.accepted[0].message_ids[0] in result.stdout


def test_status_table_shows_the_error_of_a_failed_send(settings: Settings) -> None:
    result = invoke(
        "send", "--from", FROM, "--to", "x@example.invalid", "--subject", "S", "--text", "T"
    )
    send_id = result.stdout.strip()
    drain()

    shown = invoke("status", send_id).stdout

    assert "failed" in shown
    assert "permanent" in shown


def test_status_of_an_unknown_send_is_an_error(settings: Settings) -> None:
    result = invoke("status", "0123456789abcdef")

    assert_one_error_line(result, "0123456789abcdef")


def test_status_watch_returns_once_the_send_is_final(settings: Settings) -> None:
    send_id = send_plain()
    drain()

    result = invoke("status", send_id, "--watch", "--timeout", "5")

    assert result.exit_code == 0, result.output
    assert "sent" in result.stdout


def test_status_watch_gives_up_after_its_timeout(settings: Settings) -> None:
    send_id = send_plain()

    result = invoke("status", send_id, "--watch", "--timeout", "0.5", "--interval", "0.1")

    assert_one_error_line(result, "--timeout", "queued")


def test_status_of_a_queued_send_shows_the_backlog(settings: Settings) -> None:
    send_plain()
    send_id = send_plain()

    shown = invoke("status", send_id).stdout

    assert "backlog   2 message(s) in the outbox waiting for a worker; 0 drains running" in shown


def test_status_of_a_queued_send_shows_how_many_wait_before_it(settings: Settings) -> None:
    taken, before, mine = send_plain(), send_plain(), send_plain()
    client = default()
    # A worker has read the first and not finished it: it is in flight, not ahead.
    (envelope,) = client.outbox.read("a-worker", client.keys.outbox, 1)
    assert envelope.send_id == taken

    shown = invoke("status", mine).stdout
    first = invoke("status", before).stdout

    assert "ahead     1 message(s) queued before it wait for a worker" in shown
    assert "ahead     0 message(s) queued before it" in first
    assert "ahead" not in invoke("status", taken).stdout


def test_status_says_no_worker_is_draining_a_send_left_waiting(
    settings: Settings, redis_client: redis.Redis
) -> None:
    send_id = send_plain()
    # As if it had been queued a minute ago and no drain had run since.
    redis_client.hset(f"{{mq}}:send:{send_id}", "updated_at", "2020-01-01T00:00:00.000Z")

    shown = invoke("status", send_id).stdout
    watched = invoke("status", send_id, "--watch", "--timeout", "0.2", "--interval", "0.1")

    assert "no worker has drained the queue" in shown
    assert "mailqueue worker" in shown
    assert_one_error_line(watched, "--timeout", "queued", "no worker has drained")


def test_status_of_a_fresh_send_does_not_cry_wolf(settings: Settings) -> None:
    send_id = send_plain()

    assert "no worker" not in invoke("status", send_id).stdout


def test_output_never_shows_the_api_token(settings: Settings) -> None:
    send_id = send_plain()
    drain()

    outputs = [
        invoke("status", send_id).output,
        invoke("status", send_id, "--json").output,
        invoke("dead-letters", "list").output,
    ]

    assert all(TOKEN not in output for output in outputs)


# -- campaign ---------------------------------------------------------------


def write_csv(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_campaign_is_one_batch_send_with_merge_data(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    csv_path = write_csv(
        tmp_path / "list.csv", "email,name\nann@example.com,Ann\nben@example.com,Ben\n"
    )

    result = invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM)
    drain()

    assert result.exit_code == 0, result.output
    send_id = result.stdout.strip().splitlines()[-1]
    status_record = mailqueue.get_status(send_id)
    assert status_record is not None and status_record["state"] == "sent"
    merge = {m.recipients[0]: m.payload["template_variables"] for m in mailtrap.accepted}
    assert merge == {"ann@example.com": {"name": "Ann"}, "ben@example.com": {"name": "Ben"}}
    # Campaigns are promotional: Mailtrap's bulk stream unless told otherwise.
    assert {m.stream for m in mailtrap.accepted} == {"bulk"}


def test_campaign_stream_transactional_sends_to_the_transactional_url(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    csv_path = write_csv(tmp_path / "list.csv", "email,name\nann@example.com,Ann\n")

    result = invoke(
        "campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM,
        "--individual", "--stream", "transactional",
    )  # fmt: skip
    drain()

    assert result.exit_code == 0, result.output
    assert [m.stream for m in mailtrap.accepted] == ["transactional"]


def test_campaign_individual_queues_one_send_per_row(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    rows = "".join(f"user{n}@example.com,{n}\n" for n in range(7))
    csv_path = write_csv(tmp_path / "list.csv", "email,code\n" + rows)

    result = invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM, "--individual")
    drain()

    assert result.exit_code == 0, result.output
    assert "queued 7 sends" in result.stderr
    assert len(mailtrap.accepted) == 7
    assert {m.payload["template_variables"]["code"] for m in mailtrap.accepted} == {
        str(n) for n in range(7)
    }


def test_campaign_individual_prints_a_group_id_that_status_shows(
    settings: Settings, tmp_path: Path
) -> None:
    rows = "".join(f"user{n}@example.com\n" for n in range(3))
    csv_path = write_csv(tmp_path / "list.csv", "email\n" + rows)
    group_id = invoke(
        "campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM, "--individual"
    ).stdout.strip()
    drain()

    shown = invoke("status", group_id)
    as_json = invoke("status", group_id, "--json")

    assert shown.exit_code == 0, shown.output
    assert f"group     {group_id}" in shown.stdout
    assert "sent=3" in shown.stdout
    assert json.loads(as_json.stdout) == {
        "group": group_id,
        "sends": 3,
        "finished": 3,
        "counts": {"sent": 3},
    }


def test_campaign_reads_an_excel_csv_with_a_byte_order_mark_and_semicolons(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("email;name\r\nann@example.com;Ann\r\n".encode("utf-8-sig"))

    result = invoke("campaign", str(path), "--template-id", TEMPLATE, "--from", FROM)
    drain()

    assert result.exit_code == 0, result.output
    assert mailtrap.accepted[0].payload["template_variables"] == {"name": "Ann"}


def test_a_5000_row_excel_export_reaches_mailtrap_whole_once_per_address(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    # Over 64 KiB, byte-order mark, ';' and CRLF, as Excel writes it in a
    # decimal-comma locale; and row 5002 repeats row 2 in capitals.
    lines = [
        "email;first name",
        *(f"user{n}@example.com;Name {n}" for n in range(5000)),
        "USER0@Example.com;Again",
    ]
    path = tmp_path / "excel.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8-sig"))
    assert path.stat().st_size > 64 * 1024

    result = invoke(
        "campaign", str(path), "--template-id", TEMPLATE, "--from", FROM, "--name", "excel"
    )
    drain()

    assert result.exit_code == 0, result.output
    assert "queued 5,000 recipients in 10 parts; 1 repeated address left out (row 5002)" in (
        result.stderr
    )
    record = mailqueue.get_campaign("excel")
    assert record is not None
    assert (record["recipients"], record["duplicates"], record["counts"]) == (
        5000,
        1,
        {"sent": 5000, "waiting": 0},
    )
    accepted = {m.recipients[0]: m.payload["template_variables"] for m in mailtrap.accepted}
    assert len(mailtrap.accepted) == len(accepted) == 5000
    assert accepted["user1694@example.com"] == {"first name": "Name 1694"}


def test_campaign_with_a_subject_and_text_and_a_broken_quote(
    settings: Settings, mailtrap: LocalMailtrap, tmp_path: Path
) -> None:
    good = write_csv(tmp_path / "good.csv", "email\nann@example.com\nben@example.com\n")
    broken = write_csv(
        tmp_path / "broken.csv", 'email,name\nann@example.com,"Ann\nben@example.com,Ben\n'
    )

    sent = invoke(
        "campaign", good, "--subject", "Spring", "--text", "Hello", "--from", FROM, "--individual"
    )
    refused = invoke("campaign", broken, "--subject", "Spring", "--text", "Hello", "--from", FROM)
    drain()

    assert sent.exit_code == 0, sent.output
    assert sorted(
        (m.recipients, m.payload["subject"], m.payload["text"]) for m in mailtrap.accepted
    ) == [(("ann@example.com",), "Spring", "Hello"), (("ben@example.com",), "Spring", "Hello")]
    assert_one_error_line(refused, f"{broken}: row 2: a quoted cell is never closed")


def test_campaign_without_an_email_column_names_the_columns_found(
    settings: Settings, tmp_path: Path
) -> None:
    csv_path = write_csv(tmp_path / "list.csv", "mail,name\nann@example.com,Ann\n")

    result = invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM)

    assert_one_error_line(result, "'email' column", "'mail', 'name'")


def test_campaign_with_a_bad_address_names_the_row_and_queues_nothing(
    settings: Settings, tmp_path: Path, redis_client: redis.Redis
) -> None:
    csv_path = write_csv(tmp_path / "list.csv", "email\nok@example.com\nbroken\n")

    result = invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM, "--individual")

    assert_one_error_line(result, f"{csv_path}: row 3: 'broken' is not an email address")
    assert redis_client.keys("{mq}:send:*") == []


# -- dead letters -----------------------------------------------------------


def failed_send() -> str:
    result = invoke(
        "send", "--from", FROM, "--to", "x@example.invalid", "--subject", "S", "--text", "T"
    )
    drain()
    return result.stdout.strip()


def test_dead_letters_list_shows_a_failed_send(settings: Settings) -> None:
    send_id = failed_send()

    result = invoke("dead-letters", "list")

    assert result.exit_code == 0, result.output
    assert send_id in result.stdout
    assert "failed" in result.stdout


def test_dead_letters_list_json(settings: Settings) -> None:
    send_id = failed_send()

    result = invoke("dead-letters", "list", "--json")

    letters = json.loads(result.stdout)
    assert [letter["send_id"] for letter in letters] == [send_id]
    assert letters[0]["state"] == "failed"


def test_dead_letters_requeue_sends_it_again(settings: Settings, mailtrap: LocalMailtrap) -> None:
    send_id = failed_send()
    before = mailtrap.stats.requests

    result = invoke("dead-letters", "requeue", send_id)

    assert result.exit_code == 0, result.output
    assert "requeued 1" in result.stdout
    status_record = mailqueue.get_status(send_id)
    assert status_record is not None and status_record["state"] == "queued"
    drain()
    assert mailtrap.stats.requests == before + 1
    record: Mapping[str, Any] = mailqueue.get_status(send_id) or {}
    assert record["state"] == "failed"
    assert record["attempts"] == 2


def test_dead_letters_requeue_of_an_unknown_id_is_an_error(settings: Settings) -> None:
    result = invoke("dead-letters", "requeue", "0123456789abcdef")

    assert result.stdout.strip() == "requeued 0 send(s)"
    assert_one_error_line(result, "not dead letters")


def test_dead_letters_requeue_needs_ids_or_all(settings: Settings) -> None:
    result = invoke("dead-letters", "requeue")

    assert_one_error_line(result, "--all")


def test_dead_letters_purge_all_empties_the_list(settings: Settings) -> None:
    failed_send()

    result = invoke("dead-letters", "purge", "--all")

    assert "purged 1" in result.stdout
    assert invoke("dead-letters", "list").stdout.strip() == "no dead letters"


# -- processes --------------------------------------------------------------


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailqueue", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_worker_passes_its_arguments_to_celery_worker() -> None:
    result = run_cli("worker", "--help")

    assert result.returncode == 0
    assert "celery worker" in result.stdout.lower() or "--concurrency" in result.stdout


def test_local_mailtrap_passes_its_arguments_through() -> None:
    result = invoke("local-mailtrap", "--help")

    assert "--fault-rate" in result.stdout


def test_serve_webhooks_without_secrets_refuses_to_start(redis_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILTRAP_", "MAILQUEUE_"))}
    env["MAILQUEUE_BROKER_URL"] = redis_url

    result = run_cli("serve-webhooks", "--port", str(free_port()), env=env)

    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr


def test_serve_webhooks_answers_tracking_posts(redis_url: str) -> None:
    port = free_port()
    env = {**os.environ, **settings_env(Settings(broker_url=redis_url))}
    env["MAILTRAP_TRACKING_SECRET"] = "secret"
    process = subprocess.Popen(
        [sys.executable, "-m", "mailqueue", "serve-webhooks", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/mailtrap/tracking/"
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = requests.post(url, data=b'{"events": []}', timeout=2)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert answer.status_code == 401  # unsigned
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_python_dash_m_mailqueue_shows_every_command() -> None:
    result = run_cli("--help")

    for command in (
        "send",
        "status",
        "campaign",
        "dead-letters",
        "worker",
        "serve-webhooks",
        "local-mailtrap",
        "demo",
    ):
        assert command in result.stdout


def test_campaign_batch_with_a_bad_address_names_the_csv_row(
    settings: Settings, tmp_path: Path, redis_client: redis.Redis
) -> None:
    csv_path = write_csv(tmp_path / "list.csv", "email\nok@example.com\nbroken\n")

    result = invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM)

    # The file and its row, one index, the reason in words.
    assert_one_error_line(result, f"{csv_path}: row 3: 'broken' is not an email address (no @")
    assert "to[" not in result.stderr
    assert redis_client.keys("{mq}:send:*") == []


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("flags", "last_line"),
    [
        # One send per row: the sends' states.
        (("--individual",), "sent=5"),
        # One batch send: its recipients' states, then the send's.
        ((), "queued=5  send:sent=1"),
        # A named campaign: the campaign's counters, read without a scan.
        (("--name", "spring"), "send:sent=1  sent=5  waiting=0"),
    ],
)
def test_campaign_follow_counts_until_the_campaign_is_final(
    settings: Settings, tmp_path: Path, flags: tuple[str, ...], last_line: str
) -> None:
    rows = "".join(f"user{n}@example.com,{n}\n" for n in range(5))
    csv_path = write_csv(tmp_path / "list.csv", "email,code\n" + rows)

    with WorkerProcess(settings, concurrency=1):
        result = invoke(
            "campaign",
            csv_path,
            "--template-id",
            TEMPLATE,
            "--from",
            FROM,
            *flags,
            "--follow",
            "--timeout",
            "30",
        )

    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == last_line


# -- what a large send, a group and a campaign show ----------------------------


def test_status_of_a_large_send_shows_counts_and_its_first_failures_not_every_recipient(
    settings: Settings, tmp_path: Path
) -> None:
    rows = "".join(f"user{n}@example.{'invalid' if n % 10 == 3 else 'com'}\n" for n in range(30))
    csv_path = write_csv(tmp_path / "list.csv", "email\n" + rows)
    send_id = invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM).stdout
    drain()

    summary = invoke("status", send_id.strip()).stdout

    assert "recipients  30: failed=3  queued=27" in summary
    assert "first failures (3 of 3)" in summary
    for n in (3, 13, 23):
        assert f"user{n}@example.invalid" in summary
    assert "user0@example.com" not in summary
    assert "--all lists every recipient" in summary


def test_status_all_lists_every_recipient_and_failed_only_the_failures(
    settings: Settings, tmp_path: Path
) -> None:
    rows = "".join(f"user{n}@example.{'invalid' if n % 10 == 3 else 'com'}\n" for n in range(30))
    csv_path = write_csv(tmp_path / "list.csv", "email\n" + rows)
    send_id = invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM).stdout.strip()
    drain()

    every = invoke("status", send_id, "--all").stdout
    failed = invoke("status", send_id, "--failed").stdout
    failed_json = json.loads(invoke("status", send_id, "--failed", "--json").stdout)

    assert all(f"user{n}@example." in every for n in range(30))
    assert sorted(line.split()[0] for line in failed.splitlines()[1:]) == [
        "user13@example.invalid",
        "user23@example.invalid",
        "user3@example.invalid",
    ]
    assert set(failed_json["recipients"]) == {
        "user3@example.invalid",
        "user13@example.invalid",
        "user23@example.invalid",
    }


def test_status_failed_lists_the_sends_of_a_group_that_failed(
    settings: Settings, tmp_path: Path
) -> None:
    rows = "".join(f"user{n}@example.{'invalid' if n in (1, 4) else 'com'}\n" for n in range(6))
    csv_path = write_csv(tmp_path / "list.csv", "email\n" + rows)
    group_id = invoke(
        "campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM, "--individual"
    ).stdout.strip()
    drain()

    progress = invoke("status", group_id).stdout
    listed = invoke("status", group_id, "--failed")
    as_json = json.loads(invoke("status", group_id, "--failed", "--json").stdout)

    assert "failed=2" in progress and "--failed lists the sends that failed" in progress
    assert listed.exit_code == 0, listed.output
    failed_ids = {entry["id"] for entry in as_json}
    assert len(failed_ids) == 2
    for send_id in failed_ids:
        record = mailqueue.get_status(send_id)
        assert record is not None and record["state"] == "failed"
        assert send_id in listed.stdout
    assert {entry["error"]["kind"] for entry in as_json} == {"permanent"}


def test_a_group_whose_sends_all_went_out_lists_no_failure(
    settings: Settings, tmp_path: Path
) -> None:
    csv_path = write_csv(tmp_path / "list.csv", "email\nann@example.com\nbob@example.com\n")
    group_id = invoke(
        "campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM, "--individual"
    ).stdout.strip()
    drain()

    assert invoke("status", group_id, "--failed").stdout.strip() == "-"
    assert "--failed" not in invoke("status", group_id).stdout


def test_a_campaigns_updated_at_moves_as_its_recipients_are_sent(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_path = write_csv(tmp_path / "list.csv", "email\nann@example.com\nbob@example.com\n")
    invoke("campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM, "--name", "spring")
    queued = json.loads(invoke("campaign", "status", "spring", "--json").stdout)
    # The worker records its outcomes at a time of its own.
    monkeypatch.setattr(status_module, "now_iso", lambda: "2099-01-01T00:00:00.000Z")

    drain()

    sent = json.loads(invoke("campaign", "status", "spring", "--json").stdout)
    assert sent["counts"].get("sent") == 2
    assert queued["updated_at"] < "2099"
    assert sent["updated_at"] == "2099-01-01T00:00:00.000Z"


def queue_spring_campaign(tmp_path: Path) -> None:
    """Four individual sends of campaign ``spring``, queued from a list by the CLI."""
    rows = "".join(f"user{n}@example.com\n" for n in range(4))
    csv_path = write_csv(tmp_path / "list.csv", "email\n" + rows)
    invoke(
        "campaign", csv_path, "--template-id", TEMPLATE, "--from", FROM,
        "--individual", "--name", "spring",
    )  # fmt: skip


def test_lanes_show_a_paused_campaigns_parts_as_paused_not_waiting(
    settings: Settings, tmp_path: Path
) -> None:
    queue_spring_campaign(tmp_path)
    client = default()
    # A worker read two parts before the pause; the next claim sets them aside.
    [queue] = client.outbox.campaign_queues()
    read = client.outbox.read("worker-1", queue, 2)
    mailqueue.pause_campaign("spring")
    with client.redis.pipeline() as pipe:
        client.outbox.hold(pipe, read[0])
        client.outbox.ack(pipe, read[:1])
        pipe.execute()

    lanes = {(e["lane"], e["stream"]): e for e in json.loads(invoke("lanes", "--json").stdout)}
    shown = invoke("lanes").stdout

    bulk = lanes["bulk", "bulk"]
    assert (bulk["paused"], bulk["waiting"], bulk["in_flight"]) == (4, 0, 0)
    assert bulk["oldest_seconds"] == 0
    assert "paused" in shown.splitlines()[0]

    mailqueue.resume_campaign("spring")
    resumed = {(e["lane"], e["stream"]): e for e in json.loads(invoke("lanes", "--json").stdout)}
    assert resumed["bulk", "bulk"]["paused"] == 0
    assert resumed["bulk", "bulk"]["waiting"] + resumed["bulk", "bulk"]["in_flight"] == 4


def test_a_cancel_leaves_nothing_waiting_at_once_even_with_parts_claimed_by_a_worker(
    settings: Settings, tmp_path: Path
) -> None:
    queue_spring_campaign(tmp_path)
    client = default()
    # A worker claimed two parts and waits on the rate limiter with them.
    [queue] = client.outbox.campaign_queues()
    claimed = client.outbox.read("worker-1", queue, 2)
    assert client.store.claim([e.ref for e in claimed], lease_seconds=30) == ["go", "go"]

    shown = invoke("campaign", "cancel", "spring")

    assert shown.exit_code == 0, shown.output
    assert "waiting=0" in shown.stdout
    assert "cancelled=2" in shown.stdout and "cancelling=2" in shown.stdout
