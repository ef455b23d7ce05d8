"""Commands that steer what is queued: campaigns, suppressions, scheduled sends.

A thin layer over ``mailqueue.steering`` and the stores, as the rest of the
command line: errors become one ``error:`` line through the main group.

    mailqueue campaign status|pause|resume|cancel NAME [--watch]
    mailqueue suppressions list|add|remove|import|export|sync
    mailqueue scheduled list|cancel|reschedule
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from typing import Any

import click

from . import steering
from .campaign_view import campaign_line
from .cli_errors import CliError
from .cli_views import table
from .client import Client
from .errors import ValidationError

__all__ = ["CampaignCommands", "register"]

STEERING_COMMANDS = ("status", "pause", "resume", "cancel", "list")


def _client() -> Client:
    from .client import default as current

    return current()


class CampaignCommands(click.Group):
    """``campaign CSV ...`` queues a campaign; ``campaign status|pause|... NAME`` steers one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["send", *args]
        return super().parse_args(ctx, args)


@click.group(cls=CampaignCommands, name="campaign")
def campaign_group() -> None:
    """Queue a campaign from a CSV, or follow and steer one by name.

    \b
    mailqueue campaign recipients.csv --template-id UUID [--name NAME] ...
    mailqueue campaign status NAME [--watch]
    mailqueue campaign pause|resume|cancel NAME
    """


def _record(name: str) -> dict[str, Any]:
    record = _client().get_campaign(name)
    if record is None:
        raise CliError(f"no campaign named {name!r}")
    return dict(record)


def _show(record: dict[str, Any], as_json: bool) -> None:
    click.echo(json.dumps(record, indent=2) if as_json else campaign_line(record))


@campaign_group.command("status")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--watch", is_flag=True, help="Refresh until the campaign is finished or cancelled.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option("--timeout", default=0.0, help="Give up --watch after this many seconds (0: never).")
def campaign_status(name: str, as_json: bool, watch: bool, interval: float, timeout: float) -> None:
    """Progress, rate, ETA and per-status counts of campaign NAME."""
    record = _record(name)
    if not watch:
        _show(record, as_json)
        return
    live = sys.stdout.isatty() and not as_json
    deadline = time.monotonic() + timeout if timeout > 0 else None
    while True:
        if live:
            click.echo("\r\033[K" + campaign_line(record), nl=False)
        else:
            _show(record, as_json)
        if record["state"] in ("finished", "cancelled"):
            break
        if deadline is not None and time.monotonic() >= deadline:
            if live:
                click.echo()
            raise CliError(f"--timeout: campaign {name} still {record['state']}")
        time.sleep(max(interval, 0.1))
        record = _record(name)
    if live:
        click.echo()


@campaign_group.command("pause")
@click.argument("name")
def campaign_pause(name: str) -> None:
    """Pause campaign NAME fleet-wide: no new call of it starts."""
    click.echo(campaign_line(dict(_client().pause_campaign(name))))


@campaign_group.command("resume")
@click.argument("name")
def campaign_resume(name: str) -> None:
    """Resume a paused campaign."""
    click.echo(campaign_line(dict(_client().resume_campaign(name))))


@campaign_group.command("cancel")
@click.argument("name")
def campaign_cancel(name: str) -> None:
    """Cancel campaign NAME: recipients not yet handed to Mailtrap end cancelled."""
    click.echo(campaign_line(dict(_client().cancel_campaign(name))))


@campaign_group.command("list")
@click.option("--limit", default=20, show_default=True)
def campaign_list(limit: int) -> None:
    """The most recent campaigns, one line each."""
    client = _client()
    for name in client.campaigns.names(limit):
        record = client.get_campaign(name)
        if record is not None:
            click.echo(campaign_line(dict(record)))


# -- suppressions ----------------------------------------------------------

_STREAM = click.Choice(["transactional", "bulk"])
_COLUMNS = ("address", "reason", "stream", "created_at")


@click.group("suppressions")
def suppressions_group() -> None:
    """Addresses mailqueue never mails: list, add, remove, import, export, sync."""


@suppressions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one suppression a line.")
def suppressions_list(as_json: bool) -> None:
    """Every suppressed address."""
    entries = sorted(_client().suppressions.entries(), key=lambda s: s["address"])
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    rows = [[e["address"], e["stream"] or "all", e["reason"], e["created_at"]] for e in entries]
    click.echo(table(["address", "stream", "reason", "since"], rows) if rows else "none")


@suppressions_group.command("add")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
@click.option("--reason", default="manual", show_default=True)
@click.option("--stream", type=_STREAM, help="Only this sending stream (default: every stream).")
def suppressions_add(addresses: tuple[str, ...], reason: str, stream: str | None) -> None:
    """Never mail ADDRESS again."""
    client = _client()
    for address in addresses:
        entry = client.suppress(address, reason=reason, stream=stream)
        click.echo(f"suppressed {entry['address']} ({entry['stream'] or 'all streams'})")


@suppressions_group.command("remove")
@click.argument("addresses", nargs=-1, required=True, metavar="ADDRESS...")
def suppressions_remove(addresses: tuple[str, ...]) -> None:
    """Let mail reach ADDRESS again."""
    client = _client()
    for address in addresses:
        found = client.unsuppress(address)
        click.echo(f"{'unsuppressed' if found else 'was not suppressed:'} {address}")


@suppressions_group.command("import")
@click.argument("path", metavar="CSV")
@click.option("--reason", default="import", show_default=True, help="For rows without one.")
def suppressions_import(path: str, reason: str) -> None:
    """Suppress every row of CSV (an 'email' or 'address' column; 'reason', 'stream' optional)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            rows = [{k.strip().lower(): v for k, v in row.items() if k} for row in reader]
    except OSError as exc:
        raise CliError(f"CSV: cannot read {path}: {exc.strerror}") from None
    try:
        count = _client().suppressions.import_rows(rows, reason=reason)
    except ValidationError as exc:
        # Row 1 is the header line.
        raise CliError(f"row {(exc.index or 0) + 2}: {exc}") from None
    click.echo(f"imported {count} suppressions")


@suppressions_group.command("export")
def suppressions_export() -> None:
    """Every suppression as CSV on standard output (the format import reads)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=_COLUMNS)
    writer.writeheader()
    for entry in sorted(_client().suppressions.entries(), key=lambda s: s["address"]):
        writer.writerow({**entry, "stream": entry["stream"] or ""})
    click.echo(out.getvalue(), nl=False)


@suppressions_group.command("sync")
def suppressions_sync() -> None:
    """Add Mailtrap's own suppressions here; lift there those lifted here since."""
    from .suppression_sync import sync_suppressions

    report = sync_suppressions(_client())
    click.echo(
        f"Mailtrap lists {report.listed}: {report.added} added here, "
        f"{report.lifted} lifted at Mailtrap"
    )


# -- scheduled sends -------------------------------------------------------


@click.group("scheduled")
def scheduled_group() -> None:
    """Sends held for a time to come: list, cancel, reschedule."""


@scheduled_group.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def scheduled_list(limit: int, as_json: bool) -> None:
    """Sends waiting for their time, soonest first."""
    found = steering.list_scheduled(_client(), limit)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [[s["id"], s["send_at"], s["state"], s["campaign"] or "-"] for s in found]
    click.echo(table(["send", "send at", "state", "campaign"], rows) if rows else "none")


@scheduled_group.command("cancel")
@click.argument("send_ids", nargs=-1, required=True, metavar="SEND_ID...")
def scheduled_cancel(send_ids: tuple[str, ...]) -> None:
    """Cancel sends not yet handed to Mailtrap."""
    client = _client()
    for send_id in send_ids:
        record = client.cancel(send_id)
        click.echo(f"{send_id} {record['state']}")


@scheduled_group.command("reschedule")
@click.argument("send_id")
@click.argument("when")
def scheduled_reschedule(send_id: str, when: str) -> None:
    """Hold SEND_ID until WHEN (ISO 8601, e.g. 2030-05-01T09:00:00Z, or Unix time)."""
    record = _client().reschedule(send_id, when)
    click.echo(f"{send_id} {record['state']} until {record.get('send_at', when)}")


def register(cli: click.Group, send: click.Command) -> None:
    """Add these commands to the main group; ``send`` is the CSV campaign command."""
    campaign_group.add_command(send, "send")
    cli.add_command(campaign_group)
    cli.add_command(suppressions_group)
    cli.add_command(scheduled_group)
