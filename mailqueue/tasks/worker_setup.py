"""What a worker sets up around Celery, and what it checks before it takes work.

The metrics folder is chosen in the worker's main process before the pool
forks (see :mod:`mailqueue.metrics.instruments`); a folder that cannot be written stops the
worker at start with one line naming ``PROMETHEUS_MULTIPROC_DIR``, instead of a
traceback from the first delivery.

``--heartbeat-file PATH`` (a worker option mailqueue adds) makes the worker
touch PATH every 10 s (``--heartbeat-file-interval``) while its event loop
runs, and remove it at shutdown. A container health check can then test the file's age locally,
without the broker round trip (and Python start) that ``celery inspect ping``
costs at every probe.

A worker refuses to start when it could not send anything.

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

import contextlib
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
from celery import bootsteps, signals

from mailqueue.celery_app import app, ours
from mailqueue.core.urls import mask_url
from mailqueue.errors import ConfigurationError, MailqueueError
from mailqueue.mailtrap.session import check_api_url, is_loopback_host
from mailqueue.metrics import instruments as metrics
from mailqueue.settings import DEFAULT_BULK_API_URL, Settings, account_env_prefix

__all__ = ["HEARTBEAT_INTERVAL", "Heartbeat", "check_worker_settings", "worker_warnings"]

log = logging.getLogger("mailqueue.worker")

# Seconds between two touches of the heartbeat file. A check should allow a
# few missed beats: a worker busy reconnecting to its broker skips some.
HEARTBEAT_INTERVAL = 10.0


@signals.worker_init.connect
def _metrics_folder(sender: Any = None, **_: Any) -> None:
    if not ours(sender):
        return
    try:
        path = metrics.use_multiprocess_dir()
    except ConfigurationError as exc:
        # Celery logs and swallows exceptions from signal handlers: exit instead.
        raise SystemExit(f"error: {exc}") from None
    log.debug("metrics folder %s", path)


class Heartbeat(bootsteps.StartStopStep):
    """Touches ``--heartbeat-file`` every ``--heartbeat-file-interval`` s from its timer."""

    requires = ("celery.worker.components:Timer",)

    def __init__(
        self,
        parent: Any,
        heartbeat_file: str | None = None,
        heartbeat_file_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(parent, **kwargs)
        self.path = Path(heartbeat_file) if heartbeat_file else None
        self.interval = heartbeat_file_interval or HEARTBEAT_INTERVAL
        self._timer: Any = None

    def include_if(self, parent: Any) -> bool:
        return self.path is not None

    def start(self, parent: Any) -> None:
        self.beat()
        self._timer = parent.timer.call_repeatedly(self.interval, self.beat)

    def stop(self, parent: Any) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def beat(self) -> None:
        assert self.path is not None
        try:
            self.path.touch()
        except OSError as exc:
            # A missed beat makes the health check fail, which is the report.
            log.warning("cannot touch heartbeat file %s: %s", self.path, exc.strerror)


def _writable(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        # Try it: permission bits say nothing of a read-only mount, and root passes them all.
        try:
            Path(value).touch()
        except OSError as exc:
            raise click.BadParameter(f"cannot write {value}: {exc.strerror}") from None
    return value


app.user_options["worker"].add(
    click.Option(
        ["--heartbeat-file"],
        default=None,
        metavar="PATH",
        callback=_writable,
        help="mailqueue: touch PATH every 10 s while the worker runs (for health checks).",
    )
)
# Not --heartbeat-interval: Celery's own option of that name is for its event heartbeats.
app.user_options["worker"].add(
    click.Option(
        ["--heartbeat-file-interval"],
        default=None,
        type=click.FloatRange(min=0.1),
        metavar="SECONDS",
        help=f"mailqueue: seconds between two touches of --heartbeat-file "
        f"(default {HEARTBEAT_INTERVAL:g}).",
    )
)
app.steps["worker"].add(Heartbeat)


# -- the checks before a worker takes work ------------------------------------------


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


@signals.worker_init.connect
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
