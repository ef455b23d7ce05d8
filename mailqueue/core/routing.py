"""Where a message goes: its account and stream, resolved against a worker's settings. Pure.

A queued message carries only its routing facts (``stream``, ``account``);
the worker that sends it turns them into a base URL, a token and a rate
limiter key with its own settings, so a change of the workers' settings
applies to mail already queued, and a worker's sandbox id catches every
message, whoever queued it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote

from mailqueue.errors import ConfigurationError
from mailqueue.settings import (
    DEFAULT_API_URL,
    DEFAULT_BULK_API_URL,
    SANDBOX_API_URL,
    RateLimit,
    Settings,
    account_env_prefix,
    token_hash,
)

__all__ = ["LANES", "STREAMS", "Lane", "Route", "Stream", "resolve_route"]

# Mailtrap's sending streams: which URL (and suppression list) a message uses.
Stream = Literal["transactional", "bulk"]
STREAMS: tuple[Stream, ...] = ("transactional", "bulk")
# mailqueue's priority lanes: which work waits behind which (see envelope.lane_for).
Lane = Literal["transactional", "bulk"]
LANES: tuple[Lane, ...] = ("transactional", "bulk")


@dataclass(frozen=True, repr=False)
class Route:
    """One destination: Mailtrap's base URL, the token, the sandbox inbox, the fleet limit.

    Calls to the same ``target`` may ride one coalesced ``batch`` call; calls to
    different targets never do (no mixing of streams, tokens or sandboxes).
    """

    stream: Stream
    account: str | None
    base_url: str
    token: str
    sandbox_id: str | None
    rate_limit: RateLimit
    limiter_key: str
    # Messages an hour and a day for this token (None: no cap).
    hourly_cap: int | None = None
    daily_cap: int | None = None

    def endpoint(self, name: str) -> str:
        """The relative path for ``send`` or ``batch``, with the sandbox inbox when set."""
        if self.sandbox_id:
            return f"{name}/{quote(self.sandbox_id, safe='')}"
        return name

    @property
    def target(self) -> tuple[str, str, str, str | None]:
        """What two calls must share to be coalesced: stream, URL, token (hashed), sandbox."""
        return (self.stream, self.base_url, self.limiter_key, self.sandbox_id)

    def __repr__(self) -> str:
        return (
            f"Route(stream={self.stream!r}, account={self.account!r}, base_url={self.base_url!r}, "
            f"sandbox_id={self.sandbox_id!r}, rate_limit={self.rate_limit}, "
            f"limiter_key={self.limiter_key!r})"
        )


def resolve_route(
    settings: Settings,
    *,
    stream: Stream = "transactional",
    account: str | None = None,
    fallback_sandbox: str | None = None,
) -> Route:
    """Resolve a message's ``stream`` and ``account`` with ``settings`` (a worker's).

    With a sandbox id (the account's, else the top-level one, else
    ``fallback_sandbox``) both streams go to the sandbox with the
    transactional token. Raises ConfigurationError for an unknown account or
    a missing token, naming the setting.
    """
    if stream not in STREAMS:
        raise ConfigurationError(f"unknown sending stream {stream!r}", setting="stream")
    named = settings.account(account)
    sandbox_id = (named.sandbox_id if named else None) or settings.sandbox_id or fallback_sandbox
    api_token = (named.api_token if named else None) or settings.api_token
    api_url = (named.api_url if named else None) or settings.api_url
    if sandbox_id or stream == "transactional":
        token = api_token
        url = api_url or (SANDBOX_API_URL if sandbox_id else DEFAULT_API_URL)
        missing = "API_TOKEN"
    else:
        # An account's own API token sends its bulk mail before any top-level token does.
        own = (named.bulk_api_token or named.api_token) if named else None
        token = own or settings.bulk_api_token or settings.api_token
        url = (
            (named.bulk_api_url if named else None) or settings.bulk_api_url or DEFAULT_BULK_API_URL
        )
        missing = "API_TOKEN (or BULK_API_TOKEN)"
    if not token:
        where = account_env_prefix(account) if account else "MAILTRAP_"
        raise ConfigurationError(f"{where}{missing} is required to send", setting="api_token")
    limit = (named.rate_limit if named else None) or settings.rate_limit
    return Route(
        stream=stream,
        account=account,
        base_url=url if url.endswith("/") else url + "/",
        token=token,
        sandbox_id=sandbox_id,
        rate_limit=limit,
        limiter_key=token_hash(token),
        hourly_cap=_own_or_top(named.hourly_cap if named else None, settings.hourly_cap),
        daily_cap=_own_or_top(named.daily_cap if named else None, settings.daily_cap),
    )


def _own_or_top(own: int | None, top: int | None) -> int | None:
    # An account's 0 means no cap of its own (as the top-level 0 does), not "inherit".
    return top if own is None else own
