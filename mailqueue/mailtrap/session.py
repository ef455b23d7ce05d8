"""The one way mailqueue opens HTTP to Mailtrap: a pooled, keep-alive session per token.

Sending, Email Logs and the suppression list each hold one; a subclass adds
its requests. urllib3 never retries on its own: a silently repeated POST
could send twice, so every retry is decided (and counted) by the caller.
No redirect is ever followed: requests would repeat the request, token
header and message included, to whatever host the answer names. A 3xx is
handed to the caller as the answer it is.
"""

from __future__ import annotations

import ipaddress
from typing import TypeVar
from urllib.parse import urlsplit

import requests
import requests.adapters
import requests.utils

from mailqueue.core.urls import mask_url
from mailqueue.errors import ConfigurationError

__all__ = ["ApiSession", "check_api_url", "is_loopback_host"]

_S = TypeVar("_S", bound="ApiSession")


_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def check_api_url(url: str, name: str, setting: str, *, allow_http: bool = False) -> None:
    """Raise ConfigurationError (naming ``name``) unless ``url`` may carry the API token.

    It must be ``https://``, or ``http://`` to a loopback host (a local
    stand-in), or to any host when ``allow_http`` says so.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{name} must be an http:// or https:// URL, not {mask_url(url)!r}", setting=setting
        )
    if parts.scheme == "http" and not allow_http and not is_loopback_host(parts.hostname):
        raise ConfigurationError(
            f"{name} is http:// to {parts.hostname!r}, which would send the API token "
            "unencrypted: use https://, or set MAILQUEUE_ALLOW_HTTP_API_URLS=true",
            setting=setting,
        )


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (a name or an address, as a URL gives it) is this machine."""
    host = host.lower()
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Session(requests.Session):
    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


class ApiSession:
    """Owns a ``requests.Session`` with the token's headers; close it, or use it in ``with``."""

    def __init__(self, headers: dict[str, str], *, pool_size: int = 1) -> None:
        from mailqueue.version import __version__

        self._session: requests.Session = _Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=1, pool_maxsize=pool_size, max_retries=0
        )
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._session.headers.update(
            {
                **headers,
                "Accept": "application/json",
                "User-Agent": f"mailqueue/{__version__} {requests.utils.default_user_agent()}",
            }
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
