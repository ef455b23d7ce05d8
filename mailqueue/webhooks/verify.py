"""Verify that a webhook request comes from Mailtrap: basic auth and/or signature.

Basic auth checks the ``Authorization`` header against every configured
``user:password`` (several allow rotation). The signature check recomputes
``Mailtrap-Signature``: the lowercase hex HMAC-SHA256 of the raw body, keyed
with the tracking secret's UTF-8 bytes. When both are configured both must
pass. Every comparison is constant-time, and every configured credential is
compared on every request, so timing tells nothing about which one matched
or which check failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from mailqueue.errors import ConfigurationError
from mailqueue.settings import Settings

__all__ = ["REALM", "RequestVerifier"]

REALM = "mailqueue"


class RequestVerifier:
    """Checks the credentials of one request against the configured secrets."""

    def __init__(
        self, basic_auth: tuple[str, ...] = (), tracking_secret: str | None = None
    ) -> None:
        if not basic_auth and not tracking_secret:
            raise ConfigurationError(
                "the tracking webhook needs MAILQUEUE_WEBHOOK_SECRET and/or "
                "MAILTRAP_TRACKING_SECRET; refusing to accept unauthenticated events",
                setting="webhook_secret",
            )
        self._credentials = tuple(pair.encode("utf-8") for pair in basic_auth)
        self._signing_key = tracking_secret.encode("utf-8") if tracking_secret else None

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestVerifier:
        """A verifier for ``settings.webhook_secret`` and ``settings.tracking_secret``."""
        return cls(settings.webhook_secret, settings.tracking_secret)

    @property
    def uses_basic_auth(self) -> bool:
        """Whether a failure should invite basic auth (``WWW-Authenticate``)."""
        return bool(self._credentials)

    def verify(self, authorization: str | None, signature: str | None, body: bytes) -> bool:
        """Whether the request passes every configured check."""
        basic_ok = self._check_basic(authorization) if self._credentials else True
        signature_ok = self._check_signature(signature, body) if self._signing_key else True
        return basic_ok and signature_ok

    def verify_basic(self, authorization: str | None) -> bool:
        """Whether the request passes basic auth alone (True when none is configured)."""
        return self._check_basic(authorization) if self._credentials else True

    def _check_basic(self, authorization: str | None) -> bool:
        offered = _basic_credentials(authorization)
        matched = False
        for allowed in self._credentials:
            # No early exit: the time taken must not depend on which one matches.
            matched |= hmac.compare_digest(offered, allowed)
        return matched and bool(offered)

    def _check_signature(self, signature: str | None, body: bytes) -> bool:
        assert self._signing_key is not None
        expected = hmac.new(self._signing_key, body, hashlib.sha256).hexdigest().encode("ascii")
        # Mailtrap sends lowercase hex; like Anymail, other spellings fail.
        offered = (signature or "").strip().encode("utf-8", "replace")
        return hmac.compare_digest(offered, expected)


def _basic_credentials(authorization: str | None) -> bytes:
    """The decoded ``user:password`` of a Basic header, or ``b""`` when there is none."""
    if not authorization:
        return b""
    parts = authorization.split()
    if len(parts) != 2 or parts[0].lower() != "basic":
        return b""
    try:
        decoded = base64.b64decode(parts[1], validate=True)
        decoded.decode("utf-8")
    except (binascii.Error, ValueError):
        return b""
    return decoded
