"""``mailqueue suppressions``: the addresses mailqueue never mails."""

from __future__ import annotations

import io
import json

import click

from mailqueue.cli.errors import CliError, field_error
from mailqueue.cli.errors import reason as reason_of
from mailqueue.cli.group import cli, each, stream_option
from mailqueue.cli.group import client as current_client
from mailqueue.cli.views import table
from mailqueue.core.csv_table import Repeats
from mailqueue.errors import ValidationError
from mailqueue.store.suppressions import read_csv, write_csv

__all__ = ["suppressions_group"]


@click.group("suppressions")
def suppressions_group() -> None:
    """Addresses mailqueue never mails: list, add, remove, import, export, sync."""


@suppressions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one suppression a line.")
def suppressions_list(as_json: bool) -> None:
    """Every suppressed address."""
    entries = sorted(current_client().suppressions.entries(), key=lambda s: s["address"])
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    rows = [[e["address"], e["stream"] or "all", e["reason"], e["created_at"]] for e in entries]
    click.echo(table(["address", "stream", "reason", "since"], rows) if rows else "none")


@suppressions_group.command("add")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
@click.option("--reason", default="manual", show_default=True)
@stream_option("transactional", "bulk", help="Only this sending stream (default: every stream).")
def suppressions_add(addresses: tuple[str, ...], reason: str, stream: str | None) -> None:
    """Never mail ADDRESS again."""
    client = current_client()

    def add(address: str) -> str:
        entry = client.suppress(address, reason=reason, stream=stream)
        return f"suppressed {entry['address']} ({entry['stream'] or 'all streams'})"

    each(addresses, add)


@suppressions_group.command("remove")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
def suppressions_remove(addresses: tuple[str, ...]) -> None:
    """Let mail reach ADDRESS again."""
    client = current_client()

    def remove(address: str) -> str:
        found = client.unsuppress(address)
        return f"{'unsuppressed' if found else 'was not suppressed:'} {address}"

    each(addresses, remove)


@suppressions_group.command("import")
@click.argument("path", metavar="CSV")
@click.option("--reason", default="import", show_default=True, help="For rows without one.")
def suppressions_import(path: str, reason: str) -> None:
    """Suppress every row of CSV (an 'email' or 'address' column; 'reason', 'stream' optional).

    An address repeated on several rows is one suppression, of every stream
    its rows name.
    """
    repeats = Repeats()
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = read_csv(handle, source=path, repeats=repeats)
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"CSV: cannot read {path!r}: {reason_of(exc)}") from None
    except ValidationError as exc:
        raise CliError(field_error(exc)) from None
    try:
        count = current_client().suppressions.import_rows(rows, reason=reason)
    except ValidationError as exc:
        if exc.index is None:
            raise
        row = rows[exc.index]["row"]
        exc.index = None
        raise CliError(f"{path}: row {row}: {field_error(exc)}") from None
    line = f"imported {count} suppressions"
    merged = repeats.summary("merged")
    click.echo(f"{line}; {merged}" if merged else line)


@suppressions_group.command("export")
def suppressions_export() -> None:
    """Every suppression as CSV on standard output (the format import reads)."""
    out = io.StringIO()
    write_csv(current_client().suppressions.entries(), out)
    click.echo(out.getvalue(), nl=False)


@suppressions_group.command("sync")
def suppressions_sync() -> None:
    """Add Mailtrap's own suppressions here; lift there those lifted here since."""
    from mailqueue.mailtrap.suppression_sync import sync_suppressions

    client = current_client()
    report = sync_suppressions(settings=client.settings, suppressions=client.suppressions)
    click.echo(
        f"Mailtrap lists {report.listed}: {report.added} added here, "
        f"{report.lifted} lifted at Mailtrap"
    )


cli.add_command(suppressions_group)
