"""Celery's Redis Sentinel transport, made to live through a failover.

``connection.celery_broker`` selects it for a ``redis+sentinel://`` broker.
Two things differ from kombu's own ``sentinel://`` transport:

- Every sentinel comes from the ``sentinels`` transport option, and the
  broker URL names one. kombu reads the sentinels from a ``;``-separated
  URL list instead, and on a connection error it then switches to the next
  URL, which also swaps this transport back for its own.
- A channel whose connection kombu has already closed answers with a
  connection error. Around a failover kombu still touches such a channel
  (the late acknowledgement of a drain cut off by the connection loss, the
  restore of unacknowledged messages on close); as it stands that raises
  AttributeError, which stops the worker, whereas a connection error is
  logged and the worker reconnects. Nothing is lost by it: an unacknowledged
  wake-up comes back after the visibility timeout, and a drain's work is in
  mailqueue's outbox, not in the wake-up.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from redis.sentinel import Sentinel

from mailqueue.store.connection import check_master_name

__all__ = ["SentinelChannel", "SentinelTransport"]

class SentinelChannel(kombu_redis.SentinelChannel):  # type: ignore[misc]
    """A Sentinel channel that knows every sentinel and fails cleanly once closed."""

    from_transport_options = (*kombu_redis.SentinelChannel.from_transport_options, "sentinels")
    sentinels: Sequence[Sequence[Any]] = ()

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection is None or self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        params: dict[str, Any] = super()._connparams(asynchronous)  # type: ignore[misc]
        return params

    def _sentinel_managed_pool(self, asynchronous: bool = False) -> Any:
        params = self._connparams(asynchronous)
        fallback = (params.pop("host"), params.pop("port"))
        credentials = {name: params[name] for name in ("username", "password") if name in params}
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            [(str(host), int(port)) for host, port in self.sentinels] or [fallback],
            min_other_sentinels=getattr(self, "min_other_sentinels", 0),
            sentinel_kwargs=getattr(self, "sentinel_kwargs", None),
            **params,
        )
        # Kept so that closing the channel also closes the sentinel connections.
        if asynchronous:
            self._async_sentinel_manager = sentinel
        else:
            self._sentinel_manager = sentinel
        master_name = check_master_name({"master_name": getattr(self, "master_name", None)})
        master = sentinel.master_for(  # type: ignore[no-untyped-call]
            master_name, redis.Redis, **credentials
        )
        return master.connection_pool


class SentinelTransport(kombu_redis.SentinelTransport):  # type: ignore[misc]
    """kombu's Sentinel transport with :class:`SentinelChannel`."""

    Channel = SentinelChannel
