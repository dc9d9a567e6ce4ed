"""Sample Chargebee (API v2) webhook events for the demo and the tests, with ids, amounts and dates
that add up, and the Basic credentials Chargebee sends.

Shapes follow Chargebee's API v2 reference: the Event object and its webhook sample payloads
(apidocs.chargebee.com/docs/api/events, .../events/webhook/payment_refunded), Customers
(.../docs/api/customers), Invoices (.../docs/api/invoices, .../invoices/write-off-an-invoice),
Credit notes (.../docs/api/credit_notes), Transactions (.../docs/api/transactions: ``amount_unused``,
``linked_invoices``, ``refunded_txn_id``, ``payment_method`` ``chargeback``), the event types'
descriptions (``transaction_updated``: "when an excess payment is applied on an invoice"), and the
field lists of Chargebee's data catalog (datacatalog.chargebee.com/invoice_line_items).
"""

from __future__ import annotations

import base64
import copy
import time
import uuid
from typing import Any

CURRENCY = "USD"


def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


def now_ms() -> int:
    """A resource_version: milliseconds, higher for every later change."""
    return time.time_ns() // 1_000_000


def basic_auth_header(secret: str) -> str:
    """The Authorization header Chargebee sends for a webhook protected by ``username:password``."""
    return "Basic " + base64.b64encode(secret.encode("utf-8")).decode("ascii")


def headers(secret: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Authorization": basic_auth_header(secret)}


def event(
    event_type: str, content: dict[str, Any], *, occurred_at: int | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return {
        "id": event_id or uid("ev"),
        "occurred_at": occurred_at or int(time.time()),
        "source": "api",
        "object": "event",
        "api_version": "v2",
        "event_type": event_type,
        "webhook_status": "scheduled",
        "content": content,
    }


def billing_address(company: str = "ACME Corp") -> dict[str, Any]:
    return {
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": "ap@acme.example",
        "company": company,
        "line1": "1 Main St",
        "line2": "Suite 400",
        "city": "Springfield",
        "state_code": "IL",
        "state": "Illinois",
        "country": "US",
        "zip": "62701",
        "validation_status": "not_validated",
        "object": "billing_address",
    }


def customer(
    customer_id: str | None = None,
    *,
    company: str = "ACME Corp",
    email: str = "ap@acme.example",
    net_term_days: int = 30,
    vat_number: str | None = None,
) -> dict[str, Any]:
    now = int(time.time())
    obj: dict[str, Any] = {
        "id": customer_id or uid("cust"),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "email": email,
        "company": company,
        "auto_collection": "on",
        "net_term_days": net_term_days,
        "allow_direct_debit": False,
        "created_at": now,
        "taxability": "taxable",
        "updated_at": now,
        "pii_cleared": "active",
        "channel": "web",
        "resource_version": now_ms(),
        "deleted": False,
        "object": "customer",
        "billing_address": billing_address(company),
        "card_status": "valid",
        "preferred_currency_code": CURRENCY,
        "promotional_credits": 0,
        "refundable_credits": 0,
        "excess_payments": 0,
        "unbilled_charges": 0,
    }
    if vat_number:
        obj["vat_number"] = vat_number
    return obj


def line_item(
    unit_amount: int,
    *,
    quantity: int = 1,
    description: str = "Pro Plan - Monthly",
    entity_type: str = "plan_item_price",
    entity_id: str | None = "pro-USD-monthly",
    tax: int = 0,
    discount: int = 0,
    date_from: int | None = None,
    date_to: int | None = None,
    customer_id: str = "",
) -> dict[str, Any]:
    start = date_from or int(time.time())
    item: dict[str, Any] = {
        "id": uid("li"),
        "date_from": start,
        "date_to": date_to or start + 30 * 86400,
        "unit_amount": unit_amount,
        "quantity": quantity,
        "amount": unit_amount * quantity,
        "pricing_model": "per_unit",
        "is_taxed": tax > 0,
        "tax_amount": tax,
        "discount_amount": discount,
        "item_level_discount_amount": discount,
        "description": description,
        "entity_type": entity_type,
        "customer_id": customer_id,
        "object": "line_item",
    }
    if entity_id is not None:
        item["entity_id"] = entity_id
    return item


def invoice(
    customer_id: str,
    lines: list[dict[str, Any]],
    *,
    invoice_id: str | None = None,
    status: str = "payment_due",
    date: int | None = None,
    net_term_days: int = 30,
    currency: str = CURRENCY,
) -> dict[str, Any]:
    """An invoice as Chargebee generates it. ``status`` paid means fully paid at generation."""
    issued = date or int(time.time())
    sub_total = sum(item["amount"] for item in lines)
    discounts = sum(item["discount_amount"] for item in lines)
    tax = sum(item["tax_amount"] for item in lines)
    total = sub_total - discounts + tax
    paid = total if status == "paid" else 0
    return {
        "id": invoice_id or f"INV-{uuid.uuid4().hex[:8].upper()}",
        "customer_id": customer_id,
        "recurring": True,
        "status": status,
        "price_type": "tax_exclusive",
        "date": issued,
        "due_date": issued + net_term_days * 86400,
        "net_term_days": net_term_days,
        "exchange_rate": 1.0,
        "currency_code": currency,
        "base_currency_code": currency,
        "sub_total": sub_total,
        "tax": tax,
        "total": total,
        "amount_paid": paid,
        "amount_adjusted": 0,
        "write_off_amount": 0,
        "credits_applied": 0,
        "amount_due": total - paid,
        "amount_to_collect": total - paid,
        "round_off_amount": 0,
        "paid_at": issued + 60 if paid else None,
        "resource_version": now_ms(),
        "updated_at": issued,
        "first_invoice": False,
        "has_advance_charges": False,
        "term_finalized": True,
        "is_gifted": False,
        "deleted": False,
        "object": "invoice",
        "line_items": [dict(item, customer_id=customer_id) for item in lines],
        "discounts": (
            [{"amount": discounts, "description": "Launch coupon", "entity_type": "item_level_coupon"}]
            if discounts
            else []
        ),
        "taxes": [{"name": "IL Sales Tax", "amount": tax, "description": "IL Sales Tax @ 6.25%"}] if tax else [],
        "line_item_taxes": [],
        "linked_payments": [],
        "applied_credits": [],
        "adjustment_credit_notes": [],
        "issued_credit_notes": [],
        "linked_orders": [],
        "dunning_attempts": [],
        "billing_address": billing_address(),
    }


def changed(obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """The object after a later change in Chargebee: a copy with a higher resource_version."""
    later = copy.deepcopy(obj)
    later.update(fields)
    later["resource_version"] = max(now_ms(), int(obj.get("resource_version") or 0) + 1)
    later["updated_at"] = later["resource_version"] // 1000
    return later


def transaction(
    customer_id: str,
    amount: int,
    applied_to: list[tuple[str, int]],
    *,
    txn_id: str | None = None,
    payment_method: str = "card",
    date: int | None = None,
    currency: str = CURRENCY,
) -> dict[str, Any]:
    """A successful payment; ``applied_to`` is [(invoice id, amount applied to it)]."""
    when = date or int(time.time())
    return {
        "id": txn_id or uid("txn"),
        "customer_id": customer_id,
        "payment_method": payment_method,
        "gateway": "stripe",
        "gateway_account_id": "gw_stripe_main",
        "id_at_gateway": uid("ch"),
        "type": "payment",
        "date": when,
        "settled_at": when,
        "exchange_rate": 1.0,
        "currency_code": currency,
        "base_currency_code": currency,
        "amount": amount,
        "amount_unused": amount - sum(applied for _, applied in applied_to),
        "status": "success",
        "masked_card_number": "************4242",
        "resource_version": now_ms(),
        "updated_at": when,
        "deleted": False,
        "object": "transaction",
        "linked_invoices": [
            {
                "invoice_id": invoice_id,
                "applied_amount": applied,
                "applied_at": when,
                "invoice_date": when,
                "invoice_status": "paid",
            }
            for invoice_id, applied in applied_to
        ],
        "linked_refunds": [],
    }


def credit_note(
    invoice_obj: dict[str, Any],
    lines: list[dict[str, Any]],
    *,
    credit_note_id: str | None = None,
    refunded: int = 0,
    credit_type: str = "refundable",
    reason_code: str = "product_unsatisfactory",
    create_reason_code: str = "Product Unsatisfactory",
) -> dict[str, Any]:
    """A credit note against ``invoice_obj``; ``refunded`` of it paid back to the customer."""
    now = int(time.time())
    sub_total = sum(item["amount"] for item in lines)
    tax = sum(item["tax_amount"] for item in lines)
    total = sub_total - sum(item["discount_amount"] for item in lines) + tax
    if credit_type == "adjustment":
        status = "adjusted"
    else:
        status = "refunded" if refunded and refunded >= total else "refund_due"
    return {
        "id": credit_note_id or f"CN-{uuid.uuid4().hex[:8].upper()}",
        "customer_id": invoice_obj["customer_id"],
        "reference_invoice_id": invoice_obj["id"],
        "type": credit_type,
        "reason_code": reason_code,
        "create_reason_code": create_reason_code,
        "status": status,
        "date": now,
        "price_type": "tax_exclusive",
        "exchange_rate": 1.0,
        "currency_code": invoice_obj["currency_code"],
        "base_currency_code": invoice_obj["currency_code"],
        "sub_total": sub_total,
        "total": total,
        "amount_allocated": total if credit_type == "adjustment" else 0,
        "amount_refunded": refunded,
        "amount_available": 0 if credit_type == "adjustment" else total - refunded,
        "refunded_at": now if refunded else None,
        "generated_at": now,
        "resource_version": now_ms(),
        "updated_at": now,
        "round_off_amount": 0,
        "fractional_correction": 0,
        "deleted": False,
        "object": "credit_note",
        "line_items": lines,
        "taxes": [{"name": "IL Sales Tax", "amount": tax}] if tax else [],
        "line_item_taxes": [],
        "line_item_discounts": [],
        "discounts": [],
        "linked_refunds": (
            [{"txn_id": uid("txn"), "applied_amount": refunded, "applied_at": now, "txn_status": "success"}]
            if refunded
            else []
        ),
        "allocations": [],
    }


def credit_line(invoice_line: dict[str, Any], amount: int, *, tax: int = 0, description: str = "") -> dict[str, Any]:
    """A credit note line crediting ``amount`` (excluding tax) of ``invoice_line``."""
    item = line_item(
        amount,
        description=description or f"{invoice_line['description']} - Credit",
        entity_type=invoice_line["entity_type"],
        entity_id=invoice_line.get("entity_id"),
        tax=tax,
        date_from=invoice_line["date_from"],
        date_to=invoice_line["date_to"],
        customer_id=invoice_line.get("customer_id", ""),
    )
    item["reference_line_item_id"] = invoice_line["id"]
    return item


# --- whole events, as the demo sends them -----------------------------------------------------------


def customer_created(obj: dict[str, Any] | None = None) -> dict[str, Any]:
    return event("customer_created", {"customer": obj or customer()})


def invoice_generated(invoice_obj: dict[str, Any], customer_obj: dict[str, Any] | None = None) -> dict[str, Any]:
    content: dict[str, Any] = {"invoice": invoice_obj}
    if customer_obj is not None:
        content["customer"] = customer_obj
    return event("invoice_generated", content)


def payment_succeeded(
    invoice_obj: dict[str, Any], txn: dict[str, Any], customer_obj: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The invoice as it is once ``txn`` paid it, with the transaction that paid it."""
    applied = sum(link["applied_amount"] for link in txn["linked_invoices"] if link["invoice_id"] == invoice_obj["id"])
    paid_so_far = invoice_obj["amount_paid"] + applied
    fully_paid = paid_so_far >= invoice_obj["total"]
    paid = changed(
        invoice_obj,
        amount_paid=paid_so_far,
        amount_due=invoice_obj["total"] - paid_so_far,
        amount_to_collect=invoice_obj["total"] - paid_so_far,
        status="paid" if fully_paid else invoice_obj["status"],
        paid_at=txn["date"] if fully_paid else None,
        linked_payments=[
            *invoice_obj["linked_payments"],
            {
                "txn_id": txn["id"],
                "applied_amount": applied,
                "applied_at": txn["date"],
                "txn_status": "success",
                "txn_date": txn["date"],
                "txn_amount": txn["amount"],
            },
        ],
    )
    content: dict[str, Any] = {"transaction": txn, "invoice": paid}
    if customer_obj is not None:
        content["customer"] = customer_obj
    return event("payment_succeeded", content)


def invoice_voided(invoice_obj: dict[str, Any], *, voided_at: int | None = None) -> dict[str, Any]:
    """Voiding an invoice in Chargebee is reported as invoice_updated."""
    when = voided_at or int(time.time())
    void = changed(
        invoice_obj, status="voided", voided_at=when, void_reason_code="Duplicate", amount_due=0, amount_to_collect=0
    )
    return event("invoice_updated", {"invoice": void}, occurred_at=when)


def credit_note_created(credit_note_obj: dict[str, Any]) -> dict[str, Any]:
    return event("credit_note_created", {"credit_note": credit_note_obj})


def payment_refunded(credit_note_obj: dict[str, Any], refund_amount: int) -> dict[str, Any]:
    refund = {
        "id": uid("txn"),
        "customer_id": credit_note_obj["customer_id"],
        "type": "refund",
        "status": "success",
        "amount": refund_amount,
        "currency_code": credit_note_obj["currency_code"],
        "date": int(time.time()),
        "payment_method": "card",
        "object": "transaction",
        "linked_credit_notes": [
            {
                "cn_id": credit_note_obj["id"],
                "applied_amount": refund_amount,
                "cn_reference_invoice_id": credit_note_obj["reference_invoice_id"],
            }
        ],
    }
    return event("payment_refunded", {"transaction": refund, "credit_note": credit_note_obj})


# --- customer credit (excess payments) --------------------------------------------------------------


def transaction_event(event_type: str, txn: dict[str, Any], **content: Any) -> dict[str, Any]:
    """``transaction_created``, ``transaction_updated`` or ``transaction_deleted`` for ``txn``."""
    return event(event_type, {"transaction": txn, **content})


def excess_applied(
    invoice_obj: dict[str, Any], txn: dict[str, Any], amount: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Chargebee applying ``amount`` of ``txn``'s excess payment to ``invoice_obj``: the invoice and
    the transaction as they are afterwards (``transaction_updated`` reports the transaction)."""
    if amount > txn["amount_unused"]:
        raise ValueError("Chargebee applies at most the transaction's unused amount")
    paid_so_far = invoice_obj["amount_paid"] + amount
    fully_paid = paid_so_far >= invoice_obj["total"]
    invoice_after = changed(
        invoice_obj,
        amount_paid=paid_so_far,
        amount_due=invoice_obj["total"] - paid_so_far,
        amount_to_collect=invoice_obj["total"] - paid_so_far,
        status="paid" if fully_paid else invoice_obj["status"],
        paid_at=int(time.time()) if fully_paid else None,
        linked_payments=[
            *invoice_obj["linked_payments"],
            {
                "txn_id": txn["id"],
                "applied_amount": amount,
                "applied_at": int(time.time()),
                "txn_status": "success",
                "txn_date": txn["date"],
                "txn_amount": txn["amount"],
            },
        ],
    )
    txn_after = changed(
        txn,
        amount_unused=txn["amount_unused"] - amount,
        linked_invoices=[
            *txn["linked_invoices"],
            {
                "invoice_id": invoice_obj["id"],
                "applied_amount": amount,
                "applied_at": int(time.time()),
                "invoice_date": invoice_obj["date"],
                "invoice_status": invoice_after["status"],
            },
        ],
    )
    return invoice_after, txn_after


# --- chargebacks ------------------------------------------------------------------------------------


def chargeback_refund(
    payment_txn: dict[str, Any], amount: int | None = None, *, credit_note_id: str | None = None
) -> dict[str, Any]:
    """The refund transaction Chargebee records for a chargeback on ``payment_txn``; booked against
    a chargeback credit note when ``credit_note_id`` is given."""
    when = int(time.time())
    refunded = payment_txn["amount"] if amount is None else amount
    txn: dict[str, Any] = {
        "id": uid("txn"),
        "customer_id": payment_txn["customer_id"],
        "payment_method": "chargeback",
        "gateway": payment_txn.get("gateway", "stripe"),
        "gateway_account_id": payment_txn.get("gateway_account_id", "gw_stripe_main"),
        "id_at_gateway": uid("dp"),
        "type": "refund",
        "date": when,
        "settled_at": when,
        "exchange_rate": 1.0,
        "currency_code": payment_txn["currency_code"],
        "base_currency_code": payment_txn["currency_code"],
        "amount": refunded,
        "status": "success",
        "refunded_txn_id": payment_txn["id"],
        "resource_version": now_ms(),
        "updated_at": when,
        "deleted": False,
        "object": "transaction",
        "linked_credit_notes": [],
    }
    if credit_note_id:
        txn["linked_credit_notes"] = [
            {
                "cn_id": credit_note_id,
                "applied_amount": refunded,
                "applied_at": when,
                "cn_reason_code": "chargeback",
                "cn_create_reason_code": "Chargeback",
                "cn_date": when,
                "cn_total": refunded,
                "cn_status": "refunded",
            }
        ]
    return txn


def chargeback_lost(invoice_obj: dict[str, Any], payment_txn: dict[str, Any]) -> dict[str, Any]:
    """Chargeback Management's "create credit note and record refund": a refundable credit note
    with reason ``chargeback`` for the whole invoice, refunded to the cardholder, in one
    ``payment_refunded`` event."""
    note_id = f"CN-{uuid.uuid4().hex[:8].upper()}"
    refund = chargeback_refund(payment_txn, credit_note_id=note_id)
    note = credit_note(
        invoice_obj,
        [
            credit_line(line, line["amount"] - line["discount_amount"], tax=line["tax_amount"])
            for line in invoice_obj["line_items"]
        ],
        credit_note_id=note_id,
        refunded=refund["amount"],
        reason_code="chargeback",
        create_reason_code="Chargeback",
    )
    note["linked_refunds"] = [
        {
            "txn_id": refund["id"],
            "applied_amount": refund["amount"],
            "applied_at": refund["date"],
            "txn_status": "success",
        }
    ]
    return event("payment_refunded", {"transaction": refund, "credit_note": note, "invoice": invoice_obj})


def chargeback_removed(refund: dict[str, Any]) -> dict[str, Any]:
    """The chargeback refund deleted in Chargebee (the merchant's step once the chargeback is won)."""
    return transaction_event("transaction_deleted", changed(refund, deleted=True))
