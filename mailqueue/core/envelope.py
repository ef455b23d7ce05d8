"""What waits in the outbox: one API call's body and its routing facts, never a URL or a path.

The producer validates and normalizes a message into the bodies of its
Mailtrap calls (``build_payload``); an *envelope* carries one of them, its
kind (``send`` or ``batch``) and the message's routing facts: the Mailtrap
stream, the account, the lane, the campaign. The worker that sends it
resolves those facts with its own settings (``routing.py``) and builds the
call: its token, sandbox inbox and URLs decide, whoever queued the message.

Envelopes queued before this format carried the producer's call, path
included; they still decode, and a sandbox inbox in their path is kept, so
mail a sandboxed producer queued never reaches real recipients.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast
from urllib.parse import unquote

from mailqueue.core.payload import ApiCall, call_size
from mailqueue.core.routing import LANES, STREAMS, Lane, Route, Stream

__all__ = ["Envelope", "Kind", "PartRef", "envelopes_for", "lane_for"]

Kind = Literal["send", "batch"]


class PartRef(NamedTuple):
    """One part of a send, with what the status scripts need (``Envelope.ref``).

    The send's group and campaign (their counters move with the part), the
    part's recipient count (as its campaign counts them) and its expiry.
    """

    send_id: str
    part: int
    group: str | None = None
    campaign: str = ""
    recipients: int = 1
    expires_at: float | None = None


def lane_for(*, stream: Stream, campaign: str | None, parts: int) -> Lane:
    """The lane a send waits in: bulk for Mailtrap's bulk stream, campaigns and big sends.

    A campaign is anything queued by ``enqueue_many`` or under a campaign
    name; a send of several calls (a merge-data send to more than 500) is
    one too. Everything else (a web request's password reset) is
    transactional and never waits behind them.
    """
    if stream == "bulk" or campaign or parts > 1:
        return "bulk"
    return "transactional"


def envelopes_for(
    calls: Sequence[ApiCall],
    *,
    send_id: str,
    stream: str = "transactional",
    account: str | None = None,
    group: str | None = None,
    campaign: str | None = None,
    expires_at: float | None = None,
) -> list[Envelope]:
    """The envelopes of one validated message: its call bodies and routing facts.

    The calls' paths (which may name the producer's sandbox) are dropped:
    only their kind travels. A send belongs to the lane's stream of its
    campaign, else of its ``enqueue_many`` group; a send of several calls
    is a campaign of its own.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown sending stream {stream!r}")
    mail_stream: Stream = stream  # type: ignore[assignment]  # checked just above
    key = campaign or group or (send_id if len(calls) > 1 else "")
    lane = lane_for(stream=mail_stream, campaign=key, parts=len(calls))
    return [
        Envelope(
            send_id=send_id,
            part=part,
            call=ApiCall("batch" if call.is_batch else "send", call.json, call.recipients),
            group=group,
            campaign=campaign or "",
            expires_at=expires_at,
            mail_stream=mail_stream,
            account=account,
            lane=lane,
            lane_key=key if lane == "bulk" else "",
        )
        for part, call in enumerate(calls)
    ]


@dataclass
class Envelope:
    """One API call on its way: its body and kind, its send and part, its routing facts."""

    send_id: str
    part: int
    # The call's kind as its path ("send" or "batch"), body and recipients; the
    # worker adds its route's sandbox inbox to the path.
    call: ApiCall
    # Its retry budget (see ``Outcomes.spend``): tries that ended without an
    # answer settling the part, when the next may start at the earliest
    # (unix seconds), and the error that ended the last one.
    attempt: int = 0
    resend_at: float | None = None
    last_error: dict[str, Any] | None = None
    # The send's enqueue_many group: the status scripts count its states.
    group: str | None = None
    # The campaign it belongs to ("" for none) and when it stops being worth
    # sending (unix seconds): what a worker checks when it claims the part.
    campaign: str = ""
    expires_at: float | None = None
    # Mailtrap's sending stream: which URL, token and suppression list.
    mail_stream: Stream = "transactional"
    # A named account of the worker's settings, None for the top-level one.
    account: str | None = None
    # The priority lane, and within the bulk lane the stream it waits in
    # (campaign, group or send id; "" for lone bulk mail).
    lane: Lane = "transactional"
    lane_key: str = ""
    # A sandbox inbox named by an envelope of the older format (see the module doc).
    legacy_sandbox: str | None = field(default=None, compare=False)
    entry_id: str = field(default="", compare=False)
    stream: str = field(default="", compare=False)  # the Redis stream it was read from
    # What a worker sends, when suppressed recipients were taken out of
    # ``call`` (which stays whole: a retry or a hold queues it again), and
    # the recipients taken out. Never encoded.
    outgoing: ApiCall | None = field(default=None, compare=False)
    withheld: tuple[str, ...] = field(default=(), compare=False)
    # When this worker's claim on the part ends (``time.monotonic()``); never encoded.
    lease_ends: float | None = field(default=None, compare=False)

    @property
    def kind(self) -> Kind:
        return "batch" if self.call.is_batch else "send"

    @property
    def is_batch(self) -> bool:
        return self.call.is_batch

    @property
    def to_send(self) -> ApiCall:
        """The call body a worker sends for this envelope (its path is the kind)."""
        return self.outgoing if self.outgoing is not None else self.call

    @property
    def body_bytes(self) -> int:
        """Bytes of the JSON body sent."""
        return call_size(self.to_send)

    @property
    def flat_recipients(self) -> list[str]:
        """Every recipient of the call, in ``message_ids`` order."""
        return [address for request in self.call.recipients for address in request]

    @property
    def ref(self) -> PartRef:
        """The part this envelope carries, as the status store names it."""
        return PartRef(
            self.send_id,
            self.part,
            self.group,
            self.campaign,
            sum(len(request) for request in self.call.recipients),
            self.expires_at,
        )

    def call_for(self, route: Route) -> ApiCall:
        """The Mailtrap call for ``route``: its path, with the route's sandbox inbox if any."""
        call = self.to_send
        return ApiCall(route.endpoint(self.kind), call.json, call.recipients)

    def encode(self) -> str:
        data: dict[str, Any] = {
            "id": self.send_id,
            "part": self.part,
            "kind": self.kind,
            "body": self.call.json,
            "rcpt": [list(group) for group in self.call.recipients],
            "attempt": self.attempt,
        }
        optional = {
            "group": self.group,
            "campaign": self.campaign,
            "expires_at": self.expires_at,
            "account": self.account,
            "lane_key": self.lane_key,
            "sandbox": self.legacy_sandbox,
            "resend_at": self.resend_at,
            "last_error": self.last_error,
        }
        data.update({name: value for name, value in optional.items() if value})
        if self.mail_stream != "transactional":
            data["mail_stream"] = self.mail_stream
        if self.lane != "transactional":
            data["lane"] = self.lane
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def decode(cls, raw: str | bytes, entry_id: str = "", stream: str = "") -> Envelope:
        data = json.loads(raw)
        legacy_sandbox = data.get("sandbox")
        if "call" in data:  # the earlier format: the producer's call, path included
            call = ApiCall.from_dict(data["call"])
            kind, _, inbox = call.path.partition("/")
            legacy_sandbox = legacy_sandbox or unquote(inbox) or None
            call = ApiCall(kind, call.json, call.recipients)
        else:
            if data["kind"] not in ("send", "batch") or not isinstance(data["body"], dict):
                raise ValueError("not an envelope: unknown kind or body")
            call = ApiCall(
                data["kind"], data["body"], tuple(tuple(group) for group in data["rcpt"])
            )
        mail_stream = data.get("mail_stream", "transactional")
        lane = data.get("lane", "transactional")
        if mail_stream not in STREAMS or lane not in LANES:
            raise ValueError("not an envelope: unknown stream or lane")
        return cls(
            send_id=data["id"],
            part=int(data["part"]),
            call=call,
            attempt=int(data.get("attempt", 0)),
            resend_at=float(data["resend_at"]) if data.get("resend_at") else None,
            last_error=data["last_error"] if isinstance(data.get("last_error"), dict) else None,
            group=data.get("group") or None,
            campaign=str(data.get("campaign", "")),
            expires_at=float(data["expires_at"]) if data.get("expires_at") else None,
            mail_stream=cast(Stream, mail_stream),
            account=data.get("account"),
            lane=cast(Lane, lane),
            lane_key=str(data.get("lane_key", "")),
            legacy_sandbox=legacy_sandbox,
            entry_id=entry_id,
            stream=stream,
        )
