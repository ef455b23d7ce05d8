"""``mailqueue status`` and ``mailqueue lanes``: where sends, groups and the outbox stand."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import click

from mailqueue.cli.errors import CliError
from mailqueue.cli.group import cli
from mailqueue.cli.group import client as current_client
from mailqueue.cli.views import (
    FAILURE_STATUSES,
    RECIPIENTS_SHOWN,
    failed_recipients,
    format_failed_sends,
    format_group,
    format_status,
    stall_note,
)
from mailqueue.client import Client
from mailqueue.records import FINAL_STATES
from mailqueue.store.groups import get_group
from mailqueue.store.outbox import LaneStats
from mailqueue.store.waker import Activity, fleet_activity

__all__ = ["lanes", "status", "watch_view"]


@cli.command()
@click.argument("send_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--watch", is_flag=True, help="Refresh until the send (or group) is final.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds --watch waits.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
@click.option(
    "--all", "every", is_flag=True, help="List every recipient of a large send, not a summary."
)
@click.option(
    "--failed", is_flag=True, help="List only what failed: a send's recipients, a group's sends."
)
def status(
    send_id: str,
    as_json: bool,
    watch: bool,
    timeout: float,
    interval: float,
    every: bool,
    failed: bool,
) -> None:
    """Show the status of a send, or the progress of a group of sends (campaign --individual).

    A send of many recipients shows their counts and its first failures; --all
    lists every one, --failed every failure.
    """
    client = current_client()

    def view() -> tuple[str, bool, str]:
        """The text shown, whether it is final, and what it waits for."""
        record = client.get_status(send_id)
        if record is not None:
            if failed:
                text = (
                    json.dumps(_failed_only(record), indent=2)
                    if as_json
                    else failed_recipients(record)
                )
            elif as_json:
                text = json.dumps(record, indent=2)
            else:
                ahead = client.outbox.ahead_of(send_id) if record["state"] == "queued" else None
                shown = None if every else RECIPIENTS_SHOWN
                text = format_status(record, _activity(client), ahead, recipients_shown=shown)
            waiting = f"send still {record['state']}"
            return text, record["state"] in FINAL_STATES, _stalled(waiting, record, client)
        group = get_group(send_id, status=client.store)
        if group is None:
            raise CliError(f"ID: no send or group {send_id!r} (unknown or expired)")
        if failed:
            failures = client.store.group_failures(send_id)
            text = json.dumps(failures, indent=2) if as_json else format_failed_sends(failures)
        elif as_json:
            text = json.dumps(group.summary(), indent=2)
        else:
            text = format_group(group, _activity(client))
        waiting = f"group has {group.total - group.finished} of {group.total} sends not final"
        return text, group.done, waiting

    watch_view(view, watch=watch, timeout=timeout, interval=interval, blank_between=not as_json)


def _failed_only(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with only its recipients that failed."""
    recipients = record.get("recipients") or {}
    return {
        **record,
        "recipients": {
            address: info
            for address, info in recipients.items()
            if info.get("status") in FAILURE_STATUSES
        },
    }


def _activity(client: Client) -> Activity:
    return fleet_activity(waker=client.waker, outbox=client.outbox)


def _stalled(waiting: str, record: Mapping[str, Any], client: Client) -> str:
    if record["state"] in FINAL_STATES:
        return waiting
    note = stall_note(record, _activity(client))
    return f"{waiting} ({note})" if note else waiting


def watch_view(
    view: Callable[[], tuple[str, bool, str]],
    *,
    watch: bool,
    timeout: float,
    interval: float,
    blank_between: bool = True,
) -> None:
    """Print ``view`` once, or (``watch``) each time it changes until it is final."""
    deadline = time.monotonic() + timeout
    last: str | None = None
    while True:
        text, final, waiting = view()
        if text != last:
            if last is not None and blank_between:
                click.echo()
            click.echo(text)
            last = text
        if final or not watch:
            return
        if time.monotonic() >= deadline:
            raise CliError(f"--timeout: {waiting} after {timeout:g} s")
        time.sleep(max(interval, 0.05))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def lanes(as_json: bool) -> None:
    """Work waiting per lane and Mailtrap stream: backlog, in flight, oldest age."""
    stats = current_client().lane_stats()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(entry) for entry in stats], indent=2))
        return
    for line in format_lanes(stats):
        click.echo(line)


def format_lanes(stats: Iterable[LaneStats]) -> list[str]:
    """A table of the lanes for a terminal."""
    lines = [
        f"{'lane':<14}{'stream':<15}{'waiting':>9}{'in flight':>11}{'oldest':>10}{'paused':>9}"
    ]
    for entry in stats:
        lines.append(
            f"{entry.lane:<14}{entry.stream:<15}{entry.waiting:>9}{entry.in_flight:>11}"
            f"{entry.oldest_seconds:>9.1f}s{entry.paused:>9}"
            + (f"  ({entry.campaigns} campaigns)" if entry.campaigns else "")
        )
    return lines
