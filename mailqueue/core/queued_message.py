"""A validated message as it waits in the outbox: JSON-able, with no setting of the producer.

The producer validates and normalizes a message (``normalize_message``); the
envelope carries this form of it, and the worker renders the Mailtrap call
from it with its own settings (``payload.render_part``), so that a change of
the workers' rendering reaches mail already queued.

Nothing that depends on settings is decided here. The one setting a message
may have taken from the producer is its sender: a message that named none
carries the producer's default only as a fallback, marked so; a worker with a
default sender of its own sends from that one.

A batch send's part carries only its own share of the ``to`` list (and of the
``merge_*`` data): its recipients, one request each when rendered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from mailqueue.core.addresses import EmailAddress
from mailqueue.core.message import Attachment, NormalizedMessage

__all__ = ["QueuedMessage", "form_of", "names_sender", "part_forms"]

# The optional fields carried as they are (all JSON already), omitted when None.
_PLAIN = (
    "subject", "text", "html", "headers", "category", "metadata", "template_id",
    "merge_global_data", "merge_data", "merge_metadata", "merge_headers", "esp_extra",
)  # fmt: skip
_MERGES = ("merge_data", "merge_metadata", "merge_headers")


def names_sender(message: Mapping[str, Any]) -> bool:
    """Whether a (validated) message names its sender: ``from_email`` or a From header."""
    if message.get("from_email") is not None:
        return True
    headers = message.get("headers")
    return isinstance(headers, Mapping) and any(
        isinstance(name, str) and name.lower() == "from" for name in headers
    )


def form_of(msg: NormalizedMessage, *, named_sender: bool) -> dict[str, Any]:
    """The JSON-able form of ``msg``; its routing facts travel in the envelope, not here."""
    form: dict[str, Any] = {"from": _address(msg.from_email)}
    if not named_sender:
        form["from_default"] = 1
    for name in ("to", "cc", "bcc"):
        addresses = getattr(msg, name)
        if addresses:
            form[name] = [_address(address) for address in addresses]
    if msg.reply_to:
        form["reply_to"] = [[_address(a) for a in group] for group in msg.reply_to]
    if msg.attachments:
        form["attachments"] = [
            [a.filename, a.content_type, a.content, a.inline, a.content_id] for a in msg.attachments
        ]
    for name in _PLAIN:
        value = getattr(msg, name)
        if value is not None:
            form[name] = value
    return form


def part_forms(
    msg: NormalizedMessage, sizes: Sequence[int], *, named_sender: bool
) -> list[dict[str, Any]]:
    """One form per part; a batch part of ``sizes[i]`` requests holds only its ``to`` share.

    The parts of a batch send cover its ``to`` list in order (``burst_for_batch``
    makes one request per address and the chunks are contiguous).
    """
    whole = form_of(msg, named_sender=named_sender)
    if not msg.is_batch:
        return [whole] * len(sizes)
    forms = []
    start = 0
    for size in sizes:
        share = msg.to[start : start + size]
        start += size
        form = {**whole, "to": [_address(address) for address in share]}
        for name in _MERGES:
            entries = getattr(msg, name)
            if entries:
                form[name] = _merge_share(entries, share)
        forms.append(form)
    return forms


def _merge_share(entries: Mapping[str, Any], share: Sequence[EmailAddress]) -> dict[str, Any]:
    """The entries ``burst_for_batch`` looks up for ``share``: by wire form, else by addr-spec."""
    kept: dict[str, Any] = {}
    for address in share:
        for key in (address.email, address.addr_spec):
            if key in entries:
                kept[key] = entries[key]
                break
    return kept


@dataclass
class QueuedMessage:
    """A queued message form, restored on first use; ``kind`` and recipients without restoring."""

    form: dict[str, Any]
    _message: NormalizedMessage | None = field(default=None, repr=False, compare=False)

    @classmethod
    def checked(cls, form: object) -> QueuedMessage:
        """The queued message of an envelope's ``msg``; ValueError when it is not one."""
        if not isinstance(form, dict) or not isinstance(form.get("from"), str | list):
            raise ValueError("not an envelope: its message has no sender")
        return cls(form)

    @property
    def is_batch(self) -> bool:
        return any(name in self.form for name in _MERGES)

    @property
    def named_sender(self) -> bool:
        return not self.form.get("from_default")

    @cached_property
    def recipients(self) -> tuple[tuple[str, ...], ...]:
        """The part's recipients in ``message_ids`` order, as the rendered call lists them."""
        to, cc, bcc = (
            [_addr_spec(item) for item in self.form.get(name, ())] for name in ("to", "cc", "bcc")
        )
        if not self.is_batch:
            return (tuple(to + cc + bcc),)
        copies = tuple(cc + bcc)
        return tuple((address, *copies) for address in to)

    @property
    def message(self) -> NormalizedMessage:
        """The normalized message, its sender the producer's (see ``payload.render_part``)."""
        if self._message is None:
            self._message = _restored(self.form)
        return self._message


def _restored(form: Mapping[str, Any]) -> NormalizedMessage:
    get = form.get
    msg = NormalizedMessage(
        from_email=_parsed(form["from"]),
        to=[_parsed(item) for item in get("to", ())],
        cc=[_parsed(item) for item in get("cc", ())],
        bcc=[_parsed(item) for item in get("bcc", ())],
        reply_to=[[_parsed(item) for item in group] for group in get("reply_to", ())],
        attachments=[Attachment(*item) for item in get("attachments", ())],
    )
    for name in _PLAIN:
        if name in form:
            setattr(msg, name, form[name])
    return msg


def _address(address: EmailAddress) -> str | list[str]:
    """An address as the plain addr-spec when that says all, else its five parts."""
    spec = address.addr_spec
    if not address.name and address.email == spec == f"{address.username}@{address.domain}":
        return spec
    return [address.name, spec, address.username, address.domain, address.email]


def _parsed(item: str | Sequence[str]) -> EmailAddress:
    if isinstance(item, str):
        username, _, domain = item.rpartition("@")
        return EmailAddress("", item, username, domain, item)
    name, spec, username, domain, email = item
    return EmailAddress(name, spec, username, domain, email)


def _addr_spec(item: str | Sequence[str]) -> str:
    return item if isinstance(item, str) else item[1]
