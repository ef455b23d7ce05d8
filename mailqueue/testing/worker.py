"""A real Celery worker process for end-to-end tests, benchmarks and the demo."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import redis

from mailqueue.settings import Settings, account_env_prefix
from mailqueue.store.connection import connect
from mailqueue.store.keys import Keys
from mailqueue.testing.running import Running

__all__ = ["WorkerProcess", "settings_env"]


def settings_env(settings: Settings) -> dict[str, str]:
    """Environment variables that rebuild ``settings`` in another process."""
    env = {
        "MAILQUEUE_BROKER_URL": settings.broker_url,
        "MAILQUEUE_RATE_LIMIT": f"{settings.rate_limit.amount}/{settings.rate_limit.period!r}s",
        "MAILQUEUE_COALESCE": "true" if settings.coalesce else "false",
        "MAILQUEUE_STATUS_TTL": str(settings.status_ttl),
        "MAILQUEUE_IGNORE_UNSUPPORTED_FEATURES": str(settings.ignore_unsupported_features).lower(),
        "MAILQUEUE_CONNECT_TIMEOUT": repr(settings.connect_timeout),
        "MAILQUEUE_READ_TIMEOUT": repr(settings.read_timeout),
        "MAILQUEUE_MAX_RETRIES": str(settings.max_retries),
        "MAILQUEUE_RETRY_BACKOFF": repr(settings.retry_backoff),
        "MAILQUEUE_RETRY_BACKOFF_MAX": repr(settings.retry_backoff_max),
        "MAILQUEUE_VISIBILITY_TIMEOUT": repr(settings.visibility_timeout),
        "MAILQUEUE_RECLAIM_IDLE": repr(settings.reclaim_idle),
        "MAILQUEUE_QUEUE": settings.queue,
        "MAILQUEUE_KEY_PREFIX": settings.key_prefix,
        "MAILQUEUE_SOFT_BOUNCE_LIMIT": str(settings.soft_bounce_limit),
        "MAILQUEUE_SOFT_BOUNCE_DAYS": repr(settings.soft_bounce_days),
        "MAILQUEUE_CAMPAIGN_BOUNCE_RATE": repr(settings.campaign_bounce_rate),
        "MAILQUEUE_CAMPAIGN_COMPLAINT_RATE": repr(settings.campaign_complaint_rate),
        "MAILQUEUE_CAMPAIGN_MIN_TRACKED": str(settings.campaign_min_tracked),
        "MAILQUEUE_CAP_TRANSACTIONAL_RESERVE": repr(settings.cap_transactional_reserve),
        "MAILQUEUE_CALLS_IN_FLIGHT": str(settings.calls_in_flight),
        "MAILQUEUE_RECONCILE_SETTLE": repr(settings.reconcile_settle),
        "MAILQUEUE_EMAIL_LOGS_RATE_LIMIT": (
            f"{settings.email_logs_rate_limit.amount}/{settings.email_logs_rate_limit.period!r}s"
        ),
    }
    if settings.reconcile is not None:
        env["MAILQUEUE_RECONCILE"] = "true" if settings.reconcile else "false"
    optional = {
        "MAILTRAP_API_TOKEN": settings.api_token,
        "MAILTRAP_API_URL": settings.api_url,
        "MAILTRAP_SANDBOX_ID": settings.sandbox_id,
        "MAILTRAP_BULK_API_URL": settings.bulk_api_url,
        "MAILTRAP_BULK_API_TOKEN": settings.bulk_api_token,
        "MAILTRAP_GENERAL_API_URL": settings.general_api_url,
        "MAILQUEUE_REDIS_URL": settings.redis_url,
        "MAILQUEUE_REDIS_MIN_REPLICAS": (
            None if settings.redis_min_replicas is None else str(settings.redis_min_replicas)
        ),
        "MAILQUEUE_DEFAULT_FROM_EMAIL": settings.default_from_email,
        "MAILTRAP_TRACKING_SECRET": settings.tracking_secret,
        "MAILQUEUE_WEBHOOK_SECRET": ",".join(settings.webhook_secret) or None,
        "MAILQUEUE_HOURLY_CAP": None if settings.hourly_cap is None else str(settings.hourly_cap),
        "MAILQUEUE_DAILY_CAP": None if settings.daily_cap is None else str(settings.daily_cap),
        "MAILQUEUE_ON_OUTCOME": settings.on_outcome,
        "MAILQUEUE_ON_OUTCOME_TASK": settings.on_outcome_task,
        "MAILQUEUE_ON_OUTCOME_QUEUE": settings.on_outcome_queue,
        "MAILQUEUE_ALLOW_HTTP_API_URLS": "true" if settings.allow_http_api_urls else None,
    }
    env.update({name: value for name, value in optional.items() if value})
    env.update(_accounts_env(settings))
    return env


def _accounts_env(settings: Settings) -> dict[str, str]:
    if not settings.accounts:
        return {}
    env = {"MAILQUEUE_ACCOUNTS": ",".join(settings.accounts)}
    for name, account in settings.accounts.items():
        prefix = account_env_prefix(name)
        for field in ("api_token", "bulk_api_token", "api_url", "bulk_api_url", "sandbox_id"):
            value = getattr(account, field)
            if value:
                env[prefix + field.upper()] = str(value)
        if account.rate_limit is not None:
            limit = account.rate_limit
            env[prefix + "RATE_LIMIT"] = f"{limit.amount}/{limit.period!r}s"
    return env


class WorkerProcess(Running):
    """``with WorkerProcess(settings, concurrency=2): ...`` runs ``celery -A mailqueue worker``."""

    def __init__(
        self,
        settings: Settings,
        *,
        concurrency: int = 2,
        pool: str = "prefork",
        extra_env: Mapping[str, str] | None = None,
        loglevel: str = "WARNING",
        hostname: str | None = None,
        settings_in_env: bool = True,
        command: str = "celery",
        cwd: str | None = None,
    ) -> None:
        """``settings_in_env=False`` starts the worker with no ``MAILTRAP_*`` or ``MAILQUEUE_*``
        variable at all (a Django project's worker reading settings.py: ``extra_env`` names
        ``DJANGO_SETTINGS_MODULE``); ``settings`` then only tell the test where to find it.
        ``command="mailqueue"`` starts it as ``mailqueue worker``, in ``cwd``.
        """
        self.settings = settings
        self.settings_in_env = settings_in_env
        self.command = command
        self.cwd = cwd
        self.concurrency = concurrency
        self.pool = pool
        self.extra_env = dict(extra_env or {})
        self.loglevel = loglevel
        self.hostname = hostname or f"mailqueue-{os.getpid()}-{time.monotonic_ns()}@%h"
        self.process: subprocess.Popen[bytes] | None = None
        # Kept open for the worker's whole life; closed and removed in __exit__.
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="mailqueue-worker-", suffix=".log", delete=False
        )
        # Its metrics folder, made at start and removed at stop, also after a
        # SIGKILL (which skips the worker's own clean-up of a private folder).
        self.metrics_dir: str | None = None

    def start(self, wait: float = 30.0) -> WorkerProcess:
        self.metrics_dir = tempfile.mkdtemp(prefix="mailqueue-worker-metrics-")
        inherited = dict(os.environ)
        if not self.settings_in_env:
            inherited = {
                name: value
                for name, value in inherited.items()
                if not name.startswith(("MAILTRAP_", "MAILQUEUE_", "ANYMAIL_"))
            }
        env = {
            **inherited,
            **(settings_env(self.settings) if self.settings_in_env else {}),
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            **self.extra_env,
        }
        env.pop("CELERY_CONFIG_MODULE", None)
        start = ["mailqueue"] if self.command == "mailqueue" else ["celery", "-A", "mailqueue"]
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                *start,
                "worker",
                "--concurrency",
                str(self.concurrency),
                "--pool",
                self.pool,
                "--loglevel",
                self.loglevel,
                "--hostname",
                self.hostname,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--queues",
                self.settings.queue,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.cwd,
        )
        self._wait_ready(wait)
        return self

    def _wait_ready(self, wait: float) -> None:
        client = connect(self.settings.status_redis_url)
        outbox = Keys(self.settings.key_prefix).outbox
        deadline = time.monotonic() + wait
        try:
            # The worker's ready hook publishes a wake-up; once a drain has run
            # (its consumer group exists) the worker is taking work.
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"worker exited at start:\n{self.output()}")
                if client.exists(outbox) and _has_group(client, outbox):
                    return
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"worker not ready after {wait} s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        with open(self.log.name, "rb") as handle:
            return handle.read().decode(errors="replace")[-20000:]

    def kill(self) -> None:
        """SIGKILL the worker and every pool process: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 30.0) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it does not finish in time."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process is not None:
            # A pool child outliving its parent would go on taking work from
            # the next test's queue: nothing of this worker may survive it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None
        if self.metrics_dir is not None:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            self.metrics_dir = None

    def pids(self) -> list[int]:
        """The main process and its pool children."""
        if self.process is None:
            return []
        result = subprocess.run(
            ["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True, check=False
        )
        return [int(pid) for pid in result.stdout.split()]

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        self.log.close()
        os.unlink(self.log.name)


def _has_group(client: redis.Redis, outbox: str) -> bool:
    try:
        groups: Any = client.xinfo_groups(outbox)
        return any(group["name"] in (b"workers", "workers") for group in groups)
    except redis.ResponseError:
        return False
