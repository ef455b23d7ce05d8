"""Settings for looking up unknown outcomes in Mailtrap's Email Logs."""

from __future__ import annotations

import pytest

from mailqueue import Settings
from mailqueue.errors import ConfigurationError


def test_reconciling_is_on_by_default_when_a_token_is_set() -> None:
    assert Settings(api_token="t").reconcile_enabled
    assert not Settings().reconcile_enabled


def test_reconciling_is_off_for_the_sandbox_even_when_asked_for() -> None:
    assert not Settings(api_token="t", sandbox_id="123").reconcile_enabled
    assert not Settings(api_token="t", sandbox_id="123", reconcile=True).reconcile_enabled


def test_reconciling_can_be_switched_off() -> None:
    settings = Settings.from_env({"MAILTRAP_API_TOKEN": "t", "MAILQUEUE_RECONCILE": "false"})
    assert not settings.reconcile_enabled


def test_the_general_api_url_defaults_to_mailtrap_and_gains_a_slash() -> None:
    assert Settings().general_base_url == "https://mailtrap.io/api/"
    env = {"MAILTRAP_GENERAL_API_URL": "http://127.0.0.1:9/general/api"}
    assert Settings.from_env(env).general_base_url == "http://127.0.0.1:9/general/api/"


def test_the_settle_delay_is_read_from_the_environment_and_defaults_to_five_seconds() -> None:
    assert Settings().reconcile_settle == 5.0
    assert Settings.from_env({"MAILQUEUE_RECONCILE_SETTLE": "0.2"}).reconcile_settle == 0.2


def test_a_malformed_reconcile_setting_names_it() -> None:
    with pytest.raises(ConfigurationError, match="MAILQUEUE_RECONCILE"):
        Settings.from_env({"MAILQUEUE_RECONCILE": "maybe"})
    with pytest.raises(ConfigurationError, match="MAILQUEUE_RECONCILE_SETTLE"):
        Settings(reconcile_settle=-1)


def test_the_email_logs_list_limit_defaults_to_mailtraps_and_can_be_set() -> None:
    assert str(Settings().email_logs_rate_limit) == "60/60s"
    env = {"MAILQUEUE_EMAIL_LOGS_RATE_LIMIT": "600/60s"}
    assert Settings.from_env(env).email_logs_rate_limit.amount == 600
    with pytest.raises(ConfigurationError, match="MAILQUEUE_EMAIL_LOGS_RATE_LIMIT"):
        Settings.from_env({"MAILQUEUE_EMAIL_LOGS_RATE_LIMIT": "lots"})
