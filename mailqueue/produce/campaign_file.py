"""A campaign file (CSV) queued as one batch send, streamed: a million rows in the memory of one.

The file is read twice, row by row: once to validate every row into a spool
on disk (nothing is queued when a row is bad, and the error names it), once
more from the spool into Redis (``chunked_send.py``). With a campaign name,
the send's id is a digest of the name, the file and the options: the same
command run again after an interruption queues only what is missing, and
after a complete run queues nothing twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from mailqueue.errors import ValidationError
from mailqueue.produce.campaign_csv import (
    Content,
    Recipient,
    Repeats,
    batch_messages,
    iter_recipients,
)
from mailqueue.produce.chunked_send import ChunkedSend, enqueue_chunked

if TYPE_CHECKING:
    from mailqueue.produce.producer import Producer

__all__ = ["open_csv", "queue_campaign_file", "source_name"]

_TO_INDEX = re.compile(r"^to\[(\d+)\]")


def queue_campaign_file(
    producer: Producer,
    path: str,
    content: Content,
    *,
    from_email: str | None = None,
    routing: Mapping[str, Any] | None = None,
    campaign: str | None = None,
    progress: Callable[[str, int], None] | None = None,
    repeats: Repeats | None = None,
) -> ChunkedSend:
    """Queue every row of the CSV at ``path`` ("-": standard input) as one batch send.

    ``content`` is a template id, or the message's ``subject``, ``text`` and
    ``html``. ``routing`` adds keys to every message (``stream``,
    ``account``). A bad row raises ValidationError naming the file and its
    row; OSError and UnicodeDecodeError are the file's own. Rows repeating
    an earlier address are left out, counted in ``repeats`` and in the
    campaign's record.
    """
    extra = dict(routing or {})
    if campaign is not None:
        extra["campaign"] = campaign
    repeats = repeats if repeats is not None else Repeats()
    with open_csv(path) as handle:
        send_id = None
        if campaign is not None:
            send_id = _digest(handle, content, from_email, extra)
        rows: list[Recipient] = []

        def messages() -> Iterator[dict[str, Any]]:
            handle.seek(0)
            recipients = iter_recipients(handle, source=source_name(path), repeats=repeats)
            for chunk, message in batch_messages(recipients, content, from_email):
                rows[:] = chunk
                message.update(extra)
                yield message

        try:
            return enqueue_chunked(
                producer,
                messages(),
                send_id=send_id,
                progress=progress,
                left_out=lambda: repeats.count,
            )
        except ValidationError as exc:
            raise _about_row(exc, rows, path) from None


def _about_row(exc: ValidationError, rows: list[Recipient], path: str) -> ValidationError:
    """The error of a chunk's message as one about the file: its row when it names one.

    The message's own indices (which chunk, which ``to``) mean nothing to the
    person who wrote the file, so they are left out: the row says where.
    """
    if exc.index is None:
        return exc  # the file's own error, already naming it and the row
    exc.index = None
    text = str(exc.args[0]) if exc.args else str(exc)
    match = _TO_INDEX.match(exc.field or "")
    if match is None or int(match.group(1)) >= len(rows):
        return ValidationError(text, field=exc.field)
    row = rows[int(match.group(1))]
    text = text.replace(f" in {exc.field}", "").replace(f"{exc.field}: ", "")
    return ValidationError(f"row {row.row} ({row.email}): {text}", field=source_name(path))


def source_name(path: str) -> str:
    """How errors name the file at ``path``."""
    return "standard input" if path == "-" else path


@contextlib.contextmanager
def open_csv(path: str) -> Iterator[IO[str]]:
    """The file, opened for ``csv``; standard input is first copied to a temporary file."""
    if path != "-":
        with open(path, encoding="utf-8", newline="") as handle:
            yield handle
        return
    with tempfile.TemporaryFile("w+", encoding="utf-8", newline="") as copy:
        shutil.copyfileobj(sys.stdin, copy)
        yield copy


def _digest(handle: IO[str], content: Content, sender: str | None, extra: Mapping[str, Any]) -> str:
    """A send id for this file and these options (the same again for the same command)."""
    shown = content if isinstance(content, str) else sorted(content.items())
    digest = hashlib.sha256(repr((shown, sender, sorted(extra.items()))).encode())
    handle.seek(0)
    while block := handle.read(1 << 20):
        digest.update(block.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]
