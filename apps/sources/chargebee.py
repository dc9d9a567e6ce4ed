"""Chargebee (API v2 events): webhook authentication, and Chargebee objects into canonical ledger
commands.

Authenticity: Chargebee does not sign webhook bodies. The only proof it offers is HTTP Basic
authentication configured on the webhook (Settings > Webhooks > "protected by basic
authentication"). Each secret of a Chargebee source is ``"<username>:<password>"``; a request is
accepted when its ``Authorization: Basic`` credentials equal one of them. Basic credentials are
replayable by anyone who sees one request, so serve the webhook over TLS only and give it an
unguessable URL as well; the body itself is not protected against tampering in transit.

Money: every Chargebee amount (``total``, ``amount``, ``tax_amount``, ...) is an integer in the
currency's minor unit (cents for USD, yen for JPY); anything else is refused, naming the field.

Ordering: Chargebee does not deliver webhooks in order. ``source_version`` is the object's
``resource_version`` (milliseconds, bumped on every change), else ``updated_at`` or the event's
``occurred_at`` in milliseconds, so a later state of a record always has a higher version.

Invoice status: ``posted``, ``payment_due`` and ``not_paid`` are all still receivable, so they are
``open`` (``not_paid`` only means Chargebee stopped retrying the card). ``paid`` is ``paid``,
``voided`` and a deleted invoice are ``void``. A write-off in Chargebee marks the invoice ``paid``
with ``write_off_amount`` > 0 and issues an adjustment credit note for it: the hub posts that as an
``uncollectible`` invoice (a bad-debt write-off of ``write_off_amount``) and ignores the write-off
credit note, so the receivable is not reduced twice. ``pending`` invoices (metered charges not yet
closed) are not posted until Chargebee closes them.

Amounts on lines: Chargebee's line ``amount`` is before discounts (and includes tax when the
invoice's ``price_type`` is ``tax_inclusive``). The hub's lines are net of discounts and exclusive of
tax, and its subtotal is ``total - tax``; a document whose net lines do not add up to that is parked
by the planner for finance rather than refused here.

Customer credit (excess payments): a payment transaction's ``amount`` less what its
``linked_invoices`` take is its ``amount_unused``, which Chargebee adds to the customer's
``excess_payments``. The hub posts that rest as the customer's credit (unapplied cash) when the
payment first reaches it. Chargebee applies excess payments to later invoices itself and reports
it as ``transaction_updated`` ("when an excess payment is applied on an invoice"): the same
transaction with one more ``linked_invoices`` entry. That entry settles the invoice from the
credit, not with new cash. ``transaction_created`` carries payments recorded without an invoice
(``record_excess_payment``), all of it credit.

Chargebacks: Chargebee has no dispute object and no dispute events in API v2. An automated
chargeback is recorded as a refund transaction with ``payment_method`` ``chargeback`` (set by
Chargebee for automated chargebacks, or by whoever records the refund), whose ``refunded_txn_id``
is the disputed payment. The hub reads it as a dispute named after that refund transaction:

- recorded (``success`` or ``in_progress``) with a chargeback credit note (``reason_code``
  ``chargeback``, in its ``linked_credit_notes`` or beside it in the event): lost. This is what
  Chargeback Management's recommended "create credit note and record refund" books, and what
  Chargebee calls the final action: the invoice's amount is given up to the cardholder. The hub
  posts the withdrawal and the loss;
- recorded without such a credit note: open, the funds are withdrawn while the dispute runs;
- removed again (``transaction_deleted``, or ``voided``) while open: won, the funds are reinstated.
  Chargebee only notifies the merchant of a won chargeback; removing the chargeback refund is the
  merchant's step that reverses it in Chargebee's books.

Removing a chargeback refund that was booked as lost fails the event with a reason: the hub's
disputes move only forward (a lost dispute is never reinstated), so finance reverses the loss in
the ERP by hand. The chargeback credit note itself is never posted as a credit note (the invoice
stays paid and the receivable is not reduced), like the write-off credit note. A failed chargeback
refund moved no money and is ignored.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

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
)
from apps.sources.base import Envelope, IgnoredEvent, InvalidPayload, SignatureError, SourceAdapter

API_VERSION = "v2"

CUSTOMER_EVENTS = {"customer_created", "customer_changed"}
INVOICE_EVENTS = {"invoice_generated", "invoice_generated_with_backdating", "invoice_updated", "invoice_deleted"}
PAYMENT_EVENTS = {"payment_succeeded"}
CREDIT_NOTE_EVENTS = {
    "credit_note_created",
    "credit_note_created_with_backdating",
    "credit_note_updated",
    "credit_note_deleted",
}
REFUND_EVENTS = {"payment_refunded"}
# transaction_updated reports, among others, an excess payment applied to an invoice.
TRANSACTION_EVENTS = {"transaction_created", "transaction_updated", "transaction_deleted"}
SUPPORTED_EVENTS = (
    CUSTOMER_EVENTS | INVOICE_EVENTS | PAYMENT_EVENTS | CREDIT_NOTE_EVENTS | REFUND_EVENTS | TRANSACTION_EVENTS
)

_OPEN_STATUSES = {"posted", "payment_due", "not_paid"}
# The content key naming the object an event is about, where its type does not start with it.
_SUBJECT_OF = {"payment": "transaction", "refund": "transaction", "authorization": "transaction"}


# --- authenticity -----------------------------------------------------------------------------------


def basic_credentials(header: str | None) -> str:
    """``"<username>:<password>"`` from an ``Authorization: Basic`` header."""
    if not header:
        raise SignatureError(
            "Missing Authorization header: protect the Chargebee webhook with basic authentication "
            "(username and password) matching this source's secret."
        )
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        raise SignatureError("The Authorization header must be 'Basic <base64 of username:password>'.")
    try:
        credentials = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise SignatureError("The Authorization header's Basic credentials are not valid base64 text.") from None
    if ":" not in credentials:
        raise SignatureError("The Authorization header's Basic credentials must be 'username:password'.")
    return credentials


def authenticate(headers: Mapping[str, str], secrets: list[str]) -> None:
    """Accept the request if its Basic credentials equal any active secret (rotation keeps the old
    one active until Chargebee is updated)."""
    if not secrets:
        raise SignatureError("No webhook secret is configured for this source; the event was not accepted.")
    credentials = basic_credentials(headers.get("authorization")).encode("utf-8")
    usable = [secret for secret in secrets if ":" in secret]
    if not usable:
        raise SignatureError("This source's secrets must have the form '<username>:<password>'.")
    # Compare against every secret, so the time taken does not tell which one came close.
    matches = [hmac.compare_digest(credentials, secret.encode("utf-8")) for secret in usable]
    if not any(matches):
        raise SignatureError("The Basic credentials do not match this source's webhook username and password.")


# --- envelope ---------------------------------------------------------------------------------------


def parse_envelope(payload: bytes) -> dict[str, Any]:
    """The event, checked enough to store: an id, a type, content, and the API version we read."""
    try:
        event = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(event, dict) or not str(event.get("id") or "").startswith("ev_") or not event.get("event_type"):
        raise InvalidPayload(
            "The body is not a Chargebee event: it needs an 'id' starting with ev_ and an 'event_type'."
        )
    if not isinstance(event.get("content"), dict):
        raise InvalidPayload(f"Chargebee event {event['id']} has no 'content' object.")
    version = event.get("api_version")
    if version not in (None, API_VERSION):
        raise InvalidPayload(
            f"api_version: the event is in Chargebee API {version}, this hub reads {API_VERSION}; "
            f"set the webhook's API version to {API_VERSION} in Chargebee (Settings > Webhooks)."
        )
    return event


def subject_id(event: dict[str, Any]) -> str:
    """The id of the object the event is about: ``invoice`` for invoice_generated, ``transaction``
    for payment_succeeded, and so on."""
    content = event["content"]
    event_type = str(event["event_type"])
    key = max((k for k in content if event_type.startswith(f"{k}_")), key=len, default="")
    key = key or _SUBJECT_OF.get(event_type.split("_", 1)[0], "")
    obj = content.get(key)
    if not isinstance(obj, dict):
        obj = next((value for value in content.values() if isinstance(value, dict) and value.get("id")), {})
    return str(obj.get("id") or "")


# --- field readers ----------------------------------------------------------------------------------


def _amount(obj: dict[str, Any], key: str, what: str, *, default: int | None = None) -> int:
    """An integer amount in the currency's minor unit; ``default`` when absent, if one is given."""
    value = obj.get(key)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPayload(
            f"{what}: '{key}' must be an integer amount in the currency's minor unit (e.g. cents), got {value!r}."
        )
    return value


def _date(timestamp: object) -> date | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or timestamp <= 0:
        return None
    return datetime.fromtimestamp(timestamp, UTC).date()


def _required_date(obj: dict[str, Any], key: str, what: str) -> date:
    day = _date(obj.get(key))
    if day is None:
        raise InvalidPayload(f"{what}: '{key}' must be a Unix timestamp in seconds, got {obj.get(key)!r}.")
    return day


def _currency(obj: dict[str, Any], what: str, key: str = "currency_code") -> str:
    try:
        return normalize_currency(str(obj.get(key) or ""))
    except CurrencyError as exc:
        raise InvalidPayload(f"{what}: '{key}': {exc}.") from exc


def _quantity(line: dict[str, Any], what: str) -> Decimal:
    raw = line.get("quantity_in_decimal") or line.get("quantity") or 1
    try:
        quantity = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidPayload(f"{what}: 'quantity' {raw!r} is not a number.") from None
    if not quantity.is_finite():
        raise InvalidPayload(f"{what}: 'quantity' {raw!r} is not a number.")
    return quantity


def version_of(obj: dict[str, Any], event: dict[str, Any]) -> int:
    """Milliseconds: Chargebee's resource_version, else updated_at, else when the event occurred."""
    resource_version = obj.get("resource_version")
    if isinstance(resource_version, int) and not isinstance(resource_version, bool) and resource_version > 0:
        return resource_version
    for seconds in (obj.get("updated_at"), event.get("occurred_at")):
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
            return seconds * 1000
    return 0


def _address(data: dict[str, Any] | None) -> dict[str, str]:
    data = data or {}
    line2 = ", ".join(str(data[key]) for key in ("line2", "line3") if data.get(key))
    return {
        "line1": str(data.get("line1") or ""),
        "line2": line2,
        "city": str(data.get("city") or ""),
        "postal_code": str(data.get("zip") or ""),
        "state": str(data.get("state_code") or data.get("state") or ""),
        "country": str(data.get("country") or ""),
    }


def _name(*sources: dict[str, Any]) -> str:
    """The company, else the person's full name, else the email, from the first source that has one."""
    for source in sources:
        if source.get("company"):
            return str(source["company"])
    for source in sources:
        full = " ".join(str(source[key]) for key in ("first_name", "last_name") if source.get(key))
        if full:
            return full
    for source in sources:
        if source.get("email"):
            return str(source["email"])
    return ""


def _tax_id(obj: dict[str, Any]) -> str:
    number = str(obj.get("vat_number") or "")
    prefix = str(obj.get("vat_number_prefix") or "")
    return f"{prefix}{number}" if number and prefix and not number.startswith(prefix) else number


# --- customers --------------------------------------------------------------------------------------


def customer_from_object(obj: dict[str, Any], version: int, *, snapshot: bool = False) -> CustomerData:
    what = f"Chargebee customer {obj.get('id')}"
    if not obj.get("id"):
        raise InvalidPayload("Chargebee customer: 'id' is missing.")
    billing = obj.get("billing_address") or {}
    terms = obj.get("net_term_days")
    tax_id = _tax_id(obj)
    return CustomerData(
        source_id=str(obj["id"]),
        source_version=version,
        name=_name(obj, billing) or str(obj["id"]),
        email=str(obj.get("email") or billing.get("email") or ""),
        currency=_currency(obj, what, "preferred_currency_code") if obj.get("preferred_currency_code") else "",
        tax_id=tax_id,
        tax_id_type="vat" if tax_id else "",
        payment_terms_days=terms if isinstance(terms, int) and not isinstance(terms, bool) else None,
        bill_to=_address(billing),
        snapshot=snapshot,
    )


def _customer_snapshot(invoice: dict[str, Any], customer: dict[str, Any] | None, version: int) -> CustomerData:
    """The invoice's customer as the event shows it; it only fills what the ledger does not know."""
    customer_id = str(invoice.get("customer_id") or "")
    if isinstance(customer, dict) and str(customer.get("id") or "") == customer_id:
        return customer_from_object(customer, version, snapshot=True)
    billing = invoice.get("billing_address") or {}
    tax_id = _tax_id(invoice)
    terms = invoice.get("net_term_days")
    return CustomerData(
        source_id=customer_id,
        source_version=version,
        name=_name(billing) or customer_id,
        email=str(billing.get("email") or ""),
        currency=str(invoice.get("currency_code") or ""),
        tax_id=tax_id,
        tax_id_type="vat" if tax_id else "",
        payment_terms_days=terms if isinstance(terms, int) and not isinstance(terms, bool) and terms else None,
        bill_to=_address(billing),
        sold_to=_address(invoice.get("shipping_address")),
        snapshot=True,
    )


# --- invoices ---------------------------------------------------------------------------------------


def _net_line_amounts(line: dict[str, Any], what: str, *, tax_inclusive: bool) -> tuple[int, int, int, Decimal]:
    """(net amount excluding tax, tax, unit amount, quantity) of a Chargebee line item."""
    gross = _amount(line, "amount", what)
    discount = _amount(line, "discount_amount", what, default=0)
    tax = _amount(line, "tax_amount", what, default=0)
    quantity = _quantity(line, what)
    net = gross - discount - (tax if tax_inclusive else 0)
    unit = _amount(line, "unit_amount", what, default=gross)
    whole = quantity > 0 and quantity == quantity.to_integral_value()
    if quantity * unit != net and whole and net % int(quantity) == 0:
        unit = net // int(quantity)  # the discounted (or tax-exclusive) price of one unit
    return net, tax, unit, quantity


def _invoice_line(line: dict[str, Any], index: int, invoice_id: str, *, tax_inclusive: bool) -> InvoiceLineData:
    what = f"Chargebee invoice {invoice_id} line_items[{index}] ({line.get('id') or 'no id'})"
    net, tax, unit, quantity = _net_line_amounts(line, what, tax_inclusive=tax_inclusive)
    return InvoiceLineData(
        description=str(line.get("description") or line.get("entity_description") or line.get("entity_id") or "Charge"),
        quantity=quantity,
        unit_amount_minor=unit,
        amount_minor=net,
        tax_minor=tax,
        source_line_id=str(line.get("id") or ""),
        # The plan, addon or charge item price; adhoc charges have none.
        price_id=str(line.get("entity_id") or ""),
        period_start=_date(line.get("date_from")),
        period_end=_date(line.get("date_to")),
    )


def _tax_total(obj: dict[str, Any], lines: list[dict[str, Any]], what: str) -> int:
    if obj.get("tax") is not None:
        return _amount(obj, "tax", what)
    taxes = obj.get("taxes") or []
    if taxes:
        return sum(_amount(tax, "amount", f"{what} taxes[{i}]") for i, tax in enumerate(taxes))
    return sum(_amount(line, "tax_amount", f"{what} line_items[{i}]", default=0) for i, line in enumerate(lines))


def _is_write_off(credit_note: dict[str, Any]) -> bool:
    reason = str(credit_note.get("reason_code") or "").lower()
    created_for = str(credit_note.get("create_reason_code") or "").lower().replace("_", " ")
    return reason == "write_off" or created_for == "write off"


def invoice_status(obj: dict[str, Any], what: str, *, deleted: bool = False) -> str:
    status = str(obj.get("status") or "")
    if deleted or obj.get("deleted") is True or status == "voided":
        return "void"
    if status == "paid":
        return "uncollectible" if _amount(obj, "write_off_amount", what, default=0) > 0 else "paid"
    if status in _OPEN_STATUSES:
        return "open"
    if status == "pending":
        raise IgnoredEvent(
            f"{what} is pending (its metered charges are not closed yet); it is posted when Chargebee closes it."
        )
    raise InvalidPayload(
        f"{what}: 'status' {status!r} is not a Chargebee invoice status "
        "(paid, posted, payment_due, not_paid, voided, pending)."
    )


def invoice_from_object(
    obj: dict[str, Any], version: int, *, customer: dict[str, Any] | None = None, deleted: bool = False
) -> InvoiceData:
    invoice_id = str(obj.get("id") or "")
    if not invoice_id:
        raise InvalidPayload("Chargebee invoice: 'id' is missing.")
    what = f"Chargebee invoice {invoice_id}"
    status = invoice_status(obj, what, deleted=deleted)
    if not obj.get("customer_id"):
        raise InvalidPayload(f"{what}: 'customer_id' is missing.")
    if obj.get("line_items_next_offset"):
        raise InvalidPayload(
            f"{what} has more line items than the webhook carries (line_items_next_offset is set); "
            "fetching the rest from the Chargebee API is not supported by this hub version."
        )
    raw_lines = obj.get("line_items") or []
    if not raw_lines:
        raise InvalidPayload(f"{what}: 'line_items' is empty; the hub posts invoices with at least one line.")
    tax_inclusive = obj.get("price_type") == "tax_inclusive"
    lines = tuple(_invoice_line(line, i, invoice_id, tax_inclusive=tax_inclusive) for i, line in enumerate(raw_lines))
    total = _amount(obj, "total", what)
    tax = _tax_total(obj, raw_lines, what)
    paid = _amount(obj, "amount_paid", what, default=0)
    if status == "uncollectible":
        # The hub writes off total - amount_paid. What adjustments and applied credits settled is
        # not part of Chargebee's write_off_amount, so it counts as settled here.
        paid = total - _amount(obj, "write_off_amount", what)
    status_date = None
    if status != "open":
        # Chargebee records no write-off date; the change that made it is the best there is.
        status_at = {"void": obj.get("voided_at"), "paid": obj.get("paid_at")}.get(status)
        status_date = _date(status_at) or _date(version // 1000)
    periods = [line for line in lines if line.period_start and line.period_end]
    return InvoiceData(
        source_id=invoice_id,
        source_version=version,
        number=invoice_id,  # Chargebee's invoice id is its invoice number
        customer=_customer_snapshot(obj, customer, version),
        status=status,
        currency=_currency(obj, what),
        subtotal_minor=total - tax,
        tax_minor=tax,
        total_minor=total,
        amount_paid_minor=paid,
        invoice_date=_required_date(obj, "date", what),
        due_date=_date(obj.get("due_date")),
        lines=lines,
        period_start=min((line.period_start for line in periods), default=None),  # type: ignore[type-var]
        period_end=max((line.period_end for line in periods), default=None),  # type: ignore[type-var]
        status_date=status_date,
    )


# --- payments ---------------------------------------------------------------------------------------


def payment_from_transaction(obj: dict[str, Any], version: int) -> PaymentData:
    txn_id = str(obj.get("id") or "")
    if not txn_id:
        raise InvalidPayload("Chargebee transaction: 'id' is missing.")
    what = f"Chargebee transaction {txn_id}"
    if obj.get("status") not in (None, "success"):
        raise IgnoredEvent(f"{what} has status {obj.get('status')!r}; only successful payments are posted.")
    amount = _amount(obj, "amount", what)
    applications = tuple(
        PaymentApplicationData(
            invoice_source_id=str(link.get("invoice_id") or ""),
            amount_minor=_amount(link, "applied_amount", f"{what} linked_invoices[{i}]"),
        )
        for i, link in enumerate(obj.get("linked_invoices") or [])
    )
    if any(not application.invoice_source_id for application in applications):
        raise InvalidPayload(f"{what}: every linked_invoices entry needs an 'invoice_id'.")
    applied = sum(application.amount_minor for application in applications)
    if applied > amount:
        raise InvalidPayload(
            f"{what}: linked_invoices apply {applied} in total, more than the transaction's amount {amount}."
        )
    settled = obj.get("date")
    if isinstance(settled, bool) or not isinstance(settled, int) or settled <= 0:
        raise InvalidPayload(f"{what}: 'date' must be a Unix timestamp in seconds, got {settled!r}.")
    return PaymentData(
        source_id=txn_id,
        source_version=version,
        customer_source_id=str(obj.get("customer_id") or ""),
        currency=_currency(obj, what),
        amount_minor=amount,
        method=str(obj.get("payment_method") or "chargebee"),
        settled_at=datetime.fromtimestamp(settled, UTC),
        applications=applications,
    )


# --- chargebacks -----------------------------------------------------------------------------------

# A chargeback refund in these states has taken the money from the merchant.
_WITHDRAWN_STATUSES = {"success", "in_progress"}


def _is_chargeback_note(credit_note: dict[str, Any]) -> bool:
    return str(credit_note.get("reason_code") or "").lower() == "chargeback"


def _chargeback_note_of(txn: dict[str, Any], credit_note: object = None) -> str:
    """The chargeback credit note the refund was recorded against (its id), or "" if none."""
    for link in txn.get("linked_credit_notes") or []:
        if isinstance(link, dict) and str(link.get("cn_reason_code") or "").lower() == "chargeback":
            return str(link.get("cn_id") or "")
    if isinstance(credit_note, dict) and _is_chargeback_note(credit_note):
        refunds = [link.get("txn_id") for link in credit_note.get("linked_refunds") or [] if isinstance(link, dict)]
        if not refunds or txn.get("id") in refunds:
            return str(credit_note.get("id") or "")
    return ""


def is_chargeback(txn: dict[str, Any], credit_note: object = None) -> bool:
    """A refund Chargebee (or a person) recorded for a chargeback rather than paid back by choice."""
    if txn.get("type") != "refund":
        return False
    return txn.get("payment_method") == "chargeback" or bool(_chargeback_note_of(txn, credit_note))


def dispute_from_chargeback(
    txn: dict[str, Any], version: int, *, removed_at: int | None = None, credit_note: object = None
) -> DisputeData:
    """The chargeback a refund transaction records, as a dispute named after that transaction: lost
    when booked against a chargeback credit note, open without one, won once removed while open."""
    txn_id = str(txn.get("id") or "")
    if not txn_id:
        raise InvalidPayload("Chargebee chargeback transaction: 'id' is missing.")
    what = f"Chargebee chargeback {txn_id}"
    payment_id = str(txn.get("refunded_txn_id") or txn.get("reference_transaction_id") or "")
    if not payment_id:
        raise InvalidPayload(
            f"{what}: 'refunded_txn_id' is missing; the hub records a chargeback against the payment it takes back."
        )
    status = str(txn.get("status") or "")
    note = _chargeback_note_of(txn, credit_note)
    opened_on = _required_date(txn, "date", what)
    removed = removed_at is not None or txn.get("deleted") is True or status == "voided"
    if removed and note:
        raise InvalidPayload(
            f"{what} on payment {payment_id} was removed in Chargebee after it was booked as lost with credit note "
            f"{note}: the hub posted the loss and never reinstates a lost dispute. Reverse the dispute loss in the "
            "ERP by hand (back to the account the payment came in through)."
        )
    if not removed and status not in _WITHDRAWN_STATUSES:
        raise IgnoredEvent(f"{what} has status {status!r}: no money moved, there is nothing to post.")
    if removed:
        status_out, closed_on = "won", _date(removed_at) or _date(txn.get("voided_at")) or _date(version // 1000)
    elif note:
        closed_on = _date(credit_note.get("date")) if isinstance(credit_note, dict) else None
        status_out, closed_on = "lost", closed_on or opened_on
    else:
        status_out, closed_on = "open", None
    return DisputeData(
        source_id=txn_id,
        source_version=version,
        payment_source_id=payment_id,
        currency=_currency(txn, what),
        amount_minor=_amount(txn, "amount", what),
        status=status_out,
        opened_on=opened_on,
        reason=str(txn.get("fraud_reason") or "chargeback"),
        closed_on=closed_on,
    )


# --- credit notes -----------------------------------------------------------------------------------


def _credit_line(line: dict[str, Any], index: int, memo_id: str, *, tax_inclusive: bool) -> CreditMemoLineData:
    what = f"Chargebee credit note {memo_id} line_items[{index}] ({line.get('id') or 'no id'})"
    net, tax, unit, quantity = _net_line_amounts(line, what, tax_inclusive=tax_inclusive)
    return CreditMemoLineData(
        description=str(line.get("description") or line.get("entity_description") or "Credit"),
        quantity=quantity,
        unit_amount_minor=unit,
        amount_minor=net,
        tax_minor=tax,
        source_line_id=str(line.get("id") or ""),
        invoice_line_source_id=str(line.get("reference_line_item_id") or ""),
    )


def credit_memo_from_object(obj: dict[str, Any], version: int, *, deleted: bool = False) -> CreditMemoData:
    memo_id = str(obj.get("id") or "")
    if not memo_id:
        raise InvalidPayload("Chargebee credit note: 'id' is missing.")
    what = f"Chargebee credit note {memo_id}"
    if _is_write_off(obj):
        raise IgnoredEvent(
            f"{what} records a write-off; the hub posts it as the write-off of invoice "
            f"{obj.get('reference_invoice_id')} (bad debt), not as a credit note."
        )
    if _is_chargeback_note(obj):
        raise IgnoredEvent(
            f"{what} records a chargeback on invoice {obj.get('reference_invoice_id')}; the hub posts it as the "
            "dispute of its chargeback refund (the invoice stays paid), not as a credit note."
        )
    if not obj.get("reference_invoice_id"):
        raise InvalidPayload(
            f"{what}: 'reference_invoice_id' is missing; the hub posts credit notes against an invoice."
        )
    if obj.get("line_items_next_offset"):
        raise InvalidPayload(f"{what} has more line items than the webhook carries (line_items_next_offset is set).")
    raw_lines = obj.get("line_items") or []
    if not raw_lines:
        raise InvalidPayload(f"{what}: 'line_items' is empty.")
    tax_inclusive = obj.get("price_type") == "tax_inclusive"
    lines = tuple(_credit_line(line, i, memo_id, tax_inclusive=tax_inclusive) for i, line in enumerate(raw_lines))
    total = _amount(obj, "total", what)
    tax = _tax_total(obj, raw_lines, what)
    refunded = _amount(obj, "amount_refunded", what, default=0)
    if refunded > total:
        raise InvalidPayload(f"{what}: 'amount_refunded' {refunded} is more than its 'total' {total}.")
    memo_date = _required_date(obj, "date", what)
    void = deleted or obj.get("deleted") is True or obj.get("status") == "voided"
    reason = str(obj.get("create_reason_code") or obj.get("reason_code") or "")
    return CreditMemoData(
        source_id=memo_id,
        source_version=version,
        number=memo_id,
        customer_source_id=str(obj.get("customer_id") or ""),
        invoice_source_id=str(obj["reference_invoice_id"]),
        status="void" if void else "issued",
        currency=_currency(obj, what),
        subtotal_minor=total - tax,
        tax_minor=tax,
        total_minor=total,
        memo_date=memo_date,
        lines=lines,
        reason=reason,
        refunded_minor=refunded,
        status_date=(_date(obj.get("voided_at")) or _date(version // 1000)) if void else memo_date,
    )


# --- events -----------------------------------------------------------------------------------------


def _content_object(event: dict[str, Any], key: str) -> dict[str, Any]:
    obj = event["content"].get(key)
    if not isinstance(obj, dict):
        raise InvalidPayload(f"Chargebee {event['event_type']} event {event['id']}: 'content.{key}' is missing.")
    return obj


def parse_event(event: dict[str, Any]) -> list[LedgerCommand]:
    """Canonical commands for one stored event; raises ``IgnoredEvent`` for types not posted."""
    event_type = str(event.get("event_type"))
    content = event["content"]
    customer = content.get("customer") if isinstance(content.get("customer"), dict) else None
    if event_type in CUSTOMER_EVENTS:
        obj = _content_object(event, "customer")
        return [customer_from_object(obj, version_of(obj, event))]
    if event_type in INVOICE_EVENTS:
        obj = _content_object(event, "invoice")
        deleted = event_type == "invoice_deleted"
        # Deleting is the last thing that happens to an invoice.
        version = max(version_of(obj, event), version_of({}, event)) if deleted else version_of(obj, event)
        return [invoice_from_object(obj, version, customer=customer, deleted=deleted)]
    if event_type in PAYMENT_EVENTS:
        txn = _content_object(event, "transaction")
        commands: list[LedgerCommand] = []
        invoice = content.get("invoice")
        if isinstance(invoice, dict):
            commands.append(invoice_from_object(invoice, version_of(invoice, event), customer=customer))
        commands.append(payment_from_transaction(txn, version_of(txn, event)))
        return commands
    if event_type in CREDIT_NOTE_EVENTS:
        obj = _content_object(event, "credit_note")
        deleted = event_type == "credit_note_deleted"
        version = max(version_of(obj, event), version_of({}, event)) if deleted else version_of(obj, event)
        return [credit_memo_from_object(obj, version, deleted=deleted)]
    if event_type in REFUND_EVENTS:
        obj = content.get("credit_note")
        txn = content.get("transaction")
        if isinstance(txn, dict) and is_chargeback(txn, obj):
            return [dispute_from_chargeback(txn, version_of(txn, event), credit_note=obj)]
        if not isinstance(obj, dict):
            txn = content.get("transaction") or {}
            raise IgnoredEvent(
                f"Chargebee payment_refunded event {event.get('id')} (refund {txn.get('id', '?')}) carries no "
                "credit note; the hub records refunds through the credit note they refund."
            )
        return [credit_memo_from_object(obj, version_of(obj, event))]
    if event_type in TRANSACTION_EVENTS:
        return _transaction_commands(event, event_type)
    raise IgnoredEvent(f"Chargebee event type {event_type} is not posted by this hub version.")


def _transaction_commands(event: dict[str, Any], event_type: str) -> list[LedgerCommand]:
    """A payment (new, or with an excess payment applied to one more invoice), or a chargeback."""
    txn = _content_object(event, "transaction")
    deleted = event_type == "transaction_deleted" or txn.get("deleted") is True
    # Deleting is the last thing that happens to a transaction.
    version = max(version_of(txn, event), version_of({}, event)) if deleted else version_of(txn, event)
    credit_note = event["content"].get("credit_note")
    if is_chargeback(txn, credit_note):
        removed_at = event.get("occurred_at") if deleted else None
        return [dispute_from_chargeback(txn, version, removed_at=removed_at or None, credit_note=credit_note)]
    kind = str(txn.get("type") or "")
    if kind == "payment" and deleted:
        raise InvalidPayload(
            f"Chargebee deleted payment {txn.get('id')} of customer {txn.get('customer_id')}; the hub does not take "
            "back a payment it posted. If the ERP holds it, reverse it there by hand."
        )
    if kind == "payment":
        return [payment_from_transaction(txn, version)]
    raise IgnoredEvent(
        f"Chargebee {event_type} event {event.get('id')} is about a {kind or 'untyped'} transaction, which is not "
        "posted on its own: refunds reach the hub through the credit note they refund (payment_refunded), "
        "authorizations move no money, and payment reversals are not posted by this hub version."
    )


class ChargebeeAdapter(SourceAdapter):
    kind = "chargebee"
    label = "Chargebee"
    # Never the Authorization header: it is the credential itself.
    kept_headers = ("content-type", "user-agent", "x-correlation-id")

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: list[str]) -> Envelope:
        authenticate(headers, secrets)
        event = parse_envelope(body)
        return Envelope(event_id=str(event["id"]), event_type=str(event["event_type"]), object_id=subject_id(event))

    def parse(self, body: bytes) -> list[LedgerCommand]:
        return parse_event(parse_envelope(body))
