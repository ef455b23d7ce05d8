"""Mailtrap's official Python SDK (PyPI ``mailtrap``) against LocalMailtrap.

The SDK only speaks HTTPS to ``api_host``, so the stand-in serves TLS with a
certificate from a throwaway CA (trustme), which requests trusts through
``REQUESTS_CA_BUNDLE``. What the SDK sends and how it reads the answers were
written by Mailtrap, not here: these tests check that the stand-in's shapes
(successes, 400s, 401s, batch item errors, sandbox paths) are the ones that
client expects.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mailtrap as mt
import pytest
import trustme
from mailtrap.exceptions import APIError, AuthorizationError

from mailqueue.testing import LocalMailtrap
from tests.mailtrap_schema import batch_errors, send_errors

TEMPLATE = "b81aabcd-1a1e-41cf-91b6-eca0254b3d96"
SENDER = mt.Address(email="shop@example.com", name="Shop")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    return context, bundle


@pytest.fixture
def mailtrap(
    tls: tuple[ssl.SSLContext, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalMailtrap]:
    context, bundle = tls
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    with LocalMailtrap(ssl_context=context) as server:
        yield server


def client(server: LocalMailtrap, **options: Any) -> Any:
    options.setdefault("token", server.token)
    return mt.MailtrapClient(api_host=f"{server.host}:{server.port}", **options)


def test_the_stand_in_speaks_https_when_given_a_context(mailtrap: LocalMailtrap) -> None:
    assert mailtrap.url.startswith("https://")


# -- send --------------------------------------------------------------------


def test_sdk_send_is_accepted_with_one_id_per_recipient(mailtrap: LocalMailtrap) -> None:
    mail = mt.Mail(
        sender=SENDER,
        to=[mt.Address(email="alice@example.com"), mt.Address(email="bob@example.com")],
        cc=[mt.Address(email="carol@example.com", name="Carol")],
        subject="Your order",
        text="It ships today.",
        html="<p>It ships today.</p>",
        category="orders",
        headers={"X-Order": "1234"},
        custom_variables={"order": "1234"},
        attachments=[
            mt.Attachment(
                content=base64.b64encode(b"\x89PNG"),
                filename="logo.png",
                mimetype="image/png",
                disposition=mt.Disposition.INLINE,
                content_id="logo",
            )
        ],
    )

    answer = client(mailtrap).send(mail)

    assert answer["success"] is True
    [accepted] = mailtrap.accepted
    assert list(accepted.message_ids) == answer["message_ids"]
    assert accepted.recipients == ("alice@example.com", "bob@example.com", "carol@example.com")
    assert accepted.payload["attachments"][0]["disposition"] == "inline"
    assert send_errors(accepted.payload) == []  # the SDK's body, under our reading of the spec


def test_sdk_template_send_is_accepted(mailtrap: LocalMailtrap) -> None:
    mail = mt.MailFromTemplate(
        sender=SENDER,
        to=[mt.Address(email="alice@example.com")],
        template_uuid=TEMPLATE,
        template_variables={"name": "Alice"},
    )

    answer = client(mailtrap).send(mail)

    assert answer["success"] is True
    assert mailtrap.accepted[0].payload["template_uuid"] == TEMPLATE
    assert send_errors(mailtrap.accepted[0].payload) == []


@pytest.mark.parametrize(
    ("mail", "error"),
    [
        (
            mt.Mail(sender=SENDER, to=[mt.Address(email="a@example.com")], subject="", text="x"),
            "'subject' must be a non-empty string",
        ),
        (
            mt.Mail(sender=SENDER, to=[mt.Address(email="a@example.com")], subject="Hi"),
            "must specify either text or html body",
        ),
        (
            mt.MailFromTemplate(
                sender=SENDER, to=[mt.Address(email="a@example.com")], template_uuid="welcome"
            ),
            "'template_uuid' must be a UUID",
        ),
        (
            mt.Mail(
                sender=SENDER,
                to=[mt.Address(email="a@example.com")],
                subject="Hi",
                text="x",
                custom_variables={"user_id": 6},
            ),
            "'custom_variables' values must be strings",
        ),
        (
            mt.Mail(sender=SENDER, to=[], subject="Hi", text="x"),
            "'to', 'cc' or 'bcc' address is required",
        ),
        (
            mt.Mail(
                sender=mt.Address(email="josé@example.com"),
                to=[mt.Address(email="a@example.com")],
                subject="Hi",
                text="x",
            ),
            "'From' header does not match the sender's domain",
        ),
    ],
)
def test_sdk_send_of_what_the_schema_refuses_raises_api_error_400(
    mailtrap: LocalMailtrap, mail: Any, error: str
) -> None:
    with pytest.raises(APIError) as raised:
        client(mailtrap).send(mail)

    assert raised.value.status == 400
    assert error in raised.value.errors
    assert mailtrap.accepted == []


def test_sdk_with_a_wrong_token_raises_authorization_error(mailtrap: LocalMailtrap) -> None:
    mail = mt.Mail(sender=SENDER, to=[mt.Address(email="a@example.com")], subject="Hi", text="x")

    with pytest.raises(AuthorizationError) as raised:
        client(mailtrap, token="wrong").send(mail)

    assert raised.value.status == 401
    assert raised.value.errors == ["Unauthorized"]


# -- batch -------------------------------------------------------------------


def batch(*requests: Any) -> Any:
    base = mt.BatchMail(sender=SENDER, subject="News", text="Hello", category="news")
    return mt.BatchSendEmailParams(base=base, requests=list(requests))


def test_sdk_batch_answers_each_request_in_order(mailtrap: LocalMailtrap) -> None:
    params = batch(
        mt.BatchEmailRequest(to=[mt.Address(email="a@example.com")]),
        mt.BatchEmailRequest(
            to=[mt.Address(email="b@example.com")], custom_variables={"user_id": 7}
        ),
        mt.BatchEmailRequest(to=[mt.Address(email="c@example.com")], subject="Own"),
    )

    answer = client(mailtrap).batch_send(params)

    assert answer["success"] is True
    first, refused, third = answer["responses"]
    assert first["success"] is True and len(first["message_ids"]) == 1
    assert refused["success"] is False
    assert refused["errors"] == ["'custom_variables' values must be strings"]
    assert third["success"] is True
    assert [m.payload["subject"] for m in mailtrap.accepted] == ["News", "Own"]
    assert batch_errors(params.api_data) == ["7 is not of type 'string'"]


def test_sdk_batch_template_request_may_not_carry_the_base_category(
    mailtrap: LocalMailtrap,
) -> None:
    params = mt.BatchSendEmailParams(
        base=mt.BatchMailFromTemplate(sender=SENDER, template_uuid=TEMPLATE),
        requests=[
            mt.BatchEmailRequest(to=[mt.Address(email="a@example.com")]),
            mt.BatchEmailRequest(to=[mt.Address(email="b@example.com")], category="c"),
        ],
    )

    answer = client(mailtrap).batch_send(params)

    assert [item["success"] for item in answer["responses"]] == [True, False]
    assert answer["responses"][1]["errors"] == ["'category' is not allowed with 'template_uuid'"]


def test_sdk_batch_without_requests_raises_api_error_400(mailtrap: LocalMailtrap) -> None:
    with pytest.raises(APIError) as raised:
        client(mailtrap).batch_send(batch())

    assert raised.value.status == 400
    assert raised.value.errors == ["empty field: 'requests'"]


# -- sandbox -------------------------------------------------------------------


def test_sdk_sandbox_send_and_batch_reach_the_inbox(mailtrap: LocalMailtrap) -> None:
    sandbox = client(mailtrap, sandbox=True, inbox_id="4242")
    mail = mt.Mail(
        sender=SENDER,
        to=[mt.Address(email="a@example.com"), mt.Address(email="b@example.com")],
        subject="Hi",
        text="x",
    )

    sent = sandbox.send(mail)
    batched = sandbox.batch_send(batch(mt.BatchEmailRequest(to=[mt.Address(email="c@x.com")])))

    assert len(sent["message_ids"]) == 1  # one id per sandbox message
    assert batched["responses"][0]["success"] is True
    assert [m.path for m in mailtrap.accepted] == ["send/4242", "batch/4242"]
    assert {m.stream for m in mailtrap.accepted} == {"sandbox"}


def test_sdk_sandbox_send_to_inbox_zero_is_not_found(mailtrap: LocalMailtrap) -> None:
    mail = mt.Mail(sender=SENDER, to=[mt.Address(email="a@example.com")], subject="Hi", text="x")

    with pytest.raises(APIError) as raised:
        client(mailtrap, sandbox=True, inbox_id="0").send(mail)

    assert raised.value.status == 404
    assert mailtrap.accepted == []


def test_sdk_sandbox_send_of_what_the_schema_refuses_raises_api_error_400(
    mailtrap: LocalMailtrap,
) -> None:
    mail = mt.Mail(sender=SENDER, to=[mt.Address(email="a@example.com")], subject="Hi")

    with pytest.raises(APIError) as raised:
        client(mailtrap, sandbox=True, inbox_id="4242").send(mail)

    assert raised.value.status == 400
    assert raised.value.errors == ["must specify either text or html body"]
    assert mailtrap.accepted == []


def test_sdk_sandbox_batch_fails_a_refused_request_alone(mailtrap: LocalMailtrap) -> None:
    params = batch(
        mt.BatchEmailRequest(to=[mt.Address(email="a@example.com")], headers={"Subject": "x"}),
        mt.BatchEmailRequest(to=[mt.Address(email="b@example.com")]),
    )

    answer = client(mailtrap, sandbox=True, inbox_id="4242").batch_send(params)

    refused, sent = answer["responses"]
    assert refused["success"] is False and "reserved Subject" in refused["errors"][0]
    assert sent["success"] is True
    assert [m.recipients for m in mailtrap.accepted] == [("b@example.com",)]


def test_sdk_sandbox_with_a_wrong_token_raises_authorization_error(
    mailtrap: LocalMailtrap,
) -> None:
    mail = mt.Mail(sender=SENDER, to=[mt.Address(email="a@example.com")], subject="Hi", text="x")

    with pytest.raises(AuthorizationError) as raised:
        client(mailtrap, token="wrong", sandbox=True, inbox_id="4242").send(mail)

    assert raised.value.status == 401
    assert raised.value.errors == ["Unauthorized"]
    assert mailtrap.accepted == []
