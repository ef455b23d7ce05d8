"""Two applications with their own key prefix share one Redis without seeing each other."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from mailqueue.client import Client
from mailqueue.errors import ConfigurationError
from mailqueue.settings import Settings

MESSAGE = {
    "from_email": "shop@example.com",
    "to": ["alice@example.com"],
    "subject": "Your order",
    "text": "It ships today.",
}


def client(redis_url: str, prefix: str, published: list[dict[str, Any]]) -> Client:
    settings = Settings(broker_url=redis_url, api_token="t", key_prefix=prefix)
    return Client(settings, publish=published.append)


def test_two_prefixes_on_one_redis_keep_apart(redis_url: str, redis_client: redis.Redis) -> None:
    published: list[dict[str, Any]] = []
    shop, blog = client(redis_url, "shop", published), client(redis_url, "blog", published)

    shop_id = shop.enqueue(MESSAGE)
    blog_ids = blog.enqueue_many([MESSAGE, MESSAGE])

    names = [name.decode() for name in redis_client.scan_iter()]
    assert names and all(name.startswith(("{shop}:", "{blog}:")) for name in names)
    assert shop.get_status(blog_ids[0]) is None
    assert blog.get_status(shop_id) is None
    assert shop.outbox.waiting() == 1
    assert blog.outbox.waiting() == 2
    # Each application's first enqueue on an idle fleet wakes its own workers.
    assert len(published) == 2


def test_the_default_prefix_is_mq(redis_url: str, redis_client: redis.Redis) -> None:
    send_id = client(redis_url, "mq", []).enqueue(MESSAGE)

    assert redis_client.exists(f"{{mq}}:send:{send_id}")


@pytest.mark.parametrize("prefix", ["", "a{b}", "with space", "x" * 65])
def test_a_prefix_that_cannot_name_keys_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        Settings(key_prefix=prefix)

    assert info.value.setting == "key_prefix"


def test_the_prefix_comes_from_the_environment() -> None:
    assert Settings.from_env({"MAILQUEUE_KEY_PREFIX": "shop"}).key_prefix == "shop"
