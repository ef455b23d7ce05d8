"""The indexes of sends: by Mailtrap message id (tracking events) and by address (search).

From a Mailtrap message id to its send and recipients: how tracking events find a status.

Every recipient Mailtrap accepts gets a message id, so this index holds one
entry per recipient sent, and a campaign of a million holds a million. As a
key of its own per id (name, value, expiry) an entry cost about 250 bytes of
Redis. Here entries share small hashes instead:

    {mq}:msgidx:<generation>:<bucket>   hash   message id -> send id, recipients

``bucket`` spreads ids over ``BUCKETS`` hashes by CRC-32, few enough entries
each that Redis stores the hash as one compact listpack (up to 128 entries
of at most 64 bytes; a longer value turns only its own bucket into a plain
hash). UUIDs and hex send ids are stored as their 16 bytes (``pack_id``),
recipients as text after a 0x1F separator. ``generation`` is the time
divided by the status TTL: a bucket expires two generations after its own
began, so an entry lives at least one status TTL and at most two, and a
look-up reads the current and the previous generation. Hashes cannot
expire one field at a time (before Redis 7.4), which is why time is in the key.

Entries written before this index existed (``{mq}:msgid:<id>``, a JSON
value) are still read; they expire as they always did.
"""

from __future__ import annotations

import json
import re
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import redis

from mailqueue.store.base import RedisStore, lua_script
from mailqueue.store.keys import Keys, safe_id

if TYPE_CHECKING:
    from mailqueue.core.payload import ApiCall
    from mailqueue.store.status import StatusStore

__all__ = [
    "BUCKETS",
    "KEPT_PER_ADDRESS",
    "MAX_INDEXED_RECIPIENTS",
    "IndexEntry",
    "MessageIndex",
    "decode_entry",
    "encode_entry",
    "note_send",
    "recent_sends",
]

BUCKETS = 1 << 16
SEPARATOR = "\x1f"  # never in a send id (``safe_id``) nor in an address


class IndexEntry(NamedTuple):
    """What a message id points at: its send, its recipients, and (older entries) its campaign."""

    send_id: str
    recipients: tuple[str, ...]
    campaign: str | None = None


# Ids in their canonical hex forms (Mailtrap's UUIDs, mailqueue's send ids)
# are stored as their 16 bytes behind a mark that no safe id starts with: an
# entry then fits Redis' compact encoding with room to spare.
PACKED_UUID = b"\x01"
PACKED_HEX = b"\x02"
_HEX32 = re.compile(r"[0-9a-f]{32}")


def pack_id(value: str) -> bytes:
    """An id as stored: 17 bytes for a canonical UUID or 32 lowercase hex digits."""
    if len(value) == 36 and value[8:9] == "-":
        try:
            packed = uuid.UUID(value)
        except ValueError:
            packed = None
        if packed is not None and str(packed) == value:
            return PACKED_UUID + packed.bytes
    elif len(value) == 32 and _HEX32.fullmatch(value):
        return PACKED_HEX + bytes.fromhex(value)
    return value.encode()


def encode_entry(send_id: str, recipients: Sequence[str]) -> bytes:
    tail = SEPARATOR.join(recipients).encode("utf-8", "surrogatepass")
    return pack_id(send_id) + SEPARATOR.encode() + tail


def decode_entry(raw: bytes | str | None) -> IndexEntry | None:
    """An entry of either format, or None when absent or unusable."""
    if raw is None:
        return None
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data[:1] in (b"{", b"["):
        return _decode_json(data.decode("utf-8", "replace"))
    if data[:1] in (PACKED_UUID, PACKED_HEX) and len(data) >= 17:
        packed = data[1:17]
        send_id = str(uuid.UUID(bytes=packed)) if data[:1] == PACKED_UUID else packed.hex()
        rest = data[17:]
    else:
        head, _, tail = data.partition(SEPARATOR.encode())
        send_id, rest = head.decode("utf-8", "replace"), SEPARATOR.encode() + tail
    if not rest.startswith(SEPARATOR.encode()) or safe_id(send_id) is None:
        return None
    recipients = rest[1:].decode("utf-8", "replace").split(SEPARATOR)
    if not recipients or not all(recipients):
        return None
    return IndexEntry(send_id, tuple(recipients))


def _decode_json(text: str) -> IndexEntry | None:
    """The earlier ``{"send", "recipients", "campaign"}`` value, or ``[send_id, recipient]``."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        return None
    campaign = None
    if isinstance(value, dict):
        send_id, recipients = value.get("send"), value.get("recipients")
        named = value.get("campaign")
        campaign = named if isinstance(named, str) and safe_id(named) else None
    elif isinstance(value, list) and value:
        send_id, recipients = value[0], value[1:]
    else:
        return None
    if isinstance(recipients, str):
        recipients = [recipients]
    if not isinstance(send_id, str) or safe_id(send_id) is None or not isinstance(recipients, list):
        return None
    return IndexEntry(send_id, tuple(r for r in recipients if isinstance(r, str)), campaign)


# KEYS: buckets; ARGV: their expiry (unix seconds), then a field and a value per bucket.
_ADD = lua_script("message_index_add")


class MessageIndex(RedisStore):
    """Writes and reads the message-id index (see the module doc); ``ttl``: the status TTL."""

    def __init__(self, client: redis.Redis, keys: Keys, *, ttl: int, url: str = "redis") -> None:
        super().__init__(client, keys, url=url)
        self.ttl = max(int(ttl), 1)
        self._add = client.register_script(_ADD)

    def _bucket(self, message_id: str, generation: int) -> str:
        bucket = zlib.crc32(message_id.encode("utf-8", "surrogatepass")) % BUCKETS
        return self.keys.message_bucket(generation, bucket)

    def add(
        self,
        pipe: redis.client.Pipeline,
        message_id: str,
        send_id: str,
        recipients: Sequence[str],
        now: float | None = None,
    ) -> None:
        """Queue indexing ``message_id`` (a safe id) on ``pipe``."""
        generation = int((time.time() if now is None else now) // self.ttl)
        key = self._bucket(message_id, generation)
        # Raw commands: redis-py's helpers cost more than the writes, once per recipient.
        entry = encode_entry(send_id, recipients)
        pipe.execute_command("HSET", key, pack_id(message_id), entry)  # type: ignore[no-untyped-call]
        pipe.execute_command("EXPIREAT", key, (generation + 2) * self.ttl)  # type: ignore[no-untyped-call]

    def add_all(
        self,
        pipe: redis.client.Pipeline,
        send_id: str,
        entries: Iterable[tuple[str, Sequence[str]]],
        now: float | None = None,
    ) -> None:
        """Queue indexing each ``(message id, recipients)`` of one send, as ``add`` does each."""
        self.add_many(pipe, [(send_id, message_id, found) for message_id, found in entries], now)

    def add_many(
        self,
        pipe: redis.client.Pipeline,
        entries: Iterable[tuple[str, str, Sequence[str]]],
        now: float | None = None,
    ) -> None:
        """Queue indexing each ``(send id, message id, recipients)``, as ``add`` does each.

        One script call for them all: a batch answer has 500 message ids, and
        two commands each cost the worker more than Redis spends on them.
        """
        generation = int((time.time() if now is None else now) // self.ttl)
        keys: list[str] = []
        args: list[str | bytes | int] = [(generation + 2) * self.ttl]
        packed: dict[str, bytes] = {}
        for send_id, message_id, recipients in entries:
            if send_id not in packed:
                packed[send_id] = pack_id(send_id) + SEPARATOR.encode()
            keys.append(self._bucket(message_id, generation))
            tail = SEPARATOR.join(recipients).encode("utf-8", "surrogatepass")
            args += [pack_id(message_id), packed[send_id] + tail]
        if keys:
            self._add(keys=keys, args=args, client=pipe)

    def _candidates(self, message_id: str, now: float) -> list[tuple[str, str]]:
        generation = int(now // self.ttl)
        return [
            (self._bucket(message_id, generation), message_id),
            (self._bucket(message_id, generation - 1), message_id),
        ]

    def look_up(self, message_ids: Iterable[str]) -> dict[str, IndexEntry]:
        """The entries of the (safe) message ids that have one, in one round trip."""
        wanted = list(dict.fromkeys(message_ids))
        if not wanted:
            return {}
        now = time.time()
        with self.redis.pipeline(transaction=False) as pipe:
            for message_id in wanted:
                for key, field in self._candidates(message_id, now):
                    pipe.hget(key, pack_id(field))
                pipe.get(self.keys.message_index(message_id))
            answers = pipe.execute()
        found: dict[str, IndexEntry] = {}
        for position, message_id in enumerate(wanted):
            current, previous, older = answers[3 * position : 3 * position + 3]
            for raw in (current, previous, older):
                entry = decode_entry(raw)
                if entry is not None:
                    found[message_id] = entry
                    break
        return found

    def known(self, message_ids: Sequence[str]) -> list[bool]:
        """Whether each message id has an entry, in order."""
        found = self.look_up(message_ids)
        return [message_id in found for message_id in message_ids]

# -- an address's recent sends -----------------------------------------------------------
#
# A lone send (no campaign, one call, a few recipients) notes its send id under
# each recipient's address when it is queued: a sorted set by the address's
# SHA-256, scored by the time in whole microseconds, trimmed to the newest
# ``KEPT_PER_ADDRESS`` and living as long as the status records. (Redis keeps
# an integer score of a small sorted set as an integer; a fractional one as
# text that every insert parses again, which made this write the dearest of
# an enqueue. Entries scored in seconds, written before, are still read.)
# A campaign's recipients are not indexed one by one: that would cost Redis
# bytes per recipient, which a campaign of a million must not spend; the
# search shows such an address's suppression instead.

# Sends remembered per address, newest first.
KEPT_PER_ADDRESS = 20
# A send to more recipients than this is a mailing, not a lone send: not indexed.
MAX_INDEXED_RECIPIENTS = 50


def note_send(
    pipe: redis.client.Pipeline,
    send_id: str,
    calls: Sequence[ApiCall],
    *,
    campaign: str | None,
    status: StatusStore,
) -> None:
    """Queue noting ``send_id`` under each of its recipients, when it is a lone send.

    The index lives in ``status``'s key space, as long as its records.
    """
    if campaign or len(calls) != 1:
        return
    addresses = {address.lower() for request in calls[0].recipients for address in request}
    if not addresses or len(addresses) > MAX_INDEXED_RECIPIENTS:
        return
    now_us = int(time.time() * 1_000_000)
    for address in sorted(addresses):
        key = status.keys.address_sends(address)
        pipe.zadd(key, {send_id: now_us})
        pipe.zremrangebyrank(key, 0, -KEPT_PER_ADDRESS - 1)
        pipe.expire(key, status.ttl)


def recent_sends(address: str, *, status: StatusStore) -> list[str]:
    """The send ids noted for ``address`` within the status TTL, newest first."""
    key = status.keys.address_sends(address.strip().lower())
    since = time.time() - status.ttl
    # Scored in microseconds, or in seconds before: both rank newest first, as
    # any time in microseconds is far above any in seconds.
    found: Any = status.redis.zrevrangebyscore(key, "+inf", since, withscores=True)
    return [
        item.decode() if isinstance(item, bytes) else str(item)
        for item, score in found
        if _seconds(float(score)) >= since
    ]


# A score above this is a time in microseconds (this is 5138 AD in seconds).
# Microseconds since 1970 stay exact in a double's 53 bits until 2255.
_MICROSECONDS_FROM = 1e11


def _seconds(score: float) -> float:
    return score / 1_000_000 if score >= _MICROSECONDS_FROM else score
