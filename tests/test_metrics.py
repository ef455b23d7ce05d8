"""Prometheus metrics: counting functions, queue depth read from Redis, /metrics over HTTP."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from prometheus_client import REGISTRY

from mailqueue.errors import ConfigurationError
from mailqueue.metrics import instruments as metrics
from mailqueue.store.keys import Keys


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def serve(redis_url: str) -> Iterator[str]:
    """A running metrics server on loopback with the queue depth; yields its /metrics URL."""
    server, thread = metrics.start_metrics_server(0, addr="127.0.0.1", redis_url=redis_url)
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def scrape(url: str) -> str:
    answer = requests.get(url, timeout=5)
    answer.raise_for_status()
    return answer.text


def test_count_sends_adds_n_to_the_outcome() -> None:
    before = sample("mailqueue_sends_total", outcome="partially_sent")

    metrics.count_sends("partially_sent", 3)

    assert sample("mailqueue_sends_total", outcome="partially_sent") == before + 3


def test_count_sends_refuses_an_unknown_outcome() -> None:
    with pytest.raises(ValueError, match="bogus"):
        metrics.count_sends("bogus")


def test_api_request_is_counted_by_endpoint_and_status() -> None:
    before = sample("mailqueue_api_requests_total", path="batch", status="429")

    metrics.observe_api_request("batch", 429, 0.2)

    assert sample("mailqueue_api_requests_total", path="batch", status="429") == before + 1


def test_api_request_latency_lands_in_the_histogram() -> None:
    count = sample("mailqueue_api_request_seconds_count", path="send")
    total = sample("mailqueue_api_request_seconds_sum", path="send")

    metrics.observe_api_request("send", 200, 0.75)

    assert sample("mailqueue_api_request_seconds_count", path="send") == count + 1
    assert sample("mailqueue_api_request_seconds_sum", path="send") == pytest.approx(total + 0.75)


def test_sandbox_inbox_id_stays_out_of_the_path_label() -> None:
    before = sample("mailqueue_api_requests_total", path="send", status="200")

    metrics.observe_api_request("send/987654321", 200, 0.1)

    assert sample("mailqueue_api_requests_total", path="send", status="200") == before + 1
    assert "987654321" not in _exposition()


def test_request_without_an_answer_has_status_error() -> None:
    before = sample("mailqueue_api_requests_total", path="send", status="error")

    metrics.observe_api_request("send", None, 30.0)

    assert sample("mailqueue_api_requests_total", path="send", status="error") == before + 1


def test_retries_are_counted() -> None:
    before = sample("mailqueue_retries_total")

    metrics.count_retries(2)

    assert sample("mailqueue_retries_total") == before + 2


def test_rate_limit_wait_is_observed() -> None:
    before = sample("mailqueue_rate_limit_wait_seconds_count")

    metrics.observe_rate_limit_wait(0.3)

    assert sample("mailqueue_rate_limit_wait_seconds_count") == before + 1


def test_webhook_event_is_counted_by_type_and_result() -> None:
    before = sample("mailqueue_webhook_events_total", type="opened", result="received")

    metrics.count_webhook_event("opened", "received")

    assert sample("mailqueue_webhook_events_total", type="opened", result="received") == before + 1


def test_unexpected_webhook_event_type_is_counted_as_unknown() -> None:
    before = sample("mailqueue_webhook_events_total", type="unknown", result="received")

    metrics.count_webhook_event("made-up-by-a-stranger", "received")

    assert sample("mailqueue_webhook_events_total", type="unknown", result="received") == before + 1
    assert "made-up-by-a-stranger" not in _exposition()


def test_metrics_endpoint_serves_the_counters_over_http(serve: str) -> None:
    metrics.count_sends("sent", 1)

    body = scrape(serve)

    assert 'mailqueue_sends_total{outcome="sent"}' in body
    assert "mailqueue_api_request_seconds_bucket" in body


def test_queue_depth_is_read_from_redis_at_scrape_time(
    serve: str, redis_client: redis.Redis
) -> None:
    for _ in range(3):
        redis_client.xadd(Keys().outbox, {"e": b"{}"})
    redis_client.xadd(Keys().outbox_batch, {"e": b"{}"})
    redis_client.zadd(Keys().retry, {"a": 1.0, "b": 2.0})

    body = scrape(serve)

    assert 'mailqueue_queue_depth{queue="outbox"} 3.0' in body
    assert 'mailqueue_queue_depth{queue="batch"} 1.0' in body
    assert 'mailqueue_queue_depth{queue="retry"} 2.0' in body
    assert 'mailqueue_queue_depth{queue="dead"} 0.0' in body
    assert "mailqueue_redis_up 1.0" in body


def test_scrape_still_serves_counters_when_redis_is_down() -> None:
    server, thread = metrics.start_metrics_server(
        0, addr="127.0.0.1", redis_url="redis://127.0.0.1:1/0"
    )
    try:
        body = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    assert "mailqueue_redis_up 0.0" in body
    assert "mailqueue_sends_total" in body
    assert "mailqueue_queue_depth{" not in body


def test_forked_pool_children_are_added_up_in_multiprocess_mode(tmp_path: Path) -> None:
    # As under Celery's prefork pool: children count, the parent serves.
    script = textwrap.dedent(
        """
        import os
        from prometheus_client import generate_latest
        from mailqueue.metrics import instruments as metrics

        assert metrics.multiprocess_mode()
        children = []
        for _ in range(2):
            pid = os.fork()
            if pid == 0:
                metrics.count_sends("sent", 3)
                metrics.observe_api_request("batch", 200, 0.5)
                os._exit(0)
            children.append(pid)
        for pid in children:
            os.waitpid(pid, 0)
        print(generate_latest(metrics.exposition_registry()).decode())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert 'mailqueue_sends_total{outcome="sent"} 6.0' in result.stdout
    assert 'mailqueue_api_requests_total{path="batch",status="200"} 2.0' in result.stdout


def _exposition() -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.exposition_registry()).decode()


# -- the metrics folder -------------------------------------------------------

FORK_AND_COUNT = textwrap.dedent(
    """
    import os, sys
    from prometheus_client import generate_latest
    from mailqueue.metrics import instruments as metrics

    print("folder", metrics.use_multiprocess_dir())
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            metrics.count_sends("sent", 2)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    print(generate_latest(metrics.exposition_registry()).decode())
    """
)


def _python(script: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_without_a_folder_a_private_one_adds_up_the_children_and_is_removed_at_exit(
    tmp_path: Path,
) -> None:
    result = _python(FORK_AND_COUNT, {"TMPDIR": str(tmp_path)})

    assert result.returncode == 0, result.stderr
    folder = result.stdout.splitlines()[0].split(" ", 1)[1]
    assert Path(folder).parent == tmp_path
    assert 'mailqueue_sends_total{outcome="sent"} 4.0' in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_given_folder_is_used_and_kept(tmp_path: Path) -> None:
    result = _python(FORK_AND_COUNT, {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})

    assert result.returncode == 0, result.stderr
    assert f"folder {tmp_path}" in result.stdout
    assert 'mailqueue_sends_total{outcome="sent"} 4.0' in result.stdout
    assert any(path.name.startswith("counter_") for path in tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["missing", "a file", "read-only"])
def test_an_unusable_folder_is_a_configuration_error_naming_the_variable(
    kind: str, tmp_path: Path
) -> None:
    folder = tmp_path / "metrics"
    if kind == "a file":
        folder.write_text("")
    elif kind == "read-only":
        folder = Path("/proc/self")  # not writable even for root

    with pytest.raises(ConfigurationError, match=f"PROMETHEUS_MULTIPROC_DIR={folder} is not a"):
        metrics.use_multiprocess_dir(str(folder))


def test_importing_and_serving_nothing_leaves_no_file_in_the_folder(
    tmp_path: Path, redis_url: str
) -> None:
    # What a liveness probe does: start Celery's command line, which imports mailqueue.
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "mailqueue", "inspect", "ping", "--timeout", "0.5"],
        env={
            "PATH": "/usr/bin:/bin",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "MAILQUEUE_BROKER_URL": redis_url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert "No nodes replied" in result.stdout + result.stderr  # it did run and ask
    assert list(tmp_path.iterdir()) == []


def test_single_process_mode_ignores_an_unwritable_folder() -> None:
    script = textwrap.dedent(
        """
        from prometheus_client import generate_latest
        from mailqueue.metrics import instruments as metrics

        metrics.use_process_memory()
        metrics.count_webhook_event("opened", "received")
        print(generate_latest(metrics.exposition_registry()).decode())
        """
    )
    result = _python(script, {"PROMETHEUS_MULTIPROC_DIR": "/proc/self"})

    assert result.returncode == 0, result.stderr
    assert 'mailqueue_webhook_events_total{result="received",type="opened"} 1.0' in result.stdout
