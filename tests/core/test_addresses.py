"""Address parsing: RFC 5322 via getaddresses, IDNA for non-ASCII domains, EAI as is."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailqueue.core.addresses import (
    EmailAddress,
    InvalidAddress,
    _parse_slow,
    format_header_list,
    idna_encode,
    parse_address_list,
)
from mailqueue.errors import ValidationError


def one(text: str) -> EmailAddress:
    [address] = parse_address_list(text, "to[0]")
    return address


def test_bare_address_has_no_name() -> None:
    assert one("user@example.com").as_wire() == {"email": "user@example.com"}


def test_display_name_is_unquoted_and_unescaped() -> None:
    address = one('"Smith, J. \\"JJ\\"" <j@example.com>')
    assert address.as_wire() == {"email": "j@example.com", "name": 'Smith, J. "JJ"'}


def test_unquoted_comma_splits_the_string() -> None:
    addresses = parse_address_list("a@example.com, B <b@example.com>", "to[0]")
    assert [a.addr_spec for a in addresses] == ["a@example.com", "b@example.com"]


def test_unquoted_comma_in_a_name_is_invalid_and_says_why() -> None:
    with pytest.raises(ValidationError, match="maybe missing quotes") as raised:
        parse_address_list("Last, First <lf@example.com>", "cc[3]")
    assert raised.value.field == "cc[3]"


@pytest.mark.parametrize("text", ["bad-address", "", "user@", "@example.com", "a@b@c", "<>"])
def test_address_without_local_part_and_domain_is_invalid(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_address_list(text, "to[0]")


def test_non_ascii_domain_is_idna_encoded_and_lowercased() -> None:
    address = one("user@ÜNICODE.example")
    assert address.email == "user@xn--nicode-2ya.example"
    assert address.addr_spec == "user@ÜNICODE.example"


def test_eai_local_part_is_sent_as_is() -> None:
    address = one("відправник@example.com")
    assert address.email == "відправник@example.com"
    assert address.uses_eai


def test_ascii_address_is_not_eai() -> None:
    assert not one("user@příklad.cz").uses_eai


def test_unencodable_domain_is_invalid() -> None:
    with pytest.raises(ValidationError, match="IDNA"):
        parse_address_list("user@☃.example", "from_email")


def test_idna_encode_uses_idna2008_with_uts46_mapping() -> None:
    assert idna_encode("příklad.example.cz") == "xn--pklad-zsa96e.example.cz"


def test_header_format_encodes_names_quotes_specials_and_encodes_domains() -> None:
    addresses = parse_address_list(
        'reply@example.com, "Other, with comma" <reply2@example.com>,'
        " Інше <reply3@příklad.example.cz>",
        "reply_to[0]",
    )
    assert format_header_list(addresses) == (
        'reply@example.com, "Other, with comma" <reply2@example.com>,'
        " =?utf-8?b?0IbQvdGI0LU=?= <reply3@xn--pklad-zsa96e.example.cz>"
    )


def test_non_string_is_invalid_naming_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        parse_address_list(42, "bcc[1]")
    assert raised.value.field == "bcc[1]"


_atom = st.text(st.sampled_from("abcXYZ019_%+-"), min_size=1, max_size=6)
_local = st.lists(_atom, min_size=1, max_size=3).map(".".join)
_label = st.text(st.sampled_from("abcXYZ019-"), min_size=1, max_size=6)
_domain = st.lists(_label, min_size=1, max_size=3).map(".".join)
_name = st.lists(st.text(st.sampled_from("abcXYZ019"), min_size=1, max_size=5), max_size=3).map(
    " ".join
)


@settings(max_examples=300)
@given(local=_local, domain=_domain, name=_name)
def test_fast_path_agrees_with_the_full_parser(local: str, domain: str, name: str) -> None:
    spec = f"{local}@{domain}"
    text = f"{name} <{spec}>" if name else spec
    fast = parse_address_list(text, "to[0]")
    assert fast == list(_parse_slow(text, "to[0]"))


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_any_string_parses_or_raises_validation_error(text: str) -> None:
    try:
        addresses = parse_address_list(text, "to[0]")
    except ValidationError as error:
        assert error.field == "to[0]"
    else:
        assert addresses
        assert all(a.username and a.domain for a in addresses)
        assert all(a.email.isascii() for a in addresses if not a.uses_eai)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("bad@", "nothing after the @"),
        ("@example.com", "nothing before the @"),
        ("e.com", "no @domain"),
        ("a@b@example.com", "more than one @"),
        ("<>", "no address"),
        ("Ann <ann@>", "nothing after the @"),
    ],
)
def test_an_invalid_address_says_why_in_words_not_the_parsers(text: str, reason: str) -> None:
    with pytest.raises(InvalidAddress) as caught:
        parse_address_list(text, "to[0]")

    assert caught.value.reason == reason
    assert caught.value.address == text
    assert str(caught.value) == f"Invalid email address in to[0]: {text!r} ({reason})"
