"""``mailqueue dead-letters`` and ``reconcile``: sends that failed, or whose outcome is in doubt."""

from __future__ import annotations

import json
from typing import cast

import click

from mailqueue.cli.errors import CliError
from mailqueue.cli.group import cli, listing_options, stream_option
from mailqueue.cli.group import client as current_client
from mailqueue.cli.views import format_dead_letters, format_reconciled
from mailqueue.core.routing import Stream
from mailqueue.reconcile.send_audit import reconcile_doubtful, reconcile_send

__all__ = ["dead_letters", "reconcile"]


@cli.group("dead-letters")
def dead_letters() -> None:
    """Sends that failed for good: list, requeue or purge them."""


@dead_letters.command("list")
@listing_options
def dead_letters_list(limit: int, as_json: bool) -> None:
    """List dead-lettered sends, oldest first."""
    letters = current_client().list_dead_letters(limit)
    if as_json:
        click.echo(json.dumps([letter.__dict__ for letter in letters], indent=2))
        return
    if not letters:
        click.echo("no dead letters")
        return
    click.echo(format_dead_letters(letters))


@dead_letters.command("requeue")
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter.")
def dead_letters_requeue(send_ids: tuple[str, ...], all_: bool) -> None:
    """Send dead-lettered sends again."""
    chosen = _chosen(send_ids, all_)
    count = current_client().requeue_dead_letters(chosen)
    click.echo(f"requeued {count} send(s)")
    if chosen is not None and count < len(chosen):
        raise CliError(f"SEND_ID: {len(chosen) - count} of the ids given are not dead letters")


@dead_letters.command("purge")
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Forget every dead letter.")
def dead_letters_purge(send_ids: tuple[str, ...], all_: bool) -> None:
    """Forget dead letters (their status records stay until they expire)."""
    count = current_client().purge_dead_letters(_chosen(send_ids, all_))
    click.echo(f"purged {count} dead letter(s)")


def _chosen(send_ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if all_ and send_ids:
        raise CliError("SEND_ID: give send ids or --all, not both")
    if not all_ and not send_ids:
        raise CliError("SEND_ID: give at least one send id, or --all")
    return None if all_ else list(send_ids)


@cli.command()
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Every send whose outcome was in doubt.")
@stream_option(
    "transactional", "bulk", default="transactional", help="The stream whose token reads the logs."
)
@click.option("--account", help="The named account whose token reads the logs.")
def reconcile(send_ids: tuple[str, ...], all_: bool, stream: str, account: str | None) -> None:
    """Ask Mailtrap's Email Logs what sends really did (after an incident)."""
    chosen = _chosen(send_ids, all_)
    client = current_client()
    which = cast(Stream, stream)
    limiters = client.email_logs_limiters
    if chosen is None:
        results = reconcile_doubtful(
            settings=client.settings,
            status=client.store,
            limiters=limiters,
            stream=which,
            account=account,
        )
    else:
        results = []
        for send_id in chosen:
            result = reconcile_send(
                send_id,
                settings=client.settings,
                status=client.store,
                limiters=limiters,
                stream=which,
                account=account,
            )
            if result is None:
                raise CliError(f"SEND_ID: no send {send_id!r}")
            results.append(result)
    if not results:
        click.echo("no doubtful sends")
        return
    click.echo(format_reconciled(results))
