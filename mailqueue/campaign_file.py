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

from .campaign_csv import Recipient, batch_messages, iter_recipients
from .chunked_send import ChunkedSend, enqueue_chunked
from .errors import ValidationError
from .payload import MAX_BATCH_REQUESTS

if TYPE_CHECKING:
    from .client import Client

__all__ = ["open_csv", "queue_campaign_file"]

_TO_INDEX = re.compile(r"^to\[(\d+)\]")


def queue_campaign_file(
    rt: Client,
    path: str,
    template_id: str,
    *,
    from_email: str | None = None,
    routing: Mapping[str, Any] | None = None,
    campaign: str | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ChunkedSend:
    """Queue every row of the CSV at ``path`` ("-": standard input) as one batch send.

    ``routing`` adds keys to every message (``stream``, ``account``). A bad
    row raises ValidationError naming its line and address; OSError and
    UnicodeDecodeError are the file's own.
    """
    extra = dict(routing or {})
    if campaign is not None:
        extra["campaign"] = campaign
    with open_csv(path) as handle:
        send_id = None
        if campaign is not None:
            send_id = _digest(handle, template_id, from_email, extra)
        rows: list[Recipient] = []

        def messages() -> Iterator[dict[str, Any]]:
            handle.seek(0)
            recipients = iter_recipients(handle, source=path)
            for chunk, message in batch_messages(recipients, template_id, from_email):
                rows[:] = chunk
                message.update(extra)
                yield message

        try:
            return enqueue_chunked(rt, messages(), send_id=send_id, progress=progress)
        except ValidationError as exc:
            raise _about_row(exc, rows) from None


def _about_row(exc: ValidationError, rows: list[Recipient]) -> ValidationError:
    """The error of a chunk's message as one about its row of the file, when it names one."""
    chunk = exc.index
    exc.index = None
    match = _TO_INDEX.match(exc.field or "")
    if chunk is None or match is None or int(match.group(1)) >= len(rows):
        return exc
    offset = int(match.group(1))
    row = rows[offset]
    field = f"to[{chunk * MAX_BATCH_REQUESTS + offset}]{(exc.field or '')[match.end():]}"
    text = str(exc.args[0]) if exc.args else str(exc)
    return ValidationError(f"row {row.line} ({row.email}): {field}: {text}", field=field)


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


def _digest(handle: IO[str], template_id: str, sender: str | None, extra: Mapping[str, Any]) -> str:
    """A send id for this file and these options (the same again for the same command)."""
    digest = hashlib.sha256(repr((template_id, sender, sorted(extra.items()))).encode())
    handle.seek(0)
    while block := handle.read(1 << 20):
        digest.update(block.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:32]
