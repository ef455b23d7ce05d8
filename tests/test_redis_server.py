"""The private Redis servers the tests start: each on a port of its own, and known to be its own."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mailqueue.errors import ConfigurationError
from mailqueue.testing.redis_server import RedisServer, free_port


def test_a_server_answering_on_the_port_is_not_taken_for_the_one_started(tmp_path: Path) -> None:
    # A binary that never listens: whatever answers on the port is another server.
    silent = tmp_path / "silent-redis-server"
    silent.write_text("#!/bin/sh\nexec sleep 30\n")
    silent.chmod(silent.stat().st_mode | stat.S_IXUSR)
    with RedisServer() as other:
        impostor = RedisServer(other.port, binary=str(silent))
        with pytest.raises(ConfigurationError, match=f"port {other.port} is taken"):
            impostor.start()
        assert impostor.process is None  # the silent process was stopped


def test_a_server_started_is_its_own_process() -> None:
    with RedisServer() as server:
        assert server.process is not None
        assert not server._answered_by_another()
        assert server.process.pid != os.getpid()


def test_ports_handed_out_are_not_handed_out_again() -> None:
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
