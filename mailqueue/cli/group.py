"""The ``mailqueue`` command group, which every command module adds its commands to."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import click
import redis

from mailqueue.cli.errors import CliError, describe, reason
from mailqueue.client import Client
from mailqueue.errors import MailqueueError

__all__ = ["cli", "client", "each", "listing_options", "read_text", "stream_option"]

F = TypeVar("F", bound=Callable[..., Any])


class _Commands(click.Group):
    """The command group: library errors raised by any command become one ``error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except (MailqueueError, redis.RedisError) as exc:
            raise CliError(describe(exc)) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailqueue")
def cli() -> None:
    """Queued email delivery through Mailtrap's Email API, on Celery and Redis."""


def client() -> Client:
    """The client the environment or the Django settings (or ``mailqueue.configure``) describe."""
    from mailqueue.client import default

    return default()


def read_text(path: str, option: str) -> str:
    """The text of the file ``option`` names (``-``: standard input)."""
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{option}: cannot read {path!r}: {reason(exc)}") from None


def each(items: Iterable[str], act: Callable[[str], str]) -> None:
    """Act on each item of the command line in turn, printing the line ``act`` returns."""
    for item in items:
        click.echo(act(item))


def stream_option(*streams: str, default: str | None = None, help: str) -> Callable[[F], F]:
    """A ``--stream`` option naming one of Mailtrap's sending ``streams``."""
    return click.option(
        "--stream",
        type=click.Choice(list(streams)),
        default=default,
        show_default=default is not None,
        help=help,
    )


def listing_options(command: F) -> F:
    """The ``--limit`` and ``--json`` options of a command listing records."""
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON.")(command)
    return click.option("--limit", default=100, show_default=True)(command)
