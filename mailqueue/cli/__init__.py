"""The ``mailqueue`` command line: parses arguments, calls the library, prints.

Every mistake a person can make -- a malformed message or setting, a missing
file, an unreachable Redis, a busy port, a bad flag -- prints one
``error: ...`` line naming the field, setting or file, never a traceback:
status 1 for what the library refuses, 2 for a command line click cannot
parse. Nothing printed ever holds the API token or a Redis password.

One module per command group, each adding its commands to ``group.cli``:
``send``, ``status`` (and ``lanes``), ``campaign``, ``suppressions``,
``scheduled``, ``dead_letters`` (and ``reconcile``), ``processes`` (worker,
servers, local Mailtrap, demo); ``views`` is what they print.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
import redis

from mailqueue.cli import campaign, dead_letters, processes, scheduled, send, status, suppressions
from mailqueue.cli.errors import describe
from mailqueue.cli.group import cli
from mailqueue.cli.send import message_from_options
from mailqueue.errors import MailqueueError

__all__ = ["cli", "main", "message_from_options"]

# Imported for the commands they add to ``cli``.
_COMMAND_MODULES = (campaign, dead_letters, processes, scheduled, send, status, suppressions)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mailqueue`` command: one ``error:`` line for every mistake."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="mailqueue",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint, exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (MailqueueError, redis.RedisError) as exc:
        _fail(describe(exc), 1)
    except BrokenPipeError:
        # The reader of our output went away (``mailqueue status ... | head``).
        sys.stderr.close()
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
