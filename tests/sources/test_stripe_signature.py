import json
import time

import pytest

from apps.sources.base import InvalidPayload, SignatureError
from apps.sources.stripe import parse_envelope, verify_signature
from apps.sources.stripe_samples import customer, event, sign

BODY = json.dumps(event("customer.created", customer())).encode()


def test_a_payload_signed_with_any_active_secret_is_accepted() -> None:
    verify_signature(BODY, sign(BODY, "whsec_old"), ["whsec_new", "whsec_old"], 300)
    verify_signature(BODY, sign(BODY, "whsec_new"), ["whsec_new", "whsec_old"], 300)


def test_a_payload_signed_with_a_retired_secret_is_refused() -> None:
    with pytest.raises(SignatureError, match="No signatures found"):
        verify_signature(BODY, sign(BODY, "whsec_retired"), ["whsec_new"], 300)


def test_a_tampered_payload_is_refused() -> None:
    header = sign(BODY, "whsec_new")
    with pytest.raises(SignatureError):
        verify_signature(BODY.replace(b"ACME", b"EVIL"), header, ["whsec_new"], 300)


def test_a_signature_older_than_the_tolerance_is_stale() -> None:
    header = sign(BODY, "whsec_new", int(time.time()) - 301)
    with pytest.raises(SignatureError, match="Stale webhook"):
        verify_signature(BODY, header, ["whsec_new"], 300)


def test_missing_header_or_secret_is_refused_with_a_reason() -> None:
    with pytest.raises(SignatureError, match="Missing Stripe-Signature"):
        verify_signature(BODY, None, ["whsec_new"], 300)
    with pytest.raises(SignatureError, match="No webhook secret"):
        verify_signature(BODY, sign(BODY, "x"), [], 300)
    with pytest.raises(SignatureError):
        verify_signature(BODY, "garbage", ["whsec_new"], 300)


def test_envelope_must_be_a_stripe_event() -> None:
    assert parse_envelope(BODY)["type"] == "customer.created"
    with pytest.raises(InvalidPayload, match="not valid JSON"):
        parse_envelope(b"{nope")
    with pytest.raises(InvalidPayload, match="evt_"):
        parse_envelope(json.dumps({"id": "x", "type": "y", "data": {"object": {}}}).encode())
