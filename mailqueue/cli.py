"""The ``mailqueue`` command line: a thin layer over the library.

Every user mistake (a malformed message, a missing setting, an unreachable
Redis, an unreadable file) prints one ``error: ...`` line naming the field or
file and exits with status 1; click's own usage errors exit with status 2.
Nothing printed ever holds the API token.
"""

from __future__ import annotations

import base64
import csv
import functools
import io
import json
import mimetypes
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, TypeVar

import click
import redis

from .errors import MailqueueError, ValidationError
from .settings import Settings

__all__ = ["cli", "format_status", "main", "message_from_options", "read_campaign"]

FINAL_STATES = frozenset({"sent", "partially_sent", "failed"})
# enqueue_many is called with this many campaign rows at a time, so that the
# progress bar moves and Redis is written in bounded pipelines.
CAMPAIGN_CHUNK = 500
EVENTS_SHOWN = 10

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A user mistake: printed as one ``error: ...`` line on stderr, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ValidationError) and exc.field and exc.field not in str(exc):
        return f"{exc.field}: {exc}"
    if isinstance(exc, redis.RedisError):
        return f"cannot reach Redis: {type(exc).__name__}"
    return str(exc)


def friendly_errors(command: F) -> F:
    """Turn library errors raised by ``command`` into one ``error:`` line."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (MailqueueError, redis.RedisError) as exc:
            raise CliError(_describe(exc)) from None

    return wrapper  # type: ignore[return-value]


def _runtime_settings() -> Settings:
    from .runtime import current

    return current().settings


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailqueue")
def cli() -> None:
    """Queued email delivery through Mailtrap's Email API, on Celery and Redis."""


# -- send -----------------------------------------------------------------


def _read_text(path: str, option: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{option}: cannot read {path!r}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _attachment(path: str, index: int) -> dict[str, Any]:
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"--attach[{index}]: cannot read {path!r}: {_reason(exc)}") from None
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return {
        "filename": Path(path).name,
        "content": base64.b64encode(content).decode("ascii"),
        "mimetype": mimetype,
    }


def _key_values(pairs: Sequence[str], option: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for index, pair in enumerate(pairs):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{option}[{index}]: expected KEY=VALUE, got {pair!r}")
        values[key] = value
    return values


def message_from_options(
    *,
    from_email: str | None = None,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    template_id: str | None = None,
    tags: Sequence[str] = (),
    metadata: Sequence[str] = (),
    attach: Sequence[str] = (),
) -> dict[str, Any]:
    """The message dict the ``send`` flags describe (only the keys given)."""
    message: dict[str, Any] = {}
    scalars = {
        "from_email": from_email,
        "subject": subject,
        "text": text,
        "html": html,
        "template_id": template_id,
    }
    message.update({key: value for key, value in scalars.items() if value is not None})
    lists = {"to": to, "cc": cc, "bcc": bcc, "tags": tags}
    message.update({key: list(value) for key, value in lists.items() if value})
    if metadata:
        message["metadata"] = _key_values(metadata, "--metadata")
    if attach:
        message["attachments"] = [_attachment(path, i) for i, path in enumerate(attach)]
    return message


def _message_from_json(source: str) -> dict[str, Any]:
    text = _read_text(source, "--json")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--json: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(message, dict):
        raise CliError("--json: the message must be a JSON object")
    return message


@cli.command()
@click.option("--from", "from_email", metavar="ADDRESS", help="Sender, 'Name <a@b>' or 'a@b'.")
@click.option("--to", multiple=True, metavar="ADDRESS", help="Recipient (repeatable).")
@click.option("--cc", multiple=True, metavar="ADDRESS", help="Cc recipient (repeatable).")
@click.option("--bcc", multiple=True, metavar="ADDRESS", help="Bcc recipient (repeatable).")
@click.option("--subject")
@click.option("--text", help="Plain-text body.")
@click.option("--html", help="HTML body.")
@click.option("--template-id", metavar="UUID", help="Mailtrap template UUID.")
@click.option("--tag", "tags", multiple=True, help="Category (Mailtrap keeps one).")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Custom variable.")
@click.option("--attach", multiple=True, metavar="PATH", help="Attach a file (repeatable).")
@click.option(
    "--json", "json_source", metavar="FILE", help="Read the whole message as JSON ('-': stdin)."
)
@click.option("--idempotency-key", help="Enqueue nothing if this key was used before.")
@friendly_errors
def send(
    from_email: str | None,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    subject: str | None,
    text: str | None,
    html: str | None,
    template_id: str | None,
    tags: tuple[str, ...],
    metadata: tuple[str, ...],
    attach: tuple[str, ...],
    json_source: str | None,
    idempotency_key: str | None,
) -> None:
    """Queue one message and print its send id."""
    from .producer import enqueue

    flags = message_from_options(
        from_email=from_email,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        text=text,
        html=html,
        template_id=template_id,
        tags=tags,
        metadata=metadata,
        attach=attach,
    )
    # Flags given beside --json override the file's keys.
    message = {**_message_from_json(json_source), **flags} if json_source is not None else flags
    click.echo(enqueue(message, idempotency_key=idempotency_key))


# -- status ---------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def format_status(record: Mapping[str, Any]) -> str:
    """A status record as a readable table."""
    lines = [
        f"send      {record['id']}",
        f"state     {record['state']}",
        f"attempts  {record.get('attempts', 0)}",
        f"created   {record.get('created_at') or '-'}",
        f"updated   {record.get('updated_at') or '-'}",
    ]
    if record.get("next_attempt_at"):
        lines.append(f"next try  {record['next_attempt_at']}")
    if record.get("possible_duplicates"):
        lines.append(f"possible duplicates  {record['possible_duplicates']}")
    error = record.get("error")
    if error:
        code = f" {error['status_code']}" if error.get("status_code") is not None else ""
        lines.append(f"error     {error.get('kind')}{code}: {error.get('message')}")
    recipients = record.get("recipients") or {}
    if recipients:
        lines.append("recipients")
        rows = [
            [address, str(info.get("status")), str(info.get("message_id") or "-")]
            for address, info in recipients.items()
        ]
        lines.append(_table(["RECIPIENT", "STATUS", "MESSAGE ID"], rows))
    events = record.get("events") or []
    if events:
        lines.append("recent events")
        rows = [
            [
                str(event.get("timestamp", "")),
                str(event.get("event_type", "")),
                str(event.get("recipient") or "-"),
            ]
            for event in events[:EVENTS_SHOWN]
        ]
        lines.append(_table(["TIME", "EVENT", "RECIPIENT"], rows))
    return "\n".join(lines)


def _fetch(send_id: str) -> dict[str, Any]:
    from .producer import get_status

    record = get_status(send_id)
    if record is None:
        raise CliError(f"SEND_ID: no send {send_id!r} (unknown or expired)")
    return record


@cli.command()
@click.argument("send_id")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--watch", is_flag=True, help="Refresh until the send is final.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds --watch waits.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@friendly_errors
def status(send_id: str, as_json: bool, watch: bool, timeout: float, interval: float) -> None:
    """Show the status of a send."""

    def show(record: Mapping[str, Any]) -> None:
        click.echo(json.dumps(record, indent=2) if as_json else format_status(record))

    record = _fetch(send_id)
    if not watch:
        show(record)
        return
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while True:
        if record != last:
            if last is not None and not as_json:
                click.echo()
            show(record)
            last = record
        if record["state"] in FINAL_STATES:
            return
        if time.monotonic() >= deadline:
            raise CliError(f"--timeout: send still {record['state']} after {timeout:g} s")
        time.sleep(max(interval, 0.05))
        record = _fetch(send_id)


# -- campaign -------------------------------------------------------------


def read_campaign(path: str) -> list[dict[str, str]]:
    """The rows of a campaign CSV: an ``email`` column plus merge columns."""
    text = _read_text(path, "CSV")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    fields = [name.strip() for name in reader.fieldnames or []]
    if "email" not in fields:
        raise CliError(f"{path}: the CSV needs an 'email' column (found: {', '.join(fields)})")
    rows = []
    for number, row in enumerate(reader, start=2):
        cleaned = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        if not cleaned.get("email"):
            raise CliError(f"{path}: line {number}: the 'email' column is empty")
        rows.append(cleaned)
    if not rows:
        raise CliError(f"{path}: no recipients")
    return rows


def _merge_fields(row: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in row.items() if key and key != "email"}


def _individual_messages(
    rows: Sequence[Mapping[str, str]], template_id: str, from_email: str | None
) -> list[dict[str, Any]]:
    messages = []
    for row in rows:
        message: dict[str, Any] = {"to": [row["email"]], "template_id": template_id}
        if from_email:
            message["from_email"] = from_email
        if _merge_fields(row):
            message["merge_global_data"] = _merge_fields(row)
        messages.append(message)
    return messages


def _batch_message(
    rows: Sequence[Mapping[str, str]], template_id: str, from_email: str | None
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "to": [row["email"] for row in rows],
        "template_id": template_id,
        "merge_data": {row["email"]: _merge_fields(row) for row in rows},
    }
    if from_email:
        message["from_email"] = from_email
    return message


def _row_error(exc: ValidationError, rows: Sequence[Mapping[str, str]]) -> str:
    """Point a batch send's ``to[i]`` error at its CSV line."""
    match = re.match(r"to\[(\d+)\]", exc.field or "")
    if match and int(match.group(1)) < len(rows):
        index = int(match.group(1))
        return f"row {index + 2} ({rows[index]['email']}): {_describe(exc)}"
    return _describe(exc)


def _progress(length: int) -> Any:
    # Off a terminal click prints only the label, which would read as output.
    label = "enqueueing" if sys.stderr.isatty() else ""
    return click.progressbar(length=length, label=label, file=sys.stderr)


def _enqueue_individual(messages: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    from .payload import build_payload
    from .producer import enqueue_many, get_status
    from .runtime import current

    settings = current().settings
    # Validate every row before anything is queued, as one enqueue_many would.
    for index, message in enumerate(messages):
        try:
            build_payload(message, settings)
        except ValidationError as exc:
            raise CliError(f"row {index + 2} ({message['to'][0]}): {_describe(exc)}") from None
    ids: list[str] = []
    groups: list[str] = []
    with _progress(len(messages)) as bar:
        for start in range(0, len(messages), CAMPAIGN_CHUNK):
            chunk = messages[start : start + CAMPAIGN_CHUNK]
            chunk_ids = enqueue_many(chunk)
            record = get_status(chunk_ids[0])
            if record and record.get("group"):
                groups.append(record["group"])
            ids.extend(chunk_ids)
            bar.update(len(chunk))
    return ids, groups


def _counts_line(counts: Mapping[str, int]) -> str:
    return "  ".join(f"{state}={count}" for state, count in sorted(counts.items())) or "-"


def _follow(
    counts: Callable[[], dict[str, int]], done: Callable[[dict[str, int]], bool], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        current = counts()
        line = _counts_line(current)
        if line != last:
            click.echo(line)
            last = line
        if done(current):
            return
        if time.monotonic() >= deadline:
            raise CliError(f"--timeout: campaign not finished after {timeout:g} s")
        time.sleep(0.5)


@cli.command()
@click.argument("csv_path", metavar="CSV")
@click.option("--template-id", required=True, metavar="UUID", help="Mailtrap template UUID.")
@click.option("--from", "from_email", metavar="ADDRESS", help="Sender address.")
@click.option("--individual", is_flag=True, help="One message per row instead of one batch send.")
@click.option("--follow", is_flag=True, help="Show per-state counts until every send is final.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds --follow waits.")
@friendly_errors
def campaign(
    csv_path: str,
    template_id: str,
    from_email: str | None,
    individual: bool,
    follow: bool,
    timeout: float,
) -> None:
    """Send a template to every row of CSV (an 'email' column plus merge columns)."""
    rows = read_campaign(csv_path)
    if individual:
        _campaign_individual(rows, template_id, from_email, follow, timeout)
    else:
        _campaign_batch(rows, template_id, from_email, follow, timeout)


def _campaign_individual(
    rows: Sequence[Mapping[str, str]],
    template_id: str,
    from_email: str | None,
    follow: bool,
    timeout: float,
) -> None:
    from .runtime import current

    ids, groups = _enqueue_individual(_individual_messages(rows, template_id, from_email))
    click.echo(f"queued {len(ids)} sends (groups: {', '.join(groups)})")
    if not follow:
        return
    store = current().store

    def group_counts() -> dict[str, int]:
        total: dict[str, int] = {}
        for group in groups:
            for state, count in store.group_counts(group).items():
                total[state] = total.get(state, 0) + count
        return total

    _follow(group_counts, lambda c: sum(c.get(s, 0) for s in FINAL_STATES) >= len(ids), timeout)


def _campaign_batch(
    rows: Sequence[Mapping[str, str]],
    template_id: str,
    from_email: str | None,
    follow: bool,
    timeout: float,
) -> None:
    from .payload import build_payload
    from .producer import enqueue
    from .runtime import current

    message = _batch_message(rows, template_id, from_email)
    try:
        build_payload(message, current().settings)
    except ValidationError as exc:
        raise CliError(_row_error(exc, rows)) from None
    with _progress(len(rows)) as bar:
        send_id = enqueue(message)
        bar.update(len(rows))
    click.echo(send_id)
    if not follow:
        return
    store = current().store

    def recipient_counts() -> dict[str, int]:
        # Recipients appear as each batch call is answered; the send's own
        # state says when the last one was.
        counts = store.recipient_counts(send_id)
        counts["send:" + (store.state(send_id) or "expired")] = 1
        return counts

    _follow(recipient_counts, lambda c: any(f"send:{s}" in c for s in FINAL_STATES), timeout)


# -- dead letters ---------------------------------------------------------


@cli.group("dead-letters")
def dead_letters() -> None:
    """Sends that failed for good: list, requeue or purge them."""


def _when(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dead_letters.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly_errors
def dead_letters_list(limit: int, as_json: bool) -> None:
    """List dead-lettered sends, oldest first."""
    from .deadletters import list_dead_letters

    letters = list_dead_letters(limit)
    if as_json:
        click.echo(json.dumps([letter.__dict__ for letter in letters], indent=2))
        return
    if not letters:
        click.echo("no dead letters")
        return
    rows = [
        [
            letter.send_id,
            _when(letter.failed_at),
            letter.state or "expired",
            (letter.error or {}).get("message", "-")[:80],
        ]
        for letter in letters
    ]
    click.echo(_table(["SEND ID", "FAILED AT", "STATE", "ERROR"], rows, indent=""))


def _chosen(send_ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if all_ and send_ids:
        raise CliError("SEND_ID: give send ids or --all, not both")
    if not all_ and not send_ids:
        raise CliError("SEND_ID: give at least one send id, or --all")
    return None if all_ else list(send_ids)


@dead_letters.command("requeue")
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter.")
@friendly_errors
def dead_letters_requeue(send_ids: tuple[str, ...], all_: bool) -> None:
    """Send dead-lettered sends again."""
    from .deadletters import requeue_dead_letters

    chosen = _chosen(send_ids, all_)
    count = requeue_dead_letters(chosen)
    click.echo(f"requeued {count} send(s)")
    if chosen is not None and count < len(chosen):
        raise CliError(f"SEND_ID: {len(chosen) - count} of the ids given are not dead letters")


@dead_letters.command("purge")
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Forget every dead letter.")
@friendly_errors
def dead_letters_purge(send_ids: tuple[str, ...], all_: bool) -> None:
    """Forget dead letters (their status records stay until they expire)."""
    from .deadletters import purge_dead_letters

    count = purge_dead_letters(_chosen(send_ids, all_))
    click.echo(f"purged {count} dead letter(s)")


# -- processes ------------------------------------------------------------

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@cli.command(context_settings=_PASS_THROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker: the arguments go to 'celery -A mailqueue worker'."""
    argv = [sys.executable, "-m", "celery", "-A", "mailqueue", "worker", *celery_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


@cli.command("serve-webhooks")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@friendly_errors
def serve_webhooks(host: str, port: int) -> None:
    """Serve the tracking webhook (POST /mailtrap/tracking/)."""
    from .webhooks import create_app, serve

    settings = _runtime_settings()
    create_app(settings)  # refuse to start without credentials, before binding a port
    click.echo(f"tracking webhook on http://{host}:{port}/mailtrap/tracking/", err=True)
    serve(settings, host, port)


@cli.command("local-mailtrap", context_settings=_PASS_THROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def local_mailtrap(args: tuple[str, ...]) -> None:
    """Run a local server speaking Mailtrap's API (for development); --help for options."""
    from .testing.mailtrap import main as mailtrap_main

    sys.exit(mailtrap_main(list(args)))


@cli.command()
@click.option("--to", multiple=True, metavar="ADDRESS", help="Recipient (with a real token).")
@click.option("--from", "from_email", metavar="ADDRESS", help="Sender (with a real token).")
@click.option("--template-id", metavar="UUID", help="Template for the batch step (real token).")
@friendly_errors
def demo(to: tuple[str, ...], from_email: str | None, template_id: str | None) -> None:
    """Run the whole pipeline on this machine: Redis, Mailtrap stand-in, worker, webhooks."""
    from .demo import run

    try:
        run(to=to, from_email=from_email, template_id=template_id)
    except KeyboardInterrupt:
        click.echo("interrupted; everything the demo started is stopped", err=True)
        sys.exit(130)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mailqueue`` command."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="mailqueue")
