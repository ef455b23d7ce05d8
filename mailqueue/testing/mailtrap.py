"""LocalMailtrap: a real HTTP server on loopback that speaks Mailtrap's send, batch and sandbox API.

For tests and demos without an account::

    with LocalMailtrap(rate_limit=(150, 10.0)) as mailtrap:
        settings = mailtrap.settings("redis://127.0.0.1:6379/0")
        ...
        assert mailtrap.accepted[0].recipients == ("alice@example.com",)

It serves both of Mailtrap's sending streams: ``url`` is the transactional
API (and the sandbox, on ``send/<inbox id>`` paths), ``bulk_url`` the bulk
stream; every accepted message records the ``stream`` it reached. One rate
limit window is kept per token, over both streams, as Mailtrap counts it;
``tokens`` adds tokens the server accepts besides ``token`` (several accounts).

It refuses what Mailtrap's published request schema refuses (see
:mod:`mailqueue.testing.validation`), in Mailtrap's shapes: a 400
``{"success": false, "errors": [...]}`` for a bad ``send`` or batch envelope, a
``{"success": false, "errors": [...]}`` item in a batch's ``responses`` for a bad
request, a 401 ``{"success": false, "errors": ["Unauthorized"]}`` for a wrong
token, a 400 for a batch body over 50 MB, and a 404 for a sandbox path whose
inbox id is not an int64 from 1.
It answers one message id per recipient (one per send on sandbox paths),
refuses recipients in the ``.invalid`` domain (so a test can make one request
of a batch fail), enforces a sliding-window rate limit, adds
latency, and injects faults: ``500``, ``503``, ``429``, ``reset`` (connection
closed, message not accepted), ``lost`` (message accepted, answer never sent),
``slow`` (accepted, answered after ``slow_seconds``), ``nonjson`` (an HTML 200),
and ``accepted-500`` / ``accepted-nonjson`` (accepted, then answered with a 500
or an HTML 200, as a proxy in front of Mailtrap may answer).

With ``ssl_context`` it speaks HTTPS (``url`` starts ``https://``), for clients
that only speak HTTPS, such as Mailtrap's own SDK (``api_host="127.0.0.1:PORT"``).

Each answer (status line, headers, body) goes out in a single write on a
TCP_NODELAY socket: writing headers and body separately stalls every keep-alive
request by tens of milliseconds on delayed ACKs. Measured on a 2-CPU machine:
2,000 sequential keep-alive POSTs take about 0.27 ms each from ``http.client``
and about 0.9 ms each from a ``requests.Session`` (client time included).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mailqueue.settings import Settings
from mailqueue.testing.email_logs import DEFAULT_DELAY, EmailLogs
from mailqueue.testing.running import Running
from mailqueue.testing.suppressions import RemoteSuppressions
from mailqueue.testing.validation import check_batch, check_batch_size, check_inbox_id, check_send

__all__ = ["FAULTS", "AcceptedMessage", "LocalMailtrap", "MailtrapStats"]

FAULTS = (
    "500",
    "503",
    "429",
    "reset",
    "lost",
    "slow",
    "nonjson",
    "accepted-500",
    "accepted-nonjson",
)

_PATH_RE = re.compile(r"^/api/(send|batch)(?:/([^/?]+))?/?(?:\?.*)?$")
_GENERAL_PREFIX = "/general/api/"
_BULK_PATH_RE = re.compile(r"^/bulk/api/(send|batch)/?(?:\?.*)?$")
_HTML_BODY = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass(frozen=True, slots=True)
class AcceptedMessage:
    """One message the server accepted (a single send, or one item of a batch)."""

    message_ids: tuple[str, ...]
    path: str  # relative to the API base URL: "send", "batch", "send/<inbox id>", ...
    recipients: tuple[str, ...]  # to, cc, bcc addresses, in that order
    payload: dict[str, Any]  # the request JSON; for a batch item, base merged with the item
    inbox_id: str | None = None
    batch_index: int | None = None
    stream: str = "transactional"  # "transactional", "bulk" or "sandbox"
    token: str | None = None  # which of the server's tokens sent it
    call: int = 0  # the request that carried it: messages of one batch call share it
    received_at: float = 0.0  # ``time.monotonic()`` when that request was accepted


@dataclass
class MailtrapStats:
    """Counters since start (or the last ``reset``)."""

    requests: int = 0
    connections: int = 0  # TCP connections opened: few means clients keep them alive
    by_path: Counter[str] = field(default_factory=Counter)
    by_status: Counter[int] = field(default_factory=Counter)
    rate_limited: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    messages: int = 0
    max_concurrency: int = 0
    # How many send or batch requests carried a message to each address,
    # whatever the answer: a fault or a rate limit counts too.
    by_recipient: Counter[str] = field(default_factory=Counter)

    def copy(self) -> MailtrapStats:
        return MailtrapStats(
            by_recipient=Counter(self.by_recipient),
            requests=self.requests,
            connections=self.connections,
            by_path=Counter(self.by_path),
            by_status=Counter(self.by_status),
            rate_limited=self.rate_limited,
            faults=Counter(self.faults),
            messages=self.messages,
            max_concurrency=self.max_concurrency,
        )


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    close: bool = False  # close the connection without writing anything
    delay: float = 0.0  # wait this long before answering


def _json_answer(status: int, data: object, headers: tuple[tuple[str, str], ...] = ()) -> _Answer:
    return _Answer(status, json.dumps(data).encode(), headers=headers)


def _failure(status: int, *errors: str) -> _Answer:
    return _json_answer(status, {"success": False, "errors": list(errors)})


class LocalMailtrap(Running):
    """A threaded Mailtrap API server on ``host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        *,
        token: str = "local-mailtrap-token",
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit: tuple[int, float] | None = None,
        retry_after: bool = False,
        latency: float = 0.0,
        fault_rates: Mapping[str, float] | None = None,
        seed: int = 0,
        tokens: Sequence[str] = (),
        logs_delay: float = DEFAULT_DELAY,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        for fault in fault_rates or {}:
            _check_fault(fault)
        self.token = token
        self.extra_tokens = tuple(tokens)
        self.ssl_context = ssl_context
        self.host = host
        self.port = port
        self.rate_limit = rate_limit
        self.retry_after = retry_after
        self.latency = latency
        self.fault_rates = dict(fault_rates or {})
        self.slow_seconds = 3.0
        self.accepted: list[AcceptedMessage] = []
        # Mailtrap's Email Logs, served on ``general_url`` (see email_logs.py).
        self.email_logs = EmailLogs(delay=logs_delay)
        # The account's suppression list, served on ``general_url`` too.
        self.suppressions = RemoteSuppressions()
        self._stats = MailtrapStats()
        self._lock = threading.Lock()
        self._calls = itertools.count(1)  # serial numbers of accepted requests
        self._rng = random.Random(seed)
        self._injected: deque[str] = deque()
        self._arrivals: dict[str, deque[float]] = {}
        self._active = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL, e.g. ``http://127.0.0.1:PORT/api/``."""
        return f"{self._scheme}://{self.host}:{self.port}/api/"

    @property
    def bulk_url(self) -> str:
        """The bulk stream's API base URL, e.g. ``http://127.0.0.1:PORT/bulk/api/``."""
        return f"{self._scheme}://{self.host}:{self.port}/bulk/api/"

    @property
    def _scheme(self) -> str:
        return "http" if self.ssl_context is None else "https"

    @property
    def general_url(self) -> str:
        """Mailtrap's general API base URL (Email Logs), e.g. ``http://127.0.0.1:PORT/general/api/``."""
        return f"{self._scheme}://{self.host}:{self.port}{_GENERAL_PREFIX}"

    def setting_values(self) -> dict[str, str]:
        """The settings that point every Mailtrap API at this server: its token, every base URL.

        ``api_url`` serves send and batch, and the sandbox when a sandbox id
        is set; ``bulk_api_url`` the bulk stream; ``general_api_url`` Email
        Logs and the suppression list. A set-up that leaves one out reaches
        the real Mailtrap there (with a real token: real people).
        """
        return {
            "api_token": self.token,
            "api_url": self.url,
            "bulk_api_url": self.bulk_url,
            "general_api_url": self.general_url,
        }

    def environment(self) -> dict[str, str]:
        """``setting_values`` as the environment variables a worker or the CLI reads."""
        return {f"MAILTRAP_{name.upper()}": value for name, value in self.setting_values().items()}

    def settings(self, broker_url: str, **overrides: Any) -> Settings:
        """Settings whose every Mailtrap API is this one, with Redis at ``broker_url``."""
        values: dict[str, Any] = {**self.setting_values(), "broker_url": broker_url, **overrides}
        return Settings(**values)

    def start(self) -> LocalMailtrap:
        """Start serving in a background thread; returns self."""
        if self._server is not None:
            return self
        server = _Server((self.host, self.port), _Handler)
        server.mailtrap = self
        server.ssl_context = self.ssl_context
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            daemon=True,
            name=f"local-mailtrap-{self.port}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- control and records ---------------------------------------------

    def inject(self, fault: str, times: int = 1) -> None:
        """Apply ``fault`` to each of the next ``times`` requests."""
        _check_fault(fault)
        with self._lock:
            self._injected.extend([fault] * times)

    @property
    def stats(self) -> MailtrapStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats.copy()

    def reset(self) -> None:
        """Forget accepted messages, counters, pending faults and the rate-limit window."""
        with self._lock:
            self.accepted.clear()
            self._stats = MailtrapStats()
            self._injected.clear()
            self._arrivals.clear()
        self.email_logs.clear()

    # -- request handling (called from handler threads) --------------------

    def _connected(self) -> None:
        with self._lock:
            self._stats.connections += 1

    def _enter(self, path: str) -> None:
        with self._lock:
            self._active += 1
            self._stats.requests += 1
            self._stats.by_path[path] += 1
            self._stats.max_concurrency = max(self._stats.max_concurrency, self._active)

    def _answered(self, status: int) -> None:
        # Counted before the answer is written, so a client that reads the
        # stats right after its answer arrives sees it.
        with self._lock:
            self._stats.by_status[status] += 1

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _answer(self, method: str, path: str, token: str | None, body: bytes) -> _Answer:
        if path.startswith(_GENERAL_PREFIX):
            return self._general(method, path[len(_GENERAL_PREFIX) :], token, body)
        where = _stream_of(path)
        if method != "POST":
            return _failure(405, "Method Not Allowed")
        if where is None or not check_inbox_id(where[2]):
            return _failure(404, "Not Found")
        if token is None or (token != self.token and token not in self.extra_tokens):
            return _failure(401, "Unauthorized")
        self._count_recipients(body)
        limited = self._rate_limited(token)
        if limited is not None:
            return limited
        fault = self._next_fault()
        if fault is not None:
            with self._lock:
                self._stats.faults[fault] += 1
            early = self._fault_answer(fault)
            if early is not None:
                return early
        if self.latency > 0:
            time.sleep(self.latency)
        stream, endpoint, inbox_id = where
        relative = endpoint if inbox_id is None else f"{endpoint}/{inbox_id}"
        answer = self._deliver(endpoint, inbox_id, relative, body, (stream, token))
        if fault == "lost" and answer.status == 200:
            return _Answer(200, close=True)
        if fault == "accepted-500" and answer.status == 200:
            return _failure(500, "Internal Server Error - Retry later")
        if fault == "accepted-nonjson" and answer.status == 200:
            return _Answer(200, _HTML_BODY, content_type="text/html")
        if fault == "slow":
            answer.delay = self.slow_seconds
        return answer

    def _general(self, method: str, target: str, token: str | None, body: bytes) -> _Answer:
        # The account API answers errors as {"error": ...} or a string "errors".
        if token is None or (token != self.token and token not in self.extra_tokens):
            return _json_answer(401, {"error": "Incorrect API token"})
        # Every endpoint counts against the token's general limit too.
        if self._rate_limited(token) is not None:
            return _json_answer(429, {"errors": "Rate limit exceeded"})
        if target.startswith("suppressions"):
            status, data = self.suppressions.answer(method, target, body)
        else:
            status, data = self.email_logs.answer(method, target, token)
        return _json_answer(status, data)

    def _count_recipients(self, body: bytes) -> None:
        try:
            data = json.loads(body)
        except ValueError:
            return
        requests = data.get("requests", [data]) if isinstance(data, dict) else []
        addresses = [
            entry["email"]
            for request in (requests if isinstance(requests, list) else [])
            if isinstance(request, dict)
            for kind in ("to", "cc", "bcc")
            # A malformed body (``"to": 5``) is refused by the schema; counting must not crash.
            if isinstance(request.get(kind), list)
            for entry in request[kind]
            if isinstance(entry, dict) and isinstance(entry.get("email"), str)
        ]
        with self._lock:
            self._stats.by_recipient.update(addresses)

    def _rate_limited(self, token: str) -> _Answer | None:
        if self.rate_limit is None:
            return None
        amount, period = self.rate_limit
        now = time.monotonic()
        with self._lock:
            arrivals = self._arrivals.setdefault(token, deque())
            while arrivals and arrivals[0] <= now - period:
                arrivals.popleft()
            if len(arrivals) < amount:
                arrivals.append(now)
                return None
            self._stats.rate_limited += 1
            wait = arrivals[0] + period - now
        headers = (("Retry-After", str(max(1, int(wait + 0.999)))),) if self.retry_after else ()
        return _json_answer(
            429, {"success": False, "errors": ["Rate limit exceeded"]}, headers=headers
        )

    def _next_fault(self) -> str | None:
        with self._lock:
            if self._injected:
                return self._injected.popleft()
            if not self.fault_rates:
                return None
            draw = self._rng.random()
        for fault, rate in self.fault_rates.items():
            if draw < rate:
                return fault
            draw -= rate
        return None

    def _fault_answer(self, fault: str) -> _Answer | None:
        if fault in ("500", "503"):
            return _failure(int(fault), "Internal Server Error - Retry later")
        if fault == "429":
            headers = (("Retry-After", "1"),) if self.retry_after else ()
            with self._lock:
                self._stats.rate_limited += 1
            return _json_answer(
                429, {"success": False, "errors": ["Rate limit exceeded"]}, headers=headers
            )
        if fault == "reset":
            return _Answer(0, close=True)
        if fault == "nonjson":
            return _Answer(200, _HTML_BODY, content_type="text/html")
        return None  # lost, slow and the accepted-* faults accept the message first

    def _deliver(
        self, endpoint: str, inbox_id: str | None, path: str, body: bytes, sender: _Sender
    ) -> _Answer:
        too_large = check_batch_size(len(body)) if endpoint == "batch" else []
        if too_large:
            return _failure(400, *too_large)
        try:
            data = json.loads(body)
        except ValueError:
            return _failure(400, "Invalid JSON in request body")
        if not isinstance(data, dict):
            return _failure(400, "Request body must be a JSON object")
        if endpoint == "send":
            errors = check_send(data)
            if errors:
                return _failure(400, *errors)
            ids = self._accept(data, path, inbox_id, None, sender)
            return _json_answer(200, {"success": True, "message_ids": list(ids)})
        return self._deliver_batch(data, path, inbox_id, sender)

    def _deliver_batch(
        self, data: dict[str, Any], path: str, inbox_id: str | None, sender: _Sender
    ) -> _Answer:
        verdict = check_batch(data)
        if verdict.envelope:
            return _failure(400, *verdict.envelope)
        taken = [
            (index, merged)
            for index, (merged, errors) in enumerate(
                zip(verdict.messages, verdict.errors, strict=True)
            )
            if not errors
        ]
        ids = iter(self._accept_all(taken, path, inbox_id, sender))
        responses = [
            {"success": False, "errors": errors}
            if errors
            else {"success": True, "message_ids": list(next(ids))}
            for errors in verdict.errors
        ]
        return _json_answer(200, {"success": True, "responses": responses})

    def _accept(
        self,
        payload: dict[str, Any],
        path: str,
        inbox_id: str | None,
        index: int | None,
        sender: _Sender,
    ) -> tuple[str, ...]:
        (ids,) = self._accept_all([(index, payload)], path, inbox_id, sender)
        return ids

    def _accept_all(
        self,
        payloads: Sequence[tuple[int | None, dict[str, Any]]],
        path: str,
        inbox_id: str | None,
        sender: _Sender,
    ) -> list[tuple[str, ...]]:
        """Accept messages (a batch's requests at their indexes): their ids, in order."""
        stream, token = sender
        received_at = time.monotonic()
        call = next(self._calls)
        messages = []
        for index, payload in payloads:
            recipients = tuple(
                entry["email"] for kind in ("to", "cc", "bcc") for entry in payload.get(kind) or ()
            )
            # The sandbox answers one id per send, not one per recipient.
            count = 1 if inbox_id is not None else len(recipients)
            ids = tuple(str(uuid.uuid4()) for _ in range(count))
            messages.append(
                AcceptedMessage(
                    ids,
                    path,
                    recipients,
                    payload,
                    inbox_id,
                    index,
                    stream,
                    token,
                    call,
                    received_at,
                )
            )
        # One lock and one log write for a whole batch: a campaign's calls carry 500 each.
        with self._lock:
            self.accepted.extend(messages)
            self._stats.messages += len(messages)
        if inbox_id is None:  # the sandbox keeps no Email Logs
            self.email_logs.record_all(
                [(m.message_ids, m.recipients, m.payload) for m in messages], stream
            )
        return [message.message_ids for message in messages]


# The stream a request reached and the token that sent it.
_Sender = tuple[str, str]


def _stream_of(path: str) -> tuple[str, str, str | None] | None:
    """``(stream, endpoint, inbox id)`` for an API path, None when it is not one.

    The bulk stream has no sandbox paths; a transactional path with an inbox
    id is the sandbox.
    """
    match = _PATH_RE.match(path)
    if match is not None:
        endpoint, inbox_id = match.group(1), match.group(2)
        return ("sandbox" if inbox_id else "transactional"), endpoint, inbox_id
    match = _BULK_PATH_RE.match(path)
    if match is not None:
        return "bulk", match.group(1), None
    return None


def _check_fault(fault: str) -> None:
    if fault not in FAULTS:
        raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(FAULTS)}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    mailtrap: LocalMailtrap
    ssl_context: ssl.SSLContext | None = None

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.ssl_context is None:
            super().finish_request(request, client_address)
            return
        # The handshake runs here, in the connection's own thread, so a slow or
        # broken client never holds up the accepting loop.
        secure = self.ssl_context.wrap_socket(request, server_side=True)
        try:
            super().finish_request(secure, client_address)
        finally:
            secure.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that drops its connection (a timeout, a killed worker) is
        # routine for a test server, as is one that fails the TLS handshake;
        # anything else is still reported.
        if isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)

    def track(self, connection: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections, self._connections = self._connections, set()
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)
        self.server.mailtrap._connected()

    def finish(self) -> None:
        self.server.track(self.connection, False)
        super().finish()

    def do_POST(self) -> None:
        self._handle()

    def do_GET(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests and benchmarks would drown in access lines

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        mailtrap = self.server.mailtrap
        path = self.path.split("?")[0]
        mailtrap._enter(path)
        try:
            answer = mailtrap._answer(self.command, self.path, self._token(), body)
            if answer.close:
                self.close_connection = True
                return
            if answer.delay > 0:
                time.sleep(answer.delay)
            mailtrap._answered(answer.status)
            self._write(answer)
        finally:
            mailtrap._leave()

    def _token(self) -> str | None:
        token = self.headers.get("Api-Token")
        if token is not None:
            return token
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        return value.strip() if scheme.lower() == "bearer" else None

    def _write(self, answer: _Answer) -> None:
        reason = HTTPStatus(answer.status).phrase
        lines = [
            f"HTTP/1.1 {answer.status} {reason}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            *(f"{name}: {value}" for name, value in answer.headers),
        ]
        if self.close_connection or self.headers.get("Connection", "").lower() == "close":
            lines.append("Connection: close")
            self.close_connection = True
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        try:
            # One write: a separate header write stalls keep-alive clients on delayed ACK.
            self.wfile.write(head + answer.body)
        except OSError:
            self.close_connection = True
