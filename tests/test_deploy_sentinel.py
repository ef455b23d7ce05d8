"""deploy/compose.sentinel.yaml: the Sentinel variant of the Compose file hangs together."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from mailqueue import Settings
from mailqueue.core.urls import parse_sentinel_url

COMPOSE = Path(__file__).resolve().parent.parent / "deploy" / "compose.sentinel.yaml"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _sentinel_config() -> str:
    return str(_compose()["services"]["sentinel-1"]["command"][2])


def test_the_broker_url_names_every_sentinel_service_and_the_monitored_master() -> None:
    data = _compose()
    url = data["x-mailqueue-env"]["MAILQUEUE_BROKER_URL"]
    target = parse_sentinel_url(url)
    monitor = re.search(r"sentinel monitor (\S+) (\S+) (\d+) (\d+)", _sentinel_config())
    assert monitor is not None

    sentinels = {name for name in data["services"] if name.startswith("sentinel-")}
    assert {host for host, _ in target.sentinels} == sentinels
    assert {port for _, port in target.sentinels} == {26379}
    master, host, _, quorum = monitor.groups()
    assert master == target.master_name
    assert host in data["services"]
    # A majority of the sentinels must agree before a failover.
    assert int(quorum) == len(sentinels) // 2 + 1


def test_the_replica_follows_the_monitored_master() -> None:
    services = _compose()["services"]
    command = services["redis-2"]["command"]

    assert command[command.index("--replicaof") + 1] == "redis-1"
    assert "--appendonly" in services["redis-1"]["command"]


def test_every_setting_in_the_file_builds_settings_requiring_a_replica() -> None:
    environment = {
        name: value
        for name, value in _compose()["x-mailqueue-env"].items()
        if not str(value).startswith("${")
    }

    settings = Settings.from_env(environment)

    assert settings.min_replicas == 1
    assert settings.status_redis_url == environment["MAILQUEUE_BROKER_URL"]
