"""The compose files publish ports on the loopback interface unless told otherwise, and
the deployment notes say where TLS ends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
COMPOSE_FILES = ["compose.yaml", "compose.sentinel.yaml"]
_DEFAULTED = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")


def published(path: Path) -> list[tuple[str, str]]:
    services: dict[str, Any] = yaml.safe_load(path.read_text())["services"]
    found = []
    for name, service in services.items():
        for port in service.get("ports", []):
            found.append((name, _DEFAULTED.sub(r"\1", str(port))))
    return found


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_published_ports_listen_on_loopback_by_default(name: str) -> None:
    ports = published(DEPLOY / name)

    assert ports, "the webhook is published"
    for service, port in ports:
        assert port.startswith("127.0.0.1:"), (service, port)


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_redis_is_never_published(name: str) -> None:
    assert not [service for service, _ in published(DEPLOY / name) if "redis" in service]


def test_the_deployment_notes_say_where_tls_ends() -> None:
    notes = (DEPLOY / "README.md").read_text()

    assert "MAILQUEUE_PUBLISH_ADDRESS" in notes
    assert re.search(r"TLS", notes)
