"""Microseconds per message to build a Mailtrap request body: build_payload vs django-anymail.

Run: ``python tests/benchmarks/bench_payload.py [--quick]``.

Both sides start from their own input form and end with the JSON body bytes:
mailqueue validates a message dict with ``build_payload`` and serializes each
call's ``json``; Anymail builds an ``AnymailMessage``, its Mailtrap backend
builds the payload (``build_message_payload``) and serializes it
(``serialize_data``), with no network. Three cases: a simple send, a send with
two attachments, and a template batch send to 1,000 recipients with merge_data
(figures per recipient message as well as per send). Anymail puts all 1,000
requests in one batch body; mailqueue splits them into two calls of 500, as
Mailtrap requires.
"""

from __future__ import annotations

import argparse
import base64
import json
import time
from collections.abc import Callable
from email.mime.image import MIMEImage
from typing import Any

from harness import machine

import mailqueue
from mailqueue.settings import Settings

TEMPLATE = "7f1b6a36-0000-4000-8000-00000000c0de"
PDF = b"%PDF-1.4 " + bytes(range(256)) * 160  # about 40 kB
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 16


def configure_django() -> Any:
    import django
    from django.conf import settings

    settings.configure(
        EMAIL_BACKEND="anymail.backends.mailtrap.EmailBackend",
        ANYMAIL={"MAILTRAP_API_TOKEN": "benchmark-token"},
        DEFAULT_CHARSET="utf-8",
    )
    django.setup()
    from anymail.backends.mailtrap import EmailBackend

    return EmailBackend()


def cases(recipients: int) -> dict[str, dict[str, Any]]:
    addresses = [f"reader{i}@example.com" for i in range(recipients)]
    return {
        "simple send": {
            "from_email": "Shop <shop@example.com>",
            "to": ["Alice <alice@example.com>"],
            "subject": "Your order",
            "text": "It ships today.",
            "html": "<p>It ships today.</p>",
            "tags": ["orders"],
            "metadata": {"order": "1234"},
        },
        "send with 2 attachments": {
            "from_email": "Shop <shop@example.com>",
            "to": ["alice@example.com"],
            "subject": "Your invoice",
            "text": "Attached.",
            "attachments": [
                {
                    "filename": "invoice.pdf",
                    "content": base64.b64encode(PDF).decode(),
                    "mimetype": "application/pdf",
                },
                {
                    "filename": "logo.png",
                    "content": base64.b64encode(PNG).decode(),
                    "mimetype": "image/png",
                    "inline": True,
                    "content_id": "logo",
                },
            ],
        },
        f"batch send, {recipients:,} merge_data recipients": {
            "from_email": "News <news@example.com>",
            "to": addresses,
            "template_id": TEMPLATE,
            "merge_global_data": {"issue": "42"},
            "merge_data": {a: {"name": f"Reader {i}"} for i, a in enumerate(addresses)},
        },
    }


def anymail_message(message: dict[str, Any]) -> Any:
    from anymail.message import AnymailMessage

    email = AnymailMessage(
        subject=message.get("subject", ""),
        body=message.get("text", ""),
        from_email=message["from_email"],
        to=message["to"],
    )
    if "html" in message:
        email.attach_alternative(message["html"], "text/html")
    for item in message.get("attachments", []):
        if item.get("inline"):
            image = MIMEImage(base64.b64decode(item["content"]), _subtype="png")
            image.add_header("Content-ID", f"<{item['content_id']}>")
            image.add_header("Content-Disposition", "inline", filename=item["filename"])
            email.attach(image)
        else:
            email.attach(item["filename"], base64.b64decode(item["content"]), item["mimetype"])
    for name in ("tags", "metadata", "template_id", "merge_global_data", "merge_data"):
        if name in message:
            setattr(email, name, message[name])
    return email


def per_message(operation: Callable[[], object], seconds: float) -> float:
    operation()
    runs = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds or runs < 3:
        operation()
        runs += 1
    return 1e6 * (time.perf_counter() - started) / runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a CI-sized run")
    options = parser.parse_args()
    seconds = 0.3 if options.quick else 2.0
    backend = configure_django()
    settings = Settings(api_token="benchmark-token")

    print(f"machine: {machine()}")
    print(f"{'case':<40} {'mailqueue µs':>14} {'anymail µs':>14} {'ratio':>7}")
    for label, message in cases(1000).items():

        def ours(message: dict[str, Any] = message) -> object:
            return [json.dumps(c.json).encode() for c in mailqueue.build_payload(message, settings)]

        def theirs(message: dict[str, Any] = message) -> object:
            payload = backend.build_message_payload(anymail_message(message), backend.send_defaults)
            return payload.serialize_data()

        mine = per_message(ours, seconds)
        base = per_message(theirs, seconds)
        print(f"{label:<40} {mine:>14,.1f} {base:>14,.1f} {base / mine:>6.2f}x")
        if len(message["to"]) > 1:
            count = len(message["to"])
            print(f"{'  per recipient message':<40} {mine / count:>14,.2f} {base / count:>14,.2f}")


if __name__ == "__main__":
    main()
