"""``mailqueue campaign``: queue a campaign from a CSV, then follow and steer it by name.

    mailqueue campaign CSV --template-id UUID | --subject S (--text T | --html H)
                       [--name NAME] [--individual] [--follow]
    mailqueue campaign status|pause|resume|cancel NAME [--watch]
    mailqueue campaign list
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import click

from mailqueue.cli.errors import CliError, field_error, flag_error, reason
from mailqueue.cli.group import cli, stream_option
from mailqueue.cli.group import client as current_client
from mailqueue.cli.status import watch_view
from mailqueue.cli.views import counts_line
from mailqueue.client import Client
from mailqueue.core.views import campaign_line
from mailqueue.errors import ValidationError
from mailqueue.produce.campaign_csv import (
    Content,
    Recipient,
    Repeats,
    individual_messages,
    iter_recipients,
)
from mailqueue.produce.campaign_file import open_csv, queue_campaign_file, source_name
from mailqueue.produce.chunked_send import QueuedGroup, enqueue_each
from mailqueue.records import FINAL_STATES
from mailqueue.store.campaigns import ENDED_STATES
from mailqueue.store.groups import SendIds, get_batch_progress, get_group

__all__ = ["campaign_group"]

# What every recipient's message takes from the flags, and the flag of each.
CONTENT_FLAGS = {
    "from_email": "--from",
    "template_id": "--template-id",
    "subject": "--subject",
    "text": "--text",
    "html": "--html",
}


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
    mailqueue campaign recipients.csv --subject S --text T [--html H] ...
    mailqueue campaign status NAME [--watch]
    mailqueue campaign pause|resume|cancel NAME
    """


def _record(name: str) -> dict[str, Any]:
    record = current_client().get_campaign(name)
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
        if record["state"] in ENDED_STATES:
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
    click.echo(campaign_line(dict(current_client().pause_campaign(name))))


@campaign_group.command("resume")
@click.argument("name")
def campaign_resume(name: str) -> None:
    """Resume a paused campaign."""
    click.echo(campaign_line(dict(current_client().resume_campaign(name))))


@campaign_group.command("cancel")
@click.argument("name")
def campaign_cancel(name: str) -> None:
    """Cancel campaign NAME: recipients not yet handed to Mailtrap end cancelled."""
    click.echo(campaign_line(dict(current_client().cancel_campaign(name))))


@campaign_group.command("list")
@click.option("--limit", default=20, show_default=True)
def campaign_list(limit: int) -> None:
    """The most recent campaigns, one line each."""
    for record in current_client().campaigns.recent(limit):
        click.echo(campaign_line(dict(record)))


@campaign_group.command("send")
@click.argument("csv_path", metavar="CSV")
@click.option("--template-id", metavar="UUID", help="Mailtrap template UUID.")
@click.option("--subject", help="Subject, for a message without a template.")
@click.option("--text", help="Plain-text body, for a message without a template.")
@click.option("--html", help="HTML body, for a message without a template.")
@click.option("--from", "from_email", metavar="ADDRESS", help="Sender address.")
@click.option("--individual", is_flag=True, help="One message per row instead of one batch send.")
@click.option("--name", metavar="NAME", help="Campaign name, to follow, pause, resume or cancel.")
@stream_option(
    "bulk",
    "transactional",
    default="bulk",
    help="Mailtrap's sending stream: promotional mail must use bulk.",
)
@click.option("--account", metavar="NAME", help="A configured account (MAILQUEUE_ACCOUNTS).")
@click.option("--follow", is_flag=True, help="Show per-state counts until every send is final.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds --follow waits.")
def campaign_send(
    csv_path: str,
    template_id: str | None,
    subject: str | None,
    text: str | None,
    html: str | None,
    from_email: str | None,
    individual: bool,
    name: str | None,
    stream: str,
    account: str | None,
    follow: bool,
    timeout: float,
) -> None:
    """Send a template, or a subject and body, to every row of CSV (an 'email' column).

    The other columns are each recipient's template variables. A row whose
    address came earlier in the file is left out, and counted. Prints the id
    to follow with 'mailqueue status': the batch send's, or with
    --individual the group's. With --name, 'mailqueue campaign status NAME'
    follows it too, and pause, resume and cancel steer it.
    """
    content = _content(template_id, subject, text, html)
    client = current_client()
    routing = {"stream": stream, **({"account": account} if account else {})}
    job = _CampaignFile(csv_path, content, from_email, routing, name)
    if individual:
        group = _queue_rows(client, job)
        click.echo(
            _with_repeats(f"queued {group.sends} sends in group {group.group_id}", job), err=True
        )
        click.echo(group.group_id)
        progress = functools.partial(_group_line, client, SendIds(group_id=group.group_id))
    else:
        send_id = _queue_file(client, job)
        click.echo(send_id)
        progress = functools.partial(_batch_line, client, send_id, name)
    if follow:
        watch_view(progress, watch=True, timeout=timeout, interval=0.5, blank_between=False)


def _content(
    template_id: str | None, subject: str | None, text: str | None, html: str | None
) -> Content:
    """The template, or the subject and body, every recipient gets; CliError for a mix."""
    own = (("subject", subject), ("text", text), ("html", html))
    given = {key: value for key, value in own if value is not None}
    if template_id is not None:
        if given:
            flags = ", ".join(f"--{key}" for key in given)
            raise CliError(f"--template-id: the template has its own subject and body ({flags})")
        return template_id
    if not given:
        raise CliError("--template-id, or --subject with --text or --html, is required")
    if subject is None:
        raise CliError("--subject is required without --template-id")
    if text is None and html is None:
        raise CliError("--text or --html is required without --template-id")
    return given


@dataclass(frozen=True)
class _CampaignFile:
    """What either kind of campaign is made of: the file, content, sender, routing and name.

    ``repeats`` collects the rows left out as repeated addresses while it is queued.
    """

    csv_path: str
    content: Content
    from_email: str | None
    routing: Mapping[str, Any]
    name: str | None
    repeats: Repeats = field(default_factory=Repeats)


def _with_repeats(line: str, job: _CampaignFile) -> str:
    """A summary line, with the rows left out as repeated when there were any."""
    left_out = job.repeats.summary()
    return f"{line}; {left_out}" if left_out else line


def _queue_file(client: Client, job: _CampaignFile) -> str:
    """Queue the file as one batch send, streamed; a live count on a terminal."""
    csv_path = job.csv_path
    live = sys.stderr.isatty()

    def show(phase: str, count: int) -> None:
        if live:
            click.echo(f"\r{phase} {count:,} recipients", nl=False, err=True)

    try:
        queued = queue_campaign_file(
            client.producer, csv_path, job.content, from_email=job.from_email, routing=job.routing,
            campaign=job.name, progress=show, repeats=job.repeats,
        )  # fmt: skip
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"CSV: cannot read {csv_path!r}: {reason(exc)}") from None
    except ValidationError as exc:
        if exc.field in CONTENT_FLAGS:
            raise CliError(flag_error(exc, CONTENT_FLAGS)) from None
        raise
    finally:
        if live:
            click.echo(err=True)
    if queued.already_queued:
        click.echo(f"send {queued.send_id} was queued already: nothing queued again", err=True)
    elif queued.resumed_from:
        click.echo(
            f"queued the {queued.parts - queued.resumed_from} parts of {queued.parts} "
            f"an interrupted run had left", err=True,
        )  # fmt: skip
    else:
        parts = "1 part" if queued.parts == 1 else f"{queued.parts:,} parts"
        line = f"queued {queued.recipients:,} recipients in {parts}"
        click.echo(_with_repeats(line, job), err=True)
    return queued.send_id


def _queue_rows(client: Client, job: _CampaignFile) -> QueuedGroup:
    """Queue one send per row, streamed; a bad row is named with the file and its row."""
    row: list[Recipient] = []
    csv_path = job.csv_path

    def messages() -> Iterator[dict[str, Any]]:
        with open_csv(csv_path) as handle:
            source = source_name(csv_path)
            for recipient in iter_recipients(handle, source=source, repeats=job.repeats):
                row[:] = [recipient]
                (message,) = individual_messages(row, job.content, job.from_email)
                yield {**message, **job.routing}

    try:
        return enqueue_each(
            client.producer, messages(), campaign=job.name, left_out=lambda: job.repeats.count
        )
    except ValidationError as exc:
        if exc.field in CONTENT_FLAGS:
            raise CliError(flag_error(exc, CONTENT_FLAGS)) from None
        if exc.index is None or not row:
            raise
        exc.index = None  # the row the error is about is the last one read
        where = f"{source_name(csv_path)}: row {row[0].row} ({row[0].email})"
        raise CliError(f"{where}: {field_error(exc)}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"CSV: cannot read {csv_path!r}: {reason(exc)}") from None


def _group_line(client: Client, ids: SendIds) -> tuple[str, bool, str]:
    group = get_group(ids.group_id or "", status=client.store)
    if group is None:
        raise CliError(f"the group {ids.group_id} expired")
    return counts_line(group.by_state), group.done, "campaign not finished"


def _batch_line(client: Client, send_id: str, name: str | None) -> tuple[str, bool, str]:
    if name is None:
        progress = get_batch_progress(send_id, status=client.store)
        if progress is None:
            raise CliError(f"the send {send_id} expired")
        line = counts_line({**progress.recipients, f"send:{progress.state}": 1})
        return line, progress.done, "campaign not finished"
    # A named campaign's counters are one read; counting a million recipients'
    # statuses twice a second would load Redis for as long as it is followed.
    state = client.store.state(send_id)
    record = client.get_campaign(name)
    if state is None or record is None:
        raise CliError(f"the send {send_id} expired")
    line = counts_line({**record["counts"], f"send:{state}": 1})
    return line, state in FINAL_STATES, "campaign not finished"


cli.add_command(campaign_group)
