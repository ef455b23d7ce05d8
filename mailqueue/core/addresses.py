"""Email address parsing with Anymail's rules: RFC 5322, IDNA domains, EAI local parts.

Each string goes through :func:`email.utils.getaddresses`, so one string may hold
several comma-separated addresses, and an unquoted comma in a display name splits
it (``Last, First <lf@x.com>`` is two parts, the first of which is invalid).
Only a non-ASCII domain is IDNA-encoded (IDNA 2008 with UTS-46 mapping, as
Anymail's default ``idna2008`` encoder); local parts are never encoded.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from email.charset import Charset
from email.headerregistry import Address as _HeaderAddress
from email.utils import getaddresses
from functools import lru_cache

import idna

from mailqueue.errors import ValidationError

__all__ = [
    "EmailAddress",
    "InvalidAddress",
    "comparable",
    "format_header_list",
    "idna_encode",
    "parse_address_list",
]

# Addresses this simple parse identically with getaddresses + headerregistry, so
# they skip both (a large batch send is mostly such addresses).
_ATOM = r"[A-Za-z0-9_%+\-]+"
_SIMPLE_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"
_SIMPLE_RE = re.compile(
    rf"(?:(?P<name>[A-Za-z0-9]+(?: [A-Za-z0-9]+)*) <(?P<spec>{_SIMPLE_SPEC})>"
    rf"|(?P<bare>{_SIMPLE_SPEC}))"
)


@dataclass(frozen=True, slots=True)
class EmailAddress:
    """One parsed address. ``addr_spec`` keeps the Unicode domain; ``email`` is the wire form."""

    name: str
    addr_spec: str
    username: str
    domain: str
    email: str

    @property
    def uses_eai(self) -> bool:
        """True when the local part is not ASCII (SMTPUTF8 needed)."""
        return not self.username.isascii()

    def as_wire(self) -> dict[str, str]:
        """Mailtrap's address object: ``name`` only when there is one."""
        if self.name:
            return {"email": self.email, "name": self.name}
        return {"email": self.email}

    def format_header(self) -> str:
        """The address for a raw header: RFC 2047 name, quoted specials, IDNA domain."""
        name = self.name
        if not name.isascii():
            name = Charset("utf-8").header_encode(name)
        domain = self.domain if self.domain.isascii() else idna_encode(self.domain)
        return str(_HeaderAddress(display_name=name, username=self.username, domain=domain))


@lru_cache(maxsize=4096)
def idna_encode(domain: str) -> str:
    """IDNA 2008 (UTS-46 mapped, so lowercased) A-label form of a non-ASCII domain."""
    return idna.encode(domain, uts46=True).decode("ascii")


def parse_address_list(text: object, field: str) -> list[EmailAddress]:
    """All addresses in one string; ValidationError naming ``field`` when any is invalid."""
    if not isinstance(text, str):
        raise ValidationError(
            f"{field} must be a string address, not {type(text).__name__}", field=field
        )
    match = _SIMPLE_RE.fullmatch(text)
    if match is not None:
        spec = match["spec"] or match["bare"]
        username, _, domain = spec.rpartition("@")
        return [EmailAddress(match["name"] or "", spec, username, domain, spec)]
    return list(_parse_slow(text, field))


def _parse_slow(text: str, field: str) -> tuple[EmailAddress, ...]:
    try:
        if len(text) <= _CACHED_TEXT_CHARS:
            return _parse_cached(text)
        return _parse(text)
    except _Invalid as error:
        raise _invalid(text, field, str(error) or _problem(text)) from None


class InvalidAddress(ValidationError):
    """An address that does not parse: ``address`` as given, ``reason`` why in a few words."""

    def __init__(self, message: str, *, field: str, address: str, reason: str) -> None:
        super().__init__(message, field=field)
        self.address = address
        self.reason = reason


class _Invalid(ValueError):
    """An address failed to parse; the caller adds which field it came from.

    Its text is our own reason, or empty: the email package's exception texts
    ("string index out of range") are about its parser, not the address, so
    the reason is then told from the address itself (``_problem``).
    """


_CACHED_TEXT_CHARS = 512


def _parse(text: str) -> tuple[EmailAddress, ...]:
    try:
        pairs = getaddresses([text])
    except Exception:  # the parser's failure modes are not documented
        raise _Invalid() from None
    if not pairs:
        raise _Invalid("no address found")
    return tuple(_one(name, spec) for name, spec in pairs)


# The same sender and recipients recur across messages; a failure is not cached.
_parse_cached = lru_cache(maxsize=4096)(_parse)


def _one(name: str, spec: str) -> EmailAddress:
    try:
        if spec and not spec.isascii():
            # headerregistry cannot parse a non-ASCII addr-spec (python/cpython#81074),
            # so split it by hand as Anymail does.
            username, at, domain = spec.rpartition("@")
            if not at:
                raise ValueError("missing @domain part")
            if username.startswith('"') and username.endswith('"') and len(username) > 1:
                username = username[1:-1].replace("\\\\", "\\").replace('\\"', '"')
            parsed = _HeaderAddress(name, username, domain)
        else:
            parsed = _HeaderAddress(name, addr_spec=spec)
    except Exception:
        raise _Invalid() from None
    if not parsed.username or not parsed.domain:
        raise _Invalid()
    domain = parsed.domain
    addr_spec = parsed.addr_spec
    email = addr_spec
    if not domain.isascii():
        try:
            encoded = idna_encode(domain)
        except Exception:
            raise _Invalid(f"the domain {domain!r} has no IDNA form") from None
        email = str(_HeaderAddress(username=parsed.username, domain=encoded))
    return EmailAddress(parsed.display_name, addr_spec, parsed.username, domain, email)


def _invalid(text: str, field: str, why: str) -> InvalidAddress:
    message = f"Invalid email address in {field}: {text!r} ({why})"
    if "," in text:
        message += " (maybe missing quotes around a display-name?)"
    return InvalidAddress(message, field=field, address=text, reason=why)


def _problem(text: str) -> str:
    """What is wrong with an address that does not parse, told from the text alone."""
    spec = text.strip()
    if "<" in spec:
        spec = spec.rpartition("<")[2].partition(">")[0].strip()
    if not spec:
        return "no address"
    local, at, domain = spec.rpartition("@")
    if not at:
        return "no @domain"
    if not local:
        return "nothing before the @"
    if not domain.strip():
        return "nothing after the @"
    if "@" in local and not local.startswith('"'):
        return "more than one @"
    if any(char.isspace() for char in spec):
        return "a space where none may be"
    return "not an address RFC 5322 allows"


def format_header_list(addresses: list[EmailAddress]) -> str:
    """Several addresses as one header value, joined with ``", "``."""
    return ", ".join(address.format_header() for address in addresses)


def comparable(address: str) -> str:
    """One spelling of an addr-spec for comparisons: case-folded, the domain in IDNA form.

    Mailtrap and mailboxes treat ``Alice@Example.com`` and ``alice@example.com``
    alike, and a Unicode domain is the same domain as its A-label form.
    """
    if address.isascii():
        return address.strip().lower()  # the same, for ASCII, as the parts case-folded below
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return address.strip().casefold()
    with contextlib.suppress(UnicodeError, ValueError):
        domain = domain if domain.isascii() else idna_encode(domain)
    return f"{local.casefold()}@{domain.casefold()}"
