"""Serve a WSGI app (the tracking webhook) with waitress on a free loopback port, in a thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["serving"]


@contextlib.contextmanager
def serving(app: Any, *, threads: int = 2, server: Any = None) -> Iterator[str]:
    """``with serving(app) as base_url:`` -- ``http://127.0.0.1:<port>``, stopped on exit.

    ``server``: a waitress server already made (on 127.0.0.1, port 0) to run instead,
    e.g. the webhook's own from ``mailqueue.webhooks.create_server``.
    """
    if server is None:
        from waitress.server import create_server

        server = create_server(app, host="127.0.0.1", port=0, threads=threads)
    stop = threading.Event()

    def run() -> None:
        # waitress' own run() cannot be stopped cleanly from another thread.
        while not stop.is_set():
            server.asyncore.loop(timeout=0.05, map=server._map, count=1)
        server.close()
        server.task_dispatcher.shutdown()

    thread = threading.Thread(target=run, name="wsgi-serving", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        stop.set()
        thread.join(timeout=5)
