"""What the command line prints: status records, group progress and the fleet's activity as text."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mailqueue.core.views import waiting_for
from mailqueue.store.groups import GroupProgress
from mailqueue.store.waker import Activity

if TYPE_CHECKING:
    from mailqueue.produce.deadletters import DeadLetter
    from mailqueue.reconcile.send_audit import SendReconciliation

__all__ = [
    "counts_line",
    "failed_recipients",
    "format_dead_letters",
    "format_failed_sends",
    "format_group",
    "format_reconciled",
    "format_status",
    "stall_note",
    "table",
]

EVENTS_SHOWN = 10
# A send of more recipients shows their counts and its first failures, not each one.
RECIPIENTS_SHOWN = 20
FAILURES_SHOWN = 10
# Recipient statuses that mean the message did not reach the address.
FAILURE_STATUSES = frozenset({"failed", "bounced", "rejected"})
# A send waiting this long while no drain runs is stalled, not just queued:
# an idle fleet starts a drain within a second of an enqueue.
STALL_AFTER = 10.0
WAITING_STATES = frozenset({"queued", "retrying"})


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> str:
    """Rows under headers, in columns as wide as their widest cell."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def counts_line(counts: Mapping[str, int]) -> str:
    """``queued=3  sent=4``: per-state counts, by name."""
    return "  ".join(f"{state}={count}" for state, count in sorted(counts.items())) or "-"


def format_status(
    record: Mapping[str, Any],
    activity: Activity | None = None,
    ahead: int | None = None,
    *,
    recipients_shown: int | None = RECIPIENTS_SHOWN,
) -> str:
    """A status record as a readable table, with what holds it up when it waits.

    ``ahead``: how many envelopes wait before the send's own, when known. A
    send of more than ``recipients_shown`` recipients (None: no limit) shows
    their counts and its first failures instead of every one.
    """
    lines = [
        f"send      {record['id']}",
        f"state     {record['state']}",
        f"attempts  {record.get('attempts', 0)}",
        f"created   {record.get('created_at') or '-'}",
        f"updated   {record.get('updated_at') or '-'}",
    ]
    if record.get("group"):
        lines.append(f"group     {record['group']}")
    if record.get("next_attempt_at"):
        lines.append(f"next try  {record['next_attempt_at']}")
    if record.get("waiting_for"):
        lines.append(f"waits for {waiting_for(record)}")
    if record.get("possible_duplicates"):
        lines.append(f"possible duplicates  {record['possible_duplicates']}")
    if record.get("reconciled"):
        lines.append(f"found in Email Logs  {record['reconciled']} (a lost answer, not resent)")
    if record.get("reconcile_fallbacks"):
        lines.append(f"look-ups failed      {record['reconcile_fallbacks']} (sent again)")
    if activity is not None and record["state"] in WAITING_STATES:
        lines.append(f"backlog   {_backlog(activity)}")
        if ahead is not None:
            lines.append(f"ahead     {ahead} message(s) queued before it wait for a worker")
        note = stall_note(record, activity)
        if note:
            lines.append(f"note      {note}")
    error = record.get("error")
    if error:
        code = f" {error['status_code']}" if error.get("status_code") is not None else ""
        lines.append(f"error     {error.get('kind')}{code}: {error.get('message')}")
    recipients = record.get("recipients") or {}
    if recipients:
        lines.extend(_recipients(recipients, recipients_shown))
    events = record.get("events") or []
    if events:
        lines.append("recent events")
        rows = [
            [
                str(event.get("timestamp", "")),
                str(event.get("event_type", "")),
                str(event.get("recipient") or "-"),
            ]
            for event in events[:EVENTS_SHOWN]
        ]
        lines.append(table(["TIME", "EVENT", "RECIPIENT"], rows))
    return "\n".join(lines)


def _recipients(recipients: Mapping[str, Any], shown: int | None) -> list[str]:
    """Every recipient when there are at most ``shown``, else their counts and first failures."""
    if shown is None or len(recipients) <= shown:
        return ["recipients", _recipient_table(recipients.items())]
    counts: dict[str, int] = {}
    for info in recipients.values():
        status = str(info.get("status"))
        counts[status] = counts.get(status, 0) + 1
    lines = [f"recipients  {len(recipients)}: {counts_line(counts)}"]
    failures = [item for item in recipients.items() if item[1].get("status") in FAILURE_STATUSES]
    if failures:
        lines.append(f"first failures ({min(len(failures), FAILURES_SHOWN)} of {len(failures)})")
        lines.append(_recipient_table(failures[:FAILURES_SHOWN]))
    lines.append("          (--all lists every recipient, --failed every failure)")
    return lines


def _recipient_table(items: Iterable[tuple[str, Any]]) -> str:
    rows = [
        [address, str(info.get("status")), str(info.get("message_id") or "-")]
        for address, info in items
    ]
    return table(["RECIPIENT", "STATUS", "MESSAGE ID"], rows)


def failed_recipients(record: Mapping[str, Any]) -> str:
    """Every recipient of a send that failed, bounced or was rejected; ``-`` when none did."""
    recipients = record.get("recipients") or {}
    failures = [item for item in recipients.items() if item[1].get("status") in FAILURE_STATUSES]
    return _recipient_table(failures) if failures else "-"


def format_failed_sends(failures: Sequence[Mapping[str, Any]]) -> str:
    """A group's failed sends, one row each: send id, state, its error's start."""
    if not failures:
        return "-"
    rows = []
    for failure in failures:
        error = failure.get("error") or {}
        code = f" {error['status_code']}" if error.get("status_code") is not None else ""
        why = f"{error.get('kind')}{code}: {error.get('message')}" if error else "-"
        rows.append([str(failure["id"]), str(failure["state"]), why[:100]])
    return table(["SEND", "STATE", "ERROR"], rows)


def format_group(
    progress: GroupProgress, activity: Activity | None = None, now: float | None = None
) -> str:
    """A group's progress: how many sends, how many final, per-state counts."""
    lines = [
        f"group     {progress.group_id}",
        f"sends     {progress.total}",
        f"finished  {progress.finished}",
        f"states    {counts_line(progress.by_state)}",
    ]
    if progress.by_state.get("failed") or progress.by_state.get("partially_sent"):
        lines.append("          (--failed lists the sends that failed)")
    if activity is not None and not progress.done:
        lines.append(f"backlog   {_backlog(activity)}")
        idle = activity.idle_for(now)
        note = idle_note(activity, now) if idle is None or idle >= STALL_AFTER else None
        if note:
            lines.append(f"note      {note}")
    return "\n".join(lines)


def format_dead_letters(letters: Sequence[DeadLetter]) -> str:
    """Dead letters, one row each: send id, when it failed, its state, its error's start."""
    rows = [
        [
            letter.send_id,
            _utc(letter.failed_at),
            letter.state or "expired",
            (letter.error["message"] if letter.error else "-")[:80],
        ]
        for letter in letters
    ]
    return table(["SEND ID", "FAILED AT", "STATE", "ERROR"], rows, indent="")


def format_reconciled(results: Sequence[SendReconciliation]) -> str:
    """What Email Logs told about each send: messages, duplicates, recovered outcomes."""
    rows = [[r.send_id, str(r.messages), str(r.duplicates), str(r.recovered)] for r in results]
    return table(["SEND ID", "MESSAGES", "DUPLICATES", "RECOVERED"], rows, indent="")


def _utc(timestamp: float) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _backlog(activity: Activity) -> str:
    drains = f"{activity.live_drains} drain{'s' if activity.live_drains != 1 else ''} running"
    return f"{activity.waiting} message(s) in the outbox waiting for a worker; {drains}"


def stall_note(
    record: Mapping[str, Any], activity: Activity, now: datetime | None = None
) -> str | None:
    """Why a waiting send is not moving, when nothing is draining; None when all is well."""
    if record["state"] not in WAITING_STATES or activity.live_drains:
        return None
    moment = now or datetime.now().astimezone()
    due = _parse(record.get("next_attempt_at"))
    if due is not None and due > moment:
        return None  # waiting for its retry, as it should
    since = _parse(record.get("updated_at"))
    if since is not None and (moment - since).total_seconds() < STALL_AFTER:
        return None
    return idle_note(activity, moment.timestamp())


def idle_note(activity: Activity, now: float | None = None) -> str | None:
    """That no worker is draining, and for how long; None while one is."""
    if activity.live_drains:
        return None
    idle = activity.idle_for(now)
    if idle is None:
        when = "no worker has drained the queue recently"
    else:
        when = f"no worker has drained the queue for {_duration(idle)}"
    return f"{when}: is one running? (mailqueue worker)"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _parse(stamp: Any) -> datetime | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
