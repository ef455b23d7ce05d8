"""What the demo starts: Redis and the Mailtrap stand-in when needed, a worker, the webhook.

Each comes from the supported local parts of the package (``mailqueue.testing``:
``RedisServer``, ``LocalMailtrap``, ``WorkerProcess``) and the tracking
webhook app; every one is stopped by the caller's ExitStack, also after an
error or Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from types import FrameType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from mailqueue.demo.errors import DemoError
from mailqueue.demo.script import (
    DEMO_TRACKING_SECRET,
    LOCAL_FROM,
    LOCAL_RECIPIENTS,
    LOCAL_TEMPLATE_ID,
)
from mailqueue.errors import ConfigurationError
from mailqueue.settings import DEFAULT_BROKER_URL, Settings
from mailqueue.testing import LocalMailtrap, RedisServer, WorkerProcess
from mailqueue.webhooks import TRACKING_PATH, create_app

__all__ = ["Echo", "Stop", "interruptible", "prepare", "start_webhook", "start_worker"]

Echo = Callable[[str], None]


class Stop:
    """Ctrl-C (or SIGTERM) noted by a signal handler and acted on between steps.

    A KeyboardInterrupt raised at an arbitrary bytecode can land in a
    destructor (redis-py's parser has one), where Python prints and swallows
    it, and the demo would carry on. A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt


@contextmanager
def interruptible() -> Iterator[Stop]:
    """Ctrl-C and SIGTERM noted, to be acted on between steps (see Stop)."""
    stop = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def prepare(
    base: Settings,
    stack: ExitStack,
    echo: Echo,
    *,
    to: Sequence[str],
    from_email: str | None,
    template_id: str | None,
) -> tuple[Settings, list[str], str, str | None, LocalMailtrap | None]:
    """Settings for the demo, starting a private Redis and a local Mailtrap when needed.

    Also the local Mailtrap it started, or None when it sends through the real API.
    """
    changes: dict[str, Any] = {
        "tracking_secret": DEMO_TRACKING_SECRET,
        "webhook_secret": (),
    }
    if base.broker_url == DEFAULT_BROKER_URL and base.redis_url is None:
        server = RedisServer()  # ConfigurationError, saying what to install, when none exists
        stack.callback(server.stop)
        server.start()
        changes["broker_url"] = server.url
        echo(f"redis: private redis-server at {server.url}")
    else:
        echo("redis: using the configured broker")
    if base.api_token:
        if not to:
            raise ConfigurationError(
                "a Mailtrap API token is set, so the demo sends real email: give the "
                "recipients with --to ADDRESS (or unset MAILTRAP_API_TOKEN to use the "
                "local stand-in)",
                setting="to",
            )
        sender = from_email or base.default_from_email
        if not sender:
            raise ConfigurationError(
                "a Mailtrap API token is set: give a sender of a verified domain with --from "
                "(or MAILQUEUE_DEFAULT_FROM_EMAIL)",
                setting="from_email",
            )
        echo("mailtrap: the real API (tracking events below are simulated)")
        return base.replace(**changes), list(to), sender, template_id, None
    # Email Logs list a message 1 s after accepting it; the worker looks after
    # 2 s instead of 5, so that the demo's lost answer is found within seconds.
    mailtrap = LocalMailtrap(logs_delay=1.0)
    stack.callback(mailtrap.stop)
    mailtrap.start()
    # Every Mailtrap URL, the bulk stream's too: none of the demo's mail may
    # leave the machine.
    changes.update(
        mailtrap.setting_values(),
        bulk_api_token=None,
        sandbox_id=None,
        reconcile_settle=2.0,
    )
    echo(f"mailtrap: local stand-in at {mailtrap.url} (bulk stream: {mailtrap.bulk_url})")
    recipients = list(to) or list(LOCAL_RECIPIENTS)
    sender = from_email or LOCAL_FROM
    return base.replace(**changes), recipients, sender, LOCAL_TEMPLATE_ID, mailtrap


def start_worker(settings: Settings, stack: ExitStack, echo: Echo) -> None:
    worker = WorkerProcess(settings, concurrency=2)
    stack.callback(_remove, worker.log.name)
    stack.callback(worker.stop)
    echo("worker: starting celery -A mailqueue worker ...")
    try:
        worker.start()
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1:] or [""]
        raise DemoError(f"the Celery worker did not start: {last[0]}") from None
    echo("worker: ready")


def _remove(path: str) -> None:
    with suppress(OSError):
        os.unlink(path)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def start_webhook(settings: Settings, stack: ExitStack) -> str:
    """Serve the tracking webhook app on a free loopback port; returns its URL."""
    server: WSGIServer = make_server(
        "127.0.0.1", 0, create_app(settings), handler_class=_QuietHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="demo-webhook", daemon=True)
    thread.start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    return f"http://127.0.0.1:{server.server_port}{TRACKING_PATH}"
