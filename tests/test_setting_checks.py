"""Every setting is checked when a worker starts, ranges included, each in one line naming it.

The check is the one the library uses everywhere: building ``Settings`` (from the
environment, Django settings or keywords), then what a worker adds at start
(``check_worker_settings``). The table holds one value a person might set by
mistake for each setting; a setting added without a row fails the first test.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

import pytest

from mailqueue import ConfigurationError, Settings
from mailqueue.tasks.worker_setup import check_worker_settings

# What a worker needs to get as far as the setting under test.
STARTS = {"MAILTRAP_API_TOKEN": "t"}

# field: (environment name, a mistaken value, what the error line says besides the name)
MISTAKES: dict[str, tuple[str, str, str]] = {
    "api_token": ("MAILTRAP_API_TOKEN", "", "is not set"),
    "sandbox_id": ("MAILTRAP_SANDBOX_ID", "zero", "'zero'"),
    "api_url": ("MAILTRAP_API_URL", "send.api.mailtrap.io", "https://"),
    "bulk_api_url": ("MAILTRAP_BULK_API_URL", "bulk.api.mailtrap.io", "https://"),
    "general_api_url": ("MAILTRAP_GENERAL_API_URL", "mailtrap.io/api", "https://"),
    "accounts": ("MAILQUEUE_ACCOUNTS", "eu,not a name", "'not a name'"),
    "webhook_secret": ("MAILQUEUE_WEBHOOK_SECRET", "no-colon", "user:password"),
    "broker_url": ("MAILQUEUE_BROKER_URL", "redis+sentinel://h1:26379", "master name"),
    "redis_url": ("MAILQUEUE_REDIS_URL", "http://127.0.0.1/0", "MAILQUEUE_REDIS_URL"),
    "key_prefix": ("MAILQUEUE_KEY_PREFIX", "a {prefix}", "no braces"),
    "redis_min_replicas": ("MAILQUEUE_REDIS_MIN_REPLICAS", "-1", "at least 0"),
    "rate_limit": ("MAILQUEUE_RATE_LIMIT", "0/1s", "positive"),
    "coalesce": ("MAILQUEUE_COALESCE", "perhaps", "true or false"),
    "status_ttl": ("MAILQUEUE_STATUS_TTL", "0", "at least 1"),
    "default_from_email": ("MAILQUEUE_DEFAULT_FROM_EMAIL", "not an address", "email address"),
    "ignore_unsupported_features": (
        "MAILQUEUE_IGNORE_UNSUPPORTED_FEATURES",
        "perhaps",
        "true or false",
    ),
    "allow_eai_from": ("MAILQUEUE_ALLOW_EAI_FROM", "perhaps", "true or false"),
    "allow_http_api_urls": ("MAILQUEUE_ALLOW_HTTP_API_URLS", "perhaps", "true or false"),
    "connect_timeout": ("MAILQUEUE_CONNECT_TIMEOUT", "0", "more than 0"),
    "read_timeout": ("MAILQUEUE_READ_TIMEOUT", "-3", "more than 0"),
    "max_retries": ("MAILQUEUE_MAX_RETRIES", "2.5", "whole number"),
    "retry_backoff": ("MAILQUEUE_RETRY_BACKOFF", "0", "more than 0"),
    "retry_backoff_max": ("MAILQUEUE_RETRY_BACKOFF_MAX", "10", "MAILQUEUE_RETRY_BACKOFF (30)"),
    "visibility_timeout": ("MAILQUEUE_VISIBILITY_TIMEOUT", "-1", "more than 0"),
    "reclaim_idle": ("MAILQUEUE_RECLAIM_IDLE", "0", "more than 0"),
    "calls_in_flight": ("MAILQUEUE_CALLS_IN_FLIGHT", "0", "at least 1"),
    "webhook_max_body": ("MAILQUEUE_WEBHOOK_MAX_BODY", "0", "at least 1"),
    "metrics_port": ("MAILQUEUE_METRICS_PORT", "70000", "from 1 to 65535"),
    "reconcile": ("MAILQUEUE_RECONCILE", "maybe", "true or false"),
    "reconcile_settle": ("MAILQUEUE_RECONCILE_SETTLE", "-1", "at least 0"),
    "email_logs_rate_limit": ("MAILQUEUE_EMAIL_LOGS_RATE_LIMIT", "lots", "'lots'"),
    "soft_bounce_limit": ("MAILQUEUE_SOFT_BOUNCE_LIMIT", "-1", "at least 0"),
    "soft_bounce_days": ("MAILQUEUE_SOFT_BOUNCE_DAYS", "-7", "at least 0"),
    "campaign_bounce_rate": ("MAILQUEUE_CAMPAIGN_BOUNCE_RATE", "5", "from 0 to 1"),
    "campaign_complaint_rate": ("MAILQUEUE_CAMPAIGN_COMPLAINT_RATE", "0.3%", "number"),
    "campaign_min_tracked": ("MAILQUEUE_CAMPAIGN_MIN_TRACKED", "-100", "at least 0"),
    "hourly_cap": ("MAILQUEUE_HOURLY_CAP", "-1", "at least 0"),
    "daily_cap": ("MAILQUEUE_DAILY_CAP", "lots", "whole number"),
    "cap_transactional_reserve": ("MAILQUEUE_CAP_TRANSACTIONAL_RESERVE", "10", "from 0 to 1"),
    "on_outcome": ("MAILQUEUE_ON_OUTCOME", "no_such_module.hook", "cannot be imported"),
}
# Any text is one of these: a token or secret Mailtrap issued, a Celery queue or task name.
FREE_TEXT = {
    "bulk_api_token", "tracking_secret", "queue", "on_outcome_task", "on_outcome_queue",
}  # fmt: skip


def worker_start_check(env: dict[str, str]) -> None:
    """What a worker checks at start, with ``env`` as its environment."""
    check_worker_settings(Settings.from_env(env))


def test_every_setting_has_a_row() -> None:
    fields = {field.name for field in dataclasses.fields(Settings)}

    assert set(MISTAKES) | FREE_TEXT == fields
    assert not set(MISTAKES) & FREE_TEXT


@pytest.mark.parametrize("field", sorted(MISTAKES))
def test_a_mistaken_setting_stops_the_worker_in_one_line_naming_it(field: str) -> None:
    name, value, words = MISTAKES[field]

    with pytest.raises(ConfigurationError) as info:
        worker_start_check({**STARTS, name: value})

    line = str(info.value)
    assert "\n" not in line
    assert name in line and words in line, line
    assert "Traceback" not in line and "invalid literal" not in line


@pytest.mark.parametrize("field", sorted(MISTAKES))
def test_the_same_mistake_in_django_settings_is_refused_alike(field: str) -> None:
    name, value, words = MISTAKES[field]
    anymail = {} if name == "MAILTRAP_API_TOKEN" else {"MAILTRAP_API_TOKEN": "t"}
    django_settings = SimpleNamespace(ANYMAIL=anymail, **{name: value})

    with pytest.raises(ConfigurationError) as info:
        check_worker_settings(Settings.from_django(django_settings, environ={}))

    assert name in str(info.value) and words in str(info.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILQUEUE_READ_TIMEOUT", -3),
        ("MAILQUEUE_CAMPAIGN_BOUNCE_RATE", 5),
        ("MAILQUEUE_CALLS_IN_FLIGHT", 0),
        ("MAILQUEUE_MAX_RETRIES", 2.5),
        ("MAILQUEUE_COALESCE", "perhaps"),
    ],
)
def test_a_django_setting_written_as_a_python_value_is_checked_as_given(
    name: str, value: object
) -> None:
    # A 0 in settings.py is a value, not "unset": it must not fall back to the default.
    django_settings = SimpleNamespace(**{name: value})

    with pytest.raises(ConfigurationError, match=name):
        Settings.from_django(django_settings, environ={})


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("read_timeout", -3.0, "MAILQUEUE_READ_TIMEOUT must be more than 0"),
        ("campaign_bounce_rate", 5.0, "MAILQUEUE_CAMPAIGN_BOUNCE_RATE must be from 0 to 1"),
        ("calls_in_flight", 0, "MAILQUEUE_CALLS_IN_FLIGHT must be at least 1"),
        ("calls_in_flight", "8", "MAILQUEUE_CALLS_IN_FLIGHT must be a whole number"),
        ("read_timeout", float("nan"), "MAILQUEUE_READ_TIMEOUT must be a number"),
        ("coalesce", "no", "MAILQUEUE_COALESCE must be true or false"),
        ("queue", "", "MAILQUEUE_QUEUE must name a queue"),
        ("rate_limit", 150, "MAILQUEUE_RATE_LIMIT must look like '150/10s'"),
    ],
)
def test_settings_built_in_python_are_checked_the_same_way(
    field: str, value: object, words: str
) -> None:
    fields: dict[str, Any] = {field: value}
    with pytest.raises(ConfigurationError) as info:
        Settings(**fields)

    assert str(info.value).startswith(words)
    assert info.value.setting == field


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILQUEUE_CAMPAIGN_BOUNCE_RATE", "1"),
        ("MAILQUEUE_CAMPAIGN_COMPLAINT_RATE", "0"),
        ("MAILQUEUE_CALLS_IN_FLIGHT", "1"),
        ("MAILQUEUE_MAX_RETRIES", "0"),
        ("MAILQUEUE_RECONCILE_SETTLE", "0"),
        ("MAILQUEUE_METRICS_PORT", "65535"),
        ("MAILQUEUE_READ_TIMEOUT", "0.5"),
        ("MAILQUEUE_DEFAULT_FROM_EMAIL", "Shop <shop@example.com>"),
    ],
)
def test_the_edges_of_each_range_are_accepted(name: str, value: str) -> None:
    worker_start_check({**STARTS, name: value})
