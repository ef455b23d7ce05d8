"""The tracking webhook as a WSGI application, and a production server for it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import metrics
from ..settings import Settings
from .handler import Response, TrackingHandler, text_response

__all__ = ["HEALTH_PATH", "METRICS_PATH", "TRACKING_PATH", "TrackingApp", "create_app", "serve"]

logger = logging.getLogger(__name__)

TRACKING_PATH = "/mailtrap/tracking/"
# Liveness: answered without touching Redis, so a Redis outage restarts no webhook server.
HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
_READ_CHUNK = 64 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class TrackingApp:
    """WSGI application answering ``POST /mailtrap/tracking/`` (trailing slash optional)."""

    def __init__(self, handler: TrackingHandler) -> None:
        self.handler = handler

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            response = self._respond(environ)
        except Exception:
            # Reading the request failed (a client that hung up, a broken
            # stream): the request is at fault, never worth a 500.
            logger.warning("tracking webhook: unreadable request", exc_info=True)
            response = text_response(400, "request could not be read")
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        start_response(response.status_line, headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [response.body]

    def _respond(self, environ: dict[str, Any]) -> Response:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET"))
        if path in (HEALTH_PATH, METRICS_PATH):
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
        return self.handler.handle(method, headers, body)


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

    ``settings`` defaults to ``Settings.from_env()``; ``redis_client`` to a client
    for ``settings.status_redis_url``. Raises ``ConfigurationError`` when neither
    basic auth nor a signing secret is configured.
    """
    settings = settings if settings is not None else Settings.from_env()
    return TrackingApp(TrackingHandler.from_settings(settings, redis_client))


def serve(settings: Settings | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the tracking webhook until interrupted.

    Uses waitress: a production-grade, multi-threaded WSGI server in pure
    Python, so it installs everywhere without a compiler and runs the same on
    Linux, macOS and Windows. It also enforces the body bound itself.
    """
    from waitress import serve as waitress_serve

    settings = settings if settings is not None else Settings.from_env()
    # One process: its own samples are all there is to serve, and no metrics
    # folder (perhaps on a read-only root) is needed.
    metrics.use_process_memory()
    app = create_app(settings)
    logger.info("tracking webhook listening on http://%s:%d%s", host, port, TRACKING_PATH)
    waitress_serve(
        app,
        host=host,
        port=port,
        ident="mailqueue",
        max_request_body_size=settings.webhook_max_body,
        # Waitress spills a body over 512 KB to a temporary file, and Mailtrap's
        # 500 events with custom variables exceed that; on a read-only root with
        # no /tmp it then drops the connection. The app reads the whole body into
        # memory anyway, so the spill saves nothing: keep it in memory up to the bound.
        inbuf_overflow=settings.webhook_max_body,
    )
