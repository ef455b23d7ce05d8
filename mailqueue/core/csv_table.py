"""CSV files as spreadsheets export them, read row by row: campaign files and suppression lists.

Excel writes a UTF-8 byte-order mark and, in locales whose decimal mark is a
comma, separates fields with semicolons (or tabs). The separator is told from
the header row alone, as the one that makes a wanted column (``email``) a cell
of it: a guess from a sample of the data could be fooled by the data, and a
sample cut at a fixed size could cut a row in two. The file is then read in
whole lines, so a file of any size streams in the memory of one row.

Rows are numbered as a spreadsheet shows them: the header is row 1, and a
quoted cell holding line breaks is still one row. Errors name the file and
the row, in words a person who opens the file can act on.

Pure: no I/O beyond reading the handle the caller opened (with ``newline=""``).
"""

from __future__ import annotations

import csv
import itertools
import re
from array import array
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

from mailqueue.core.addresses import EmailAddress, InvalidAddress, parse_address_list
from mailqueue.errors import ValidationError

__all__ = [
    "DELIMITERS",
    "CsvTable",
    "Repeats",
    "SeenAddresses",
    "neutralize_formula",
    "one_address",
    "open_table",
    "restore_formula",
]

DELIMITERS = ",;\t"

_MASK_64 = (1 << 64) - 1

# Rows of repeated addresses a summary names; the rest are only counted.
NAMED_REPEATS = 5

# Characters that make a spreadsheet read a cell as a formula (OWASP's CSV
# injection list). Addresses may start with some of them (``-news@...``).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

# Characters no address cell holds: a line break in one could smuggle a
# header (``Bcc:``) into whatever reads the address as text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# csv's own failure texts, in words about the file.
_CSV_ERRORS = (
    ("unexpected end of data", "a quoted cell is never closed (its quote opens on this row)"),
    ("field larger than field limit", "a cell is longer than 128 KiB (is a quote left open?)"),
    ("expected after", "a quoted cell has text after its closing quote"),
)


class CsvTable:
    """A CSV file's header and rows; ``rows()`` reads it once, row by row."""

    def __init__(
        self, header: list[str], lines: Iterator[str], delimiter: str, source: str
    ) -> None:
        self.header = header
        self.source = source
        self._lines = lines
        self._delimiter = delimiter

    def column(self, *names: str) -> int | None:
        """The index of the first of ``names`` the header has (any case), or None."""
        folded = [name.casefold() for name in self.header]
        for name in names:
            if name in folded:
                return folded.index(name)
        return None

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """Each non-blank row with its number (the header is row 1), its cells stripped."""
        # strict: an open quote at the end of the file is an error, not a
        # cell that swallowed every row after it.
        reader = csv.reader(self._lines, delimiter=self._delimiter, strict=True)
        number = 0
        width = len(self.header)
        while True:
            number += 1
            try:
                row = next(reader, None)
            except csv.Error as exc:
                raise self.error(number, _csv_problem(exc)) from None
            if row is None:
                return
            if number == 1:
                continue  # the header
            cells = [cell.strip() for cell in row]
            if not any(cells):
                continue
            if any(cells[width:]):
                raise self.error(
                    number,
                    f"{len(row)} cells where the header names {width} "
                    "(a separator inside a cell that is not quoted?)",
                )
            yield number, cells

    def error(self, row: int, problem: str) -> ValidationError:
        """A ValidationError naming the file and the row."""
        return ValidationError(f"row {row}: {problem}", field=self.source)


@dataclass
class Repeats:
    """Rows left out because their address came earlier in the file: how many, and the first."""

    count: int = 0
    rows: list[int] = field(default_factory=list)

    def note(self, row: int) -> None:
        self.count += 1
        if len(self.rows) < NAMED_REPEATS:
            self.rows.append(row)

    def summary(self, done: str = "left out") -> str:
        """``2 repeated addresses left out (rows 7, 12)``, or '' when there were none."""
        if not self.count:
            return ""
        more = ", ..." if self.count > len(self.rows) else ""
        rows = ", ".join(str(row) for row in self.rows)
        noun = "address" if self.count == 1 else "addresses"
        label = "row" if len(self.rows) == 1 and not more else "rows"
        return f"{self.count:,} repeated {noun} {done} ({label} {rows}{more})"


class SeenAddresses:
    """The comparable addresses met so far, in 8 to 24 bytes each (a set of strings: over 100).

    An open-addressing table of 64-bit string hashes, at most two thirds
    full, so that a file of millions of rows stays in a few megabytes. Two
    addresses share a digest with odds of about n**2 / 2**65
    (3 in 100 million for a million rows).
    """

    def __init__(self) -> None:
        self._slots = array("Q", [0]) * 1024
        self._used = 0

    def add(self, address: str) -> bool:
        """Note ``address``; True when it was not seen before."""
        # Python's own string hash (SipHash, 64 bits): steady within one
        # process, which is all one file's reading needs, and cached on the string.
        value = (hash(address) & _MASK_64) or 1  # 0 marks a free slot
        slots = self._slots
        mask = len(slots) - 1
        index = value & mask
        while (held := slots[index]) != 0:
            if held == value:
                return False
            index = (index + 1) & mask
        slots[index] = value
        self._used += 1
        if self._used * 3 > len(slots) * 2:
            self._grow()
        return True

    def __len__(self) -> int:
        return self._used

    def _grow(self) -> None:
        old = self._slots
        slots = self._slots = array("Q", [0]) * (2 * len(old))
        mask = len(slots) - 1
        for value in old:
            if value:
                index = value & mask
                while slots[index]:
                    index = (index + 1) & mask
                slots[index] = value


def open_table(handle: IO[str], wanted: Sequence[str], *, source: str = "CSV") -> CsvTable:
    """Read the header of a CSV (opened with ``newline=""``); the separator makes a ``wanted`` cell.

    A file none of whose separators gives a ``wanted`` column raises
    ValidationError naming the columns found.
    """
    header_lines = _first_record(handle)
    if header_lines:
        header_lines[0] = header_lines[0].removeprefix("\ufeff")
    folded = {name.casefold() for name in wanted}
    delimiter, header = _header(header_lines, folded)
    if not any(cell.casefold() in folded for cell in header):
        found = ", ".join(repr(name) for name in header if name) or "none"
        names = " or ".join(repr(name) for name in wanted)
        raise ValidationError(
            f"the CSV needs an {names} column (columns found: {found})", field=source
        )
    # The header's own lines are read again by ``rows``: the reader then counts them too.
    return CsvTable(header, itertools.chain(header_lines, handle), delimiter, source)


def _first_record(handle: IO[str]) -> list[str]:
    """The header's lines: one, or more while a quote in it is still open."""
    lines: list[str] = []
    for line in handle:
        lines.append(line)
        if sum(part.count('"') for part in lines) % 2 == 0:
            break
    return lines


def _header(lines: Sequence[str], wanted: Collection[str]) -> tuple[str, list[str]]:
    """The separator and the header cells: the separator giving a wanted column, else most cells."""
    best: tuple[bool, int, str, list[str]] | None = None
    for delimiter in DELIMITERS:
        try:
            cells = next(csv.reader(lines, delimiter=delimiter), [])
        except csv.Error:
            continue
        header = [cell.strip() for cell in cells]
        found = any(cell.casefold() in wanted for cell in header)
        rank = (found, len(header))
        if best is None or rank > best[:2]:
            best = (found, len(header), delimiter, header)
    if best is None:
        return ",", []
    return best[2], best[3]


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    for fragment, problem in _CSV_ERRORS:
        if fragment in text:
            return problem
    return "not readable as CSV"


def one_address(cell: str, table: CsvTable, row: int, column: str) -> EmailAddress:
    """The one address in an address cell; ValidationError naming the row otherwise."""
    if not cell.isprintable() and _CONTROL.search(cell):
        raise table.error(row, f"the {column!r} cell holds a line break or a control character")
    try:
        parsed = parse_address_list(cell, column)
    except InvalidAddress as exc:
        raise table.error(row, f"{cell!r} is not an email address ({exc.reason})") from None
    if len(parsed) != 1:
        raise table.error(
            row, f"the {column!r} cell holds {len(parsed)} addresses; give one per row"
        )
    return parsed[0]


def neutralize_formula(cell: str) -> str:
    """The cell as a spreadsheet shows it as text: a leading quote before a formula start."""
    return f"'{cell}" if cell.startswith(FORMULA_STARTS) else cell


def restore_formula(cell: str) -> str:
    """The cell ``neutralize_formula`` was given."""
    if cell.startswith("'") and cell[1:].startswith(FORMULA_STARTS):
        return cell[1:]
    return cell
