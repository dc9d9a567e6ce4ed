"""Stripe: webhook signatures, and Stripe objects into canonical ledger commands.

Handles both shapes Stripe has published: older API versions (invoice.payment_intent,
invoice.charge, invoice.tax, line.price, line.tax_amounts) and newer ones (invoice.payments,
invoice.total_taxes, line.pricing.price_details, line.taxes).

Customer credit. Stripe keeps money a customer has that no invoice has taken in two places, and
the hub posts both the way it posts every over-payment: unapplied cash on the customer's account
(``receive_on_account``) when it arrives, and credit applied to an invoice (``apply_credit``, a
``from_credit`` application, no new cash) when Stripe uses it.

- The **credit balance** (``customer.balance``; negative is credit). An invoice paid more than it
  asked (``amount_overpaid``, API 2025-03-31 and later, with ``invoice.overpaid``) keeps what it
  asked and Stripe credits the rest to the balance (an ``invoice_overpaid`` balance transaction).
  The hub posts that rest as the customer's credit, named ``<invoice>:overpaid``, and applies only
  ``amount_paid - amount_overpaid`` of the payment to the invoice. Stripe applies the balance to the
  next invoice it finalizes: ``starting_balance`` is the credit before, ``ending_balance`` what is
  left, ``amount_due`` what remains to pay. The credit taken (``ending_balance - starting_balance``,
  at most the total) is posted as credit applied to that invoice, named ``<invoice>:customer-balance``.
  The invoice's paid amount counts it, as Lago's does, so what the ledger leaves open
  is Stripe's ``amount_remaining``. Balance transactions send no webhook: credit from a credit note
  reaches the ERP as the credit note; a manual ``adjustment`` reaches it only when an invoice uses it,
  and then shows in the ERP as an open debit on the customer for finance to book (goodwill or cash
  received elsewhere). A voided invoice gives its credit back to the balance: none is posted for it.
- The **cash balance** (bank transfers through the ``customer_balance`` payment method). Each
  ``customer_cash_balance_transaction.created`` names the money moved. ``funded``: the customer
  transferred cash, which stays in the cash balance until Stripe reconciles it with a payment, and
  what a transfer brings beyond what is owed stays there for the next one: posted as unapplied cash
  when it arrives, named after the transaction (``ccsbtxn_…``). A payment made from the cash balance
  is settled from that credit (``apply_credit``): a charge whose ``payment_method_details.type`` is
  ``customer_balance``, a PaymentIntent whose only payment method type is ``customer_balance``, and
  an invoice whose only payment method type is ``customer_balance`` (how Stripe sets up bank-transfer
  invoices). ``applied_to_payment`` names only the PaymentIntent, not the invoice: it records that
  payment, and the invoice's own event applies it. An invoice (or PaymentIntent) that offers bank
  transfer beside other methods does not say which one paid it. It is posted as a cash payment
  unless an event that says so and names the invoice (the charge's, in API versions before
  2025-03-31) reached the ledger first; when it was in fact paid
  from the cash balance, the ERP then holds that cash twice (as the transfer's unapplied cash and as
  the invoice's payment) and its receivable is below billing's until finance applies the credit to
  the payment by hand. ``cash_balance.funds_available`` only says funds wait for manual
  reconciliation: ignored, since the ``funded`` transaction posted them. The other types
  (``unapplied_from_payment``, ``refunded_from_payment``, ``return_initiated``, ``return_canceled``,
  ``funding_reversed``, ``transferred_to_balance``, ``adjusted_for_overdraft``) move money the hub
  posts no document for: the event fails with a message saying what to record by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import stripe
from django.conf import settings

from apps.core.money import CurrencyError, normalize_currency
from apps.ledger.commands import (
    CreditMemoData,
    CreditMemoLineData,
    CustomerData,
    DisputeData,
    InvoiceData,
    InvoiceLineData,
    LedgerCommand,
    PaymentApplicationData,
    PaymentData,
    SubscriptionData,
)
from apps.sources.base import BackfillItem, Envelope, IgnoredEvent, InvalidPayload, SignatureError, SourceAdapter

SIGNATURE_HEADER = "Stripe-Signature"
# Not a Stripe event: what a backfill stores for an open invoice read from Stripe's API. It posts
# the invoice and what was already paid on it.
BACKFILL_EVENT = "hub.backfill.invoice"

CUSTOMER_EVENTS = {"customer.created", "customer.updated"}
INVOICE_EVENTS = {
    "invoice.finalized",
    "invoice.updated",
    "invoice.payment_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.overpaid",
}
PAYMENT_EVENTS = {"payment_intent.succeeded", "charge.succeeded"}
CREDIT_NOTE_EVENTS = {"credit_note.created", "credit_note.updated", "credit_note.voided"}
DISPUTE_EVENTS = {
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.funds_reinstated",
    "charge.dispute.closed",
}
SUBSCRIPTION_EVENTS = {
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
}
CASH_BALANCE_EVENTS = {"customer_cash_balance_transaction.created"}
SUPPORTED_EVENTS = (
    CUSTOMER_EVENTS
    | INVOICE_EVENTS
    | PAYMENT_EVENTS
    | CREDIT_NOTE_EVENTS
    | DISPUTE_EVENTS
    | SUBSCRIPTION_EVENTS
    | CASH_BALANCE_EVENTS
)
# The hub's names for the parts of an invoice settled from or left as the customer's credit.
OVERPAID_SUFFIX = ":overpaid"
CUSTOMER_BALANCE_SUFFIX = ":customer-balance"
# Stripe's payment method type for payments from the cash balance; the hub's method for payments
# from the credit balance (payment journal mappings are keyed by method).
CASH_BALANCE_METHOD = "customer_balance"
CREDIT_BALANCE_METHOD = "credit_balance"
# Stripe's dispute statuses: warning_* are inquiries (no money moved); the others withdrew the funds.
_DISPUTE_STATUS = {
    "warning_needs_response": "inquiry",
    "warning_under_review": "inquiry",
    "warning_closed": "inquiry",
    "needs_response": "open",
    "under_review": "open",
    "won": "won",
    "lost": "lost",
}

_INVOICE_STATUS = {"open": "open", "paid": "paid", "void": "void", "uncollectible": "uncollectible"}


def verify_signature(payload: bytes, header: str | None, secrets: list[str], tolerance: int) -> None:
    """Accept the payload if any active secret signed it within ``tolerance`` seconds."""
    if not secrets:
        raise SignatureError("No webhook secret is configured for this source; the event was not accepted.")
    if not header:
        raise SignatureError(f"Missing {SIGNATURE_HEADER} header.")
    text = payload.decode("utf-8", errors="replace")
    last: stripe.SignatureVerificationError | None = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance=tolerance)
            return
        except stripe.SignatureVerificationError as exc:
            last = exc
            if "tolerance" in str(exc).lower() or "extract timestamp" in str(exc).lower():
                break  # the same answer for every secret
    message = str(getattr(last, "user_message", None) or last)
    if "tolerance" in message.lower():
        message = f"Stale webhook: the signature timestamp is more than {tolerance} seconds old (or in the future)."
    raise SignatureError(message)


def parse_envelope(payload: bytes) -> dict[str, Any]:
    """The event envelope, checked enough to store: an id, a type and an object."""
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(event, dict) or not str(event.get("id", "")).startswith("evt_") or not event.get("type"):
        raise InvalidPayload("The body is not a Stripe event: it needs an 'id' starting with evt_ and a 'type'.")
    if not isinstance(event.get("data"), dict) or not isinstance(event["data"].get("object"), dict):
        raise InvalidPayload("The Stripe event has no data.object.")
    return event


def _date(timestamp: object) -> date | None:
    if timestamp in (None, "", 0):
        return None
    return datetime.fromtimestamp(int(timestamp), UTC).date()  # type: ignore[arg-type]


def _id(value: object) -> str:
    """Stripe fields are ids, or objects when expanded."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _address(data: dict[str, Any] | None) -> dict[str, str]:
    data = data or {}
    return {key: str(data.get(key) or "") for key in ("line1", "line2", "city", "postal_code", "state", "country")}


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPayload(f"{what}: '{key}' must be an integer amount in minor units, got {value!r}.")
    return value


def _currency(obj: dict[str, Any], what: str) -> str:
    try:
        return normalize_currency(str(obj.get("currency") or ""))
    except CurrencyError as exc:
        raise InvalidPayload(f"{what}: {exc}.") from exc


def customer_from_object(obj: dict[str, Any], version: int) -> CustomerData:
    tax_ids = (obj.get("tax_ids") or {}).get("data") or []
    metadata = obj.get("metadata") or {}
    terms = metadata.get("payment_terms_days")
    return CustomerData(
        source_id=_id(obj),
        source_version=version,
        name=str(obj.get("name") or obj.get("description") or obj.get("email") or obj.get("id")),
        email=str(obj.get("email") or ""),
        currency=str(obj.get("currency") or ""),
        tax_id=str(tax_ids[0].get("value") or "") if tax_ids else "",
        tax_id_type=str(tax_ids[0].get("type") or "") if tax_ids else "",
        payment_terms_days=int(terms) if str(terms or "").isdigit() else None,
        bill_to=_address(obj.get("address")),
        sold_to=_address((obj.get("shipping") or {}).get("address")),
    )


def _customer_snapshot(invoice: dict[str, Any], version: int) -> CustomerData:
    tax_ids = invoice.get("customer_tax_ids") or []
    customer = invoice.get("customer")
    if isinstance(customer, dict):
        return customer_from_object(customer, version)
    return CustomerData(
        source_id=_id(customer),
        source_version=version,
        name=str(invoice.get("customer_name") or invoice.get("customer_email") or _id(customer)),
        email=str(invoice.get("customer_email") or ""),
        currency=str(invoice.get("currency") or ""),
        tax_id=str(tax_ids[0].get("value") or "") if tax_ids else "",
        tax_id_type=str(tax_ids[0].get("type") or "") if tax_ids else "",
        bill_to=_address(invoice.get("customer_address")),
        sold_to=_address((invoice.get("customer_shipping") or {}).get("address")),
        snapshot=True,
    )


def _line(line: dict[str, Any], invoice_id: str) -> InvoiceLineData:
    what = f"Invoice {invoice_id} line {line.get('id', '?')}"
    amount = _int(line, "amount", what)
    try:
        quantity = Decimal(str(line.get("quantity_decimal") or line.get("quantity") or 1))
    except InvalidOperation as exc:
        raise InvalidPayload(f"{what}: quantity {line.get('quantity')!r} is not a number.") from exc
    price = line.get("price") or {}
    details = (line.get("pricing") or {}).get("price_details") or {}
    price_id = _id(price) or str(details.get("price") or "")
    product = price.get("product") if isinstance(price, dict) else None
    if not isinstance(product, dict) and isinstance(details.get("product"), dict):
        product = details["product"]  # expanded: lines.data.pricing.price_details.product
    product_id = _id(product) or str(details.get("product") or "")
    product_name = str(product.get("name") or "") if isinstance(product, dict) else ""
    # An expanded product's metadata may name its product line and revenue category (for routing
    # and revenue mapping); a product given by id alone leaves what the hub holds unchanged.
    metadata = (product.get("metadata") or {}) if isinstance(product, dict) else {}
    unit = price.get("unit_amount") if isinstance(price, dict) else None
    if not isinstance(unit, int):
        unit = amount // int(quantity) if quantity == quantity.to_integral_value() and quantity > 0 else amount
    taxes = line.get("taxes") or line.get("tax_amounts") or []
    tax = sum(int(t.get("amount") or 0) for t in taxes)
    period = line.get("period") or {}
    return InvoiceLineData(
        description=str(line.get("description") or product_name or price_id or "Invoice line"),
        quantity=quantity,
        unit_amount_minor=unit,
        amount_minor=amount,
        tax_minor=tax,
        source_line_id=str(line.get("id") or ""),
        product_source_id=product_id,
        product_name=product_name,
        product_line=str(metadata.get("product_line") or ""),
        revenue_category=str(metadata.get("revenue_category") or ""),
        price_id=price_id,
        period_start=_date(period.get("start")),
        period_end=_date(period.get("end")),
    )


def invoice_from_object(obj: dict[str, Any], version: int) -> InvoiceData:
    invoice_id = _id(obj)
    what = f"Invoice {obj.get('number') or invoice_id}"
    status = _INVOICE_STATUS.get(str(obj.get("status")))
    if status is None:
        raise InvalidPayload(f"{what} has status {obj.get('status')!r}; only finalized invoices are posted.")
    if not _id(obj.get("customer")):
        raise InvalidPayload(f"{what} has no customer.")
    lines_obj = obj.get("lines") or {}
    if lines_obj.get("has_more"):
        raise InvalidPayload(
            f"{what} has more lines than the webhook carries; fetching the rest from the Stripe API is not configured."
        )
    lines = tuple(_line(line, invoice_id) for line in lines_obj.get("data") or [])
    if not lines:
        raise InvalidPayload(f"{what} has no lines.")
    tax = obj.get("tax")
    if not isinstance(tax, int):
        tax = sum(int(t.get("amount") or 0) for t in obj.get("total_taxes") or [])
    transitions = obj.get("status_transitions") or {}
    invoice_date = _date(transitions.get("finalized_at") or obj.get("effective_at") or obj.get("created"))
    status_at = {
        "void": transitions.get("voided_at"),
        "uncollectible": transitions.get("marked_uncollectible_at"),
        "paid": transitions.get("paid_at"),
    }.get(status)
    if invoice_date is None:
        raise InvalidPayload(f"{what} has no finalization or creation date.")
    settled = _cash_applied(obj, what) + (credit_balance_applied(obj) if status != "void" else 0)
    return InvoiceData(
        source_id=invoice_id,
        source_version=version,
        number=str(obj.get("number") or ""),
        customer=_customer_snapshot(obj, version),
        status=status,
        currency=_currency(obj, what),
        subtotal_minor=_int(obj, "subtotal", what),
        tax_minor=tax,
        total_minor=_int(obj, "total", what),
        amount_paid_minor=settled,
        invoice_date=invoice_date,
        due_date=_date(obj.get("due_date")),
        lines=lines,
        period_start=_date(obj.get("period_start")),
        period_end=_date(obj.get("period_end")),
        status_date=_date(status_at or version),
    )


def _invoice_payment_id(obj: dict[str, Any]) -> str:
    """The payment behind a paid invoice, named as payment_intent/charge events name it."""
    for key in ("payment_intent", "charge"):
        if _id(obj.get(key)):
            return _id(obj.get(key))
    for item in (obj.get("payments") or {}).get("data") or []:
        payment = item.get("payment") or {}
        for key in ("payment_intent", "charge"):
            if _id(payment.get(key)):
                return _id(payment.get(key))
    return f"{_id(obj)}:paid"


def _overpaid(obj: dict[str, Any], what: str) -> int:
    """What the invoice's payments brought beyond what it asked (Stripe credits it to the
    customer's credit balance); 0 in API versions without ``amount_overpaid``."""
    if obj.get("amount_overpaid") in (None, 0):
        return 0
    overpaid = _int(obj, "amount_overpaid", what)
    if overpaid < 0 or overpaid > int(obj.get("amount_paid") or 0):
        raise InvalidPayload(
            f"{what}: 'amount_overpaid' {overpaid} must be between 0 and 'amount_paid' {obj.get('amount_paid')}."
        )
    return overpaid


def _cash_applied(obj: dict[str, Any], what: str) -> int:
    """What the invoice's payments settled of it: what was paid, less what went to the credit balance."""
    return int(obj.get("amount_paid") or 0) - _overpaid(obj, what)


def credit_balance_applied(obj: dict[str, Any]) -> int:
    """The customer credit Stripe took from the credit balance when it finalized the invoice: the
    balance went from ``starting_balance`` to ``ending_balance`` (negative is credit). 0 before
    finalization (``ending_balance`` null) and when the balance was a debt carried forward."""
    starting, ending = obj.get("starting_balance"), obj.get("ending_balance")
    if isinstance(starting, bool) or not isinstance(starting, int) or starting >= 0:
        return 0
    if isinstance(ending, bool) or not isinstance(ending, int):
        return 0
    total = obj.get("total")
    taken = min(ending, 0) - starting
    return max(0, min(taken, total if isinstance(total, int) else taken))


def _paid_from_cash_balance(obj: dict[str, Any]) -> bool:
    """An invoice that can only be paid from the customer's cash balance (a bank-transfer invoice)."""
    methods = (obj.get("payment_settings") or {}).get("payment_method_types") or []
    return list(methods) == [CASH_BALANCE_METHOD]


def payment_from_paid_invoice(obj: dict[str, Any], version: int) -> PaymentData | None:
    what = f"Invoice {obj.get('number') or _id(obj)}"
    applied = _cash_applied(obj, what)
    if applied <= 0:
        return None  # paid by credit balance or a zero invoice: nothing reached the bank
    transitions = obj.get("status_transitions") or {}
    settled = transitions.get("paid_at") or version
    payment_id = _invoice_payment_id(obj)
    # A bank-transfer invoice is paid from the cash balance, posted as credit when it was funded.
    from_cash_balance = _paid_from_cash_balance(obj) and not payment_id.endswith(":paid")
    return PaymentData(
        source_id=payment_id,
        source_version=version,
        customer_source_id=_id(obj.get("customer")),
        currency=_currency(obj, what),
        amount_minor=applied,
        method=CASH_BALANCE_METHOD if from_cash_balance else "stripe",
        settled_at=datetime.fromtimestamp(int(settled), UTC),
        applications=(
            PaymentApplicationData(invoice_source_id=_id(obj), amount_minor=applied, from_credit=from_cash_balance),
        ),
        unapplied_is_credit=not from_cash_balance,
    )


def overpayment_from_invoice(obj: dict[str, Any], version: int) -> PaymentData | None:
    """What the invoice's payments brought beyond what it asked: the customer's credit (Stripe
    puts it on the credit balance), named ``<invoice>:overpaid``."""
    what = f"Invoice {obj.get('number') or _id(obj)}"
    overpaid = _overpaid(obj, what)
    if overpaid <= 0:
        return None
    settled = (obj.get("status_transitions") or {}).get("paid_at") or version
    return PaymentData(
        source_id=f"{_id(obj)}{OVERPAID_SUFFIX}",
        source_version=version,
        customer_source_id=_id(obj.get("customer")),
        currency=_currency(obj, what),
        amount_minor=overpaid,
        method="stripe",
        settled_at=datetime.fromtimestamp(int(settled), UTC),
        unapplied_is_credit=True,
    )


def credit_balance_payment(obj: dict[str, Any], version: int) -> PaymentData | None:
    """The part of the invoice Stripe settled from the customer's credit balance when it finalized
    it, applied from the customer's credit, named ``<invoice>:customer-balance``. None for a voided
    invoice: Stripe gives its credit back to the balance."""
    credit = credit_balance_applied(obj)
    if credit <= 0 or obj.get("status") == "void":
        return None
    what = f"Invoice {obj.get('number') or _id(obj)}"
    transitions = obj.get("status_transitions") or {}
    applied_at = transitions.get("finalized_at") or obj.get("effective_at") or obj.get("created") or version
    return PaymentData(
        source_id=f"{_id(obj)}{CUSTOMER_BALANCE_SUFFIX}",
        source_version=version,
        customer_source_id=_id(obj.get("customer")),
        currency=_currency(obj, what),
        amount_minor=credit,
        method=CREDIT_BALANCE_METHOD,
        settled_at=datetime.fromtimestamp(int(applied_at), UTC),
        applications=(PaymentApplicationData(invoice_source_id=_id(obj), amount_minor=credit, from_credit=True),),
        unapplied_is_credit=False,
    )


def invoice_commands(obj: dict[str, Any], version: int, *, paid: bool) -> list[LedgerCommand]:
    """The invoice, what Stripe took for it from the credit balance, and, when ``paid``, the
    payment that settled it and what that payment brought beyond it."""
    commands: list[LedgerCommand] = [invoice_from_object(obj, version)]
    parts = [credit_balance_payment(obj, version)]
    if paid:
        parts += [payment_from_paid_invoice(obj, version), overpayment_from_invoice(obj, version)]
    commands.extend(part for part in parts if part is not None)
    return commands


def payment_from_intent_or_charge(obj: dict[str, Any], version: int) -> PaymentData:
    kind = obj.get("object")
    what = f"Payment {_id(obj)}"
    if kind == "payment_intent":
        source_id = _id(obj)
        amount = _int(obj, "amount_received", what)
        methods = list(obj.get("payment_method_types") or [])
        method = str(methods[0]) if methods else "stripe"
        # Allowed several methods, a PaymentIntent does not say which one paid it.
        from_cash_balance = methods == [CASH_BALANCE_METHOD]
    else:
        source_id = _id(obj.get("payment_intent")) or _id(obj)
        amount = _int(obj, "amount_captured", what) or _int(obj, "amount", what)
        method = str((obj.get("payment_method_details") or {}).get("type") or "stripe")
        from_cash_balance = method == CASH_BALANCE_METHOD
    if not from_cash_balance and method == CASH_BALANCE_METHOD:
        method = "stripe"
    invoice_id = _id(obj.get("invoice"))
    return PaymentData(
        source_id=source_id,
        source_version=version,
        customer_source_id=_id(obj.get("customer")),
        currency=_currency(obj, what),
        amount_minor=amount,
        method=method,
        settled_at=datetime.fromtimestamp(int(obj.get("created") or version), UTC),
        applications=(
            PaymentApplicationData(invoice_source_id=invoice_id, amount_minor=amount, from_credit=from_cash_balance),
        )
        if invoice_id
        else (),
        # Without an invoice, invoice.paid names it later. Cash from the cash balance was posted as the
        # customer's credit when it was funded: its applications draw on that credit.
        unapplied_is_credit=bool(invoice_id) and not from_cash_balance,
    )


# --- the cash balance ------------------------------------------------------------------------------

# Cash balance transactions that move money the hub posts no document for, and what finance records.
_CASH_BALANCE_BY_HAND = {
    "unapplied_from_payment": "a payment made from the cash balance was undone and its funds went back to the "
    "customer's cash balance: reverse that payment's credit application in the ERP",
    "refunded_from_payment": "a payment was refunded into the customer's cash balance: record the refund as "
    "customer credit in the ERP",
    "return_initiated": "cash from the customer's cash balance is being returned to their bank account: record the "
    "refund of customer credit in the ERP",
    "return_canceled": "a return of cash balance funds was canceled and the funds are back in the cash balance: "
    "reverse the refund of customer credit in the ERP",
    "funding_reversed": "a bank transfer that funded the cash balance was reversed: reverse that unapplied cash in "
    "the ERP",
    "transferred_to_balance": "funds left the customer's cash balance for the Stripe balance: record it in the ERP",
    "adjusted_for_overdraft": "Stripe took funds from the Stripe balance to cover the customer's negative cash "
    "balance: record it in the ERP",
}


def cash_balance_transaction(obj: dict[str, Any], version: int) -> list[LedgerCommand]:
    """A change of the customer's cash balance: money a customer transferred that waits for a payment."""
    txn_id = _id(obj)
    kind = str(obj.get("type") or "")
    what = f"Cash balance transaction {txn_id} ({kind or 'no type'})"
    customer = _id(obj.get("customer"))
    if not customer:
        raise InvalidPayload(f"{what} names no customer.")
    net = _int(obj, "net_amount", what)
    created = datetime.fromtimestamp(int(obj.get("created") or version), UTC)
    if kind == "funded":
        if net <= 0:
            raise InvalidPayload(f"{what}: 'net_amount' of a funding must be positive, got {net}.")
        transfer = (obj.get("funded") or {}).get("bank_transfer") or {}
        return [
            # Fills blanks only: the customer object (customer.created/updated) stays authoritative.
            CustomerData(source_id=customer, source_version=version, name=customer, snapshot=True),
            PaymentData(
                source_id=txn_id,
                source_version=version,
                customer_source_id=customer,
                currency=_currency(obj, what),
                amount_minor=net,
                method=str(transfer.get("type") or "bank_transfer"),
                settled_at=created,
                unapplied_is_credit=True,
            ),
        ]
    if kind == "applied_to_payment":
        payment_intent = _id((obj.get("applied_to_payment") or {}).get("payment_intent"))
        if not payment_intent or net >= 0:
            raise InvalidPayload(f"{what} must name a payment_intent and take funds (a negative 'net_amount').")
        # The invoice it pays is named by the invoice's events, which apply it from the credit.
        return [
            PaymentData(
                source_id=payment_intent,
                source_version=version,
                customer_source_id=customer,
                currency=_currency(obj, what),
                amount_minor=-net,
                method=CASH_BALANCE_METHOD,
                settled_at=created,
                unapplied_is_credit=False,
            )
        ]
    if kind in _CASH_BALANCE_BY_HAND:
        amount = f"{abs(net)} minor units of {str(obj.get('currency') or '').upper()}"
        raise InvalidPayload(
            f"{what} for customer {customer}, {amount}: {_CASH_BALANCE_BY_HAND[kind]}. The hub posts no document for "
            "it; once it is recorded, skip this event."
        )
    raise InvalidPayload(f"{what}: the hub does not know this cash balance transaction type; record it by hand.")


def _credit_line(line: dict[str, Any], memo_id: str) -> CreditMemoLineData:
    what = f"Credit note {memo_id} line {line.get('id', '?')}"
    amount = _int(line, "amount", what)
    try:
        quantity = Decimal(str(line.get("quantity") or 1))
    except InvalidOperation as exc:
        raise InvalidPayload(f"{what}: quantity {line.get('quantity')!r} is not a number.") from exc
    unit = line.get("unit_amount")
    if not isinstance(unit, int):
        unit = amount // int(quantity) if quantity == quantity.to_integral_value() and quantity > 0 else amount
    taxes = line.get("taxes") or line.get("tax_amounts") or []
    return CreditMemoLineData(
        description=str(line.get("description") or "Credit"),
        quantity=quantity,
        unit_amount_minor=unit,
        amount_minor=amount,
        tax_minor=sum(int(t.get("amount") or 0) for t in taxes),
        source_line_id=str(line.get("id") or ""),
        invoice_line_source_id=_id(line.get("invoice_line_item")),
    )


def credit_memo_from_object(obj: dict[str, Any], version: int) -> CreditMemoData:
    memo_id = _id(obj)
    what = f"Credit note {obj.get('number') or memo_id}"
    if not _id(obj.get("invoice")):
        raise InvalidPayload(f"{what} names no invoice; the hub posts credit notes against an invoice.")
    lines_obj = obj.get("lines") or {}
    if lines_obj.get("has_more"):
        raise InvalidPayload(f"{what} has more lines than the webhook carries.")
    lines = tuple(_credit_line(line, memo_id) for line in lines_obj.get("data") or [])
    if not lines:
        raise InvalidPayload(f"{what} has no lines.")
    total = _int(obj, "total", what)
    subtotal = obj.get("subtotal_excluding_tax")
    if not isinstance(subtotal, int):
        subtotal = _int(obj, "subtotal", what)
    memo_date = _date(obj.get("effective_at") or obj.get("created"))
    if memo_date is None:
        raise InvalidPayload(f"{what} has no date.")
    status = "void" if obj.get("status") == "void" else "issued"
    refunded = sum(int(r.get("amount_refunded") or 0) for r in obj.get("refunds") or [] if isinstance(r, dict))
    reason = " — ".join(str(part) for part in (obj.get("reason"), obj.get("memo")) if part)
    return CreditMemoData(
        source_id=memo_id,
        source_version=version,
        number=str(obj.get("number") or ""),
        customer_source_id=_id(obj.get("customer")),
        invoice_source_id=_id(obj.get("invoice")),
        status=status,
        currency=_currency(obj, what),
        subtotal_minor=subtotal,
        tax_minor=total - subtotal,
        total_minor=total,
        memo_date=memo_date,
        lines=lines,
        reason=reason,
        refunded_minor=refunded or int(obj.get("refund_amount") or 0),
        status_date=_date(obj.get("voided_at")) if status == "void" else memo_date,
    )


def dispute_from_object(obj: dict[str, Any], version: int, event_type: str) -> DisputeData:
    what = f"Dispute {_id(obj)}"
    status = _DISPUTE_STATUS.get(str(obj.get("status")))
    if status is None:
        raise InvalidPayload(f"{what}: unknown dispute status {obj.get('status')!r}.")
    if event_type == "charge.dispute.funds_reinstated" and status == "open":
        status = "won"  # reinstated before the status reached the event
    payment_id = _id(obj.get("payment_intent")) or _id(obj.get("charge"))
    if not payment_id:
        raise InvalidPayload(f"{what}: it names neither a payment_intent nor a charge.")
    closed = status in ("won", "lost")
    return DisputeData(
        source_id=_id(obj),
        source_version=version,
        payment_source_id=payment_id,
        currency=_currency(obj, what),
        amount_minor=_int(obj, "amount", what),
        status=status,
        opened_on=_date(obj.get("created")) or _date(version),  # type: ignore[arg-type]
        reason=str(obj.get("reason") or ""),
        closed_on=_date(version) if closed else None,
    )


def subscription_from_object(obj: dict[str, Any], version: int, event_type: str) -> SubscriptionData:
    """The current period sits on the subscription in older API versions and on each item in newer
    ones (the earliest start and latest end of the items)."""
    items = (obj.get("items") or {}).get("data") or []
    starts = [int(x["current_period_start"]) for x in items if x.get("current_period_start")]
    ends = [int(x["current_period_end"]) for x in items if x.get("current_period_end")]
    start = obj.get("current_period_start") or (min(starts) if starts else None)
    end = obj.get("current_period_end") or (max(ends) if ends else None)
    return SubscriptionData(
        source_id=_id(obj),
        source_version=version,
        customer_source_id=_id(obj.get("customer")),
        status=str(obj.get("status") or ""),
        price_ids=tuple(sorted({_id(item.get("price")) for item in items if _id(item.get("price"))})),
        period_start=_date(start),
        period_end=_date(end),
        cancel_at_period_end=bool(obj.get("cancel_at_period_end")),
        ended=event_type == "customer.subscription.deleted",
    )


def parse_event(event: dict[str, Any]) -> list[LedgerCommand]:
    """Canonical commands for one stored event; raises ``IgnoredEvent`` for types not posted."""
    event_type = str(event.get("type"))
    obj = event["data"]["object"]
    version = int(event.get("created") or 0)
    if event_type in CUSTOMER_EVENTS:
        return [customer_from_object(obj, version)]
    if event_type == BACKFILL_EVENT:
        return invoice_commands(obj, version, paid=int(obj.get("amount_paid") or 0) > 0)
    if event_type == "invoice.updated" and obj.get("status") == "draft":
        raise IgnoredEvent("invoice.updated of a draft invoice: only finalized invoices are posted.")
    if event_type in INVOICE_EVENTS:
        return invoice_commands(obj, version, paid=obj.get("status") == "paid")
    if event_type in CASH_BALANCE_EVENTS:
        return cash_balance_transaction(obj, version)
    if event_type in PAYMENT_EVENTS:
        return [payment_from_intent_or_charge(obj, version)]
    if event_type in CREDIT_NOTE_EVENTS:
        return [credit_memo_from_object(obj, version)]
    if event_type in DISPUTE_EVENTS:
        return [dispute_from_object(obj, version, event_type)]
    if event_type in SUBSCRIPTION_EVENTS:
        return [subscription_from_object(obj, version, event_type)]
    raise IgnoredEvent(f"Stripe event type {event_type} is not posted by this hub version.")


class StripeAdapter(SourceAdapter):
    kind = "stripe"
    label = "Stripe"
    kept_headers = ("content-type", "user-agent", "stripe-signature", "x-correlation-id")

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: list[str]) -> Envelope:
        tolerance = settings.HUB["STRIPE_SIGNATURE_TOLERANCE_SECONDS"]
        verify_signature(body, headers.get(SIGNATURE_HEADER.lower()), secrets, tolerance)
        event = parse_envelope(body)
        return Envelope(
            event_id=str(event["id"]), event_type=str(event["type"]), object_id=_id(event["data"]["object"])
        )

    def __init__(self, api_settings: Mapping[str, str] | None = None) -> None:
        self.api_settings = dict(api_settings or {})

    def bind(self, api_settings: Mapping[str, str]) -> StripeAdapter:
        return StripeAdapter(api_settings)

    def parse(self, body: bytes) -> list[LedgerCommand]:
        return parse_event(json.loads(body))

    def open_invoices(self, since: datetime, until: datetime) -> Iterator[BackfillItem]:
        """Through the official SDK: ``GET /v1/invoices?status=open&created[gte]&created[lte]``, every
        page. The event id names the invoice and what was paid on it, so a second backfill of the
        same state stores nothing new."""
        if not self.api_settings.get("api_key"):
            raise InvalidPayload("This Stripe source has no api.api_key: the backfill reads invoices through the API.")
        base = self.api_settings.get("base_url")
        client = stripe.StripeClient(
            str(self.api_settings["api_key"]), base_addresses={"api": str(base)} if base else None
        )
        window = {"gte": int(since.timestamp()), "lte": int(until.timestamp())}
        listing = client.v1.invoices.list({"status": "open", "created": window, "limit": 100})
        now = int(time.time())
        for invoice in listing.auto_paging_iter():
            obj = invoice.to_dict()
            paid = int(obj.get("amount_paid") or 0)
            event = {
                "id": f"backfill_{obj['id']}_{paid}",
                "type": BACKFILL_EVENT,
                "created": now,
                "data": {"object": obj},
            }
            yield BackfillItem(
                envelope=Envelope(event_id=str(event["id"]), event_type=BACKFILL_EVENT, object_id=str(obj["id"])),
                body=json.dumps(event, default=str).encode(),  # the SDK reads *_decimal strings as Decimal
                number=str(obj.get("number") or ""),
                customer=str(obj.get("customer_name") or _id(obj.get("customer"))),
                currency=_currency(obj, f"Invoice {obj.get('number') or obj['id']}"),
                total_minor=_int(obj, "total", f"Invoice {obj['id']}"),
                paid_minor=paid,
                erp_keys={"id": str(obj["id"]), "number": str(obj.get("number") or "")},
            )
