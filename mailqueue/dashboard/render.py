"""HTML for each page: a shell with navigation, and the live fragment the script refreshes.

Everything from Redis is escaped. Pictures are inline SVG drawn here, so the
page needs no build step and no script library.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from html import escape
from typing import Any
from urllib.parse import quote

from mailqueue.core.views import duration, waiting_for
from mailqueue.dashboard.views import EXITS, FUNNEL, STATE_CHANGES

__all__ = ["Page", "fragment", "funnel_svg", "page"]

_NAV = (
    ("", "Fleet"),
    ("campaigns", "Campaigns"),
    ("search", "Search"),
    ("dead-letters", "Dead letters"),
    ("suppressions", "Suppressions"),
)

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
header{background:#1d2733;color:#fff;padding:.6em 1em;display:flex;gap:1.2em;align-items:center}
header a{color:#cfe0f5;text-decoration:none}header a.here{color:#fff;font-weight:600}
main{padding:1em 1.4em}table{border-collapse:collapse;background:#fff;margin:.4em 0 1.2em}
td,th{padding:.3em .8em;border-bottom:1px solid #e2e6ea;text-align:left}
.num{text-align:right;font-variant-numeric:tabular-nums}.tiles{display:flex;gap:1em;flex-wrap:wrap}
.tile{background:#fff;padding:.8em 1.2em;border-radius:6px;min-width:9em}
.tile b{display:block;font-size:1.8em}form.inline{display:inline}button{cursor:pointer}
.state-paused{color:#b26b00}.state-cancelled{color:#a33}.state-finished{color:#2a7}
#updated{font-size:.8em;color:#8a97a6;margin-left:auto}
.swatch{display:inline-block;width:.8em;height:.8em;margin-right:.3em;vertical-align:middle}
"""

# Each state's colour in the fleet view's picture of the last hour.
_STATE_COLOURS = {
    "queued": "#9fb3c8",
    "retrying": "#e0a030",
    "sent": "#2a9d5c",
    "partially_sent": "#7cc47f",
    "failed": "#c0504d",
    "cancelled": "#8a6db1",
    "expired": "#6d7b8a",
}
# A campaign's counts of recipients that Mailtrap was never handed (yet).
_NOT_HANDED = frozenset(
    {"waiting", "cancelled", "cancelling", "suppressed", "expired", "failed"}
)
# The pictures of numbers over time, drawn large enough to read.
_CHART_WIDTH, _CHART_HEIGHT = 720, 200


class Page:
    """One page's name, title and the API path its script polls."""

    def __init__(self, name: str, title: str, api: str) -> None:
        self.name, self.title, self.api = name, title, api


def page(base: str, current: Page, body: str) -> bytes:
    """The whole document: navigation, the live fragment, the polling script."""
    links = "".join(
        f'<a href="{escape(base)}/{path}"{" class=here" if path == current.name else ""}>'
        f"{label}</a>"
        for path, label in _NAV
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(current.title)} · mailqueue</title>"
        f"<style>{_STYLE}</style></head><body>"
        f"<header><strong>mailqueue</strong>{links}<span id=updated></span></header>"
        f'<main id=live data-api="{escape(base + current.api)}">{body}</main>'
        f'<script src="{escape(base)}/static/dashboard.js"></script></body></html>'
    ).encode()


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    return "-" if seconds is None else duration(seconds)


def _form(
    base: str, token: str, action: str, fields: Mapping[str, str], label: str, confirm: str = ""
) -> str:
    """A one-button form posting ``action`` on what ``fields`` name, with the CSRF token."""
    hidden = "".join(
        f'<input type=hidden name="{escape(k)}" value="{escape(v)}">'
        for k, v in {**fields, "csrf": token}.items()
    )
    ask = f' data-confirm="{escape(confirm)}"' if confirm else ""
    return (
        f'<form class=inline method=post action="{escape(base)}/action/{action}"{ask}>'
        f'{hidden}<button type=submit name=do value="{escape(action)}">{escape(label)}</button>'
        "</form>"
    )


def _row(*cells: str, numbers_from: int | None = None) -> str:
    """A table row of ``cells``, each already HTML; from index ``numbers_from`` on, numbers."""
    tds = [
        f"<td class=num>{cell}</td>"
        if numbers_from is not None and index >= numbers_from
        else f"<td>{cell}</td>"
        for index, cell in enumerate(cells)
    ]
    return "<tr>" + "".join(tds) + "</tr>"


def _table(headings: Sequence[str], rows: str, *, empty: str = "", table_id: str = "") -> str:
    """A table: its heading row, then ``rows``, or one row saying ``empty`` when there are none."""
    head = "".join(f"<th>{heading}" for heading in headings)
    if not rows and empty:
        rows = f"<tr><td colspan={len(headings)}>{empty}</td></tr>"
    ident = f" id={table_id}" if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{rows}</table>"


def fleet(data: Mapping[str, Any]) -> str:
    rows = "".join(
        _row(
            escape(row["lane"]),
            escape(row["stream"]),
            *(str(row[name]) for name in ("waiting", "in_flight")),
            _age(row["oldest_age"]),
            str(row["campaigns"]),
            str(row.get("paused", 0)),
            numbers_from=2,
        )
        for row in data["lanes"]
    )
    return (
        "<h1>Fleet</h1><div class=tiles>"
        f"<div class=tile id=drains><b>{data['live_drains']}</b>live drains</div>"
        f"<div class=tile id=waiting><b>{data['waiting']}</b>waiting</div>"
        + _limits(data["limits"])
        + f"<div class=tile id=dead><b>{data['dead_letters']}</b>dead letters</div></div>"
        f"<p>Last drain activity: {'now' if data['live_drains'] else _age(data['idle_for'])}</p>"
        + _last_hour(data["last_hour"])
        + "<h2>Backlog per lane and stream</h2>"
        + _table(
            ("lane", "stream", "waiting", "in flight", "oldest entry", "campaigns", "paused"),
            rows,
        )
        + "<h2>Backlog, last hour</h2>"
        + _line_svg("rates", data["backlog_minutes"], "backlog per minute, last hour")
    )


def _limits(limits: Sequence[Mapping[str, Any]]) -> str:
    """A tile per rate limit the workers send under, with the requests in its window now."""
    if not limits:
        return "<div class=tile id=limiter><b>-</b>no worker sent in the last hour</div>"
    tiles = []
    for index, limit in enumerate(limits):
        ident = "limiter" if index == 0 else f"limiter-{index + 1}"
        account = f" · account {escape(limit['account'])}" if limit.get("account") else ""
        cooldown = f" (cool-down {limit['cooldown']}s)" if limit["cooldown"] else ""
        tiles.append(
            f'<div class=tile id={ident} data-token-key="{escape(limit["token_key"])}">'
            f"<b>{limit['used']} / {limit['limit']}</b>"
            f"requests in {limit['period']:g}s{account}{cooldown}</div>"
        )
    return "".join(tiles)


def _line_svg(ident: str, minutes: Sequence[Sequence[Any]], label: str) -> str:
    """A value per minute as a line, oldest on the left; minutes with no sample are skipped."""
    width, height, foot = _CHART_WIDTH, _CHART_HEIGHT, 18
    values = [value for _, value in minutes if value is not None]
    top = max([*values, 1])
    step = width / max(len(minutes) - 1, 1)
    points = [
        f"{index * step:.1f},{height - foot - (height - foot - 6) * value / top:.1f}"
        for index, (_, value) in enumerate(minutes)
        if value is not None
    ]
    shapes = [
        f'<line x1="0" x2="{width}" y1="{height - foot}" y2="{height - foot}" '
        'stroke="#c5ced8"></line>'
    ]
    if points:
        shapes.append(
            f'<polyline points="{" ".join(points)}" fill="none" stroke="#3b7dd8" '
            'stroke-width="2"></polyline>'
        )
    now = "-" if not values or minutes[-1][1] is None else str(minutes[-1][1])
    shapes.append(
        f'<text x=0 y="{height - 3}" font-size=13>60 min ago</text>'
        f'<text x="{width}" y="{height - 3}" font-size=13 text-anchor=end>'
        f"now {now} · peak {max(values) if values else '-'}</text>"
    )
    return (
        f"<svg id={ident} width={width} height={height} role=img "
        f'aria-label="{escape(label)}">{"".join(shapes)}</svg>'
    )


def _bars_svg(ident: str, minutes: Sequence[Sequence[Any]], label: str, colour: str) -> str:
    """A bar per minute, oldest on the left."""
    width, height, foot = _CHART_WIDTH, _CHART_HEIGHT, 18
    top = max([count for _, count in minutes] + [1])
    step = width / max(len(minutes), 1)
    shapes = []
    for index, (_, count) in enumerate(minutes):
        if not count:
            continue
        tall = (height - foot - 4) * count / top
        shapes.append(
            f'<rect x="{index * step + 1:.1f}" y="{height - foot - tall:.1f}" '
            f'width="{max(step - 2, 1):.1f}" height="{tall:.1f}" fill="{colour}">'
            f"<title>{count}</title></rect>"
        )
    total = sum(count for _, count in minutes)
    shapes.append(
        f'<text x=0 y="{height - 3}" font-size=13>60 min ago</text>'
        f'<text x="{width}" y="{height - 3}" font-size=13 text-anchor=end>'
        f"now · {total} in the hour · peak {top}/min</text>"
    )
    return (
        f"<svg id={ident} width={width} height={height} role=img "
        f'aria-label="{escape(label)}">{"".join(shapes)}</svg>'
    )


def _last_hour(hour: Mapping[str, Any]) -> str:
    """Sends by state over the last hour: the totals, and a bar per minute stacked by state."""
    totals = hour["totals"]
    legend = " ".join(
        f'<span class=tile data-state="{state}"><span class=swatch '
        f'style="background:{_STATE_COLOURS[state]}"></span>{escape(state)} '
        f"<b>{totals.get(state, 0)}</b></span>"
        for state in STATE_CHANGES
    )
    return (
        "<h2>Sends by state, last hour</h2>"
        f"<div class=tiles id=last-hour>{legend}</div>" + _minutes_svg(hour["minutes"])
    )


def _minutes_svg(minutes: Sequence[Sequence[Any]]) -> str:
    """One column per minute, oldest on the left, its state changes stacked."""
    width, height, foot = _CHART_WIDTH, _CHART_HEIGHT, 18
    top = max([sum(counts.values()) for _, counts in minutes] + [1])
    step = width / max(len(minutes), 1)
    shapes = []
    for index, (_, counts) in enumerate(minutes):
        y = float(height - foot)
        for state in STATE_CHANGES:
            count = counts.get(state, 0)
            if not count:
                continue
            tall = (height - foot - 4) * count / top
            y -= tall
            shapes.append(
                f'<rect x="{index * step + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                f'height="{tall:.1f}" fill="{_STATE_COLOURS[state]}">'
                f"<title>{escape(state)}: {count}</title></rect>"
            )
    shapes.append(
        f'<text x=0 y="{height - 3}" font-size=13>60 min ago</text>'
        f'<text x="{width}" y="{height - 3}" font-size=13 text-anchor=end>now · peak {top}/min'
        "</text>"
    )
    return (
        f'<svg id=last-hour-chart width={width} height={height} role=img '
        f'aria-label="sends by state per minute, last hour">{"".join(shapes)}</svg>'
    )


def funnel_svg(counts: Mapping[str, int], recipients: int) -> str:
    """Horizontal bars: every recipient, how many reached each step (cumulative), then the rest.

    The rest is what has not reached Mailtrap: those still waiting, and the ways
    out (bounced, suppressed, cancelled, ...), each under its own name.
    """
    # A recipient is counted where it is now; it passed every step before that.
    reached = {step: sum(counts.get(s, 0) for s in FUNNEL[i:]) for i, step in enumerate(FUNNEL)}
    reached["sent"] += counts.get("bounced", 0) + counts.get("complained", 0)
    rows = [("recipients", recipients, "#3b7dd8")]
    rows += [(s, reached[s], "#3b7dd8") for s in FUNNEL if s != "waiting"]
    if counts.get("waiting", 0):
        rows.append(("waiting", counts["waiting"], "#9fb3c8"))
    rows += [(s, counts.get(s, 0), "#c0504d") for s in EXITS if counts.get(s, 0)]
    top = max([recipients, *[n for _, n, _ in rows]]) or 1
    height = 26 * len(rows) + 4
    bars = []
    for index, (label, count, colour) in enumerate(rows):
        y = 26 * index + 2
        width = round(300 * count / top)
        bars.append(
            f'<text x=0 y="{y + 16}" font-size=13>{escape(label)}</text>'
            f'<rect x=100 y="{y}" width="{width}" height=20 fill="{colour}"></rect>'
            f'<text x="{106 + width}" y="{y + 16}" font-size=13 data-step="{escape(label)}">'
            f"{count}</text>"
        )
    return (
        f'<svg class=funnel width=480 height="{height}" role=img aria-label="campaign funnel">'
        f"{''.join(bars)}</svg>"
    )


def _what_happened(record: Mapping[str, Any]) -> str:
    """One sentence for a campaign that stopped: how many went out, how many never will."""
    counts = record["counts"]
    if record["state"] != "cancelled":
        return ""
    never = counts.get("cancelled", 0)
    stopping = counts.get("cancelling", 0)
    handed = sum(reached for step, reached in counts.items() if step not in _NOT_HANDED)
    ending = f"; {stopping} being stopped by the workers" if stopping else ""
    return (
        f"<p id=outcome>Cancelled: {handed} of {record['recipients']} recipients were handed "
        f"to Mailtrap before the cancel, {never} never will be{ending}.</p>"
    )


def _rate(record: Mapping[str, Any]) -> str:
    rate = record.get("rate_per_second")
    return "-" if rate is None else f"{rate:g}/s"


def _eta(record: Mapping[str, Any]) -> str:
    eta = record.get("eta_seconds")
    return "-" if eta is None else duration(eta)


def campaigns(base: str, records: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        f'<tr><td><a href="{escape(base)}/campaigns/{quote(r["name"], safe="")}">'
        f'{escape(r["name"])}</a></td><td class="state-{escape(r["state"])}">'
        f"{escape(r['state'])}</td><td class=num>{r['recipients']}</td>"
        f"<td class=num>{r['counts'].get('waiting', 0)}</td><td class=num>{_rate(r)}</td>"
        f"<td class=num>{_eta(r)}</td></tr>"
        for r in records
    )
    headings = ("name", "state", "recipients", "waiting", "rate", "ETA")
    return "<h1>Campaigns</h1>" + _table(headings, rows, empty="none yet")


def campaign(base: str, record: Mapping[str, Any] | None, token: str) -> str:
    if record is None:
        return "<h1>Campaign</h1><p>No such campaign.</p>"
    name, state = record["name"], record["state"]
    fields = {"name": name}
    buttons = []
    if state == "running":
        buttons.append(_form(base, token, "pause", fields, "Pause"))
    if state == "paused":
        buttons.append(_form(base, token, "resume", fields, "Resume"))
    if state in ("running", "paused"):
        buttons.append(_form(base, token, "cancel", fields, "Cancel", f"Cancel campaign {name}?"))
    reason = f" ({escape(record['reason'])})" if record.get("reason") else ""
    return (
        f"<h1>Campaign {escape(name)}</h1>"
        f'<p>State: <strong id=state class="state-{escape(state)}">{escape(state)}</strong>'
        f"{reason} · {record['recipients']} recipients · rate {_rate(record)} · "
        f"ETA {_eta(record)}</p><p>{' '.join(buttons)}</p>"
        f"{_what_happened(record)}"
        f"{funnel_svg(record['counts'], record['recipients'])}"
        "<h2>Handed to Mailtrap, last hour</h2>"
        + _bars_svg(
            "handed",
            record.get("handed_minutes") or [],
            "recipients handed to Mailtrap per minute, last hour",
            "#3b7dd8",
        )
    )


def search(query: str, found: Mapping[str, Any]) -> str:
    form = (
        '<h1>Search</h1><form method=get><input name=q size=48 placeholder="send id or address"'
        f' value="{escape(query)}"> <button>Search</button></form>'
    )
    if not query:
        return form
    send = found.get("send")
    if send is not None:
        return form + _send(send)
    if "@" in query:
        entry = found.get("suppression")
        said = (
            f"suppressed ({escape(entry['reason'])}, {escape(entry['stream'] or 'all streams')},"
            f" since {escape(entry['created_at'])})"
            if entry
            else "not suppressed"
        )
        rows = "".join(
            _row(
                f'<a href="?q={quote(s["id"], safe="")}">{escape(s["id"])}</a>',
                escape(str(s["state"])),
                escape(str(s["status"] or "")),
                escape(str(s["created_at"] or "")),
            )
            for s in found.get("sends", [])
        )
        sends = _table(
            ("send", "state", "this recipient", "created"),
            rows,
            empty="no recent lone send (campaign recipients are not indexed one by one)",
            table_id="address-sends",
        )
        return form + f"<p>{escape(query)}: {said}.</p><h2>Recent sends</h2>{sends}"
    return form + "<p>No send with that id (it may have expired).</p>"


def _send(record: Mapping[str, Any]) -> str:
    error = record.get("error")
    recipients = "".join(
        _row(*map(escape, (address, str(info.get("status")), str(info.get("message_id") or ""))))
        for address, info in record.get("recipients", {}).items()
    )
    events = "".join(
        _row(
            *(
                escape(str(event.get(name) or ""))
                for name in ("timestamp", "event_type", "recipient")
            ),
            escape(json.dumps(_detail(event), sort_keys=True)),
        )
        for event in record.get("events", [])
    )
    return (
        f"<h2 id=send>Send {escape(record['id'])}</h2>"
        f"<p>State: <strong>{escape(record['state'])}</strong> · attempts {record['attempts']}"
        f" · created {escape(str(record.get('created_at')))}"
        f" · updated {escape(str(record.get('updated_at')))}"
        f"{' · campaign ' + escape(record['campaign']) if record.get('campaign') else ''}"
        f"{' · waits for ' + escape(waiting_for(record)) if record.get('waiting_for') else ''}</p>"
        + (f"<p>Error: {escape(json.dumps(error, sort_keys=True))}</p>" if error else "")
        + "<h3>Recipients</h3>"
        + _table(("address", "status", "message id"), recipients)
        + "<h3>History</h3>"
        + _table(
            ("when", "event", "recipient", "detail"),
            events,
            empty="no events yet",
            table_id="history",
        )
    )


_SHOWN_APART = frozenset({"timestamp", "event_type", "recipient"})
# Events carry no body today; a future field must not leak one here.
_NEVER_SHOWN = frozenset({"text", "html", "body", "content"})


def _detail(event: Mapping[str, Any]) -> dict[str, Any]:
    """The event's other non-empty fields."""
    return {
        k: v
        for k, v in event.items()
        if v not in (None, "", [], {}) and k not in _SHOWN_APART and k not in _NEVER_SHOWN
    }


# The buttons of a listing's rows, each acting on one field of its entry:
# (action, label, question asked before it is done).
_DEAD_LETTER_ACTIONS = (
    ("requeue", "Requeue", "Send {} again?"),
    ("purge", "Purge", "Forget {} for good?"),
)
_SUPPRESSION_ACTIONS = (("unsuppress", "Unsuppress", "Send to {} again?"),)


def _buttons(
    base: str, token: str, field: str, value: str, actions: Sequence[tuple[str, str, str]]
) -> str:
    return " ".join(
        _form(base, token, action, {field: value}, label, question.format(value))
        for action, label, question in actions
    )


def dead_letters(base: str, letters: Sequence[Mapping[str, Any]], token: str) -> str:
    rows = "".join(
        _row(
            escape(letter["send_id"]),
            _when(letter["failed_at"]),
            escape(str(letter["state"])),
            escape(json.dumps(letter["error"], sort_keys=True) if letter["error"] else ""),
            _buttons(base, token, "send_id", letter["send_id"], _DEAD_LETTER_ACTIONS),
        )
        for letter in letters
    )
    headings = ("send id", "failed at", "state", "error", "")
    return "<h1>Dead letters</h1>" + _table(headings, rows, empty="none")


def suppressions(base: str, entries: Sequence[Mapping[str, Any]], token: str) -> str:
    rows = "".join(
        _row(
            *map(escape, (e["address"], e["reason"], e["stream"] or "all", e["created_at"])),
            _buttons(base, token, "address", e["address"], _SUPPRESSION_ACTIONS),
        )
        for e in entries
    )
    headings = ("address", "reason", "stream", "since", "")
    return "<h1>Suppressions</h1>" + _table(headings, rows, empty="none")


def fragment(html: str, data: Any) -> bytes:
    """The JSON the script polls: the refreshed fragment and the numbers behind it."""
    return json.dumps({"html": html, "data": data}, default=str).encode()
