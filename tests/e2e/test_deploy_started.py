"""Every deploy file's entry points, started the way the file would start them.

No container engine can run here, so each start is emulated (tests/container.py):
the user id, the read-only root, the folders mounted, the environment the
manifest gives (plus the image's), with three things moved so that the run is
private: the Redis URL points at this test's Redis, the API at the local
Mailtrap, and fixed ports at free ones. Then each health check the file
declares is run inside, a message goes through each worker, and the webhook
answers a tracking event.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

import mailqueue
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from mailqueue.testing.redis_server import free_port
from mailqueue.testing.sentinel import SentinelGroup
from tests.container import Confined, Confinement, available

from .helpers import wait_final

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(available() is not None, reason=f"confinement: {available()}"),
]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
BIN = Path(sys.executable).parent
PATH = f"{BIN}:/usr/bin:/bin"
WEBHOOK_AUTH = ("mailtrap", "replace-me")  # secret.example.yaml's value, used as it stands


# -- what the files say -------------------------------------------------------


def dockerfile() -> list[str]:
    return (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for line in dockerfile():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"([A-Z][A-Z0-9_]*)=(\S+)", line)))
    return env


def image_user() -> tuple[int, int]:
    (user,) = [line.split()[1] for line in dockerfile() if line.startswith("USER ")]
    uid, gid = user.split(":")
    return int(uid), int(gid)


def image_dirs() -> list[str]:
    return [d for line in dockerfile() for d in re.findall(r"mkdir -p (\S+)", line)]


def image_cmd() -> list[str]:
    (line,) = [line for line in dockerfile() if line.startswith("CMD ")]
    return list(json.loads(line[4:]))


def image_healthcheck() -> str:
    (line,) = [line for line in dockerfile() if line.startswith("HEALTHCHECK ")]
    return line.split(" CMD ", 1)[1].strip()


def k8s(kind: str, name: str) -> dict[str, Any]:
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc["kind"] == kind and doc["metadata"]["name"] == name:
                return dict(doc)
    raise LookupError(f"{kind} {name}")


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / name).read_text()))


def compose_value(value: str, given: Mapping[str, str]) -> str:
    """Compose's interpolation: ${NAME}, ${NAME:-default}, ${NAME:?error}, and $$ for $."""

    def replace(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if given.get(name):
            return given[name]
        if op == ":?":
            raise AssertionError(f"compose requires {name}: {rest}")
        return rest or ""

    value = re.sub(r"\$\{([A-Z_]+)(?:(:-|:\?)([^}]*))?\}", replace, value)
    return value.replace("$$", "$")


def probe_argv(probe: Any) -> list[str]:
    """A Docker/Compose health check test as the argv the engine runs."""
    if isinstance(probe, str):
        return ["/bin/sh", "-c", probe]
    kind, *rest = probe
    return ["/bin/sh", "-c", rest[0]] if kind == "CMD-SHELL" else list(rest)


# -- starting them ------------------------------------------------------------


class Environment:
    """This test's Redis, Mailtrap and ports, and how they replace the files' own."""

    def __init__(self, redis_url: str, mailtrap: LocalMailtrap) -> None:
        self.redis_url = redis_url
        self.mailtrap = mailtrap
        self.metrics_port = free_port()
        self.http_port = free_port()

    def env(self, *layers: Mapping[str, str]) -> dict[str, str]:
        merged: dict[str, str] = {}
        for layer in layers:
            merged.update({k: str(v) for k, v in layer.items()})
        merged.update(
            PATH=PATH,
            # The code under test, as the image would hold it (not another installed copy).
            PYTHONPATH=str(DEPLOY.parent),
            HOME="/app",
            MAILQUEUE_BROKER_URL=self.redis_url,
            MAILTRAP_API_URL=self.mailtrap.url,
            MAILTRAP_BULK_API_URL=self.mailtrap.bulk_url,
            MAILTRAP_API_TOKEN=self.mailtrap.token,
        )
        if "MAILQUEUE_METRICS_PORT" in merged:
            merged["MAILQUEUE_METRICS_PORT"] = str(self.metrics_port)
        return merged

    def argv(self, argv: list[str]) -> list[str]:
        """Fixed ports moved to free ones; the executable found where this venv has it."""
        text = [self.ports(arg) for arg in argv]
        return [str(BIN / text[0]) if (BIN / text[0]).exists() else text[0], *text[1:]]

    def ports(self, text: str) -> str:
        return re.sub(r"(?<=[ :])8000\b|^8000$", str(self.http_port), text)


@pytest.fixture
def environment(
    redis_url: str, mailtrap: LocalMailtrap, make_settings: Callable[..., Settings]
) -> Environment:
    make_settings()  # this process enqueues to the same Redis
    return Environment(redis_url, mailtrap)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[[list[str], Confinement], Confined]]:
    started: list[Confined] = []

    def run(argv: list[str], confinement: Confinement) -> Confined:
        process = Confined(argv, confinement, tmp_path / f"process-{len(started)}.log").start()
        started.append(process)
        return process

    yield run
    for process in started:
        process.stop()


def wait_healthy(process: Confined, check: list[str], timeout: float = 120.0) -> None:
    """Run ``check`` inside until it passes; fail with the process's output if it never does."""
    deadline = time.monotonic() + timeout
    while True:
        if process.exited() is not None:
            raise AssertionError(f"exited with {process.exited()}:\n{process.output()}")
        result = process.run_inside(check)
        if result.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"health check {check} never passed:\n{process.output()}")
        time.sleep(0.2)


def send_one(subject: str) -> None:
    send_id = mailqueue.send_email.delay(
        {"from_email": "a@example.com", "to": ["b@example.com"], "subject": subject, "text": "t"}
    ).id
    (record,) = wait_final([send_id], timeout=120).values()
    assert record["state"] == "sent"


SENT_ONCE = 'mailqueue_sends_total{outcome="sent"} 1.0'


def scrape_until(port: int, wanted: str, timeout: float = 60.0) -> str:
    """Scrape until ``wanted`` shows: a send is counted just after its status is recorded."""
    deadline = time.monotonic() + timeout
    while True:
        body = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        if wanted in body or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def assert_worker_runs(process: Confined, health: list[str], env: Environment) -> None:
    wait_healthy(process, health)
    send_one("through the deployed worker")
    assert SENT_ONCE in scrape_until(env.metrics_port, SENT_ONCE)
    assert process.stop() == 0, process.output()
    assert "Traceback" not in process.output(), process.output()


def assert_webhook_runs(process: Confined, health: list[str] | None, env: Environment) -> None:
    base = f"http://127.0.0.1:{env.http_port}"
    if health is not None:
        wait_healthy(process, health)
    else:
        wait_http(f"{base}/healthz", process)
    event = {
        "event": "open",
        "message_id": "m-1",
        "email": "b@example.com",
        "event_id": "e-1",
        "timestamp": 1714564800,
    }
    answer = requests.post(
        f"{base}/mailtrap/tracking/", json={"events": [event]}, auth=WEBHOOK_AUTH, timeout=10
    )
    assert answer.status_code == 200, answer.text
    assert "mailqueue_webhook_events_total" in requests.get(f"{base}/metrics", timeout=10).text
    process.stop()
    assert "Traceback" not in process.output(), process.output()


def wait_http(url: str, process: Confined, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.exited() is not None:
            raise AssertionError(f"exited with {process.exited()}:\n{process.output()}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never answered 200:\n{process.output()}")
        time.sleep(0.1)


# -- Kubernetes ---------------------------------------------------------------


def pod(name: str, env: Environment) -> tuple[list[str], Confinement, dict[str, Any]]:
    spec = k8s("Deployment", name)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    security = {**spec.get("securityContext", {}), **container.get("securityContext", {})}
    layers: list[Mapping[str, str]] = [image_env()]
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            layers.append(k8s("ConfigMap", source["configMapRef"]["name"])["data"])
        else:
            layers.append(k8s("Secret", source["secretRef"]["name"])["stringData"])
    layers.append({item["name"]: item["value"] for item in container.get("env", [])})
    confinement = Confinement(
        uid=security["runAsUser"],
        gid=security["runAsGroup"],
        read_only_root=security.get("readOnlyRootFilesystem", False),
        image_dirs=image_dirs(),
        volumes=[mount["mountPath"] for mount in container.get("volumeMounts", [])],
        env=env.env(*layers),
    )
    return env.argv(container["command"]), confinement, container


def test_kubernetes_worker_pod_starts_delivers_and_passes_its_liveness_probe(
    environment: Environment, start: Callable[[list[str], Confinement], Confined]
) -> None:
    argv, confinement, container = pod("mailqueue-worker", environment)
    assert confinement.read_only_root

    process = start(argv, confinement)

    assert_worker_runs(process, container["livenessProbe"]["exec"]["command"], environment)


def test_kubernetes_webhook_pod_starts_on_a_read_only_root_and_answers_its_probes(
    environment: Environment, start: Callable[[list[str], Confinement], Confined]
) -> None:
    argv, confinement, container = pod("mailqueue-webhooks", environment)
    # The image points the metrics folder at a directory this pod cannot write.
    assert confinement.read_only_root
    assert confinement.env["PROMETHEUS_MULTIPROC_DIR"] not in confinement.volumes

    process = start(argv, confinement)

    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        wait_http(
            f"http://127.0.0.1:{environment.http_port}{container[probe]['httpGet']['path']}",
            process,
        )
    assert_webhook_runs(process, None, environment)


def full_tracking_batch() -> bytes:
    """Mailtrap's largest delivery: 500 events, each with 1,000 bytes of custom variables."""
    padding = "x" * (1000 - len('{"note": ""}'))
    events = [
        {
            "event": "click",
            "message_id": f"m-{n}",
            "email": f"reader-{n}@example.com",
            "event_id": f"e-{n}",
            "timestamp": 1714564800 + n,
            "url": f"https://example.com/articles/{n}",
            "category": "newsletter",
            "custom_variables": {"note": padding},
        }
        for n in range(500)
    ]
    return json.dumps({"events": events}).encode()


def test_kubernetes_webhook_pod_records_mailtrap_largest_batch_on_its_read_only_root(
    environment: Environment, start: Callable[[list[str], Confinement], Confined]
) -> None:
    argv, confinement, container = pod("mailqueue-webhooks", environment)
    assert "volumeMounts" not in container  # nowhere to write: not even /tmp
    body = full_tracking_batch()
    assert len(body) > 600_000  # past the size a WSGI server may spill to a temporary file

    process = start(argv, confinement)
    base = f"http://127.0.0.1:{environment.http_port}"
    wait_http(f"{base}{container['readinessProbe']['httpGet']['path']}", process)
    answer = requests.post(
        f"{base}/mailtrap/tracking/",
        data=body,
        headers={"Content-Type": "application/json"},
        auth=WEBHOOK_AUTH,
        timeout=30,
    )

    assert answer.status_code == 200, f"{answer.status_code} {answer.text}\n{process.output()}"
    process.stop()
    assert "Traceback" not in process.output(), process.output()


# -- Compose and the image ----------------------------------------------------


def compose_service(
    name: str, env: Environment, file: str = "compose.yaml"
) -> tuple[list[str], Confinement, Any]:
    data = compose(file)
    service = data["services"][name]
    given = {"MAILQUEUE_WEBHOOK_SECRET": ":".join(WEBHOOK_AUTH), "MAILTRAP_API_TOKEN": "x"}
    service_env = {k: compose_value(str(v), given) for k, v in service["environment"].items()}
    uid, gid = image_user()
    confinement = Confinement(
        uid=uid,
        gid=gid,
        read_only_root=bool(service.get("read_only", False)),
        image_dirs=image_dirs(),
        volumes=[entry.split(":", 1)[0] for entry in service.get("tmpfs", [])],
        env=env.env(image_env(), service_env),
    )
    healthcheck = service.get("healthcheck", {}).get("test")
    health = [env.ports(arg) for arg in probe_argv(healthcheck)] if healthcheck else None
    return env.argv(service["command"]), confinement, health


# The compose files' services, each with what shows it at work.
COMPOSE_SERVICES = pytest.mark.parametrize(
    ("service", "check"),
    [("worker-1", assert_worker_runs), ("webhooks", assert_webhook_runs)],
    ids=["worker", "webhooks"],
)


@COMPOSE_SERVICES
def test_compose_service_starts_and_passes_its_health_check(
    service: str,
    check: Callable[[Confined, list[str], Environment], None],
    environment: Environment,
    start: Callable[[list[str], Confinement], Confined],
) -> None:
    argv, confinement, health = compose_service(service, environment)
    assert health is not None

    process = start(argv, confinement)

    check(process, health, environment)


@pytest.fixture
def sentinel_environment(mailtrap: LocalMailtrap) -> Iterator[Environment]:
    """A master, a replica and three sentinels; this process enqueues through them."""
    with SentinelGroup(replicas=1) as group:
        settings = mailtrap.settings(group.url, rate_limit="1000/1s", reclaim_idle=10.0)
        mailqueue.configure(settings)
        yield Environment(group.url, mailtrap)


@COMPOSE_SERVICES
def test_sentinel_compose_service_starts_through_the_sentinels_and_passes_its_health_check(
    service: str,
    check: Callable[[Confined, list[str], Environment], None],
    sentinel_environment: Environment,
    start: Callable[[list[str], Confinement], Confined],
) -> None:
    argv, confinement, health = compose_service(
        service, sentinel_environment, "compose.sentinel.yaml"
    )
    assert health is not None
    # The file's own setting: an enqueue waits for the replica.
    assert confinement.env["MAILQUEUE_REDIS_MIN_REPLICAS"] == "1"

    process = start(argv, confinement)

    check(process, health, sentinel_environment)


def test_image_default_command_is_a_worker_passing_the_image_health_check(
    environment: Environment, start: Callable[[list[str], Confinement], Confined]
) -> None:
    uid, gid = image_user()
    confinement = Confinement(
        uid=uid,
        gid=gid,
        read_only_root=False,
        image_dirs=image_dirs(),
        # An engine gives the container a fresh /tmp; the metrics folder is the image's own.
        volumes=["/tmp"],
        # As `docker run -e MAILQUEUE_METRICS_PORT=9808 mailqueue` would give it.
        env=environment.env(image_env(), {"MAILQUEUE_METRICS_PORT": "9808"}),
    )

    process = start(environment.argv(image_cmd()), confinement)

    assert_worker_runs(process, ["/bin/sh", "-c", image_healthcheck()], environment)


# -- systemd -------------------------------------------------------------------


def unit_service(name: str) -> dict[str, str]:
    import configparser

    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / "systemd" / name).read_text())
    return dict(parser["Service"])


def unit_confinement(service: Mapping[str, str], env: Environment, instance: str) -> Confinement:
    env_file = (DEPLOY / "systemd" / "mailqueue.env.example").read_text()
    file_env = dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", env_file, re.MULTILINE))
    environment = service.get("Environment", "").replace("%i", instance)
    unit_env = dict(item.split("=", 1) for item in environment.split())
    volumes = ["/tmp"] if service.get("PrivateTmp") == "true" else []
    if "RuntimeDirectory" in service:
        volumes.append("/run/" + service["RuntimeDirectory"].replace("%i", instance))
    return Confinement(
        uid=10001,  # the unit's User=mailqueue, a system user
        gid=10001,
        read_only_root=service.get("ProtectSystem") == "strict",
        volumes=volumes,
        env=env.env(file_env, unit_env),
    )


def unit_argv(service: Mapping[str, str], env: Environment, instance: str) -> list[str]:
    argv = shlex.split(service["ExecStart"].replace("%i", instance).replace("%H", "host"))
    return env.argv([Path(argv[0]).name, *argv[1:]])


def test_systemd_worker_unit_starts_and_delivers_under_its_hardening(
    environment: Environment, start: Callable[[list[str], Confinement], Confined]
) -> None:
    service = unit_service("mailqueue-worker@.service")
    confinement = unit_confinement(service, environment, "1")
    confinement.env = {**confinement.env, "MAILQUEUE_METRICS_PORT": str(environment.metrics_port)}
    assert confinement.read_only_root

    process = start(unit_argv(service, environment, "1"), confinement)

    wait_http(f"http://127.0.0.1:{environment.metrics_port}/metrics", process)
    send_one("through the systemd worker")
    assert SENT_ONCE in scrape_until(environment.metrics_port, SENT_ONCE)
    assert process.stop() == 0, process.output()


def test_systemd_webhook_unit_starts_under_its_hardening(
    environment: Environment, start: Callable[[list[str], Confinement], Confined]
) -> None:
    service = unit_service("mailqueue-webhooks.service")
    confinement = unit_confinement(service, environment, "")
    confinement.env = {
        **confinement.env,
        "MAILQUEUE_WEBHOOK_SECRET": ":".join(WEBHOOK_AUTH),
    }

    process = start(unit_argv(service, environment, ""), confinement)

    assert_webhook_runs(process, None, environment)
