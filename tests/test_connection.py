"""The Redis boundary: URL parsing, masking, the client factory and error translation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import mailqueue
from mailqueue import BrokerUnavailable, ConfigurationError, Settings
from mailqueue.celery_app import celery_config
from mailqueue.core.urls import SOCKET_CONNECT_TIMEOUT, SOCKET_TIMEOUT
from mailqueue.store.connection import (
    SentinelTarget,
    celery_broker,
    connect,
    connect_probe,
    mask_url,
    parse_sentinel_url,
    redis_errors,
)
from mailqueue.testing.redis_server import RedisServer, free_port

SECRET = "s3cr3t-p4ss"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "redis+sentinel://h1:26379,h2:26380/mymaster",
            SentinelTarget(sentinels=(("h1", 26379), ("h2", 26380)), master_name="mymaster"),
        ),
        (
            "redis+sentinel://:pw@h1:5000/mymaster/3",
            SentinelTarget(sentinels=(("h1", 5000),), master_name="mymaster", db=3, password="pw"),
        ),
        (
            "redis+sentinel://app:p%40ss%3Aword@h1/primary",
            SentinelTarget(
                sentinels=(("h1", 26379),),
                master_name="primary",
                username="app",
                password="p@ss:word",
            ),
        ),
        (
            "redis+sentinel://[::1]:5000,h2/m?sentinel_password=sp&sentinel_username=watch",
            SentinelTarget(
                sentinels=(("::1", 5000), ("h2", 26379)),
                master_name="m",
                sentinel_username="watch",
                sentinel_password="sp",
            ),
        ),
        (
            "REDIS+SENTINEL://h1:1/m/",
            SentinelTarget(sentinels=(("h1", 1),), master_name="m"),
        ),
    ],
)
def test_sentinel_urls_parse_into_sentinels_master_db_and_both_credentials(
    url: str, expected: SentinelTarget
) -> None:
    assert parse_sentinel_url(url) == expected


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel://h1:26379", "master name is missing"),
        ("redis+sentinel://h1:26379/", "master name is missing"),
        ("redis+sentinel:///mymaster", "no sentinel"),
        ("redis+sentinel://h1:port/mymaster", "no valid port"),
        ("redis+sentinel://h1:70000/mymaster", "no valid port"),
        ("redis+sentinel://h1/mymaster/zero", "/MASTER_NAME/DB"),
        ("redis+sentinel://h1/mymaster/0/extra", "/MASTER_NAME/DB"),
        ("redis+sentinel://h1/mymaster?password=x", "unknown option"),
    ],
)
def test_malformed_sentinel_urls_say_what_is_wrong(url: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_sentinel_url(url)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        (f"redis://:{SECRET}@host:6379/0", "redis://***@host:6379/0"),
        (f"redis://app:{SECRET}@host/2", "redis://***@host/2"),
        (f"rediss://app:{SECRET}@host:6380", "rediss://***@host:6380"),
        (f"redis://{SECRET}@host", "redis://***@host"),
        (f"unix://app:{SECRET}@/run/redis.sock?db=1", "unix://***@/run/redis.sock?db=1"),
        (
            f"unix:///run/redis.sock?password={SECRET}&db=1",
            "unix:///run/redis.sock?password=***&db=1",
        ),
        (
            f"redis+sentinel://:{SECRET}@h1:1,h2:2/m/0?sentinel_password={SECRET}",
            "redis+sentinel://***@h1:1,h2:2/m/0?sentinel_password=***",
        ),
        (
            f"sentinel://:{SECRET}@h1:1/0;sentinel://:{SECRET}@h2:2/0",
            "sentinel://***@h1:1/0;sentinel://***@h2:2/0",
        ),
        (f"amqp://guest:{SECRET}@rabbit//", "amqp://***@rabbit//"),
        (f"redis://user:p@ss{SECRET}@host/0", "redis://***@host/0"),
    ],
)
def test_mask_url_hides_user_and_password_and_keeps_where(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert SECRET not in mask_url(url)


@pytest.mark.parametrize(
    "url",
    [f"redis://app:{SECRET}@host:6379/0", f"redis+sentinel://:{SECRET}@h1:1/m?sentinel_password=x"],
)
def test_settings_repr_shows_no_redis_password(url: str) -> None:
    settings = Settings(broker_url=url, redis_url=url)

    assert SECRET not in repr(settings)
    assert "***@" in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/0",
        "rediss://user:pw@h:6380/1",
        "unix:///run/redis.sock?db=2",
        "redis+sentinel://h1:1,h2:2/m",
    ],
)
def test_settings_accept_every_redis_url_form(url: str) -> None:
    assert Settings(redis_url=url).status_redis_url == url
    assert Settings(broker_url=url).status_redis_url == url


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"redis_url": "http://h:6379/0"}, "redis_url"),
        ({"redis_url": "localhost:6379"}, "redis_url"),
        ({"redis_url": "redis+sentinel://h1:1"}, "redis_url"),
        ({"broker_url": "redis+sentinel://h1:1/"}, "broker_url"),
        ({"redis_min_replicas": -1}, "redis_min_replicas"),
    ],
)
def test_bad_redis_settings_are_refused_naming_the_setting(
    changes: dict[str, object], setting: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(**changes)  # type: ignore[arg-type]

    assert caught.value.setting == setting


def test_a_bad_url_is_refused_without_echoing_its_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings(redis_url=f"http://app:{SECRET}@h/0")

    assert SECRET not in str(caught.value)


def test_a_non_redis_broker_is_celerys_business() -> None:
    settings = Settings(broker_url="amqp://guest:guest@rabbit//", redis_url="redis://h/0")

    assert celery_config(settings)["broker_url"] == "amqp://guest:guest@rabbit//"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (Settings(), 0),
        (Settings(redis_url="redis+sentinel://h1:1/m"), 1),
        (Settings(broker_url="redis+sentinel://h1:1/m"), 1),
        (Settings(redis_url="redis+sentinel://h1:1/m", redis_min_replicas=0), 0),
        (Settings(redis_min_replicas=2), 2),
    ],
)
def test_min_replicas_defaults_to_one_under_sentinel_only(
    settings: Settings, expected: int
) -> None:
    assert settings.min_replicas == expected


def test_min_replicas_is_read_from_the_environment() -> None:
    settings = Settings.from_env({"MAILQUEUE_REDIS_MIN_REPLICAS": "2"})

    assert settings.redis_min_replicas == 2
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({"MAILQUEUE_REDIS_MIN_REPLICAS": "two"})
    assert caught.value.setting == "redis_min_replicas"


def test_sentinel_broker_becomes_celerys_sentinel_transport() -> None:
    broker = celery_broker(
        "redis+sentinel://app:p%40ss@h1:5000,[::1]:5001/primary/2?sentinel_password=sp"
    )

    assert broker["broker_url"] == "sentinel://app:p%40ss@h1:5000/2"
    assert broker["broker_transport"] == "mailqueue.tasks.sentinel_broker:SentinelTransport"
    options = broker["broker_transport_options"]
    assert options["sentinels"] == [["h1", 5000], ["::1", 5001]]
    assert options["master_name"] == "primary"
    assert options["sentinel_kwargs"]["password"] == "sp"
    assert "username" not in options["sentinel_kwargs"]


def test_other_brokers_pass_unchanged() -> None:
    assert celery_broker("redis://h:6379/0") == {
        "broker_url": "redis://h:6379/0",
        "broker_transport": None,
        "broker_transport_options": {},
    }


def test_celery_config_keeps_its_transport_options_beside_the_sentinel_ones() -> None:
    config = celery_config(Settings(broker_url="redis+sentinel://h1:1/m", visibility_timeout=90))

    assert config["broker_url"] == "sentinel://h1:1/0"
    assert config["broker_transport_options"]["master_name"] == "m"
    assert config["broker_transport_options"]["visibility_timeout"] == 90


# -- the client factory against a real server --------------------------------


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """A private server with an ACL user and a unix socket."""
    with RedisServer(unix_socket=True) as server:
        admin = redis.Redis.from_url(server.url)
        admin.acl_setuser(
            "app", enabled=True, passwords=[f"+{SECRET}"], keys="*", commands=["+@all"]
        )
        admin.close()
        yield server


def test_connect_speaks_as_an_acl_user(acl_server: RedisServer) -> None:
    client = connect(f"redis://app:{SECRET}@127.0.0.1:{acl_server.port}/0")

    assert client.acl_whoami() in ("app", b"app")
    client.close()


def test_connect_reaches_a_unix_socket(acl_server: RedisServer) -> None:
    client = connect(f"unix://{acl_server.socket_path}?db=1")

    client.set("k", "v")
    assert client.get("k") == b"v"
    assert redis.Redis(port=acl_server.port, db=1).get("k") == b"v"
    client.close()


def test_connect_sets_the_bounded_timeouts_once(acl_server: RedisServer) -> None:
    client = connect(acl_server.url)

    kwargs = client.connection_pool.connection_kwargs
    assert kwargs["socket_connect_timeout"] == SOCKET_CONNECT_TIMEOUT
    assert kwargs["socket_timeout"] == SOCKET_TIMEOUT
    client.close()


def test_a_dead_or_frozen_redis_costs_a_producer_one_timeout_under_five_seconds(
    acl_server: RedisServer,
) -> None:
    # A web request can wait about 5 s: one connect or read timeout, never retried.
    client = connect(acl_server.url)
    connection = client.connection_pool.make_connection()

    assert isinstance(connection, redis.connection.AbstractConnection)
    assert connection.retry.get_retries() == 0
    assert max(SOCKET_CONNECT_TIMEOUT, SOCKET_TIMEOUT) < 5.0
    connection.disconnect()
    client.close()


def test_a_probe_client_gives_up_at_once_and_also_takes_sentinel_urls(
    acl_server: RedisServer,
) -> None:
    probe = connect_probe(f"redis://127.0.0.1:{free_port()}/0")
    sentinel_probe = connect_probe(f"redis+sentinel://127.0.0.1:{free_port()}/mymaster")

    with pytest.raises(redis.ConnectionError):
        probe.ping()
    with pytest.raises(redis.ConnectionError):
        sentinel_probe.ping()
    assert probe.connection_pool.connection_kwargs["socket_timeout"] < SOCKET_TIMEOUT
    assert connect_probe(acl_server.url).ping() is True


def test_a_wrong_password_becomes_broker_unavailable_without_the_password(
    acl_server: RedisServer,
) -> None:
    url = f"redis://app:wrong-{SECRET}@127.0.0.1:{acl_server.port}/0"

    with pytest.raises(BrokerUnavailable) as caught, redis_errors(url, doing="enqueue"):
        connect(url).ping()

    message = str(caught.value)
    assert SECRET not in message
    assert message.startswith(f"cannot enqueue: Redis at redis://***@127.0.0.1:{acl_server.port}/0")
    assert isinstance(caught.value.__cause__, redis.AuthenticationError)


def test_a_closed_port_becomes_broker_unavailable() -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{free_port()}/0"

    with (
        pytest.raises(BrokerUnavailable, match="ConnectionError") as caught,
        redis_errors(url, doing="read a status"),
    ):
        connect(url).get("anything")

    assert SECRET not in str(caught.value)


def test_sentinels_that_cannot_be_reached_become_broker_unavailable() -> None:
    url = f"redis+sentinel://:{SECRET}@127.0.0.1:{free_port()}/mymaster"

    with (
        pytest.raises(BrokerUnavailable, match="mymaster") as caught,
        redis_errors(url, doing="enqueue"),
    ):
        connect(url).ping()

    assert SECRET not in str(caught.value)


def test_errors_other_than_redis_ones_pass_through() -> None:
    with pytest.raises(KeyError), redis_errors("redis://h/0", doing="enqueue"):
        raise KeyError("not ours")


def test_celery_connects_through_the_sentinel_transport_for_a_sentinel_broker() -> None:
    from celery import Celery

    from mailqueue.tasks.sentinel_broker import SentinelChannel, SentinelTransport

    app = Celery("probe")
    app.conf.update(celery_config(Settings(broker_url="redis+sentinel://127.0.0.1:1,h2:2/m/3")))
    connection = app.connection_for_write()

    # Building the transport opens nothing.
    assert isinstance(connection.transport, SentinelTransport)
    assert connection.transport.Channel is SentinelChannel
    assert connection.alt == []  # no URL list to switch through (and off this transport)
    assert connection.transport_options is not None
    assert connection.transport_options["sentinels"] == [["127.0.0.1", 1], ["h2", 2]]
    assert connection.virtual_host == "3"


def test_reconfiguring_sends_wake_ups_to_the_new_broker() -> None:
    from mailqueue.celery_app import app

    mailqueue.configure(Settings(broker_url="redis+sentinel://127.0.0.1:1/m"))
    with app.producer_or_acquire() as producer:  # builds the pools; connects nothing
        assert producer.connection.transport_cls.endswith("SentinelTransport")

    mailqueue.configure(Settings(broker_url="redis://127.0.0.1:2/0"))
    with app.producer_or_acquire() as producer:
        assert producer.connection.transport_cls == "redis"
        assert producer.connection.port == 2
