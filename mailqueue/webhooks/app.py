"""The tracking webhook as a WSGI application, and a production server for it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from mailqueue.errors import ConfigurationError
from mailqueue.metrics import instruments as metrics
from mailqueue.settings import Settings
from mailqueue.webhooks.handler import Response, TrackingHandler, text_response

if TYPE_CHECKING:
    from mailqueue.serving.server import Limits

__all__ = [
    "HEALTH_PATH",
    "METRICS_PATH",
    "TRACKING_PATH",
    "TrackingApp",
    "create_app",
    "create_server",
    "serve",
    "server_limits",
]

logger = logging.getLogger(__name__)

TRACKING_PATH = "/mailtrap/tracking/"
# Liveness: answered without touching Redis, so a Redis outage restarts no webhook server.
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
_READ_CHUNK = 64 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class TrackingApp:
    """WSGI application answering ``POST /mailtrap/tracking/`` (trailing slash optional).

    ``serve_metrics`` False leaves ``/metrics`` to a port of its own (404 here).
    """

    def __init__(self, handler: TrackingHandler, *, serve_metrics: bool = True) -> None:
        self.handler = handler
        self.serve_metrics = serve_metrics

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self._respond(environ)
        except Exception as exc:
            # Reading the request failed (a client that hung up, a broken
            # stream): the request is at fault, never worth a 500.
            logger.warning("tracking webhook: unreadable request (%s)", type(exc).__name__)
            response = text_response(400, "request could not be read")
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        start_response(response.status_line, headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body]

    def screen(self, environ: Mapping[str, str]) -> Response | None:
        """The answer to a request whose body is not read yet, when its headers decide it.

        For ``guarded_server``: a body bound for another path, or from a
        client whose credentials already fail, is never read.
        """
        path = environ.get("PATH_INFO") or "/"
        if path.rstrip("/") != TRACKING_PATH.rstrip("/"):
            return text_response(404, "not found")
        headers = {"authorization": environ.get("HTTP_AUTHORIZATION", "")}
        return self.handler.screen(
            environ.get("REQUEST_METHOD", ""), headers, environ.get("REMOTE_ADDR", "")
        )

    def _respond(self, environ: dict[str, Any]) -> Response:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET"))
        if path == HEALTH_PATH or (path == METRICS_PATH and self.serve_metrics):
            if method.upper() not in ("GET", "HEAD"):
                return text_response(405, "method not allowed", ("Allow", "GET, HEAD"))
            if path == HEALTH_PATH:
                return text_response(200, "ok")
            exposition = generate_latest(metrics.exposition_registry())
            return Response(200, [("Content-Type", CONTENT_TYPE_LATEST)], exposition)
        if path.rstrip("/") != TRACKING_PATH.rstrip("/"):
            return text_response(404, "not found")
        body = b""
        if method.upper() == "POST":
            declared = environ.get("CONTENT_LENGTH") or ""
            if declared.strip():
                if not declared.strip().isdigit():
                    return text_response(400, "Content-Length is malformed")
                if self.handler.too_large(int(declared)):
                    return text_response(413, f"body is larger than {self.handler.max_body} bytes")
                body = _read(environ["wsgi.input"], int(declared))
            elif environ.get("wsgi.input_terminated"):
                # Chunked upload: the server ends the stream; read one byte past the bound.
                body = _read(environ["wsgi.input"], self.handler.max_body + 1)
        headers = {
            "authorization": environ.get("HTTP_AUTHORIZATION", ""),
            "mailtrap-signature": environ.get("HTTP_MAILTRAP_SIGNATURE", ""),
        }
        return self.handler.handle(method, headers, body, str(environ.get("REMOTE_ADDR", "")))


def _read(stream: Any, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = stream.read(min(remaining, _READ_CHUNK))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def create_app(
    settings: Settings | None = None, redis_client: redis.Redis | None = None
) -> TrackingApp:
    """The tracking webhook WSGI app.

    ``settings`` defaults to ``Settings.from_process()``; ``redis_client`` to a client
    for ``settings.status_redis_url``. Raises ``ConfigurationError`` when neither
    basic auth nor a signing secret is configured.
    """
    settings = settings if settings is not None else Settings.from_process()
    return TrackingApp(TrackingHandler.from_settings(settings, redis_client))


def server_limits(settings: Settings) -> Limits:
    """The bounds the webhook server keeps (``guarded_server``)."""
    from mailqueue.serving.server import Limits

    return Limits(max_body=settings.webhook_max_body)


def create_server(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    app: TrackingApp | None = None,
    limits: Limits | None = None,
) -> Any:
    """The waitress server of the tracking webhook, not yet running (``.run()``).

    Waitress: a production-grade, multi-threaded WSGI server in pure Python,
    so it installs everywhere without a compiler and runs the same on Linux,
    macOS and Windows; ``guarded_server`` adds the bounds an open port needs.
    """
    from mailqueue.serving.server import create_guarded_server

    app = app if app is not None else create_app(settings)
    limits = limits if limits is not None else server_limits(settings)
    return create_guarded_server(
        app,
        host=host,
        port=port,
        limits=limits,
        screen=app.screen,
        ident="mailqueue",
        # Waitress spills a body over 512 KB to a temporary file, and Mailtrap's
        # 500 events with custom variables exceed that; on a read-only root with
        # no /tmp it then drops the connection. The app reads the whole body into
        # memory anyway, so the spill saves nothing: keep it in memory up to the bound.
        inbuf_overflow=limits.max_body,
    )


def serve(
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    metrics_port: int | None = None,
    metrics_host: str | None = None,
) -> None:
    """Serve the tracking webhook until interrupted.

    With ``metrics_port``, ``/metrics`` is served there (on ``metrics_host``,
    else ``host``) and no longer beside the tracking path.
    """
    settings = settings if settings is not None else Settings.from_process()
    # One process: its own samples are all there is to serve, and no metrics
    # folder (perhaps on a read-only root) is needed.
    metrics.use_process_memory()
    app = create_app(settings)
    if metrics_port is not None:
        app.serve_metrics = False
        where = metrics_host or host
        try:
            metrics.start_metrics_server(metrics_port, addr=where)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {where}:{metrics_port}: {exc.strerror or exc}"
            ) from None
        logger.info("metrics on http://%s:%d/metrics", where, metrics_port)
    server = create_server(settings, host, port, app=app)
    logger.info("tracking webhook listening on http://%s:%d%s", host, port, TRACKING_PATH)
    try:
        server.run()
    finally:
        server.close()
