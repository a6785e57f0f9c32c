"""PII redaction: every planted item of each kind is caught; planted look-alikes are left alone."""

from __future__ import annotations

import pytest

from tunesmith.data.clean.pii import KINDS, find_pii, iban_ok, luhn_ok, redact

PLANTED = {
    "email": ["john.doe+news@example.co.uk", "a_b@mail-server.org", "ANNA.K@Uni.EDU", "x1@y.io"],
    "phone": ["+1 415-555-0132", "(415) 555-0199", "020 7946 0958", "+44 20 7946 0958", "+4915112345678", "415.555.0123"],
    "ipv4": ["192.168.1.20", "8.8.8.8", "10.0.0.255", "255.255.255.0"],
    "ipv6": ["2001:db8::1", "fe80::1ff:fe23:4567:890a", "2001:0db8:85a3:0000:0000:8a2e:0370:7334", "::ffff:192.0.2.1"],
    "credit_card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011111111111117", "4012888888881881"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606", "NL91ABNA0417164300"],
    "secret": ["sk-abcdefghijklmnopqrstuvwxyz123456", "sk-proj-AbC123dEf456GhI789jKl012", "AKIAIOSFODNN7EXAMPLE",
               "ghp_abcdefghijklmnopqrstuvwxyzABCDEFGHIJ12", "xoxb-1234567890-abcdefghij", "hf_abcdefghijklmnopqrstuvwxyzABCDEF"],
    "bearer": ["Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abc123"],
}
PLACEHOLDER = {"email": "[EMAIL]", "phone": "[PHONE]", "ipv4": "[IP_ADDRESS]", "ipv6": "[IP_ADDRESS]",
               "credit_card": "[CREDIT_CARD]", "iban": "[IBAN]", "secret": "[SECRET]", "bearer": "Bearer [SECRET]"}
LOOK_ALIKES = [
    "version 1.2.3.4", "release v10.0.0.1", "build 2.0.0.10", "libfoo 1.2.3", "pi is 3.14159", "3.1.4.1.5 is not an address",
    "on 2024-01-15", "dated 15/01/2024", "at 01.02.2024", "the time 12:30:45", "ISBN 978-3-16-148410-0", "isbn 9780306406157",
    "ISBN-10 0-306-40615-2", "order 4111 1111 1111 1112", "invoice 1234567890123456", "zip 94103", "room 555-0132",
    "price $1,234,567.89", "call me at 555", "std::vector<int>", "a::b::c", "mac ab:cd", "IBAN-like DE00 1234 5678 9012 3456 78",
    "sk-short", "ghp_short", "the year 1999-2004", "id 12345678", "ratio 16:9",
]


@pytest.mark.parametrize("kind", list(PLANTED))
def test_every_planted_item_is_redacted(kind):
    for value in PLANTED[kind]:
        text = f"Contact: {value}. Thanks!"
        out, kinds = redact(text)
        assert out == f"Contact: {PLACEHOLDER[kind]}. Thanks!", value
        assert kinds == [kind], value


def test_look_alikes_are_left_alone():
    for text in LOOK_ALIKES:
        assert find_pii(text) == [], text


def test_several_items_in_one_text_and_kind_selection():
    text = "Mail a@b.com or call +1 415-555-0132 from 10.1.2.3; card 4111 1111 1111 1111."
    out, kinds = redact(text)
    assert out == "Mail [EMAIL] or call [PHONE] from [IP_ADDRESS]; card [CREDIT_CARD]."
    assert sorted(kinds) == ["credit_card", "email", "ipv4", "phone"]
    out, kinds = redact(text, kinds=["email"])
    assert out == "Mail [EMAIL] or call +1 415-555-0132 from 10.1.2.3; card 4111 1111 1111 1111." and kinds == ["email"]
    assert set(KINDS) == set(PLANTED)


def test_checksums():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert iban_ok("DE89370400440532013000") and not iban_ok("DE88370400440532013000")
