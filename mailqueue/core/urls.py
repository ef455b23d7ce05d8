"""Redis URLs, read without connecting: schemes, Sentinel URLs, checks and masking.

Accepted URLs (for ``MAILQUEUE_REDIS_URL`` and ``MAILQUEUE_BROKER_URL``)::

    redis://[[user]:password@]host[:port][/db]      plain TCP, ACL user optional
    rediss://...                                     the same over TLS
    unix://[[user]:password@]/path/to/socket[?db=N]  a local socket
    redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER_NAME[/db]
                     [?sentinel_password=...&sentinel_username=...]

Under Sentinel the URL's credentials are the master's (and its replicas'),
the ones the data lives behind; the sentinels are often run without a
password, or with their own, so theirs comes separately as
``sentinel_password`` (and ``sentinel_username``) in the query.

Pure: settings check their URLs with it, and ``store.connection`` builds its
clients from what it parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from mailqueue.errors import ConfigurationError

__all__ = [
    "REDIS_SCHEMES",
    "SENTINEL_SCHEME",
    "SentinelTarget",
    "check_url",
    "is_sentinel",
    "mask_url",
    "parse_sentinel_url",
    "scheme_of",
]

# A producer must learn at once that Redis is down, not hang: bounded
# connect and read timeouts. A frozen server (accepting connections,
# answering nothing) costs one read timeout per call, so that timeout stays
# under the 5 s a web request can afford; every command mailqueue sends is
# short, none blocks.
SOCKET_CONNECT_TIMEOUT = 3.0
SOCKET_TIMEOUT = 4.0

SENTINEL_SCHEME = "redis+sentinel"
REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", SENTINEL_SCHEME})
DEFAULT_SENTINEL_PORT = 26379
MASK = "***"
_MASKED_VALUE = rf"\1{MASK}"

TIMEOUTS: dict[str, Any] = {
    "socket_connect_timeout": SOCKET_CONNECT_TIMEOUT,
    "socket_timeout": SOCKET_TIMEOUT,
}
_SENTINEL_QUERY = frozenset({"sentinel_password", "sentinel_username"})
SECRET_QUERY = re.compile(r"([?&][^=&#]*pass[^=&#]*=)[^&#]*", re.IGNORECASE)


@dataclass(frozen=True, repr=False)
class SentinelTarget:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None

    def __repr__(self) -> str:
        return (
            f"SentinelTarget(sentinels={self.sentinels!r}, master_name={self.master_name!r}, "
            f"db={self.db})"
        )

    def sentinel_kwargs(self) -> dict[str, Any]:
        """Connection arguments for the sentinels themselves (not the master)."""
        kwargs = dict(TIMEOUTS)
        if self.sentinel_username:
            kwargs["username"] = self.sentinel_username
        if self.sentinel_password:
            kwargs["password"] = self.sentinel_password
        return kwargs


def scheme_of(url: str) -> str:
    """The lower-cased scheme of ``url`` ('' when it has none)."""
    scheme, sep, _ = url.partition("://")
    return scheme.lower() if sep else ""


def is_sentinel(url: str) -> bool:
    """Whether ``url`` names a Redis master through Sentinel."""
    return scheme_of(url) == SENTINEL_SCHEME


def check_url(url: str, setting: str, name: str | None = None) -> None:
    """Raise ConfigurationError for ``setting`` unless ``url`` is a Redis URL mailqueue takes.

    The message names ``name`` (the environment variable a person set) when given.
    """
    shown = name or setting
    scheme = scheme_of(url)
    if scheme not in REDIS_SCHEMES:
        accepted = ", ".join(f"{scheme}://" for scheme in sorted(REDIS_SCHEMES))
        raise ConfigurationError(
            f"{shown} must start with one of {accepted}, not {mask_url(url)!r}",
            setting=setting,
        )
    for part in url.split(";"):
        if _credentials_spill(part):
            raise ConfigurationError(
                f"{shown} is malformed: its user name or password holds '/', '?' or '#' "
                f"unencoded; percent-encode them (%2F, %3F, %23): {mask_url(url)!r}",
                setting=setting,
            )
    if scheme == SENTINEL_SCHEME:
        try:
            parse_sentinel_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"{shown} is malformed: {exc}", setting=setting) from None
    elif scheme in ("redis", "rediss", "unix"):
        # redis-py's own parser, imported here so that reading settings costs no
        # redis import until a plain Redis URL is actually checked.
        from redis.connection import parse_url

        try:
            parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError:
            # redis-py's own words may quote a piece of the password.
            raise ConfigurationError(
                f"{shown} is malformed: {mask_url(url)!r}", setting=setting
            ) from None


def _credentials_spill(url: str) -> bool:
    """Whether an ``@`` after the authority's end shows a password cut short by ``/?#``.

    ``redis://:pa/ss@host`` reads as host ``:pa`` and path ``/ss@host``; a
    query value holding ``@`` (``?sentinel_password=a@b``) is not that.
    """
    rest = url.partition("://")[2]
    if rest.startswith("/"):
        # No authority at all (unix:///run/redis@main.sock).
        return False
    end = _authority_end(rest)
    spill = rest.rfind("@")
    return spill >= end and "=" not in rest[end:spill]


def _authority_end(rest: str) -> int:
    return next((i for i, char in enumerate(rest) if char in "/?#"), len(rest))


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Parse ``redis+sentinel://[[user]:password@]host:port[,host:port...]/MASTER[/db]``.

    Raises ValueError saying what is wrong (never quoting a password).
    """
    if not is_sentinel(url):
        raise ValueError(f"not a {SENTINEL_SCHEME}:// URL")
    rest = url.partition("://")[2]
    rest, _, query = rest.partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, hosts = authority.rpartition("@")
    username, password = _credentials(userinfo) if at else (None, None)
    sentinels = tuple(_host_port(part) for part in hosts.split(",") if part.strip())
    if not sentinels:
        raise ValueError("no sentinel host:port given")
    segments = [unquote(segment) for segment in path.split("/") if segment]
    if not segments:
        raise ValueError("the master name is missing (…/MASTER_NAME[/DB])")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError("the path must be /MASTER_NAME or /MASTER_NAME/DB")
    options = {name: values[-1] for name, values in parse_qs(query).items()}
    unknown = sorted(set(options) - _SENTINEL_QUERY)
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; accepted: {', '.join(_SENTINEL_QUERY)}")
    return SentinelTarget(
        sentinels=sentinels,
        master_name=segments[0],
        db=int(segments[1]) if len(segments) == 2 else 0,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    user, colon, password = userinfo.partition(":")
    if not colon:
        # "redis://secret@host" is redis-py's reading too: a lone word is a password.
        return None, unquote(user) or None
    return unquote(user) or None, unquote(password) or None


def _host_port(text: str) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):
        host, _, tail = text[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if not host:
        raise ValueError(f"sentinel address {text!r} has no host")
    if not port_text:
        return host, DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"sentinel address {text!r} has no valid port")
    return host, int(port_text)


def mask_url(url: str) -> str:
    """``url`` with its user name, password and any ``*pass*`` query value replaced by ***.

    Also takes Celery's ``;``-separated broker lists. Safe for reprs, logs,
    error messages and metric labels.
    """
    return ";".join(_mask_one(part) for part in url.split(";"))


def _mask_one(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return SECRET_QUERY.sub(_MASKED_VALUE, url)
    if _credentials_spill(url):
        # A password holding '/', '?' or '#' unencoded: all up to its '@' is secret.
        return f"{scheme}://{MASK}@{rest[rest.rfind('@') + 1 :]}"
    end = _authority_end(rest)
    authority, tail = rest[:end], rest[end:]
    _, at, hosts = authority.rpartition("@")
    if at:
        authority = f"{MASK}@{hosts}"
    return f"{scheme}://{authority}{SECRET_QUERY.sub(_MASKED_VALUE, tail)}"
