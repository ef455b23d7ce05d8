"""``mailqueue send``: one message, from flags or a JSON file."""

from __future__ import annotations

import base64
import json
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from mailqueue.cli.errors import CliError, flag_error, reason
from mailqueue.cli.group import cli, client, read_text
from mailqueue.errors import ValidationError

__all__ = ["message_from_options", "send"]

# The message keys ``send`` takes from flags, and the flag of each.
MESSAGE_FLAGS = {
    "from_email": "--from",
    "to": "--to",
    "cc": "--cc",
    "bcc": "--bcc",
    "subject": "--subject",
    "text": "--text",
    "html": "--html",
    "template_id": "--template-id",
    "tags": "--tag",
    "metadata": "--metadata",
    "attachments": "--attach",
}


def _attachment(path: str, index: int) -> dict[str, Any]:
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"--attach[{index}]: cannot read {path!r}: {reason(exc)}") from None
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
    text = read_text(source, "--json")
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
def send(json_source: str | None, idempotency_key: str | None, **options: Any) -> None:
    """Queue one message and print its send id."""
    # The message flags are named as message_from_options names its arguments.
    flags = message_from_options(**options)
    # Flags given beside --json override the file's keys.
    message = {**_message_from_json(json_source), **flags} if json_source is not None else flags
    try:
        send_id = client().enqueue(message, idempotency_key=idempotency_key)
    except ValidationError as exc:
        if exc.index is not None:
            raise
        # A key the flags gave is named by its flag; one from --json by its key.
        named = {key: flag for key, flag in MESSAGE_FLAGS.items() if key in flags}
        if exc.field == "from_email" and "from_email" not in message:
            named["from_email"] = "--from"
        raise CliError(flag_error(exc, named)) from None
    click.echo(send_id)
