"""Calls to Mailtrap never carry the token anywhere else: no redirect is followed, and an
``http://`` API URL is accepted only for a loopback host unless a setting allows it."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from mailqueue.core.payload import build_payload
from mailqueue.errors import ConfigurationError, PermanentDeliveryError, Redirected
from mailqueue.mailtrap.transport import Transport
from mailqueue.settings import Account, Settings
from mailqueue.tasks.worker_setup import check_worker_settings

TOKEN = "tok-OUTBOUND-0042"
MESSAGE = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Order",
    "text": "It ships today.",
}


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[dict[str, str]]
    location: str = ""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.seen.append(dict(self.headers))
        if self.location:
            self.send_response(307)
            self.send_header("Location", self.location)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = b'{"success": true, "message_ids": ["m-1"]}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _serve(location: str = "") -> tuple[http.server.ThreadingHTTPServer, list[dict[str, str]]]:
    seen: list[dict[str, str]] = []
    handler = type("Handler", (_Recorder,), {"seen": seen, "location": location})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, list[dict[str, str]]]]:
    server, seen = _serve()
    yield f"http://127.0.0.1:{server.server_port}/api/send", seen
    server.shutdown()
    server.server_close()


@pytest.fixture
def redirecting(
    elsewhere: tuple[str, list[dict[str, str]]],
) -> Iterator[tuple[str, list[dict[str, str]]]]:
    server, seen = _serve(location=elsewhere[0])
    yield f"http://127.0.0.1:{server.server_port}/api/", seen
    server.shutdown()
    server.server_close()


def test_a_redirect_is_not_followed_and_is_an_error_of_its_own(
    redirecting: tuple[str, list[dict[str, str]]],
    elsewhere: tuple[str, list[dict[str, str]]],
) -> None:
    api_url, first = redirecting
    settings = Settings(api_token=TOKEN, api_url=api_url)
    (call,) = build_payload(MESSAGE, settings)

    with Transport(settings) as transport, pytest.raises(Redirected) as info:
        transport.send(call)

    assert len(first) == 1
    assert elsewhere[1] == []
    assert isinstance(info.value, PermanentDeliveryError)
    assert info.value.status_code == 307
    assert "redirect" in str(info.value)
    assert elsewhere[0] not in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:3/api/", "http://localhost:3/api/", "http://[::1]:3/api/",
     "https://send.api.mailtrap.io/api/"],
)  # fmt: skip
def test_https_and_loopback_http_urls_are_accepted(url: str) -> None:
    settings = Settings(api_token=TOKEN, api_url=url, bulk_api_url=url, general_api_url=url)

    check_worker_settings(settings)


@pytest.mark.parametrize("setting", ["api_url", "bulk_api_url", "general_api_url"])
def test_an_http_url_to_another_host_is_refused_naming_the_setting(setting: str) -> None:
    url: dict[str, Any] = {setting: "http://mailtrap.example/api/"}
    settings = Settings(api_token=TOKEN, **url)

    with pytest.raises(ConfigurationError) as info:
        check_worker_settings(settings)

    assert f"MAILTRAP_{setting.upper()}" in str(info.value)
    assert "MAILQUEUE_ALLOW_HTTP_API_URLS" in str(info.value)


def test_an_accounts_http_url_to_another_host_is_refused_too() -> None:
    settings = Settings(
        api_token=TOKEN,
        accounts={"eu": Account(name="eu", api_token="t2", api_url="http://10.0.0.5/api/")},
    )

    with pytest.raises(ConfigurationError, match="MAILQUEUE_ACCOUNT_EU_API_URL"):
        check_worker_settings(settings)


def test_the_setting_allows_http_to_another_host() -> None:
    settings = Settings.from_env(
        {
            "MAILTRAP_API_TOKEN": TOKEN,
            "MAILTRAP_API_URL": "http://mailtrap.internal/api/",
            "MAILQUEUE_ALLOW_HTTP_API_URLS": "true",
        }
    )

    check_worker_settings(settings)


def test_suppression_sync_refuses_an_http_url_to_another_host(redis_url: str) -> None:
    from mailqueue.client import Client
    from mailqueue.mailtrap.suppression_sync import sync_suppressions

    settings = Settings(
        api_token=TOKEN, broker_url=redis_url, general_api_url="http://mailtrap.example/api/"
    )
    client = Client(settings)
    try:
        with pytest.raises(ConfigurationError, match="GENERAL_API_URL"):
            sync_suppressions(settings=client.settings, suppressions=client.suppressions)
    finally:
        client.close()
