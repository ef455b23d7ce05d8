"""Redis URLs read without connecting: schemes, checks, Sentinel URLs and masking (pure)."""

from __future__ import annotations

import pytest

from mailqueue.core.urls import (
    DEFAULT_SENTINEL_PORT,
    check_url,
    is_sentinel,
    mask_url,
    parse_sentinel_url,
    scheme_of,
)
from mailqueue.errors import ConfigurationError


def test_the_scheme_is_lower_cased_and_empty_without_one() -> None:
    assert scheme_of("REDIS://host") == "redis"
    assert scheme_of("host:6379") == ""
    assert is_sentinel("redis+sentinel://h:1/m")
    assert not is_sentinel("redis://h")


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "rediss://user:pass@host:6380/1",
        "unix:///run/redis@main.sock?db=2",
        "redis+sentinel://h1:26379,h2/mymaster/3",
    ],
)
def test_accepted_urls_pass_the_check(url: str) -> None:
    check_url(url, "redis_url")


def test_another_scheme_is_refused_naming_the_variable_and_masking_the_password() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_url("amqp://guest:s3cret@host//", "broker_url", "MAILQUEUE_BROKER_URL")

    assert "MAILQUEUE_BROKER_URL must start with one of" in str(info.value)
    assert info.value.setting == "broker_url"
    assert "s3cret" not in str(info.value)


def test_a_password_holding_an_unencoded_slash_is_refused_without_quoting_it() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_url("redis://:pa/ss@host:6379", "redis_url")

    assert "percent-encode" in str(info.value)
    assert "pa/ss" not in str(info.value) and "ss@" not in str(info.value)


def test_a_query_value_holding_an_at_sign_is_no_spilled_password() -> None:
    check_url("redis+sentinel://h:1/m?sentinel_password=a@b", "redis_url")


def test_a_malformed_sentinel_url_says_what_is_wrong() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_url("redis+sentinel://h:1", "redis_url")

    assert "the master name is missing" in str(info.value)


def test_a_malformed_plain_url_is_refused_with_the_password_masked() -> None:
    with pytest.raises(ConfigurationError) as info:
        check_url("redis://:hunter2@host:port/0", "redis_url")

    assert "malformed" in str(info.value) and "hunter2" not in str(info.value)


def test_a_sentinel_url_gives_its_sentinels_master_db_and_both_credentials() -> None:
    target = parse_sentinel_url(
        "redis+sentinel://app:pw@h1:26380,[::1]:1,h3/my%20master/4"
        "?sentinel_password=sp&sentinel_username=su"
    )

    assert target.sentinels == (("h1", 26380), ("::1", 1), ("h3", DEFAULT_SENTINEL_PORT))
    assert (target.master_name, target.db) == ("my master", 4)
    assert (target.username, target.password) == ("app", "pw")
    assert target.sentinel_kwargs()["username"] == "su"
    assert target.sentinel_kwargs()["password"] == "sp"
    assert "pw" not in repr(target) and "sp" not in repr(target)


def test_a_lone_word_before_the_at_sign_is_a_password() -> None:
    target = parse_sentinel_url("redis+sentinel://secret@h:1/m")

    assert (target.username, target.password) == (None, "secret")
    assert "password" not in target.sentinel_kwargs()


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("redis://h:1/m", "not a redis+sentinel:// URL"),
        ("redis+sentinel:///m", "no sentinel host:port"),
        ("redis+sentinel://h:1/m/x", "/MASTER_NAME or /MASTER_NAME/DB"),
        ("redis+sentinel://h:1/m/1/2", "/MASTER_NAME or /MASTER_NAME/DB"),
        ("redis+sentinel://h:99999/m", "no valid port"),
        ("redis+sentinel://:1/m", "has no host"),
        ("redis+sentinel://h:1/m?socket_timeout=1", "unknown option 'socket_timeout'"),
    ],
)
def test_a_bad_sentinel_url_raises_value_error_saying_why(url: str, words: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_sentinel_url(url)

    assert words in str(info.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://user:pw@host:6379/0", "redis://***@host:6379/0"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://:pa/ss@host", "redis://***@host"),
        (
            "redis+sentinel://h:1/m?sentinel_password=sp&x=1",
            "redis+sentinel://h:1/m?sentinel_password=***&x=1",
        ),
        ("redis://a:1@h1;redis://b:2@h2", "redis://***@h1;redis://***@h2"),
        ("host?password=pw", "host?password=***"),
    ],
)
def test_masking_hides_credentials_and_password_query_values(url: str, masked: str) -> None:
    assert mask_url(url) == masked
