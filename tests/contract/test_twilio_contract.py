"""Twilio's provider against the contract suite (tests/contract/twilio).

Webhooks are signed by twilio-python's ``RequestValidator``, Twilio's own
code, for the URL each case is sent to; every request the provider makes is
checked as the Messages API reads a form."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qsl

from multidict import MultiDict
from twilio.request_validator import RequestValidator

from wahub.core.provider import Provider, WebhookRequest
from wahub.core.storage.policy import Template
from wahub.plugins.providers.twilio.provider import TwilioProvider
from wahub.testing.contract import Recorded, contract_tests

AUTH_TOKEN = "contract-twilio-auth-token-0123"
ACCOUNT_SID = "AC" + "c" * 32
CONTENT_SID = "HX" + "a" * 32


def sign_as_twilio(request: WebhookRequest) -> dict[str, str]:
    """``X-Twilio-Signature`` as Twilio computes it, for the URL the case is sent to."""
    if "json" in request.headers.get("Content-Type", ""):
        params: MultiDict[str] = MultiDict()
    else:
        params = MultiDict(parse_qsl(request.body.decode(), keep_blank_values=True))
    return {"X-Twilio-Signature": RequestValidator(AUTH_TOKEN).compute_signature(request.url, params)}


def messages_api_problems(request: Recorded) -> list[str]:
    """What the Messages API would refuse in a send."""
    if request.path != f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json":
        return [f"not the account's Messages resource: {request.path}"]
    if request.headers.get("content-type") != "application/x-www-form-urlencoded":
        return [f"not a form: {request.headers.get('content-type')}"]
    fields = dict(parse_qsl(request.text, keep_blank_values=True))
    problems = []
    if not fields.get("To", "").startswith("whatsapp:+") or not fields["To"][10:].isdigit():
        problems.append(f"To is {fields.get('To')!r}, not whatsapp:+<digits>")
    if "From" not in fields and "MessagingServiceSid" not in fields:
        problems.append("neither From nor MessagingServiceSid")
    if not (fields.get("Body") or fields.get("MediaUrl") or fields.get("ContentSid")):
        problems.append("no Body, MediaUrl or ContentSid")
    if len(fields.get("Body", "")) > 1600:
        problems.append("Body over 1600 characters")
    if "ContentVariables" in fields:
        variables = json.loads(fields["ContentVariables"])
        if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
            problems.append("ContentVariables is not a JSON object of strings")
    return problems


async def store_template(provider: Provider) -> None:
    """The template the outbound cases send, as ``wahub templates sync`` stores it
    (inbound cases run without a database)."""
    if getattr(provider.hub, "storage", None) is None:
        return
    template = Template("order_ready", "en", "UTILITY", "APPROVED")
    components = [{"type": "BODY", "text": "Hi {{1}}, order {{2}} is ready"}]
    await provider.hub.storage.policy.upsert_template(
        provider.name, template, components=components, external_id=CONTENT_SID
    )


FIXTURES = Path(__file__).parent / "twilio"
CONFIG = {
    "platform": "twilio",
    "name": "main",
    "account_sid": ACCOUNT_SID,
    "auth_token": AUTH_TOKEN,
    "from": "whatsapp:+15550783881",
    "public_base_url": "https://hooks.example.com",
}
SIGNED_FORM = {"sign": True, "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
#: The fields of every message a user sends, as Twilio posts them.
MESSAGE_FORM = {
    "SmsMessageSid": "SM" + "1" * 32,
    "SmsSid": "SM" + "1" * 32,
    "MessageSid": "SM" + "1" * 32,
    "SmsStatus": "received",
    "AccountSid": ACCOUNT_SID,
    "To": "whatsapp:+15550783881",
    "From": "whatsapp:+16505551234",
    "WaId": "16505551234",
    "ProfileName": "Ana",
    "NumMedia": "0",
    "NumSegments": "1",
    "ApiVersion": "2010-04-01",
}
#: The fields of every status callback.
STATUS_FORM = {
    "ChannelPrefix": "whatsapp",
    "ApiVersion": "2010-04-01",
    "SmsSid": "SM" + "7" * 32,
    "MessageSid": "SM" + "7" * 32,
    "ChannelInstallSid": "XE" + "0" * 32,
    "AccountSid": ACCOUNT_SID,
    "From": "whatsapp:+15550783881",
    "To": "whatsapp:+16505551234",
    "ChannelToAddress": "+16505551234",
}

test_twilio_messages = contract_tests(
    TwilioProvider,
    fixtures=FIXTURES / "inbound_messages.yaml",
    config=CONFIG,
    signer=sign_as_twilio,
    defaults={"inbound": {**SIGNED_FORM, "body_form": MESSAGE_FORM}},
)

test_twilio_statuses = contract_tests(
    TwilioProvider,
    fixtures=FIXTURES / "inbound_statuses.yaml",
    config=CONFIG,
    signer=sign_as_twilio,
    defaults={"inbound": {**SIGNED_FORM, "body_form": STATUS_FORM}},
)

test_twilio = contract_tests(
    TwilioProvider,
    fixtures=[FIXTURES / "inbound_signatures.yaml", FIXTURES / "outbound.yaml", FIXTURES / "errors.yaml"],
    config=CONFIG,
    base_url_key="api_base",
    check_request=messages_api_problems,
    setup=store_template,
    signer=sign_as_twilio,
    defaults={
        "outbound": {
            "request": {
                "method": "POST",
                "path": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json",
                "headers": {
                    "Authorization": "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode(),
                    "Content-Type": "application/x-www-form-urlencoded",
                },
            }
        }
    },
)
