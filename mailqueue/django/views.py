"""The tracking webhook as a Django view: the same logic as the WSGI app.

Settings come from ``Settings.from_django()`` (``ANYMAIL`` dict, then
``ANYMAIL_*`` / ``MAILQUEUE_*`` names, then the environment), so an Anymail
project's ``ANYMAIL = {"WEBHOOK_SECRET": ..., "MAILTRAP_TRACKING_SECRET": ...}``
works as is. Unlike Anymail, a view with neither secret configured does not
accept events: it raises ``ConfigurationError``.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from mailqueue.client import client_for_settings
from mailqueue.django.signals import send_tracking_signals
from mailqueue.serving.failed_logins import FailedLogins
from mailqueue.settings import Settings
from mailqueue.webhooks.handler import Response, TrackingHandler, text_response

__all__ = ["mailtrap_tracking"]

try:  # Django 5.1+: LoginRequiredMiddleware must not lock Mailtrap out.
    from django.contrib.auth.decorators import login_not_required
except ImportError:  # pragma: no cover - older Django has no such middleware

    def login_not_required(view):  # type: ignore[no-untyped-def]
        return view


# Failed credentials of every request this process serves, whatever handler answers it.
_failed_logins = FailedLogins("webhook")


def _handler_for(settings: Settings) -> TrackingHandler:
    # One Redis client per configuration, another when the Django settings change.
    return TrackingHandler(
        settings,
        client_for_settings(settings).events,
        observers=[send_tracking_signals],
        failed_logins=_failed_logins,
    )


def _tracking(request: HttpRequest) -> HttpResponse:
    """Receive Mailtrap tracking events (``POST``), as ``TrackingHandler`` answers them."""
    handler = _handler_for(Settings.from_django())
    method = request.method or "GET"
    body = b""
    if method.upper() == "POST":
        declared = str(request.META.get("CONTENT_LENGTH") or "").strip()
        if declared and not declared.isdigit():
            return _to_django(text_response(400, "Content-Length is malformed"))
        if declared and handler.too_large(int(declared)):
            return _to_django(text_response(413, f"body is larger than {handler.max_body} bytes"))
    headers = {
        "authorization": request.headers.get("Authorization", ""),
        "mailtrap-signature": request.headers.get("Mailtrap-Signature", ""),
    }
    client = str(request.META.get("REMOTE_ADDR") or "")
    refused = handler.screen(method, headers, client)
    if refused is not None:
        return _to_django(refused)
    if method.upper() == "POST":
        # request.body would apply DATA_UPLOAD_MAX_MEMORY_SIZE instead of our bound.
        body = request.read(handler.max_body + 1)
    return _to_django(handler.handle(method, headers, body, client))


# Mailtrap posts without a CSRF token or a session.
mailtrap_tracking: Callable[[HttpRequest], HttpResponse] = csrf_exempt(
    login_not_required(_tracking)
)


def _to_django(response: Response) -> HttpResponse:
    answer = HttpResponse(response.body, status=response.status)
    for name, value in response.headers:
        answer[name] = value
    return answer
