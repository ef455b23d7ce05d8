"""The queue's suppression list kept in step with Mailtrap's own (its account API).

Mailtrap suppresses addresses itself (hard bounces, complaints,
unsubscribes, imports) and silently drops mail to them. ``sync_suppressions``
reads that whole list (``GET suppressions``, a thousand a page, paged by the
last record's id) and adds each address missing here, so that workers mark
such recipients ``suppressed`` without spending a call or a rate-limit slot
on them. In the other direction, an address whose suppression was lifted
here (``mailqueue.unsuppress``) after Mailtrap suppressed it is lifted at
Mailtrap too (``DELETE suppressions/<id>``), so that mail to it goes out
again; an address Mailtrap suppressed after that lift stays suppressed.

Suppressions made here are not created at Mailtrap: its API wants the id of
a sending domain with each, and the queue sends for any domain.

The account API allows 10 list requests a minute: a 429 is waited out (its
``Retry-After``); no answer or a 5xx after a few tries, a refused token or an
answer that cannot be read raise ``SuppressionSyncError``, and what was synced
up to then stays.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

from mailqueue.core.addresses import comparable
from mailqueue.core.responses import parse_retry_after
from mailqueue.errors import SuppressionSyncError, ValidationError
from mailqueue.mailtrap.session import ApiSession, check_api_url
from mailqueue.mailtrap.transport import backoff_seconds

if TYPE_CHECKING:
    from mailqueue.settings import Settings
    from mailqueue.store.suppressions import SuppressionList

__all__ = ["MailtrapSuppressions", "SyncReport", "sync_suppressions"]

log = logging.getLogger(__name__)

# Tries of one request when no answer comes (or a 5xx).
ATTEMPTS = 3
# The longest 429 wait taken before giving up (the list allows 10 a minute).
MAX_WAIT = 120.0
# A listing that never ends is an answer we cannot read (a million records).
MAX_PAGES = 1000
# Mailtrap's suppression types, as the queue's reasons.
REASONS = {
    "hard bounce": "mailtrap:hard_bounce",
    "spam complaint": "mailtrap:spam_complaint",
    "unsubscription": "mailtrap:unsubscribe",
    "manual import": "mailtrap:manual_import",
}


@dataclass
class SyncReport:
    """What one sync did."""

    listed: int = 0  # suppressions Mailtrap listed
    added: int = 0  # of those, added here
    lifted: int = 0  # lifted at Mailtrap because they were lifted here


class MailtrapSuppressions(ApiSession):
    """Reads and deletes the suppressions of one token's account, over a pooled session."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        super().__init__({"Authorization": f"Bearer {token}"})
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self._timeout = timeout

    def records(self) -> Iterator[dict[str, Any]]:
        """Every suppression of the account, oldest first."""
        last_id: str | None = None
        for _ in range(MAX_PAGES):
            params = {} if last_id is None else {"last_id": last_id}
            page = self._request("GET", "suppressions", params)
            if not isinstance(page, list) or not all(isinstance(r, dict) for r in page):
                raise SuppressionSyncError("Mailtrap's suppression list is not a list of records")
            if not page:
                return
            yield from page
            last_id = str(page[-1].get("id", ""))
            if not last_id:
                raise SuppressionSyncError("a suppression listed by Mailtrap has no id")
        raise SuppressionSyncError(f"Mailtrap's suppression list ran past {MAX_PAGES} pages")

    def delete(self, suppression_id: str) -> None:
        """Lift one suppression at Mailtrap (one already gone counts as lifted)."""
        self._request("DELETE", "suppressions/" + quote(suppression_id, safe=""), {}, True)

    def _request(
        self, method: str, path: str, params: dict[str, str], missing_ok: bool = False
    ) -> Any:
        tries = 0
        waited = 0.0
        while True:
            tries += 1
            try:
                response = self._session.request(
                    method, self.base_url + path, params=params, timeout=self._timeout
                )
            except requests.RequestException as exc:
                if tries >= ATTEMPTS:
                    problem = f"is unreachable ({type(exc).__name__})"
                    raise SuppressionSyncError(f"Mailtrap's suppression list {problem}") from None
                time.sleep(backoff_seconds(tries))
                continue
            status = response.status_code
            if status == 429 and waited < MAX_WAIT:
                # The account's limit: 10 list requests a minute.
                pause = parse_retry_after(response.headers.get("Retry-After")) or 10.0
                waited += pause
                time.sleep(pause)
                tries -= 1
                continue
            if status >= 500 and tries < ATTEMPTS:
                time.sleep(backoff_seconds(tries))
                continue
            if status == 404 and missing_ok:
                return None
            if status >= 300:
                raise SuppressionSyncError(_problem(status), status_code=status)
            try:
                return json.loads(response.content) if response.content else None
            except ValueError:
                raise SuppressionSyncError(
                    "Mailtrap's suppression list answered something other than JSON",
                    status_code=status,
                ) from None


def _problem(status: int) -> str:
    if status in (401, 403):
        return f"Mailtrap refused the API token for suppressions ({status})"
    if status == 429:
        return "Mailtrap kept refusing for its rate limit (429)"
    return f"Mailtrap's suppression list answered {status}"


def sync_suppressions(
    *,
    settings: Settings,
    suppressions: SuppressionList,
    api: MailtrapSuppressions | None = None,
) -> SyncReport:
    """Bring Mailtrap's suppressions into ``suppressions``, and lift there those lifted here since.

    ``api`` defaults to the account API of the configured token
    (``MAILTRAP_GENERAL_API_URL``).
    """
    if api is None:
        if not settings.api_token:
            raise SuppressionSyncError("MAILTRAP_API_TOKEN is required to read Mailtrap's list")
        check_api_url(
            settings.general_base_url,
            "MAILTRAP_GENERAL_API_URL",
            "general_api_url",
            allow_http=settings.allow_http_api_urls,
        )
        api = MailtrapSuppressions(
            settings.general_base_url, settings.api_token, timeout=settings.read_timeout
        )
        owned = True
    else:
        owned = False
    store = suppressions
    lifted = store.lifted()
    report = SyncReport()
    try:
        for record in api.records():
            report.listed += 1
            address = str(record.get("email", ""))
            lifted_at = lifted.get(comparable(address))
            if lifted_at is not None and _when(record.get("created_at")) <= _when(lifted_at):
                api.delete(str(record["id"]))
                report.lifted += 1
                continue
            if _add(store, address, record):
                report.added += 1
    finally:
        if owned:
            api.close()
    # The whole list was read: each lift seen then is done with.
    store.forget_lifted(lifted)
    return report


def _when(iso: object) -> float:
    """An ISO 8601 time as Unix seconds; an unreadable one as the epoch (older than any lift)."""
    try:
        return datetime.fromisoformat(str(iso).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def _add(store: SuppressionList, address: str, record: dict[str, Any]) -> bool:
    """Suppress ``address`` as Mailtrap does, unless it already is; True when added."""
    stream = record.get("sending_stream")
    stream = None if stream in (None, "any") else str(stream)
    existing = store.get(address)
    if existing is not None and existing["stream"] in (None, stream):
        return False
    kind = str(record.get("type") or "")
    reason = REASONS.get(kind, "mailtrap")
    try:
        store.suppress(
            address, reason=reason, stream=stream, created_at=record.get("created_at") or None
        )
    except ValidationError:
        log.warning("skipped a suppression Mailtrap lists with an unreadable address or stream")
        return False
    return True
