"""The Celery app's configuration and the public API surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mailqueue
from mailqueue.celery_app import celery_config
from mailqueue.settings import Settings


def test_only_json_is_accepted() -> None:
    config = celery_config(Settings())

    assert config["task_serializer"] == "json"
    assert config["accept_content"] == ["json"]


def test_late_acks_redelivery_on_worker_loss_and_one_prefetched_task() -> None:
    config = celery_config(Settings(visibility_timeout=90))

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_transport_options"]["visibility_timeout"] == 90


def test_the_longest_countdown_stays_under_the_visibility_timeout() -> None:
    from mailqueue.store.waker import MAX_COUNTDOWN

    assert Settings().visibility_timeout / 2 > MAX_COUNTDOWN


def test_celeryconfig_module_overrides_defaults(tmp_path: Path) -> None:
    (tmp_path / "celeryconfig.py").write_text("worker_prefetch_multiplier = 7\n")
    code = "import mailqueue; print(mailqueue.app.conf.worker_prefetch_multiplier)"

    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )

    assert out.stdout.strip() == "7"


def test_import_reads_no_setting_and_opens_no_connection(tmp_path: Path) -> None:
    # A celeryconfig that cannot be imported shows whether the import looked for it.
    (tmp_path / "celeryconfig.py").write_text("raise RuntimeError('imported')\n")
    env = {
        "PYTHONPATH": str(tmp_path),
        "PATH": "/usr/bin:/bin",
        "MAILQUEUE_RATE_LIMIT": "garbage",
        "MAILQUEUE_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    code = "import mailqueue, sys; print('celeryconfig' in sys.modules)"

    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_malformed_setting_is_reported_when_something_is_sent() -> None:
    env = {"PATH": "/usr/bin:/bin", "MAILQUEUE_RATE_LIMIT": "garbage"}
    code = "import mailqueue; mailqueue.get_status('x')"

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)

    assert out.returncode == 1
    assert "MAILQUEUE_RATE_LIMIT must look like" in out.stderr


def test_configure_before_the_app_is_read_never_reads_the_environment(tmp_path: Path) -> None:
    # Run away from the repository's celeryconfig.py, which reads the environment itself.
    env = {"PATH": "/usr/bin:/bin", "MAILQUEUE_RATE_LIMIT": "garbage"}
    code = (
        "import mailqueue\n"
        "mailqueue.configure(mailqueue.Settings(broker_url='redis://127.0.0.1:9/0', queue='q'))\n"
        "print(mailqueue.app.conf.broker_url, mailqueue.app.conf.task_default_queue)"
    )

    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )

    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["redis://127.0.0.1:9/0", "q"]


def test_celery_finds_the_app_by_package_name() -> None:
    assert mailqueue.app.main == "mailqueue"
    assert "mailqueue.send_email" in mailqueue.app.tasks
    assert "mailqueue.deliver" in mailqueue.app.tasks


def test_all_is_complete_and_importable() -> None:
    public = {name for name in dir(mailqueue) if not name.startswith("_")} - {"annotations"}
    modules = {name for name in public if type(getattr(mailqueue, name)).__name__ == "module"}

    assert set(mailqueue.__all__) - {"__version__"} == public - modules
    for name in mailqueue.__all__:
        assert getattr(mailqueue, name) is not None


def test_a_hand_made_sentinel_broker_without_master_name_is_refused_in_one_line(
    tmp_path: Path,
) -> None:
    # A celeryconfig selecting the Sentinel transport by hand, naming no master:
    # the worker must stop at its configuration with one line, not pass None on.
    (tmp_path / "celeryconfig.py").write_text(
        "broker_url = 'sentinel://127.0.0.1:1/0'\n"
        "broker_transport = 'mailqueue.tasks.sentinel_broker:SentinelTransport'\n"
        "broker_transport_options = {'sentinels': [['127.0.0.1', 1]]}\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"}

    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "mailqueue", "worker", "--pool", "solo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )

    assert out.returncode == 1
    assert out.stderr.strip() == (
        "error: broker_transport_options: the Sentinel broker needs a master_name "
        "(give the broker URL as redis+sentinel://HOST:PORT/MASTER_NAME)"
    )


def test_the_sentinel_channel_refuses_a_missing_master_name() -> None:
    from mailqueue.errors import ConfigurationError
    from mailqueue.store.connection import check_master_name

    assert check_master_name({"master_name": "primary"}) == "primary"
    for options in ({}, {"master_name": None}, {"master_name": ""}, None):
        try:
            check_master_name(options)
        except ConfigurationError as exc:
            assert exc.setting == "broker_transport_options"
        else:
            raise AssertionError(f"{options!r} was accepted")
