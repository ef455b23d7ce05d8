"""A worker refuses to start when it could not send anything.

Without an API token every call Mailtrap answers is a 401, so a worker that
started anyway would leave every send ``queued`` and log a failure every few
seconds. The check runs when Celery starts a worker (its ``worker_init``
signal, for ``celery -A mailqueue worker`` and ``mailqueue worker`` alike)
and prints one line naming the setting instead of a traceback; so does a
malformed setting that Celery's command line meets while reading its
configuration.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import click
from celery.signals import worker_init

from .api_session import check_api_url
from .errors import ConfigurationError, MailqueueError
from .settings import Settings, account_env_prefix

__all__ = ["check_worker_settings", "refuse_in_celery_command"]


def check_worker_settings(settings: Settings) -> None:
    """Raise ConfigurationError, naming the setting, when a worker with ``settings`` cannot send."""
    if not settings.api_token:
        raise ConfigurationError(
            "MAILTRAP_API_TOKEN is not set: a worker cannot send without it "
            "(the sandbox needs one too)",
            setting="api_token",
        )
    for setting, name, url in _mailtrap_urls(settings):
        check_api_url(url, name, setting, allow_http=settings.allow_http_api_urls)
    if settings.on_outcome:
        # Found at start, not at the first send's end: a typo is one line, not a log per send.
        from .outcome_hooks import load_callable

        load_callable(settings.on_outcome, "on_outcome")


def _mailtrap_urls(settings: Settings) -> Iterator[tuple[str, str, str]]:
    """``(setting, environment name, URL)`` for each Mailtrap URL set, the accounts' too."""
    for setting in ("api_url", "bulk_api_url", "general_api_url"):
        url = getattr(settings, setting)
        if url:
            yield setting, f"MAILTRAP_{setting.upper()}", url
    for account in settings.accounts.values():
        for setting in ("api_url", "bulk_api_url"):
            url = getattr(account, setting)
            if url:
                yield "accounts", account_env_prefix(account.name) + setting.upper(), url


def refuse_in_celery_command(exc: MailqueueError) -> None:
    """End Celery's own command line (``celery -A mailqueue worker``) with one line for ``exc``.

    Celery reads its configuration while it parses the worker's options, long
    before ``worker_init``; a malformed setting found then would otherwise end
    in a traceback. Anywhere else (a web process publishing) this does nothing
    and the caller raises as usual.
    """
    context = click.get_current_context(silent=True)
    if context is None:
        return
    from celery.bin.celery import celery as celery_command

    if context.find_root().command is celery_command:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(1)


@worker_init.connect
def _refuse_to_start(**_: Any) -> None:
    from .client import default as current

    try:
        check_worker_settings(current().settings)
    except MailqueueError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        # SystemExit passes through Celery's signal dispatch (which logs and
        # swallows an Exception) and ends the worker before it takes work.
        raise SystemExit(1) from None
