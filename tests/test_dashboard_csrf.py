"""The dashboard's CSRF token comes from a random server-side key: a page that shows one
tells nothing about the password, and tokens of another dashboard are refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from mailqueue.client import Client
from mailqueue.dashboard import DashboardApp, create_app
from mailqueue.settings import Settings

PASSWORD = "pw-7429"
SECRET = f"ops:{PASSWORD}"
HOST = "dash.example"


def call(app: Any, path: str, form: dict[str, str] | None = None) -> tuple[str, str]:
    body = urlencode(form or {}).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST" if form is not None else "GET",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "HTTP_HOST": HOST,
        "HTTP_ORIGIN": f"http://{HOST}",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_AUTHORIZATION": "Basic " + base64.b64encode(SECRET.encode()).decode(),
    }
    seen: list[str] = []
    page = b"".join(app(environ, lambda status, headers: seen.append(status)))
    return seen[0], page.decode()


def token_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None
    return found.group(1)


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    client = Client(Settings(broker_url=redis_url))
    client.suppressions.suppress("blocked@example.com", reason="manual")
    yield client
    client.close()


@pytest.fixture
def app(client: Client) -> DashboardApp:
    return create_app(client, {"MAILQUEUE_DASHBOARD_SECRET": SECRET})


def offline_guess(token: str, candidates: list[str]) -> str | None:
    """What an attacker holding one page could try: tokens keyed with the credentials."""
    for password in candidates:
        credentials = f"ops:{password}".encode()
        for message in (b"mailqueue dashboard csrf v1", b""):
            if hmac.new(credentials, message, hashlib.sha256).hexdigest() == token:
                return password
    return None


def test_a_served_token_does_not_let_the_password_be_guessed_offline(app: DashboardApp) -> None:
    _, page = call(app, "/suppressions")

    assert offline_guess(token_of(page), ["guess", "pw-0000", PASSWORD]) is None


def test_the_token_works_on_its_own_dashboard_and_not_on_another(
    client: Client, app: DashboardApp
) -> None:
    other = create_app(client, {"MAILQUEUE_DASHBOARD_SECRET": SECRET})
    _, page = call(app, "/suppressions")
    form = {"address": "blocked@example.com", "csrf": token_of(page)}

    refused, _ = call(other, "/action/unsuppress", form)
    accepted, _ = call(app, "/action/unsuppress", form)

    assert refused.startswith("403")
    assert accepted.startswith("303")
    assert client.suppressions.get("blocked@example.com") is None
