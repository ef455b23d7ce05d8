"""A JSON Schema (draft 2020-12) of Mailtrap's send and batch request bodies.

Written here from the request schemas in Mailtrap's OpenAPI specs (repository
``mailtrap/mailtrap-openapi``: ``email-sending-transactional``,
``email-sending-bulk`` and ``sandbox-sending``), independently of
``mailqueue.core.rules``, so that each can check the other. Choices where
the specs are loose:

- The specs' ``oneOf`` of text / html / text-and-html / template shapes
  overlaps (a body with text and html matches three of them); the intent, one
  template-or-content shape, is spelled with ``if``/``then``/``else``.
- The template shape lists no ``category``, and the sandbox spec says subject,
  text and html are forbidden with ``template_uuid``: all four are refused.
- The stricter spec wins: ``text``/``html`` ``minLength: 1`` and attachment
  ``content``/``type`` ``minLength: 1`` (sandbox) apply to every endpoint.
- ``Address.email`` is required (an address without one is meaningless) and
  has ``format: email``; the sender's local part must be ASCII, since Mailtrap
  answers "'From' header does not match the sender's domain" otherwise.
- Limits stated only in prose are keywords here: ``maxJsonBytes`` (the
  1000-byte ``custom_variables``) is checked by :func:`validator`'s extension.
- Reserved headers are unnamed in the specs; the names refused are those the
  request's own fields or the message building set.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError as SchemaError

_RESERVED = ("From", "To", "Cc", "Bcc", "Subject", "Content-Type", "MIME-Version", "DKIM-Signature")


def _any_case(name: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else f"\\{c}" for c in name)


ADDRESS = {
    "type": "object",
    "required": ["email"],
    "properties": {"email": {"type": "string", "format": "email"}, "name": {"type": "string"}},
}
SENDER = {
    "allOf": [ADDRESS],
    # Everything before the last "@" is ASCII: no EAI sender.
    "properties": {"email": {"pattern": "^[\\x00-\\x7f]*@[^@]*$"}},
}
RECIPIENTS = {"type": "array", "maxItems": 1000, "items": ADDRESS}
NON_EMPTY = {"type": "string", "minLength": 1}
ATTACHMENT = {
    "type": "object",
    "required": ["content", "filename"],
    "properties": {
        "content": NON_EMPTY,
        "filename": {"type": "string"},
        "type": NON_EMPTY,
        "disposition": {"enum": ["attachment", "inline"]},
        "content_id": {"type": "string"},
    },
}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
# Every field a message, a batch base or a batch request may set, each on its own.
FIELDS = {
    "from": SENDER,
    "to": RECIPIENTS,
    "cc": RECIPIENTS,
    "bcc": RECIPIENTS,
    "reply_to": ADDRESS,
    "subject": NON_EMPTY,
    "text": NON_EMPTY,
    "html": NON_EMPTY,
    "attachments": {"type": "array", "items": ATTACHMENT},
    "headers": {
        **STRING_MAP,
        "propertyNames": {"not": {"pattern": f"^({'|'.join(map(_any_case, _RESERVED))})$"}},
    },
    "custom_variables": {**STRING_MAP, "maxJsonBytes": 1000},
    "category": {"type": "string", "maxLength": 255},
    "template_uuid": {
        "type": "string",
        "format": "uuid",
        "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
    },
    "template_variables": {"type": "object"},
}


def _has_some(key: str) -> dict[str, Any]:
    return {"required": [key], "properties": {key: {"minItems": 1}}}


SEND = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": FIELDS,
    "required": ["from"],
    "anyOf": [_has_some("to"), _has_some("cc"), _has_some("bcc")],
    "if": {"required": ["template_uuid"]},
    "then": {
        "not": {"anyOf": [{"required": [k]} for k in ("subject", "text", "html", "category")]}
    },
    "else": {"required": ["subject"], "anyOf": [{"required": ["text"]}, {"required": ["html"]}]},
}
PARTIAL = {"type": "object", "properties": FIELDS}
BATCH = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["requests"],
    "properties": {
        "base": PARTIAL,
        "requests": {"type": "array", "minItems": 1, "maxItems": 500, "items": PARTIAL},
    },
}


def _max_json_bytes(
    validator: Any, limit: int, instance: object, schema: Mapping[str, Any]
) -> Iterator[SchemaError]:
    if isinstance(instance, dict):
        text = json.dumps(instance, ensure_ascii=False, separators=(",", ":"))
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > limit:
            yield SchemaError(f"{size} bytes of JSON, more than {limit}")


_Validator = validators.extend(Draft202012Validator, {"maxJsonBytes": _max_json_bytes})


def validator(schema: Mapping[str, Any]) -> Any:
    """A validator for ``schema`` that checks formats (email, uuid) and ``maxJsonBytes``."""
    _Validator.check_schema(schema)
    return _Validator(schema, format_checker=FormatChecker())


SEND_VALIDATOR = validator(SEND)
BATCH_VALIDATOR = validator(BATCH)


def send_errors(body: object) -> list[str]:
    """Why ``body`` is not a valid ``send`` body (empty when it is)."""
    return [error.message for error in SEND_VALIDATOR.iter_errors(body)]


def batch_errors(body: object) -> list[str]:
    """Why ``body`` is not a valid ``batch`` body, each request merged over ``base`` too.

    A request's keys replace base's (the specs: "Each email inherits properties
    from base but can override them"), and the result must be a valid message.
    """
    errors = [error.message for error in BATCH_VALIDATOR.iter_errors(body)]
    if errors or not isinstance(body, dict):
        return errors
    base = body.get("base", {})
    for index, request in enumerate(body["requests"]):
        errors.extend(f"requests[{index}]: {error}" for error in send_errors({**base, **request}))
    return errors
