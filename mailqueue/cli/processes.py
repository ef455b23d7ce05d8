"""Commands that run until stopped: a worker, the servers, the local Mailtrap, the demo."""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import click

from mailqueue.cli.errors import CliError
from mailqueue.cli.group import cli
from mailqueue.cli.group import client as current_client
from mailqueue.errors import ConfigurationError
from mailqueue.settings import RateLimit, Settings
from mailqueue.tasks.worker_setup import check_worker_settings
from mailqueue.testing.mailtrap import FAULTS, LocalMailtrap

__all__ = ["dashboard", "demo", "local_mailtrap", "serve_webhooks", "worker"]

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@cli.command(context_settings=_PASS_THROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker: the arguments go to 'celery -A mailqueue worker'."""
    if not {"-h", "--help"} & set(celery_args):
        # The same check runs when Celery starts the worker; here it also
        # catches a malformed setting before Celery prints its own traceback.
        check_worker_settings(Settings.from_process())
    argv = [sys.executable, "-m", "celery", "-A", "mailqueue", "worker", *celery_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _listen_error(host: str, port: int, exc: OSError) -> CliError:
    return CliError(f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}")


def _listening(port: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """The ``--host`` and ``--port`` options of a command serving HTTP (``port`` by default)."""

    def add(command: Callable[..., None]) -> Callable[..., None]:
        command = click.option(
            "--port", default=port, show_default=True, type=click.IntRange(0, 65535)
        )(command)
        return click.option("--host", default="127.0.0.1", show_default=True)(command)

    return add


def _serve(banner: str, serve: Callable[[], None], host: str, port: int) -> None:
    """Announce ``banner`` and run ``serve`` until stopped; a busy port is one error line."""
    click.echo(banner, err=True)
    try:
        serve()
    except OSError as exc:
        raise _listen_error(host, port, exc) from None


def _need_waitress(command: str) -> None:
    try:
        import waitress  # noqa: F401
    except ImportError:
        raise CliError(f"{command} needs waitress: pip install 'mailqueue[webhooks]'") from None


@cli.command("serve-webhooks")
@_listening(8000)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve /metrics on this port of its own, not beside the tracking path.",
)
@click.option("--metrics-host", help="Where the metrics port listens.  [default: --host]")
def serve_webhooks(
    host: str, port: int, metrics_port: int | None, metrics_host: str | None
) -> None:
    """Serve the tracking webhook (POST /mailtrap/tracking/)."""
    _need_waitress("serve-webhooks")
    from mailqueue.webhooks import create_app, serve

    settings = current_client().settings
    create_app(settings)  # refuse to start without credentials, before binding a port
    banner = f"tracking webhook on http://{host}:{port}/mailtrap/tracking/"
    if metrics_port is not None:
        banner += f", metrics on http://{metrics_host or host}:{metrics_port}/metrics"

    def run() -> None:
        serve(settings, host, port, metrics_port=metrics_port, metrics_host=metrics_host)

    _serve(banner, run, host, port)


@cli.command("dashboard")
@_listening(8080)
def dashboard(host: str, port: int) -> None:
    """Serve the web dashboard (needs MAILQUEUE_DASHBOARD_SECRET)."""
    _need_waitress("dashboard")
    from mailqueue.dashboard import create_app, serve

    app = create_app(current_client())  # refuse to start without a secret, before binding a port
    _serve(f"dashboard on http://{host}:{port}/", lambda: serve(app, host, port), host, port)


def _rate_limit(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        limit = RateLimit.parse(value)
    except ConfigurationError:
        raise click.BadParameter(f"expected AMOUNT/PERIOD, e.g. 150/10s, not {value!r}") from None
    return (limit.amount, limit.period)


def _fault_rates(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, float]:
    rates = {}
    for text in values:
        fault, _, rate = text.partition("=")
        try:
            rates[fault] = float(rate)
        except ValueError:
            raise click.BadParameter(
                f"expected FAULT=PROBABILITY, e.g. 500=0.05, not {text!r}"
            ) from None
    return rates


@cli.command("local-mailtrap")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, type=click.IntRange(0, 65535), help="0 picks a free port.")
@click.option("--token", default="local-mailtrap-token", show_default=True)
@click.option("--rate-limit", callback=_rate_limit, metavar="AMOUNT/PERIOD", help="e.g. 150/10s")
@click.option("--retry-after", is_flag=True, help="Send Retry-After on 429.")
@click.option("--latency", default=0.0, type=click.FloatRange(min=0), help="Seconds per request.")
@click.option(
    "--fault-rate",
    "fault_rates",
    multiple=True,
    callback=_fault_rates,
    metavar="FAULT=P",
    help=f"Fault probability per request; faults: {', '.join(FAULTS)}.",
)
@click.option("--slow-seconds", default=3.0, type=click.FloatRange(min=0), show_default=True)
@click.option(
    "--logs-delay",
    default=2.0,
    type=click.FloatRange(min=0),
    show_default=True,
    help="Seconds before an accepted message shows in its Email Logs.",
)
@click.option("--seed", default=0, type=int)
def local_mailtrap(host: str, port: int, slow_seconds: float, **options: Any) -> None:
    """Run a local server speaking Mailtrap's API (for development) until interrupted.

    Prints the settings that point a worker at it, every URL, as export lines.
    """
    try:
        # The other options are named as LocalMailtrap names its arguments.
        mailtrap = LocalMailtrap(host=host, port=port, **options)
    except ValueError as exc:
        raise CliError(f"--fault-rate: {exc}") from None
    mailtrap.slow_seconds = slow_seconds
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        mailtrap.start()
    except OSError as exc:
        raise _listen_error(host, port, exc) from None
    try:
        # Every URL a worker would otherwise send to Mailtrap itself, ready to
        # export (or eval): a set-up that left the bulk URL out would send
        # its campaigns to the real bulk stream.
        for name, value in mailtrap.environment().items():
            click.echo(f"export {name}={shlex.quote(value)}")
        click.echo(
            "local Mailtrap: send and batch (the sandbox too, with MAILTRAP_SANDBOX_ID) on "
            "MAILTRAP_API_URL, the bulk stream on MAILTRAP_BULK_API_URL, Email Logs and "
            "suppressions on MAILTRAP_GENERAL_API_URL",
            err=True,
        )
        while not stopping.wait(0.5):
            pass
    finally:
        mailtrap.stop()
    stats = mailtrap.stats
    click.echo(
        f"served {stats.requests} requests, accepted {stats.messages} messages, "
        f"{stats.rate_limited} rate limited",
        err=True,
    )


@cli.command()
@click.option("--to", multiple=True, metavar="ADDRESS", help="Recipient (with a real token).")
@click.option("--from", "from_email", metavar="ADDRESS", help="Sender (with a real token).")
@click.option("--template-id", metavar="UUID", help="Template for the batch step (real token).")
def demo(to: tuple[str, ...], from_email: str | None, template_id: str | None) -> None:
    """Run the whole pipeline on this machine: Redis, Mailtrap stand-in, worker, webhooks."""
    from mailqueue.demo import run

    try:
        run(to=to, from_email=from_email, template_id=template_id)
    except KeyboardInterrupt:
        click.echo("interrupted; everything the demo started is stopped", err=True)
        sys.exit(130)
