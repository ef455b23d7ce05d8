"""The dashboard in the distribution's headless Chromium, over a real Redis, worker and stand-in.

A campaign appears, its funnel moves, Pause and Resume work from its page,
an address finds its lone send, the fleet counts sends by state over the last
hour, and each main view is saved as a screenshot under ``tests/artifacts/``.
Every wait is for a state of the page, with a deadline.
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from mailqueue.client import default as current
from mailqueue.core.events import normalize_event
from mailqueue.dashboard import create_app
from mailqueue.settings import Settings
from mailqueue.testing.worker import WorkerProcess
from mailqueue.testing.wsgi import serving

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
CREDENTIALS = "ops:browser-test-password"
RECIPIENTS = 24
# Generous: a loaded two-core machine runs Chromium, a worker and Redis at once.
DEADLINE = 90.0


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # Slow enough that the campaign is still running when the page pauses it;
    # one call per message so that the funnel moves a step at a time.
    return make_settings(rate_limit="3/1s", coalesce=False)


@pytest.fixture
def dashboard(settings: Settings) -> Iterator[str]:
    app = create_app(current(), {"MAILQUEUE_DASHBOARD_SECRET": CREDENTIALS})
    with serving(app, threads=4) as url:
        yield url


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    assert chromium and chromedriver, "install the distribution's chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,1300",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    try:
        # Basic auth on every request the page makes, its polling included.
        token = base64.b64encode(CREDENTIALS.encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}}
        )
        yield driver
    finally:
        driver.quit()


def read(driver: webdriver.Chrome, script: str) -> Any:
    """Evaluate in the page: the fragment is replaced every poll, so no element is kept."""
    return driver.execute_script(script)


def until(driver: webdriver.Chrome, what: str, check: Callable[[webdriver.Chrome], Any]) -> Any:
    try:
        return WebDriverWait(driver, DEADLINE, poll_frequency=0.2).until(check)
    except TimeoutException:
        seen = read(driver, "return document.getElementById('live').innerText")
        raise AssertionError(f"no {what} within {DEADLINE}s; the page shows:\n{seen}") from None


def polls(driver: webdriver.Chrome) -> int:
    return int(read(driver, "return document.getElementById('updated').dataset.polls || 0"))


def funnel(driver: webdriver.Chrome) -> dict[str, int]:
    counts = read(
        driver,
        "return Array.from(document.querySelectorAll('svg.funnel text[data-step]'))"
        ".map(t => [t.dataset.step, t.textContent])",
    )
    return {step: int(count) for step, count in counts or []}


def state(driver: webdriver.Chrome) -> str | None:
    text: str | None = read(
        driver, "var s = document.getElementById('state'); return s && s.textContent"
    )
    return text


def press(driver: webdriver.Chrome, action: str) -> None:
    read(driver, f"document.querySelector('button[value={action}]').click()")


def shot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # The whole page, its last chart included.
    height = int(read(driver, "return document.documentElement.scrollHeight"))
    driver.set_window_size(1200, max(1300, height + 200))
    assert driver.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def newsletter(index: int) -> dict[str, Any]:
    return {
        "from_email": "News <news@example.com>",
        "to": [f"reader{index}@example.com"],
        "subject": f"Issue 42 for reader {index}",
        "text": "This week's news.",
    }


def test_a_campaign_appears_moves_and_is_paused_and_resumed_from_the_page(
    worker: WorkerProcess, dashboard: str, browser: webdriver.Chrome
) -> None:
    browser.get(dashboard + "/campaigns")
    until(browser, "the campaigns page polled", lambda d: polls(d) >= 1)
    assert "spring" not in browser.page_source

    client = current()
    ids = client.enqueue_many([newsletter(i) for i in range(RECIPIENTS)], campaign="spring")
    until(
        browser,
        "the campaign listed",
        lambda d: read(d, "return !!document.querySelector('a[href=\"/campaigns/spring\"]')"),
    )

    browser.get(dashboard + "/campaigns/spring")
    until(browser, "the funnel moved", lambda d: funnel(d).get("sent", 0) > 0)
    assert state(browser) == "running"
    press(browser, "pause")
    until(browser, "paused from the page", lambda d: state(d) == "paused")
    campaign_record = client.get_campaign("spring")
    assert campaign_record is not None and campaign_record["state"] == "paused"
    # Pausing holds what has not been read yet; at most the calls in flight finish.
    campaign_record = client.get_campaign("spring")
    assert campaign_record is not None
    held = campaign_record["counts"].get("waiting", 0)
    assert held > 0

    press(browser, "resume")
    until(browser, "every recipient sent", lambda d: funnel(d).get("sent") == RECIPIENTS)
    until(browser, "finished", lambda d: state(d) == "finished")

    # Tracking events carry the funnel past "sent", and fill a send's history.
    first: Mapping[str, Any] = client.get_status(ids[0]) or {}
    message_id = next(iter(first["recipients"].values()))["message_id"]
    now = int(time.time())
    raw = [
        {"event": "delivery", "message_id": message_id, "event_id": "d0", "timestamp": now},
        {"event": "open", "message_id": message_id, "event_id": "o0", "timestamp": now + 1},
    ]
    client.events.apply([normalize_event(event) for event in raw], "now")
    until(browser, "opened in the funnel", lambda d: funnel(d).get("opened") == 1)
    # What went out each minute, from the counters in Redis: the page needs no history of its own.
    browser.get(dashboard + "/campaigns/spring")
    until(
        browser,
        "the hand-overs drawn",
        lambda d: read(d, "return document.querySelectorAll('#handed rect').length > 0"),
    )
    shot(browser, "campaign-funnel")

    browser.get(dashboard + "/search?q=" + ids[0])
    until(
        browser,
        "the send's history",
        lambda d: read(
            d, "var h = document.getElementById('history'); return h && h.rows.length === 3"
        ),
    )
    assert "opened" in browser.page_source and "This week's news." not in browser.page_source
    shot(browser, "send-history")

    receipt = client.enqueue({**newsletter(0), "to": ["alice@example.com"], "subject": "Receipt"})
    browser.get(dashboard + "/search?q=alice@example.com")
    until(
        browser,
        "the address's send, sent",
        lambda d: read(
            d,
            "var t = document.getElementById('address-sends');"
            f" return !!t && t.innerText.includes('{receipt}') && t.innerText.includes('sent')",
        ),
    )
    shot(browser, "address-search")

    browser.get(dashboard + "/")
    # The backlog's last hour comes from the workers' samples, drawn at the first view.
    until(
        browser,
        "the fleet drew the backlog of the last hour",
        lambda d: polls(d) >= 1 and read(d, "return !!document.querySelector('#rates polyline')"),
    )
    assert read(browser, "return document.querySelector('#waiting b').textContent") == "0"
    assert "peak" in read(browser, "return document.getElementById('rates').textContent")
    # The limit the worker noted while it sent (3 a second).
    limiter = read(browser, "return document.querySelector('#limiter').textContent")
    assert "/ 3" in limiter and "requests in 1s" in limiter
    sent = read(browser, "return document.querySelector('[data-state=sent] b').textContent")
    assert int(sent) == RECIPIENTS + 1
    assert read(browser, "return document.querySelectorAll('#last-hour-chart rect').length") > 0
    shot(browser, "fleet")
