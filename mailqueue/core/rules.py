"""What Mailtrap's published request schema refuses, checked on a request body: pure, no I/O.

Mailtrap's OpenAPI specs (repository ``mailtrap/mailtrap-openapi``) give the
transactional, bulk and sandbox ``send`` and ``batch`` endpoints one request
schema. Where the specs disagree, the stricter reading is taken: an empty
``text`` or ``html`` and an empty attachment ``content`` are refused everywhere,
as the sandbox spec says. Rules the schema states only in prose are here too:
``custom_variables`` at most 1000 bytes of JSON, no subject, text, html or
category beside ``template_uuid``, no reserved headers, and a sender whose
local part is ASCII (Mailtrap answers "'From' header does not match the
sender's domain" otherwise).

The producer runs these checks on bodies whose shape it does not fully control
(``esp_extra``), and the local Mailtrap runs them on every request it serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_ADDRESSES_PER_FIELD",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_REQUESTS",
    "MAX_CATEGORY_CHARS",
    "MAX_CUSTOM_VARIABLES_BYTES",
    "MAX_SANDBOX_ID",
    "RESERVED_HEADERS",
    "RuleError",
    "batch_envelope_errors",
    "custom_variables_size",
    "field_errors",
    "is_sandbox_id",
    "is_template_uuid",
    "merge_request",
    "message_errors",
]

MAX_ADDRESSES_PER_FIELD = 1000
# "up to 50 MB payload size, including attachments", counted in decimal megabytes.
MAX_BATCH_BYTES = 50_000_000
MAX_BATCH_REQUESTS = 500
# The sandbox id path parameter: "type: integer, format: int64, minimum: 1".
MAX_SANDBOX_ID = 2**63 - 1
MAX_CATEGORY_CHARS = 255
MAX_CUSTOM_VARIABLES_BYTES = 1000
# The spec says headers "cannot be one of the reserved headers" without a list.
# These are the ones the request's own fields or Mailtrap's MIME building set;
# From, To and Reply-To have their own rules in the producer (Anymail's).
RESERVED_HEADERS = frozenset(
    {"from", "to", "cc", "bcc", "subject", "content-type", "mime-version", "dkim-signature"}
)
DISPOSITIONS = ("attachment", "inline")
_TEMPLATE_FORBIDS = ("subject", "text", "html", "category")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


@dataclass(frozen=True, slots=True)
class RuleError:
    """One refusal: ``field`` is the wire path (``headers.X-A``), ``message`` Mailtrap-style."""

    field: str
    message: str


def is_template_uuid(value: object) -> bool:
    """True for a UUID in its 8-4-4-4-12 hex form, the spec's ``format: uuid``."""
    return isinstance(value, str) and _UUID_RE.fullmatch(value) is not None


def is_sandbox_id(text: str) -> bool:
    """True for a sandbox (inbox) id as the spec's path parameter: an int64 from 1.

    Leading zeros are dropped and the length checked before ``int()``, which
    raises on thousands of digits.
    """
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or len(digits) > len(str(MAX_SANDBOX_ID)):
        return False
    return 1 <= int(digits or "0") <= MAX_SANDBOX_ID


def custom_variables_size(variables: Mapping[str, Any]) -> int:
    """Bytes of ``custom_variables`` as compact UTF-8 JSON, the measure of Mailtrap's limit."""
    text = json.dumps(variables, ensure_ascii=False, separators=(",", ":"))
    # surrogatepass: a lone surrogate (from a \udXXX escape) is measured, not a crash.
    return len(text.encode("utf-8", "surrogatepass"))


def merge_request(base: Mapping[str, Any], request: Mapping[str, Any]) -> dict[str, Any]:
    """The message a batch request describes: each of its keys replaces base's."""
    return {**base, **request}


def batch_envelope_errors(
    body: Mapping[str, Any], *, allow_eai_from: bool = False
) -> list[RuleError]:
    """Errors in a batch body's own shape: ``requests``, and each field ``base`` sets.

    ``base`` need not be a whole message (a request completes it), but every
    field it does set must be valid on its own, as the schema types ``base``.
    """
    errors: list[RuleError] = []
    base = body.get("base", {})
    requests = body.get("requests")
    if not isinstance(base, Mapping):
        errors.append(RuleError("base", "'base' must be an object"))
    else:
        errors.extend(
            RuleError(f"base.{error.field}", error.message)
            for error in field_errors(base, allow_eai_from=allow_eai_from)
        )
    if not isinstance(requests, list) or not requests:
        errors.append(RuleError("requests", "empty field: 'requests'"))
    elif len(requests) > MAX_BATCH_REQUESTS:
        errors.append(
            RuleError("requests", f"'requests' must contain at most {MAX_BATCH_REQUESTS} items")
        )
    elif not all(isinstance(request, Mapping) for request in requests):
        errors.append(RuleError("requests", "each of 'requests' must be an object"))
    return errors


def message_errors(body: Mapping[str, Any], *, allow_eai_from: bool = False) -> list[RuleError]:
    """Everything the schema refuses in one message (a send body, or base merged with a request)."""
    errors = field_errors(body, allow_eai_from=allow_eai_from)
    if "from" not in body:
        errors.append(RuleError("from", "'from' is required"))
    if not any(isinstance(body.get(kind), list) and body[kind] for kind in ("to", "cc", "bcc")):
        errors.append(RuleError("to", "'to', 'cc' or 'bcc' address is required"))
    if "template_uuid" in body:
        errors.extend(
            RuleError(name, f"'{name}' is not allowed with 'template_uuid'")
            for name in _TEMPLATE_FORBIDS
            if name in body
        )
    else:
        if "subject" not in body:
            errors.append(RuleError("subject", "'subject' is required"))
        if "text" not in body and "html" not in body:
            errors.append(RuleError("text", "must specify either text or html body"))
    return errors


def field_errors(body: Mapping[str, Any], *, allow_eai_from: bool = False) -> list[RuleError]:
    """What the schema refuses in the fields ``body`` sets, each on its own."""
    errors: list[RuleError] = []
    if "from" in body:
        _check_sender(body["from"], errors, allow_eai_from)
    _check_recipients(body, errors)
    if "reply_to" in body and not _is_address(body["reply_to"]):
        errors.append(RuleError("reply_to", "'reply_to' address is invalid"))
    for name in ("subject", "text", "html"):
        if name in body and (not isinstance(body[name], str) or not body[name]):
            errors.append(RuleError(name, f"'{name}' must be a non-empty string"))
    if "template_uuid" in body and not is_template_uuid(body["template_uuid"]):
        errors.append(RuleError("template_uuid", "'template_uuid' must be a UUID"))
    _typed(body, "template_variables", Mapping, "an object", errors)
    _check_category(body, errors)
    _check_string_map(body, "custom_variables", errors)
    variables = body.get("custom_variables")
    if isinstance(variables, Mapping) and (
        custom_variables_size(variables) > MAX_CUSTOM_VARIABLES_BYTES
    ):
        errors.append(
            RuleError(
                "custom_variables",
                f"'custom_variables' must not exceed {MAX_CUSTOM_VARIABLES_BYTES} bytes",
            )
        )
    _check_string_map(body, "headers", errors)
    headers = body.get("headers")
    if isinstance(headers, Mapping):
        for name in headers:
            # ASCII only: str.lower() maps a few other letters (KELVIN SIGN) to ASCII ones.
            if isinstance(name, str) and name.isascii() and name.lower() in RESERVED_HEADERS:
                errors.append(
                    RuleError(f"headers.{name}", f"'headers' must not set the reserved {name}")
                )
    if "attachments" in body:
        _check_attachments(body["attachments"], errors)
    return errors


def _is_address(value: object) -> bool:
    if not isinstance(value, Mapping):
        return False
    email, name = value.get("email"), value.get("name", "")
    return isinstance(email, str) and "@" in email and isinstance(name, str)


def _check_sender(sender: object, errors: list[RuleError], allow_eai: bool) -> None:
    if not _is_address(sender):
        errors.append(RuleError("from", "'from' address is invalid"))
    elif not allow_eai and not str(sender["email"]).rpartition("@")[0].isascii():  # type: ignore[index]
        errors.append(RuleError("from", "'From' header does not match the sender's domain"))


def _typed(
    body: Mapping[str, Any], key: str, expected: type, what: str, errors: list[RuleError]
) -> Any:
    """``body[key]`` when it is an ``expected``; None when absent, or (an error) of another type."""
    value = body.get(key)
    if key in body and not isinstance(value, expected):
        errors.append(RuleError(key, f"'{key}' must be {what}"))
        return None
    return value


def _check_recipients(body: Mapping[str, Any], errors: list[RuleError]) -> None:
    for kind in ("to", "cc", "bcc"):
        entries = _typed(body, kind, list, "an array", errors)
        if entries is None:
            continue
        if len(entries) > MAX_ADDRESSES_PER_FIELD:
            errors.append(
                RuleError(
                    kind, f"'{kind}' must contain at most {MAX_ADDRESSES_PER_FIELD} addresses"
                )
            )
        for index, entry in enumerate(entries):
            if not _is_address(entry):
                errors.append(RuleError(f"{kind}[{index}]", f"'{kind}' address is invalid"))


def _check_category(body: Mapping[str, Any], errors: list[RuleError]) -> None:
    category = _typed(body, "category", str, "a string", errors)
    if category is not None and len(category) > MAX_CATEGORY_CHARS:
        errors.append(
            RuleError("category", f"'category' must be at most {MAX_CATEGORY_CHARS} characters")
        )


def _check_string_map(body: Mapping[str, Any], key: str, errors: list[RuleError]) -> None:
    value = _typed(body, key, Mapping, "an object", errors)
    if value is None:
        return
    for name, item in value.items():
        if not isinstance(item, str):
            errors.append(RuleError(f"{key}.{name}", f"'{key}' values must be strings"))


def _check_attachments(attachments: object, errors: list[RuleError]) -> None:
    if not isinstance(attachments, list):
        errors.append(RuleError("attachments", "'attachments' must be an array"))
        return
    for index, item in enumerate(attachments):
        where = f"attachments[{index}]"
        if not isinstance(item, Mapping):
            errors.append(RuleError(where, "an attachment must be an object"))
            continue
        for name in ("content", "filename"):
            if name not in item:
                errors.append(RuleError(f"{where}.{name}", f"attachment '{name}' is required"))
        for name, non_empty in (("content", True), ("filename", False), ("type", True)):
            value = item.get(name, "x")
            if not isinstance(value, str) or (non_empty and not value):
                kind = "a non-empty string" if non_empty else "a string"
                errors.append(RuleError(f"{where}.{name}", f"attachment '{name}' must be {kind}"))
        if not isinstance(item.get("content_id", ""), str):
            errors.append(
                RuleError(f"{where}.content_id", "attachment 'content_id' must be a string")
            )
        if item.get("disposition", "attachment") not in DISPOSITIONS:
            errors.append(
                RuleError(
                    f"{where}.disposition",
                    "attachment 'disposition' must be 'attachment' or 'inline'",
                )
            )
