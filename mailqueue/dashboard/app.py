"""The dashboard as a plain WSGI application: pages, their JSON, and the actions."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from mailqueue.client import Client
from mailqueue.dashboard import render, views
from mailqueue.dashboard.auth import DashboardAuth
from mailqueue.errors import BrokerUnavailable, MailqueueError
from mailqueue.webhooks.handler import Response
from mailqueue.webhooks.verify import REALM

__all__ = ["MAX_FORM", "DashboardApp"]

logger = logging.getLogger(__name__)

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
# The largest form an action posts: a token, a name or an address. The
# dashboard's server refuses bigger bodies before reading them.
MAX_FORM = 4 * 1024
_SECURITY = [
    # The page's own script and styles only; no framing (clickjacking), no caching.
    ("Content-Security-Policy", "default-src 'self'; style-src 'unsafe-inline'; img-src 'self'"),
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "same-origin"),
]


@dataclass
class _Reply:
    status: str
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _text(status: str, message: str) -> _Reply:
    return _Reply(status, (message + "\n").encode())


class DashboardApp:
    """WSGI: mount it anywhere; links follow ``SCRIPT_NAME``."""

    def __init__(self, client: Client, auth: DashboardAuth) -> None:
        self.client = client
        self.auth = auth

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            reply = self._respond(environ)
        except BrokerUnavailable as exc:
            reply = _text("503 Service Unavailable", f"Redis is unreachable: {exc}")
        except MailqueueError as exc:
            reply = _text("400 Bad Request", str(exc))
        headers = [
            *_SECURITY,
            *reply.headers,
            ("Content-Type", reply.content_type),
            ("Content-Length", str(len(reply.body))),
        ]
        start_response(reply.status, headers)
        return [b""] if environ.get("REQUEST_METHOD") == "HEAD" else [reply.body]

    def _respond(self, environ: dict[str, Any]) -> _Reply:
        path = environ.get("PATH_INFO") or "/"
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if path == "/healthz":
            return _text("200 OK", "ok")
        if path == "/static/dashboard.js":
            script = resources.files(__package__).joinpath("dashboard.js").read_bytes()
            return _Reply("200 OK", script, "text/javascript; charset=utf-8")
        refused = self._refusal(environ)
        if refused is not None:
            return _Reply(refused.status_line, refused.body, headers=refused.headers)
        if path.startswith("/action/"):
            if method != "POST":
                return _Reply("405 Method Not Allowed", b"POST only\n", headers=[("Allow", "POST")])
            return self._act(environ, path[len("/action/") :])
        if method not in ("GET", "HEAD"):
            return _Reply("405 Method Not Allowed", b"GET only\n", headers=[("Allow", "GET")])
        as_json = path.startswith("/api/")
        if as_json:
            path = path[len("/api") :]
        shown = self._view(environ, path)
        if shown is None:
            return _text("404 Not Found", "not found")
        current, html, data = shown
        base = environ.get("SCRIPT_NAME", "")
        if as_json:
            return _Reply("200 OK", render.fragment(html, data), "application/json")
        return _Reply("200 OK", render.page(base, current, html), "text/html; charset=utf-8")

    def screen(self, environ: Mapping[str, str]) -> Response | None:
        """The answer to a request whose body is not read yet, when its credentials fail.

        For ``guarded_server``: a POST without valid credentials, or from a
        throttled client, is answered before a byte of its body is read.
        """
        refused = self._refusal(environ)
        if refused is None:
            return None
        headers = [*_SECURITY, *refused.headers, ("Content-Type", "text/plain; charset=utf-8")]
        return Response(refused.status, headers, refused.body)

    def _refusal(self, environ: Mapping[str, Any]) -> Response | None:
        client = str(environ.get("REMOTE_ADDR", ""))
        wait = self.auth.failed_logins.retry_after(client)
        if wait is not None:
            retry = ("Retry-After", str(math.ceil(wait)))
            return Response(429, [retry], b"too many failed logins, retry later\n")
        if self.auth.allows(environ):
            return None
        if environ.get("HTTP_AUTHORIZATION"):
            # A browser asks first without credentials: only a wrong answer to
            # the challenge is a failed login.
            self.auth.failed_logins.failed(client)
        challenge = ("WWW-Authenticate", f'Basic realm="{REALM} dashboard", charset="UTF-8"')
        return Response(401, [challenge], b"authentication required\n")

    def _view(self, environ: dict[str, Any], path: str) -> tuple[render.Page, str, Any] | None:
        rt = self.client
        base = environ.get("SCRIPT_NAME", "")
        token = self.auth.csrf_token(environ)
        path = path.rstrip("/") or "/"
        if path == "/":
            data: Any = views.fleet(rt)
            return render.Page("", "Fleet", "/api/"), render.fleet(data), data
        if path == "/campaigns":
            data = views.campaigns(rt)
            return (
                render.Page("campaigns", "Campaigns", "/api/campaigns"),
                render.campaigns(base, data),
                data,
            )
        if path.startswith("/campaigns/"):
            name = unquote(path[len("/campaigns/") :])
            record = views.campaign(rt, name)
            api = "/api/campaigns/" + quote(name, safe="")
            page = render.Page("campaigns", f"Campaign {name}", api)
            return page, render.campaign(base, record, token), record
        if path == "/search":
            query = _query(environ).get("q", "")
            found = views.search(rt, query)
            api = "/api/search?q=" + quote(query, safe="")
            return render.Page("search", "Search", api), render.search(query, found), found
        if path == "/dead-letters":
            letters = views.dead_letters(rt)
            page = render.Page("dead-letters", "Dead letters", "/api/dead-letters")
            return page, render.dead_letters(base, letters, token), letters
        if path == "/suppressions":
            entries = views.suppressions(rt)
            page = render.Page("suppressions", "Suppressions", "/api/suppressions")
            return page, render.suppressions(base, entries, token), entries
        return None

    def _act(self, environ: dict[str, Any], action: str) -> _Reply:
        form = _form(environ)
        if form is None:
            return _text("400 Bad Request", "form is missing or too large")
        if not self.auth.action_allowed(environ, form.get("csrf", "")):
            return _text("403 Forbidden", "cross-site request refused (csrf token or origin)")
        rt = self.client
        base = environ.get("SCRIPT_NAME", "")
        name, send_id, address = form.get("name", ""), form.get("send_id", ""), form.get("address")
        back = "/"
        if action in ("pause", "resume", "cancel"):
            steer = {
                "pause": rt.pause_campaign,
                "resume": rt.resume_campaign,
                "cancel": rt.cancel_campaign,
            }[action]
            steer(name)
            back = "/campaigns/" + quote(name, safe="")
        elif action == "requeue":
            rt.requeue_dead_letters([send_id])
            back = "/dead-letters"
        elif action == "purge":
            rt.purge_dead_letters([send_id])
            back = "/dead-letters"
        elif action == "unsuppress" and address:
            rt.unsuppress(address)
            back = "/suppressions"
        else:
            return _text("404 Not Found", "no such action")
        logger.info("dashboard: %s done", action)
        return _Reply("303 See Other", b"", headers=[("Location", base + back)])


def _query(environ: dict[str, Any]) -> dict[str, str]:
    parsed = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}


def _form(environ: dict[str, Any]) -> dict[str, str] | None:
    declared = str(environ.get("CONTENT_LENGTH") or "0").strip()
    if not declared.isdigit() or int(declared) > MAX_FORM:
        return None
    raw = environ["wsgi.input"].read(int(declared)) if int(declared) else b""
    parsed = parse_qs(raw.decode("utf-8", "replace"), keep_blank_values=True)
    return {key: values[0] for key, values in parsed.items()}
