"""LocalMailtrap speaks Mailtrap's API over real HTTP on loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from mailqueue.testing import LocalMailtrap

SENDER = {"email": "sender@example.com", "name": "Sender"}
TEMPLATE = "b81aabcd-1a1e-41cf-91b6-eca0254b3d96"


def message(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "from": SENDER,
        "to": [{"email": "alice@example.com"}],
        "subject": "Hello",
        "text": "Hi",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


@pytest.fixture
def mailtrap() -> Iterator[LocalMailtrap]:
    with LocalMailtrap() as server:
        yield server


@pytest.fixture
def session(mailtrap: LocalMailtrap) -> Iterator[requests.Session]:
    with requests.Session() as client:
        client.headers["Api-Token"] = mailtrap.token
        yield client


def post(
    session: requests.Session, mailtrap: LocalMailtrap, path: str, data: object, **kwargs: Any
) -> requests.Response:
    return session.post(mailtrap.url + path, json=data, timeout=5, **kwargs)


# -- sending -----------------------------------------------------------------


def test_send_answers_one_message_id_per_recipient_in_to_cc_bcc_order(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    data = message(
        to=[{"email": "a@example.com"}],
        cc=[{"email": "c@example.com"}],
        bcc=[{"email": "b@example.com"}, {"email": "d@example.com"}],
    )
    answer = post(session, mailtrap, "send", data)
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    assert len(body["message_ids"]) == 4
    [accepted] = mailtrap.accepted
    assert accepted.recipients == (
        "a@example.com",
        "c@example.com",
        "b@example.com",
        "d@example.com",
    )
    assert list(accepted.message_ids) == body["message_ids"]
    assert accepted.path == "send"
    assert accepted.payload == data


def test_sandbox_send_answers_exactly_one_message_id(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    data = message(to=[{"email": "a@example.com"}, {"email": "b@example.com"}])
    answer = post(session, mailtrap, "send/12345", data)
    assert len(answer.json()["message_ids"]) == 1
    assert mailtrap.accepted[0].inbox_id == "12345"


def test_bearer_authorization_is_accepted(mailtrap: LocalMailtrap) -> None:
    answer = requests.post(
        mailtrap.url + "send",
        json=message(),
        headers={"Authorization": f"Bearer {mailtrap.token}"},
        timeout=5,
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Api-Token": "wrong"}])
def test_missing_or_wrong_token_is_401(mailtrap: LocalMailtrap, headers: dict[str, str]) -> None:
    answer = requests.post(mailtrap.url + "send", json=message(), headers=headers, timeout=5)
    assert answer.status_code == 401
    assert answer.json() == {"success": False, "errors": ["Unauthorized"]}
    assert mailtrap.accepted == []


def test_unknown_path_is_404(mailtrap: LocalMailtrap, session: requests.Session) -> None:
    assert post(session, mailtrap, "sendx", message()).status_code == 404


@pytest.mark.parametrize("inbox", ["0", "abc", "-1", "1.5", str(2**63), "9" * 5000])
def test_a_sandbox_path_without_an_inbox_id_from_1_is_404(
    mailtrap: LocalMailtrap, session: requests.Session, inbox: str
) -> None:
    answer = post(session, mailtrap, f"send/{inbox}", message())
    assert answer.status_code == 404
    assert answer.json() == {"success": False, "errors": ["Not Found"]}
    assert mailtrap.accepted == []


# -- validation -------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"from": None}, "'from' is required"),
        ({"to": None}, "'to', 'cc' or 'bcc' address is required"),
        ({"subject": None}, "'subject' is required"),
        ({"text": None}, "must specify either text or html body"),
        ({"template_uuid": TEMPLATE}, "'subject' is not allowed with 'template_uuid'"),
        ({"category": "x" * 256}, "'category' must be at most 255 characters"),
        ({"subject": ""}, "'subject' must be a non-empty string"),
        ({"html": ""}, "'html' must be a non-empty string"),
        ({"headers": {"X-Priority": 1}}, "'headers' values must be strings"),
        ({"headers": {"Subject": "x"}}, "reserved Subject"),
        ({"custom_variables": {"n": 1}}, "'custom_variables' values must be strings"),
        ({"custom_variables": {"k": "v" * 1000}}, "must not exceed 1000 bytes"),
        ({"from": {"email": "josé@example.com"}}, "'From' header does not match"),
        ({"from": {"email": "nobody"}}, "'from' address is invalid"),
        ({"reply_to": {"name": "x"}}, "'reply_to' address is invalid"),
        ({"attachments": [{"content": "", "filename": "a"}]}, "'content' must be a non-empty"),
        ({"attachments": [{"content": "AA=="}]}, "attachment 'filename' is required"),
        (
            {"attachments": [{"content": "AA==", "filename": "a", "disposition": "x"}]},
            "'disposition' must be 'attachment' or 'inline'",
        ),
        ({"to": [{"email": f"r{i}@example.com"} for i in range(1001)]}, "at most 1000"),
        ({"to": [{"email": "someone@nowhere.invalid"}]}, "someone@nowhere.invalid"),
    ],
)
def test_send_validation_errors_are_400(
    mailtrap: LocalMailtrap, session: requests.Session, overrides: dict[str, Any], error: str
) -> None:
    answer = post(session, mailtrap, "send", message(**overrides))
    assert answer.status_code == 400
    body = answer.json()
    assert body["success"] is False
    assert any(error in text for text in body["errors"])
    assert mailtrap.accepted == []


def test_template_send_needs_no_subject_or_body(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    data = message(subject=None, text=None, template_uuid=TEMPLATE)
    assert post(session, mailtrap, "send", data).status_code == 200


@pytest.mark.parametrize("overrides", [{"template_uuid": "t-1"}, {"category": "c"}])
def test_a_template_send_needs_a_uuid_and_no_category(
    mailtrap: LocalMailtrap, session: requests.Session, overrides: dict[str, Any]
) -> None:
    data = {**message(subject=None, text=None, template_uuid=TEMPLATE), **overrides}
    answer = post(session, mailtrap, "send", data)
    assert answer.status_code == 400
    assert answer.json()["success"] is False


def test_html_alone_is_a_body(mailtrap: LocalMailtrap, session: requests.Session) -> None:
    assert post(session, mailtrap, "send", message(text=None, html="<p>x</p>")).status_code == 200


def test_malformed_json_is_400(mailtrap: LocalMailtrap, session: requests.Session) -> None:
    answer = session.post(mailtrap.url + "send", data=b"{nope", timeout=5)
    assert answer.status_code == 400


@pytest.mark.parametrize("recipients", [5, True, "a@example.com", {"email": "a@example.com"}])
def test_recipients_of_the_wrong_json_type_are_a_400_not_a_dropped_connection(
    mailtrap: LocalMailtrap, session: requests.Session, recipients: object
) -> None:
    single = post(session, mailtrap, "send", {**message(), "to": recipients})
    batch = post(session, mailtrap, "batch", {"base": message(), "requests": [{"to": recipients}]})

    assert single.status_code == 400
    assert single.json()["success"] is False
    assert batch.status_code == 200
    assert [item["success"] for item in batch.json()["responses"]] == [False]


# -- batch --------------------------------------------------------------------


def test_batch_merges_requests_over_base_and_fails_only_refused_items(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    data = {
        "base": {"from": SENDER, "subject": "Base", "text": "Hi"},
        "requests": [
            {"to": [{"email": "a@example.com"}], "subject": "Own"},
            {"to": [{"email": "b@refused.invalid"}]},
            {"to": [{"email": "c@example.com"}]},
        ],
    }
    answer = post(session, mailtrap, "batch", data)
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    assert [item["success"] for item in body["responses"]] == [True, False, True]
    assert body["responses"][1]["errors"]
    first, third = mailtrap.accepted
    assert first.payload["subject"] == "Own"
    assert third.payload["subject"] == "Base"
    assert (first.batch_index, third.batch_index) == (0, 2)


def test_sandbox_batch_answers_one_id_per_item(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    data = {
        "base": {"from": SENDER, "subject": "S", "text": "T", "cc": [{"email": "c@example.com"}]},
        "requests": [{"to": [{"email": "a@example.com"}]}, {"to": [{"email": "b@example.com"}]}],
    }
    body = post(session, mailtrap, "batch/99", data).json()
    assert [len(item["message_ids"]) for item in body["responses"]] == [1, 1]


def test_a_request_that_breaks_the_schema_fails_alone_with_mailtrap_errors(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    data = {
        "base": {"from": SENDER, "subject": "S", "text": "T"},
        "requests": [
            {"to": [{"email": "a@example.com"}], "custom_variables": {"n": 1}},
            {"to": [{"email": "b@example.com"}], "custom_variables": {"n": "1"}},
        ],
    }
    body = post(session, mailtrap, "batch", data).json()
    assert body["responses"][0] == {
        "success": False,
        "errors": ["'custom_variables' values must be strings"],
    }
    assert body["responses"][1]["success"] is True


@pytest.mark.parametrize("requests_", [None, []])
def test_a_batch_without_requests_is_400(
    mailtrap: LocalMailtrap, session: requests.Session, requests_: Any
) -> None:
    data = {"base": {"from": SENDER, "subject": "S", "text": "T"}, "requests": requests_}
    answer = post(session, mailtrap, "batch", data)
    assert answer.status_code == 400
    assert answer.json() == {"success": False, "errors": ["empty field: 'requests'"]}


def test_batch_over_500_requests_is_refused_whole(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    data = {
        "base": {"from": SENDER, "subject": "S", "text": "T"},
        "requests": [{"to": [{"email": f"r{i}@example.com"}]} for i in range(501)],
    }
    assert post(session, mailtrap, "batch", data).status_code == 400
    assert mailtrap.accepted == []


@pytest.mark.parametrize(("over", "status"), [(0, 200), (1, 400)])
def test_a_batch_body_over_50_mb_is_refused_whole(
    mailtrap: LocalMailtrap, session: requests.Session, over: int, status: int
) -> None:
    base: dict[str, Any] = {"from": SENDER, "subject": "S", "text": ""}
    data = {"base": base, "requests": [message()]}
    base["text"] = "x" * (50_000_000 + over - len(json.dumps(data)))
    body = json.dumps(data).encode()
    assert len(body) == 50_000_000 + over

    answer = session.post(mailtrap.url + "batch", data=body, timeout=60)

    assert answer.status_code == status
    if status == 400:
        assert answer.json()["success"] is False
        assert "50000000 bytes" in answer.json()["errors"][0]
    assert len(mailtrap.accepted) == (status == 200)


# -- rate limit -------------------------------------------------------------


def test_requests_beyond_the_rate_limit_get_429_with_retry_after() -> None:
    with LocalMailtrap(rate_limit=(3, 10.0), retry_after=True) as server:
        with requests.Session() as client:
            client.headers["Api-Token"] = server.token
            answers = [post(client, server, "send", message()) for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert answers[3].json() == {"success": False, "errors": ["Rate limit exceeded"]}
        assert 1 <= int(answers[3].headers["Retry-After"]) <= 10
        assert server.stats.rate_limited == 2
        assert len(server.accepted) == 3


def test_rate_limit_window_slides() -> None:
    with LocalMailtrap(rate_limit=(2, 1.0)) as server, requests.Session() as client:
        client.headers["Api-Token"] = server.token
        first = [post(client, server, "send", message()).status_code for _ in range(3)]
        # Once the first arrivals leave the window, a request is accepted again.
        deadline = time.monotonic() + 10
        while (later := post(client, server, "send", message()).status_code) == 429:
            assert time.monotonic() < deadline, "the window never slid"
            time.sleep(0.05)
    assert first == [200, 200, 429]
    assert later == 200


def test_429_has_no_retry_after_unless_asked() -> None:
    with LocalMailtrap(rate_limit=(1, 10.0)) as server, requests.Session() as client:
        client.headers["Api-Token"] = server.token
        post(client, server, "send", message())
        answer = post(client, server, "send", message())
    assert answer.status_code == 429
    assert "Retry-After" not in answer.headers


# -- streams and tokens ----------------------------------------------------------


def test_each_accepted_message_records_the_stream_it_reached(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    assert session.post(mailtrap.bulk_url + "send", json=message(), timeout=5).status_code == 200
    assert post(session, mailtrap, "send", message()).status_code == 200
    assert post(session, mailtrap, "send/77", message()).status_code == 200
    batch = {"base": message(to=None), "requests": [{"to": [{"email": "b@example.com"}]}]}
    assert session.post(mailtrap.bulk_url + "batch", json=batch, timeout=5).status_code == 200

    streams = [(m.stream, m.path) for m in mailtrap.accepted]
    assert streams == [
        ("bulk", "send"),
        ("transactional", "send"),
        ("sandbox", "send/77"),
        ("bulk", "batch"),
    ]


def test_the_bulk_stream_has_no_sandbox_paths(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    answer = session.post(mailtrap.bulk_url + "send/77", json=message(), timeout=5)

    assert answer.status_code == 404
    assert mailtrap.accepted == []


def test_extra_tokens_are_accepted_and_recorded() -> None:
    with LocalMailtrap(tokens=["second-token"]) as server, requests.Session() as client:
        client.headers["Api-Token"] = "second-token"
        accepted = post(client, server, "send", message()).status_code
        client.headers["Api-Token"] = "unknown-token"
        refused = post(client, server, "send", message()).status_code

    assert (accepted, refused) == (200, 401)
    assert [m.token for m in server.accepted] == ["second-token"]


def test_one_window_per_token_over_both_streams() -> None:
    with (
        LocalMailtrap(rate_limit=(2, 10.0), tokens=["other"]) as server,
        requests.Session() as client,
    ):
        client.headers["Api-Token"] = server.token
        first = [
            client.post(url + "send", json=message(), timeout=5).status_code
            for url in (server.url, server.bulk_url, server.bulk_url)
        ]
        client.headers["Api-Token"] = "other"
        other = post(client, server, "send", message()).status_code

    assert first == [200, 200, 429]
    assert other == 200


# -- faults -------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["500", "503", "429"])
def test_injected_status_faults_answer_that_status_without_accepting(
    mailtrap: LocalMailtrap, session: requests.Session, fault: str
) -> None:
    mailtrap.inject(fault)
    assert post(session, mailtrap, "send", message()).status_code == int(fault)
    assert mailtrap.accepted == []
    assert post(session, mailtrap, "send", message()).status_code == 200
    assert mailtrap.stats.faults[fault] == 1


def test_injected_faults_apply_to_the_next_n_requests(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.inject("503", times=2)
    codes = [post(session, mailtrap, "send", message()).status_code for _ in range(3)]
    assert codes == [503, 503, 200]


def test_reset_closes_the_connection_without_accepting(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.inject("reset")
    with pytest.raises(requests.ConnectionError):
        post(session, mailtrap, "send", message())
    assert mailtrap.accepted == []


def test_lost_accepts_the_message_but_never_answers(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.inject("lost")
    with pytest.raises(requests.ConnectionError):
        post(session, mailtrap, "send", message())
    assert len(mailtrap.accepted) == 1


def test_slow_accepts_then_answers_after_slow_seconds(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.slow_seconds = 0.5
    mailtrap.inject("slow")
    with pytest.raises(requests.ReadTimeout):
        session.post(mailtrap.url + "send", json=message(), timeout=(1, 0.2))
    assert len(mailtrap.accepted) == 1


def test_nonjson_answers_html_200_without_accepting(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    mailtrap.inject("nonjson")
    answer = post(session, mailtrap, "send", message())
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert mailtrap.accepted == []


@pytest.mark.parametrize(
    ("fault", "status", "content_type"),
    [("accepted-500", 500, "application/json"), ("accepted-nonjson", 200, "text/html")],
)
def test_accepted_faults_accept_the_message_then_answer_an_error(
    mailtrap: LocalMailtrap,
    session: requests.Session,
    fault: str,
    status: int,
    content_type: str,
) -> None:
    mailtrap.inject(fault)
    answer = post(session, mailtrap, "send", message())
    assert answer.status_code == status
    assert answer.headers["Content-Type"].startswith(content_type)
    assert b"message_ids" not in answer.content
    assert len(mailtrap.accepted) == 1


def test_unknown_fault_is_refused(mailtrap: LocalMailtrap) -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        mailtrap.inject("explode")


def test_fault_rates_are_reproducible_with_a_seed() -> None:
    def codes(seed: int) -> list[int]:
        with (
            LocalMailtrap(fault_rates={"500": 0.5}, seed=seed) as server,
            requests.Session() as client,
        ):
            client.headers["Api-Token"] = server.token
            return [post(client, server, "send", message()).status_code for _ in range(20)]

    first = codes(1)
    assert first == codes(1)
    assert 500 in first
    assert 200 in first


# -- records and speed ---------------------------------------------------------


def test_stats_count_requests_by_path_and_status(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    post(session, mailtrap, "send", message())
    post(session, mailtrap, "send", message(subject=None))
    stats = mailtrap.stats
    assert stats.requests == 2
    assert stats.connections == 1
    assert stats.by_path["/api/send"] == 2
    assert stats.by_status[200] == 1
    assert stats.by_status[400] == 1


def test_reset_forgets_messages_and_counters(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    post(session, mailtrap, "send", message())
    mailtrap.reset()
    assert mailtrap.accepted == []
    assert mailtrap.stats.requests == 0


def test_concurrent_requests_overlap_their_latency() -> None:
    with LocalMailtrap(latency=0.5) as server:

        def send(_: int) -> int:
            return requests.post(
                server.url + "send",
                json=message(),
                headers={"Api-Token": server.token},
                timeout=5,
            ).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(send, range(8)))
    assert codes == [200] * 8
    assert server.stats.max_concurrency > 1


def test_a_client_session_keeps_one_connection_alive_for_every_request(
    mailtrap: LocalMailtrap, session: requests.Session
) -> None:
    codes = [post(session, mailtrap, "send", message()).status_code for _ in range(50)]

    assert codes == [200] * 50
    assert mailtrap.stats.connections == 1


def test_settings_name_every_url_this_server_serves(mailtrap: LocalMailtrap) -> None:
    settings = mailtrap.settings("redis://127.0.0.1:1/0")

    assert (settings.api_url, settings.bulk_api_url, settings.general_api_url) == (
        mailtrap.url,
        mailtrap.bulk_url,
        mailtrap.general_url,
    )
    assert mailtrap.environment() == {
        "MAILTRAP_API_TOKEN": mailtrap.token,
        "MAILTRAP_API_URL": mailtrap.url,
        "MAILTRAP_BULK_API_URL": mailtrap.bulk_url,
        "MAILTRAP_GENERAL_API_URL": mailtrap.general_url,
    }


def test_command_line_prints_every_url_as_settings_to_export_and_serves_each() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mailqueue.testing", "--token", "cli-token"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().strip() for _ in range(4)]
        env = dict(line.removeprefix("export ").split("=", 1) for line in lines)
        assert all(line.startswith("export ") for line in lines), lines
        assert set(env) == {
            "MAILTRAP_API_TOKEN",
            "MAILTRAP_API_URL",
            "MAILTRAP_BULK_API_URL",
            "MAILTRAP_GENERAL_API_URL",
        }
        assert env["MAILTRAP_API_TOKEN"] == "cli-token"
        headers = {"Api-Token": "cli-token"}
        for base, path in [
            (env["MAILTRAP_API_URL"], "send"),
            (env["MAILTRAP_API_URL"], "send/42"),  # the sandbox
            (env["MAILTRAP_BULK_API_URL"], "send"),
        ]:
            assert base.startswith("http://127.0.0.1:"), base
            answer = requests.post(base + path, json=message(), headers=headers, timeout=5)
            assert answer.status_code == 200, (base, path, answer.text)
        for path in ("email_logs", "suppressions"):
            answer = requests.get(
                env["MAILTRAP_GENERAL_API_URL"] + path, headers=headers, timeout=5
            )
            assert answer.status_code == 200, (path, answer.text)
    finally:
        process.terminate()
        assert process.wait(timeout=5) == 0


def test_the_readme_snippet_for_testing_your_own_code_sets_every_url() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Testing your own code", 1)[1]
    snippet = section.split("```python", 1)[1].split("```", 1)[0]

    for line in (
        "api_url=mailtrap.url",
        "bulk_api_url=mailtrap.bulk_url",
        "general_api_url=mailtrap.general_url",
    ):
        assert line in snippet, line
