"""Campaign files: a CSV of recipients (an ``email`` column plus merge columns) as messages.

The file is read as spreadsheets export it (``csv_table``: byte-order mark,
comma, semicolon or tab, any size), one row at a time. Each row is one
recipient: its ``email`` cell holds exactly one address (a cell with two, or
with a line break, is refused naming the row, never split into several
recipients), and an address already met on an earlier row, compared as
suppressions compare addresses (case-folded, IDNA domain), is left out and
counted (``Repeats``). Pure: no I/O, the caller opens the file.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from mailqueue.core.addresses import comparable
from mailqueue.core.csv_table import Repeats, SeenAddresses, one_address, open_table
from mailqueue.core.payload import MAX_BATCH_REQUESTS
from mailqueue.errors import ValidationError

__all__ = [
    "Content",
    "Recipient",
    "Repeats",
    "SeenAddresses",
    "batch_message",
    "batch_messages",
    "individual_messages",
    "iter_recipients",
    "read_recipients",
    "recipient_of",
]

EMAIL_COLUMN = "email"


@dataclass(frozen=True)
class Recipient:
    """One row: its address, its merge fields, and its row in the file (for errors)."""

    email: str
    row: int
    merge: dict[str, str] = field(default_factory=dict)


def read_recipients(text: str, *, source: str = "CSV") -> list[Recipient]:
    """The recipients of a campaign file; ValidationError naming ``source`` and the row."""
    return list(iter_recipients(io.StringIO(text, newline=""), source=source))


def iter_recipients(
    handle: IO[str], *, source: str = "CSV", repeats: Repeats | None = None
) -> Iterator[Recipient]:
    """The recipients of a campaign file, one row at a time (open it with ``newline=""``).

    A file of a million rows streams in the memory of one row and its
    addresses' digests. Errors are raised when the row is reached:
    ValidationError naming ``source`` and the row. Rows repeating an earlier
    address are left out and noted in ``repeats``.
    """
    table = open_table(handle, (EMAIL_COLUMN,), source=source)
    email_at = table.column(EMAIL_COLUMN)
    assert email_at is not None
    merge_at = [
        (index, name) for index, name in enumerate(table.header) if name and index != email_at
    ]
    seen = SeenAddresses()
    for row, cells in table.rows():
        width = len(cells)
        email = cells[email_at] if email_at < width else ""
        if not email:
            raise table.error(row, "the 'email' cell is empty")
        address = one_address(email, table, row, EMAIL_COLUMN)
        if not seen.add(comparable(address.addr_spec)):
            if repeats is not None:
                repeats.note(row)
            continue
        merge = {name: cells[index] if index < width else "" for index, name in merge_at}
        yield Recipient(email=email, row=row, merge=merge)
    if not len(seen):
        raise ValidationError("no recipients", field=source)


Content = str | Mapping[str, Any]
"""What every recipient gets: a template id, or the message's ``subject``, ``text``, ``html``."""


def _content(content: Content) -> dict[str, Any]:
    return {"template_id": content} if isinstance(content, str) else dict(content)


def individual_messages(
    recipients: Sequence[Recipient], content: Content, from_email: str | None = None
) -> list[dict[str, Any]]:
    """One message per recipient; with a template, its merge fields are the template's variables."""
    shared = _content(content)
    messages = []
    for recipient in recipients:
        message: dict[str, Any] = {"to": [recipient.email], **shared}
        if from_email:
            message["from_email"] = from_email
        if recipient.merge and "template_id" in shared:
            message["merge_global_data"] = dict(recipient.merge)
        messages.append(message)
    return messages


def batch_messages(
    recipients: Iterable[Recipient],
    content: Content,
    from_email: str | None = None,
    *,
    size: int = MAX_BATCH_REQUESTS,
) -> Iterator[tuple[list[Recipient], dict[str, Any]]]:
    """``batch_message`` of every ``size`` rows in turn, with the rows it holds."""
    shared = _content(content)
    rows = iter(recipients)
    while chunk := list(itertools.islice(rows, size)):
        yield chunk, _batch(chunk, shared, from_email, copy=False)


def batch_message(
    recipients: Sequence[Recipient], content: Content, from_email: str | None = None
) -> dict[str, Any]:
    """One batch send to every recipient, each with its own merge fields (with a template)."""
    return _batch(recipients, _content(content), from_email, copy=True)


def _batch(
    rows: Sequence[Recipient], shared: Mapping[str, Any], from_email: str | None, *, copy: bool
) -> dict[str, Any]:
    # Any merge_data, even {}, makes a batch send: one request per recipient,
    # so that no recipient sees the others. Without a template the merge
    # fields have nothing to fill.
    merge_data: dict[str, Any] = {}
    if "template_id" in shared:
        # A stream's rows are read once, their dicts used as they are.
        merge_data = {row.email: dict(row.merge) if copy else row.merge for row in rows}
    message: dict[str, Any] = {"to": [row.email for row in rows], **shared}
    message["merge_data"] = merge_data
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
