"""``mailqueue scheduled``: sends held for a time to come."""

from __future__ import annotations

import json

import click

from mailqueue.cli.group import cli, each, listing_options
from mailqueue.cli.group import client as current_client
from mailqueue.cli.views import table
from mailqueue.produce import steering

__all__ = ["scheduled_group"]


@click.group("scheduled")
def scheduled_group() -> None:
    """Sends held for a time to come: list, cancel, reschedule."""


@scheduled_group.command("list")
@listing_options
def scheduled_list(limit: int, as_json: bool) -> None:
    """Sends waiting for their time, soonest first."""
    found = steering.list_scheduled(limit, status=current_client().store)
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [[s["id"], s["send_at"], s["state"], s["campaign"] or "-"] for s in found]
    click.echo(table(["send", "send at", "state", "campaign"], rows) if rows else "none")


@scheduled_group.command("cancel")
@click.argument("send_ids", nargs=-1, required=True, metavar="SEND_ID...")
def scheduled_cancel(send_ids: tuple[str, ...]) -> None:
    """Cancel sends not yet handed to Mailtrap."""
    client = current_client()
    each(send_ids, lambda send_id: f"{send_id} {client.cancel(send_id)['state']}")


@scheduled_group.command("reschedule")
@click.argument("send_id")
@click.argument("when")
def scheduled_reschedule(send_id: str, when: str) -> None:
    """Hold SEND_ID until WHEN (ISO 8601, e.g. 2030-05-01T09:00:00Z, or Unix time)."""
    record = current_client().reschedule(send_id, when)
    click.echo(f"{send_id} {record['state']} until {record.get('send_at', when)}")


cli.add_command(scheduled_group)
