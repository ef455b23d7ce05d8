"""A private Redis Sentinel group for tests: a master, its replicas and three sentinels.

Every process listens on a free loopback port and keeps nothing on disk but
the sentinels' own configuration files (Sentinel rewrites them as it
learns), all in throw-away directories removed when the context exits.
Failure detection is tuned low (``down_after_ms``) so that a killed master
is replaced within seconds.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import redis

from mailqueue.errors import ConfigurationError
from mailqueue.testing.redis_server import RedisServer, free_port, online_replicas
from mailqueue.testing.running import Running

__all__ = ["SentinelGroup", "SentinelServer"]

MASTER_NAME = "mymaster"


class SentinelServer(RedisServer):
    """One ``redis-server --sentinel`` watching the master on ``master_port``."""

    def __init__(
        self,
        master_port: int,
        *,
        master_name: str = MASTER_NAME,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        super().__init__(port, binary)
        self.master_port = master_port
        self.master_name = master_name
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms

    def arguments(self, directory: str) -> list[str]:
        config = os.path.join(directory, "sentinel.conf")
        # Written once: on a restart the sentinel resumes from what it rewrote.
        if not os.path.exists(config):
            name = self.master_name
            with open(config, "w") as file:
                file.write(
                    f"port {self.port}\n"
                    "bind 127.0.0.1\n"
                    f"dir {directory}\n"
                    f"logfile {os.path.join(directory, 'sentinel.log')}\n"
                    f"sentinel monitor {name} 127.0.0.1 {self.master_port} {self.quorum}\n"
                    f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                    f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
                    f"sentinel parallel-syncs {name} 1\n"
                )
        return [config, "--sentinel"]


class SentinelGroup(Running):
    """``with SentinelGroup() as group: group.url`` runs a master, replicas and sentinels."""

    def __init__(
        self,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        master_name: str = MASTER_NAME,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ) -> None:
        self.master_name = master_name
        master_port = free_port()
        self.servers = [RedisServer(master_port)]
        self.servers += [RedisServer(replica_of=master_port) for _ in range(replicas)]
        self.sentinels = [
            SentinelServer(
                master_port,
                master_name=master_name,
                quorum=sentinels // 2 + 1,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for _ in range(sentinels)
        ]

    @property
    def url(self) -> str:
        """The ``redis+sentinel://`` URL naming every sentinel and the master."""
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.master_name}/0"

    def start(self, timeout: float = 60.0) -> SentinelGroup:
        try:
            for server in self.servers:
                server.start()
            self._wait(self._replicas_linked, timeout, "the replicas to sync with the master")
            for sentinel in self.sentinels:
                sentinel.start()
            self._wait(self._sentinels_agree, timeout, "the sentinels to find each other")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in (*self.sentinels, *self.servers):
            process.stop()

    # -- who is master ------------------------------------------------------

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers reports it."""
        for sentinel in self._live_sentinels():
            port = self._named_by(sentinel)
            if port is not None:
                return port
        return None

    def master(self) -> RedisServer:
        """The server the sentinels currently name as master."""
        port = self.master_port()
        for server in self.servers:
            if server.port == port:
                return server
        raise ConfigurationError(f"no server of this group is master (sentinels say {port})")

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master; returns its server (halted, directory kept)."""
        server = self.master()
        server.halt(crash=True)
        return server

    def wait_for_failover(self, old_port: int, timeout: float = 60.0) -> RedisServer:
        """Wait until every live sentinel names a new master that says it is one."""

        def promoted() -> bool:
            ports = {self._named_by(sentinel) for sentinel in self._live_sentinels()}
            if len(ports) != 1:
                return False
            port = ports.pop()
            return port not in (None, old_port) and _role(port) == "master"

        self._wait(promoted, timeout, "a replica to be promoted")
        return self.master()

    # -- readiness ----------------------------------------------------------

    def _replicas_linked(self) -> bool:
        return online_replicas(self.servers[0].port) == len(self.servers) - 1

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            with _client(sentinel.port) as client:
                state = client.sentinel_master(self.master_name)
            if int(state.get("num-other-sentinels", 0)) != len(self.sentinels) - 1:
                return False
            if int(state.get("num-slaves", 0)) != len(self.servers) - 1:
                return False
        return True

    def _live_sentinels(self) -> list[SentinelServer]:
        return [sentinel for sentinel in self.sentinels if sentinel.process is not None]

    def _named_by(self, sentinel: SentinelServer) -> int | None:
        try:
            with _client(sentinel.port) as client:
                address = client.sentinel_get_master_addr_by_name(self.master_name)
        except redis.RedisError:
            return None
        return int(address[1]) if address else None

    @staticmethod
    def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.05)
        raise ConfigurationError(f"timed out after {timeout:g} s waiting for {what}")


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        port=port, socket_connect_timeout=1.0, socket_timeout=2.0, decode_responses=True
    )


def _role(port: int) -> str | None:
    try:
        with _client(port) as client:
            return str(client.execute_command("ROLE")[0])
    except redis.RedisError:
        return None
