"""The ``mailqueue`` command line: parses arguments, calls the library, prints.

Every mistake a person can make -- a malformed message or setting, a missing
file, an unreachable Redis, a busy port, a bad flag -- prints one
``error: ...`` line naming the field, setting or file, never a traceback:
status 1 for what the library refuses, 2 for a command line click cannot
parse. Nothing printed ever holds the API token or a Redis password.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import mimetypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar, cast

import click
import redis

from .activity import fleet_activity
from .campaign_csv import (
    Recipient,
    individual_messages,
    read_recipients,
    recipient_of,
)
from .campaign_file import queue_campaign_file
from .cli_errors import CliError
from .cli_steering import register as register_steering
from .cli_views import counts_line, format_group, format_status, stall_note, table
from .client import Client
from .connection import mask_url
from .errors import BrokerUnavailable, ConfigurationError, MailqueueError, ValidationError
from .groups import SendIds, get_batch_progress, get_group
from .lane_metrics import format_lanes
from .records import FINAL_STATES
from .routing import Stream
from .send_audit import reconcile_doubtful, reconcile_send
from .settings import RateLimit, Settings
from .testing.mailtrap import FAULTS, LocalMailtrap
from .worker_checks import check_worker_settings

__all__ = ["cli", "main", "message_from_options"]

T = TypeVar("T")


def _field_error(exc: ValidationError) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    if exc.field and exc.field not in text:
        return f"{exc.field}: {text}"
    return text


def describe(exc: BaseException) -> str:
    """One line for a library error: what failed, naming the field, setting or URL."""
    if isinstance(exc, ValidationError):
        text = _field_error(exc)
        return f"messages[{exc.index}]: {text}" if exc.index is not None else text
    if isinstance(exc, ConfigurationError):
        text = str(exc)
        return text if not exc.setting or exc.setting in text else f"{exc.setting}: {text}"
    if isinstance(exc, (BrokerUnavailable, redis.RedisError)):
        text = str(exc) if isinstance(exc, BrokerUnavailable) else type(exc).__name__
        if "://" not in text:
            text = f"{text} (Redis at {_redis_url()})"
        return text if text.startswith("cannot") else f"cannot reach Redis: {text}"
    return str(exc) or type(exc).__name__


def _redis_url() -> str:
    try:
        return mask_url(_client().settings.status_redis_url)
    except MailqueueError:
        return "an unknown URL"


class _Commands(click.Group):
    """The command group: library errors raised by any command become one ``error:`` line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except (MailqueueError, redis.RedisError) as exc:
            raise CliError(describe(exc)) from None


def _client() -> Client:
    """The client the environment (or ``mailqueue.configure``) describes."""
    from .client import default as current

    return current()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mailqueue")
def cli() -> None:
    """Queued email delivery through Mailtrap's Email API, on Celery and Redis."""


# -- send -----------------------------------------------------------------


def _read_text(path: str, option: str) -> str:
    try:
        if path == "-":
            return sys.stdin.read()
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{option}: cannot read {path!r}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _attachment(path: str, index: int) -> dict[str, Any]:
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"--attach[{index}]: cannot read {path!r}: {_reason(exc)}") from None
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return {
        "filename": Path(path).name,
        "content": base64.b64encode(content).decode("ascii"),
        "mimetype": mimetype,
    }


def _key_values(pairs: Sequence[str], option: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for index, pair in enumerate(pairs):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"{option}[{index}]: expected KEY=VALUE, got {pair!r}")
        values[key] = value
    return values


def message_from_options(
    *,
    from_email: str | None = None,
    to: Sequence[str] = (),
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    subject: str | None = None,
    text: str | None = None,
    html: str | None = None,
    template_id: str | None = None,
    tags: Sequence[str] = (),
    metadata: Sequence[str] = (),
    attach: Sequence[str] = (),
) -> dict[str, Any]:
    """The message dict the ``send`` flags describe (only the keys given)."""
    message: dict[str, Any] = {}
    scalars = {
        "from_email": from_email,
        "subject": subject,
        "text": text,
        "html": html,
        "template_id": template_id,
    }
    message.update({key: value for key, value in scalars.items() if value is not None})
    lists = {"to": to, "cc": cc, "bcc": bcc, "tags": tags}
    message.update({key: list(value) for key, value in lists.items() if value})
    if metadata:
        message["metadata"] = _key_values(metadata, "--metadata")
    if attach:
        message["attachments"] = [_attachment(path, i) for i, path in enumerate(attach)]
    return message


def _message_from_json(source: str) -> dict[str, Any]:
    text = _read_text(source, "--json")
    try:
        message = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"--json: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(message, dict):
        raise CliError("--json: the message must be a JSON object")
    return message


@cli.command()
@click.option("--from", "from_email", metavar="ADDRESS", help="Sender, 'Name <a@b>' or 'a@b'.")
@click.option("--to", multiple=True, metavar="ADDRESS", help="Recipient (repeatable).")
@click.option("--cc", multiple=True, metavar="ADDRESS", help="Cc recipient (repeatable).")
@click.option("--bcc", multiple=True, metavar="ADDRESS", help="Bcc recipient (repeatable).")
@click.option("--subject")
@click.option("--text", help="Plain-text body.")
@click.option("--html", help="HTML body.")
@click.option("--template-id", metavar="UUID", help="Mailtrap template UUID.")
@click.option("--tag", "tags", multiple=True, help="Category (Mailtrap keeps one).")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Custom variable.")
@click.option("--attach", multiple=True, metavar="PATH", help="Attach a file (repeatable).")
@click.option(
    "--json", "json_source", metavar="FILE", help="Read the whole message as JSON ('-': stdin)."
)
@click.option("--idempotency-key", help="Enqueue nothing if this key was used before.")
def send(
    from_email: str | None,
    to: tuple[str, ...],
    cc: tuple[str, ...],
    bcc: tuple[str, ...],
    subject: str | None,
    text: str | None,
    html: str | None,
    template_id: str | None,
    tags: tuple[str, ...],
    metadata: tuple[str, ...],
    attach: tuple[str, ...],
    json_source: str | None,
    idempotency_key: str | None,
) -> None:
    """Queue one message and print its send id."""
    flags = message_from_options(
        from_email=from_email,
        to=to,
        cc=cc,
        bcc=bcc,
        subject=subject,
        text=text,
        html=html,
        template_id=template_id,
        tags=tags,
        metadata=metadata,
        attach=attach,
    )
    # Flags given beside --json override the file's keys.
    message = {**_message_from_json(json_source), **flags} if json_source is not None else flags
    click.echo(_client().enqueue(message, idempotency_key=idempotency_key))


# -- status ---------------------------------------------------------------


@cli.command()
@click.argument("send_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.option("--watch", is_flag=True, help="Refresh until the send (or group) is final.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds --watch waits.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes.")
def status(send_id: str, as_json: bool, watch: bool, timeout: float, interval: float) -> None:
    """Show the status of a send, or the progress of a group of sends (campaign --individual)."""
    client = _client()

    def view() -> tuple[str, bool, str]:
        """The text shown, whether it is final, and what it waits for."""
        record = client.get_status(send_id)
        if record is not None:
            activity = None if as_json else fleet_activity(client)
            text = json.dumps(record, indent=2) if as_json else format_status(record, activity)
            waiting = f"send still {record['state']}"
            return text, record["state"] in FINAL_STATES, _stalled(waiting, record, client)
        group = get_group(client, send_id)
        if group is None:
            raise CliError(f"ID: no send or group {send_id!r} (unknown or expired)")
        if as_json:
            text = json.dumps({"group": group.group_id, "sends": group.total,
                               "finished": group.finished, "counts": dict(group.counts)},
                              indent=2)
        else:
            text = format_group(group, fleet_activity(client))
        waiting = f"group has {group.total - group.finished} of {group.total} sends not final"
        return text, group.done, waiting

    _watch(view, watch=watch, timeout=timeout, interval=interval, blank_between=not as_json)


def _stalled(waiting: str, record: Mapping[str, Any], client: Client) -> str:
    if record["state"] in FINAL_STATES:
        return waiting
    note = stall_note(record, fleet_activity(client))
    return f"{waiting} ({note})" if note else waiting


def _watch(
    view: Callable[[], tuple[str, bool, str]],
    *,
    watch: bool,
    timeout: float,
    interval: float,
    blank_between: bool = True,
) -> None:
    """Print ``view`` once, or (``watch``) each time it changes until it is final."""
    deadline = time.monotonic() + timeout
    last: str | None = None
    while True:
        text, final, waiting = view()
        if text != last:
            if last is not None and blank_between:
                click.echo()
            click.echo(text)
            last = text
        if final or not watch:
            return
        if time.monotonic() >= deadline:
            raise CliError(f"--timeout: {waiting} after {timeout:g} s")
        time.sleep(max(interval, 0.05))


# -- lanes ----------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def lanes(as_json: bool) -> None:
    """Work waiting per lane and Mailtrap stream: backlog, in flight, oldest age."""
    stats = _client().lane_stats()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(entry) for entry in stats], indent=2))
        return
    for line in format_lanes(stats):
        click.echo(line)


# -- campaign -------------------------------------------------------------


@click.command("send")
@click.argument("csv_path", metavar="CSV")
@click.option("--template-id", required=True, metavar="UUID", help="Mailtrap template UUID.")
@click.option("--from", "from_email", metavar="ADDRESS", help="Sender address.")
@click.option("--individual", is_flag=True, help="One message per row instead of one batch send.")
@click.option("--name", metavar="NAME", help="Campaign name, to follow, pause, resume or cancel.")
@click.option(
    "--stream",
    type=click.Choice(["bulk", "transactional"]),
    default="bulk",
    show_default=True,
    help="Mailtrap's sending stream: promotional mail must use bulk.",
)
@click.option("--account", metavar="NAME", help="A configured account (MAILQUEUE_ACCOUNTS).")
@click.option("--follow", is_flag=True, help="Show per-state counts until every send is final.")
@click.option("--timeout", default=600.0, show_default=True, help="Seconds --follow waits.")
def campaign(
    csv_path: str,
    template_id: str,
    from_email: str | None,
    individual: bool,
    name: str | None,
    stream: str,
    account: str | None,
    follow: bool,
    timeout: float,
) -> None:
    """Send a template to every row of CSV (an 'email' column plus merge columns).

    Prints the id to follow with 'mailqueue status': the batch send's, or
    with --individual the group's. With --name, 'mailqueue campaign status
    NAME' follows it too, and pause, resume and cancel steer it.
    """
    client = _client()
    routing = {"stream": stream, **({"account": account} if account else {})}
    if individual:
        recipients = read_recipients(_read_text(csv_path, "CSV"), source=csv_path)
        messages = [
            {**message, **routing}
            for message in individual_messages(recipients, template_id, from_email)
        ]
        ids = _row_errors(recipients, lambda: client.enqueue_many(messages, campaign=name))
        click.echo(f"queued {len(ids)} sends in group {ids.group_id}", err=True)
        click.echo(ids.group_id)
        progress = functools.partial(_group_line, client, ids)
    else:
        send_id = _queue_file(client, csv_path, template_id, from_email, routing, name)
        click.echo(send_id)
        progress = functools.partial(_batch_line, client, send_id)
    if follow:
        _follow(progress, timeout)


def _queue_file(
    client: Client,
    csv_path: str,
    template_id: str,
    from_email: str | None,
    routing: Mapping[str, Any],
    name: str | None,
) -> str:
    """Queue the file as one batch send, streamed; a live count on a terminal."""
    live = sys.stderr.isatty()

    def show(phase: str, count: int) -> None:
        if live:
            click.echo(f"\r{phase} {count:,} recipients", nl=False, err=True)

    try:
        queued = queue_campaign_file(
            client, csv_path, template_id,
            from_email=from_email, routing=routing, campaign=name, progress=show,
        )  # fmt: skip
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"CSV: cannot read {csv_path!r}: {_reason(exc)}") from None
    finally:
        if live:
            click.echo(err=True)
    if queued.already_queued:
        click.echo(f"send {queued.send_id} was queued already: nothing queued again", err=True)
    elif queued.resumed_from:
        click.echo(
            f"queued the {queued.parts - queued.resumed_from} parts of {queued.parts} "
            f"an interrupted run had left", err=True,
        )  # fmt: skip
    return queued.send_id


def _row_errors(recipients: Sequence[Recipient], enqueue: Callable[[], T]) -> T:
    """Run ``enqueue``; a validation error names the CSV row it is about."""
    try:
        return enqueue()
    except ValidationError as exc:
        row = recipient_of(exc, recipients)
        if row is None:
            raise
        raise CliError(f"row {row.line} ({row.email}): {_field_error(exc)}") from None


def _group_line(client: Client, ids: SendIds) -> tuple[str, bool]:
    group = get_group(client, ids.group_id or "")
    if group is None:
        raise CliError(f"the group {ids.group_id} expired")
    return counts_line(group.counts), group.done


def _batch_line(client: Client, send_id: str) -> tuple[str, bool]:
    progress = get_batch_progress(client, send_id)
    if progress is None:
        raise CliError(f"the send {send_id} expired")
    return counts_line({**progress.recipients, f"send:{progress.state}": 1}), progress.done


def _follow(progress: Callable[[], tuple[str, bool]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        line, done = progress()
        if line != last:
            click.echo(line)
            last = line
        if done:
            return
        if time.monotonic() >= deadline:
            raise CliError(f"--timeout: campaign not finished after {timeout:g} s")
        time.sleep(0.5)


# -- dead letters ---------------------------------------------------------


@cli.group("dead-letters")
def dead_letters() -> None:
    """Sends that failed for good: list, requeue or purge them."""


def _when(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@dead_letters.command("list")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def dead_letters_list(limit: int, as_json: bool) -> None:
    """List dead-lettered sends, oldest first."""
    letters = _client().list_dead_letters(limit)
    if as_json:
        click.echo(json.dumps([letter.__dict__ for letter in letters], indent=2))
        return
    if not letters:
        click.echo("no dead letters")
        return
    rows = [
        [
            letter.send_id,
            _when(letter.failed_at),
            letter.state or "expired",
            (letter.error["message"] if letter.error else "-")[:80],
        ]
        for letter in letters
    ]
    click.echo(table(["SEND ID", "FAILED AT", "STATE", "ERROR"], rows, indent=""))


def _chosen(send_ids: tuple[str, ...], all_: bool) -> list[str] | None:
    if all_ and send_ids:
        raise CliError("SEND_ID: give send ids or --all, not both")
    if not all_ and not send_ids:
        raise CliError("SEND_ID: give at least one send id, or --all")
    return None if all_ else list(send_ids)


@dead_letters.command("requeue")
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Requeue every dead letter.")
def dead_letters_requeue(send_ids: tuple[str, ...], all_: bool) -> None:
    """Send dead-lettered sends again."""
    chosen = _chosen(send_ids, all_)
    count = _client().requeue_dead_letters(chosen)
    click.echo(f"requeued {count} send(s)")
    if chosen is not None and count < len(chosen):
        raise CliError(f"SEND_ID: {len(chosen) - count} of the ids given are not dead letters")


@dead_letters.command("purge")
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Forget every dead letter.")
def dead_letters_purge(send_ids: tuple[str, ...], all_: bool) -> None:
    """Forget dead letters (their status records stay until they expire)."""
    count = _client().purge_dead_letters(_chosen(send_ids, all_))
    click.echo(f"purged {count} dead letter(s)")


# -- reconcile ------------------------------------------------------------


@cli.command()
@click.argument("send_ids", nargs=-1, metavar="SEND_ID...")
@click.option("--all", "all_", is_flag=True, help="Every send whose outcome was in doubt.")
@click.option(
    "--stream",
    type=click.Choice(["transactional", "bulk"]),
    default="transactional",
    show_default=True,
    help="The stream whose token reads the logs.",
)
@click.option("--account", help="The named account whose token reads the logs.")
def reconcile(send_ids: tuple[str, ...], all_: bool, stream: str, account: str | None) -> None:
    """Ask Mailtrap's Email Logs what sends really did (after an incident)."""
    chosen = _chosen(send_ids, all_)
    client = _client()
    which = cast(Stream, stream)
    if chosen is None:
        results = reconcile_doubtful(client, stream=which, account=account)
    else:
        results = []
        for send_id in chosen:
            result = reconcile_send(client, send_id, stream=which, account=account)
            if result is None:
                raise CliError(f"SEND_ID: no send {send_id!r}")
            results.append(result)
    if not results:
        click.echo("no doubtful sends")
        return
    rows = [[r.send_id, str(r.messages), str(r.duplicates), str(r.recovered)] for r in results]
    click.echo(table(["SEND ID", "MESSAGES", "DUPLICATES", "RECOVERED"], rows, indent=""))


# -- processes ------------------------------------------------------------

_PASS_THROUGH = {"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []}


@cli.command(context_settings=_PASS_THROUGH)
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker: the arguments go to 'celery -A mailqueue worker'."""
    if not {"-h", "--help"} & set(celery_args):
        # The same check runs when Celery starts the worker; here it also
        # catches a malformed setting before Celery prints its own traceback.
        check_worker_settings(Settings.from_env())
    argv = [sys.executable, "-m", "celery", "-A", "mailqueue", "worker", *celery_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def _listen_error(host: str, port: int, exc: OSError) -> CliError:
    return CliError(f"--port: cannot listen on {host}:{port}: {exc.strerror or exc}")


@cli.command("serve-webhooks")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
def serve_webhooks(host: str, port: int) -> None:
    """Serve the tracking webhook (POST /mailtrap/tracking/)."""
    try:
        import waitress  # noqa: F401
    except ImportError:
        raise CliError(
            "serve-webhooks needs waitress: pip install 'mailqueue[webhooks]'"
        ) from None
    from .webhooks import create_app, serve

    settings = _client().settings
    create_app(settings)  # refuse to start without credentials, before binding a port
    click.echo(f"tracking webhook on http://{host}:{port}/mailtrap/tracking/", err=True)
    try:
        serve(settings, host, port)
    except OSError as exc:
        raise _listen_error(host, port, exc) from None


@cli.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
def dashboard(host: str, port: int) -> None:
    """Serve the web dashboard (needs MAILQUEUE_DASHBOARD_SECRET)."""
    try:
        import waitress  # noqa: F401
    except ImportError:
        raise CliError("dashboard needs waitress: pip install 'mailqueue[webhooks]'") from None
    from .dashboard import create_app, serve

    app = create_app(_client())  # refuse to start without a secret, before binding a port
    click.echo(f"dashboard on http://{host}:{port}/", err=True)
    try:
        serve(app, host, port)
    except OSError as exc:
        raise _listen_error(host, port, exc) from None


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
def local_mailtrap(
    host: str,
    port: int,
    token: str,
    rate_limit: tuple[int, float] | None,
    retry_after: bool,
    latency: float,
    fault_rates: dict[str, float],
    slow_seconds: float,
    logs_delay: float,
    seed: int,
) -> None:
    """Run a local server speaking Mailtrap's API (for development) until interrupted."""
    try:
        mailtrap = LocalMailtrap(
            token=token,
            host=host,
            port=port,
            rate_limit=rate_limit,
            retry_after=retry_after,
            latency=latency,
            fault_rates=fault_rates,
            seed=seed,
            logs_delay=logs_delay,
        )
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
        click.echo(mailtrap.url)
        click.echo(f"Email Logs (MAILTRAP_GENERAL_API_URL): {mailtrap.general_url}", err=True)
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
    from .demo import run

    try:
        run(to=to, from_email=from_email, template_id=template_id)
    except KeyboardInterrupt:
        click.echo("interrupted; everything the demo started is stopped", err=True)
        sys.exit(130)


register_steering(cli, campaign)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``mailqueue`` command: one ``error:`` line for every mistake."""
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="mailqueue",
            standalone_mode=False,
        )
    except click.exceptions.Abort:
        _fail("interrupted", 130)
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        _fail(exc.format_message() + hint, exc.exit_code)
    except click.ClickException as exc:
        _fail(exc.format_message(), exc.exit_code)
    except (MailqueueError, redis.RedisError) as exc:
        _fail(describe(exc), 1)
    except BrokenPipeError:
        # The reader of our output went away (``mailqueue status ... | head``).
        sys.stderr.close()
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)
