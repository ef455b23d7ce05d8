"""The suppression list of the local Mailtrap's account API, as Mailtrap's published spec has it.

``GET suppressions`` lists them oldest first (optional ``email``, exact and
case-insensitive; ``last_id``: the UUID of the previous page's last record,
for cursor paging; up to ``page_size`` a page, 1,000 at Mailtrap);
``POST suppressions`` adds one (``email``, ``domain_id``, ``sending_stream``,
optional ``type``) and answers ``{"data": record}``; ``DELETE
suppressions/<id>`` removes one and answers the record. Tests add records
with ``add``, as Mailtrap does on a hard bounce or a complaint.
"""

from __future__ import annotations

import json
import threading
import uuid
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["RemoteSuppressions"]

PAGE_SIZE = 1000
TYPES = ("hard bounce", "unsubscription", "spam complaint", "manual import")
_STREAMS = ("transactional", "bulk", "any")

# Status and JSON body of an answer.
Answer = tuple[int, object]


class RemoteSuppressions:
    """One account's suppressions; thread-safe."""

    def __init__(self, *, page_size: int = PAGE_SIZE) -> None:
        self.page_size = page_size
        self.requests: dict[str, int] = {"GET": 0, "POST": 0, "DELETE": 0}
        self._records: dict[str, dict[str, Any]] = {}  # insertion order is creation order
        self._lock = threading.Lock()

    def add(
        self,
        email: str,
        *,
        kind: str = "hard bounce",
        stream: str = "any",
        created_at: datetime | None = None,
    ) -> dict[str, Any]:
        """Suppress ``email`` as Mailtrap itself does (now, unless told when); returns it."""
        if kind not in TYPES or stream not in _STREAMS:
            raise ValueError(f"unknown type {kind!r} or stream {stream!r}")
        suppression_id = str(uuid.uuid4())
        record: dict[str, Any] = {
            "id": suppression_id,
            "type": kind,
            "created_at": (created_at or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "email": email,
            "sending_stream": stream,
            "domain_name": None,
            "message_bounce_category": None,
            "message_category": None,
            "message_client_ip": None,
            "message_created_at": None,
            "message_esp_response": None,
            "message_esp_server_type": None,
            "message_outgoing_ip": None,
            "message_recipient_mx_name": None,
            "message_sender_email": None,
            "message_subject": None,
        }
        with self._lock:
            self._records[suppression_id] = record
        return record

    @property
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(record) for record in self._records.values()]

    def emails(self) -> set[str]:
        """The suppressed addresses, lower-cased."""
        return {record["email"].lower() for record in self.records}

    # -- answering ------------------------------------------------------

    def answer(self, method: str, target: str, body: bytes) -> Answer:
        """Answer a request for ``target`` (below the API base, with its query)."""
        parts = urlsplit(target)
        path = parts.path.strip("/")
        with self._lock:
            self.requests[method] = self.requests.get(method, 0) + 1
        if path == "suppressions" and method == "GET":
            return self._list(dict(parse_qsl(parts.query)))
        if path == "suppressions" and method == "POST":
            return self._create(body)
        if path.startswith("suppressions/") and path.count("/") == 1 and method == "DELETE":
            return self._delete(unquote(path.partition("/")[2]))
        return 404, {"error": "Not Found"}

    def _list(self, query: dict[str, str]) -> Answer:
        records = self.records
        email = query.get("email")
        if email is not None:
            records = [r for r in records if r["email"].lower() == email.lower()]
        last_id = query.get("last_id")
        if last_id is not None:
            ids = [r["id"] for r in records]
            if last_id not in ids:
                return 400, {"errors": "last_id does not name a suppression"}
            records = records[ids.index(last_id) + 1 :]
        return 200, records[: self.page_size]

    def _create(self, body: bytes) -> Answer:
        try:
            data = json.loads(body)
        except ValueError:
            return 400, {"errors": "invalid JSON"}
        if not isinstance(data, dict):
            return 422, {"errors": {"base": ["expected an object"]}}
        problems = {}
        email = data.get("email")
        if not isinstance(email, str) or "@" not in email:
            problems["email"] = ["is invalid"]
        if not isinstance(data.get("domain_id"), int):
            problems["domain_id"] = ["is required"]
        if data.get("sending_stream") not in ("transactional", "bulk"):
            problems["sending_stream"] = ["is not included in the list"]
        kind = data.get("type", "manual import")
        if kind not in TYPES:
            problems["type"] = ["is not included in the list"]
        if problems:
            return 422, {"errors": problems}
        return 201, {"data": self.add(str(email), kind=kind, stream=data["sending_stream"])}

    def _delete(self, suppression_id: str) -> Answer:
        with self._lock:
            record = self._records.pop(suppression_id, None)
        if record is None:
            return 404, {"error": "Not Found"}
        return 200, record
