"""Parity with django-anymail's Mailtrap backend: same path and JSON for the same message.

Anymail builds its payload from an equivalent Django EmailMessage without any
network access (only its payload-building methods run). The deliberate
differences in DESIGN.md and docs/mailtrap-schema.md are the only allowed
divergences: :func:`deliberately_rejected` lists the messages refused here and
:func:`schema_form` the changes made to what Anymail would post.
"""

from __future__ import annotations

import json
import random
from base64 import b64encode
from email import encoders
from email.mime.base import MIMEBase
from typing import Any

import pytest

django = pytest.importorskip("django")
anymail_mailtrap = pytest.importorskip("anymail.backends.mailtrap")

from django.conf import settings as django_settings  # noqa: E402

if not django_settings.configured:
    django_settings.configure(
        SECRET_KEY="test-only",
        ANYMAIL={"MAILTRAP_API_TOKEN": "x"},
        EMAIL_BACKEND="anymail.backends.mailtrap.EmailBackend",
        DEFAULT_CHARSET="utf-8",
    )
    django.setup()

from anymail.exceptions import AnymailUnsupportedFeature  # noqa: E402
from django.core.mail import EmailMultiAlternatives  # noqa: E402

from mailqueue.core.addresses import parse_address_list  # noqa: E402
from mailqueue.core.payload import build_payload  # noqa: E402
from mailqueue.errors import UnsupportedFeature, ValidationError  # noqa: E402
from mailqueue.settings import Settings  # noqa: E402

VALID_ADDRESSES = [
    "alice@example.com",
    "Bob <bob@example.com>",
    '"Last, First" <lf@example.com>',
    '"Smith, J. \\"JJ\\"" <jj@example.com>',
    "Příjemce <příjemce@příklad.example.cz>",
    "user@ÜNICODE.example",
    "Інше <reply3@příklad.example.cz>",
    "відправник@example.com",
    "carol@example.org",
    "a@example.com, Dee <d@example.com>",
    "Dan Ünïcode <dan@example.net>",
]
INVALID_ADDRESSES = ["Last, First <lf@example.com>", "bad-address"]
PNG = b"\x89PNG\r\n\x1a\n\x00\x00"
TEMPLATE_UUID = "b81aabcd-1a1e-41cf-91b6-eca0254b3d96"


def b64(data: bytes) -> str:
    return b64encode(data).decode("ascii")


def pick_address(rng: random.Random) -> str:
    if rng.random() < 0.03:
        return rng.choice(INVALID_ADDRESSES)
    return rng.choice(VALID_ADDRESSES)


def wire_emails(addresses: list[str]) -> list[str]:
    return [a.email for text in addresses for a in parse_address_list(text, "to")]


def random_attachment(rng: random.Random) -> dict[str, Any]:
    kind = rng.randrange(5)
    if kind == 0:
        return {"filename": "notes.txt", "content": b64("héllo".encode()), "mimetype": "text/plain"}
    if kind == 1:
        return {"filename": "émoticône.img", "content": b64(b";-)"), "mimetype": "image/x-emoticon"}
    if kind == 2:
        return {"content": b64(b"\x00\x01binary")}
    if kind == 3:
        return {"filename": "report.pdf", "content": b64(b"%PDF-1.4")}
    inline: dict[str, Any] = {
        "filename": "logo.png",
        "content": b64(PNG),
        "mimetype": "image/png",
        "inline": True,
    }
    if rng.random() < 0.7:
        inline["content_id"] = rng.choice(["<logo@example>", "logo-cid"])
    return inline


def random_message(rng: random.Random) -> dict[str, Any]:
    message: dict[str, Any] = {
        "from_email": rng.choice(
            [
                "from@example.com",
                "Sender <sender@example.com>",
                '"Odesílatel, z adresy" <odesilatel@příklad.example.cz>',
                *(
                    ['"Odesílatel, z adresy" <відправник@příklad.example.cz>']
                    * (rng.random() < 0.3)
                ),
            ]
            + (["a@example.com, b@example.com"] if rng.random() < 0.05 else [])
        ),
        "to": [pick_address(rng) for _ in range(rng.choice([0, 1, 2, 2, 3, 4]))],
    }
    if rng.random() < 0.4:
        message["cc"] = [pick_address(rng) for _ in range(rng.randrange(3))]
    if rng.random() < 0.3:
        message["bcc"] = [pick_address(rng) for _ in range(rng.randrange(3))]
    if rng.random() < 0.4:
        message["reply_to"] = [pick_address(rng) for _ in range(rng.choice([1, 1, 2, 3]))]
    use_template = rng.random() < 0.25
    if use_template:
        message["template_id"] = TEMPLATE_UUID
        if rng.random() < 0.5:
            message["merge_global_data"] = {"company": "ACME", "n": 1}
        if rng.random() < 0.1:
            message["subject"] = "Conflicting subject"
    else:
        message["subject"] = rng.choice(["", *["Hello"] * 6, 'Předmět, "quoted"'])
        text = rng.choice(["Body", "Body", "Body", "", None])
        html = rng.choice([None, None, "<p>Hi</p>", ""])
        if text is not None:
            message["text"] = text
        if html is not None:
            message["html"] = html
    if rng.random() < 0.4:
        headers: dict[str, Any] = {}
        for name, value in rng.sample(
            [
                ("X-Custom", "v"),
                ("X-Unicode", "Ünicode"),
                ("x-custom", "w"),
                ("Reply-To", pick_address(rng)),
                ("List-Unsubscribe", "<mailto:unsub@example.com>"),
                ("From", "Header From <hf@example.com>"),
                ("To", "spoof@example.com"),
            ],
            rng.randrange(1, 4),
        ):
            if name in ("From", "To") and rng.random() < 0.7:
                continue
            headers[name] = value
        message["headers"] = headers
    if rng.random() < 0.3:
        message["tags"] = rng.choice([[], ["welcome"], ["one", "two"]])
        if use_template and rng.random() < 0.7:
            message.pop("tags")
    if rng.random() < 0.3:
        message["metadata"] = {"user_id": 6, "flag": True, "none": None, "s": "x"}
    if rng.random() < 0.3:
        message["attachments"] = [random_attachment(rng) for _ in range(rng.randrange(1, 3))]
    if rng.random() < 0.3:
        keys = [*wire_emails_safe(message.get("to", [])), "nobody@example.com"]
        merge = rng.choice(["merge_data", "merge_metadata", "merge_headers"])
        chosen = rng.sample(keys, rng.randrange(len(keys) + 1))
        if merge == "merge_headers":
            message[merge] = {key: {"X-Merge": key, "x-custom": "merged"} for key in chosen}
        else:
            message[merge] = {key: {"name": key, "n": i} for i, key in enumerate(chosen)}
    if rng.random() < 0.2:
        message["esp_extra"] = rng.choice(
            [
                {"headers": {"X-Extra": "e"}},
                {"custom": {"nested": 1}},
                {"template_variables": {"e": 1}},
            ]
        )
    if rng.random() < 0.05:
        message[rng.choice(["track_opens", "track_clicks"])] = rng.choice([True, False])
    if rng.random() < 0.05:
        # Held by the queue: Anymail's Mailtrap backend refuses it, the body is the same.
        message["send_at"] = rng.choice([1893456000, "2030-01-01T00:00:00Z"])
    if rng.random() < 0.03:
        message["envelope_sender"] = "bounce@example.com"
    return message


def wire_emails_safe(addresses: list[str]) -> list[str]:
    try:
        return wire_emails(addresses)
    except ValidationError:
        return []


def anymail_message(message: dict[str, Any]) -> EmailMultiAlternatives:
    email = EmailMultiAlternatives(
        subject=message.get("subject", ""),
        body=message.get("text") or "",
        from_email=message["from_email"],
        to=message.get("to"),
        cc=message.get("cc"),
        bcc=message.get("bcc"),
        reply_to=message.get("reply_to"),
        headers=message.get("headers"),
    )
    if "html" in message:
        email.attach_alternative(message["html"], "text/html")
    for attachment in message.get("attachments", []):
        content = bytes(__import__("base64").b64decode(attachment["content"]))
        if attachment.get("inline") or "content_id" in attachment:
            maintype, subtype = attachment["mimetype"].split("/")
            part = MIMEBase(maintype, subtype)
            part.set_payload(content)
            encoders.encode_base64(part)
            if attachment.get("inline"):
                part.add_header("Content-Disposition", "inline", filename=attachment["filename"])
            if "content_id" in attachment:
                part.add_header("Content-ID", attachment["content_id"])
            email.attach(part)
        else:
            email.attachments.append(
                (attachment.get("filename"), content, attachment.get("mimetype"))
            )
    for key in (
        "tags", "metadata", "template_id", "merge_global_data", "merge_data",
        "merge_metadata", "merge_headers", "esp_extra", "track_opens",
        "track_clicks", "envelope_sender",
    ):  # fmt: skip
        if key in message:
            setattr(email, key, message[key])
    return email


def anymail_payload(
    message: dict[str, Any], sandbox_id: str | None, ignore: bool
) -> tuple[str, Any]:
    backend = anymail_mailtrap.EmailBackend(
        api_token="x", sandbox_id=sandbox_id, ignore_unsupported_features=ignore
    )
    payload = backend.build_message_payload(anymail_message(message), backend.send_defaults)
    return payload.get_api_endpoint(), json.loads(payload.serialize_data())


def deliberately_rejected(message: dict[str, Any], expected: Any) -> bool:
    """The documented cases where mailqueue refuses what Anymail would post."""
    recipients = [*message.get("to", []), *message.get("cc", []), *message.get("bcc", [])]
    batch = any(key in message for key in ("merge_data", "merge_metadata", "merge_headers"))
    if not recipients or (batch and not message.get("to")):
        return True
    body = expected["base"] if batch else expected
    if not body["from"]["email"].rpartition("@")[0].isascii():
        return True  # an EAI sender, which Mailtrap refuses
    if "template_id" in message:
        conflicts = ("subject", "text", "html", "tags")
        return any(message.get(key) for key in conflicts)
    return not message.get("subject") or not (message.get("text") or message.get("html"))


def schema_form(body: dict[str, Any]) -> dict[str, Any]:
    """Anymail's body as Mailtrap's schema wants it: string values, no empty html."""
    if "requests" in body:
        return {
            "base": schema_form(body["base"]),
            "requests": [schema_form(request) for request in body["requests"]],
        }
    fixed = dict(body)
    for key in ("headers", "custom_variables"):
        if key in fixed:
            fixed[key] = {
                name: value if isinstance(value, str) else str(value)
                for name, value in fixed[key].items()
            }
    if fixed.get("html") == "":
        del fixed["html"]
    return fixed


@pytest.mark.parametrize("seed", range(400))
def test_payload_matches_anymail(seed: int) -> None:
    rng = random.Random(seed)
    message = random_message(rng)
    sandbox_id = "12345" if rng.random() < 0.2 else None
    ignore = rng.random() < 0.3
    settings = Settings(sandbox_id=sandbox_id, ignore_unsupported_features=ignore)

    try:
        expected = anymail_payload(message, sandbox_id, ignore)
    except AnymailUnsupportedFeature as anymail_error:
        with pytest.raises(UnsupportedFeature) as raised:
            build_payload(message, settings)
        assert str(raised.value) == str(anymail_error).split("\n")[0]
        return
    except Exception:
        with pytest.raises(ValidationError) as rejected:
            build_payload(message, settings)
        assert rejected.value.__cause__ is None  # refused by validation, not by accident
        return

    path, anymail_body = expected
    if deliberately_rejected(message, anymail_body):
        with pytest.raises(ValidationError):
            build_payload(message, settings)
        return
    [call] = build_payload(message, settings)
    assert (call.path, call.json) == (path, schema_form(anymail_body))


def test_the_generator_covers_successes_rejections_and_batches() -> None:
    outcomes = {"built": 0, "batch": 0, "raised": 0}
    for seed in range(400):
        rng = random.Random(seed)
        message = random_message(rng)
        try:
            [call] = build_payload(message)
        except ValidationError:
            outcomes["raised"] += 1
        else:
            outcomes["built"] += 1
            outcomes["batch"] += call.is_batch
    assert outcomes["built"] > 150
    assert outcomes["batch"] > 20
    assert outcomes["raised"] > 20
