"""The stores' edge: a Redis error leaves a store only as ``BrokerUnavailable``.

Every method of a store that talks to Redis carries ``@translated("...")``;
callers (the producer, the drain, the CLI, the webhook app) then handle one
mailqueue error, whose message names the masked URL and what was being done.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Concatenate, ParamSpec, Protocol, TypeVar

from mailqueue.store.connection import redis_errors

if TYPE_CHECKING:
    import redis

    from mailqueue.store.keys import Keys

__all__ = ["AtRedis", "RedisStore", "lua_script", "translated"]

P = ParamSpec("P")
R = TypeVar("R")


class AtRedis(Protocol):
    """A store: it knows the URL of the Redis it talks to."""

    url: str


class RedisStore:
    """A store over one Redis client and its key space; ``url`` names that Redis in errors.

    Every store is built the same way: ``Kind(client, keys, *, <its options>, url=...)``,
    by ``Stores`` (``store/stores.py``), which hands a store the other stores it uses.
    """

    def __init__(self, client: redis.Redis, keys: Keys, *, url: str = "redis") -> None:
        self.redis = client
        self.keys = keys
        self.url = url


S = TypeVar("S", bound=AtRedis)


def translated(
    doing: str,
) -> Callable[[Callable[Concatenate[S, P], R]], Callable[Concatenate[S, P], R]]:
    """Make a store method raise BrokerUnavailable ("cannot ``doing``: ...") for a RedisError."""

    def decorate(method: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
        @functools.wraps(method)
        def wrapper(store: S, /, *args: P.args, **kwargs: P.kwargs) -> R:
            with redis_errors(store.url, doing=doing):
                return method(store, *args, **kwargs)

        return wrapper

    return decorate


@functools.cache
def lua_script(name: str) -> str:
    """The text of ``store/lua/<name>.lua``, read once per process (package data)."""
    return (resources.files("mailqueue.store") / "lua" / f"{name}.lua").read_text("utf-8")
