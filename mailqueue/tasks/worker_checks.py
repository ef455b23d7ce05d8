"""A worker refuses to start when it could not send anything.

Without an API token every call Mailtrap answers is a 401, so a worker that
started anyway would leave every send ``queued`` and log a failure every few
seconds. The check runs when Celery starts a worker (its ``worker_init``
signal, for ``celery -A mailqueue worker`` and ``mailqueue worker`` alike)
and prints one line naming the setting instead of a traceback; so does a
malformed setting that Celery's command line meets while reading its
configuration.

A worker whose API URL is on this machine (the local stand-in) while its bulk
URL is left at Mailtrap's default is refused too: that is a test or
development set-up which forgot one URL, and its campaigns would go to the
real bulk stream (with a real token, to real people) while everything else
stays local. It is refused rather than warned about because a warning in a
worker's log is read after the mail went out. A bulk URL set explicitly to
Mailtrap's is taken as meant, with a warning at start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from celery.signals import worker_init

from mailqueue.celery_app import ours
from mailqueue.core.urls import mask_url
from mailqueue.errors import ConfigurationError, MailqueueError
from mailqueue.mailtrap.session import check_api_url, is_loopback_host
from mailqueue.settings import DEFAULT_BULK_API_URL, Settings, account_env_prefix

__all__ = ["check_worker_settings", "worker_warnings"]

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
    if _bulk_leaves_the_machine(settings) and not settings.bulk_api_url:
        raise ConfigurationError(
            f"MAILTRAP_API_URL is on this machine ({mask_url(settings.base_url)}) but "
            "MAILTRAP_BULK_API_URL is not set, so bulk mail (campaigns) would go to Mailtrap's "
            f"real bulk stream ({DEFAULT_BULK_API_URL}): set MAILTRAP_BULK_API_URL "
            "('mailqueue local-mailtrap' prints it), or to Mailtrap's URL if that is meant",
            setting="bulk_api_url",
        )
    if settings.on_outcome:
        # Found at start, not at the first send's end: a typo is one line, not a log per send.
        from mailqueue.deliver.hooks import load_callable

        try:
            load_callable(settings.on_outcome, "on_outcome")
        except ConfigurationError as exc:
            # Named as the person set it, in the environment or settings.py.
            words = str(exc).removeprefix("on_outcome")
            raise ConfigurationError(f"MAILQUEUE_ON_OUTCOME{words}", setting="on_outcome") from None


def worker_warnings(settings: Settings) -> list[str]:
    """What a worker that may start says about its settings first, one line each."""
    warnings = []
    if _bulk_leaves_the_machine(settings):
        warnings.append(
            f"MAILTRAP_API_URL is on this machine but MAILTRAP_BULK_API_URL "
            f"({mask_url(settings.bulk_api_url or DEFAULT_BULK_API_URL)}) is not: "
            "bulk mail (campaigns) leaves it"
        )
    return warnings


def _bulk_leaves_the_machine(settings: Settings) -> bool:
    """Whether transactional mail goes to this machine and bulk mail elsewhere (no sandbox)."""
    if settings.sandbox_id:
        return False  # both streams go to the sandbox, at the API URL
    bulk = settings.bulk_api_url or DEFAULT_BULK_API_URL
    return _on_this_machine(settings.base_url) and not _on_this_machine(bulk)


def _on_this_machine(url: str) -> bool:
    return is_loopback_host(urlsplit(url).hostname or "")


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


@worker_init.connect
def _refuse_to_start(sender: Any = None, **_: Any) -> None:
    if not ours(sender):
        return
    from mailqueue.client import default as current

    try:
        settings = current().settings
        check_worker_settings(settings)
        for warning in worker_warnings(settings):
            print(f"warning: {warning}", file=sys.stderr, flush=True)
    except MailqueueError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        # SystemExit passes through Celery's signal dispatch (which logs and
        # swallows an Exception) and ends the worker before it takes work.
        raise SystemExit(1) from None
