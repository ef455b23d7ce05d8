"""Routing: a message's stream and account, resolved against a worker's settings."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from mailqueue import ConfigurationError, Settings, ValidationError, build_payload
from mailqueue.core.message import normalize_message
from mailqueue.core.routing import resolve_route
from mailqueue.settings import Account, RateLimit

MESSAGE = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Hi",
    "text": "Hello",
}


def tables(**accounts: dict[str, str]) -> Any:
    """Account tables as plain mappings, as the environment and Django settings give them."""
    return accounts


def test_bulk_defaults_to_mailtraps_bulk_host_with_the_api_token() -> None:
    route = resolve_route(Settings(api_token="tok"), stream="bulk")

    assert route.base_url == "https://bulk.api.mailtrap.io/api/"
    assert route.token == "tok"
    assert route.endpoint("batch") == "batch"


def test_transactional_is_the_default_stream() -> None:
    route = resolve_route(Settings(api_token="tok"))

    assert route.stream == "transactional"
    assert route.base_url == "https://send.api.mailtrap.io/api/"


def test_bulk_url_and_token_settings_apply_to_bulk_only() -> None:
    settings = Settings(
        api_token="tok", bulk_api_token="bulk-tok", bulk_api_url="http://127.0.0.1:9/bulk/api"
    )

    bulk = resolve_route(settings, stream="bulk")
    transactional = resolve_route(settings, stream="transactional")

    assert (bulk.base_url, bulk.token) == ("http://127.0.0.1:9/bulk/api/", "bulk-tok")
    assert (transactional.base_url, transactional.token) == (
        "https://send.api.mailtrap.io/api/",
        "tok",
    )
    assert bulk.limiter_key != transactional.limiter_key


def test_streams_sharing_a_token_share_one_limiter_key() -> None:
    settings = Settings(api_token="tok")

    bulk = resolve_route(settings, stream="bulk")
    transactional = resolve_route(settings)

    assert bulk.limiter_key == transactional.limiter_key == settings.token_key
    assert bulk.target != transactional.target
    assert "tok" not in bulk.limiter_key


@pytest.mark.parametrize("stream", ["transactional", "bulk"])
def test_with_a_sandbox_id_both_streams_go_to_the_sandbox(stream: str) -> None:
    settings = Settings(api_token="tok", bulk_api_token="bulk-tok", sandbox_id="42")

    route = resolve_route(settings, stream=stream)  # type: ignore[arg-type]

    assert route.base_url == "https://sandbox.api.mailtrap.io/api/"
    assert route.endpoint("send") == "send/42"
    assert route.endpoint("batch") == "batch/42"
    assert route.token == "tok"


def test_an_account_has_its_own_token_urls_and_limit() -> None:
    settings = Settings(
        api_token="tok",
        api_url="http://127.0.0.1:1/api/",
        accounts={
            "eu": Account(
                name="eu",
                api_token="eu-tok",
                bulk_api_url="http://127.0.0.1:2/bulk/",
                rate_limit=RateLimit(50, 10.0),
            )
        },
    )

    transactional = resolve_route(settings, account="eu")
    bulk = resolve_route(settings, stream="bulk", account="eu")

    assert (transactional.token, transactional.base_url) == ("eu-tok", "http://127.0.0.1:1/api/")
    # The account's own token sends its bulk mail too, not the top-level one.
    assert (bulk.token, bulk.base_url) == ("eu-tok", "http://127.0.0.1:2/bulk/")
    assert bulk.rate_limit == RateLimit(50, 10.0)
    assert resolve_route(settings).rate_limit == RateLimit(150, 10.0)


def test_an_account_may_set_only_a_separate_bulk_token() -> None:
    settings = Settings(
        api_token="tok",
        bulk_api_token="top-bulk",
        accounts=tables(news={"BULK_API_TOKEN": "news-bulk"}),
    )

    assert resolve_route(settings, account="news").token == "tok"
    assert resolve_route(settings, stream="bulk", account="news").token == "news-bulk"


def test_a_workers_sandbox_id_catches_account_mail_too() -> None:
    settings = Settings(
        api_token="tok", sandbox_id="7", accounts=tables(eu={"api_token": "eu-tok"})
    )

    route = resolve_route(settings, stream="bulk", account="eu")

    assert route.endpoint("send") == "send/7"
    assert route.token == "eu-tok"


def test_an_unknown_account_is_a_configuration_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match="'nope'"):
        resolve_route(Settings(api_token="tok"), account="nope")


def test_a_missing_token_names_the_setting() -> None:
    with pytest.raises(ConfigurationError, match="MAILTRAP_API_TOKEN"):
        resolve_route(Settings())
    settings = Settings(accounts=tables(eu={"api_url": "http://127.0.0.1:1/"}))
    with pytest.raises(ConfigurationError, match="MAILQUEUE_ACCOUNT_EU_API_TOKEN"):
        resolve_route(settings, account="eu")


def test_route_repr_never_shows_the_token() -> None:
    assert "tok-SECRET" not in repr(resolve_route(Settings(api_token="tok-SECRET")))


# -- settings -------------------------------------------------------------------


def test_bulk_settings_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "MAILTRAP_API_TOKEN": "tok",
            "MAILTRAP_BULK_API_URL": "http://127.0.0.1:3/api/",
            "ANYMAIL_MAILTRAP_BULK_API_TOKEN": "bulk-tok",
        }
    )

    assert settings.bulk_api_url == "http://127.0.0.1:3/api/"
    assert settings.bulk_api_token == "bulk-tok"


def test_bulk_settings_from_djangos_anymail_dict() -> None:
    django = SimpleNamespace(
        ANYMAIL={"MAILTRAP_BULK_API_TOKEN": "from-dict", "MAILTRAP_BULK_API_URL": "http://h/api/"}
    )

    settings = Settings.from_django(django, environ={"MAILTRAP_BULK_API_TOKEN": "from-env"})

    assert settings.bulk_api_token == "from-dict"
    assert settings.bulk_api_url == "http://h/api/"


def test_accounts_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "MAILQUEUE_ACCOUNTS": "marketing, eu-west",
            "MAILQUEUE_ACCOUNT_MARKETING_API_TOKEN": "m-tok",
            "MAILQUEUE_ACCOUNT_MARKETING_RATE_LIMIT": "100/10s",
            "MAILQUEUE_ACCOUNT_EU_WEST_API_TOKEN": "eu-tok",
            "MAILQUEUE_ACCOUNT_EU_WEST_BULK_API_URL": "http://127.0.0.1:4/api/",
            "MAILQUEUE_ACCOUNT_EU_WEST_SANDBOX_ID": "9",
        }
    )

    assert sorted(settings.accounts) == ["eu-west", "marketing"]
    marketing = settings.accounts["marketing"]
    assert (marketing.api_token, marketing.rate_limit) == ("m-tok", RateLimit(100, 10.0))
    eu = settings.accounts["eu-west"]
    assert (eu.bulk_api_url, eu.sandbox_id) == ("http://127.0.0.1:4/api/", "9")


def test_accounts_from_a_django_dict() -> None:
    django = SimpleNamespace(
        MAILQUEUE_ACCOUNTS={"eu": {"API_TOKEN": "eu-tok", "BULK_API_TOKEN": "eu-bulk"}}
    )

    settings = Settings.from_django(django, environ={})

    assert settings.accounts["eu"].bulk_api_token == "eu-bulk"


@pytest.mark.parametrize(
    "environ",
    [
        {"MAILQUEUE_ACCOUNTS": "bad name"},
        {"MAILQUEUE_ACCOUNTS": "eu", "MAILQUEUE_ACCOUNT_EU_RATE_LIMIT": "fast"},
        {"MAILQUEUE_ACCOUNTS": "eu-1,EU_1"},
    ],
)
def test_malformed_accounts_raise_a_configuration_error(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        Settings.from_env(environ)


def test_an_unknown_account_setting_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="TOKEN_TYPO"):
        Settings(accounts=tables(eu={"TOKEN_TYPO": "x"}))


def test_repr_never_shows_account_or_bulk_tokens() -> None:
    settings = Settings(
        bulk_api_token="tok-SECRET-1", accounts=tables(eu={"api_token": "tok-SECRET-2"})
    )

    assert "SECRET" not in repr(settings)


# -- the message keys ---------------------------------------------------------------


def test_stream_and_account_are_routing_facts_not_payload() -> None:
    message = {**MESSAGE, "stream": "bulk", "account": "eu"}

    normalized = normalize_message(message, Settings())
    (call,) = build_payload(message)

    assert (normalized.stream, normalized.account) == ("bulk", "eu")
    assert "stream" not in call.json and "account" not in call.json


@pytest.mark.parametrize("stream", ["marketing", "", 1, ["bulk"]])
def test_an_unknown_stream_is_refused_naming_the_field(stream: object) -> None:
    with pytest.raises(ValidationError) as info:
        build_payload({**MESSAGE, "stream": stream})

    assert info.value.field == "stream"


@pytest.mark.parametrize("account", ["", "a b", "x" * 65, 7, {"name": "eu"}])
def test_a_malformed_account_is_refused_naming_the_field(account: object) -> None:
    with pytest.raises(ValidationError) as info:
        build_payload({**MESSAGE, "account": account})

    assert info.value.field == "account"


def test_a_producer_that_lists_accounts_refuses_an_unknown_one() -> None:
    settings = Settings(accounts=tables(eu={"api_token": "t"}))

    build_payload({**MESSAGE, "account": "eu"}, settings)
    with pytest.raises(ValidationError) as info:
        build_payload({**MESSAGE, "account": "us"}, settings)

    assert info.value.field == "account"
