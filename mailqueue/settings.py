"""Settings: one typed object, built once from the environment or Django settings.

No other module reads ``os.environ``. Names and precedence follow
django-anymail for the Mailtrap settings: ``ANYMAIL["MAILTRAP_X"]``, then
``ANYMAIL_MAILTRAP_X``, then the bare ``MAILTRAP_X``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .errors import ConfigurationError

__all__ = ["DEFAULT_API_URL", "SANDBOX_API_URL", "RateLimit", "Settings"]

DEFAULT_API_URL = "https://send.api.mailtrap.io/api/"
SANDBOX_API_URL = "https://sandbox.api.mailtrap.io/api/"
DEFAULT_BROKER_URL = "redis://localhost:6379/0"
THIRTY_DAYS = 30 * 24 * 3600

_SECRET_FIELDS = frozenset({"api_token", "tracking_secret", "webhook_secret"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True)
class RateLimit:
    """``amount`` API requests per ``period`` seconds."""

    amount: int
    period: float

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        """Parse ``"150/10s"``, ``"150/10"``, ``"10/s"``, ``"600/m"``."""
        match = _RATE_RE.match(text)
        if not match:
            raise ConfigurationError(
                f"MAILQUEUE_RATE_LIMIT must look like '150/10s', not {text!r}",
                setting="rate_limit",
            )
        amount, number, unit = match.groups()
        period = (float(number) if number else 1.0) * _UNIT_SECONDS[unit or "s"]
        if int(amount) <= 0 or period <= 0:
            raise ConfigurationError(
                f"MAILQUEUE_RATE_LIMIT must be positive, not {text!r}", setting="rate_limit"
            )
        return cls(int(amount), period)

    def __str__(self) -> str:
        return f"{self.amount}/{self.period:g}s"


def _secret_repr(value: object) -> str:
    return "None" if value in (None, (), "") else "'***'"


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Every mailqueue setting. Construct with keywords, or with ``from_env`` / ``from_django``."""

    api_token: str | None = None
    sandbox_id: str | None = None
    api_url: str | None = None
    tracking_secret: str | None = None
    webhook_secret: tuple[str, ...] = ()
    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str | None = None
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit(150, 10.0))
    coalesce: bool = True
    status_ttl: int = THIRTY_DAYS
    default_from_email: str | None = None
    ignore_unsupported_features: bool = False
    # Beyond the documented table: delivery tuning.
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 8
    retry_backoff: float = 30.0
    retry_backoff_max: float = 3600.0
    visibility_timeout: float = 150.0
    reclaim_idle: float = 120.0
    webhook_max_body: int = 16 * 1024 * 1024
    queue: str = "mailqueue"
    metrics_port: int | None = None

    def __post_init__(self) -> None:
        # Anymail: sandbox mode is on exactly when bool(id) is true, so "" / 0 /
        # None are transactional while the string "0" is a sandbox.
        sandbox = self.sandbox_id
        object.__setattr__(self, "sandbox_id", str(sandbox) if sandbox else None)
        if isinstance(self.rate_limit, str):
            object.__setattr__(self, "rate_limit", RateLimit.parse(self.rate_limit))
        if isinstance(self.webhook_secret, str):
            object.__setattr__(self, "webhook_secret", _split_secrets(self.webhook_secret))
        else:
            object.__setattr__(self, "webhook_secret", tuple(self.webhook_secret))
        for name in ("status_ttl", "max_retries", "webhook_max_body"):
            if getattr(self, name) < 0:
                raise ConfigurationError(f"{name} must not be negative", setting=name)
        for pair in self.webhook_secret:
            if ":" not in pair:
                raise ConfigurationError(
                    "MAILQUEUE_WEBHOOK_SECRET entries must be 'user:password'",
                    setting="webhook_secret",
                )

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            shown = _secret_repr(value) if f.name in _SECRET_FIELDS else repr(value)
            parts.append(f"{f.name}={shown}")
        return f"Settings({', '.join(parts)})"

    # -- derived values -------------------------------------------------

    @property
    def base_url(self) -> str:
        """The API base URL, always ending in ``/``."""
        url = self.api_url or (SANDBOX_API_URL if self.sandbox_id else DEFAULT_API_URL)
        return url if url.endswith("/") else url + "/"

    def endpoint(self, name: str) -> str:
        """The relative API path for ``send`` or ``batch``, with the sandbox id when set."""
        if self.sandbox_id:
            return f"{name}/{quote(self.sandbox_id, safe='')}"
        return name

    @property
    def status_redis_url(self) -> str:
        """Where status records live: ``redis_url``, else the broker when it is Redis."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return self.broker_url
        raise ConfigurationError(
            "MAILQUEUE_REDIS_URL is required when the broker is not Redis", setting="redis_url"
        )

    @property
    def token_key(self) -> str:
        """A stable, non-reversible name for the API target (token, URL, sandbox).

        Used in Redis keys and metrics so that the token itself is never stored.
        """
        material = "\0".join((self.api_token or "", self.base_url, self.sandbox_id or ""))
        return hashlib.sha256(material.encode()).hexdigest()[:16]

    def require_token(self) -> str:
        """The API token, or ConfigurationError when none is set."""
        if not self.api_token:
            raise ConfigurationError("MAILTRAP_API_TOKEN is required to send", setting="api_token")
        return self.api_token

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    # -- builders -------------------------------------------------------

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build from environment variables (``os.environ`` when ``environ`` is None)."""
        env = os.environ if environ is None else environ
        return cls(**_collect(_EnvSource(env)))

    @classmethod
    def from_django(
        cls, django_settings: Any = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Build from Django settings (``ANYMAIL`` and top-level names), then the environment."""
        if django_settings is None:
            from django.conf import settings

            django_settings = settings
        env = os.environ if environ is None else environ
        return cls(**_collect(_DjangoSource(django_settings, env)))


def _split_secrets(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


class _EnvSource:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def mailtrap(self, name: str) -> Any:
        for key in (f"ANYMAIL_MAILTRAP_{name}", f"MAILTRAP_{name}"):
            if key in self.env:
                return self.env[key]
        return None

    def anymail(self, name: str) -> Any:
        return self.env.get(f"ANYMAIL_{name}")

    def own(self, name: str) -> Any:
        return self.env.get(f"MAILQUEUE_{name}")


class _DjangoSource(_EnvSource):
    def __init__(self, django_settings: Any, env: Mapping[str, str]) -> None:
        super().__init__(env)
        self.django = django_settings
        self.anymail_dict: Mapping[str, Any] = getattr(django_settings, "ANYMAIL", None) or {}

    def mailtrap(self, name: str) -> Any:
        key = f"MAILTRAP_{name}"
        if key in self.anymail_dict:
            return self.anymail_dict[key]
        for attr in (f"ANYMAIL_{key}", key):
            if hasattr(self.django, attr):
                return getattr(self.django, attr)
        return super().mailtrap(name)

    def anymail(self, name: str) -> Any:
        if name in self.anymail_dict:
            return self.anymail_dict[name]
        if hasattr(self.django, f"ANYMAIL_{name}"):
            return getattr(self.django, f"ANYMAIL_{name}")
        return super().anymail(name)

    def own(self, name: str) -> Any:
        attr = f"MAILQUEUE_{name}"
        if hasattr(self.django, attr):
            return getattr(self.django, attr)
        return super().own(name)


def _collect(source: _EnvSource) -> dict[str, Any]:
    values: dict[str, Any] = {}

    def put(name: str, raw: Any, convert: Any = None, setting: str = "") -> None:
        if raw is None:
            return
        try:
            values[name] = convert(raw) if convert else raw
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"{setting} is malformed: {exc}", setting=name) from None

    put("api_token", source.mailtrap("API_TOKEN") or None)
    put("sandbox_id", source.mailtrap("SANDBOX_ID"))
    put("api_url", source.mailtrap("API_URL") or None)
    put("tracking_secret", source.mailtrap("TRACKING_SECRET") or None)
    webhook = source.own("WEBHOOK_SECRET")
    if webhook is None:
        webhook = source.anymail("WEBHOOK_SECRET")
    put("webhook_secret", webhook, _secret_list, "MAILQUEUE_WEBHOOK_SECRET")
    put("broker_url", source.own("BROKER_URL") or None)
    put("redis_url", source.own("REDIS_URL") or None)
    put("rate_limit", source.own("RATE_LIMIT") or None, _rate, "MAILQUEUE_RATE_LIMIT")
    put("coalesce", source.own("COALESCE"), _boolean, "MAILQUEUE_COALESCE")
    put("status_ttl", source.own("STATUS_TTL") or None, _int, "MAILQUEUE_STATUS_TTL")
    put("default_from_email", source.own("DEFAULT_FROM_EMAIL") or None)
    ignore = source.own("IGNORE_UNSUPPORTED_FEATURES")
    if ignore is None:
        ignore = source.anymail("IGNORE_UNSUPPORTED_FEATURES")
    put("ignore_unsupported_features", ignore, _boolean, "MAILQUEUE_IGNORE_UNSUPPORTED_FEATURES")
    for name, convert in (
        ("CONNECT_TIMEOUT", float),
        ("READ_TIMEOUT", float),
        ("MAX_RETRIES", _int),
        ("RETRY_BACKOFF", float),
        ("RETRY_BACKOFF_MAX", float),
        ("VISIBILITY_TIMEOUT", float),
        ("RECLAIM_IDLE", float),
        ("WEBHOOK_MAX_BODY", _int),
        ("QUEUE", str),
        ("METRICS_PORT", _int),
    ):
        put(name.lower(), source.own(name) or None, convert, f"MAILQUEUE_{name}")
    return values


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _int(value: Any) -> int:
    return int(str(value).strip())


def _rate(value: Any) -> RateLimit:
    return value if isinstance(value, RateLimit) else RateLimit.parse(str(value))


def _secret_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return _split_secrets(value)
    return tuple(str(item) for item in value)
