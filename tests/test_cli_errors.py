"""Every mistake a person can make at the command line is one ``error:`` line, never a traceback.

Each case runs the real ``mailqueue`` command in a fresh process, with its own
environment, as a person at a shell would.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from mailqueue.testing.redis_server import free_port

PASSWORD = "s3cret-redis-password"
TEMPLATE = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"


def clean_env(**overrides: str) -> dict[str, str]:
    """The test's environment without any mailqueue or Mailtrap setting, plus ``overrides``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILTRAP_", "MAILQUEUE_"))}
    env.pop("CELERY_CONFIG_MODULE", None)
    env.update(overrides)
    return env


def run(
    args: list[str], env: Mapping[str, str], *, module: str = "mailqueue", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, timeout=120, env=dict(env), check=False, cwd=cwd,
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A loopback port something else is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def csv_without_email(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("csv") / "list.csv"
    path.write_text("address;name\nann@example.com;Ann\n")
    return str(path)


UNREACHABLE = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"

# (id, environment, arguments, fragments the error line must hold)
BAD_SETTINGS = [
    ("rate limit", {"MAILQUEUE_RATE_LIMIT": "garbage"}, ["status", "abc"],
     ["MAILQUEUE_RATE_LIMIT"]),
    ("status ttl", {"MAILQUEUE_STATUS_TTL": "a month"}, ["dead-letters", "list"],
     ["MAILQUEUE_STATUS_TTL"]),
    ("coalesce", {"MAILQUEUE_COALESCE": "perhaps"},
     ["send", "--from", "a@example.com", "--to", "b@example.com", "--subject", "S", "--text", "T"],
     ["MAILQUEUE_COALESCE"]),
    ("webhook secret", {"MAILQUEUE_WEBHOOK_SECRET": "no-colon"}, ["serve-webhooks"],
     ["MAILQUEUE_WEBHOOK_SECRET"]),
    ("rate limit, worker", {"MAILQUEUE_RATE_LIMIT": "0/1s", "MAILTRAP_API_TOKEN": "t"},
     ["worker"], ["MAILQUEUE_RATE_LIMIT"]),
    ("no token, worker", {}, ["worker"], ["MAILTRAP_API_TOKEN"]),
    ("negative timeout, worker", {"MAILTRAP_API_TOKEN": "t", "MAILQUEUE_READ_TIMEOUT": "-3"},
     ["worker"], ["MAILQUEUE_READ_TIMEOUT", "more than 0", "-3"]),
    ("rate over 100 %, worker",
     {"MAILTRAP_API_TOKEN": "t", "MAILQUEUE_CAMPAIGN_BOUNCE_RATE": "5"},
     ["worker"], ["MAILQUEUE_CAMPAIGN_BOUNCE_RATE", "from 0 to 1"]),
    ("no call in flight, worker", {"MAILTRAP_API_TOKEN": "t", "MAILQUEUE_CALLS_IN_FLIGHT": "0"},
     ["worker"], ["MAILQUEUE_CALLS_IN_FLIGHT", "at least 1"]),
    ("api url, worker", {"MAILTRAP_API_TOKEN": "t", "MAILTRAP_API_URL": "send.api.mailtrap.io"},
     ["worker"], ["MAILTRAP_API_URL", "http://"]),
    ("local api, bulk left to mailtrap, worker",
     {"MAILTRAP_API_TOKEN": "t", "MAILTRAP_API_URL": "http://127.0.0.1:8025/api/"},
     ["worker"], ["MAILTRAP_BULK_API_URL", "mailqueue local-mailtrap"]),
    ("negative setting", {"MAILQUEUE_STATUS_TTL": "-1"}, ["lanes"], ["MAILQUEUE_STATUS_TTL"]),
    ("broker url", {"MAILQUEUE_BROKER_URL": "redis+sentinel://h1:1"}, ["lanes"],
     ["MAILQUEUE_BROKER_URL"]),
    ("unreachable redis, status", {"MAILQUEUE_BROKER_URL": UNREACHABLE}, ["status", "abc"],
     ["Redis", UNREACHABLE.split("@")[1]]),
    ("unreachable redis, dead letters", {"MAILQUEUE_BROKER_URL": UNREACHABLE},
     ["dead-letters", "list"], ["Redis", UNREACHABLE.split("@")[1]]),
    ("unreachable redis, send", {"MAILQUEUE_BROKER_URL": UNREACHABLE},
     ["send", "--from", "a@example.com", "--to", "b@example.com", "--subject", "S", "--text", "T"],
     ["Redis", UNREACHABLE.split("@")[1]]),
    ("demo with a token and no recipient", {"MAILTRAP_API_TOKEN": "t",
                                            "MAILQUEUE_BROKER_URL": UNREACHABLE},
     ["demo"], ["--to"]),
]


@pytest.mark.parametrize(
    ("env", "args", "fragments"),
    [case[1:] for case in BAD_SETTINGS],
    ids=[case[0] for case in BAD_SETTINGS],
)
def test_a_bad_setting_is_one_error_line(
    env: dict[str, str], args: list[str], fragments: list[str]
) -> None:
    result = run(args, clean_env(**env))

    assert_one_error_line(result, *fragments)
    assert PASSWORD not in result.stderr


BAD_ARGUMENTS = [
    ("unknown command", ["sned"], ["sned"]),
    ("unknown option", ["send", "--bogus"], ["--bogus", "mailqueue send --help"]),
    ("missing argument", ["status"], ["ID"]),
    ("port not a number", ["serve-webhooks", "--port", "eighty"], ["--port"]),
    ("port out of range", ["serve-webhooks", "--port", "70000"], ["--port"]),
    ("missing template", ["campaign", "list.csv"], ["--template-id"]),
    ("unreadable CSV", ["campaign", "/nonexistent/list.csv", "--template-id", TEMPLATE],
     ["/nonexistent/list.csv"]),
    ("unreadable JSON", ["send", "--json", "/nonexistent/message.json"], ["--json"]),
    ("bad metadata", ["send", "--metadata", "no-equals-sign"], ["--metadata[0]"]),
    ("requeue without ids", ["dead-letters", "requeue"], ["SEND_ID"]),
    ("stand-in port not a number", ["local-mailtrap", "--port", "x"], ["--port"]),
    ("stand-in rate limit", ["local-mailtrap", "--rate-limit", "fast"], ["--rate-limit"]),
    ("stand-in fault rate", ["local-mailtrap", "--fault-rate", "500"], ["--fault-rate"]),
    ("stand-in unknown fault", ["local-mailtrap", "--fault-rate", "teapot=0.1"],
     ["--fault-rate", "teapot"]),
]


@pytest.mark.parametrize(
    ("args", "fragments"),
    [case[1:] for case in BAD_ARGUMENTS],
    ids=[case[0] for case in BAD_ARGUMENTS],
)
def test_a_bad_argument_is_one_error_line(args: list[str], fragments: list[str]) -> None:
    result = run(args, clean_env(MAILQUEUE_BROKER_URL=UNREACHABLE))

    assert_one_error_line(result, *fragments)


SEND = ["send", "--subject", "S", "--text", "T"]

# (id, environment, arguments, fragments the line must hold, fragments it must not)
IN_WORDS_FOR_PEOPLE = [
    ("broker url typo", {"MAILQUEUE_BROKER_URL": "htp://nowhere"}, ["status", "abc"],
     ["MAILQUEUE_BROKER_URL 'htp://nowhere'", "Celery"], ["MAILQUEUE_REDIS_URL", "redis_url"]),
    ("broker url typo, worker", {"MAILQUEUE_BROKER_URL": "htp://nowhere",
                                 "MAILTRAP_API_TOKEN": "t"}, ["worker"],
     ["MAILQUEUE_BROKER_URL 'htp://nowhere'"], ["MAILQUEUE_REDIS_URL", "KeyError"]),
    ("broker not redis", {"MAILQUEUE_BROKER_URL": "amqp://guest:pw@rabbit//"}, ["lanes"],
     ["MAILQUEUE_REDIS_URL", "MAILQUEUE_BROKER_URL"], ["pw", "redis_url:"]),
    ("bad --to", {"MAILQUEUE_BROKER_URL": UNREACHABLE},
     [*SEND, "--from", "a@example.com", "--to", "ok@example.com", "--to", "bad@"],
     ["--to 'bad@': not an email address (nothing after the @)"],
     ["string index", "to[1]", "Invalid"]),
    ("no sender", {"MAILQUEUE_BROKER_URL": UNREACHABLE}, [*SEND, "--to", "b@example.com"],
     ["--from is required", "MAILQUEUE_DEFAULT_FROM_EMAIL"], ["from_email"]),
]


@pytest.mark.parametrize(
    ("env", "args", "fragments", "absent"),
    [case[1:] for case in IN_WORDS_FOR_PEOPLE],
    ids=[case[0] for case in IN_WORDS_FOR_PEOPLE],
)
def test_an_error_names_what_the_person_set_in_their_words(
    env: dict[str, str], args: list[str], fragments: list[str], absent: list[str],
    tmp_path: Path,
) -> None:
    result = run(args, clean_env(**env), cwd=tmp_path)

    assert_one_error_line(result, *fragments)
    for fragment in absent:
        assert fragment not in result.stderr, result.stderr


def test_a_csv_without_an_email_column_names_the_columns_found(csv_without_email: str) -> None:
    result = run(["campaign", csv_without_email, "--template-id", TEMPLATE],
                 clean_env(MAILQUEUE_BROKER_URL=UNREACHABLE))

    assert_one_error_line(result, "'email' column", "'address', 'name'")


def test_help_works_whatever_the_settings_say() -> None:
    result = run(["--help"], clean_env(MAILQUEUE_RATE_LIMIT="garbage",
                                        MAILQUEUE_REDIS_URL="redis://127.0.0.1:1/0"))

    assert result.returncode == 0, result.stderr
    assert "Usage: mailqueue" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("command", "settings", "announced"),
    [
        ("serve-webhooks", {"MAILTRAP_TRACKING_SECRET": "secret"}, "tracking"),
        ("dashboard", {"MAILQUEUE_DASHBOARD_SECRET": "ops:pass"}, "dashboard"),
    ],
)
def test_a_server_on_a_busy_port_is_one_error_line(
    busy_port: int, command: str, settings: dict[str, str], announced: str
) -> None:
    result = run([command, "--port", str(busy_port)],
                 clean_env(**settings, MAILQUEUE_BROKER_URL=UNREACHABLE))

    # The address it serves is announced first, on its own line; then the failure.
    errors = [line for line in result.stderr.splitlines() if not line.startswith(announced)]
    assert result.returncode == 1
    assert errors == [f"error: --port: cannot listen on 127.0.0.1:{busy_port}: "
                      "Address already in use"]


def test_local_mailtrap_on_a_busy_port_is_one_error_line(busy_port: int) -> None:
    result = run(["local-mailtrap", "--port", str(busy_port)], clean_env())

    assert_one_error_line(result, "--port", "Address already in use")


@pytest.mark.parametrize(
    ("env", "setting"),
    [({}, "MAILTRAP_API_TOKEN"),
     ({"MAILTRAP_API_TOKEN": "t", "MAILQUEUE_RATE_LIMIT": "garbage"}, "MAILQUEUE_RATE_LIMIT")],
    ids=["no token", "malformed setting"],
)
def test_celery_worker_that_cannot_send_exits_at_start_naming_the_setting(
    redis_url: str, tmp_path: Path, env: dict[str, str], setting: str
) -> None:
    result = run(
        ["-A", "mailqueue", "worker", "--pool", "solo", "--loglevel", "WARNING"],
        clean_env(MAILQUEUE_BROKER_URL=redis_url, **env),
        module="celery",
        cwd=tmp_path,  # no celeryconfig module here
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert setting in errors[0]


# -- every command ------------------------------------------------------------


def leaf_commands() -> list[str]:
    """Every command a person can run, as typed after ``mailqueue``."""
    import click

    from mailqueue.cli import cli

    def walk(command: click.Command, path: list[str]) -> Iterator[str]:
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            yield " ".join(path)

    return sorted(walk(cli, []))


# What a person would type to run each command; None: it reads no mailqueue setting.
EVERY_COMMAND: dict[str, list[str] | None] = {
    "campaign cancel": ["spring"],
    "campaign list": [],
    "campaign pause": ["spring"],
    "campaign resume": ["spring"],
    "campaign send": ["{csv}", "--template-id", TEMPLATE, "--from", "a@example.com"],
    "campaign status": ["spring"],
    "dashboard": ["--port", "{port}"],
    "dead-letters list": [],
    "dead-letters purge": ["abc"],
    "dead-letters requeue": ["abc"],
    "demo": [],
    "lanes": [],
    "local-mailtrap": None,
    "reconcile": ["abc"],
    "scheduled cancel": ["abc"],
    "scheduled list": [],
    "scheduled reschedule": ["abc", "2030-01-01T00:00:00Z"],
    "send": ["--from", "a@example.com", "--to", "b@example.com", "--subject", "S", "--text", "T"],
    "serve-webhooks": ["--port", "{port}"],
    "status": ["abc"],
    "suppressions add": ["x@example.com"],
    "suppressions export": [],
    "suppressions import": ["{csv}"],
    "suppressions list": [],
    "suppressions remove": ["x@example.com"],
    "suppressions sync": [],
    "worker": [],
}
# Servers and the worker wait for Redis to come back rather than fail: not in the Redis sweep.
WAITS_FOR_REDIS = {"dashboard", "serve-webhooks", "worker", "demo"}
# One malformed setting per command, in turn: each setting meets several commands.
MALFORMED = [
    ("MAILQUEUE_RATE_LIMIT", "garbage"),
    ("MAILQUEUE_STATUS_TTL", "a month"),
    ("MAILQUEUE_REDIS_URL", "http://127.0.0.1/0"),
    ("MAILTRAP_SANDBOX_ID", "zero"),
    ("MAILQUEUE_KEY_PREFIX", "a {prefix}"),
    ("MAILQUEUE_CONNECT_TIMEOUT", "soon"),
    ("MAILQUEUE_RECONCILE", "maybe"),
]
# What lets each command get as far as its settings: a token, secrets, a Redis that is not there.
GETS_GOING = {
    "MAILTRAP_API_TOKEN": "t",
    "MAILQUEUE_WEBHOOK_SECRET": "hooks:pass",
    "MAILQUEUE_DASHBOARD_SECRET": "ops:pass",
    "MAILQUEUE_BROKER_URL": UNREACHABLE,
}


@pytest.fixture(scope="module")
def command_line(csv_without_email: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("every")
    recipients = folder / "list.csv"
    recipients.write_text("email\nann@example.com\n")

    def argv(command: str) -> list[str]:
        given = EVERY_COMMAND[command] or []
        values = {"{csv}": str(recipients), "{port}": str(free_port())}
        return [*command.split(), *(values.get(arg, arg) for arg in given)]

    return argv


def test_the_sweep_names_every_command() -> None:
    assert sorted(EVERY_COMMAND) == leaf_commands()


SETTLED = [command for command, given in sorted(EVERY_COMMAND.items()) if given is not None]
MALFORMED_FOR = {command: MALFORMED[i % len(MALFORMED)] for i, command in enumerate(SETTLED)}
REDIS_SWEEP = [command for command in SETTLED if command not in WAITS_FOR_REDIS]


@pytest.fixture(scope="module")
def swept(command_line: Any) -> dict[tuple[str, str], subprocess.CompletedProcess[str]]:
    """Every command of the sweeps, each its own ``mailqueue`` process, a few at a time.

    Each process spends most of its time importing: run side by side, the
    sweeps cost about half their one-by-one time.
    """
    cases: dict[tuple[str, str], tuple[list[str], dict[str, str]]] = {}
    for command in EVERY_COMMAND:
        help_env = clean_env(**dict(MALFORMED[:1]), **GETS_GOING)
        cases["help", command] = ([*command.split(), "--help"], help_env)
    for command, (name, value) in MALFORMED_FOR.items():
        malformed_env = clean_env(**GETS_GOING, **{name: value})
        cases["malformed", command] = (command_line(command), malformed_env)
    for command in REDIS_SWEEP:
        cases["redis", command] = (command_line(command), clean_env(**GETS_GOING))
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(run, argv, env) for key, (argv, env) in cases.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize("command", sorted(EVERY_COMMAND))
def test_every_command_shows_its_help_whatever_the_settings_say(
    command: str, swept: dict[tuple[str, str], subprocess.CompletedProcess[str]]
) -> None:
    result = swept["help", command]

    assert result.returncode == 0, result.stderr
    # `worker` shows the options of Celery's worker, which it runs.
    assert result.stdout.startswith("Usage: "), result.stdout
    assert command.split()[-1] in result.stdout.splitlines()[0]
    assert result.stderr == ""


@pytest.mark.parametrize("command", SETTLED)
def test_every_command_refuses_a_malformed_setting_in_one_line_naming_it(
    command: str, swept: dict[tuple[str, str], subprocess.CompletedProcess[str]]
) -> None:
    name, _ = MALFORMED_FOR[command]

    assert_one_error_line(swept["malformed", command], name)


@pytest.mark.parametrize("command", REDIS_SWEEP)
def test_every_command_facing_an_unreachable_redis_names_it_without_its_password(
    command: str, swept: dict[tuple[str, str], subprocess.CompletedProcess[str]]
) -> None:
    result = swept["redis", command]

    assert_one_error_line(result, "Redis at redis://***@127.0.0.1:")
    assert PASSWORD not in result.stdout + result.stderr


def test_a_worker_facing_an_unreachable_redis_names_it_without_its_password(
    tmp_path: Path,
) -> None:
    where = UNREACHABLE.split("@")[1]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "mailqueue", "worker", "--pool", "solo"],
            env=clean_env(MAILTRAP_API_TOKEN="t", MAILQUEUE_BROKER_URL=UNREACHABLE),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 60
        # It keeps trying (Redis may come back); each failed try says where it tried.
        while not any("Cannot connect" in line and where in line for line in lines(log)):
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait()

    assert PASSWORD not in log.read_text()
    assert "Traceback" not in log.read_text()


def lines(path: Path) -> list[str]:
    return path.read_text(errors="replace").splitlines()
