"""Bodies against a JSON Schema written from Mailtrap's published request schemas.

Two properties, over generated messages:
- every message that passes validation builds bodies valid under the schema
  (tests/mailtrap_schema.py), for ``send``, ``batch`` and the sandbox paths,
  and so do single sends coalesced into one batch;
- the local Mailtrap accepts a body exactly when the schema does: the built
  bodies, and the same bodies broken in one place (a field Mailtrap's schema
  types, set to any JSON value, or one of the rules the producer enforces).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailqueue.core.payload import ApiCall, build_payload, coalesce
from mailqueue.settings import Settings
from mailqueue.testing import LocalMailtrap
from tests.mailtrap_schema import FIELDS, batch_errors, send_errors

PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TEMPLATE = "b81aabcd-1a1e-41cf-91b6-eca0254b3d96"

# -- messages that should build ------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
addresses = st.sampled_from(
    [
        "alice@example.com",
        "Bob <bob@example.com>",
        '"Last, First" <lf@example.com>',
        "Příjemce <příjemce@příklad.example.cz>",
        "user@ÜNICODE.example",
        "відправник@example.com",
        "Dan Ünïcode <dan@example.net>",
    ]
)
senders = st.sampled_from(
    ["from@example.com", "Shop <shop@example.com>", '"Odesílatel, z" <o@příklad.example.cz>']
)
finite = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | st.integers() | finite | text
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(text, children, max_size=3),
    max_leaves=6,
)
header_names = st.sampled_from(["X-Custom", "x-custom", "X-Priority", "List-Unsubscribe", "X-Ü"])
header_values = text.filter(lambda v: "\r" not in v and "\n" not in v) | st.integers()
headers = st.dictionaries(header_names, header_values, max_size=3)
# Keys with a line break are refused (header injection): these are the keys that build.
metadata_keys = st.text(max_size=6).filter(lambda k: "\r" not in k and "\n" not in k)
metadata = st.dictionaries(metadata_keys, scalars, max_size=3)
attachments = st.lists(
    st.fixed_dictionaries(
        {"content": st.sampled_from(["aGVsbG8=", "AA==", "iVBORw0KGgo="])},
        optional={
            "filename": st.sampled_from(["a.txt", "logo.png", "", "émoticône.img"]),
            "mimetype": st.sampled_from(["text/plain", "image/png", "application/pdf"]),
            "inline": st.booleans(),
            "content_id": st.sampled_from(["<cid@x>", "cid", ""]),
        },
    ),
    max_size=2,
)


@st.composite
def sendable_messages(draw: st.DrawFn) -> dict[str, Any]:
    """Messages Mailtrap's schema and Anymail's rules both allow, odd values included."""
    to = draw(st.lists(addresses, min_size=1, max_size=3))
    message: dict[str, Any] = {"from_email": draw(senders), "to": to}
    for key in ("cc", "bcc"):
        if draw(st.booleans()):
            message[key] = draw(st.lists(addresses, max_size=2))
    if draw(st.booleans()):
        message["reply_to"] = [draw(addresses)]
    if draw(st.integers(0, 3)) == 0:
        message["template_id"] = draw(st.sampled_from([TEMPLATE, TEMPLATE.upper()]))
        message["merge_global_data"] = draw(st.dictionaries(text, json_values, max_size=2))
        # Empty content beside a template is allowed, and must not reach the body.
        for key in draw(st.sets(st.sampled_from(["subject", "text", "html"]))):
            message[key] = ""
    else:
        message["subject"] = draw(text)
        body = draw(st.sampled_from(["text", "html", "both"]))
        message["text"] = draw(text) if body != "html" else ""
        message["html"] = draw(text) if body != "text" else ""
        if draw(st.booleans()):
            message["tags"] = [draw(text)]
    message["headers"] = draw(headers)
    message["metadata"] = draw(metadata)
    message["attachments"] = draw(attachments)
    merge = draw(st.sampled_from([None, "merge_data", "merge_metadata", "merge_headers"]))
    if merge is not None:
        keys = st.sampled_from([*to, "nobody@example.com"]).map(
            lambda a: a.split("<")[-1][:-1] if "<" in a else a
        )
        entries = headers if merge == "merge_headers" else metadata
        message[merge] = draw(st.dictionaries(keys, entries, max_size=3))
    if draw(st.integers(0, 4)) == 0:
        message["esp_extra"] = draw(
            st.sampled_from([{"headers": {"X-Extra": "e"}}, {"custom": {"nested": 1}}])
        )
    return message


sandbox_or_not = st.sampled_from([Settings(), Settings(sandbox_id="4242")])


def body_errors(call: ApiCall) -> list[str]:
    return batch_errors(call.json) if call.is_batch else send_errors(call.json)


@PROPERTY_SETTINGS
@given(message=sendable_messages(), config=sandbox_or_not)
def test_every_body_a_valid_message_builds_is_valid_under_the_schema(
    message: dict[str, Any], config: Settings
) -> None:
    calls = build_payload(message, config)

    for call in calls:
        assert body_errors(call) == [], json.dumps(call.json, ensure_ascii=False)[:2000]


@PROPERTY_SETTINGS
@given(messages=st.lists(sendable_messages(), min_size=1, max_size=4), config=sandbox_or_not)
def test_single_sends_coalesced_into_one_batch_make_a_valid_batch_body(
    messages: list[dict[str, Any]], config: Settings
) -> None:
    singles = []
    for message in messages:
        for key in ("merge_data", "merge_metadata", "merge_headers"):
            message.pop(key, None)
        singles.extend(build_payload(message, config))

    combined = coalesce(singles, config)

    assert batch_errors(combined.json) == [], json.dumps(combined.json, ensure_ascii=False)[:2000]


# -- the stand-in against the schema -----------------------------------------


@pytest.fixture(scope="module")
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap() as server:
        yield server


@pytest.fixture(scope="module")
def session(mailtrap: LocalMailtrap) -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["Api-Token"] = mailtrap.token
        yield client


def accepted(session: requests.Session, mailtrap: LocalMailtrap, path: str, body: Any) -> bool:
    answer = session.post(mailtrap.url + path, json=body, timeout=10)
    assert answer.status_code in (200, 400), answer.text
    data = answer.json()
    if answer.status_code == 400:
        assert data["success"] is False and data["errors"], data
        return False
    if path.startswith("send"):
        return True
    return all(item["success"] for item in data["responses"])


Break = Callable[[dict[str, Any]], None]


def _set(key: str, value: Any) -> Break:
    return lambda body: body.__setitem__(key, copy.deepcopy(value))


def _drop(key: str) -> Break:
    return lambda body: body.pop(key, None)


def _put(key: str, name: str, value: Any) -> Break:
    def apply(body: dict[str, Any]) -> None:
        if not isinstance(body.get(key), dict):
            body[key] = {}
        body[key][name] = value

    return apply


RULE_BREAKS: list[Break] = [
    _put("headers", "X-Priority", 1),
    _put("headers", "Subject", "x"),
    _put("headers", "dkim-signature", "x"),
    _put("headers", "Reply-To", "r@example.com"),
    _put("custom_variables", "n", 1),
    _put("custom_variables", "big", "v" * 1000),
    _set("html", ""),
    _set("text", ""),
    _drop("subject"),
    _drop("text"),
    _set("subject", ""),
    _set("template_uuid", "welcome"),
    _set("template_uuid", TEMPLATE),
    _set("category", "c" * 256),
    _set("category", "c"),
    _set("from", {"email": "josé@example.com"}),
    _set("from", {"email": "nobody"}),
    _drop("from"),
    _set("to", []),
    _set("to", [{"email": f"r{i}@example.com"} for i in range(1001)]),
    _set("reply_to", {"name": "x"}),
    _set("attachments", [{"content": "", "filename": "a"}]),
    _set("attachments", [{"content": "AA=="}]),
    _set("attachments", [{"content": "AA==", "filename": "a", "disposition": "inline"}]),
    _set("attachments", [{"content": "AA==", "filename": "a", "disposition": "bogus"}]),
    _set("attachments", [{"content": "AA==", "filename": "a", "type": ""}]),
]
any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | finite | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=5,
)
breaks = st.sampled_from(RULE_BREAKS) | st.builds(_set, st.sampled_from(sorted(FIELDS)), any_json)


@PROPERTY_SETTINGS
@given(
    message=sendable_messages(),
    config=sandbox_or_not,
    broken=st.lists(breaks, max_size=2),
    where=st.integers(0, 10),
)
def test_the_stand_in_accepts_a_body_exactly_when_the_schema_does(
    mailtrap: LocalMailtrap,
    session: requests.Session,
    message: dict[str, Any],
    config: Settings,
    broken: list[Break],
    where: int,
) -> None:
    for call in build_payload(message, config):
        body = copy.deepcopy(call.json)
        if call.is_batch:
            # Break base, or one of the requests.
            targets = [body["base"], *body["requests"]]
            target = targets[where % len(targets)]
        else:
            target = body
        for apply in broken:
            apply(target)

        assert accepted(session, mailtrap, call.path, body) == (body_errors_of(call, body) == [])


def body_errors_of(call: ApiCall, body: dict[str, Any]) -> list[str]:
    return batch_errors(body) if call.is_batch else send_errors(body)


def test_the_breaks_cover_both_verdicts(mailtrap: LocalMailtrap, session: requests.Session) -> None:
    base = {"from_email": "f@example.com", "to": ["t@example.com"], "subject": "S", "text": "T"}
    [call] = build_payload(base)
    verdicts = set()
    for apply in RULE_BREAKS:
        body = copy.deepcopy(call.json)
        apply(body)
        schema_ok = send_errors(body) == []
        assert accepted(session, mailtrap, "send", body) == schema_ok
        verdicts.add(schema_ok)
    assert verdicts == {True, False}
