"""The command line's errors: its one kind (a user mistake), and one line for any library error."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import IO, Any

import click
import redis

from mailqueue.core.addresses import InvalidAddress
from mailqueue.core.urls import mask_url
from mailqueue.errors import BrokerUnavailable, ConfigurationError, MailqueueError, ValidationError

__all__ = ["CliError", "describe", "field_error", "flag_error", "reason"]


class CliError(click.ClickException):
    """A user mistake: printed as one ``error: ...`` line on stderr, exit status 1."""

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def field_error(exc: ValidationError) -> str:
    """A validation error's text, led by its field when the text does not name it."""
    text = str(exc.args[0]) if exc.args else str(exc)
    if exc.field and exc.field not in text:
        return f"{exc.field}: {text}"
    return text


def flag_error(exc: ValidationError, flags: Mapping[str, str]) -> str:
    """A validation error of a message built from flags, naming the flag a person typed.

    ``flags`` maps a message key (``to``) to its flag (``--to``); an error
    about ``to[1]`` is about the second ``--to``, which the flag and the
    value it was given already say.
    """
    key = re.split(r"[\[.]", exc.field or "", maxsplit=1)[0]
    flag = flags.get(key)
    if flag is None:
        return describe(exc)
    if isinstance(exc, InvalidAddress):
        return f"{flag} {exc.address!r}: not an email address ({exc.reason})"
    text = str(exc.args[0]) if exc.args else str(exc)
    if text.startswith(f"{key} "):  # "from_email is required" -> "--from is required"
        return flag + text[len(key) :]
    return f"{flag}: {text}"


def describe(exc: BaseException) -> str:
    """One line for a library error: what failed, naming the field, setting or URL."""
    if isinstance(exc, ValidationError):
        text = field_error(exc)
        return f"messages[{exc.index}]: {text}" if exc.index is not None else text
    if isinstance(exc, ConfigurationError):
        text = str(exc)
        # Named already, as the setting or as its variable (MAILQUEUE_REDIS_URL).
        if not exc.setting or exc.setting in text or exc.setting.upper() in text:
            return text
        return f"{exc.setting}: {text}"
    if isinstance(exc, (BrokerUnavailable, redis.RedisError)):
        text = str(exc) if isinstance(exc, BrokerUnavailable) else type(exc).__name__
        if "://" not in text:
            text = f"{text} (Redis at {_redis_url()})"
        return text if text.startswith("cannot") else f"cannot reach Redis: {text}"
    return str(exc) or type(exc).__name__


def _redis_url() -> str:
    from mailqueue.client import default

    try:
        return mask_url(default().settings.status_redis_url)
    except MailqueueError:
        return "an unknown URL"


def reason(exc: BaseException) -> str:
    """Why a file could not be read, as the system says it."""
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
