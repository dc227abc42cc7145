"""wahub's check of ``X-Twilio-Signature`` agrees with twilio-python's
``RequestValidator`` on the cases where implementations part ways: repeated
names, text beyond ASCII, query strings, default and other ports, JSON bodies."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qsl, urlencode

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from wahub.plugins.providers.twilio.signature import signature_valid, url_forms

TOKEN = "signature-test-auth-token"
FORMS = [
    [("Body", "hi"), ("From", "whatsapp:+16505551234")],
    [("Tag", "b"), ("Tag", "a"), ("Body", "two tags")],
    [("Body", "Olá 👍 & = + %"), ("ProfileName", "Zoë")],
    [("Body", ""), ("NumMedia", "0")],
]
URLS = [
    "https://hooks.example.com/webhooks/main",
    "https://hooks.example.com/wahub/webhooks/main?route=eu&x=1",
    "http://127.0.0.1:8123/webhooks/main",
    "https://[2001:db8::1]/webhooks/main",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("fields", FORMS)
def test_a_signature_made_by_twilio_python_is_accepted(url: str, fields: list[tuple[str, str]]) -> None:
    body = urlencode(fields).encode()
    signature = RequestValidator(TOKEN).compute_signature(url, MultiDict(parse_qsl(body.decode(), True)))
    assert signature_valid(TOKEN, url, body, signature, json_body=False)
    assert not signature_valid("another-token", url, body, signature, json_body=False)
    assert not signature_valid(TOKEN, url + "x", body, signature, json_body=False)
    assert not signature_valid(TOKEN, url, body + b"&More=1", signature, json_body=False)


def test_the_default_port_may_be_signed_or_not() -> None:
    body = b"Body=hi"
    for signed_for, checked_at in (
        ("https://hooks.example.com:443/webhooks/main", "https://hooks.example.com/webhooks/main"),
        ("https://hooks.example.com/webhooks/main", "https://hooks.example.com:443/webhooks/main"),
        ("http://hooks.example.com:80/webhooks/main", "http://hooks.example.com/webhooks/main"),
    ):
        signature = RequestValidator(TOKEN).compute_signature(signed_for, {"Body": "hi"})
        assert signature_valid(TOKEN, checked_at, body, signature, json_body=False), (signed_for, checked_at)
    other_port = RequestValidator(TOKEN).compute_signature(
        "https://hooks.example.com:8443/webhooks/main", {"Body": "hi"}
    )
    assert not signature_valid(TOKEN, "https://hooks.example.com/webhooks/main", body, other_port, json_body=False)
    assert url_forms("https://[2001:db8::1]/x") == ["https://[2001:db8::1]/x", "https://[2001:db8::1]:443/x"]


def test_a_json_body_is_checked_by_its_hash_in_the_url() -> None:
    body = b'{"MessageSid": "SM1", "Body": "json"}'
    url = f"https://hooks.example.com/webhooks/main?bodySHA256={hashlib.sha256(body).hexdigest()}"
    signature = RequestValidator(TOKEN).compute_signature(url, {})
    assert RequestValidator(TOKEN).validate(url, body.decode(), signature)
    assert signature_valid(TOKEN, url, body, signature, json_body=True)
    assert not signature_valid(TOKEN, url, body.replace(b"json", b"JSON"), signature, json_body=True)
    assert not signature_valid(
        TOKEN,
        url.partition("?")[0],
        body,
        RequestValidator(TOKEN).compute_signature(url.partition("?")[0], {}),
        json_body=True,
    )


def test_a_body_that_is_not_utf8_or_an_empty_signature_is_refused() -> None:
    url = "https://hooks.example.com/webhooks/main"
    assert not signature_valid(
        TOKEN, url, b"Body=\xff", RequestValidator(TOKEN).compute_signature(url, {}), json_body=False
    )
    assert not signature_valid(TOKEN, url, b"", "", json_body=False)
