"""Fields of raw billing payloads that only integration engineers may read: personal data and
payment instrument details. Finance works from the canonical records, which keep what it needs."""

from __future__ import annotations

import json
from typing import Any

SENSITIVE_KEYS = frozenset(
    {
        "email",
        "customer_email",
        "receipt_email",
        "phone",
        "customer_phone",
        "address",
        "customer_address",
        "shipping",
        "customer_shipping",
        "shipping_details",
        "billing_details",
        "tax_id",
        "tax_ids",
        "customer_tax_ids",
        "card",
        "payment_method_details",
        "bank_account",
        "fingerprint",
        "last4",
        "iban",
        "client_secret",
    }
)
MASK = "•••• hidden (sensitive)"


def redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            key: (MASK if key in SENSITIVE_KEYS and item not in (None, "", [], {}) else redact(item))
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


def readable_body(body: str, *, sensitive_allowed: bool) -> str:
    """The stored body, pretty-printed; masked unless the reader may see sensitive fields."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body if sensitive_allowed else MASK
    return json.dumps(payload if sensitive_allowed else redact(payload), indent=2, ensure_ascii=False)
