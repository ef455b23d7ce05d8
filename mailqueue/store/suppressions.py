"""Addresses mailqueue must not mail: kept in Redis, checked when a worker claims a send.

One hash holds every suppression, keyed by the address in its comparable
form (case-folded, IDNA domain: ``addresses.comparable``), so that
``Alice@Bücher.example`` and ``alice@xn--bcher-kva.example`` are one entry.
A suppression covers every stream, or only one: an unsubscribe concerns the
bulk stream (marketing) and must not stop a password reset.

Tracking events feed it (``note_events``): hard bounces and spam complaints
suppress on every stream, unsubscribes on the bulk stream, and soft bounces
once an address has had ``soft_bounce_limit`` of them within
``soft_bounce_days``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import IO, TYPE_CHECKING, Any, TypedDict, cast

import redis

from mailqueue.core.addresses import comparable, parse_address_list
from mailqueue.core.csv_table import (
    Repeats,
    SeenAddresses,
    neutralize_formula,
    one_address,
    open_table,
    restore_formula,
)
from mailqueue.errors import ValidationError
from mailqueue.store.base import RedisStore, lua_script, translated
from mailqueue.store.keys import Keys

if TYPE_CHECKING:
    from mailqueue.core.events import TrackingEvent

__all__ = [
    "CSV_COLUMNS",
    "STREAMS",
    "SUPPRESSING_EVENTS",
    "Suppression",
    "SuppressionList",
    "normalize_stream",
    "read_csv",
    "write_csv",
]

# The columns ``write_csv`` writes, which ``read_csv`` reads back.
CSV_COLUMNS = ("address", "reason", "stream", "created_at")
# The column ``read_csv`` takes the address from: the first of these the file has.
ADDRESS_COLUMNS = ("address", "email")

STREAMS = ("transactional", "bulk")
_ALL = "*"

# Mailtrap event name -> (stream suppressed, None for every stream; reason).
# Mailtrap itself suppresses these per stream; keeping them here as well means
# the queue never spends a call (and a rate-limit slot) on them.
SUPPRESSING_EVENTS: Mapping[str, tuple[str | None, str]] = {
    "bounce": (None, "hard_bounce"),
    "spam": (None, "spam_complaint"),
    "spam_complaint": (None, "spam_complaint"),
    "unsubscribe": ("bulk", "unsubscribe"),
}
SOFT_BOUNCE_EVENTS = frozenset({"soft bounce", "soft_bounce"})

# Add a suppression without narrowing one already there: an address
# suppressed on every stream stays so when it later unsubscribes from bulk,
# and suppressions of both streams become one of every stream.
# A suppression added here again is no longer one lifted here.
# KEYS: the hash, the lifted hash. ARGV: field, JSON record. Returns the stored record.
_SUPPRESS = lua_script("suppressions_suppress")

# Count one soft bounce and say whether the address now has enough of them.
# KEYS: the address's zset. ARGV: event key, when, window start, limit, ttl.
_SOFT_BOUNCE = lua_script("suppressions_soft_bounce")


# Forget one lift if it is still the one read. KEYS: the lifted hash. ARGV: field, time.
_FORGET_LIFT = lua_script("suppressions_forget_lift")


class Suppression(TypedDict):
    """One suppressed address. ``stream`` None means every stream."""

    address: str
    reason: str
    stream: str | None
    created_at: str


def normalize_stream(stream: object) -> str | None:
    """``None`` (every stream), ``"transactional"`` or ``"bulk"``; ValidationError otherwise."""
    if stream is None or stream == "" or stream == "all":
        return None
    if stream not in STREAMS:
        raise ValidationError(
            "stream must be 'transactional', 'bulk', or empty for every stream, "
            f"not {str(stream)[:40]!r}",
            field="stream",
        )
    return str(stream)


def _address(address: object) -> str:
    parsed = parse_address_list(address, "address")
    if len(parsed) != 1:
        raise ValidationError("give exactly one address", field="address")
    return parsed[0].addr_spec


def _reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip() or len(reason) > 200:
        raise ValidationError("reason must be a short non-empty string", field="reason")
    return reason.strip()


def _decode(raw: bytes | str) -> Suppression:
    data = json.loads(raw)
    stream = data.get("stream")
    return Suppression(
        address=str(data.get("address", "")),
        reason=str(data.get("reason", "")),
        stream=None if stream in (None, _ALL) else str(stream),
        created_at=str(data.get("created_at", "")),
    )


class SuppressionList(RedisStore):
    """Reads and writes the suppression hash; one per client."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        soft_bounce_limit: int,
        soft_bounce_days: float,
        url: str = "redis",
    ) -> None:
        super().__init__(client, keys, url=url)
        self.soft_bounce_limit = soft_bounce_limit
        self.soft_bounce_days = soft_bounce_days
        self._suppress = client.register_script(_SUPPRESS)
        self._soft_bounce = client.register_script(_SOFT_BOUNCE)
        self._forget_lift = client.register_script(_FORGET_LIFT)

    @translated("suppress an address")
    def suppress(
        self,
        address: str,
        *,
        reason: str = "manual",
        stream: str | None = None,
        created_at: str | None = None,
    ) -> Suppression:
        """Suppress ``address`` on ``stream`` (every stream when None); returns the record."""
        spec = _address(address)
        record = {
            "address": spec,
            "reason": _reason(reason),
            "stream": normalize_stream(stream) or _ALL,
            "created_at": created_at or _now_iso(),
        }
        stored = self._suppress(
            keys=[self.keys.suppressed, self.keys.suppressed_lifted],
            args=[comparable(spec), json.dumps(record)],
        )
        return _decode(cast(bytes, stored))

    @translated("unsuppress an address")
    def unsuppress(self, address: str) -> bool:
        """Forget ``address``'s suppression; True when there was one.

        The time is kept (``lifted``), so that a sync with Mailtrap lifts the
        address's suppression there too instead of bringing it back.
        """
        key = comparable(_address(address))
        now = _now_iso()
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.keys.suppressed, key)
            pipe.delete(self.keys.soft_bounces(key))
            pipe.hset(self.keys.suppressed_lifted, key, now)
            pipe.hset(self.keys.suppression_lifts, key, now)
            removed, *_ = pipe.execute()
        return bool(removed)

    @translated("read lifted suppressions")
    def lifted(self) -> dict[str, str]:
        """Addresses (comparable form) whose suppression was lifted here, and when (ISO 8601)."""
        return {
            _text(key): _text(when)
            for key, when in self.redis.hscan_iter(self.keys.suppressed_lifted, count=1000)
        }

    @translated("forget lifted suppressions")
    def forget_lifted(self, lifted: Mapping[str, str]) -> None:
        """Forget these lifts (as ``lifted`` read them); a lift written since stays."""
        for key, when in lifted.items():
            self._forget_lift(keys=[self.keys.suppressed_lifted], args=[key, when])

    @translated("read a suppression")
    def get(self, address: str) -> Suppression | None:
        """The suppression of ``address``, or None."""
        raw = self.redis.hget(self.keys.suppressed, comparable(_address(address)))
        return None if raw is None else _decode(cast(bytes, raw))

    @translated("check suppressions")
    def suppressed(self, addresses: Sequence[str], stream: str) -> set[str]:
        """Those of ``addresses`` (as given) that must not be mailed on ``stream``."""
        if not addresses:
            return set()
        found = cast(
            list[bytes | None],
            self.redis.hmget(self.keys.suppressed, [comparable(a) for a in addresses]),
        )
        return {
            address
            for address, raw in zip(addresses, found, strict=True)
            if raw is not None and _decode(raw)["stream"] in (None, stream)
        }

    def __iter__(self) -> Iterator[Suppression]:
        return iter(self.entries())

    @translated("list suppressions")
    def entries(self) -> list[Suppression]:
        """Every suppression (read in chunks of a thousand)."""
        return [_decode(raw) for _, raw in self.redis.hscan_iter(self.keys.suppressed, count=1000)]

    @translated("count suppressions")
    def __len__(self) -> int:
        return int(self.redis.hlen(self.keys.suppressed))

    @translated("import suppressions")
    def import_rows(self, rows: Iterable[Mapping[str, Any]], *, reason: str = "import") -> int:
        """Suppress each row's ``address`` (``email``), with its own ``reason``/``stream`` if any.

        Every row is validated first, so a bad one (ValidationError naming its
        index) adds nothing. Rows of one address (compared case-folded, IDNA
        domain) make one suppression, of every stream they name. Returns how
        many addresses were suppressed.
        """
        records: list[tuple[str, str]] = []
        for index, row in enumerate(rows):
            try:
                spec = _address(row.get("address") or row.get("email"))
                record = {
                    "address": spec,
                    "reason": _reason(row.get("reason") or reason),
                    "stream": normalize_stream(row.get("stream")) or _ALL,
                    "created_at": str(row.get("created_at") or _now_iso()),
                }
            except ValidationError as exc:
                exc.index = index
                raise
            records.append((comparable(spec), json.dumps(record)))
        for start in range(0, len(records), 1000):
            with self.redis.pipeline(transaction=False) as pipe:
                for field, record_json in records[start : start + 1000]:
                    self._suppress(
                        keys=[self.keys.suppressed, self.keys.suppressed_lifted],
                        args=[field, record_json],
                        client=pipe,
                    )
                pipe.execute()
        return len({field for field, _ in records})

    # -- fed by tracking events -------------------------------------------

    def note_events(self, events: Iterable[tuple[TrackingEvent, Sequence[str]]]) -> int:
        """Suppress the addresses tracking events call for; returns how many events did.

        Each event comes with the addresses it concerns: its ``email``, or
        the recipients its message id was sent to. An event dated at or
        before the last lift of an address's suppression does nothing to it:
        Mailtrap's signatures carry no time, so a captured bounce replayed
        later would otherwise undo an operator's decision.
        """
        pending = [
            (event, name, tuple(addresses))
            for event, addresses in events
            if (name := event.mailtrap_event.strip().lower()) in SUPPRESSING_EVENTS
            or name in SOFT_BOUNCE_EVENTS
        ]
        if not pending:
            return 0
        lifts = self._last_lifts({a for _, _, addresses in pending for a in addresses})
        done = 0
        for event, name, addresses in pending:
            for address in addresses:
                lifted = lifts.get(address)
                if lifted is not None and _seconds(event.timestamp) <= lifted:
                    continue
                try:
                    if name in SUPPRESSING_EVENTS:
                        stream, reason = SUPPRESSING_EVENTS[name]
                        self.suppress(address, reason=reason, stream=stream)
                        done += 1
                    elif name in SOFT_BOUNCE_EVENTS and self.soft_bounce_limit > 0:
                        key = event.event_id or f"{event.message_id}:{event.timestamp}"
                        done += self.note_soft_bounce(address, key, _seconds(event.timestamp))
                except ValidationError:
                    continue  # an address we cannot parse names nothing we send
        return done

    @translated("read when suppressions were lifted")
    def _last_lifts(self, addresses: set[str]) -> dict[str, float]:
        """The unix time each of ``addresses`` last had its suppression lifted, if ever."""
        keyed: dict[str, str] = {}
        for address in addresses:
            try:
                keyed[address] = comparable(_address(address))
            except ValidationError:
                continue
        if not keyed:
            return {}
        found = cast(
            list[bytes | None], self.redis.hmget(self.keys.suppression_lifts, list(keyed.values()))
        )
        return {
            address: _seconds(_text(raw))
            for address, raw in zip(keyed, found, strict=True)
            if raw is not None
        }

    @translated("count a soft bounce")
    def note_soft_bounce(self, address: str, event_key: str, at: float) -> bool:
        """Count one soft bounce (``event_key`` makes a replay count once); True once suppressed."""
        window = self.soft_bounce_days * 86400
        key = self.keys.soft_bounces(comparable(address))
        reached = self._soft_bounce(
            keys=[key],
            args=[event_key, at, at - window, self.soft_bounce_limit, max(int(window), 1)],
        )
        if int(reached):
            self.suppress(address, reason="soft_bounce")
            return True
        return False


def _seconds(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return datetime.now(timezone.utc).timestamp()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_csv(
    handle: IO[str], *, source: str = "CSV", repeats: Repeats | None = None
) -> list[dict[str, Any]]:
    """The rows of a suppression CSV, by column name in lower case (``import_rows`` takes them).

    Read as campaign files are (``csv_table``): any separator, a byte-order
    mark, exactly one address per row, errors naming ``source`` and the row.
    Each row also holds its ``row`` number. Cells ``write_csv`` guarded
    against spreadsheet formulas read back as they were; rows repeating an
    earlier address are noted in ``repeats`` (``import_rows`` merges them).
    """
    table = open_table(handle, ADDRESS_COLUMNS, source=source)
    at = table.column(*ADDRESS_COLUMNS)
    assert at is not None
    names = [name.strip().lower() for name in table.header]
    seen = SeenAddresses()
    rows: list[dict[str, Any]] = []
    for number, cells in table.rows():
        row: dict[str, Any] = {
            name: restore_formula(cells[index]) if index < len(cells) else ""
            for index, name in enumerate(names)
            if name
        }
        address = restore_formula(cells[at]) if at < len(cells) else ""
        if not address:
            raise table.error(number, f"the {names[at]!r} cell is empty")
        parsed = one_address(address, table, number, names[at])
        if not seen.add(comparable(parsed.addr_spec)) and repeats is not None:
            repeats.note(number)
        row["address"] = address
        row["row"] = number
        rows.append(row)
    return rows


def write_csv(entries: Iterable[Suppression], out: IO[str]) -> None:
    """Write ``entries`` as CSV, by address: the columns ``read_csv`` reads back.

    A cell a spreadsheet would run as a formula (an address may start with
    ``=``, ``+``, ``-`` or ``@``) is written after a single quote, as OWASP
    advises; ``read_csv`` takes the quote off again.
    """
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for entry in sorted(entries, key=lambda s: s["address"]):
        row = {**entry, "stream": entry["stream"] or ""}
        writer.writerow({key: neutralize_formula(str(value)) for key, value in row.items()})
