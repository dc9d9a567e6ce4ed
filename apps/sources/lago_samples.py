"""Sample Lago webhooks for the demo and the tests, with amounts that add up the way Lago computes
them, signed the way Lago signs them (HMAC, or an RS256 JWT with a key pair made at run time).

Shapes from Lago's documentation:
- https://getlago.com/docs/api-reference/webhooks/format---signature (envelope, X-Lago-* headers)
- https://getlago.com/docs/api-reference/webhooks/messages (webhook types and their objects)
- https://getlago.com/docs/api-reference/invoices/invoice-object (invoice and fee objects)
- https://getlago.com/docs/api-reference/credit-notes/credit-note-object
- https://getlago.com/docs/api-reference/customers/object
- https://getlago.com/docs/api-reference/payments/payment-object (payment.succeeded)
- https://getlago.com/docs/api-reference/payment-receipts/payment-receipt-object (payment_receipt.created)
- https://getlago.com/docs/api-reference/invoices/lose-dispute (invoice.payment_dispute_lost)
- https://getlago.com/docs/api-reference/wallets/wallet-transaction-object (prepaid credits bought on a
  credit invoice)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from apps.sources import lago

LAGO_API_URL = "https://api.getlago.com"
ORGANIZATION_ID = "1a901a90-1a90-1a90-1a90-1a901a901a90"


def uid() -> str:
    return str(uuid.uuid4())


def timestamp(moment: datetime | None = None) -> str:
    """Lago's time format: ISO 8601 in UTC to the second."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cents(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- objects -------------------------------------------------------------------------------------


def customer(
    *,
    lago_id: str | None = None,
    external_id: str | None = None,
    name: str = "ACME Corp",
    legal_name: str | None = "ACME Corporation Inc.",
    email: str = "ap@acme.example",
    currency: str | None = "USD",
    net_payment_term: int | None = 30,
    updated_at: str | None = None,
    payment_provider: str | None = "stripe",
) -> dict[str, Any]:
    now = timestamp()
    return {
        "lago_id": lago_id or uid(),
        "billing_entity_code": "acme_us",
        "external_id": external_id or f"cust_{uuid.uuid4().hex[:12]}",
        "account_type": "customer",
        "name": name,
        "firstname": None,
        "lastname": None,
        "customer_type": "company",
        "sequential_id": 1,
        "slug": "LAG-1234-001",
        "created_at": now,
        "updated_at": updated_at or now,
        "country": "US",
        "address_line1": "5230 Penfield Ave",
        "address_line2": None,
        "state": "CA",
        "zipcode": "91364",
        "email": email,
        "city": "Woodland Hills",
        "url": None,
        "phone": None,
        "logo_url": None,
        "legal_name": legal_name,
        "legal_number": "49-008-2965",
        "currency": currency,
        "tax_identification_number": "US123456789",
        "timezone": None,
        "applicable_timezone": "UTC",
        "net_payment_term": net_payment_term,
        "external_salesforce_id": None,
        "finalize_zero_amount_invoice": "inherit",
        "billing_configuration": {
            "invoice_grace_period": 3,
            "payment_provider": payment_provider,
            "payment_provider_code": f"{payment_provider}-us" if payment_provider else None,
            "document_locale": "en",
        },
        "shipping_address": {
            "address_line1": None,
            "address_line2": None,
            "city": None,
            "zipcode": None,
            "state": None,
            "country": None,
        },
        "metadata": [],
        "integration_customers": [],
    }


def fee(
    amount_cents: int,
    *,
    units: str = "1.0",
    taxes_rate: float = 20.0,
    taxes_amount_cents: int | None = None,
    code: str = "startup",
    name: str = "Startup plan",
    fee_type: str = "subscription",
    period_start: date | None = None,
) -> dict[str, Any]:
    start = period_start or date.today().replace(day=1)
    end = start + timedelta(days=29)
    tax = (
        _cents(Decimal(amount_cents) * Decimal(str(taxes_rate)) / 100)
        if taxes_amount_cents is None
        else taxes_amount_cents
    )
    return {
        "lago_id": uid(),
        "lago_charge_id": uid() if fee_type == "charge" else None,
        "lago_charge_filter_id": None,
        "lago_fixed_charge_id": None,
        "lago_invoice_id": None,
        "lago_true_up_fee_id": None,
        "lago_true_up_parent_fee_id": None,
        "lago_subscription_id": uid(),
        "external_subscription_id": f"sub_{uuid.uuid4().hex[:12]}",
        "lago_customer_id": None,
        "external_customer_id": None,
        "item": {
            "type": fee_type,
            "code": code,
            "name": name,
            "description": None,
            "invoice_display_name": None,
            "filters": None,
            "filter_invoice_display_name": None,
            "lago_item_id": uid(),
            "item_type": "Subscription" if fee_type == "subscription" else "BillableMetric",
            "grouped_by": {},
        },
        "pay_in_advance": False,
        "invoiceable": True,
        "amount_cents": amount_cents,
        "amount_currency": "USD",
        "precise_amount": amount_cents / 100,
        "precise_total_amount": (amount_cents + tax) / 100,
        "taxes_amount_cents": tax,
        "taxes_precise_amount": tax / 100,
        "taxes_rate": taxes_rate,
        "total_aggregated_units": units,
        "total_amount_cents": amount_cents + tax,
        "total_amount_currency": "USD",
        "units": units,
        "description": None,
        "precise_unit_amount": str(Decimal(amount_cents) / 100 / Decimal(units)) if Decimal(units) else "0.0",
        "precise_coupons_amount_cents": "0.0",
        "sub_total_excluding_taxes_amount_cents": amount_cents,
        "events_count": 0,
        "payment_status": "pending",
        "created_at": timestamp(),
        "succeeded_at": None,
        "failed_at": None,
        "refunded_at": None,
        "amount_details": {},
        "self_billed": False,
        "from_date": f"{start.isoformat()}T00:00:00Z",
        "to_date": f"{end.isoformat()}T23:59:59Z",
    }


def invoice(
    customer_obj: dict[str, Any],
    fees: list[dict[str, Any]],
    *,
    lago_id: str | None = None,
    number: str | None = None,
    status: str = "finalized",
    payment_status: str = "pending",
    coupons_amount_cents: int = 0,
    progressive_billing_credit_amount_cents: int = 0,
    credit_notes_amount_cents: int = 0,
    prepaid_credit_amount_cents: int = 0,
    prepaid_granted_credit_amount_cents: int = 0,
    total_paid_amount_cents: int | None = None,
    taxes_amount_cents: int | None = None,
    issuing_date: date | None = None,
    updated_at: str | None = None,
    voided_at: str | None = None,
    payment_dispute_lost_at: str | None = None,
    invoice_type: str = "subscription",
) -> dict[str, Any]:
    """Totals as Lago computes them: fees less coupons and progressive billing credit, plus taxes,
    less the credit notes and prepaid credits used (``prepaid_granted_credit_amount_cents`` of them
    free credits). ``total_paid_amount_cents`` is the sum of the invoice's payment records: by default
    all of it once paid (a provider charged it), nothing before; 0 with ``payment_status="succeeded"``
    is an invoice marked paid by hand."""
    fees_amount = sum(item["amount_cents"] for item in fees)
    subtotal = fees_amount - progressive_billing_credit_amount_cents - coupons_amount_cents
    taxes = sum(item["taxes_amount_cents"] for item in fees) if taxes_amount_cents is None else taxes_amount_cents
    total = subtotal + taxes - credit_notes_amount_cents - prepaid_credit_amount_cents
    if total_paid_amount_cents is None:
        total_paid_amount_cents = total if payment_status == "succeeded" else 0
    invoice_id = lago_id or uid()
    issued = issuing_date or date.today()
    now = timestamp()
    for item in fees:
        item["lago_invoice_id"] = invoice_id
        item["lago_customer_id"] = customer_obj["lago_id"]
        item["external_customer_id"] = customer_obj["external_id"]
    return {
        "lago_id": invoice_id,
        "billing_entity_code": "acme_us",
        "sequential_id": 2,
        "number": number or f"LAG-{uuid.uuid4().hex[:4].upper()}-001-002",
        "purchase_order_number": None,
        "issuing_date": issued.isoformat(),
        "payment_due_date": (issued + timedelta(days=customer_obj.get("net_payment_term") or 0)).isoformat(),
        "net_payment_term": customer_obj.get("net_payment_term") or 0,
        "invoice_type": invoice_type,
        "status": status,
        "payment_status": payment_status,
        "payment_dispute_lost_at": payment_dispute_lost_at,
        "payment_overdue": False,
        "currency": "USD",
        "fees_amount_cents": fees_amount,
        "taxes_amount_cents": taxes,
        "progressive_billing_credit_amount_cents": progressive_billing_credit_amount_cents,
        "coupons_amount_cents": coupons_amount_cents,
        "credit_notes_amount_cents": credit_notes_amount_cents,
        "sub_total_excluding_taxes_amount_cents": subtotal,
        "sub_total_including_taxes_amount_cents": subtotal + taxes,
        "total_amount_cents": total,
        "total_due_amount_cents": 0
        if payment_status == "succeeded" or status == "voided"
        else total - total_paid_amount_cents,
        "total_paid_amount_cents": total_paid_amount_cents,
        "total_offsetted_credit_note_amount_cents": 0,
        "prepaid_credit_amount_cents": prepaid_credit_amount_cents,
        "prepaid_granted_credit_amount_cents": prepaid_granted_credit_amount_cents,
        "prepaid_purchased_credit_amount_cents": prepaid_credit_amount_cents - prepaid_granted_credit_amount_cents,
        "file_url": None,
        "xml_url": None,
        "version_number": 4,
        "self_billed": False,
        "created_at": now,
        "updated_at": updated_at or now,
        "voided_at": voided_at or (now if status == "voided" else None),
        "customer": customer_obj,
        "fees": fees,
        "credits": [],
        "applied_taxes": [],
    }


def credit_purchase_invoice(
    customer_obj: dict[str, Any],
    amount_cents: int,
    *,
    payment_status: str = "pending",
    lago_id: str | None = None,
    number: str | None = None,
    updated_at: str | None = None,
) -> dict[str, Any]:
    """The invoice Lago issues when a customer buys prepaid credits for a wallet (``invoice_type:
    credit``, one untaxed fee of type ``credit``), sent as ``invoice.paid_credit_added``."""
    credit_fee = fee(
        amount_cents, taxes_rate=0.0, taxes_amount_cents=0, code="credit", name="Credits", fee_type="credit"
    )
    credit_fee["item"]["item_type"] = "WalletTransaction"
    for key in ("from_date", "to_date"):
        credit_fee.pop(key)
    return invoice(
        customer_obj,
        [credit_fee],
        lago_id=lago_id,
        number=number,
        payment_status=payment_status,
        updated_at=updated_at,
        invoice_type="credit",
    )


def payment(
    invoice_obj: dict[str, Any],
    amount_cents: int,
    *,
    lago_id: str | None = None,
    manual: bool = False,
    paid_at: str | None = None,
    reference: str | None = None,
    payment_status: str = "succeeded",
) -> dict[str, Any]:
    """A payment record on one invoice: a provider's charge (``payment.succeeded``), or a manual
    payment recorded with ``POST /api/v1/payments`` (its ``created_at`` is the ``paid_at`` given)."""
    customer_obj = invoice_obj["customer"]
    provider = (customer_obj.get("billing_configuration") or {}).get("payment_provider") or "stripe"
    return {
        "lago_id": lago_id or uid(),
        "lago_customer_id": customer_obj["lago_id"],
        "external_customer_id": customer_obj["external_id"],
        "invoice_ids": [invoice_obj["lago_id"]],
        "invoice_numbers": [invoice_obj["number"]],
        "lago_payable_id": invoice_obj["lago_id"],
        "payable_type": "Invoice",
        "amount_cents": amount_cents,
        "amount_currency": invoice_obj["currency"],
        "status": "succeeded",
        "payment_status": payment_status,
        "type": "manual" if manual else "provider",
        "reference": (reference or "wire transfer") if manual else None,
        "payment_provider_code": None if manual else f"{provider}_prod",
        "payment_provider_type": None if manual else provider,
        "external_payment_id": None if manual else f"pi_{uuid.uuid4().hex[:14]}",
        "provider_payment_id": None if manual else f"pi_{uuid.uuid4().hex[:14]}",
        "provider_customer_id": None if manual else f"cus_{uuid.uuid4().hex[:14]}",
        "next_action": {},
        "created_at": paid_at or timestamp(),
    }


def payment_receipt(payment_obj: dict[str, Any]) -> dict[str, Any]:
    """The receipt Lago issues for a succeeded payment (``payment_receipt.created``)."""
    return {
        "lago_id": uid(),
        "number": f"LAG-{uuid.uuid4().hex[:4].upper()}-RCPT-001",
        "file_url": None,
        "xml_url": None,
        "payment": payment_obj,
        "created_at": timestamp(),
    }


def credit_item(fee_obj: dict[str, Any], amount_cents: int) -> dict[str, Any]:
    return {
        "lago_id": uid(),
        "amount_cents": amount_cents,
        "precise_amount_cents": f"{amount_cents}.0",
        "amount_currency": "USD",
        "fee": fee_obj,
    }


def credit_note(
    invoice_obj: dict[str, Any],
    items: list[dict[str, Any]],
    *,
    lago_id: str | None = None,
    refund_amount_cents: int | None = None,
    refund_status: str | None = "pending",
    coupons_adjustment_amount_cents: int = 0,
    reason: str = "other",
    description: str | None = "Service outage",
    updated_at: str | None = None,
) -> dict[str, Any]:
    """Taxes at each item's fee rate after coupons, then the total split between refund and credit;
    ``refund_amount_cents`` defaults to all of it."""
    items_amount = sum(item["amount_cents"] for item in items)
    subtotal = items_amount - coupons_adjustment_amount_cents
    share = Decimal(subtotal) / Decimal(items_amount) if items_amount else Decimal(0)
    taxes = _cents(
        sum(Decimal(item["amount_cents"]) * share * Decimal(str(item["fee"]["taxes_rate"])) / 100 for item in items)
    )
    total = subtotal + taxes
    refund = total if refund_amount_cents is None else refund_amount_cents
    now = timestamp()
    return {
        "lago_id": lago_id or uid(),
        "billing_entity_code": "acme_us",
        "sequential_id": 1,
        "number": f"{invoice_obj['number']}-CN1",
        "lago_invoice_id": invoice_obj["lago_id"],
        "invoice_number": invoice_obj["number"],
        "purchase_order_number": None,
        "issuing_date": date.today().isoformat(),
        "credit_status": "available" if total - refund else None,
        "refund_status": refund_status if refund else None,
        "reason": reason,
        "description": description,
        "currency": "USD",
        "total_amount_cents": total,
        "precise_total_amount_cents": f"{total}.0",
        "taxes_amount_cents": taxes,
        "precise_taxes_amount_cents": f"{taxes}.0",
        "sub_total_excluding_taxes_amount_cents": subtotal,
        "balance_amount_cents": total - refund,
        "credit_amount_cents": total - refund,
        "refund_amount_cents": refund,
        "offset_amount_cents": 0,
        "coupons_adjustment_amount_cents": coupons_adjustment_amount_cents,
        "taxes_rate": items[0]["fee"]["taxes_rate"] if items else 0.0,
        "created_at": now,
        "updated_at": updated_at or now,
        "file_url": None,
        "xml_url": None,
        "self_billed": False,
        "customer": invoice_obj["customer"],
        "items": items,
        "applied_taxes": [],
    }


# --- webhooks ------------------------------------------------------------------------------------


def webhook(webhook_type: str, obj: dict[str, Any], *, object_type: str | None = None) -> dict[str, Any]:
    object_type = object_type or webhook_type.split(".")[0]
    return {
        "webhook_type": webhook_type,
        "object_type": object_type,
        "organization_id": ORGANIZATION_ID,
        object_type: obj,
    }


def payment_dispute_lost(invoice_obj: dict[str, Any], *, lost_at: str | None = None) -> dict[str, Any]:
    """The invoice as Lago serializes it for this webhook: with its customer, without fees."""
    lost_at = lost_at or timestamp()
    shown = {key: value for key, value in invoice_obj.items() if key not in ("fees", "credits", "applied_taxes")}
    shown.update(payment_dispute_lost_at=lost_at, payment_overdue=False, updated_at=lost_at)
    return webhook(
        "invoice.payment_dispute_lost",
        {"invoice": shown, "provider_error": "Chargeback lost"},
        object_type="payment_dispute_lost",
    )


def body(message: dict[str, Any]) -> bytes:
    """The body as Lago serializes it (Ruby's to_json: no spaces)."""
    return json.dumps(message, separators=(",", ":")).encode()


def sign_hmac(payload: bytes, key: str) -> str:
    return base64.b64encode(hmac.new(key.encode(), payload, hashlib.sha256).digest()).decode()


def rsa_key_pair() -> tuple[str, str]:
    """(private key, public key) as PEM, made now: Lago's RSA key stands in for the test."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def sign_jwt(payload: bytes, private_key: str, issuer: str = LAGO_API_URL) -> str:
    return jwt.encode({"data": payload.decode(), "iss": issuer}, private_key, algorithm="RS256")


def headers(
    payload: bytes, *, hmac_key: str | None = None, private_key: str | None = None, unique_key: str | None = None
) -> dict[str, str]:
    """The request headers Lago sends, signed with the HMAC key or else the private key."""
    if hmac_key is not None:
        algorithm, signature = "hmac", sign_hmac(payload, hmac_key)
    elif private_key is not None:
        algorithm, signature = "jwt", sign_jwt(payload, private_key)
    else:
        raise ValueError("sign with an hmac_key or a private_key")
    return {
        "Content-Type": "application/json",
        "User-Agent": "Ruby",
        lago.SIGNATURE_HEADER: signature,
        lago.ALGORITHM_HEADER: algorithm,
        lago.UNIQUE_KEY_HEADER: unique_key or uid(),
    }
