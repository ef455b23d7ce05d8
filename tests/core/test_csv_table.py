"""CSV files as spreadsheets export them: separator, header, rows, repeats, formulas (pure)."""

from __future__ import annotations

import io

import pytest

from mailqueue.core.csv_table import (
    CsvTable,
    Repeats,
    SeenAddresses,
    neutralize_formula,
    one_address,
    open_table,
    restore_formula,
)
from mailqueue.errors import ValidationError


def table_of(text: str, wanted: tuple[str, ...] = ("email",)) -> CsvTable:
    return open_table(io.StringIO(text, newline=""), wanted, source="list.csv")


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_the_separator_is_the_one_that_makes_the_wanted_column(separator: str) -> None:
    table = table_of(f"name{separator}Email\nAda{separator}ada@example.com\n")

    assert table.header == ["name", "Email"]
    assert table.column("email") == 1
    assert list(table.rows()) == [(2, ["Ada", "ada@example.com"])]


def test_a_byte_order_mark_is_no_part_of_the_first_column() -> None:
    table = table_of("\ufeffemail,name\na@example.com,A\n")

    assert table.column("email") == 0


def test_the_first_of_several_names_the_header_has_is_the_column() -> None:
    table = table_of("Address,email\nx,y\n")

    assert table.column("mail", "address", "email") == 0
    assert table.column("phone") is None


def test_a_file_without_the_wanted_column_names_the_columns_found() -> None:
    with pytest.raises(ValidationError) as info:
        table_of("name,phone\nAda,1\n")

    assert "needs an 'email' column (columns found: 'name', 'phone')" in str(info.value)
    assert info.value.field == "list.csv"


def test_an_empty_file_has_no_columns() -> None:
    with pytest.raises(ValidationError, match="columns found: none"):
        table_of("")


def test_rows_are_numbered_as_a_spreadsheet_shows_them_blank_ones_skipped() -> None:
    text = 'email,note\n a@example.com , one \n,\n"b@example.com","two\nlines"\nc@example.com,\n'

    rows = list(table_of(text).rows())

    assert rows == [
        (2, ["a@example.com", "one"]),
        (4, ["b@example.com", "two\nlines"]),
        (5, ["c@example.com", ""]),
    ]


def test_a_header_cell_holding_a_line_break_is_read_whole() -> None:
    table = table_of('"e\nmail",email\nx,a@example.com\n')

    assert table.header == ["e\nmail", "email"]
    assert list(table.rows()) == [(2, ["x", "a@example.com"])]


def test_more_cells_than_the_header_names_is_an_error_naming_the_row() -> None:
    with pytest.raises(ValidationError) as info:
        list(table_of("email,name\na@example.com,A\nb@example.com,Smith, B\n").rows())

    assert "row 3: 3 cells where the header names 2" in str(info.value)


def test_empty_cells_past_the_header_are_let_through() -> None:
    assert list(table_of("email\na@example.com,,\n").rows()) == [(2, ["a@example.com", "", ""])]


def test_a_quote_left_open_to_the_end_names_the_row_it_opens_on() -> None:
    with pytest.raises(ValidationError) as info:
        list(table_of('email,note\na@example.com,"never closed\nb@example.com,x\n').rows())

    assert "a quoted cell is never closed" in str(info.value)


def test_an_address_cell_holds_exactly_one_address() -> None:
    table = table_of("email\nx\n")

    assert one_address("Ada <ada@example.com>", table, 2, "email").addr_spec == "ada@example.com"
    with pytest.raises(ValidationError, match="row 2: the 'email' cell holds 2 addresses"):
        one_address("a@example.com, b@example.com", table, 2, "email")
    with pytest.raises(ValidationError, match="row 3: 'nope' is not an email address"):
        one_address("nope", table, 3, "email")
    with pytest.raises(ValidationError, match="line break or a control character"):
        one_address("a@example.com\nBcc: b@example.com", table, 4, "email")


def test_repeats_name_the_first_five_rows_and_count_the_rest() -> None:
    repeats = Repeats()
    assert repeats.summary() == ""
    repeats.note(7)
    assert repeats.summary() == "1 repeated address left out (row 7)"
    for row in range(8, 14):
        repeats.note(row)

    assert repeats.summary("skipped") == "7 repeated addresses skipped (rows 7, 8, 9, 10, 11, ...)"


def test_seen_addresses_tell_a_repeat_from_a_first_and_keep_all_through_growth() -> None:
    seen = SeenAddresses()
    addresses = [f"r{i}@example.com" for i in range(5000)]

    assert all(seen.add(address) for address in addresses)
    assert not any(seen.add(address) for address in addresses)
    assert len(seen) == 5000


@pytest.mark.parametrize("cell", ["=SUM(A1)", "+1", "-news@example.com", "@x", "\tx"])
def test_a_formula_start_is_quoted_and_restored(cell: str) -> None:
    shown = neutralize_formula(cell)

    assert shown == "'" + cell
    assert restore_formula(shown) == cell


def test_plain_cells_and_a_quote_before_plain_text_are_left_alone() -> None:
    assert neutralize_formula("a@example.com") == "a@example.com"
    assert restore_formula("'quoted") == "'quoted"
