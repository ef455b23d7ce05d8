"""The dashboard over a real Redis: what each page shows, who may see it, which POSTs act."""

from __future__ import annotations

import base64
import io
import json
import queue
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from mailqueue.client import Client
from mailqueue.dashboard import DashboardApp, create_app, mounted
from mailqueue.dashboard.render import funnel_svg
from mailqueue.deliver.drain import Drainer
from mailqueue.errors import ConfigurationError
from mailqueue.settings import RateLimit, Settings
from mailqueue.testing import MemoryTransport

SECRET = "ops:first-pass,ops:second-pass"
HOST = "dash.example:8080"


def message(index: int) -> dict[str, Any]:
    return {
        "from_email": "news@example.com",
        "to": [f"reader{index}@example.com"],
        "subject": "News",
        "text": "the secret body text",
    }


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    wakeups: queue.Queue[dict[str, Any]] = queue.Queue()
    settings = Settings(
        broker_url=redis_url,
        api_token="tok-never-shown",
        rate_limit=RateLimit.parse("150/10s"),
        coalesce=False,
    )
    client = Client(settings, publish=wakeups.put)
    yield client
    client.close()


@pytest.fixture
def app(client: Client) -> DashboardApp:
    return create_app(client, {"MAILQUEUE_DASHBOARD_SECRET": SECRET})


def auth(credentials: str = "ops:second-pass") -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def call(
    app: Any,
    path: str,
    *,
    method: str = "GET",
    form: dict[str, str] | None = None,
    authorization: str | None = None,
    origin: str | None = None,
) -> tuple[str, dict[str, str], str]:
    body = urlencode(form or {}).encode()
    path, _, query = path.partition("?")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SCRIPT_NAME": "",
        "HTTP_HOST": HOST,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_AUTHORIZATION": auth() if authorization is None else authorization,
    }
    if origin is not None:
        environ["HTTP_ORIGIN"] = origin
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer["status"], answer["headers"] = status, dict(headers)

    chunks = app(environ, start_response)
    return answer["status"], answer["headers"], b"".join(chunks).decode()


def csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, "the page has no form with a token"
    return found.group(1)


def drain(client: Client) -> None:
    Drainer(client.drain_parts, transport=MemoryTransport()).drain(budget=5)


def test_the_funnel_counts_each_recipient_at_every_step_it_passed() -> None:
    svg = funnel_svg({"sent": 5, "delivered": 3, "opened": 1, "bounced": 1, "waiting": 2}, 12)
    steps = dict(re.findall(r'data-step="(\w+)">(\d+)<', svg))
    assert steps == {
        "recipients": "12",
        "sent": "10",
        "delivered": "4",
        "opened": "1",
        "clicked": "0",
        "waiting": "2",
        "bounced": "1",
    }


def test_it_refuses_to_exist_without_a_secret_or_with_a_malformed_one(client: Client) -> None:
    with pytest.raises(ConfigurationError, match="MAILQUEUE_DASHBOARD_SECRET"):
        create_app(client, {})
    with pytest.raises(ConfigurationError, match="user:password"):
        create_app(client, {"MAILQUEUE_DASHBOARD_SECRET": "nopassword"})


def test_every_page_needs_one_of_the_rotated_credentials(app: DashboardApp) -> None:
    status, headers, _ = call(app, "/", authorization="")
    assert status.startswith("401") and headers["WWW-Authenticate"].startswith("Basic")
    assert call(app, "/campaigns", authorization=auth("ops:wrong"))[0].startswith("401")
    assert call(app, "/", authorization=auth("ops:first-pass"))[0].startswith("200")
    assert call(app, "/", authorization=auth("ops:second-pass"))[0].startswith("200")
    # Liveness needs nothing, and says nothing.
    assert call(app, "/healthz", authorization="")[0].startswith("200")


def test_the_fleet_shows_backlog_per_stream(app: DashboardApp, client: Client) -> None:
    client.enqueue_many([message(i) for i in range(3)])
    status, headers, body = call(app, "/api/")
    assert status.startswith("200") and headers["Content-Type"] == "application/json"
    data = json.loads(body)["data"]
    assert data["waiting"] == 3
    by_lane = {(row["lane"], row["stream"]): row for row in data["lanes"]}
    # A bulk enqueue goes to the bulk lane, on Mailtrap's transactional stream.
    bulk = by_lane["bulk", "transactional"]
    assert bulk["waiting"] == 3 and bulk["oldest_age"] >= 0 and bulk["campaigns"] == 1
    assert bulk["paused"] == 0
    assert by_lane["transactional", "transactional"]["waiting"] == 0


def test_the_limiter_tiles_show_the_workers_limits_not_the_dashboards_own(
    client: Client, redis_url: str
) -> None:
    # The dashboard runs with settings of its own: no token, another rate.
    own = Client(Settings(broker_url=redis_url, rate_limit=RateLimit.parse("10/1s")))
    app = create_app(own, {"MAILQUEUE_DASHBOARD_SECRET": SECRET})
    before = json.loads(call(app, "/api/")[2])
    assert before["data"]["limits"] == []
    assert "no worker sent in the last hour" in before["html"]

    client.enqueue_many([message(i) for i in range(3)])
    drain(client)  # a worker's drain notes the limit it sends under
    for _ in range(3):
        # What a transport takes before each request to Mailtrap.
        client.limiter.acquire()
    data = json.loads(call(app, "/api/")[2])["data"]

    (limit,) = data["limits"]
    assert limit == {
        "token_key": client.settings.token_key,
        "account": None,
        "limit": 150,
        "period": 10.0,
        "used": 3,
        "cooldown": 0.0,
    }
    assert "tok-never-shown" not in json.dumps(data)
    page = call(app, "/")[2]
    assert "<b>3 / 150</b>requests in 10s" in page
    own.close()


def test_the_backlog_chart_shows_the_last_hour_on_open(app: DashboardApp, client: Client) -> None:
    client.enqueue_many([message(i) for i in range(3)])
    # A worker's sweep half an hour ago saw the three waiting.
    now = time.time()
    client.outbox.note_backlog(now - 30 * 60)

    data = json.loads(call(app, "/api/")[2])["data"]
    page = call(app, "/")[2]

    minutes = data["backlog_minutes"]
    assert len(minutes) == 60
    assert [value for _, value in minutes if value is not None] == [3]
    assert re.search(r"<svg id=rates [^>]*>.*<polyline points=\"[0-9.,]+\"", page)
    assert "now - · peak 3" in page


def test_a_campaign_shows_what_it_handed_to_mailtrap_each_minute_of_the_last_hour(
    app: DashboardApp, client: Client
) -> None:
    client.enqueue_many([message(i) for i in range(4)], campaign="spring")
    drain(client)

    data = json.loads(call(app, "/api/campaigns/spring")[2])["data"]
    page = call(app, "/campaigns/spring")[2]

    assert len(data["handed_minutes"]) == 60
    assert sum(count for _, count in data["handed_minutes"]) == 4
    assert data["handed_minutes"][-1][1] == 4 or data["handed_minutes"][-2][1] == 4
    assert re.search(r"<svg id=handed [^>]*>.*<rect [^>]*><title>4</title>", page)


def test_a_cancelled_campaigns_page_says_what_happened_to_its_recipients(
    app: DashboardApp, client: Client
) -> None:
    client.enqueue_many([message(i) for i in range(4)], campaign="spring")
    client.cancel_campaign("spring")

    page = call(app, "/campaigns/spring")[2]

    steps = dict(re.findall(r'data-step="(\w+)">(\d+)<', page))
    assert steps == {
        "recipients": "4",
        "sent": "0",
        "delivered": "0",
        "opened": "0",
        "clicked": "0",
        "cancelled": "4",
    }
    assert "Cancelled: 0 of 4 recipients were handed to Mailtrap before the cancel" in page
    assert "4 never will be" in page
    assert "queued" not in page


def test_a_campaign_shows_its_funnel_and_is_steered_only_by_its_own_page(
    app: DashboardApp, client: Client
) -> None:
    client.enqueue_many([message(i) for i in range(4)], campaign="spring")
    listing = call(app, "/campaigns")[2]
    assert 'href="/campaigns/spring"' in listing
    page = call(app, "/campaigns/spring")[2]
    assert 'aria-label="campaign funnel"' in page and ">4</text>" in page
    token = csrf(page)
    form = {"name": "spring", "csrf": token}
    # No token, a forged token, or another site's page: refused, nothing changes.
    assert call(app, "/action/pause", method="POST", form={"name": "spring"})[0].startswith("403")
    forged = {"name": "spring", "csrf": "0" * 64}
    assert call(app, "/action/pause", method="POST", form=forged)[0].startswith("403")
    elsewhere = call(app, "/action/pause", method="POST", form=form, origin="https://evil.test")
    assert elsewhere[0].startswith("403")
    assert call(app, "/action/pause", form=form)[0].startswith("405")
    campaign_record = client.get_campaign("spring")
    assert campaign_record is not None and campaign_record["state"] == "running"
    status, headers, _ = call(
        app, "/action/pause", method="POST", form=form, origin=f"http://{HOST}"
    )
    assert status.startswith("303") and headers["Location"] == "/campaigns/spring"
    campaign_record = client.get_campaign("spring")
    assert campaign_record is not None and campaign_record["state"] == "paused"
    assert call(app, "/action/resume", method="POST", form=form)[0].startswith("303")
    campaign_record = client.get_campaign("spring")
    assert campaign_record is not None and campaign_record["state"] == "running"
    drain(client)
    data = json.loads(call(app, "/api/campaigns/spring")[2])
    assert data["data"]["counts"]["sent"] == 4 and data["data"]["state"] == "finished"


def test_the_token_of_one_credential_does_not_act_for_another(
    app: DashboardApp, client: Client
) -> None:
    client.enqueue_many([message(0)], campaign="c")
    token = csrf(call(app, "/campaigns/c", authorization=auth("ops:first-pass"))[2])
    form = {"name": "c", "csrf": token}
    assert call(app, "/action/pause", method="POST", form=form)[0].startswith("403")


def test_search_by_id_shows_the_history_and_never_the_body_or_token(
    app: DashboardApp, client: Client
) -> None:
    send_id = client.enqueue(message(1))
    drain(client)
    page = call(app, "/search?q=" + send_id)[2]
    assert f"Send {send_id}" in page and "reader1@example.com" in page and "sent" in page
    for secret in ("the secret body text", "tok-never-shown", "first-pass", "second-pass"):
        assert secret not in page
        assert secret not in call(app, "/api/search?q=" + send_id)[2]
    assert "No send with that id" in call(app, "/search?q=unknown-id")[2]


def test_suppressions_are_found_listed_and_lifted_after_confirmation(
    app: DashboardApp, client: Client
) -> None:
    client.suppress("gone@example.com", reason="hard_bounce")
    assert "suppressed (hard_bounce" in call(app, "/search?q=gone@example.com")[2]
    page = call(app, "/suppressions")[2]
    assert "gone@example.com" in page and 'data-confirm="Send to gone@example.com again?"' in page
    form = {"address": "gone@example.com", "csrf": csrf(page)}
    status, headers, _ = call(app, "/action/unsuppress", method="POST", form=form)
    assert status.startswith("303") and headers["Location"] == "/suppressions"
    assert client.get_suppression("gone@example.com") is None


def test_mounted_under_a_prefix_its_links_follow(app: DashboardApp) -> None:
    def outer(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"outer"]

    both = mounted(outer, app, "/dashboard")
    assert call(both, "/mailtrap/tracking/")[2] == "outer"
    page = call(both, "/dashboard/campaigns")[2]
    assert 'src="/dashboard/static/dashboard.js"' in page
    assert 'data-api="/dashboard/api/campaigns"' in page
    script = call(both, "/dashboard/static/dashboard.js")
    assert script[1]["Content-Type"].startswith("text/javascript") and "setInterval" in script[2]


def test_the_command_refuses_to_start_without_a_secret(redis_url: str) -> None:
    env = {"MAILQUEUE_BROKER_URL": redis_url, "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "mailqueue", "dashboard", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [done.stderr.strip()]
    assert done.stderr.startswith("error: ") and "MAILQUEUE_DASHBOARD_SECRET" in done.stderr


def test_the_fleet_counts_sends_by_state_over_the_last_hour(
    app: DashboardApp,
    client: Client,
) -> None:
    client.enqueue_many([message(i) for i in range(3)])
    client.enqueue({**message(9), "to": ["someone@nowhere.invalid"]})
    drain(client)

    data = json.loads(call(app, "/api/")[2])["data"]
    hour = data["last_hour"]

    assert hour["totals"]["queued"] == 4
    assert hour["totals"]["sent"] + hour["totals"]["failed"] == 4
    assert len(hour["minutes"]) == 60
    assert sum(sum(counts.values()) for _, counts in hour["minutes"]) == 8
    page = call(app, "/")[2]
    assert "id=last-hour-chart width=720 height=200" in page
    assert 'data-state="queued"' in page


def test_search_by_address_lists_its_recent_lone_sends_newest_first(
    app: DashboardApp,
    client: Client,
) -> None:
    first = client.enqueue({**message(1), "to": ["Alice@Example.com"]})
    second = client.enqueue({**message(2), "to": ["bob@example.com"], "cc": ["alice@example.com"]})
    client.enqueue_many([{**message(3), "to": ["alice@example.com"]}], campaign="spring")
    drain(client)

    found = json.loads(call(app, "/api/search?q=alice@example.com")[2])["data"]

    assert [send["id"] for send in found["sends"]] == [second, first]
    assert {send["state"] for send in found["sends"]} == {"sent"}
    assert found["sends"][0]["status"] == "queued"
    page = call(app, "/search?q=alice@example.com")[2]
    assert f'href="?q={second}"' in page and "the secret body text" not in page
    nobody = call(app, "/search?q=nobody@example.com")[2]
    assert "campaign recipients are not indexed" in nobody
