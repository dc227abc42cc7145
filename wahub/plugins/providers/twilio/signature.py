"""Twilio's webhook signature, ``X-Twilio-Signature``.

Twilio signs the URL it requested (scheme, host, path and query) followed by
every POST parameter, names sorted, each value appended as ``name + value``
(a repeated name's values sorted too), with HMAC-SHA1 keyed by the account's
auth token, base64-encoded. A URL may be signed with or without the default
port (``:443``, ``:80``), so both forms are accepted. A JSON body is not
signed field by field: Twilio puts ``bodySHA256=<hex sha256 of the body>`` in
the query string instead, and that hash must match the body.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Sequence
from urllib.parse import parse_qs, parse_qsl, urlsplit, urlunsplit

from wahub.core.provider import secret_matches

SIGNATURE_HEADER = "X-Twilio-Signature"
_DEFAULT_PORTS = {"https": 443, "http": 80}


def signature_of(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The ``X-Twilio-Signature`` Twilio sends for ``params`` posted to ``url``."""
    grouped: dict[str, set[str]] = {}
    for name, value in params:
        grouped.setdefault(name, set()).add(value)
    text = url + "".join(name + value for name in sorted(grouped) for value in sorted(grouped[name]))
    digest = hmac.new(auth_token.encode(), text.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_forms(url: str) -> list[str]:
    """``url`` as Twilio may have signed it: as it is, and with the scheme's
    default port added (or removed when it is there)."""
    parts = urlsplit(url)
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if default is None or parts.hostname is None:
        return [url]
    try:
        port = parts.port
    except ValueError:
        return [url]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    userinfo = parts.netloc.rpartition("@")[0]
    prefix = f"{userinfo}@" if userinfo else ""
    if port is None:
        other = urlunsplit(parts._replace(netloc=f"{prefix}{host}:{default}"))
    elif port == default:
        other = urlunsplit(parts._replace(netloc=f"{prefix}{host}"))
    else:
        return [url]
    return [url, other]


def form_params(body: bytes) -> list[tuple[str, str]] | None:
    """The fields of a form-encoded body (every value of a repeated name), or
    None when the body is not one (not UTF-8)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return parse_qsl(text, keep_blank_values=True)


def signature_valid(auth_token: str, url: str, body: bytes, given: str, *, json_body: bool) -> bool:
    """Whether ``given`` is Twilio's signature of ``body`` posted to ``url``
    (any of its ``url_forms``), compared in constant time. A JSON body needs
    its ``bodySHA256`` query parameter to match, and is signed over the URL alone."""
    if not given:
        return False
    params: Sequence[tuple[str, str]]
    if json_body:
        hashes = parse_qs(urlsplit(url).query).get("bodySHA256", [])
        if len(hashes) != 1 or not secret_matches(hashes[0].lower(), hashlib.sha256(body).hexdigest()):
            return False
        params = []
    else:
        found = form_params(body)
        if found is None:
            return False
        params = found
    # Every form is tried, so the time taken does not tell which one was close.
    matches = [secret_matches(given, signature_of(auth_token, form, params)) for form in url_forms(url)]
    return any(matches)
