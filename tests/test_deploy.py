"""Deployment files, checked statically: they parse, the commands they run exist with the
options they pass, the environment names they set are settings mailqueue reads, and the
stop grace periods cover a drain.
"""

from __future__ import annotations

import configparser
import getpass
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

yaml = pytest.importorskip("yaml")

from mailqueue.deliver.drain import DRAIN_BUDGET  # noqa: E402
from mailqueue.settings import Settings  # noqa: E402
from mailqueue.store import keys  # noqa: E402
from mailqueue.store.keys import Keys  # noqa: E402

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
SYSTEMD = DEPLOY / "systemd"
K8S = DEPLOY / "k8s"
BIN = Path(sys.executable).parent
UNITS = sorted(SYSTEMD.glob("*.service"))
YAML_FILES = sorted(DEPLOY.rglob("*.yaml"))
SETTING_PREFIXES = ("MAILQUEUE_", "MAILTRAP_", "ANYMAIL_")
# Names that belong to Python, pip or prometheus_client, not to mailqueue.
OTHER_NAMES = frozenset(
    {
        "PROMETHEUS_MULTIPROC_DIR",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PIP_NO_CACHE_DIR",
        "PIP_DISABLE_PIP_VERSION_CHECK",
    }
)
# Read by the worker through Settings.metrics_port.
PENDING_NAMES = frozenset({"MAILQUEUE_METRICS_PORT"})
# --help needs no broker; an unreachable one makes sure nothing is contacted.
CLI_ENV = {"PATH": f"{BIN}:/usr/bin:/bin", "MAILQUEUE_BROKER_URL": "redis://127.0.0.1:1/0"}
# Worst case of a drain's last API call after its budget: connect + read timeouts.
STOP_BUDGET = DRAIN_BUDGET + Settings().connect_timeout + Settings().read_timeout


# -- reading the files ------------------------------------------------------


def yaml_documents() -> Iterator[dict[str, Any]]:
    for path in YAML_FILES:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield document


def k8s_objects(kind: str) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == kind
    ]


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def pod_containers() -> Iterator[dict[str, Any]]:
    for deployment in k8s_objects("Deployment"):
        yield from deployment["spec"]["template"]["spec"]["containers"]


def dockerfile_lines() -> list[str]:
    # Join continuation lines so that each instruction is one line.
    return (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()


def commands() -> dict[str, list[str]]:
    """Every command line the deployment runs, keyed by where it comes from."""
    found: dict[str, list[str]] = {}
    for path in UNITS:
        found[path.name] = shlex.split(unit(path)["Service"]["ExecStart"])
    for name, service in compose()["services"].items():
        if name != "redis" and "command" in service:
            found[f"compose:{name}"] = list(service["command"])
    for container in pod_containers():
        found[f"k8s:{container['name']}"] = list(container["command"])
    for line in dockerfile_lines():
        if line.startswith("CMD "):
            found["Dockerfile:CMD"] = list(yaml.safe_load(line[4:]))
    return found


def runnable(argv: list[str]) -> list[str]:
    """``argv`` with shell wrappers, systemd specifiers and variables made concrete."""
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2])
    values = {"%i": "1", "%H": "host", "$HOSTNAME": "host"}
    argv = [re.sub(r"%i|%H|\$HOSTNAME", lambda m: values[m.group()], arg) for arg in argv]
    return [str(BIN / Path(argv[0]).name), *argv[1:]]


def environment_names() -> set[str]:
    """Every environment variable name the deployment files set (or suggest setting)."""
    names: set[str] = set()
    env_file = (SYSTEMD / "mailqueue.env.example").read_text()
    names |= set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", env_file, re.MULTILINE))
    for path in UNITS:
        service = unit(path)["Service"]
        names |= {line.split("=", 1)[0] for line in service.get("Environment", "").split()}
    for line in dockerfile_lines():
        if line.startswith("ENV "):
            names |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    data = compose()
    names |= set(data["x-mailqueue-env"])
    for service in data["services"].values():
        environment = service.get("environment") or {}
        names |= set(environment if isinstance(environment, Mapping) else [])
    for config_map in k8s_objects("ConfigMap"):
        names |= set(config_map["data"])
    for secret in k8s_objects("Secret"):
        names |= set(secret["stringData"])
    for container in pod_containers():
        names |= {item["name"] for item in container.get("env", [])}
    return names


class RecordingEnviron(dict[str, str]):
    """An empty environment that remembers every name looked up in it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return False

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return default


def names_read_by_settings() -> set[str]:
    environ = RecordingEnviron()
    Settings.from_env(environ)
    return environ.asked


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s|min)?", value.strip())
    assert match, f"cannot read a duration from {value!r}"
    return float(match.group(1)) * (60 if match.group(2) == "min" else 1)


# -- the files parse --------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(DEPLOY)))
def test_yaml_file_parses(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text()) if doc]

    assert documents


def test_every_kubernetes_object_has_a_kind_and_a_name() -> None:
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["kind"], path.name
            assert doc["metadata"]["name"], path.name


@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_file_has_the_usual_sections(path: Path) -> None:
    parsed = unit(path)

    assert {"Unit", "Service", "Install"} <= set(parsed.sections())
    assert parsed["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
@pytest.mark.parametrize("path", UNITS, ids=lambda p: p.name)
def test_unit_file_passes_systemd_analyze_verify(path: Path, tmp_path: Path) -> None:
    # The install paths and user do not exist here: point them at this checkout.
    text = path.read_text()
    text = text.replace("/opt/mailqueue/venv/bin/", f"{BIN}/")
    text = re.sub(r"^(User|Group)=.*$", f"\\1={getpass.getuser()}", text, flags=re.MULTILINE)
    text = re.sub(
        r"^EnvironmentFile=.*$",
        f"EnvironmentFile={SYSTEMD / 'mailqueue.env.example'}",
        text,
        flags=re.MULTILINE,
    )
    text = re.sub(r"^WorkingDirectory=.*$", f"WorkingDirectory={tmp_path}", text, flags=re.M)
    name = path.name.replace("@.service", "@1.service")
    (tmp_path / name).write_text(text)

    result = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )

    complaints = [line for line in result.stderr.splitlines() if name in line]
    assert result.returncode == 0 and not complaints, result.stderr


# -- the commands exist -----------------------------------------------------


@pytest.mark.parametrize("where", sorted(commands()))
def test_command_exists_and_accepts_its_options(where: str) -> None:
    argv = runnable(commands()[where])
    assert argv[1:3] == ["-A", "mailqueue"] or Path(argv[0]).name == "mailqueue", argv

    # --help after the real options: click rejects an unknown option or command first.
    result = subprocess.run(
        [*argv, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=CLI_ENV,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    if "inspect" in argv:
        # The inspect action is an argument click does not check: ask Celery's own list.
        action = argv[argv.index("inspect") + 1]
        listing = subprocess.run(
            [*argv[: argv.index("inspect") + 1], "--list"],
            capture_output=True,
            text=True,
            timeout=60,
            env=CLI_ENV,
        )
        assert re.search(rf"^  {action}\b", listing.stdout, re.MULTILINE), listing.stdout


def test_every_worker_runs_the_celery_worker() -> None:
    workers = {w: argv for w, argv in commands().items() if "worker" in w and "liveness" not in w}

    assert workers
    for argv in workers.values():
        assert [Path(argv[0]).name, *argv[1:4]] == ["celery", "-A", "mailqueue", "worker"]


def heartbeat_checks() -> dict[str, tuple[list[str], str]]:
    """Each worker's command and the shell health check that reads its heartbeat file."""
    found: dict[str, tuple[list[str], str]] = {}
    (cmd,) = [line for line in dockerfile_lines() if line.startswith("CMD ")]
    (check,) = [line for line in dockerfile_lines() if line.startswith("HEALTHCHECK ")]
    found["Dockerfile"] = (list(yaml.safe_load(cmd[4:])), check.split(" CMD ", 1)[1])
    for name, service in compose()["services"].items():
        if name.startswith("worker"):
            kind, test = service["healthcheck"]["test"]
            assert kind == "CMD-SHELL"
            found[f"compose:{name}"] = (service["command"], test.replace("$$", "$"))
    for container in pod_containers():
        probe = container.get("livenessProbe", {}).get("exec")
        if probe:
            assert probe["command"][:2] == ["sh", "-c"]
            found[f"k8s:{container['name']}"] = (container["command"], probe["command"][2])
    return found


def test_every_worker_has_a_health_check_reading_the_file_it_beats_to() -> None:
    checks = heartbeat_checks()

    assert set(checks) == {"Dockerfile", "compose:worker-1", "compose:worker-2", "k8s:worker"}
    for where, (argv, check) in checks.items():
        beats_to = argv[argv.index("--heartbeat-file") + 1]
        assert shlex.quote(beats_to) in check, where


@pytest.mark.parametrize("where", sorted(heartbeat_checks()))
def test_heartbeat_check_passes_on_a_fresh_file_only(where: str, tmp_path: Path) -> None:
    argv, check = heartbeat_checks()[where]
    beat = tmp_path / "heartbeat"
    script = check.replace(argv[argv.index("--heartbeat-file") + 1], str(beat))

    def passes() -> bool:
        return subprocess.run(["sh", "-c", script], timeout=30).returncode == 0

    assert not passes()  # no file: the worker never started or has stopped
    beat.touch()
    assert passes()
    stale = time.time() - 2 * 60
    os.utime(beat, (stale, stale))
    assert not passes()


def test_webhook_probes_ask_the_health_path_the_server_answers() -> None:
    from mailqueue.webhooks.app import HEALTH_PATH

    (webhooks,) = [c for c in pod_containers() if c["name"] == "webhooks"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert webhooks[probe]["httpGet"]["path"] == HEALTH_PATH
    _, *test = compose()["services"]["webhooks"]["healthcheck"]["test"]
    assert f"127.0.0.1:8000{HEALTH_PATH}" in " ".join(test)


def test_every_compose_service_has_a_health_check() -> None:
    for name, service in compose()["services"].items():
        assert service.get("healthcheck", {}).get("test"), name


# -- Kubernetes schemas -----------------------------------------------------


def test_kubernetes_manifests_match_the_kubernetes_schemas() -> None:
    version = kubernetes_validate.latest_version()
    unchecked = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            try:
                # Strict: a misspelt or misplaced field is an error, not ignored.
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                unchecked.append(doc["kind"])

    # Only KEDA's custom resource has no schema among Kubernetes' own.
    assert unchecked == ["ScaledObject"]


def test_schema_validation_catches_a_misplaced_field() -> None:
    (worker,) = [
        d for d in k8s_objects("Deployment") if d["metadata"]["name"] == "mailqueue-worker"
    ]
    worker["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFilesystem"] = True

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, kubernetes_validate.latest_version(), strict=True)


# -- environment names ------------------------------------------------------


def test_environment_names_are_settings_mailqueue_reads() -> None:
    read = names_read_by_settings()
    used = environment_names()

    unknown = {
        name
        for name in used - OTHER_NAMES - PENDING_NAMES
        if not name.startswith(SETTING_PREFIXES) or name not in read
    }
    assert not unknown
    assert {"MAILTRAP_API_TOKEN", "MAILQUEUE_BROKER_URL", "MAILQUEUE_WEBHOOK_SECRET"} <= used


def test_metrics_port_is_a_setting() -> None:
    assert names_read_by_settings() >= PENDING_NAMES


# -- graceful stop ----------------------------------------------------------


def test_worker_unit_lets_a_drain_finish_on_stop() -> None:
    service = unit(SYSTEMD / "mailqueue-worker@.service")["Service"]

    # SIGTERM to the main process only: Celery's warm shutdown, not a kill of the pool.
    assert service["KillMode"] == "mixed"
    assert service["KillSignal"] == "SIGTERM"
    assert seconds(service["TimeoutStopSec"]) >= STOP_BUDGET


def test_worker_pods_get_a_grace_period_covering_a_drain() -> None:
    (worker,) = [
        d for d in k8s_objects("Deployment") if d["metadata"]["name"] == "mailqueue-worker"
    ]

    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= STOP_BUDGET


def test_compose_workers_get_a_grace_period_covering_a_drain() -> None:
    workers = {n: s for n, s in compose()["services"].items() if n.startswith("worker")}

    assert len(workers) == 2
    for service in workers.values():
        assert seconds(service["stop_grace_period"]) >= STOP_BUDGET


def test_worker_unit_gives_each_instance_its_own_metrics_directory() -> None:
    service = unit(SYSTEMD / "mailqueue-worker@.service")["Service"]

    assert service["RuntimeDirectory"] == "mailqueue-worker-%i"
    assert service["Environment"] == "PROMETHEUS_MULTIPROC_DIR=/run/mailqueue-worker-%i"


# -- image, compose, Kubernetes wiring --------------------------------------


def test_image_is_python_slim_with_the_webhooks_extra_and_runs_as_non_root() -> None:
    lines = dockerfile_lines()

    (base,) = [line for line in lines if line.startswith("FROM ")]
    assert re.fullmatch(r"FROM python:3\.\d+-slim", base)
    assert any('pip install ".[webhooks]"' in line for line in lines)
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert user.split(":")[0] not in {"root", "0"}


def test_compose_runs_redis_two_workers_and_the_webhook() -> None:
    services = compose()["services"]

    assert set(services) == {"redis", "worker-1", "worker-2", "webhooks"}
    assert services["webhooks"]["command"][:2] == ["mailqueue", "serve-webhooks"]
    assert services["worker-1"]["environment"]["MAILQUEUE_BROKER_URL"] == "redis://redis:6379/0"


def test_keda_scales_the_worker_deployment_on_each_lane() -> None:
    (scaled,) = k8s_objects("ScaledObject")
    deployments = {d["metadata"]["name"] for d in k8s_objects("Deployment")}

    assert scaled["spec"]["scaleTargetRef"]["name"] in deployments
    triggers = scaled["spec"]["triggers"]
    streams = [t for t in triggers if t["type"] == "redis-streams"]
    (bulk,) = [t for t in triggers if t["type"] == "prometheus"]
    # The transactional lane's streams, and the bulk lane's gauge (its streams come and go).
    assert {t["metadata"]["stream"] for t in streams} == {Keys().outbox, Keys().outbox_batch}
    assert 'lane="bulk"' in bulk["metadata"]["query"]
    assert "mailqueue_lane_backlog" in bulk["metadata"]["query"]
    assert "activationThreshold" in bulk["metadata"]
    for trigger in streams:
        assert trigger["metadata"]["consumerGroup"] == keys.OUTBOX_GROUP
        assert int(trigger["metadata"]["lagCount"]) > 0
        # KEDA requires the activation threshold whenever lagCount is given.
        assert "activationLagCount" in trigger["metadata"]


def test_webhook_service_selects_the_webhook_pods_and_port() -> None:
    (service,) = k8s_objects("Service")
    (webhooks,) = [
        d for d in k8s_objects("Deployment") if d["metadata"]["name"] == "mailqueue-webhooks"
    ]
    template = webhooks["spec"]["template"]

    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    port_names = {p["name"] for c in template["spec"]["containers"] for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names


def test_containers_read_config_and_secrets_that_exist() -> None:
    config_maps = {c["metadata"]["name"] for c in k8s_objects("ConfigMap")}
    secrets = {s["metadata"]["name"] for s in k8s_objects("Secret")}

    for container in pod_containers():
        for source in container["envFrom"]:
            if "configMapRef" in source:
                assert source["configMapRef"]["name"] in config_maps
            else:
                assert source["secretRef"]["name"] in secrets
