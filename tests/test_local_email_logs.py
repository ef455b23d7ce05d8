"""The local Mailtrap serves the Email Logs API as Mailtrap's spec describes it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import requests

from mailqueue.testing import LocalMailtrap

SENDER = {"email": "sender@example.com"}


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap(logs_delay=0.0) as server:
        yield server


@pytest.fixture
def session(mailtrap: LocalMailtrap) -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["Api-Token"] = mailtrap.token
        yield client


def send(
    session: requests.Session, url: str, *to: str, subject: str = "Hello", **extra: Any
) -> list[str]:
    body = {
        "from": SENDER,
        "to": [{"email": address} for address in to],
        "subject": subject,
        "text": "Hi",
        **extra,
    }
    answer = session.post(url + "send", json=body, timeout=5)
    assert answer.status_code == 200, answer.text
    ids: list[str] = answer.json()["message_ids"]
    return ids


def logs(session: requests.Session, mailtrap: LocalMailtrap, **params: Any) -> requests.Response:
    return session.get(mailtrap.general_url + "email_logs", params=params, timeout=5)


def test_an_accepted_message_is_listed_once_per_recipient_with_its_variables(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    ids = send(session, mailtrap.url, "a@example.com", "b@example.com", custom_variables={"k": "v"})
    answer = logs(session, mailtrap)
    assert answer.status_code == 200
    data = answer.json()
    assert data["total_count"] == 2
    assert data["next_page_cursor"] is None
    by_id = {m["message_id"]: m for m in data["messages"]}
    assert set(by_id) == set(ids)
    assert {m["to"] for m in data["messages"]} == {"a@example.com", "b@example.com"}
    for entry in data["messages"]:
        assert entry["custom_variables"] == {"k": "v"}
        assert entry["sending_stream"] == "transactional"
        assert entry["subject"] == "Hello"
        assert entry["from"] == "sender@example.com"


def test_a_message_is_not_listed_before_its_delay(session: requests.Session) -> None:
    with LocalMailtrap(logs_delay=3600) as slow:
        session.headers["Api-Token"] = slow.token
        (message_id,) = send(session, slow.url, "a@example.com")
        assert logs(session, slow).json()["messages"] == []
        one = session.get(slow.general_url + f"email_logs/{message_id}", timeout=5)
        assert one.status_code == 404
        assert len(slow.email_logs.entries) == 1


def test_bulk_mail_is_logged_on_its_stream_and_the_sandbox_is_not_logged(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    send(session, mailtrap.bulk_url, "bulk@example.com")
    sandbox = {"from": SENDER, "to": [{"email": "box@example.com"}], "subject": "S", "text": "T"}
    assert session.post(mailtrap.url + "send/7", json=sandbox, timeout=5).status_code == 200
    data = logs(session, mailtrap).json()
    assert [(m["to"], m["sending_stream"]) for m in data["messages"]] == [
        ("bulk@example.com", "bulk")
    ]


def test_the_to_filter_takes_several_addresses_case_insensitively(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    for address in ("a@example.com", "b@example.com", "c@example.com"):
        send(session, mailtrap.url, address)
    params = {
        "filters[to][operator]": "ci_equal",
        "filters[to][value][]": ["A@example.com", "c@EXAMPLE.com"],
    }
    data = logs(session, mailtrap, **params).json()
    assert sorted(m["to"] for m in data["messages"]) == ["a@example.com", "c@example.com"]
    single = {"filters[to][operator]": "ci_equal", "filters[to][value]": "b@example.com"}
    assert [m["to"] for m in logs(session, mailtrap, **single).json()["messages"]] == [
        "b@example.com"
    ]


def test_category_status_domain_and_subject_filters_take_the_specs_operators(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    send(session, mailtrap.url, "a@example.com", category="Welcome")
    send(session, mailtrap.url, "b@example.com", category="Receipt")

    def listed(**params: Any) -> list[str]:
        answer = logs(session, mailtrap, **params)
        assert answer.status_code == 200, answer.text
        return sorted(m["to"] for m in answer.json()["messages"])

    both = ["a@example.com", "b@example.com"]
    category = "filters[category][operator]", "filters[category][value]"
    assert listed(**dict(zip(category, ["equal", "Welcome"], strict=True))) == both[:1]
    assert listed(**dict(zip(category, ["not_equal", "Welcome"], strict=True))) == both[1:]
    assert listed(**{category[0]: "equal", category[1] + "[]": ["Welcome", "Receipt"]}) == both
    status = "filters[status][operator]", "filters[status][value]"
    assert listed(**dict(zip(status, ["equal", "delivered"], strict=True))) == both
    assert listed(**dict(zip(status, ["equal", "not_delivered"], strict=True))) == []
    domain = "filters[domain_id][operator]", "filters[domain_id][value][]"
    assert listed(**dict(zip(domain, ["equal", ["1", "2"]], strict=True))) == both
    assert listed(**dict(zip(domain, ["not_equal", "1"], strict=True))) == []
    assert listed(**{"filters[subject][operator]": "not_empty"}) == both
    assert listed(**{"filters[subject][operator]": "empty"}) == []
    # Filters Mailtrap has but the local one cannot tell apart are ignored, like unknown ones.
    assert (
        listed(**{"filters[opens_count][operator]": "equal", "filters[opens_count][value]": "0"})
        == both
    )


def test_the_time_window_filters_by_sent_at(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    send(session, mailtrap.url, "a@example.com")
    now = datetime.now(timezone.utc)
    past = {
        "filters[sent_after]": (now - timedelta(hours=2)).isoformat(),
        "filters[sent_before]": (now - timedelta(hours=1)).isoformat(),
    }
    assert logs(session, mailtrap, **past).json()["total_count"] == 0
    around = {
        "filters[sent_after]": (now - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "filters[sent_before]": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    assert logs(session, mailtrap, **around).json()["total_count"] == 1
    backwards = {
        "filters[sent_after]": around["filters[sent_before]"],
        "filters[sent_before]": around["filters[sent_after]"],
    }
    assert logs(session, mailtrap, **backwards).status_code == 400


def test_pages_follow_the_cursor_newest_first_until_it_is_null(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.email_logs.page_size = 2
    sent = [send(session, mailtrap.url, f"r{i}@example.com")[0] for i in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {}
    while True:
        data = logs(session, mailtrap, **params).json()
        assert data["total_count"] == 5
        seen.extend(m["message_id"] for m in data["messages"])
        if data["next_page_cursor"] is None:
            break
        params = {"search_after": data["next_page_cursor"]}
    assert seen == list(reversed(sent))


def test_get_by_id_answers_one_message_or_404(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    (message_id,) = send(session, mailtrap.url, "a@example.com", custom_variables={"x": "1"})
    one = session.get(mailtrap.general_url + f"email_logs/{message_id}", timeout=5)
    assert one.status_code == 200
    assert one.json()["to"] == "a@example.com"
    assert one.json()["custom_variables"] == {"x": "1"}
    missing = session.get(
        mailtrap.general_url + "email_logs/00000000-0000-0000-0000-000000000000", timeout=5
    )
    assert missing.status_code == 404


def test_a_wrong_token_is_refused(mailtrap: LocalMailtrap) -> None:
    answer = requests.get(
        mailtrap.general_url + "email_logs", headers={"Api-Token": "wrong"}, timeout=5
    )
    assert answer.status_code == 401
    assert "error" in answer.json()


def test_the_list_rate_limit_answers_429(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.email_logs.list_limit = (2, 60.0)
    statuses = [logs(session, mailtrap).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert session.get(mailtrap.general_url + "email_logs/x", timeout=5).status_code == 404


def test_an_injected_failure_answers_every_logs_request(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.email_logs.failure = 503
    assert logs(session, mailtrap).status_code == 503
    mailtrap.email_logs.failure = None
    assert logs(session, mailtrap).status_code == 200
