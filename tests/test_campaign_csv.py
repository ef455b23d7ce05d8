"""Campaign files as spreadsheets export them, into messages."""

from __future__ import annotations

import io

import pytest

from mailqueue import build_payload
from mailqueue.errors import ValidationError
from mailqueue.produce.campaign_csv import (
    Recipient,
    Repeats,
    SeenAddresses,
    batch_message,
    batch_messages,
    individual_messages,
    iter_recipients,
    read_recipients,
    recipient_of,
)
from mailqueue.settings import Settings

TEMPLATE = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"
ROWS = [
    Recipient(email="ann@example.com", row=2, merge={"name": "Ann"}),
    Recipient(email="ben@example.com", row=3, merge={"name": "Ben"}),
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


def test_an_empty_email_names_its_row() -> None:
    with pytest.raises(ValidationError, match="row 3: the 'email' cell is empty"):
        read_recipients("email,name\nann@example.com,Ann\n,Ben\n")


def test_blank_lines_are_skipped_and_rows_counted() -> None:
    recipients = read_recipients("email\n\nann@example.com\n\nben@example.com\n")

    assert [r.row for r in recipients] == [3, 5]


def test_a_cell_holding_line_breaks_is_one_row_as_a_spreadsheet_counts() -> None:
    recipients = read_recipients('email,note\nann@example.com,"one\ntwo"\nben@example.com,x\n')

    assert [(r.row, r.merge["note"]) for r in recipients] == [(2, "one\ntwo"), (3, "x")]


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


def test_without_a_template_each_recipient_gets_the_subject_and_body_alone() -> None:
    content = {"subject": "Hi", "text": "Hello"}

    (message,) = individual_messages(ROWS[:1], content, "shop@example.com")
    batch = batch_message(ROWS, content, "shop@example.com")

    assert message == {"to": ["ann@example.com"], "subject": "Hi", "text": "Hello",
                       "from_email": "shop@example.com"}
    assert batch["merge_data"] == {}  # a batch send all the same: one request per recipient
    (call,) = build_payload(batch, Settings(api_token="t"))
    assert [request["to"] for request in call.json["requests"]] == [
        [{"email": "ann@example.com"}], [{"email": "ben@example.com"}]]


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


# -- as spreadsheets export them, at any size --------------------------------


def excel_export(rows: int) -> str:
    """What Excel writes in a locale with a decimal comma: byte-order mark, ';', CRLF."""
    lines = ["email;first name;city"]
    lines += [f"user{n}@example.com;Name {n};City {n}" for n in range(rows)]
    return "\ufeff" + "\r\n".join(lines) + "\r\n"


def test_a_5000_row_excel_export_reads_every_row_whole() -> None:
    text = excel_export(5000)
    assert len(text.encode()) > 64 * 1024

    recipients = read_recipients(text)

    assert len(recipients) == 5000
    merge = {"first name": "Name 1694", "city": "City 1694"}
    assert recipients[1694] == Recipient(email="user1694@example.com", row=1696, merge=merge)
    assert [r.email for r in recipients] == [f"user{n}@example.com" for n in range(5000)]


def test_the_separator_is_the_one_that_makes_an_email_column_of_the_header() -> None:
    # A sample of the data would say ',' here; the header says ';'.
    text = "email;note\nann@example.com;a, b, c, d\nben@example.com;e, f\n"

    recipients = read_recipients(text)

    assert [r.merge["note"] for r in recipients] == ["a, b, c, d", "e, f"]


# -- one recipient per address ------------------------------------------------


def test_a_repeated_address_is_one_recipient_and_counted() -> None:
    text = ("email,name\nann@example.com,Ann\nANN@Example.com,Ann again\n"
            "ben@example.com,Ben\nann@example.com,Ann thrice\n")
    repeats = Repeats()

    recipients = list(iter_recipients(io.StringIO(text, newline=""), repeats=repeats))

    assert [(r.email, r.merge["name"]) for r in recipients] == [
        ("ann@example.com", "Ann"), ("ben@example.com", "Ben")]
    assert (repeats.count, repeats.rows) == (2, [3, 5])
    assert repeats.summary() == "2 repeated addresses left out (rows 3, 5)"


def test_a_display_name_and_an_idna_domain_compare_as_suppressions_do() -> None:
    text = "email\nann@bücher.example\nAnn <ANN@xn--bcher-kva.example>\n"
    repeats = Repeats()

    recipients = list(iter_recipients(io.StringIO(text, newline=""), repeats=repeats))

    assert [r.email for r in recipients] == ["ann@bücher.example"]
    assert repeats.count == 1


def test_the_seen_set_grows_and_forgets_nothing() -> None:
    seen = SeenAddresses()

    assert all(seen.add(f"user{n}@example.com") for n in range(20_000))
    assert not any(seen.add(f"user{n}@example.com") for n in range(0, 20_000, 7))
    assert len(seen) == 20_000


def test_a_summary_names_the_first_rows_only() -> None:
    repeats = Repeats()
    for row in range(10, 20):
        repeats.note(row)

    assert repeats.summary() == "10 repeated addresses left out (rows 10, 11, 12, 13, 14, ...)"


# -- one address per cell, and files that are broken --------------------------


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ('"victim@example.com, other@example.org"', "holds 2 addresses"),
        ('"victim@example.com\r\nBcc: other@example.org"', "line break"),
        ('"victim@example.com\nother@example.org"', "line break"),
        ("e.com", "'e.com' is not an email address (no @domain)"),
        ("bad@", "'bad@' is not an email address (nothing after the @)"),
    ],
    ids=["two addresses", "CRLF and Bcc", "LF", "no @", "nothing after @"],
)
def test_an_email_cell_is_one_address_or_the_row_is_refused(cell: str, problem: str) -> None:
    text = f"email,name\nann@example.com,Ann\n{cell},Victim\n"

    with pytest.raises(ValidationError) as caught:
        read_recipients(text, source="list.csv")

    assert caught.value.field == "list.csv"
    assert str(caught.value).startswith("row 3: ")
    assert problem in str(caught.value)
    assert "string index" not in str(caught.value)


def test_an_unquoted_separator_in_a_cell_is_refused_not_split() -> None:
    with pytest.raises(ValidationError, match="row 2: 2 cells where the header names 1"):
        read_recipients("email\nvictim@example.com, other@example.org\n")


def test_an_unterminated_quote_is_refused_naming_the_row_it_opens_on() -> None:
    text = 'email,name\nann@example.com,Ann\nben@example.com,"Ben\ncid@example.com,Cid\n'

    with pytest.raises(ValidationError) as caught:
        read_recipients(text, source="list.csv")

    assert str(caught.value) == "row 3: a quoted cell is never closed (its quote opens on this row)"


def test_text_after_a_closing_quote_is_refused_naming_the_row() -> None:
    with pytest.raises(ValidationError, match="row 2: a quoted cell has text after"):
        read_recipients('email,name\n"ann@example.com"x,Ann\n')


def test_rows_stream_a_large_file_in_parts() -> None:
    chunks = list(batch_messages(read_recipients(excel_export(1200)), TEMPLATE, size=500))

    assert [len(rows) for rows, _ in chunks] == [500, 500, 200]
    assert chunks[2][1]["to"][-1] == "user1199@example.com"


def test_a_quote_left_open_in_a_large_file_is_named_at_its_row() -> None:
    rows = "".join(f"user{n}@example.com,Name {n}\n" for n in range(10_000))
    text = 'email,name\nann@example.com,"Ann\n' + rows

    with pytest.raises(ValidationError) as caught:
        read_recipients(text)

    assert str(caught.value).startswith("row 2: a cell is longer than 128 KiB")
