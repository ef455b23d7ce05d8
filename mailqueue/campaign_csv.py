"""Campaign files: a CSV of recipients (an ``email`` column plus merge columns) as messages.

Spreadsheets export CSV in several shapes: Excel writes a UTF-8 byte-order
mark, and locales whose decimal mark is a comma separate fields with
semicolons (or tabs). The file's own dialect is sniffed from its first lines;
a file too plain to tell (one column) is read as ordinary comma-separated CSV.
Pure: no I/O, the caller opens the file; rows are read one at a time, so a
file of any size streams.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from .errors import ValidationError
from .payload import MAX_BATCH_REQUESTS

__all__ = [
    "Recipient",
    "batch_message",
    "batch_messages",
    "individual_messages",
    "iter_recipients",
    "read_recipients",
    "recipient_of",
]

EMAIL_COLUMN = "email"
DELIMITERS = ",;\t"
# The sniffer reads this much: enough for a header and a few rows.
SNIFF_CHARS = 64 * 1024


@dataclass(frozen=True)
class Recipient:
    """One row: its address, its merge fields, and the line it starts on (for errors)."""

    email: str
    line: int
    merge: dict[str, str] = field(default_factory=dict)


def _dialect(text: str) -> type[csv.Dialect] | csv.Dialect:
    sample = text[:SNIFF_CHARS]
    try:
        return csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
    except csv.Error:
        return csv.excel


def read_recipients(text: str, *, source: str = "CSV") -> list[Recipient]:
    """The recipients of a campaign file; ValidationError naming ``source`` and the line."""
    return list(iter_recipients(io.StringIO(text, newline=""), source=source))


def iter_recipients(handle: IO[str], *, source: str = "CSV") -> Iterator[Recipient]:
    """The recipients of a campaign file, one row at a time (open it with ``newline=""``).

    Only the first ``SNIFF_CHARS`` are held at once, to tell the dialect; a
    file of a million rows streams in the memory of one. Errors are raised
    when the row is reached: ValidationError naming ``source`` and the line.
    """
    sample = handle.read(SNIFF_CHARS).removeprefix("\ufeff")
    if len(sample) == SNIFF_CHARS:
        sample += handle.readline()  # the sample ends on a line's end
    lines = itertools.chain(io.StringIO(sample, newline=""), handle)
    reader = csv.reader(lines, _dialect(sample))
    try:
        header = [name.strip() for name in next(reader, [])]
    except csv.Error as exc:
        raise ValidationError(f"not readable as CSV: {exc}", field=source) from None
    columns = [name.casefold() for name in header]
    if EMAIL_COLUMN not in columns:
        found = ", ".join(repr(name) for name in header if name) or "none"
        raise ValidationError(
            f"the CSV needs an 'email' column (columns found: {found})", field=source
        )
    email_at = columns.index(EMAIL_COLUMN)
    merge_at = [(index, name) for index, name in enumerate(header) if name and index != email_at]
    any_rows = False
    line = reader.line_num + 1
    try:
        for row in reader:
            if any(cell.strip() for cell in row):
                yield _recipient(row, merge_at, email_at, line, source)
                any_rows = True
            line = reader.line_num + 1
    except csv.Error as exc:
        raise ValidationError(f"line {line}: not readable as CSV: {exc}", field=source) from None
    if not any_rows:
        raise ValidationError("no recipients", field=source)


def _recipient(
    row: Sequence[str],
    merge_at: Sequence[tuple[int, str]],
    email_at: int,
    line: int,
    source: str,
) -> Recipient:
    width = len(row)
    email = row[email_at].strip() if email_at < width else ""
    if not email:
        raise ValidationError(f"line {line}: the 'email' column is empty", field=source)
    merge = {name: row[index].strip() if index < width else "" for index, name in merge_at}
    return Recipient(email=email, line=line, merge=merge)


def individual_messages(
    recipients: Sequence[Recipient], template_id: str, from_email: str | None = None
) -> list[dict[str, Any]]:
    """One template message per recipient, its merge fields as the template's variables."""
    messages = []
    for recipient in recipients:
        message: dict[str, Any] = {"to": [recipient.email], "template_id": template_id}
        if from_email:
            message["from_email"] = from_email
        if recipient.merge:
            message["merge_global_data"] = dict(recipient.merge)
        messages.append(message)
    return messages


def batch_messages(
    recipients: Iterable[Recipient],
    template_id: str,
    from_email: str | None = None,
    *,
    size: int = MAX_BATCH_REQUESTS,
) -> Iterator[tuple[list[Recipient], dict[str, Any]]]:
    """``batch_message`` of every ``size`` rows in turn, with the rows it holds."""
    rows = iter(recipients)
    while chunk := list(itertools.islice(rows, size)):
        message: dict[str, Any] = {
            "to": [row.email for row in chunk],
            "template_id": template_id,
            # The rows' own dicts: each row is read once and its message built once.
            "merge_data": {row.email: row.merge for row in chunk},
        }
        if from_email:
            message["from_email"] = from_email
        yield chunk, message


def batch_message(
    recipients: Sequence[Recipient], template_id: str, from_email: str | None = None
) -> dict[str, Any]:
    """One batch send to every recipient, each with its own merge fields."""
    message: dict[str, Any] = {
        "to": [recipient.email for recipient in recipients],
        "template_id": template_id,
        "merge_data": {recipient.email: dict(recipient.merge) for recipient in recipients},
    }
    if from_email:
        message["from_email"] = from_email
    return message


_TO_INDEX = re.compile(r"to\[(\d+)\]")


def recipient_of(error: ValidationError, recipients: Sequence[Recipient]) -> Recipient | None:
    """The row a validation error is about: by message index, else by a ``to[i]`` field."""
    index = error.index
    if index is None:
        match = _TO_INDEX.match(error.field or "")
        index = int(match.group(1)) if match else None
    if index is not None and 0 <= index < len(recipients):
        return recipients[index]
    return None
