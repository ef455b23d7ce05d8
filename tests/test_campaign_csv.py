"""Campaign files as spreadsheets export them, into messages."""

from __future__ import annotations

import pytest

from mailqueue import build_payload
from mailqueue.campaign_csv import (
    Recipient,
    batch_message,
    individual_messages,
    read_recipients,
    recipient_of,
)
from mailqueue.errors import ValidationError
from mailqueue.settings import Settings

TEMPLATE = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
ROWS = [
    Recipient(email="ann@example.com", line=2, merge={"name": "Ann"}),
    Recipient(email="ben@example.com", line=3, merge={"name": "Ben"}),
]


@pytest.mark.parametrize(
    "text",
    [
        "email,name\nann@example.com,Ann\nben@example.com,Ben\n",
        "email;name\r\nann@example.com;Ann\r\nben@example.com;Ben\r\n",
        "email\tname\nann@example.com\tAnn\nben@example.com\tBen\n",
        "\ufeffemail,name\r\nann@example.com,Ann\r\nben@example.com,Ben\r\n",
        '"Email";"name"\n"ann@example.com";"Ann"\n"ben@example.com";"Ben"\n',
    ],
    ids=["comma", "semicolon", "tab", "byte-order mark", "quoted, capitalized"],
)
def test_spreadsheet_dialects_read_the_same_recipients(text: str) -> None:
    assert read_recipients(text) == ROWS


def test_a_single_column_file_is_read_as_plain_csv() -> None:
    recipients = read_recipients("email\nann@example.com\nben@example.com\n")

    assert [r.email for r in recipients] == ["ann@example.com", "ben@example.com"]
    assert recipients[0].merge == {}


def test_a_field_with_the_delimiter_inside_quotes_stays_whole() -> None:
    recipients = read_recipients('email;note\nann@example.com;"a; b"\n')

    assert recipients[0].merge == {"note": "a; b"}


def test_missing_email_column_names_the_columns_found() -> None:
    with pytest.raises(ValidationError) as caught:
        read_recipients("\ufeffmail,first name\nann@example.com,Ann\n", source="list.csv")

    assert caught.value.field == "list.csv"
    assert "'mail', 'first name'" in str(caught.value)


def test_an_empty_email_names_its_line() -> None:
    with pytest.raises(ValidationError, match="line 3"):
        read_recipients("email,name\nann@example.com,Ann\n,Ben\n")


def test_blank_lines_are_skipped_and_lines_counted() -> None:
    recipients = read_recipients("email\n\nann@example.com\n\nben@example.com\n")

    assert [r.line for r in recipients] == [3, 5]


def test_a_file_with_no_rows_has_no_recipients() -> None:
    with pytest.raises(ValidationError, match="no recipients"):
        read_recipients("email,name\n")


def test_individual_messages_carry_each_rows_merge_fields() -> None:
    messages = individual_messages(ROWS, TEMPLATE, "shop@example.com")

    assert messages[1] == {
        "to": ["ben@example.com"],
        "template_id": TEMPLATE,
        "from_email": "shop@example.com",
        "merge_global_data": {"name": "Ben"},
    }
    assert all(build_payload(m, Settings(api_token="t")) for m in messages)


def test_batch_message_keys_merge_data_by_recipient() -> None:
    message = batch_message(ROWS, TEMPLATE, "shop@example.com")

    assert message["to"] == ["ann@example.com", "ben@example.com"]
    assert message["merge_data"] == {"ann@example.com": {"name": "Ann"},
                                     "ben@example.com": {"name": "Ben"}}


def test_recipient_of_finds_the_row_by_index_or_by_to_field() -> None:
    by_index = ValidationError("bad", field="to[0]", index=1)
    by_field = ValidationError("bad", field="to[1]")

    assert recipient_of(by_index, ROWS) == ROWS[1]
    assert recipient_of(by_field, ROWS) == ROWS[1]
    assert recipient_of(ValidationError("bad", field="from_email"), ROWS) is None
