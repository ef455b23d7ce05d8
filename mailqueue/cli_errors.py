"""The command line's one kind of error: a user mistake, printed as one ``error:`` line."""

from __future__ import annotations

from typing import IO, Any

import click

__all__ = ["CliError"]


class CliError(click.ClickException):
    """A user mistake: printed as one ``error: ...`` line on stderr, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)
