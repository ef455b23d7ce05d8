"""The tag a worker puts on every message it sends, so that Email Logs can tell it apart. Pure.

Mailtrap has no idempotency key: when an answer is lost, the only way to
know whether a message went out is to find it in the Email Logs, which show
each message's ``custom_variables``. The worker therefore adds one short
variable, ``mq_tag: "<send id>.<part>.<request>.<attempt>"``, to each request
of the call it is about to post. ``build_payload`` never sees it: the tag is
added on the wire, to the call as it leaves.

The tag never costs a message its acceptance: a request whose variables
would pass Mailtrap's 1,000 bytes, a message that would pass 10 MB, a call
that would pass 50 MB, or metadata that already uses the key, go untagged,
and such a request is matched by recipient, subject and time instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring
from typing import Any

from mailqueue.core.message import custom_variables_size
from mailqueue.core.payload import MAX_BATCH_BYTES, MAX_MESSAGE_BYTES, ApiCall, call_size
from mailqueue.core.rules import MAX_CUSTOM_VARIABLES_BYTES

__all__ = ["MAX_TAG_GROWTH", "TAG_KEY", "Tag", "parse_tag", "tag_call"]

TAG_KEY = "mq_tag"


@dataclass(frozen=True)
class Tag:
    """Which request of which part of which send, on which attempt."""

    send_id: str
    part: int
    request: int
    attempt: int

    def __str__(self) -> str:
        return f"{self.send_id}.{self.part}.{self.request}.{self.attempt}"

    @property
    def request_key(self) -> tuple[str, int, int]:
        """The request this tag names, whatever the attempt."""
        return (self.send_id, self.part, self.request)


def parse_tag(variables: object) -> Tag | None:
    """The tag in a message's ``custom_variables`` as Email Logs show them, or None."""
    if not isinstance(variables, Mapping):
        return None
    value = variables.get(TAG_KEY)
    if not isinstance(value, str):
        return None
    # Send ids may contain dots; the three numbers never do.
    send_id, *numbers = value.rsplit(".", 3)
    if len(numbers) != 3 or not send_id or not all(n.isdigit() for n in numbers):
        return None
    part, request, attempt = (int(n) for n in numbers)
    return Tag(send_id, part, request, attempt)


def tag_call(call: ApiCall, tags: Sequence[Tag]) -> tuple[ApiCall, list[bool]]:
    """``call`` with ``tags[i]`` in request i's ``custom_variables``; and which requests got one.

    One tag per request: one for a ``send`` call, one per entry of ``requests``
    for a ``batch`` call. The input is not modified.
    """
    if len(tags) != len(call.recipients):
        raise ValueError(f"{len(tags)} tags for {len(call.recipients)} requests")
    if not call.is_batch:
        variables = _tagged(call.json.get("custom_variables"), tag=tags[0])
        if variables is None:
            return call, [False]
        body = {**call.json, "custom_variables": variables}
        if _size(body) > MAX_MESSAGE_BYTES:
            return call, [False]
        return ApiCall(call.path, body, call.recipients), [True]
    base = call.json.get("base") or {}
    # Each request's JSON and base's are disjoint stretches of the body's, and
    # a tag makes a request at most MAX_TAG_GROWTH longer: when the body leaves that
    # much room under the message limit, no request can reach it, and a batch
    # of 500 small messages is not measured 500 times over.
    body_size = _size(call.json)
    roomy = body_size + MAX_TAG_GROWTH <= MAX_MESSAGE_BYTES
    base_size = 0 if roomy else _size(base)
    sizes = _VariablesSizes()
    requests: list[Any] = []
    tagged: list[bool] = []
    for request, tag in zip(call.json["requests"], tags, strict=True):
        # A request's custom_variables replace base's, so base's come along.
        current = request.get("custom_variables", base.get("custom_variables"))
        variables = _tagged(current, tag=tag, sizes=sizes)
        new = None if variables is None else {**request, "custom_variables": variables}
        if new is None or (not roomy and base_size + _size(new) > MAX_MESSAGE_BYTES):
            requests.append(request)
            tagged.append(False)
        else:
            requests.append(new)
            tagged.append(True)
    result = ApiCall(call.path, {**call.json, "requests": requests}, call.recipients)
    if (
        body_size + MAX_TAG_GROWTH * len(requests) > MAX_BATCH_BYTES
        and call_size(result) > MAX_BATCH_BYTES
    ):
        return call, [False] * len(tags)
    return result, tagged


# The most a tag adds to a request's JSON: the key, and custom_variables of at
# most MAX_CUSTOM_VARIABLES_BYTES compact UTF-8 written with json.dumps'
# defaults (ASCII escapes and spaces take at most three characters a byte;
# six leaves a margin). Coalescing keeps this much room per request, so a
# coalesced call never goes untagged for its size.
MAX_TAG_GROWTH = len(', "custom_variables": ') + 6 * MAX_CUSTOM_VARIABLES_BYTES
_TAG_ITEM = len(f'"{TAG_KEY}":')


class _VariablesSizes:
    """``custom_variables_size`` of the variables a call's requests share, measured once each."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[Mapping[str, Any], int]] = {}

    def with_tag(self, variables: dict[str, Any], tag: str) -> int:
        """The size of ``{**variables, TAG_KEY: tag}``, without encoding ``variables`` again.

        Compact JSON of that dict is ``variables``' own with one more item
        before its closing brace.
        """
        text = encode_basestring(tag)
        tag_size = _TAG_ITEM + len(text.encode("utf-8", "surrogatepass"))
        if not variables:
            return len("{}") + tag_size
        known = self._known.get(id(variables))
        if known is None or known[0] is not variables:
            known = (variables, custom_variables_size(variables))
            self._known[id(variables)] = known
        return known[1] + len(",") + tag_size


def _tagged(
    variables: object, *, tag: Tag, sizes: _VariablesSizes | None = None
) -> dict[str, Any] | None:
    """``variables`` plus the tag, or None when the tag does not fit or its key is taken."""
    if variables is None:
        variables = {}
    if not isinstance(variables, Mapping) or TAG_KEY in variables:
        return None
    text = str(tag)
    result = {**variables, TAG_KEY: text}
    if sizes is not None and type(variables) is dict:
        size = sizes.with_tag(variables, text)
    else:
        size = custom_variables_size(result)
    if size > MAX_CUSTOM_VARIABLES_BYTES:
        return None
    return result


def _size(value: Any) -> int:
    return len(json.dumps(value))
