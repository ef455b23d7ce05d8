"""Settings: one typed object, built from the environment or Django settings."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mailqueue import ConfigurationError, Settings
from mailqueue.settings import RateLimit


def test_defaults_match_the_documented_table() -> None:
    settings = Settings()

    assert settings.api_token is None
    assert settings.base_url == "https://send.api.mailtrap.io/api/"
    assert settings.broker_url == "redis://localhost:6379/0"
    assert settings.status_redis_url == "redis://localhost:6379/0"
    assert settings.rate_limit == RateLimit(150, 10.0)
    assert settings.coalesce is True
    assert settings.status_ttl == 30 * 24 * 3600
    assert settings.ignore_unsupported_features is False


def test_constructor_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Settings("token")  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "expected"), [("", None), (None, None), (0, None), ("7", "7"), (12345, "12345")]
)
def test_sandbox_id_falsy_means_unset(raw: object, expected: str | None) -> None:
    assert Settings(sandbox_id=raw).sandbox_id == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw", ["0", "00", "-3", "12/34", "abc", "1.5", "١٢", True, str(2**63), "9" * 5000]
)
def test_sandbox_id_must_be_a_positive_integer(raw: object) -> None:
    with pytest.raises(ConfigurationError) as raised:
        Settings(sandbox_id=raw)  # type: ignore[arg-type]

    assert raised.value.setting == "sandbox_id"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("0042", "42"), (str(2**63 - 1), str(2**63 - 1)), ("0" * 5000 + "5", "5")],
)
def test_sandbox_id_is_an_int64_written_without_leading_zeros(raw: str, expected: str) -> None:
    assert Settings(sandbox_id=raw).sandbox_id == expected


def test_sandbox_id_from_the_environment_is_checked_too() -> None:
    with pytest.raises(ConfigurationError, match="MAILTRAP_SANDBOX_ID"):
        Settings.from_env({"MAILTRAP_SANDBOX_ID": "0"})


def test_sandbox_switches_the_default_url_and_paths() -> None:
    settings = Settings(sandbox_id=" 1234 ")

    assert settings.base_url == "https://sandbox.api.mailtrap.io/api/"
    assert settings.endpoint("send") == "send/1234"
    assert settings.endpoint("batch") == "batch/1234"


def test_allow_eai_from_is_off_unless_set() -> None:
    assert Settings().allow_eai_from is False
    assert Settings.from_env({"MAILQUEUE_ALLOW_EAI_FROM": "true"}).allow_eai_from is True


def test_explicit_api_url_gets_a_trailing_slash() -> None:
    assert Settings(api_url="https://bulk.api.mailtrap.io/api").base_url == (
        "https://bulk.api.mailtrap.io/api/"
    )


def test_from_env_reads_every_documented_name() -> None:
    settings = Settings.from_env(
        {
            "MAILTRAP_API_TOKEN": "tok",
            "MAILTRAP_SANDBOX_ID": "99",
            "MAILTRAP_API_URL": "http://127.0.0.1:1/api/",
            "MAILTRAP_TRACKING_SECRET": "sig",
            "MAILQUEUE_WEBHOOK_SECRET": "a:b, c:d",
            "MAILQUEUE_BROKER_URL": "redis://broker:6379/1",
            "MAILQUEUE_REDIS_URL": "redis://store:6379/2",
            "MAILQUEUE_RATE_LIMIT": "100/5s",
            "MAILQUEUE_COALESCE": "false",
            "MAILQUEUE_STATUS_TTL": "60",
            "MAILQUEUE_DEFAULT_FROM_EMAIL": "noreply@example.com",
            "MAILQUEUE_IGNORE_UNSUPPORTED_FEATURES": "yes",
        }
    )

    assert settings.api_token == "tok"
    assert settings.sandbox_id == "99"
    assert settings.base_url == "http://127.0.0.1:1/api/"
    assert settings.tracking_secret == "sig"
    assert settings.webhook_secret == ("a:b", "c:d")
    assert settings.broker_url == "redis://broker:6379/1"
    assert settings.status_redis_url == "redis://store:6379/2"
    assert settings.rate_limit == RateLimit(100, 5.0)
    assert settings.coalesce is False
    assert settings.status_ttl == 60
    assert settings.default_from_email == "noreply@example.com"
    assert settings.ignore_unsupported_features is True


def test_anymail_prefixed_environment_name_wins_over_the_bare_one() -> None:
    settings = Settings.from_env(
        {"ANYMAIL_MAILTRAP_API_TOKEN": "prefixed", "MAILTRAP_API_TOKEN": "bare"}
    )

    assert settings.api_token == "prefixed"


def test_django_precedence_anymail_dict_then_prefixed_then_bare() -> None:
    django = SimpleNamespace(
        ANYMAIL={"MAILTRAP_API_TOKEN": "from-dict", "WEBHOOK_SECRET": ["u:p"]},
        ANYMAIL_MAILTRAP_API_TOKEN="prefixed",
        MAILTRAP_API_TOKEN="bare",
        ANYMAIL_MAILTRAP_SANDBOX_ID="7",
        MAILTRAP_API_URL="http://127.0.0.1:2/api/",
    )

    settings = Settings.from_django(django, environ={})

    assert settings.api_token == "from-dict"
    assert settings.sandbox_id == "7"
    assert settings.base_url == "http://127.0.0.1:2/api/"
    assert settings.webhook_secret == ("u:p",)


def test_repr_never_shows_secrets() -> None:
    settings = Settings(
        api_token="tok-SECRET-1", tracking_secret="sig-SECRET-2", webhook_secret=("u:SECRET-3",)
    )

    text = repr(settings)

    assert "SECRET" not in text
    assert "api_token='***'" in text


@pytest.mark.parametrize(
    ("name", "value", "setting"),
    [
        ("MAILQUEUE_RATE_LIMIT", "fast", "rate_limit"),
        ("MAILQUEUE_COALESCE", "maybe", "coalesce"),
        ("MAILQUEUE_STATUS_TTL", "a month", "status_ttl"),
        ("MAILQUEUE_WEBHOOK_SECRET", "no-colon", "webhook_secret"),
        ("MAILQUEUE_RECONCILE_SETTLE", "nan", "reconcile_settle"),
        ("MAILQUEUE_READ_TIMEOUT", "inf", "read_timeout"),
    ],
)
def test_malformed_values_raise_configuration_error_naming_the_setting(
    name: str, value: str, setting: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings.from_env({name: value})

    assert info.value.setting == setting


def test_token_key_is_stable_and_never_the_token() -> None:
    one = Settings(api_token="tok-abc")

    assert one.token_key == Settings(api_token="tok-abc").token_key
    assert one.token_key != Settings(api_token="tok-xyz").token_key
    assert "tok-abc" not in one.token_key


def test_sending_without_a_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="MAILTRAP_API_TOKEN"):
        Settings().require_token()


@pytest.mark.parametrize(
    ("text", "amount", "period"),
    [
        ("150/10s", 150, 10.0),
        ("150/10", 150, 10.0),
        ("10/s", 10, 1.0),
        ("600/m", 600, 60.0),
        ("5/500ms", 5, 0.5),
    ],
)
def test_rate_limit_parsing(text: str, amount: int, period: float) -> None:
    assert RateLimit.parse(text) == RateLimit(amount, period)
