"""Who may see the dashboard, and which POSTs are the page's own.

Basic auth against ``MAILQUEUE_DASHBOARD_SECRET`` (``user:password``, several
comma-separated for rotation) is checked by the webhook's verifier: constant
time, every credential compared. Failed logins are counted, logged sparingly
and throttled per client (``failed_logins``). Actions need two more things a
cross-site request cannot supply: a CSRF token and, when the browser sends
one, an ``Origin`` (or ``Referer``) of this very host.

The CSRF token is an HMAC of the caller's credentials keyed with a random key
made when the dashboard starts and kept only in its memory (in Django, one
derived from the project's ``SECRET_KEY``, which every process shares): a
page's token tells nothing about the password (an HMAC keyed with the
credentials would let anyone holding one page test guesses offline), and a
restart makes open pages' forms stale (reload the page).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from mailqueue.errors import ConfigurationError
from mailqueue.serving.failed_logins import FailedLogins
from mailqueue.webhooks.verify import RequestVerifier, _basic_credentials

__all__ = ["ENV", "DashboardAuth", "parse_secret"]

ENV = "MAILQUEUE_DASHBOARD_SECRET"


def parse_secret(raw: str | None) -> tuple[str, ...]:
    """The ``user:password`` pairs of the setting; refuses none or a malformed one."""
    pairs = tuple(part.strip() for part in (raw or "").split(",") if part.strip())
    if not pairs:
        raise ConfigurationError(
            f"the dashboard needs {ENV} ('user:password', comma-separated for several); "
            "refusing to serve it unauthenticated",
            setting="dashboard_secret",
        )
    for pair in pairs:
        user, _, password = pair.partition(":")
        if not user or not password:
            raise ConfigurationError(
                f"{ENV} entries must be 'user:password'", setting="dashboard_secret"
            )
    return pairs


class DashboardAuth:
    """``csrf_key``: the key of the CSRF tokens; None makes a random one for this process."""

    def __init__(self, pairs: tuple[str, ...], csrf_key: bytes | None = None) -> None:
        self._verifier = RequestVerifier(basic_auth=pairs)
        self._csrf_key = csrf_key if csrf_key is not None else secrets.token_bytes(32)
        self.failed_logins = FailedLogins("dashboard")

    @classmethod
    def from_env(cls, environ: Mapping[str, str], csrf_key: bytes | None = None) -> DashboardAuth:
        return cls(parse_secret(environ.get(ENV)), csrf_key)

    def allows(self, environ: Mapping[str, Any]) -> bool:
        return self._verifier.verify(environ.get("HTTP_AUTHORIZATION"), None, b"")

    def csrf_token(self, environ: Mapping[str, Any]) -> str:
        """The token this (authenticated) caller's forms carry."""
        credentials = _basic_credentials(environ.get("HTTP_AUTHORIZATION"))
        return hmac.new(self._csrf_key, credentials, hashlib.sha256).hexdigest()

    def action_allowed(self, environ: Mapping[str, Any], token: str) -> bool:
        """Whether a POST carries this caller's token and comes from this host's pages."""
        expected = self.csrf_token(environ)
        token_ok = hmac.compare_digest(token.encode("utf-8", "replace"), expected.encode())
        return token_ok and _same_origin(environ)


def _same_origin(environ: Mapping[str, Any]) -> bool:
    """An ``Origin`` (else ``Referer``) naming another host refuses the request."""
    claimed = environ.get("HTTP_ORIGIN") or environ.get("HTTP_REFERER") or ""
    if not claimed:
        # Browsers send Origin on every cross-site POST; none means not a browser's.
        return True
    host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
    parts = urlsplit(claimed)
    return parts.netloc.lower() == str(host).lower()
