"""Canonical events as a billing engine without an adapter would send them to
``/api/v1/sources/<source>/events/``: for the demo and the tests. Each builder returns the request
body; ``headers`` signs it."""

from __future__ import annotations

import copy
import json
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

from apps.sources import canonical


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:14]}"


def revision() -> int:
    """Milliseconds since the epoch: later changes get higher revisions."""
    return time.time_ns() // 1_000_000


def event(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": kind, "schema_version": 1, "data": data}


def headers(body: bytes, secret: str, key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "Idempotency-Key": key,
        canonical.SIGNATURE_HEADER: canonical.sign(body, secret),
    }


def line(
    amount: int,
    *,
    quantity: int = 1,
    description: str = "Pro plan",
    product: str = "prod_pro",
    price: str = "price_pro_monthly",
    tax: int = 0,
) -> dict[str, Any]:
    return {
        "id": uid("il"),
        "description": description,
        "quantity": str(quantity),
        "unit_amount_minor": amount // quantity,
        "amount_minor": amount,
        "tax_minor": tax,
        "product_id": product,
        "price_id": price,
    }


def invoice(
    customer_id: str,
    lines: list[dict[str, Any]],
    *,
    currency: str = "USD",
    customer_name: str = "ACME Corp",
    invoice_date: date | None = None,
) -> dict[str, Any]:
    subtotal = sum(item["amount_minor"] for item in lines)
    tax = sum(item["tax_minor"] for item in lines)
    today = invoice_date or datetime.now(UTC).date()
    return {
        "id": uid("inv"),
        "revision": revision(),
        "number": f"API-{uuid.uuid4().hex[:8].upper()}",
        "customer": {"id": customer_id, "name": customer_name, "email": "ap@acme.example", "currency": currency},
        "status": "open",
        "currency": currency,
        "subtotal_minor": subtotal,
        "tax_minor": tax,
        "total_minor": subtotal + tax,
        "amount_paid_minor": 0,
        "invoice_date": today.isoformat(),
        "due_date": today.isoformat(),
        "lines": lines,
    }


def changed(document: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The same document, changed and with a higher revision."""
    return {**copy.deepcopy(document), **changes, "revision": max(revision(), document["revision"] + 1)}


def voided(obj: dict[str, Any]) -> dict[str, Any]:
    return changed(obj, status="void", status_date=datetime.now(UTC).date().isoformat())


def uncollectible(obj: dict[str, Any], *, amount_paid: int = 0) -> dict[str, Any]:
    return changed(
        obj, status="uncollectible", amount_paid_minor=amount_paid, status_date=datetime.now(UTC).date().isoformat()
    )


def payment(customer_id: str, applications: list[tuple[str, int]], *, amount: int | None = None) -> dict[str, Any]:
    return {
        "id": uid("pay"),
        "revision": revision(),
        "customer_id": customer_id,
        "currency": "USD",
        "amount_minor": amount if amount is not None else sum(applied for _, applied in applications),
        "method": "card",
        "settled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "applications": [{"invoice_id": invoice_id, "amount_minor": applied} for invoice_id, applied in applications],
    }


def credit_memo(
    obj: dict[str, Any], credits: list[tuple[int, int]], *, custom: int = 0, refunded: int = 0
) -> dict[str, Any]:
    """A credit memo of ``credits`` (invoice line index, amount) and ``custom`` more as goodwill."""
    lines = [
        {
            "id": uid("cnl"),
            "description": obj["lines"][index]["description"],
            "quantity": "1",
            "unit_amount_minor": amount,
            "amount_minor": amount,
            "tax_minor": 0,
            "invoice_line_id": obj["lines"][index]["id"],
        }
        for index, amount in credits
    ]
    if custom:
        lines.append(
            {
                "description": "Goodwill credit",
                "quantity": "1",
                "unit_amount_minor": custom,
                "amount_minor": custom,
                "tax_minor": 0,
            }
        )
    subtotal = sum(item["amount_minor"] for item in lines)
    return {
        "id": uid("cm"),
        "revision": revision(),
        "number": f"API-CM-{uuid.uuid4().hex[:8].upper()}",
        "customer_id": obj["customer"]["id"],
        "invoice_id": obj["id"],
        "status": "issued",
        "currency": obj["currency"],
        "subtotal_minor": subtotal,
        "tax_minor": 0,
        "total_minor": subtotal,
        "memo_date": datetime.now(UTC).date().isoformat(),
        "reason": "Service credit",
        "refunded_minor": refunded,
        "lines": lines,
    }


def body(kind: str, data: dict[str, Any]) -> bytes:
    return json.dumps(event(kind, data)).encode()
