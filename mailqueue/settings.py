"""Settings: one typed object, built once from the environment or Django settings.

No other module reads ``os.environ``. Names and precedence follow
django-anymail for the Mailtrap settings: ``ANYMAIL["MAILTRAP_X"]``, then
``ANYMAIL_MAILTRAP_X``, then the bare ``MAILTRAP_X``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from mailqueue.core import urls
from mailqueue.core.rules import MAX_SANDBOX_ID, is_sandbox_id
from mailqueue.errors import ConfigurationError

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_BULK_API_URL",
    "DEFAULT_GENERAL_API_URL",
    "SANDBOX_API_URL",
    "Account",
    "RateLimit",
    "Settings",
]

DEFAULT_API_URL = "https://send.api.mailtrap.io/api/"
DEFAULT_BULK_API_URL = "https://bulk.api.mailtrap.io/api/"
SANDBOX_API_URL = "https://sandbox.api.mailtrap.io/api/"
# Mailtrap's account API: Email Logs, Suppressions.
DEFAULT_GENERAL_API_URL = "https://mailtrap.io/api/"
DEFAULT_BROKER_URL = "redis://localhost:6379/0"
THIRTY_DAYS = 30 * 24 * 3600

_SECRET_FIELDS = frozenset({"api_token", "bulk_api_token", "tracking_secret", "webhook_secret"})
# The secrets held as one string, and the environment names a person set them by.
_SECRET_NAMES = {
    "api_token": "MAILTRAP_API_TOKEN",
    "bulk_api_token": "MAILTRAP_BULK_API_TOKEN",
    "tracking_secret": "MAILTRAP_TRACKING_SECRET",
}
_URL_FIELDS = frozenset({"broker_url", "redis_url"})
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

DEFAULT_PREFIX = "mq"
# No braces (the prefix is the hash tag) and nothing a glob would read.
_PREFIX = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def check_prefix(prefix: object) -> str | None:
    """Why ``prefix`` cannot be a key prefix, or None when it can."""
    if not isinstance(prefix, str) or not _PREFIX.match(prefix):
        return "must be 1 to 64 letters, digits or ._:- (no braces)"
    return None


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


@dataclass(frozen=True)
class _Range:
    """What a number setting may be: its kind, its bounds, and what it counts."""

    kind: type
    low: float
    high: float | None = None
    # The low bound itself is refused: a timeout of 0 s waits for nothing.
    above: bool = False
    unit: str = ""

    def problem(self, value: object) -> str | None:
        """Why ``value`` is out of range (words for a person), or None when it is fine."""
        if value is None:
            return None
        whole = self.kind is int
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (whole and not isinstance(value, int))
            or not math.isfinite(value)
        ):
            return f"must be {'a whole number' if whole else 'a number'}, not {value!r}"
        low = f"{self.low:g}"
        # As a person wrote it: -3, not the -3.0 it was read as.
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        too_low = value <= self.low if self.above else value < self.low
        if self.high is not None and (too_low or value > self.high):
            return f"must be from {low} to {self.high:g}{self.unit}, not {shown}"
        if too_low:
            bound = f"more than {low}" if self.above else f"at least {low}"
            return f"must be {bound}{self.unit}, not {shown}"
        return None


_SECONDS = " (seconds)"
_SHARE = " (a share: 0.05 is 5 %)"
# Every number setting and what it may be; checked whenever settings are built.
_RANGES: dict[str, _Range] = {
    "redis_min_replicas": _Range(int, 0),
    "status_ttl": _Range(int, 1, unit=_SECONDS),
    "connect_timeout": _Range(float, 0, above=True, unit=_SECONDS),
    "read_timeout": _Range(float, 0, above=True, unit=_SECONDS),
    "max_retries": _Range(int, 0),
    "retry_backoff": _Range(float, 0, above=True, unit=_SECONDS),
    "retry_backoff_max": _Range(float, 0, above=True, unit=_SECONDS),
    "visibility_timeout": _Range(float, 0, above=True, unit=_SECONDS),
    "reclaim_idle": _Range(float, 0, above=True, unit=_SECONDS),
    "calls_in_flight": _Range(int, 1),
    "webhook_max_body": _Range(int, 1, unit=" (bytes)"),
    "metrics_port": _Range(int, 1, 65535),
    "reconcile_settle": _Range(float, 0, unit=_SECONDS),
    "soft_bounce_limit": _Range(int, 0),
    "soft_bounce_days": _Range(float, 0),
    "campaign_bounce_rate": _Range(float, 0, 1, unit=_SHARE),
    "campaign_complaint_rate": _Range(float, 0, 1, unit=_SHARE),
    "campaign_min_tracked": _Range(int, 0),
    "hourly_cap": _Range(int, 0),
    "daily_cap": _Range(int, 0),
    "cap_transactional_reserve": _Range(float, 0, 1, unit=_SHARE),
}
# Settings that are true or false (``reconcile`` may also be None: decided by the token).
_FLAGS = (
    "coalesce", "ignore_unsupported_features", "allow_eai_from", "allow_http_api_urls", "reconcile",
)  # fmt: skip
# Settings naming a Celery queue.
_NAMES = ("queue", "on_outcome_queue")


def _env_name(name: str) -> str:
    """The environment (and Django settings) name of the setting ``name``."""
    if name in _MAILTRAP_NAMES:
        return f"MAILTRAP_{name.upper()}"
    return f"MAILQUEUE_{name.upper()}"


_MAILTRAP_NAMES = frozenset(
    {"api_token", "sandbox_id", "api_url", "bulk_api_url", "bulk_api_token", "tracking_secret",
     "general_api_url"}
)  # fmt: skip


def _secret_repr(value: object) -> str:
    return "None" if value in (None, (), "") else "'***'"


# Account names become parts of environment variable names and travel with
# every queued message, so they stay short and plain.
_ACCOUNT_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ACCOUNT_FIELDS = ("api_token", "bulk_api_token", "api_url", "bulk_api_url", "sandbox_id")
# An account's own limits, beside its text fields: each falls back to the top-level one.
_ACCOUNT_LIMITS = ("rate_limit", "hourly_cap", "daily_cap")


def token_hash(token: str) -> str:
    """A stable, non-reversible name for an API token, for Redis keys and metrics.

    Mailtrap counts its 150 requests / 10 s per token over all endpoints, so
    the transactional stream, the bulk stream and the sandbox share one name
    when they share a token.
    """
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def valid_account_name(name: object) -> bool:
    """True when ``name`` can name an account (letters, digits, ``_`` and ``-``, 64 at most)."""
    return isinstance(name, str) and _ACCOUNT_NAME_RE.match(name) is not None


def account_env_prefix(name: str) -> str:
    """``MAILQUEUE_ACCOUNT_<NAME>_``: where the environment spells an account's settings."""
    return f"MAILQUEUE_ACCOUNT_{name.upper().replace('-', '_')}_"


@dataclass(frozen=True, kw_only=True, repr=False)
class Account:
    """A named Mailtrap account (or a second token set) that a message picks with ``account``.

    Every field left None falls back to the top-level setting of the same
    name; an account that sets ``api_token`` but no ``bulk_api_token`` sends
    bulk mail with its own ``api_token``, never with another account's.
    """

    name: str
    api_token: str | None = None
    bulk_api_token: str | None = None
    api_url: str | None = None
    bulk_api_url: str | None = None
    sandbox_id: str | None = None
    rate_limit: RateLimit | None = None
    # Messages an hour and a day, counted per token (Mailtrap plans cap both).
    hourly_cap: int | None = None
    daily_cap: int | None = None

    def __post_init__(self) -> None:
        if not valid_account_name(self.name):
            raise ConfigurationError(
                f"account names are letters, digits, '_' and '-' (at most 64), not {self.name!r}",
                setting="accounts",
            )
        prefix = account_env_prefix(self.name)
        for name in ("api_token", "bulk_api_token"):
            value = _secret(getattr(self, name), prefix + name.upper(), "accounts")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "sandbox_id", _sandbox_id(self.sandbox_id))
        if isinstance(self.rate_limit, str):
            object.__setattr__(self, "rate_limit", RateLimit.parse(self.rate_limit))
        for name in ("hourly_cap", "daily_cap"):
            if (getattr(self, name) or 0) < 0:
                raise ConfigurationError(
                    f"account {self.name!r}: {name} must not be negative", setting="accounts"
                )

    def __repr__(self) -> str:
        parts = [f"name={self.name!r}"]
        for name in (*_ACCOUNT_FIELDS, *_ACCOUNT_LIMITS):
            value = getattr(self, name)
            if value is not None:
                shown = _secret_repr(value) if name in _SECRET_FIELDS else repr(value)
                parts.append(f"{name}={shown}")
        return f"Account({', '.join(parts)})"


@dataclass(frozen=True, kw_only=True, repr=False)
class Settings:
    """Every mailqueue setting. Construct with keywords, or with ``from_env`` / ``from_django``."""

    api_token: str | None = None
    sandbox_id: str | None = None
    api_url: str | None = None
    bulk_api_url: str | None = None
    bulk_api_token: str | None = None
    # Named accounts chosen per message with its ``account`` key.
    accounts: Mapping[str, Account] = field(default_factory=dict)
    tracking_secret: str | None = None
    webhook_secret: tuple[str, ...] = ()
    broker_url: str = DEFAULT_BROKER_URL
    redis_url: str | None = None
    # Every Redis key starts with it (as a hash tag), so applications can share one Redis.
    key_prefix: str = DEFAULT_PREFIX
    # None: 1 when the status store is reached through Sentinel, else 0 (see min_replicas).
    redis_min_replicas: int | None = None
    rate_limit: RateLimit = field(default_factory=lambda: RateLimit(150, 10.0))
    coalesce: bool = True
    status_ttl: int = THIRTY_DAYS
    default_from_email: str | None = None
    ignore_unsupported_features: bool = False
    allow_eai_from: bool = False
    # Mailtrap URLs may be http:// only for a loopback host (a local stand-in)
    # unless this allows any: the token would cross the network in clear.
    allow_http_api_urls: bool = False
    # Beyond the documented table: delivery tuning.
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    max_retries: int = 8
    retry_backoff: float = 30.0
    retry_backoff_max: float = 3600.0
    visibility_timeout: float = 150.0
    reclaim_idle: float = 120.0
    # API calls in flight per worker process (threads); bulk mail may use all but one.
    calls_in_flight: int = 8
    webhook_max_body: int = 16 * 1024 * 1024
    queue: str = "mailqueue"
    metrics_port: int | None = None
    general_api_url: str | None = None
    # None: on when a token is set. Never for the sandbox, which keeps no Email Logs.
    reconcile: bool | None = None
    # Seconds between a lost answer and the Email Logs look-up: Mailtrap may
    # list an accepted message only some seconds after accepting it.
    reconcile_settle: float = 5.0
    # Mailtrap's Email Logs list limit per account (its rate-limits page: 60 a minute).
    email_logs_rate_limit: RateLimit = field(default_factory=lambda: RateLimit(60, 60.0))
    # Suppressions fed by tracking events: an address is suppressed after
    # this many soft bounces within this many days (0 turns it off).
    soft_bounce_limit: int = 3
    soft_bounce_days: float = 7.0
    # A campaign pauses itself when its bounce or complaint rate passes these,
    # once it has this many tracked recipients. Mailtrap publishes no number;
    # these follow the mailbox providers' bulk-sender guidance (complaints
    # well under 0.3 %, bounces a few per cent at most), and a campaign
    # stopped early costs less than a sending domain's reputation.
    campaign_bounce_rate: float = 0.05
    campaign_complaint_rate: float = 0.003
    campaign_min_tracked: int = 100
    # Messages an hour and a day each token may hand to Mailtrap, fleet-wide
    # (Mailtrap plans cap both); None: no cap. Bulk mail leaves this share of
    # each cap to transactional mail.
    hourly_cap: int | None = None
    daily_cap: int | None = None
    cap_transactional_reserve: float = 0.1
    # Told each send's final outcome, once, in the worker (see outcomes.py): a
    # callable's dotted path, and a Celery task name sent to a queue of its own.
    on_outcome: str | None = None
    on_outcome_task: str | None = None
    on_outcome_queue: str = "celery"

    def __post_init__(self) -> None:
        object.__setattr__(self, "sandbox_id", _sandbox_id(self.sandbox_id))
        for name, env in _SECRET_NAMES.items():
            object.__setattr__(self, name, _secret(getattr(self, name), env, name))
        if isinstance(self.rate_limit, str):
            object.__setattr__(self, "rate_limit", RateLimit.parse(self.rate_limit))
        if isinstance(self.email_logs_rate_limit, str):
            limit = RateLimit.parse(self.email_logs_rate_limit)
            object.__setattr__(self, "email_logs_rate_limit", limit)
        pairs = (
            _split_secrets(self.webhook_secret)
            if isinstance(self.webhook_secret, str)
            else self.webhook_secret
        )
        checked = (_secret(pair, "MAILQUEUE_WEBHOOK_SECRET", "webhook_secret") for pair in pairs)
        object.__setattr__(self, "webhook_secret", tuple(pair for pair in checked if pair))
        object.__setattr__(self, "accounts", _account_table(self.accounts))
        if self.redis_url is not None:
            urls.check_url(self.redis_url, "redis_url", "MAILQUEUE_REDIS_URL")
        problem = check_prefix(self.key_prefix)
        if problem is not None:
            raise ConfigurationError(f"MAILQUEUE_KEY_PREFIX {problem}", setting="key_prefix")
        if urls.scheme_of(self.broker_url) in urls.REDIS_SCHEMES:
            urls.check_url(self.broker_url, "broker_url", "MAILQUEUE_BROKER_URL")
        for name in ("rate_limit", "email_logs_rate_limit"):
            if not isinstance(getattr(self, name), RateLimit):
                raise ConfigurationError(
                    f"{_env_name(name)} must look like '150/10s', not {getattr(self, name)!r}",
                    setting=name,
                )
        for name, rule in _RANGES.items():
            problem = rule.problem(getattr(self, name))
            if problem is not None:
                raise ConfigurationError(f"{_env_name(name)} {problem}", setting=name)
        if self.retry_backoff_max < self.retry_backoff:
            raise ConfigurationError(
                f"MAILQUEUE_RETRY_BACKOFF_MAX ({self.retry_backoff_max:g}) must not be less than"
                f" MAILQUEUE_RETRY_BACKOFF ({self.retry_backoff:g})",
                setting="retry_backoff_max",
            )
        for name in _FLAGS:
            value = getattr(self, name)
            if not isinstance(value, bool) and not (name == "reconcile" and value is None):
                raise ConfigurationError(
                    f"{_env_name(name)} must be true or false, not {value!r}", setting=name
                )
        for name in _NAMES:
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(
                    f"{_env_name(name)} must name a queue, not {value!r}", setting=name
                )
        if self.default_from_email is not None:
            _check_sender(self.default_from_email)
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
            if f.name in _SECRET_FIELDS:
                shown = _secret_repr(value)
            elif f.name in _URL_FIELDS and value is not None:
                shown = repr(urls.mask_url(value))
            else:
                shown = repr(value)
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
    def general_base_url(self) -> str:
        """Mailtrap's general API base URL (Email Logs), always ending in ``/``."""
        url = self.general_api_url or DEFAULT_GENERAL_API_URL
        return url if url.endswith("/") else url + "/"

    @property
    def reconcile_enabled(self) -> bool:
        """Whether unknown outcomes are looked up in Email Logs before sending again.

        ``reconcile`` when set, else on whenever a token is; always off with a
        sandbox id, since the sandbox keeps no Email Logs.
        """
        if self.sandbox_id:
            return False
        if self.reconcile is not None:
            return self.reconcile
        return bool(self.api_token)

    @property
    def status_redis_url(self) -> str:
        """Where status records live: ``redis_url``, else the broker when it is Redis."""
        if self.redis_url:
            return self.redis_url
        scheme = urls.scheme_of(self.broker_url)
        if scheme in urls.REDIS_SCHEMES:
            return self.broker_url
        shown = urls.mask_url(self.broker_url)
        if not _celery_knows(scheme):
            # Most likely a typo in the one setting the person did set.
            accepted = ", ".join(f"{name}://" for name in sorted(urls.REDIS_SCHEMES))
            raise ConfigurationError(
                f"MAILQUEUE_BROKER_URL {shown!r} is no broker URL Celery knows "
                f"(Redis: {accepted}; or another Celery broker such as amqp://)",
                setting="broker_url",
            )
        raise ConfigurationError(
            f"MAILQUEUE_BROKER_URL {shown!r} is not Redis, so MAILQUEUE_REDIS_URL must say "
            "where statuses and the outbox live",
            setting="redis_url",
        )

    @property
    def min_replicas(self) -> int:
        """How many replicas must hold an enqueue's writes before it returns.

        ``redis_min_replicas`` when set; else 1 under Sentinel (a failover must
        not lose an enqueue that returned an id) and 0 for a lone Redis.
        """
        if self.redis_min_replicas is not None:
            return self.redis_min_replicas
        return 1 if urls.is_sentinel(self.status_redis_url) else 0

    @property
    def token_key(self) -> str:
        """The rate limiter's name for the API token (see ``token_hash``)."""
        return token_hash(self.api_token or "")

    def account(self, name: str | None) -> Account | None:
        """The account called ``name`` (None for the top-level settings).

        Raises ConfigurationError naming the account when none has that name.
        """
        if name is None:
            return None
        try:
            return self.accounts[name]
        except KeyError:
            raise ConfigurationError(
                f"no Mailtrap account named {name!r} is configured (MAILQUEUE_ACCOUNTS)",
                setting="accounts",
            ) from None

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
    def from_process(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """The process's own settings: its Django project's when it has one, else the environment.

        A process started with ``DJANGO_SETTINGS_MODULE`` (a worker of a Django
        project, ``manage.py shell``), or one that configured Django itself,
        reads what the Django backend reads (``from_django``); any other reads
        the environment (``from_env``).
        """
        env = os.environ if environ is None else environ
        django_settings = _django_settings(env)
        if django_settings is None:
            return cls.from_env(env)
        return cls.from_django(django_settings, env)

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


def _django_settings(env: Mapping[str, str]) -> Any:
    """The Django settings this process runs with, or None when it runs no Django project.

    Django's own settings object once Django is configured; before that, the
    module ``DJANGO_SETTINGS_MODULE`` names, found as Celery's Django fix-up
    finds it (the current directory first), so that a worker's start check
    reads settings.py before Celery sets Django up.
    """
    conf = sys.modules.get("django.conf")
    if conf is not None and conf.settings.configured:
        return conf.settings
    name = (env.get("DJANGO_SETTINGS_MODULE") or "").strip()
    if not name:
        return None
    try:
        import django  # noqa: F401
    except ImportError:  # Celery ignores the variable too when Django is not installed
        return None
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigurationError(
            f"DJANGO_SETTINGS_MODULE names {name!r}, which cannot be imported ({exc})",
            setting="django_settings_module",
        ) from None


def _account_table(accounts: Any) -> dict[str, Account]:
    """Accounts keyed by name, from a mapping of Account objects or of plain dicts."""
    if not isinstance(accounts, Mapping):
        raise ConfigurationError("accounts must map names to accounts", setting="accounts")
    table: dict[str, Account] = {}
    prefixes: dict[str, str] = {}
    for name, value in accounts.items():
        if isinstance(value, Account):
            account = value if value.name == name else dataclasses.replace(value, name=name)
        elif isinstance(value, Mapping):
            account = Account(name=name, **_account_fields(name, value))
        else:
            raise ConfigurationError(
                f"account {name!r} must be a dict of settings", setting="accounts"
            )
        # Two names spelled alike in the environment would read each other's settings.
        other = prefixes.setdefault(account_env_prefix(name), name)
        if other != name:
            raise ConfigurationError(
                f"accounts {other!r} and {name!r} share environment names", setting="accounts"
            )
        table[name] = account
    return table


def _account_fields(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """An account's fields from a dict whose keys are any case (``API_TOKEN`` or ``api_token``)."""
    fields: dict[str, Any] = {}
    for key, value in values.items():
        field_name = str(key).lower()
        if field_name not in (*_ACCOUNT_FIELDS, *_ACCOUNT_LIMITS):
            raise ConfigurationError(
                f"account {name!r} has an unknown setting {key!r}", setting="accounts"
            )
        if value is None or value == "":
            continue
        if field_name == "rate_limit":
            fields[field_name] = _rate(value)
        elif field_name in ("hourly_cap", "daily_cap"):
            try:
                fields[field_name] = _int(value)
            except ValueError:
                raise ConfigurationError(
                    f"account {name!r}: {field_name} must be a whole number, not {value!r}",
                    setting="accounts",
                ) from None
        elif field_name == "sandbox_id":
            fields[field_name] = value
        else:
            fields[field_name] = str(value)
    return fields


def _celery_knows(scheme: str) -> bool:
    """Whether ``scheme`` names a transport Celery's kombu has (``sqla+postgresql``: ``sqla``)."""
    from kombu.transport import TRANSPORT_ALIASES  # only when the broker is not Redis

    return bool(scheme) and scheme.partition("+")[0] in {name.lower() for name in TRANSPORT_ALIASES}


def _sandbox_id(value: object) -> str | None:
    """Empty / 0 / None mean no sandbox, as in Anymail; anything else must be an inbox id.

    Mailtrap's sandbox ids are int64 integers from 1 (its published schema), so
    the string ``"0"`` that Anymail takes for a sandbox is refused here.
    """
    if not value:
        return None
    text = str(value).strip()
    if isinstance(value, bool) or not is_sandbox_id(text):
        raise ConfigurationError(
            f"a sandbox id (MAILTRAP_SANDBOX_ID) must be an integer from 1 to {MAX_SANDBOX_ID},"
            f" not {str(value)[:40]!r}",
            setting="sandbox_id",
        )
    return text.lstrip("0")


def _check_sender(value: object) -> None:
    """``MAILQUEUE_DEFAULT_FROM_EMAIL`` must be one address, found at start, not at each send."""
    from mailqueue.core.addresses import parse_address_list
    from mailqueue.errors import ValidationError

    try:
        addresses = parse_address_list(value, "from_email")
    except ValidationError:
        addresses = []
    if len(addresses) != 1:
        raise ConfigurationError(
            f"MAILQUEUE_DEFAULT_FROM_EMAIL must be one email address, not {str(value)[:80]!r}",
            setting="default_from_email",
        )


def _split_secrets(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# A control character inside a token would end up in an HTTP header, where
# requests refuses it with an error quoting the whole value.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _secret(value: str | None, env: str, setting: str) -> str | None:
    """A token or secret without surrounding whitespace (a secret file's newline).

    One holding a control character inside is refused, without quoting it.
    """
    if value is None:
        return None
    text = str(value).strip()
    if _CONTROL.search(text):
        raise ConfigurationError(
            f"{env} holds a control character (a line break or tab inside it); "
            "check how the secret is written",
            setting=setting,
        )
    return text or None


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
    put("bulk_api_url", source.mailtrap("BULK_API_URL") or None)
    put("bulk_api_token", source.mailtrap("BULK_API_TOKEN") or None)
    put("general_api_url", source.mailtrap("GENERAL_API_URL") or None)
    put("reconcile", source.own("RECONCILE") or None, _boolean, "MAILQUEUE_RECONCILE")
    put(
        "accounts",
        source.own("ACCOUNTS") or None,
        lambda raw: _accounts(raw, source),
        "MAILQUEUE_ACCOUNTS",
    )
    put("tracking_secret", source.mailtrap("TRACKING_SECRET") or None)
    webhook = source.own("WEBHOOK_SECRET")
    if webhook is None:
        webhook = source.anymail("WEBHOOK_SECRET")
    put("webhook_secret", webhook, _secret_list, "MAILQUEUE_WEBHOOK_SECRET")
    put("broker_url", source.own("BROKER_URL") or None)
    put("redis_url", source.own("REDIS_URL") or None)
    put("key_prefix", source.own("KEY_PREFIX") or None)
    put(
        "redis_min_replicas",
        _given(source.own("REDIS_MIN_REPLICAS")),
        _int,
        "MAILQUEUE_REDIS_MIN_REPLICAS",
    )
    put("rate_limit", source.own("RATE_LIMIT") or None, _rate, "MAILQUEUE_RATE_LIMIT")
    put(
        "email_logs_rate_limit",
        source.own("EMAIL_LOGS_RATE_LIMIT") or None,
        _logs_rate,
        "MAILQUEUE_EMAIL_LOGS_RATE_LIMIT",
    )
    put("coalesce", source.own("COALESCE"), _boolean, "MAILQUEUE_COALESCE")
    put("status_ttl", _given(source.own("STATUS_TTL")), _int, "MAILQUEUE_STATUS_TTL")
    put("default_from_email", source.own("DEFAULT_FROM_EMAIL") or None)
    ignore = source.own("IGNORE_UNSUPPORTED_FEATURES")
    if ignore is None:
        ignore = source.anymail("IGNORE_UNSUPPORTED_FEATURES")
    put("ignore_unsupported_features", ignore, _boolean, "MAILQUEUE_IGNORE_UNSUPPORTED_FEATURES")
    put("allow_eai_from", source.own("ALLOW_EAI_FROM"), _boolean, "MAILQUEUE_ALLOW_EAI_FROM")
    put(
        "allow_http_api_urls",
        source.own("ALLOW_HTTP_API_URLS"),
        _boolean,
        "MAILQUEUE_ALLOW_HTTP_API_URLS",
    )
    for name, convert in (
        ("CONNECT_TIMEOUT", _number),
        ("READ_TIMEOUT", _number),
        ("MAX_RETRIES", _int),
        ("RETRY_BACKOFF", _number),
        ("RETRY_BACKOFF_MAX", _number),
        ("VISIBILITY_TIMEOUT", _number),
        ("RECLAIM_IDLE", _number),
        ("CALLS_IN_FLIGHT", _int),
        ("WEBHOOK_MAX_BODY", _int),
        ("QUEUE", str),
        ("ON_OUTCOME", str),
        ("ON_OUTCOME_TASK", str),
        ("ON_OUTCOME_QUEUE", str),
        ("METRICS_PORT", _int),
        ("RECONCILE_SETTLE", _number),
        ("SOFT_BOUNCE_LIMIT", _int),
        ("SOFT_BOUNCE_DAYS", _number),
        ("CAMPAIGN_BOUNCE_RATE", _number),
        ("CAMPAIGN_COMPLAINT_RATE", _number),
        ("CAMPAIGN_MIN_TRACKED", _int),
        ("HOURLY_CAP", _int),
        ("DAILY_CAP", _int),
        ("CAP_TRANSACTIONAL_RESERVE", _number),
    ):
        put(name.lower(), _given(source.own(name)), convert, f"MAILQUEUE_{name}")
    return values


def _accounts(raw: Any, source: _EnvSource) -> dict[str, Account]:
    """``MAILQUEUE_ACCOUNTS``: a mapping of name to settings (Django), or a list of names.

    For a list (``marketing,eu``), each account's settings are read from
    ``MAILQUEUE_ACCOUNT_<NAME>_API_TOKEN``, ``..._BULK_API_TOKEN``,
    ``..._API_URL``, ``..._BULK_API_URL``, ``..._SANDBOX_ID``, ``..._RATE_LIMIT``,
    ``..._HOURLY_CAP`` and ``..._DAILY_CAP``.
    """
    if isinstance(raw, Mapping):
        return _account_table(raw)
    names = _split_secrets(raw) if isinstance(raw, str) else tuple(str(name) for name in raw)
    table: dict[str, dict[str, Any]] = {}
    for name in names:
        if not valid_account_name(name):
            raise ValueError(f"{name!r} is not an account name (letters, digits, '_', '-')")
        own_prefix = account_env_prefix(name)[len("MAILQUEUE_") :]
        table[name] = {
            key: source.own(own_prefix + key.upper())
            for key in (*_ACCOUNT_FIELDS, *_ACCOUNT_LIMITS)
        }
    return _account_table(table)


def _given(value: Any) -> Any:
    """``value``, or None when it is unset or empty (a Django setting of 0 is given)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return value


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
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        number = float(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None
    # "nan" and "inf" parse, but no delay, timeout or rate can be either.
    if not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    return number


def _rate(value: Any) -> RateLimit:
    return value if isinstance(value, RateLimit) else RateLimit.parse(str(value))


def _logs_rate(value: Any) -> RateLimit:
    # RateLimit.parse names MAILQUEUE_RATE_LIMIT; ``put`` names this setting instead.
    try:
        return _rate(value)
    except ConfigurationError:
        raise ValueError(f"expected e.g. '60/60s', got {value!r}") from None


def _secret_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return _split_secrets(value)
    return tuple(str(item) for item in value)
