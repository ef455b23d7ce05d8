"""What a worker sets up around Celery: its metrics folder and its heartbeat file.

The metrics folder is chosen in the worker's main process before the pool
forks (see :mod:`mailqueue.metrics.instruments`); a folder that cannot be written stops the
worker at start with one line naming ``PROMETHEUS_MULTIPROC_DIR``, instead of a
traceback from the first delivery.

``--heartbeat-file PATH`` (a worker option mailqueue adds) makes the worker
touch PATH every 10 s (``--heartbeat-file-interval``) while its event loop
runs, and remove it at shutdown. A container health check can then test the file's age locally,
without the broker round trip (and Python start) that ``celery inspect ping``
costs at every probe.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import click
from celery import bootsteps, signals

from mailqueue.celery_app import app, ours
from mailqueue.errors import ConfigurationError
from mailqueue.metrics import instruments as metrics

__all__ = ["HEARTBEAT_INTERVAL", "Heartbeat"]

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
