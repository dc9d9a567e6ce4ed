"""Sample Stripe events for the demo and the tests: shaped like Stripe's published fixtures (the
newer API shape), with ids, amounts and dates that add up, signed the way Stripe signs them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signature = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={signature}"


def event(
    event_type: str, obj: dict[str, Any], *, created: int | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or uid("evt"),
        "object": "event",
        "api_version": "2025-03-31.basil",
        "created": created or int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": obj},
    }


def customer(
    customer_id: str | None = None, *, name: str = "ACME Corp", email: str = "ap@acme.example"
) -> dict[str, Any]:
    return {
        "id": customer_id or uid("cus"),
        "object": "customer",
        "address": {
            "city": "Springfield",
            "country": "US",
            "line1": "1 Main St",
            "line2": None,
            "postal_code": "12345",
            "state": "IL",
        },
        "balance": 0,
        "created": int(time.time()),
        "currency": "usd",
        "email": email,
        "name": name,
        "metadata": {},
        "shipping": None,
        "tax_exempt": "none",
    }


def line(
    amount: int,
    *,
    quantity: int = 1,
    description: str = "Pro plan",
    product: str = "prod_pro",
    price: str = "price_pro_monthly",
    tax: int = 0,
    product_line: str = "",
) -> dict[str, Any]:
    """``product_line``: the product comes expanded, with its product line in its metadata."""
    now = int(time.time())
    product_field: str | dict[str, Any] = product
    if product_line:
        product_field = {
            "id": product,
            "object": "product",
            "name": description,
            "metadata": {"product_line": product_line},
        }
    return {
        "id": uid("il"),
        "object": "line_item",
        "amount": amount,
        "currency": "usd",
        "description": description,
        "quantity": quantity,
        "period": {"start": now, "end": now + 30 * 86400},
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price, "product": product_field},
            "unit_amount_decimal": str(amount // quantity),
        },
        "taxes": [{"amount": tax, "tax_behavior": "exclusive", "taxability_reason": "standard_rated"}] if tax else [],
    }


def invoice(
    customer_id: str,
    lines: list[dict[str, Any]],
    *,
    invoice_id: str | None = None,
    status: str = "open",
    number: str | None = None,
    customer_name: str = "ACME Corp",
    payment_intent: str | None = None,
    payment_method_types: list[str] | None = None,
) -> dict[str, Any]:
    """``payment_method_types``: the invoice's payment settings (``["customer_balance"]`` for an
    invoice paid by bank transfer); None takes the account's defaults, as Stripe does."""
    subtotal = sum(item["amount"] for item in lines)
    tax = sum(t["amount"] for item in lines for t in item["taxes"])
    total = subtotal + tax
    now = int(time.time())
    paid = status == "paid"
    obj: dict[str, Any] = {
        "id": invoice_id or uid("in"),
        "object": "invoice",
        "number": number or f"HUB-{uuid.uuid4().hex[:8].upper()}",
        "customer": customer_id,
        "customer_name": customer_name,
        "customer_email": "ap@acme.example",
        "customer_address": {
            "city": "Springfield",
            "country": "US",
            "line1": "1 Main St",
            "line2": None,
            "postal_code": "12345",
            "state": "IL",
        },
        "customer_tax_ids": [],
        "currency": "usd",
        "status": status,
        "collection_method": "charge_automatically",
        "created": now - 60,
        "effective_at": now - 30,
        "due_date": None,
        "period_start": now - 30 * 86400,
        "period_end": now,
        "subtotal": subtotal,
        "total": total,
        "total_taxes": [{"amount": tax, "tax_behavior": "exclusive"}] if tax else [],
        "amount_due": total,
        "amount_paid": total if paid else 0,
        "amount_overpaid": 0,
        "amount_remaining": 0 if paid else total,
        "starting_balance": 0,
        "ending_balance": 0,
        "payment_settings": {"default_mandate": None, "payment_method_types": payment_method_types},
        "status_transitions": {
            "finalized_at": now - 30,
            "paid_at": now if paid else None,
            "voided_at": None,
            "marked_uncollectible_at": None,
        },
        "lines": {"object": "list", "data": lines, "has_more": False},
    }
    if paid:
        obj["payments"] = {
            "object": "list",
            "data": [
                {
                    "object": "invoice_payment",
                    "amount_paid": total,
                    "status": "paid",
                    "payment": {"type": "payment_intent", "payment_intent": payment_intent or uid("pi")},
                }
            ],
        }
    return obj


def paid(
    invoice_obj: dict[str, Any], payment_intent: str | None = None, amount_paid: int | None = None
) -> dict[str, Any]:
    """The same invoice as Stripe sends it in invoice.paid: its amount due paid by one PaymentIntent.
    ``amount_paid`` beyond the amount due is an over-payment (``amount_overpaid``), which Stripe
    credits to the customer's credit balance."""
    obj = json.loads(json.dumps(invoice_obj))
    now = int(time.time())
    due = obj["amount_due"]
    received = due if amount_paid is None else amount_paid
    obj["status"] = "paid"
    obj["amount_paid"] = received
    obj["amount_overpaid"] = max(received - due, 0)
    obj["amount_remaining"] = 0
    obj["status_transitions"]["paid_at"] = now
    obj["payments"] = {
        "object": "list",
        "data": [
            {
                "object": "invoice_payment",
                "amount_paid": received,
                "amount_requested": due,
                "status": "paid",
                "payment": {"type": "payment_intent", "payment_intent": payment_intent or uid("pi")},
            }
        ],
    }
    return obj


def with_credit_balance(invoice_obj: dict[str, Any], credit: int) -> dict[str, Any]:
    """The same invoice as Stripe finalizes it for a customer whose credit balance holds ``credit``
    (minor units): Stripe takes what it can of the credit, and the rest of the total is due."""
    obj = json.loads(json.dumps(invoice_obj))
    taken = min(credit, obj["total"])
    obj["starting_balance"] = -credit
    obj["ending_balance"] = -(credit - taken)
    obj["amount_due"] = obj["total"] - taken
    obj["amount_remaining"] = obj["amount_due"] - obj["amount_paid"]
    if obj["amount_due"] == 0:  # the credit paid it all: Stripe marks it paid at finalization
        obj["status"] = "paid"
        obj["status_transitions"]["paid_at"] = obj["status_transitions"]["finalized_at"]
    return obj


def voided(invoice_obj: dict[str, Any]) -> dict[str, Any]:
    """The same invoice as Stripe sends it in invoice.voided."""
    obj = json.loads(json.dumps(invoice_obj))
    obj["status"] = "void"
    obj["amount_remaining"] = 0
    obj["status_transitions"]["voided_at"] = int(time.time())
    return obj


def uncollectible(invoice_obj: dict[str, Any], amount_paid: int = 0) -> dict[str, Any]:
    """The same invoice as Stripe sends it in invoice.marked_uncollectible, after ``amount_paid``."""
    obj = json.loads(json.dumps(invoice_obj))
    obj["status"] = "uncollectible"
    obj["amount_paid"] = amount_paid
    obj["amount_remaining"] = obj["total"] - amount_paid
    obj["status_transitions"]["marked_uncollectible_at"] = int(time.time())
    return obj


def credit_note(
    invoice_obj: dict[str, Any],
    credits: list[tuple[int, int]],
    *,
    custom: int = 0,
    reason: str = "order_change",
    refunded: int = 0,
) -> dict[str, Any]:
    """A credit note on ``invoice_obj`` as Stripe sends it in credit_note.created: ``credits`` is
    (index of the invoice line, amount credited) pairs; ``custom`` adds a goodwill line;
    ``refunded`` is the part paid back to the card (a post-payment credit note)."""
    now = int(time.time())
    lines = []
    invoice_lines = invoice_obj["lines"]["data"]
    for index, amount in credits:
        credited = invoice_lines[index]
        lines.append(
            {
                "id": uid("cnli"),
                "object": "credit_note_line_item",
                "type": "invoice_line_item",
                "invoice_line_item": credited["id"],
                "amount": amount,
                "description": credited["description"],
                "quantity": 1,
                "unit_amount": None,
                "taxes": [],
            }
        )
    if custom:
        lines.append(
            {
                "id": uid("cnli"),
                "object": "credit_note_line_item",
                "type": "custom_line_item",
                "amount": custom,
                "description": "Service credit",
                "quantity": 1,
                "unit_amount": custom,
                "taxes": [],
            }
        )
    total = sum(line["amount"] for line in lines)
    return {
        "id": uid("cn"),
        "object": "credit_note",
        "amount": total,
        "currency": invoice_obj["currency"],
        "customer": invoice_obj["customer"],
        "invoice": invoice_obj["id"],
        "number": f"{invoice_obj.get('number') or 'INV'}-CN-01",
        "lines": {"object": "list", "data": lines, "has_more": False},
        "memo": None,
        "reason": reason,
        "status": "issued",
        "subtotal": total,
        "subtotal_excluding_tax": total,
        "total": total,
        "total_excluding_tax": total,
        "type": "post_payment" if refunded else "pre_payment",
        "created": now,
        "effective_at": now,
        "voided_at": None,
        "refunds": [{"amount_refunded": refunded, "refund": uid("re"), "type": "refund"}] if refunded else [],
        "livemode": False,
    }


def payment_intent(customer_id: str, invoice_id: str, amount: int, currency: str = "usd") -> dict[str, Any]:
    """A succeeded PaymentIntent paying ``amount`` of the invoice (payment_intent.succeeded)."""
    return {
        "id": uid("pi"),
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": currency,
        "customer": customer_id,
        "invoice": invoice_id,
        "status": "succeeded",
        "payment_method_types": ["card"],
        "created": int(time.time()),
        "livemode": False,
    }


def cash_balance_transaction(
    customer_id: str,
    kind: str,
    net_amount: int,
    *,
    ending_balance: int,
    payment_intent: str | None = None,
    reference: str = "",
    currency: str = "usd",
) -> dict[str, Any]:
    """A CustomerCashBalanceTransaction as Stripe sends it in customer_cash_balance_transaction.created,
    shaped as Stripe's published fixture: ``kind`` funded (a US bank transfer came in), or
    applied_to_payment (``payment_intent`` was paid from the cash balance; ``net_amount`` negative),
    or any other type Stripe names."""
    obj: dict[str, Any] = {
        "id": uid("ccsbtxn"),
        "object": "customer_cash_balance_transaction",
        "created": int(time.time()),
        "currency": currency,
        "customer": customer_id,
        "ending_balance": ending_balance,
        "livemode": False,
        "net_amount": net_amount,
        "type": kind,
    }
    if kind == "funded":
        obj["funded"] = {
            "bank_transfer": {
                "reference": reference or f"REF-{uuid.uuid4().hex[:6].upper()}",
                "type": "us_bank_transfer",
                "us_bank_transfer": {"network": "ach", "sender_name": "ACME Corp"},
            }
        }
    elif kind in ("applied_to_payment", "unapplied_from_payment"):
        obj[kind] = {"payment_intent": payment_intent or uid("pi")}
    return obj


def bank_transfer_intent(customer_id: str, amount: int, currency: str = "usd") -> dict[str, Any]:
    """A succeeded PaymentIntent paid from the customer's cash balance (newer API: no ``invoice``)."""
    return {
        "id": uid("pi"),
        "object": "payment_intent",
        "amount": amount,
        "amount_received": amount,
        "currency": currency,
        "customer": customer_id,
        "status": "succeeded",
        "payment_method_types": ["customer_balance"],
        "created": int(time.time()),
        "livemode": False,
    }


DEMO_CUSTOMERS = (
    ("Acme Corporation", "ap@acme.example"),
    ("Globex Inc.", "billing@globex.example"),
    ("Initech LLC", "finance@initech.example"),
)


def demo_stream() -> list[dict[str, Any]]:
    """A short, realistic stream: customers, invoices finalized, most of them paid, one paid
    before its finalization event arrives (as Stripe can deliver them)."""
    events: list[dict[str, Any]] = []
    now = int(time.time())
    for index, (name, email) in enumerate(DEMO_CUSTOMERS):
        cus = customer(uid("cus"), name=name, email=email)
        events.append(event("customer.created", cus, created=now - 300 + index))
        lines = [line(4900, description="Pro plan (monthly)")]
        if index != 1:
            lines.append(
                line(
                    1250,
                    quantity=5,
                    description="API calls, 5 blocks of 10,000",
                    product="prod_usage_api_calls",
                    price="price_api_block",
                )
            )
        inv = invoice(cus["id"], lines, customer_name=name)
        finalized = event("invoice.finalized", inv, created=now - 200 + index)
        paid_event = event("invoice.paid", paid(inv), created=now - 100 + index)
        if index == 2:
            events += [paid_event, finalized]  # delivered out of order
        elif index == 1:
            events.append(finalized)  # left open: not paid yet
        else:
            events += [finalized, paid_event]
    return events


def dispute(
    payment_intent: dict[str, Any], *, status: str = "needs_response", reason: str = "fraudulent"
) -> dict[str, Any]:
    """A Dispute on ``payment_intent``'s charge, shaped as Stripe's published dispute fixture.
    ``status``: warning_needs_response (an inquiry), needs_response, under_review, won or lost."""
    now = int(time.time())
    withdrawn = not status.startswith("warning_")
    transactions = []
    if withdrawn:
        transactions.append({"id": uid("txn"), "object": "balance_transaction", "amount": -payment_intent["amount"]})
    if status == "won":
        transactions.append({"id": uid("txn"), "object": "balance_transaction", "amount": payment_intent["amount"]})
    return {
        "id": uid("dp"),
        "object": "dispute",
        "amount": payment_intent["amount"],
        "balance_transactions": transactions,
        "charge": uid("ch"),
        "created": now,
        "currency": payment_intent["currency"],
        "evidence_details": {"due_by": now + 7 * 86400, "has_evidence": False, "past_due": False},
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": payment_intent["id"],
        "payment_method_details": {"card": {"brand": "visa", "case_type": "chargeback"}, "type": "card"},
        "reason": reason,
        "status": status,
    }


def dispute_closed(dispute_obj: dict[str, Any], status: str) -> dict[str, Any]:
    """The same dispute once decided: ``status`` won (funds reinstated) or lost."""
    obj = json.loads(json.dumps(dispute_obj))
    obj["status"] = status
    if status == "won":
        obj["balance_transactions"].append(
            {"id": uid("txn"), "object": "balance_transaction", "amount": dispute_obj["amount"]}
        )
    return obj


def subscription(
    customer_id: str,
    prices: list[str],
    *,
    status: str = "active",
    period_start: int | None = None,
    days: int = 30,
    cancel_at_period_end: bool = False,
    subscription_id: str | None = None,
) -> dict[str, Any]:
    """A Subscription as newer API versions send it: the current period on each item."""
    start = period_start or int(time.time())
    sub_id = subscription_id or uid("sub")
    return {
        "id": sub_id,
        "object": "subscription",
        "customer": customer_id,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "collection_method": "charge_automatically",
        "currency": "usd",
        "created": start,
        "start_date": start,
        "livemode": False,
        "metadata": {},
        "items": {
            "object": "list",
            "data": [
                {
                    "id": uid("si"),
                    "object": "subscription_item",
                    "subscription": sub_id,
                    "price": {"id": price, "object": "price", "product": "prod_pro", "currency": "usd"},
                    "quantity": 1,
                    "current_period_start": start,
                    "current_period_end": start + days * 86400,
                }
                for price in prices
            ],
        },
    }
