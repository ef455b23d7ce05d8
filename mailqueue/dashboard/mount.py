"""Building the dashboard, serving it, and mounting it under another WSGI app."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from mailqueue.client import Client
from mailqueue.dashboard.app import MAX_FORM, DashboardApp, StartResponse
from mailqueue.dashboard.auth import DashboardAuth

__all__ = ["create_app", "create_server", "mounted", "serve"]

logger = logging.getLogger(__name__)

WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def create_app(client: Client, environ: Mapping[str, str] | None = None) -> DashboardApp:
    """The dashboard for ``client``; raises ``ConfigurationError`` without a secret."""
    auth = DashboardAuth.from_env(os.environ if environ is None else environ)
    return DashboardApp(client, auth)


def mounted(outer: WsgiApp, dashboard: WsgiApp, prefix: str = "/dashboard") -> WsgiApp:
    """``outer`` with ``dashboard`` answering every path under ``prefix``."""
    prefix = "/" + prefix.strip("/")

    def dispatch(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == prefix or path.startswith(prefix + "/"):
            inner = dict(environ)
            inner["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
            inner["PATH_INFO"] = path[len(prefix) :] or "/"
            return dashboard(inner, start_response)
        return outer(environ, start_response)

    return dispatch


def create_server(
    app: DashboardApp, host: str = "127.0.0.1", port: int = 8080, *, limits: Any = None
) -> Any:
    """The dashboard's waitress server, not yet running (``.run()``).

    ``guarded_server`` bounds it: a body of at most ``MAX_FORM`` bytes, read
    only once its credentials pass, and slow or numerous connections cut.
    """
    from mailqueue.serving.server import Limits, create_guarded_server

    return create_guarded_server(
        app,
        host=host,
        port=port,
        limits=limits if limits is not None else Limits(max_body=MAX_FORM),
        screen=app.screen,
        ident="mailqueue",
    )


def serve(app: DashboardApp, host: str = "127.0.0.1", port: int = 8080) -> None:
    """Serve the dashboard with waitress until interrupted."""
    server = create_server(app, host, port)
    logger.info("dashboard listening on http://%s:%d/", host, port)
    try:
        server.run()
    finally:
        server.close()
