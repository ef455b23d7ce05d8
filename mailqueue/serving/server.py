"""Waitress with the bounds a server facing the internet needs.

Waitress alone keeps a connection as long as bytes trickle in (its timeout
is for idleness), accepts up to 100 connections from anyone, and reads a
request's whole body before the application can look at its credentials.
Here, on top of waitress' own idle timeout and body limit:

- a request must arrive whole (request line, headers and body) within
  ``request_timeout`` seconds of its first byte, or its connection is closed;
- one client address holds at most ``connections_per_client`` connections
  (more are answered 503 and closed), all clients ``connections`` together
  (waitress stops accepting until one closes);
- once a request's headers are in and before its body is read, ``screen``
  sees them (method, path, headers, client address in WSGI names) and may
  refuse the request with an answer of its own, e.g. a 401 for wrong
  credentials: the body is then never read, and the connection is closed;
- the bodies being received or served together hold at most ``body_budget``
  bytes (a chunked body counts as ``max_body``): a request that would pass it
  is answered 503 before its body is read. Waitress keeps bodies in memory
  up to its ``inbuf_overflow``, and a container's memory is finite.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import Error

__all__ = ["Limits", "Refusal", "Screen", "create_guarded_server"]


class Refusal(Protocol):
    """An answer given instead of reading a request's body."""

    @property
    def status_line(self) -> str: ...

    @property
    def headers(self) -> list[tuple[str, str]]: ...

    @property
    def body(self) -> bytes: ...


Screen = Callable[[Mapping[str, str]], "Refusal | None"]


class _Answer(NamedTuple):
    status_line: str
    headers: list[tuple[str, str]]
    body: bytes


_NO_ROOM = _Answer(
    "503 Service Unavailable",
    [("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "5")],
    b"too many request bodies in progress, retry later\n",
)
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 30\r\n"
    b"Connection: close\r\n\r\ntoo many connections from you\n"
)


@dataclass(frozen=True)
class Limits:
    """How much one server takes; sizes in bytes, times in seconds."""

    max_body: int
    request_timeout: float = 15.0
    idle_timeout: int = 30
    connections: int = 100
    connections_per_client: int = 20
    threads: int = 4
    # None: four bodies of the largest size.
    body_budget: int | None = None

    @property
    def bodies_at_most(self) -> int:
        """The bytes of request bodies the server holds at once, at most."""
        return self.body_budget if self.body_budget is not None else 4 * self.max_body


class _Refused(Error):  # type: ignore[misc]
    def __init__(self, refusal: Refusal) -> None:
        super().__init__("")
        self.refusal = refusal

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        return self.refusal.status_line, list(self.refusal.headers), self.refusal.body


class _ScreenedParser(HTTPRequestParser):  # type: ignore[misc]
    completed: bool
    error: Any

    def __init__(
        self,
        adj: Adjustments,
        *,
        screen: Screen | None,
        client: str,
        reserve: Callable[[int], bool],
    ) -> None:
        super().__init__(adj)
        self.started = time.monotonic()
        self._screen = screen
        self._client = client
        self._reserve = reserve
        self._screened = False
        # Bytes of the server's body budget this request holds.
        self.reserved = 0

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.headers_finished and not self._screened:
            self._screened = True
            # Only a request whose body is still to come: one without a body
            # goes to the application, which checks it all the same.
            if not self.completed and self.error is None:
                refusal = self._screen(self._environ()) if self._screen is not None else None
                if refusal is None:
                    size = self._body_size()
                    if self._reserve(size):
                        self.reserved = size
                    else:
                        refusal = _NO_ROOM
                if refusal is not None:
                    self.error = _Refused(refusal)
                    self.completed = True
        return consumed

    def _body_size(self) -> int:
        length = int(self.content_length or 0)
        return length if length > 0 else int(self.adj.max_request_body_size)

    def _environ(self) -> dict[str, str]:
        environ = {
            "REQUEST_METHOD": self.command,
            "PATH_INFO": self.path,
            "REMOTE_ADDR": self._client,
        }
        for name, value in self.headers.items():
            key = name if name in ("CONTENT_LENGTH", "CONTENT_TYPE") else "HTTP_" + name
            environ[key] = value
        return environ


class _GuardedChannel(HTTPChannel):  # type: ignore[misc]
    def __init__(
        self, server: Any, sock: Any, addr: Any, adj: Adjustments, map: Any = None
    ) -> None:
        super().__init__(server, sock, addr, adj, map)
        client = str(addr[0]) if isinstance(addr, tuple) and addr else "unknown"
        self.client = client
        self.parser_class = functools.partial(
            _ScreenedParser, screen=server.screen, client=client, reserve=server.reserve
        )
        same = sum(1 for channel in server.active_channels.values() if channel.client == client)
        if same > server.limits.connections_per_client:
            server.refused_connections += 1
            self._refuse()

    def service(self) -> None:
        request = self.requests[0]
        try:
            super().service()
        finally:
            # The request is answered and its body dropped.
            self.server.release(request)

    def del_channel(self, map: Any = None) -> None:
        super().del_channel(map)
        for request in [self.request, *self.requests]:
            if request is not None:
                self.server.release(request)

    def _refuse(self) -> None:
        with self.outbuf_lock:
            self.outbufs[-1].append(_BUSY)
            self.current_outbuf_count += len(_BUSY)
            self.total_outbufs_len += len(_BUSY)
        self.close_when_flushed = True


class _GuardedServer(TcpWSGIServer):  # type: ignore[misc]
    channel_class = _GuardedChannel

    def __init__(
        self, app: Any, *args: Any, screen: Screen | None, limits: Limits, **kw: Any
    ) -> None:
        self.screen = screen
        self.limits = limits
        self.refused_connections = 0
        self.timed_out = 0
        self.bodies_held = 0
        self._bodies_lock = threading.Lock()
        super().__init__(app, *args, **kw)

    def reserve(self, size: int) -> bool:
        """Take ``size`` bytes of the body budget; False when they are not there."""
        with self._bodies_lock:
            if self.bodies_held + size > self.limits.bodies_at_most:
                return False
            self.bodies_held += size
            return True

    def release(self, request: Any) -> None:
        """Give back what ``request`` holds of the body budget (once)."""
        with self._bodies_lock:
            size = getattr(request, "reserved", 0)
            request.reserved = 0
            self.bodies_held = max(self.bodies_held - size, 0)

    def maintenance(self, now: float) -> None:
        super().maintenance(now)
        cutoff = time.monotonic() - self.limits.request_timeout
        for channel in list(self.active_channels.values()):
            request = channel.request
            if channel.requests or request is None or request.completed:
                continue
            if request.started < cutoff:
                # Headers or body trickling in: a slow client holds a connection no longer.
                self.timed_out += 1
                channel.will_close = True


def create_guarded_server(
    app: Any,
    *,
    host: str,
    port: int,
    limits: Limits,
    screen: Screen | None = None,
    **adjustments: Any,
) -> Any:
    """A waitress server for ``app`` on ``host:port`` with ``limits``; call ``.run()``.

    ``adjustments`` are passed to waitress (``ident``, ``inbuf_overflow``, ...).
    """
    adj = Adjustments(
        host=host,
        port=port,
        threads=limits.threads,
        max_request_body_size=limits.max_body,
        connection_limit=limits.connections,
        channel_timeout=limits.idle_timeout,
        # How often the timeouts are checked: often enough that a slow
        # request is cut close to its deadline.
        cleanup_interval=1,
        **adjustments,
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict[int, Any] = {}
    servers = [
        _GuardedServer(
            app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo,
            screen=screen, limits=limits,
        )
        for sockinfo in adj.listen
    ]  # fmt: skip
    if len(servers) == 1:
        return servers[0]
    listening = [(server.effective_host, server.effective_port) for server in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)
