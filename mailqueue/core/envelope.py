"""What waits in the outbox: one part of a validated message and its routing facts.

The producer validates and normalizes a message and cuts it into the parts
of its Mailtrap calls (``payload.prepare``); an *envelope* carries one part:
the normalized message (``queued_message.py``; a batch part only its share of
the recipients and merge data), its kind (``send`` or ``batch``) and the
routing facts: the Mailtrap stream, the account, the lane, the campaign.
The worker that sends it renders the call body (``payload.render_part``) and
resolves the routing facts (``routing.py``) with its own settings: a fix of
the rendering, its token, sandbox inbox and URLs reach mail already queued.

Envelopes queued by the earlier formats carry the producer's call body
(``body``; before that ``call``, path included); they still decode and are
sent as they are, and a sandbox inbox in their path is kept, so mail a
sandboxed producer queued never reaches real recipients.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, cast
from urllib.parse import unquote

from mailqueue.core.payload import ApiCall, Prepared, call_size, render_part
from mailqueue.core.queued_message import QueuedMessage, part_forms
from mailqueue.core.routing import LANES, STREAMS, Lane, Route, Stream
from mailqueue.settings import Settings

__all__ = ["MESSAGE_FORMAT", "Envelope", "Kind", "PartRef", "envelopes_for", "lane_for"]

# The ``v`` of an envelope carrying a message for the worker to render.
# Envelopes without ``v`` carry a call body the producer rendered (``body``,
# or in the first format ``call``, path included): queued before workers
# rendered, they still decode and are sent as they are.
MESSAGE_FORMAT = 2

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
    prepared: Prepared,
    *,
    send_id: str,
    stream: str = "transactional",
    account: str | None = None,
    group: str | None = None,
    campaign: str | None = None,
    expires_at: float | None = None,
) -> list[Envelope]:
    """The envelopes of one validated message: one per call, each its part of the message.

    The calls only tell how the message is cut into parts; a worker renders
    each part's call again with its own settings. A send belongs to the
    lane's stream of its campaign, else of its ``enqueue_many`` group; a send
    of several calls is a campaign of its own.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown sending stream {stream!r}")
    mail_stream: Stream = stream  # type: ignore[assignment]  # checked just above
    calls = prepared.calls
    key = campaign or group or (send_id if len(calls) > 1 else "")
    lane = lane_for(stream=mail_stream, campaign=key, parts=len(calls))
    forms = part_forms(
        prepared.message,
        [len(call.recipients) for call in calls],
        named_sender=prepared.named_sender,
    )
    return [
        Envelope(
            send_id=send_id,
            part=part,
            message=QueuedMessage(form),
            group=group,
            campaign=campaign or "",
            expires_at=expires_at,
            mail_stream=mail_stream,
            account=account,
            lane=lane,
            lane_key=key if lane == "bulk" else "",
        )
        for part, form in enumerate(forms)
    ]


@dataclass
class Envelope:
    """One part of a send on its way: its message (or queued body), its routing facts, its tries.

    An envelope carries either ``message``, the part's share of a validated
    message that the worker renders (``render``), or ``body``, a call body
    queued by an earlier format, sent as it is.
    """

    send_id: str
    part: int
    message: QueuedMessage | None = None
    body: ApiCall | None = None
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

    # The call rendered for this worker (``render``). Never encoded.
    rendered: ApiCall | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if (self.message is None) == (self.body is None):
            raise ValueError("an envelope carries a message or a body, one of them")

    @property
    def kind(self) -> Kind:
        return "batch" if self.is_batch else "send"

    @property
    def is_batch(self) -> bool:
        return self.message.is_batch if self.message is not None else self._body.is_batch

    @property
    def recipients(self) -> tuple[tuple[str, ...], ...]:
        """The call's recipients, one tuple per Mailtrap message, known without rendering."""
        return self.message.recipients if self.message is not None else self._body.recipients

    @property
    def _body(self) -> ApiCall:
        assert self.body is not None  # __post_init__: one of message and body is set
        return self.body

    def render(self, settings: Settings | None = None) -> ApiCall:
        """Render the part's call with ``settings`` (the worker's own); a queued body as it is.

        Its path is the kind; ``call_for`` adds a route's sandbox inbox.
        """
        if self.message is None:
            self.rendered = self._body
        else:
            call = render_part(self.message, settings)
            self.rendered = ApiCall(self.kind, call.json, call.recipients)
        return self.rendered

    @property
    def call(self) -> ApiCall:
        """The part's whole call: rendered by ``render``, else with this process's settings."""
        return self.rendered if self.rendered is not None else self.render()

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
        return [address for request in self.recipients for address in request]

    @property
    def ref(self) -> PartRef:
        """The part this envelope carries, as the status store names it."""
        return PartRef(
            self.send_id,
            self.part,
            self.group,
            self.campaign,
            sum(len(request) for request in self.recipients),
            self.expires_at,
        )

    def call_for(self, route: Route) -> ApiCall:
        """The Mailtrap call for ``route``: its path, with the route's sandbox inbox if any."""
        call = self.to_send
        return ApiCall(route.endpoint(self.kind), call.json, call.recipients)

    def encode(self) -> str:
        data: dict[str, Any]
        if self.message is not None:
            data = {
                "v": MESSAGE_FORMAT,
                "id": self.send_id,
                "part": self.part,
                "kind": self.kind,
                "msg": self.message.form,
                "attempt": self.attempt,
            }
        else:
            data = {
                "id": self.send_id,
                "part": self.part,
                "kind": self.kind,
                "body": self._body.json,
                "rcpt": [list(group) for group in self._body.recipients],
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
        message = body = None
        version = data.get("v", 1)
        if version == MESSAGE_FORMAT:
            message = QueuedMessage.checked(data.get("msg"))
            if data.get("kind") != ("batch" if message.is_batch else "send"):
                raise ValueError("not an envelope: its kind is not its message's")
        elif version != 1:
            raise ValueError(f"an envelope of an unknown format ({str(version)[:20]})")
        elif "call" in data:  # the first format: the producer's call, path included
            body = ApiCall.from_dict(data["call"])
            kind, _, inbox = body.path.partition("/")
            legacy_sandbox = legacy_sandbox or unquote(inbox) or None
            body = ApiCall(kind, body.json, body.recipients)
        else:
            if data["kind"] not in ("send", "batch") or not isinstance(data["body"], dict):
                raise ValueError("not an envelope: unknown kind or body")
            body = ApiCall(
                data["kind"], data["body"], tuple(tuple(group) for group in data["rcpt"])
            )
        mail_stream = data.get("mail_stream", "transactional")
        lane = data.get("lane", "transactional")
        if mail_stream not in STREAMS or lane not in LANES:
            raise ValueError("not an envelope: unknown stream or lane")
        return cls(
            send_id=data["id"],
            part=int(data["part"]),
            message=message,
            body=body,
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
