"""The dashboard in a Django project: ``path("ops/mail/", include("mailqueue.django.dashboard"))``.

The secret is ``MAILQUEUE_DASHBOARD_SECRET`` from the Django settings, else
from the environment. The dashboard keeps its own basic auth and its own CSRF
token (Django's middleware is not asked: the forms carry the dashboard's).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import threading
from typing import Any

from django.conf import settings as django_settings
from django.http import HttpRequest, HttpResponse
from django.urls import re_path
from django.views.decorators.csrf import csrf_exempt

from mailqueue.client import client_for_settings
from mailqueue.dashboard import DashboardApp
from mailqueue.dashboard.app import MAX_FORM
from mailqueue.dashboard.auth import ENV, DashboardAuth
from mailqueue.settings import Settings

__all__ = ["dashboard", "urlpatterns"]


# One per secret and process: it counts failed logins across requests.
_auths: dict[str, DashboardAuth] = {}
_auths_lock = threading.Lock()


def _auth(secret: str) -> DashboardAuth:
    with _auths_lock:
        if secret not in _auths:
            # Every process of the project shares SECRET_KEY, so a form served
            # by one is accepted by another; the key is no credential's.
            key = hmac.new(
                str(django_settings.SECRET_KEY).encode(),
                b"mailqueue dashboard csrf key",
                hashlib.sha256,
            ).digest()
            _auths[secret] = DashboardAuth.from_env({ENV: secret}, csrf_key=key)
        return _auths[secret]


def _app(settings: Settings, secret: str | None) -> DashboardApp:
    # Cheap to build per request: the client (and its Redis pool) is shared per settings.
    return DashboardApp(client_for_settings(settings), _auth(secret or ""))


def _dashboard(request: HttpRequest, path: str = "") -> HttpResponse:
    secret = getattr(django_settings, ENV, None) or os.environ.get(ENV)
    app = _app(Settings.from_django(), secret)
    environ = dict(request.META)
    if request.method == "POST":
        # Credentials, then the size, before the body is read.
        refused = app.screen(environ)
        if refused is not None:
            return _response(refused.status, refused.headers, refused.body)
        declared = str(environ.get("CONTENT_LENGTH") or "0").strip()
        if not declared.isdigit() or int(declared) > MAX_FORM:
            return _response(413, [], f"a form is at most {MAX_FORM} bytes\n".encode())
    # The body may have been read already (a middleware looking at POST).
    environ["wsgi.input"] = io.BytesIO(request.body)
    environ["CONTENT_LENGTH"] = str(len(request.body))
    environ["PATH_INFO"] = "/" + path
    full = request.path
    environ["SCRIPT_NAME"] = full[: len(full) - len(path)].rstrip("/")
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, headers

    body = b"".join(app(environ, start_response))
    return _response(int(answer["status"].split()[0]), answer["headers"], body)


def _response(status: int, headers: list[tuple[str, str]], body: bytes) -> HttpResponse:
    response = HttpResponse(body, status=status)
    for name, value in headers:
        if name.lower() != "content-length":
            response[name] = value
    return response


dashboard = csrf_exempt(_dashboard)

urlpatterns = [re_path(r"^(?P<path>.*)$", dashboard, name="mailqueue_dashboard")]
