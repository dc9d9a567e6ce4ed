"""Sample Recurly JSON notifications and the API v3 objects they name, for the demo and the tests:
ids unique per call, amounts that add up the way Recurly computes them, signed the way Recurly signs.

Shapes from Recurly's documentation:
- https://docs.recurly.com/recurly-subscriptions/docs/signature-verification (recurly-signature)
- https://docs.recurly.com/recurly-subscriptions/v2021-02-25/docs/webhook-payloads-json-vs-xml
- https://docs.recurly.com/recurly-subscriptions/docs/account-notifications (JSON account payloads)
- https://docs.recurly.com/recurly-subscriptions/docs/charge-invoice-notifications
- https://docs.recurly.com/recurly-subscriptions/docs/credit-invoice-notifications
- https://docs.recurly.com/recurly-subscriptions/docs/payment-notifications (JSON payment payloads)
- https://docs.recurly.com/recurly-subscriptions/docs/credit-payment-notifications
- https://recurly.com/developers/api/v2021-02-25/ (Account, Invoice, LineItem, Transaction,
  CreditPayment and Error schemas; the same OpenAPI file ships as openapi/api.yaml in Recurly's
  client libraries)

API amounts are ``Decimal`` here; ``api_json`` writes them as JSON numbers, digit for digit, as
Recurly's API does (``49.99``, never ``49.990000001``).
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import re
import secrets
import string
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

SITE_ID = "qc326l1hl8k9"
CURRENCY = "USD"
_ALPHABET = string.ascii_lowercase + string.digits
_DECIMAL_MARK = "__recurly_decimal__"


def uid() -> str:
    """A Recurly object id: 12 lower-case letters and digits."""
    return "r" + "".join(secrets.choice(_ALPHABET) for _ in range(11))


def uuid32() -> str:
    """A Recurly UUID: 32 hex digits."""
    return uuid.uuid4().hex


def timestamp(moment: datetime | None = None) -> str:
    """Recurly's time format: ISO 8601 in UTC to the second."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(value: Decimal | str | int, places: int = 2) -> Decimal:
    return Decimal(value).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


# --- API objects ------------------------------------------------------------------------------------


def address(**overrides: Any) -> dict[str, Any]:
    return {
        "phone": "+1 818 555 0100",
        "street1": "5230 Penfield Ave",
        "street2": "Suite 100",
        "city": "Woodland Hills",
        "region": "CA",
        "postal_code": "91364",
        "country": "US",
        **overrides,
    }


def account(
    *,
    code: str | None = None,
    company: str | None = "ACME Corp",
    email: str = "ap@acme.example",
    first_name: str = "Verena",
    last_name: str = "Example",
    vat_number: str | None = "US123456789",
    updated_at: str | None = None,
    account_address: dict[str, Any] | None = None,
) -> dict[str, Any]:
    now = timestamp()
    return {
        "id": uid(),
        "object": "account",
        "state": "active",
        "hosted_login_token": uuid32(),
        "shipping_addresses": [],
        "has_live_subscription": True,
        "has_active_subscription": True,
        "has_future_subscription": False,
        "has_canceled_subscription": False,
        "has_paused_subscription": False,
        "has_past_due_invoice": False,
        "created_at": now,
        "updated_at": updated_at or now,
        "deleted_at": None,
        "code": code or f"acme-{uuid.uuid4().hex[:8]}",
        "username": None,
        "email": email,
        "preferred_locale": "en-US",
        "preferred_time_zone": "America/Los_Angeles",
        "cc_emails": None,
        "first_name": first_name,
        "last_name": last_name,
        "company": company,
        "vat_number": vat_number,
        "tax_exempt": False,
        "exemption_certificate": None,
        "parent_account_id": None,
        "bill_to": "self",
        "dunning_campaign_id": None,
        "invoice_template_id": None,
        "address": address() if account_address is None else account_address,
        "billing_info": None,
        "custom_fields": [],
    }


def account_mini(account_obj: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": account_obj["id"],
        "object": "account",
        "code": account_obj["code"],
        "email": account_obj["email"],
        "first_name": account_obj["first_name"],
        "last_name": account_obj["last_name"],
        "company": account_obj["company"],
        "parent_account_id": None,
        "bill_to": "self",
        "dunning_campaign_id": None,
    }


def line_item(
    unit_amount: Decimal | str,
    *,
    quantity: int = 1,
    tax_rate: Decimal | str = "0.0875",
    tax: Decimal | str | None = None,
    discount: Decimal | str = "0",
    line_type: str = "charge",
    description: str = "Gold plan",
    plan_code: str | None = "gold",
    add_on_code: str | None = None,
    item_code: str | None = None,
    origin: str = "plan",
    start: datetime | None = None,
    days: int = 30,
    currency: str = CURRENCY,
    places: int = 2,
    tax_inclusive: bool = False,
    previous_line_item_id: str | None = None,
    original_line_item_invoice_id: str | None = None,
) -> dict[str, Any]:
    """Amounts as Recurly computes them: subtotal = quantity × unit amount, tax on the discounted
    subtotal (rounded half up), amount = subtotal - discount + tax. A credit's amounts are negative."""
    unit = Decimal(unit_amount)
    subtotal = money(unit * quantity, places)
    reduction = money(discount, places)
    line_tax = money(tax, places) if tax is not None else money((subtotal - reduction) * Decimal(tax_rate), places)
    begins = start or datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    now = timestamp()
    return {
        "id": uid(),
        "object": "line_item",
        "uuid": uuid32(),
        "type": line_type,
        "item_code": item_code,
        "item_id": uid() if item_code else None,
        "external_sku": None,
        "revenue_schedule_type": "evenly",
        "state": "invoiced",
        "legacy_category": None,
        "account": None,
        "bill_for_account_id": None,
        "subscription_id": uid() if plan_code else None,
        "plan_id": uid() if plan_code else None,
        "plan_code": plan_code,
        "add_on_id": uid() if add_on_code else None,
        "add_on_code": add_on_code,
        "invoice_id": None,
        "invoice_number": None,
        "previous_line_item_id": previous_line_item_id,
        "original_line_item_invoice_id": original_line_item_invoice_id,
        "origin": origin,
        "accounting_code": None,
        "product_code": add_on_code or plan_code or item_code,
        "credit_reason_code": "refund" if line_type == "credit" else None,
        "currency": currency,
        "amount": subtotal - reduction + (Decimal(0) if tax_inclusive else line_tax),
        "description": description,
        "quantity": quantity,
        "quantity_decimal": None,
        "unit_amount": unit,
        "unit_amount_decimal": str(unit),
        "tax_inclusive": tax_inclusive,
        "subtotal": subtotal,
        "discount": reduction,
        "tax": line_tax,
        "taxable": line_tax != 0,
        "tax_exempt": False,
        "tax_code": None,
        "tax_info": {"type": "usst", "region": "CA", "rate": Decimal(tax_rate)} if line_tax else None,
        "proration_rate": None,
        "refund": line_type == "credit",
        "refunded_quantity": None,
        "credit_applied": None,
        "shipping_address": None,
        "start_date": timestamp(begins),
        "end_date": timestamp(begins + timedelta(days=days)) if days else None,
        "custom_fields": [],
        "created_at": now,
        "updated_at": now,
    }


def credit_line(
    charge_line: dict[str, Any], charge_invoice: dict[str, Any], *, quantity: int | None = None
) -> dict[str, Any]:
    """The credit line of a refund of ``charge_line`` (all of it, or ``quantity`` units)."""
    units = charge_line["quantity"] if quantity is None else quantity
    whole = Decimal(units) / Decimal(charge_line["quantity"])
    line = line_item(
        -charge_line["unit_amount"],
        quantity=units,
        tax=-money(charge_line["tax"] * whole),
        discount=-money(charge_line["discount"] * whole),
        line_type="credit",
        description=charge_line["description"],
        plan_code=charge_line["plan_code"],
        add_on_code=charge_line["add_on_code"],
        origin=charge_line["origin"],
        currency=charge_line["currency"],
        previous_line_item_id=charge_line["id"],
        original_line_item_invoice_id=charge_invoice["id"],
    )
    line["start_date"], line["end_date"] = charge_line["start_date"], charge_line["end_date"]
    return line


def _totals(lines: list[dict[str, Any]]) -> dict[str, Decimal]:
    subtotal = sum((line["subtotal"] for line in lines), Decimal(0))
    discount = sum((line["discount"] for line in lines), Decimal(0))
    tax = sum((line["tax"] for line in lines), Decimal(0))
    inclusive = sum((line["tax"] for line in lines if line["tax_inclusive"]), Decimal(0))
    return {"subtotal": subtotal, "discount": discount, "tax": tax, "total": subtotal - discount + tax - inclusive}


def invoice_address(account_obj: dict[str, Any]) -> dict[str, Any]:
    return {
        **account_obj["address"],
        "name_on_account": None,
        "company": account_obj["company"],
        "first_name": account_obj["first_name"],
        "last_name": account_obj["last_name"],
    }


def charge_invoice(
    account_obj: dict[str, Any],
    lines: list[dict[str, Any]],
    *,
    state: str = "pending",
    number: str | None = None,
    paid: Decimal | str | None = None,
    currency: str = CURRENCY,
    created_at: datetime | None = None,
    updated_at: str | None = None,
    closed_at: str | None = None,
    net_terms: int = 30,
    transactions: list[dict[str, Any]] | None = None,
    collection_method: str = "automatic",
    origin: str = "purchase",
) -> dict[str, Any]:
    """A charge invoice; ``paid`` defaults to the total when ``state`` is paid, else nothing."""
    created = created_at or datetime.now(UTC).replace(microsecond=0)
    totals = _totals(lines)
    settled = Decimal(paid) if paid is not None else (totals["total"] if state == "paid" else Decimal(0))
    invoice_id = uid()
    for line in lines:
        line["invoice_id"], line["account"] = invoice_id, account_mini(account_obj)
    return {
        "id": invoice_id,
        "uuid": uuid32(),
        "object": "invoice",
        "type": "charge",
        "origin": origin,
        "state": state,
        "account": account_mini(account_obj),
        "billing_info_id": None,
        "subscription_ids": [line["subscription_id"] for line in lines if line["subscription_id"]],
        "previous_invoice_id": None,
        "number": number or str(1000 + secrets.randbelow(9000)),
        "collection_method": collection_method,
        "po_number": None,
        "net_terms": net_terms,
        "net_terms_type": "net",
        "address": invoice_address(account_obj),
        "shipping_address": None,
        "currency": currency,
        **totals,
        "refundable_amount": settled,
        "paid": settled,
        "balance": totals["total"] - settled,
        "tax_info": {"type": "usst", "region": "CA", "rate": Decimal("0.0875")} if totals["tax"] else None,
        "used_tax_service": False,
        "vat_number": account_obj["vat_number"],
        "vat_reverse_charge_notes": None,
        "terms_and_conditions": None,
        "customer_notes": None,
        "line_items": lines,
        "has_more_line_items": False,
        "transactions": transactions or [],
        "credit_payments": [],
        "created_at": timestamp(created),
        "updated_at": updated_at or timestamp(created),
        "due_at": timestamp(created + timedelta(days=net_terms)),
        "closed_at": closed_at or (timestamp(created) if state in ("paid", "failed") else None),
        "dunning_campaign_id": None,
        "dunning_events_sent": None,
        "final_dunning_event": None,
        "business_entity_id": None,
    }


def credit_invoice(
    account_obj: dict[str, Any],
    lines: list[dict[str, Any]],
    *,
    origin: str = "refund",
    state: str = "closed",
    previous_invoice_id: str | None = None,
    number: str | None = None,
    currency: str = CURRENCY,
    updated_at: str | None = None,
    transactions: list[dict[str, Any]] | None = None,
    credit_payments: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A credit invoice; Recurly shows its amounts negative, like its credit lines."""
    invoice = charge_invoice(account_obj, lines, state=state, number=number, currency=currency, updated_at=updated_at)
    applied = sum((payment["amount"] for payment in credit_payments or []), Decimal(0))
    return {
        **invoice,
        "type": "credit",
        "origin": origin,
        "previous_invoice_id": previous_invoice_id,
        "collection_method": "manual",
        "refundable_amount": None,
        "paid": Decimal(0),
        "balance": Decimal(0) if state in ("closed", "voided") else invoice["total"] + applied,
        "transactions": transactions or [],
        "credit_payments": credit_payments or [],
        "due_at": None,
        "closed_at": invoice["created_at"] if state == "closed" else None,
    }


def invoice_mini(invoice: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": invoice["id"],
        "object": "invoice",
        "number": invoice["number"],
        "business_entity_id": None,
        "type": invoice["type"],
        "state": invoice["state"],
    }


def transaction(
    account_obj: dict[str, Any],
    invoice: dict[str, Any] | None,
    amount: Decimal | str,
    *,
    txn_type: str = "purchase",
    status: str = "success",
    payment_method: str = "credit_card",
    currency: str = CURRENCY,
    collected_at: str | None = None,
    updated_at: str | None = None,
    original_transaction_id: str | None = None,
    origin: str | None = None,
    collection_method: str = "automatic",
) -> dict[str, Any]:
    now = timestamp()
    return {
        "id": uid(),
        "object": "transaction",
        "uuid": uuid32(),
        "original_transaction_id": original_transaction_id,
        "account": account_mini(account_obj),
        "invoice": invoice_mini(invoice) if invoice else None,
        "voided_by_invoice": None,
        "subscription_ids": invoice["subscription_ids"] if invoice else [],
        "type": txn_type,
        "origin": origin or ("api" if txn_type == "refund" else "recurring"),
        "currency": currency,
        "amount": Decimal(amount),
        "status": status,
        "success": status == "success",
        "backup_payment_method_used": False,
        "refunded": False,
        "billing_address": {
            **address(),
            "first_name": account_obj["first_name"],
            "last_name": account_obj["last_name"],
        },
        "collection_method": collection_method,
        "payment_method": {
            "object": payment_method,
            "card_type": "Visa" if payment_method == "credit_card" else None,
            "first_six": "411111" if payment_method == "credit_card" else None,
            "last_four": "1111" if payment_method == "credit_card" else None,
            "exp_month": 12,
            "exp_year": 2030,
        },
        "ip_address_v4": None,
        "ip_address_country": None,
        "status_code": None if status == "success" else "declined",
        "status_message": None if status == "success" else "Your card was declined.",
        "customer_message": None,
        "payment_gateway": {"id": uid(), "object": "payment_gateway", "type": "test", "name": "Test Gateway"},
        "gateway_message": "Successful test transaction" if status == "success" else "Declined",
        "gateway_reference": uuid32()[:12],
        "gateway_approval_code": None,
        "gateway_response_code": None,
        "gateway_response_time": Decimal("0.123"),
        "gateway_response_values": {},
        "cvv_check": "not_applicable",
        "avs_check": "not_applicable",
        "created_at": now,
        "updated_at": updated_at or now,
        "voided_at": None,
        "collected_at": collected_at or (now if status == "success" else None),
        "vat_number": account_obj["vat_number"],
    }


def credit_payment(
    account_obj: dict[str, Any],
    original: dict[str, Any],
    amount: Decimal | str,
    *,
    applied_to: dict[str, Any] | None = None,
    action: str = "payment",
    refund_transaction: dict[str, Any] | None = None,
    created_at: str | None = None,
) -> dict[str, Any]:
    """Credit from the credit invoice ``original`` applied to ``applied_to`` (action payment), or paid
    back with ``refund_transaction`` (action refund)."""
    now = created_at or timestamp()
    return {
        "id": uid(),
        "object": "credit_payment",
        "uuid": uuid32(),
        "action": action,
        "account": account_mini(account_obj),
        "applied_to_invoice": invoice_mini(applied_to) if applied_to else None,
        "original_invoice": invoice_mini(original),
        "currency": original["currency"],
        "amount": Decimal(amount),
        "original_credit_payment_id": None,
        "refund_transaction": refund_transaction,
        "created_at": now,
        "updated_at": now,
        "voided_at": None,
    }


# --- what happens to invoices afterwards ---------------------------------------------------------------


def later(moment: str, seconds: int = 5) -> str:
    return timestamp(datetime.fromisoformat(moment.replace("Z", "+00:00")) + timedelta(seconds=seconds))


def changed(obj: dict[str, Any], seconds: int = 5, **changes: Any) -> dict[str, Any]:
    """``obj`` as Recurly shows it after a change ``seconds`` later (a higher ``updated_at``)."""
    return {**copy.deepcopy(obj), **changes, "updated_at": later(obj["updated_at"], seconds)}


def settled(
    invoice: dict[str, Any],
    *,
    transactions: Sequence[dict[str, Any]] = (),
    credit_payments: Sequence[dict[str, Any]] = (),
    state: str | None = None,
    seconds: int = 5,
) -> dict[str, Any]:
    """The charge invoice after more transactions or credit payments: its balance is the total less
    what collected payments and live credit payments settled; ``paid`` when nothing is left."""
    txns = [*invoice["transactions"], *transactions]
    credits = [*invoice["credit_payments"], *credit_payments]
    paid = sum(
        (txn["amount"] for txn in txns if txn["type"] in ("purchase", "capture") and txn["status"] == "success"),
        Decimal(0),
    )
    credited = sum((payment["amount"] for payment in credits if not payment["voided_at"]), Decimal(0))
    balance = invoice["total"] - paid - credited
    closed = invoice["state"] in ("failed", "voided")  # a failed invoice stays failed, written off or not
    new_state = state or (invoice["state"] if closed or balance else "paid")
    after = changed(
        invoice,
        seconds,
        transactions=txns,
        credit_payments=credits,
        paid=paid,
        balance=balance,
        state=new_state,
    )
    if new_state in ("paid", "failed"):
        after["closed_at"] = after["updated_at"]
    return after


def external_payment(account_obj: dict[str, Any], invoice: dict[str, Any], amount: Decimal | str) -> dict[str, Any]:
    """A payment recorded on a manual invoice (``POST /invoices/{id}/transactions``): a check."""
    return transaction(account_obj, invoice, amount, payment_method="check", collection_method="manual")


def credit_lines(invoice: dict[str, Any]) -> list[dict[str, Any]]:
    return [credit_line(line, invoice) for line in invoice["line_items"]]


def prepayment(
    account_obj: dict[str, Any], amount: Decimal | str
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A prepaid account balance bought for ``amount``: the charge invoice (origin ``prepayment``,
    tax exempt) paid by a purchase, and the opposite credit invoice holding the balance."""
    line = line_item(
        amount, tax_rate="0", description="Prepaid account balance", plan_code=None, origin="prepayment", days=0
    )
    charge = charge_invoice(account_obj, [line], origin="prepayment")
    purchase = transaction(account_obj, charge, amount)
    charge = {**settled(charge, transactions=[purchase], seconds=0), "updated_at": charge["updated_at"]}
    opposite = line_item(
        -Decimal(amount),
        tax_rate="0",
        line_type="credit",
        description="Prepaid account balance",
        plan_code=None,
        origin="prepayment",
        days=0,
        previous_line_item_id=line["id"],
        original_line_item_invoice_id=charge["id"],
    )
    credit = credit_invoice(account_obj, [opposite], origin="prepayment", state="open")
    return charge, purchase, credit


def apply_credit(
    account_obj: dict[str, Any],
    credit: dict[str, Any],
    charge: dict[str, Any],
    amount: Decimal | str,
    *,
    action: str = "payment",
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Credit from ``credit`` applied to ``charge``: the credit payment, the credit invoice after it
    (closed when nothing is left) and the charge invoice after it."""
    payment = credit_payment(
        account_obj, credit, amount, applied_to=charge, action=action, created_at=later(charge["updated_at"])
    )
    credits = [*credit["credit_payments"], payment]
    balance = credit["total"] + sum((p["amount"] for p in credits if not p["voided_at"]), Decimal(0))
    credit_after = changed(credit, credit_payments=credits, balance=balance, state="closed" if balance == 0 else "open")
    return payment, credit_after, settled(charge, credit_payments=[payment])


def chargeback(
    account_obj: dict[str, Any], invoice: dict[str, Any], purchase: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A chargeback that ended lost, as Recurly's chargeback management records it: an external
    refund credit invoice of the invoice and a refund transaction of origin ``chargeback``."""
    credit = credit_invoice(
        account_obj, credit_lines(invoice), origin="external_refund", previous_invoice_id=invoice["id"]
    )
    refund = transaction(
        account_obj,
        credit,
        purchase["amount"],
        txn_type="refund",
        origin="chargeback",
        original_transaction_id=purchase["id"],
    )
    refund["status_message"] = "Chargeback: fraudulent"
    return {**credit, "transactions": [refund]}, refund


def write_off(
    account_obj: dict[str, Any], failed: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Recurly's write-off of a failed invoice's balance: a credit invoice of origin ``write_off``
    applied to it with a credit payment of action ``write_off``."""
    line = line_item(
        -failed["balance"],
        tax_rate="0",
        line_type="credit",
        description="Write off",
        plan_code=None,
        origin="write_off",
    )
    credit = credit_invoice(account_obj, [line], origin="write_off", state="open")
    return apply_credit(account_obj, credit, failed, failed["balance"], action="write_off")


def error(error_type: str, message: str, params: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """An API error body, as Recurly sends it."""
    body: dict[str, Any] = {"type": error_type, "message": message}
    if params:
        body["params"] = params
    return {"error": body}


def api_json(obj: Any) -> bytes:
    """JSON with every Decimal written as a number, exactly as it reads."""

    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"{_DECIMAL_MARK}{value}"
        raise TypeError(f"{type(value).__name__} is not JSON serializable")

    text = json.dumps(obj, default=encode)
    return re.sub(rf'"{_DECIMAL_MARK}([-0-9.Ee+]+)"', r"\1", text).encode("utf-8")


# --- notifications ----------------------------------------------------------------------------------


def notification(
    object_type: str, event_type: str, obj: dict[str, Any], *, event_time: str | None = None
) -> dict[str, Any]:
    """The JSON notification Recurly posts about ``obj``: what names it, never the object itself."""
    message: dict[str, Any] = {
        "id": obj["id"],
        "object_type": object_type,
        "site_id": SITE_ID,
        "event_type": event_type,
        "event_time": event_time or timestamp(),
    }
    if object_type == "account" and obj.get("code"):
        message["account_code"] = obj["code"]
    elif object_type in ("payment", "credit_payment") and obj.get("uuid"):
        message["uuid"] = obj["uuid"]
    return message


def body(message: dict[str, Any]) -> bytes:
    return json.dumps(message, indent=2).encode()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sign(payload: bytes, secret: str | Sequence[str], timestamp_ms: int | None = None) -> str:
    """The ``recurly-signature`` header for ``payload``: one signature per secret key given (Recurly
    sends two while a key is being regenerated)."""
    moment = now_ms() if timestamp_ms is None else timestamp_ms
    keys = [secret] if isinstance(secret, str) else list(secret)
    message = f"{moment}.".encode() + payload
    return ",".join([str(moment), *(hmac.new(key.encode(), message, hashlib.sha256).hexdigest() for key in keys)])


def headers(payload: bytes, secret: str | Sequence[str], timestamp_ms: int | None = None) -> dict[str, str]:
    """The request headers Recurly sends with a JSON notification (names in lower case, as adapters get them)."""
    return {
        "content-type": "application/json",
        "user-agent": "Recurly Webhooks",
        "recurly-signature": sign(payload, secret, timestamp_ms),
    }
