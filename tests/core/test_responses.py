"""parse_response and classify_exception: how Mailtrap's answers become results or errors."""

from __future__ import annotations

import json
from email.utils import formatdate
from typing import Any

import pytest
import requests
from urllib3.exceptions import MaxRetryError, NewConnectionError, ProtocolError

from mailqueue.core.payload import ApiCall
from mailqueue.core.responses import (
    RequestResult,
    classify_exception,
    parse_response,
    parse_retry_after,
)
from mailqueue.errors import (
    PermanentDeliveryError,
    RateLimited,
    Redirected,
    TransientDeliveryError,
)

SINGLE = ApiCall("send", {}, (("to@example.com", "cc@example.com", "bcc@example.com"),))
BATCH = ApiCall(
    "batch", {}, (("a@example.com", "cc@example.com"), ("b@example.com", "cc@example.com"))
)


def body(data: object) -> bytes:
    return json.dumps(data).encode()


def parse(call: ApiCall, status: int, data: object, **kwargs: Any) -> list[RequestResult]:
    raw = data if isinstance(data, bytes) else body(data)
    return parse_response(call, status, raw, sandbox=kwargs.pop("sandbox", False), **kwargs)


# -- success ---------------------------------------------------------------


def test_single_send_zips_message_ids_with_recipients_in_order() -> None:
    [result] = parse(SINGLE, 200, {"success": True, "message_ids": ["m1", "m2", "m3"]})
    assert result.ok
    assert result.message_ids == {
        "to@example.com": "m1",
        "cc@example.com": "m2",
        "bcc@example.com": "m3",
    }


def test_one_message_id_is_shared_by_every_recipient() -> None:
    [result] = parse(SINGLE, 200, {"success": True, "message_ids": ["only"]}, sandbox=True)
    assert set(result.message_ids.values()) == {"only"}
    assert len(result.message_ids) == 3


def test_too_few_message_ids_are_assigned_in_order_and_the_rest_left_none() -> None:
    [result] = parse(SINGLE, 200, {"success": True, "message_ids": ["m1", "m2"]})
    assert result.ok
    assert result.message_ids == {
        "to@example.com": "m1",
        "cc@example.com": "m2",
        "bcc@example.com": None,
    }


def test_too_many_message_ids_do_not_raise() -> None:
    [result] = parse(SINGLE, 200, {"success": True, "message_ids": ["1", "2", "3", "4"]})
    assert result.message_ids["bcc@example.com"] == "3"


def test_repeated_address_keeps_the_last_message_id() -> None:
    call = ApiCall("send", {}, (("same@example.com", "other@example.com", "same@example.com"),))
    [result] = parse(call, 200, {"success": True, "message_ids": ["m1", "m2", "m3"]})
    assert result.message_ids == {"same@example.com": "m3", "other@example.com": "m2"}


def test_any_2xx_status_is_success() -> None:
    [result] = parse(SINGLE, 202, {"success": True, "message_ids": ["m"]})
    assert result.ok


def test_batch_gives_one_result_per_request() -> None:
    answer = {
        "success": True,
        "responses": [
            {"success": True, "message_ids": ["a1", "a2"]},
            {"success": True, "message_ids": ["b1", "b2"]},
        ],
    }
    results = parse(BATCH, 200, answer)
    assert [r.message_ids for r in results] == [
        {"a@example.com": "a1", "cc@example.com": "a2"},
        {"b@example.com": "b1", "cc@example.com": "b2"},
    ]


def test_failed_batch_item_carries_its_errors_without_raising() -> None:
    answer = {
        "success": True,
        "responses": [
            {"success": True, "message_ids": ["a1", "a2"]},
            {"success": False, "errors": ["bad address", "no subject"]},
        ],
    }
    ok, failed = parse(BATCH, 200, answer)
    assert ok.ok
    assert not failed.ok
    assert failed.error == "bad address; no subject"
    assert failed.message_ids == {"b@example.com": None, "cc@example.com": None}


def test_sandbox_batch_item_id_is_shared_by_its_recipients() -> None:
    answer = {
        "success": True,
        "responses": [
            {"success": True, "message_ids": ["a"]},
            {"success": True, "message_ids": ["b"]},
        ],
    }
    first, second = parse(ApiCall("batch/7", {}, BATCH.recipients), 200, answer, sandbox=True)
    assert first.message_ids == {"a@example.com": "a", "cc@example.com": "a"}
    assert second.message_ids == {"b@example.com": "b", "cc@example.com": "b"}


# -- HTTP errors -------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_server_errors_and_request_timeout_are_transient(status: int) -> None:
    with pytest.raises(TransientDeliveryError) as info:
        parse(SINGLE, status, {"errors": ["Retry later"]})
    assert not isinstance(info.value, RateLimited)
    assert info.value.status_code == status
    assert info.value.path == "send"
    assert not info.value.maybe_delivered


@pytest.mark.parametrize("status", [400, 404, 413, 422])
def test_other_non_2xx_are_permanent(status: int) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        parse(SINGLE, status, {"success": False, "errors": ["'from' is required"]})
    assert info.value.status_code == status
    assert "'from' is required" in str(info.value)
    assert not info.value.maybe_delivered


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_permanent_error_of_its_own(status: int) -> None:
    with pytest.raises(Redirected) as info:
        parse(SINGLE, status, {"success": False})
    assert isinstance(info.value, PermanentDeliveryError)
    assert info.value.status_code == status
    assert not info.value.maybe_delivered


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_say_the_token_was_rejected(status: int) -> None:
    with pytest.raises(PermanentDeliveryError, match="rejected the API token"):
        parse(SINGLE, status, {"errors": ["Unauthorized"]})


def test_error_names_path_status_and_body_excerpt() -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        parse(SINGLE, 400, b"x" * 5000)
    text = str(info.value)
    assert "path=send" in text
    assert "status=400" in text
    assert info.value.body_excerpt is not None
    assert len(info.value.body_excerpt) < 600


def test_429_is_rate_limited_with_retry_after_seconds() -> None:
    with pytest.raises(RateLimited) as info:
        parse(SINGLE, 429, {"errors": ["Rate limit exceeded"]}, retry_after="7")
    assert info.value.retry_after == 7.0
    assert info.value.status_code == 429


def test_429_without_retry_after_has_none() -> None:
    with pytest.raises(RateLimited) as info:
        parse(SINGLE, 429, {"errors": ["Rate limit exceeded"]})
    assert info.value.retry_after is None


def test_retry_after_accepts_an_http_date() -> None:
    assert parse_retry_after(formatdate(1_000_030, usegmt=True), now=1_000_000) == 30.0


def test_retry_after_in_the_past_is_zero() -> None:
    assert parse_retry_after(formatdate(1_000_000, usegmt=True), now=1_000_030) == 0.0


@pytest.mark.parametrize("value", ["soon", "", "nan"])
def test_unreadable_retry_after_is_none(value: str) -> None:
    assert parse_retry_after(value) is None


# -- 2xx answers we cannot read ------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"<html>Bad gateway</html>",
        body(["not", "an", "object"]),
        body({"success": True}),
        body({"success": True, "message_ids": "m1"}),
    ],
)
def test_unreadable_2xx_is_permanent_and_maybe_delivered(raw: bytes) -> None:
    with pytest.raises(PermanentDeliveryError) as info:
        parse_response(SINGLE, 200, raw, sandbox=False)
    assert info.value.maybe_delivered


def test_batch_with_wrong_number_of_responses_is_maybe_delivered() -> None:
    answer = {"success": True, "responses": [{"success": True, "message_ids": ["a"]}]}
    with pytest.raises(PermanentDeliveryError) as info:
        parse(BATCH, 200, answer)
    assert info.value.maybe_delivered


def test_batch_item_without_success_key_is_maybe_delivered() -> None:
    answer = {"success": True, "responses": [{"message_ids": ["a"]}, {"success": True}]}
    with pytest.raises(PermanentDeliveryError) as info:
        parse(BATCH, 200, answer)
    assert info.value.maybe_delivered


def test_2xx_reporting_failure_is_permanent() -> None:
    with pytest.raises(PermanentDeliveryError, match="no way"):
        parse(SINGLE, 200, {"success": False, "errors": ["no way"]})


# -- network errors ------------------------------------------------------------


def connection_refused() -> requests.ConnectionError:
    reason = NewConnectionError(None, "Failed to establish a new connection: refused")  # type: ignore[arg-type]
    return requests.ConnectionError(MaxRetryError(None, "/api/send", reason))  # type: ignore[arg-type]


def connection_aborted() -> requests.ConnectionError:
    return requests.ConnectionError(
        ProtocolError("Connection aborted.", ConnectionResetError(104, "reset by peer"))
    )


def test_connection_refused_is_transient_and_not_delivered() -> None:
    error = classify_exception(connection_refused(), "send")
    assert isinstance(error, TransientDeliveryError)
    assert not error.maybe_delivered
    assert error.path == "send"


def test_connect_timeout_is_transient_and_not_delivered() -> None:
    error = classify_exception(requests.exceptions.ConnectTimeout("timed out"), "send")
    assert isinstance(error, TransientDeliveryError)
    assert not error.maybe_delivered


def test_read_timeout_is_transient_and_maybe_delivered() -> None:
    error = classify_exception(requests.exceptions.ReadTimeout("read timed out"), "send")
    assert isinstance(error, TransientDeliveryError)
    assert error.maybe_delivered


def test_connection_aborted_after_sending_is_maybe_delivered() -> None:
    error = classify_exception(connection_aborted(), "batch")
    assert isinstance(error, TransientDeliveryError)
    assert error.maybe_delivered


def test_chunked_encoding_error_is_maybe_delivered() -> None:
    error = classify_exception(requests.exceptions.ChunkedEncodingError("cut"), "send")
    assert isinstance(error, TransientDeliveryError)
    assert error.maybe_delivered


def test_malformed_url_is_permanent() -> None:
    error = classify_exception(requests.exceptions.InvalidURL("no host"), "send")
    assert isinstance(error, PermanentDeliveryError)
