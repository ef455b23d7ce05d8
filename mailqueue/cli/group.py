"""The ``mailqueue`` command group, which every command module adds its commands to."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import redis

from ..client import Client
from ..errors import MailqueueError
from .errors import CliError, describe, reason

__all__ = ["cli", "client", "read_text"]


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
    """The client the environment (or ``mailqueue.configure``) describes."""
    from ..client import default

    return default()


def read_text(path: str, option: str) -> str:
    """The text of the file ``option`` names (``-``: standard input)."""
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{option}: cannot read {path!r}: {reason(exc)}") from None
