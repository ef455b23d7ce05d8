"""The webhook and dashboard servers on an open port: slow or numerous connections are cut,
credentials are checked before a body is read, and bodies are bounded.

Real waitress servers on 127.0.0.1, driven with raw sockets; every load is bounded in
count and time."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import requests

from mailqueue.client import Client
from mailqueue.dashboard import create_app as create_dashboard
from mailqueue.dashboard.mount import create_server as create_dashboard_server
from mailqueue.serving.server import Limits
from mailqueue.settings import Settings
from mailqueue.testing.wsgi import serving
from mailqueue.webhooks import create_app
from mailqueue.webhooks.app import create_server

BASIC = "mailtrap:s3cret-hook"
DASHBOARD_SECRET = "ops:dash-pass"
DASHBOARD_AUTH = ("ops", "dash-pass")  # the same, as requests takes it
SIGNING_SECRET = "0123456789abcdef0123456789abcdef"
EVENTS = json.dumps({"events": []}).encode()


def basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


@contextlib.contextmanager
def webhook_server(redis_url: str, limits: Limits, **settings: Any) -> Iterator[tuple[str, int]]:
    with webhook_server_object(redis_url, limits, **settings) as (address, _):
        yield address


@contextlib.contextmanager
def webhook_server_object(
    redis_url: str, limits: Limits, **settings: Any
) -> Iterator[tuple[tuple[str, int], Any]]:
    values: dict[str, Any] = {"webhook_secret": BASIC, "redis_url": redis_url, **settings}
    app = create_app(Settings(**values))
    server = create_server(Settings(**values), "127.0.0.1", 0, app=app, limits=limits)
    with serving(app, server=server) as base:
        yield ("127.0.0.1", int(base.rpartition(":")[2])), server


@contextlib.contextmanager
def dashboard_server(redis_url: str, limits: Limits | None = None) -> Iterator[tuple[str, int]]:
    client = Client(Settings(broker_url=redis_url))
    app = create_dashboard(client, {"MAILQUEUE_DASHBOARD_SECRET": DASHBOARD_SECRET})
    server = create_dashboard_server(app, "127.0.0.1", 0, limits=limits)
    try:
        with serving(app, server=server) as base:
            yield "127.0.0.1", int(base.rpartition(":")[2])
    finally:
        client.close()


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=5)
    return sock


def answer_of(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """What the server sends until it closes (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(TimeoutError, ConnectionError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        return sock.recv(65536) == b""
    except TimeoutError:
        return False
    except ConnectionError:
        return True


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.05)


def post_events(address: tuple[str, int], *, timeout: float = 3.0) -> int:
    answer = requests.post(
        f"http://{address[0]}:{address[1]}/mailtrap/tracking/",
        data=EVENTS,
        headers={"Authorization": basic(BASIC)},
        timeout=timeout,
    )
    return answer.status_code


class Trickle:
    """Connections that send a request's headers one byte at a time, never finishing."""

    def __init__(self, address: tuple[str, int], count: int, every: float = 0.2) -> None:
        self.socks = [connect(address) for _ in range(count)]
        self.every = every
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = b"POST /mailtrap/tracking/ HTTP/1.1\r\nHost: x\r\nX-Slow: "
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.sendall(start)
        while not self.stop.wait(self.every):
            for sock in self.socks:
                with contextlib.suppress(OSError):
                    sock.send(b"a")

    def __enter__(self) -> Trickle:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        for sock in self.socks:
            sock.close()


# -- slow and numerous connections -----------------------------------------------------


def test_connections_that_trickle_their_headers_are_cut_and_others_are_served(
    redis_url: str,
) -> None:
    limits = Limits(max_body=1024 * 1024, request_timeout=1.0, connections=12,
                    connections_per_client=100)  # fmt: skip
    with webhook_server(redis_url, limits) as address, Trickle(address, 12) as slow:
        wait_until(
            lambda: all(closed_by_server(sock) for sock in slow.socks),
            timeout=15,
            what="the trickling connections are closed",
        )
        # All slots were taken; a signed request gets through once they are freed.
        assert post_events(address, timeout=10) == 200


def test_the_dashboard_cuts_trickling_connections_the_same_way(redis_url: str) -> None:
    limits = Limits(max_body=4096, request_timeout=1.0, connections=6,
                    connections_per_client=100)  # fmt: skip
    with dashboard_server(redis_url, limits) as (host, port), Trickle((host, port), 6) as slow:
        wait_until(
            lambda: all(closed_by_server(sock) for sock in slow.socks),
            timeout=15,
            what="the trickling connections are closed",
        )
        page = requests.get(f"http://{host}:{port}/", auth=DASHBOARD_AUTH,
                            timeout=10)  # fmt: skip

    assert page.status_code == 200


def test_a_body_that_trickles_in_is_cut_too(redis_url: str) -> None:
    limits = Limits(max_body=1024 * 1024, request_timeout=1.0)
    with webhook_server(redis_url, limits) as address:
        sock = connect(address)
        sock.sendall(
            b"POST /mailtrap/tracking/ HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {basic(BASIC)}\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        deadline = time.monotonic() + 15
        while not closed_by_server(sock):
            assert time.monotonic() < deadline, "a trickling body kept its connection"
            with contextlib.suppress(OSError):
                sock.send(b"{")
            time.sleep(0.2)
        sock.close()


def test_one_client_holds_a_bounded_number_of_connections(redis_url: str) -> None:
    limits = Limits(max_body=1024 * 1024, connections_per_client=3)
    with webhook_server(redis_url, limits) as address:
        held = [connect(address) for _ in range(3)]
        # The server has taken the three before the fourth is judged.
        for sock in held:
            sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 200")
        extra = connect(address)

        assert answer_of(extra).startswith(b"HTTP/1.1 503")

        for sock in held:
            sock.close()
        wait_until(lambda: post_events(address) == 200, timeout=10, what="served again")


# -- credentials before the body ----------------------------------------------------------


def test_wrong_basic_auth_is_refused_before_the_body_is_sent(redis_url: str) -> None:
    with webhook_server(redis_url, Limits(max_body=16 * 1024 * 1024)) as address:
        sock = connect(address)
        sock.sendall(
            b"POST /mailtrap/tracking/ HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {basic('mailtrap:guess')}\r\n".encode()
            + b"Content-Length: 16000000\r\n\r\n"
        )

        answer = answer_of(sock)

    assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
    assert b"www-authenticate: basic" in answer.lower()


def test_a_body_for_another_path_is_not_read(redis_url: str) -> None:
    with webhook_server(redis_url, Limits(max_body=16 * 1024 * 1024)) as address:
        sock = connect(address)
        sock.sendall(b"POST /other HTTP/1.1\r\nHost: x\r\nContent-Length: 16000000\r\n\r\n")

        assert answer_of(sock).startswith(b"HTTP/1.1 404")


def test_with_a_signature_only_the_body_is_read_and_then_checked(redis_url: str) -> None:
    limits = Limits(max_body=1024 * 1024)
    with webhook_server(
        redis_url, limits, webhook_secret=(), tracking_secret=SIGNING_SECRET
    ) as address:
        url = f"http://{address[0]}:{address[1]}/mailtrap/tracking/"
        signature = hmac.new(SIGNING_SECRET.encode(), EVENTS, hashlib.sha256).hexdigest()
        good = requests.post(url, data=EVENTS, headers={"Mailtrap-Signature": signature},
                             timeout=5)  # fmt: skip
        bad = requests.post(url, data=EVENTS, headers={"Mailtrap-Signature": "0" * 64}, timeout=5)

    assert (good.status_code, bad.status_code) == (200, 401)


def test_the_dashboard_refuses_a_post_without_credentials_before_its_body(
    redis_url: str,
) -> None:
    with dashboard_server(redis_url, Limits(max_body=300 * 1024 * 1024)) as address:
        sock = connect(address)
        sock.sendall(b"POST /action/pause HTTP/1.1\r\nHost: x\r\nContent-Length: 209715200\r\n\r\n")

        answer = answer_of(sock)

    assert answer.startswith(b"HTTP/1.1 401"), answer[:100]
    assert b"x-frame-options: deny" in answer.lower()


def test_the_dashboard_takes_a_few_kilobytes_of_body_at_most(redis_url: str) -> None:
    with dashboard_server(redis_url) as address:
        sock = connect(address)
        sock.sendall(
            b"POST /action/pause HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: {basic(DASHBOARD_SECRET)}\r\n".encode()
            + b"Content-Type: application/x-www-form-urlencoded\r\n"
            + b"Content-Length: 209715200\r\n\r\n"
        )

        answer = answer_of(sock)

    assert answer.startswith(b"HTTP/1.1 413"), answer[:100]


def test_the_dashboard_serves_its_pages_through_the_guarded_server(redis_url: str) -> None:
    with dashboard_server(redis_url) as (host, port):
        page = requests.get(f"http://{host}:{port}/", auth=DASHBOARD_AUTH,
                            timeout=10)  # fmt: skip
        refused = requests.get(f"http://{host}:{port}/", timeout=10)

    assert page.status_code == 200
    assert refused.status_code == 401


def test_bodies_in_progress_hold_a_bounded_amount_of_memory(redis_url: str) -> None:
    limits = Limits(max_body=1024 * 1024, body_budget=2 * 1024 * 1024)
    head = (
        b"POST /mailtrap/tracking/ HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: {basic(BASIC)}\r\nContent-Length: 1000000\r\n\r\n".encode()
    )
    with webhook_server_object(redis_url, limits) as (address, server):
        half_sent = [connect(address) for _ in range(2)]
        for sock in half_sent:
            sock.sendall(head + b"{")
        wait_until(lambda: server.bodies_held == 2_000_000, timeout=5, what="both held")
        third = connect(address)
        third.sendall(head)

        answer = answer_of(third)
        for sock in half_sent:
            sock.close()
        wait_until(lambda: post_events(address) == 200, timeout=10, what="room again")
        wait_until(lambda: server.bodies_held == 0, timeout=5, what="all given back")

    assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
    assert b"retry-after" in answer.lower()
