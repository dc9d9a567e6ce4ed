"""Lago: webhook signatures (HMAC or JWT), and Lago objects into canonical ledger commands.

Lago posts ``{"webhook_type": "invoice.created", "object_type": "invoice", "organization_id": "…",
"invoice": {…}}`` and signs the exact body in the way chosen for the webhook endpoint in Lago:

- ``X-Lago-Signature-Algorithm: hmac``: ``X-Lago-Signature`` is the base64 HMAC-SHA256 of the body
  with the organization's HMAC key (Lago: Developers > Webhooks > HMAC signature token);
- ``X-Lago-Signature-Algorithm: jwt``: ``X-Lago-Signature`` is an RS256 JWT whose ``data`` claim is
  the body and whose ``iss`` is the Lago API URL, checked with the instance's public key
  (``GET /api/v1/webhooks/public_key``, which answers it base64-encoded). ``iss`` must be present but
  its value is not pinned: a self-hosted Lago names its own URL, and the key already names the instance.

A source's secrets are HMAC keys and public keys (PEM, or the base64 text the API returns); every one
of the right kind is tried, so either can be rotated.

Event id: ``X-Lago-Unique-Key``, the id of Lago's webhook record, which stays the same on every retry
of that webhook. Older Lago versions do not send it: the id is then derived from the webhook type, the
object's lago_id and its updated_at.

Identity: every record is named by its ``lago_id``, which Lago assigns and never changes (a customer's
``external_id`` belongs to the billing user's own application). ``source_version`` is the object's
``updated_at`` in milliseconds since the epoch.

Amounts: an invoice is posted at its total including taxes, before credit notes and purchased prepaid
credits are deducted from what the customer owes (those deductions are settlements from the customer's
credit, not price changes). Its lines are the non-zero fees at their amount before coupons, plus one
negative line for the coupons, one for progressive billing credit and one for granted (free) wallet
credits, which is how Lago computes what is charged: free credits are a discount, no money backs them.

Status mapping (Lago ``status`` / ``payment_status`` → ledger):

- ``finalized`` + ``pending``/``failed`` → open (Lago keeps a failed payment due and retries it);
  ``finalized`` + ``succeeded`` → paid. ``draft`` is ignored until Lago finalizes it.
- ``voided`` with nothing paid → void (cancelled in the ERP).
- ``voided`` with money already paid on it (``total_paid_amount_cents`` > 0) → uncollectible.
  **Lago has no bad-debt write-off**: no uncollectible status, no write-off call. Voiding is the only
  way to stop claiming what is left of an invoice, and Lago keeps the cash already received (unless a
  credit note refunds it). The ERP cannot void an invoice that has payments, and what Lago drops is
  exactly a receivable given up on, so the hub writes the unpaid rest off to bad debts (``write_off``,
  after the payments), the way the Stripe ``uncollectible`` status is posted.
- ``invoice_type: credit`` (a purchase of wallet credits) is not a sale: once paid, its cash is the
  customer's credit (unapplied cash, ``receive_on_account``), named ``<invoice>:payment``. Lago's
  payment record for it names an invoice the ledger never holds, so it is kept, never posted: the cash
  reaches the ERP once.

Payments. Lago's payment records (``payment.succeeded`` for payment providers, ``payment_receipt.created``
for every succeeded payment, manual ones included, when receipts are on) are the payments, named by
their ``lago_id`` and applied to their invoice, so an invoice paid in several parts is several
payments. An invoice's ``total_paid_amount_cents`` is the sum of those records, so when Lago reports an
invoice paid, the hub posts from the invoice only what no record covers (an invoice marked paid with
``PUT /invoices/{id}`` and ``payment_status: succeeded``), as one payment named ``<invoice>:payment``.
Lago sends no webhook for a manual payment except its receipt, and receipts are an option. So when
the source has Lago API settings (``api_key``, and ``base_url`` for the EU cluster or a self-hosted
Lago), every invoice event that shows money paid also reads the invoice's payment records back
(``GET /api/v1/payments?invoice_id=``) and posts them, named by their ``lago_id`` as above: a record the
hub already has changes nothing. Without API settings, turn payment receipts on in Lago and subscribe
the webhook endpoint to ``payment.succeeded`` and ``payment_receipt.created``. A payment of a payment
request that covers several invoices does not say how much went to each: it is not posted (the event
is kept with a message for finance). A Lago API refusal (4xx) fails the event with Lago's answer; a
429, 5xx or timeout leaves it received, and the inbox sweeper tries again.

Customer credit. Credits used by an invoice are applied to it from the customer's credit
(``apply_credit``, no new cash): purchased prepaid credits as ``<invoice>:prepaid-credits``, credit
notes' credit as ``<invoice>:credit-notes``. The invoice's ``amount_paid_minor`` counts them, so what
it leaves open is what Lago says is due (plus what credit notes issued on it offset, which reach the
ERP as credit notes). Lago cannot be over-paid (a manual payment larger
than what is due is refused; providers charge what is due): buying prepaid credits is how a customer
pays ahead, and it is posted as the hub posts an over-payment (customer credit, later applied).

Disputes. Lago reports only a lost dispute (``invoice.payment_dispute_lost``), naming the invoice, not
the payment or the amount; it has no dispute-opened or dispute-won event, so "dispute won" has no
Lago form. A lost dispute is posted as one opened and lost at once (funds withdrawn, then lost) for
what Lago recorded as paid on the invoice, against the invoice's payment (``<invoice>:payment``); the
dispute is ``<invoice>:dispute``. Lago's disputes come from card providers, which charge what is due,
so this is the charged amount unless manual payments were recorded on the invoice before.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import jwt
import requests

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

SIGNATURE_HEADER = "X-Lago-Signature"
ALGORITHM_HEADER = "X-Lago-Signature-Algorithm"
UNIQUE_KEY_HEADER = "X-Lago-Unique-Key"

CUSTOMER_EVENTS = {"customer.created", "customer.updated"}
INVOICE_EVENTS = {
    "invoice.created",
    "invoice.one_off_created",
    "invoice.paid_credit_added",
    "invoice.voided",
    "invoice.payment_status_updated",
}
CREDIT_NOTE_EVENTS = {"credit_note.created"}
PAYMENT_EVENTS = {"payment.succeeded", "payment_receipt.created"}
DISPUTE_LOST_EVENT = "invoice.payment_dispute_lost"
SUPPORTED_EVENTS = CUSTOMER_EVENTS | INVOICE_EVENTS | CREDIT_NOTE_EVENTS | PAYMENT_EVENTS | {DISPUTE_LOST_EVENT}

COUPONS_LINE = "coupons"
PROGRESSIVE_BILLING_LINE = "progressive_billing_credit"
FREE_CREDITS_LINE = "granted_credits"
# The payments that settle part of an invoice from the customer's credit, named <invoice><suffix>.
PREPAID_CREDITS_SUFFIX = ":prepaid-credits"
CREDIT_NOTES_SUFFIX = ":credit-notes"
DISPUTE_SUFFIX = ":dispute"


DEFAULT_API_URL = "https://api.getlago.com"
PAGE_SIZE = 100


# --- authenticity --------------------------------------------------------------------------------


def public_key_pem(secret: str) -> str | None:
    """The PEM public key a secret holds (as PEM, PEM with escaped newlines, or base64 of the PEM),
    or None when the secret is an HMAC key."""
    text = secret.strip()
    if text.startswith("-----BEGIN"):
        text = text.replace("\\n", "\n")
        return text if "PUBLIC KEY-----" in text.splitlines()[0] else None
    try:
        decoded = base64.b64decode(text, validate=False).decode("ascii").strip()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if decoded.startswith("-----BEGIN") and "PUBLIC KEY-----" in decoded.splitlines()[0] else None


def _verify_hmac(body: bytes, signature: str, secrets: list[str]) -> None:
    keys = [secret for secret in secrets if public_key_pem(secret) is None]
    if not keys:
        raise SignatureError(
            "The webhook is signed with HMAC but this source only has JWT public keys: add the HMAC signature "
            "token from Lago (Developers > Webhooks) to the source's secrets."
        )
    received = signature.encode("utf-8", errors="replace")
    for key in keys:
        expected = base64.b64encode(hmac.new(key.encode("utf-8"), body, hashlib.sha256).digest())
        if hmac.compare_digest(expected, received):
            return
    raise SignatureError(
        f"{SIGNATURE_HEADER} does not match the body for any configured HMAC key: the body was altered, "
        "or Lago signed it with another key."
    )


def _verify_jwt(body: bytes, token: str, secrets: list[str]) -> None:
    keys = [pem for secret in secrets if (pem := public_key_pem(secret))]
    if not keys:
        raise SignatureError(
            "The webhook is signed with a JWT but this source has no Lago public key: add the key from "
            "GET /api/v1/webhooks/public_key to the source's secrets."
        )
    unreadable = 0
    for pem in keys:
        try:
            claims = jwt.decode(token, pem, algorithms=["RS256"], options={"require": ["iss"]})
        except jwt.InvalidSignatureError:
            continue
        except jwt.InvalidKeyError:
            unreadable += 1
            continue
        except jwt.PyJWTError as exc:
            raise SignatureError(f"{SIGNATURE_HEADER} is not a valid Lago JWT: {exc}.") from exc
        if claims.get("data") != body.decode("utf-8", errors="replace"):
            raise SignatureError(
                f"{SIGNATURE_HEADER} was signed by Lago for another body: this body was altered after signing."
            )
        return
    hint = f" ({unreadable} configured public key(s) could not be read: check them)" if unreadable else ""
    raise SignatureError(f"{SIGNATURE_HEADER} was not signed by any configured Lago public key{hint}.")


def verify_signature(body: bytes, headers: Mapping[str, str], secrets: list[str]) -> None:
    """Accept the body if a configured HMAC key or public key signed it; ``headers`` are lower case."""
    if not secrets:
        raise SignatureError("No webhook secret is configured for this source; the event was not accepted.")
    signature = (headers.get(SIGNATURE_HEADER.lower()) or "").strip()
    if not signature:
        raise SignatureError(f"Missing {SIGNATURE_HEADER} header.")
    algorithm = (headers.get(ALGORITHM_HEADER.lower()) or "").strip().lower()
    if not algorithm:
        raise SignatureError(
            f"Missing {ALGORITHM_HEADER} header: it must say 'hmac' or 'jwt' (Lago versions that do not send it "
            "are not supported)."
        )
    if algorithm == "hmac":
        _verify_hmac(body, signature, secrets)
    elif algorithm == "jwt":
        _verify_jwt(body, signature, secrets)
    else:
        raise SignatureError(f"Unknown {ALGORITHM_HEADER} {algorithm[:20]!r}: expected 'hmac' or 'jwt'.")


# --- envelope ------------------------------------------------------------------------------------


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The webhook, checked enough to store: a type and the object named by object_type."""
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(f"The body is not valid JSON: {exc}") from exc
    if not isinstance(message, dict) or not message.get("webhook_type") or not isinstance(message["webhook_type"], str):
        raise InvalidPayload("The body is not a Lago webhook: it needs 'webhook_type' and 'object_type'.")
    object_type = message.get("object_type")
    if not isinstance(object_type, str) or not isinstance(message.get(object_type), dict):
        raise InvalidPayload(
            f"The Lago webhook {message['webhook_type']} has no object under its object_type {object_type!r}."
        )
    return message


def _object(message: dict[str, Any]) -> dict[str, Any]:
    """The record the webhook is about: the invoice a lost dispute wraps
    (``{"payment_dispute_lost": {"invoice": {...}}}``), the payment a receipt is for."""
    obj = message[message["object_type"]]
    if "lago_id" not in obj and isinstance(obj.get("invoice"), dict):
        return obj["invoice"]
    if message["object_type"] == "payment_receipt" and isinstance(obj.get("payment"), dict):
        return obj["payment"]
    return obj


def event_id(message: dict[str, Any], unique_key: str | None, body: bytes) -> str:
    if unique_key and unique_key.strip():
        return unique_key.strip()[:255]
    obj = _object(message)
    if obj.get("lago_id") and obj.get("updated_at"):
        return f"{message['webhook_type']}:{obj['lago_id']}:{obj['updated_at']}"
    return f"{message['webhook_type']}:sha256:{hashlib.sha256(body).hexdigest()}"


# --- values --------------------------------------------------------------------------------------


def _int(obj: dict[str, Any], key: str, what: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPayload(f"{what}: '{key}' must be an integer amount in cents (minor units), got {value!r}.")
    return value


def _optional_int(obj: dict[str, Any], key: str, what: str) -> int:
    return 0 if obj.get(key) is None else _int(obj, key, what)


def _text(value: object) -> str:
    return str(value).strip() if value is not None else ""


def _required_id(obj: dict[str, Any], what: str) -> str:
    value = _text(obj.get("lago_id"))
    if not value:
        raise InvalidPayload(f"{what} has no 'lago_id'.")
    return value


def _datetime(obj: dict[str, Any], key: str, what: str) -> datetime | None:
    value = obj.get(key)
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise InvalidPayload(f"{what}: '{key}' must be an ISO 8601 date or time, got {value!r}.") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _date(obj: dict[str, Any], key: str, what: str) -> date | None:
    moment = _datetime(obj, key, what)
    return moment.date() if moment else None


def _version(obj: dict[str, Any], what: str) -> int:
    updated = _datetime(obj, "updated_at", what)
    if updated is None:
        raise InvalidPayload(f"{what} has no 'updated_at'; it orders the updates of the record.")
    return int(updated.timestamp() * 1000)


def _currency(obj: dict[str, Any], what: str) -> str:
    try:
        return normalize_currency(_text(obj.get("currency")))
    except CurrencyError as exc:
        raise InvalidPayload(f"{what}: 'currency' {exc}.") from exc


def _quantity(value: object, what: str) -> Decimal:
    try:
        quantity = Decimal(_text(value) or "1")
    except InvalidOperation as exc:
        raise InvalidPayload(f"{what}: 'units' {value!r} is not a number.") from exc
    if not quantity.is_finite():
        raise InvalidPayload(f"{what}: 'units' {value!r} is not a number.")
    return quantity


def _rate(fee: dict[str, Any]) -> Decimal:
    try:
        rate = Decimal(str(fee.get("taxes_rate") or 0))
    except InvalidOperation:
        return Decimal(0)
    return rate if rate.is_finite() and rate > 0 else Decimal(0)


def _unit_amount(amount: int, quantity: Decimal) -> int:
    if quantity > 0 and quantity == quantity.to_integral_value() and amount % int(quantity) == 0:
        return amount // int(quantity)
    return amount  # the posting carries it as one unit of the amount


def _allocate(total: int, weights: list[Decimal]) -> list[int]:
    """``total`` split in proportion to ``weights`` (largest remainder), summing exactly to ``total``."""
    whole = sum(weights)
    if not weights or whole <= 0:
        return [0] * len(weights)
    if total < 0:
        return [-share for share in _allocate(-total, weights)]
    exact = [Decimal(total) * weight / whole for weight in weights]
    shares = [int(part) for part in exact]
    order = sorted(range(len(exact)), key=lambda index: (-(exact[index] - shares[index]), index))
    for index in order[: total - sum(shares)]:
        shares[index] += 1
    return shares


# --- customers -----------------------------------------------------------------------------------


def _address(obj: dict[str, Any]) -> dict[str, str]:
    return {
        "line1": _text(obj.get("address_line1")),
        "line2": _text(obj.get("address_line2")),
        "city": _text(obj.get("city")),
        "postal_code": _text(obj.get("zipcode")),
        "state": _text(obj.get("state")),
        "country": _text(obj.get("country")),
    }


def customer_from_object(obj: dict[str, Any], *, snapshot: bool = False) -> CustomerData:
    what = f"Customer {obj.get('external_id') or obj.get('lago_id') or '?'}"
    person = " ".join(part for part in (_text(obj.get("firstname")), _text(obj.get("lastname"))) if part)
    terms = obj.get("net_payment_term")
    currency = _currency(obj, what) if _text(obj.get("currency")) else ""
    shipping = obj.get("shipping_address")
    return CustomerData(
        source_id=_required_id(obj, what),
        source_version=_version(obj, what),
        # The legal name is what belongs on an accounting document; name is Lago's display name.
        name=_text(obj.get("legal_name")) or _text(obj.get("name")) or person or _text(obj.get("external_id")),
        # Lago accepts several addresses separated by commas; the first is the billing contact.
        email=_text(obj.get("email")).split(",")[0].strip(),
        currency=currency,
        tax_id=_text(obj.get("tax_identification_number")),
        payment_terms_days=terms if isinstance(terms, int) and not isinstance(terms, bool) else None,
        bill_to=_address(obj),
        sold_to=_address(shipping) if isinstance(shipping, dict) and any(shipping.values()) else {},
        snapshot=snapshot,
    )


def _customer_of(obj: dict[str, Any], what: str) -> dict[str, Any]:
    customer = obj.get("customer")
    if not isinstance(customer, dict):
        raise InvalidPayload(f"{what} carries no 'customer' object.")
    return customer


# --- invoices ------------------------------------------------------------------------------------


def _fee_description(fee: dict[str, Any]) -> str:
    item = fee.get("item") if isinstance(fee.get("item"), dict) else {}
    return (
        _text(item.get("invoice_display_name"))
        or _text(item.get("name"))
        or _text(fee.get("description"))
        or _text(item.get("code"))
        or "Fee"
    )


def _fee_line(fee: dict[str, Any], what: str) -> InvoiceLineData | None:
    fee_what = f"{what} fee {fee.get('lago_id') or '?'}"
    amount = _int(fee, "amount_cents", fee_what)
    tax = _int(fee, "taxes_amount_cents", fee_what)
    if amount == 0 and tax == 0:
        return None
    quantity = _quantity(fee.get("units"), fee_what)
    item = fee.get("item") if isinstance(fee.get("item"), dict) else {}
    return InvoiceLineData(
        description=_fee_description(fee),
        quantity=quantity,
        unit_amount_minor=_unit_amount(amount, quantity),
        amount_minor=amount,
        tax_minor=tax,
        source_line_id=_text(fee.get("lago_id")),
        product_source_id=_text(item.get("code")),
        product_name=_text(item.get("name")),
        price_id=_text(fee.get("lago_charge_id")) or _text(fee.get("lago_fixed_charge_id")),
        # Lago names the period from_date/to_date; older versions from_datetime/to_datetime.
        period_start=_date(fee, "from_date", fee_what) or _date(fee, "from_datetime", fee_what),
        period_end=_date(fee, "to_date", fee_what) or _date(fee, "to_datetime", fee_what),
    )


def _deduction_line(invoice_id: str, kind: str, description: str, amount: int) -> InvoiceLineData:
    return InvoiceLineData(
        description=description,
        quantity=Decimal(1),
        unit_amount_minor=-amount,
        amount_minor=-amount,
        source_line_id=f"{invoice_id}:{kind}",
        price_id=kind,
    )


def _settle_tax_rounding(lines: list[InvoiceLineData], invoice_tax: int) -> list[InvoiceLineData]:
    """Lago rounds each fee's tax, but the invoice's tax from their unrounded sum: the two can differ
    by up to a cent per taxed fee. That difference goes to the most taxed lines so the lines add up to
    the invoice; a larger one is left for the posting planner to report."""
    difference = invoice_tax - sum(line.tax_minor for line in lines)
    taxed = sorted((i for i, line in enumerate(lines) if line.tax_minor), key=lambda i: -lines[i].tax_minor)
    if difference == 0 or abs(difference) > len(taxed):
        return lines
    step = 1 if difference > 0 else -1
    settled = list(lines)
    for index in taxed[: abs(difference)]:
        settled[index] = dataclasses.replace(settled[index], tax_minor=settled[index].tax_minor + step)
    return settled


def _payment_provider(customer: dict[str, Any]) -> str:
    configuration = customer.get("billing_configuration")
    provider = configuration.get("payment_provider") if isinstance(configuration, dict) else None
    return _text(provider) or "manual"


@dataclasses.dataclass(frozen=True)
class Settlement:
    """How Lago settled an invoice, in cents: cash its payment records hold, cash it was marked paid
    with and no record holds, and the customer's credit it used."""

    recorded: int  # total_paid_amount_cents: the sum of Lago's payment records on it
    marked: int  # paid in Lago's eyes with no payment record (payment_status set by hand)
    prepaid_credits: int  # purchased wallet credits used
    credit_notes: int  # credit notes' credit used

    @property
    def total(self) -> int:
        return self.recorded + self.marked + self.prepaid_credits + self.credit_notes


def _granted_and_purchased(obj: dict[str, Any], what: str) -> tuple[int, int]:
    """Wallet credits the invoice used: (granted for free, purchased). Lago sends the split since
    2025; before it, every prepaid credit is taken as purchased."""
    prepaid = _optional_int(obj, "prepaid_credit_amount_cents", what)
    granted = _optional_int(obj, "prepaid_granted_credit_amount_cents", what)
    purchased = (
        prepaid - granted
        if obj.get("prepaid_purchased_credit_amount_cents") is None
        else _int(obj, "prepaid_purchased_credit_amount_cents", what)
    )
    if granted < 0 or purchased < 0 or granted + purchased != prepaid:
        raise InvalidPayload(
            f"{what}: prepaid credits of {prepaid} cents do not split into {granted} granted and {purchased} purchased."
        )
    return granted, purchased


def settlement_of(obj: dict[str, Any], what: str) -> Settlement:
    _, purchased = _granted_and_purchased(obj, what)
    recorded = _optional_int(obj, "total_paid_amount_cents", what)
    due = _int(obj, "total_amount_cents", what)  # after credit notes and prepaid credits
    marked = 0
    if obj.get("payment_status") == "succeeded" and obj.get("status") != "voided":
        # Paid in full: the amount due less what credit notes offset against it is cash.
        marked = max(0, due - _optional_int(obj, "total_offsetted_credit_note_amount_cents", what) - recorded)
    return Settlement(recorded, marked, purchased, _optional_int(obj, "credit_notes_amount_cents", what))


def invoice_from_object(obj: dict[str, Any]) -> InvoiceData:
    invoice_id = _required_id(obj, "Invoice")
    what = f"Invoice {obj.get('number') or invoice_id}"
    lago_status = obj.get("status")
    if lago_status not in ("finalized", "voided"):
        raise IgnoredEvent(f"{what} is {lago_status!r} in Lago: only finalized and voided invoices are posted.")
    settled = settlement_of(obj, what)
    if lago_status == "voided":
        # Voiding is Lago's only way to give up on what is left; money kept makes it a write-off.
        status = "uncollectible" if settled.recorded > 0 else "void"
    elif obj.get("payment_status") == "succeeded":
        status = "paid"
    else:
        status = "open"
    customer = customer_from_object(_customer_of(obj, what), snapshot=True)
    version = _version(obj, what)
    granted, _ = _granted_and_purchased(obj, what)
    subtotal = _int(obj, "sub_total_excluding_taxes_amount_cents", what) - granted
    tax = _int(obj, "taxes_amount_cents", what)
    total = _int(obj, "sub_total_including_taxes_amount_cents", what) - granted

    fees = obj.get("fees")
    if not isinstance(fees, list):
        raise InvalidPayload(f"{what} carries no 'fees' list; the hub posts an invoice with its fees.")
    lines = [line for fee in fees if isinstance(fee, dict) and (line := _fee_line(fee, what)) is not None]
    coupons = _optional_int(obj, "coupons_amount_cents", what)
    if coupons:
        lines.append(_deduction_line(invoice_id, COUPONS_LINE, "Coupons", coupons))
    progressive = _optional_int(obj, "progressive_billing_credit_amount_cents", what)
    if progressive:
        lines.append(_deduction_line(invoice_id, PROGRESSIVE_BILLING_LINE, "Usage already billed", progressive))
    if granted:
        lines.append(_deduction_line(invoice_id, FREE_CREDITS_LINE, "Free credits", granted))
    if not lines:
        if total == 0:
            raise IgnoredEvent(f"{what} is for zero {obj.get('currency') or ''}: there is nothing to post.".strip())
        raise InvalidPayload(f"{what} has a total of {total} cents but no fee with an amount.")
    lines = _settle_tax_rounding(lines, tax)

    status_date = None
    if status in ("void", "uncollectible"):
        status_date = _date(obj, "voided_at", what) or _date(obj, "updated_at", what)
    elif status == "paid":
        status_date = _date(obj, "updated_at", what)
    invoice_date = _date(obj, "issuing_date", what)
    if invoice_date is None:
        raise InvalidPayload(f"{what} has no 'issuing_date'.")
    starts = [line.period_start for line in lines if line.period_start]
    ends = [line.period_end for line in lines if line.period_end]
    return InvoiceData(
        source_id=invoice_id,
        source_version=version,
        number=_text(obj.get("number")),
        customer=customer,
        status=status,
        currency=_currency(obj, what),
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=total,
        amount_paid_minor=settled.total,
        invoice_date=invoice_date,
        due_date=_date(obj, "payment_due_date", what),
        lines=tuple(lines),
        period_start=min(starts) if starts else None,
        period_end=max(ends) if ends else None,
        status_date=status_date,
    )


def payment_id(invoice_id: str) -> str:
    """The payment of an invoice Lago reports paid without a payment record for it."""
    return f"{invoice_id}:payment"


def payment_from_paid_invoice(obj: dict[str, Any], invoice: InvoiceData) -> PaymentData | None:
    """What the invoice shows paid that no Lago payment record covers (the records arrive as
    payments of their own), or None."""
    marked = settlement_of(obj, f"Invoice {invoice.number or invoice.source_id}").marked
    if invoice.status != "paid" or marked <= 0:
        return None
    return PaymentData(
        source_id=payment_id(invoice.source_id),
        source_version=invoice.source_version,
        customer_source_id=invoice.customer.source_id,
        currency=invoice.currency,
        amount_minor=marked,
        method=_payment_provider(obj["customer"]),
        settled_at=datetime.fromtimestamp(invoice.source_version / 1000, UTC),  # when Lago saw it paid
        applications=(PaymentApplicationData(invoice_source_id=invoice.source_id, amount_minor=marked),),
    )


def credits_used(obj: dict[str, Any], invoice: InvoiceData) -> list[PaymentData]:
    """The customer's credit Lago used on the invoice when it finalized it, applied to it from the
    customer's credit: purchased prepaid credits, and credit notes' credit."""
    if invoice.status == "void":
        return []
    settled = settlement_of(obj, f"Invoice {invoice.number or invoice.source_id}")
    used_on = datetime.combine(invoice.invoice_date, datetime.min.time(), UTC)
    return [
        PaymentData(
            source_id=f"{invoice.source_id}{suffix}",
            source_version=invoice.source_version,
            customer_source_id=invoice.customer.source_id,
            currency=invoice.currency,
            amount_minor=amount,
            method=method,
            settled_at=used_on,
            applications=(
                PaymentApplicationData(invoice_source_id=invoice.source_id, amount_minor=amount, from_credit=True),
            ),
            unapplied_is_credit=False,
        )
        for suffix, amount, method in (
            (PREPAID_CREDITS_SUFFIX, settled.prepaid_credits, "prepaid_credits"),
            (CREDIT_NOTES_SUFFIX, settled.credit_notes, "credit_note"),
        )
        if amount > 0
    ]


def credit_purchase(obj: dict[str, Any]) -> list[LedgerCommand]:
    """A credit invoice sells wallet credits: not revenue, but cash the customer pays ahead. Once
    paid, that cash is the customer's credit (unapplied cash), named ``<invoice>:payment``."""
    invoice_id = _required_id(obj, "Invoice")
    what = f"Credit purchase invoice {obj.get('number') or invoice_id}"
    if obj.get("status") != "finalized" or obj.get("payment_status") != "succeeded":
        raise IgnoredEvent(
            f"{what} sells prepaid credits and is {obj.get('status')}/{obj.get('payment_status')} in Lago: it is not "
            "revenue, and its cash is posted as the customer's credit once Lago reports it paid."
        )
    customer = customer_from_object(_customer_of(obj, what), snapshot=True)
    amount = _int(obj, "total_amount_cents", what)
    if amount <= 0:
        raise IgnoredEvent(f"{what} is for zero {obj.get('currency') or ''}: no money came in.".strip())
    version = _version(obj, what)
    return [
        customer,
        PaymentData(
            source_id=payment_id(invoice_id),
            source_version=version,
            customer_source_id=customer.source_id,
            currency=_currency(obj, what),
            amount_minor=amount,
            method=_payment_provider(obj["customer"]),
            settled_at=datetime.fromtimestamp(version / 1000, UTC),
            unapplied_is_credit=True,
        ),
    ]


# --- payments ------------------------------------------------------------------------------------


def payment_from_object(obj: dict[str, Any]) -> PaymentData:
    """One of Lago's payment records (``payment.succeeded``, or the payment a receipt is for),
    applied to the invoice it pays."""
    lago_id = _required_id(obj, "Payment")
    numbers = ", ".join(_text(number) for number in obj.get("invoice_numbers") or [] if number)
    what = f"Payment {lago_id}" + (f" of invoice {numbers}" if numbers else "")
    if obj.get("payment_status") != "succeeded":
        raise IgnoredEvent(f"{what} is {obj.get('payment_status')!r} in Lago: only succeeded payments are posted.")
    invoices = [_text(invoice) for invoice in obj.get("invoice_ids") or [] if _text(invoice)]
    if not invoices:
        raise InvalidPayload(f"{what} names no invoice ('invoice_ids').")
    amount = _int(obj, "amount_cents", what)
    if amount <= 0:
        raise InvalidPayload(f"{what}: 'amount_cents' must be positive, got {amount}.")
    if len(invoices) > 1:
        raise IgnoredEvent(
            f"{what} pays a payment request for {len(invoices)} invoices ({numbers or ', '.join(invoices)}) and Lago "
            f"does not say how much of its {amount} cents went to each: it is not posted. Record it against those "
            "invoices in the ERP by hand."
        )
    paid_at = _datetime(obj, "created_at", what)
    if paid_at is None:
        raise InvalidPayload(f"{what} has no 'created_at'.")
    try:
        currency = normalize_currency(_text(obj.get("amount_currency")))
    except CurrencyError as exc:
        raise InvalidPayload(f"{what}: 'amount_currency' {exc}.") from exc
    method = (
        "manual"
        if obj.get("type") == "manual"
        else _text(obj.get("payment_provider_type")) or _text(obj.get("payment_provider_code")) or "manual"
    )
    customer_id = _text(obj.get("lago_customer_id"))
    if not customer_id:
        raise InvalidPayload(f"{what} has no 'lago_customer_id'.")
    return PaymentData(
        source_id=lago_id,
        source_version=int(paid_at.timestamp() * 1000),  # a payment record does not change once succeeded
        customer_source_id=customer_id,
        currency=currency,
        amount_minor=amount,
        method=method,
        settled_at=paid_at,
        applications=(PaymentApplicationData(invoice_source_id=invoices[0], amount_minor=amount),),
    )


# --- disputes ------------------------------------------------------------------------------------


def dispute_from_lost_payment(message: dict[str, Any]) -> DisputeData:
    """``invoice.payment_dispute_lost``: the invoice's payment was disputed and the dispute lost. Lago
    sends nothing when a dispute opens or is won, so it is posted as opened and lost at once."""
    obj = _object(message)
    invoice_id = _required_id(obj, "Invoice")
    what = f"Invoice {obj.get('number') or invoice_id}"
    settled = settlement_of(obj, what)
    taken_back = settled.recorded + settled.marked
    if taken_back <= 0:
        raise IgnoredEvent(f"Lago lost a payment dispute on {what}, but recorded no payment on it: no money moved.")
    lost_on = _date(obj, "payment_dispute_lost_at", what) or _date(obj, "updated_at", what)
    if lost_on is None:
        raise InvalidPayload(f"{what} has no 'payment_dispute_lost_at'.")
    wrapper = message[message["object_type"]]
    return DisputeData(
        source_id=f"{invoice_id}{DISPUTE_SUFFIX}",
        source_version=_version(obj, what),
        payment_source_id=payment_id(invoice_id),
        currency=_currency(obj, what),
        amount_minor=taken_back,
        status="lost",
        opened_on=lost_on,
        reason=_text(wrapper.get("provider_error") if isinstance(wrapper, dict) else "") or "Payment dispute lost",
        closed_on=lost_on,
    )


# --- credit notes --------------------------------------------------------------------------------


def credit_memo_from_object(obj: dict[str, Any]) -> CreditMemoData:
    memo_id = _required_id(obj, "Credit note")
    what = f"Credit note {obj.get('number') or memo_id}"
    invoice_id = _text(obj.get("lago_invoice_id"))
    if not invoice_id:
        raise InvalidPayload(f"{what} has no 'lago_invoice_id'; the hub posts credit notes against an invoice.")
    customer_id = _required_id(_customer_of(obj, what), f"{what}: its customer")
    subtotal = _int(obj, "sub_total_excluding_taxes_amount_cents", what)
    tax = _int(obj, "taxes_amount_cents", what)
    total = _int(obj, "total_amount_cents", what)
    refund = _optional_int(obj, "refund_amount_cents", what)

    items = [item for item in obj.get("items") or [] if isinstance(item, dict)]
    if not items:
        raise InvalidPayload(f"{what} carries no 'items'.")
    amounts = [_int(item, "amount_cents", f"{what} item {item.get('lago_id') or '?'}") for item in items]
    fees = [item.get("fee") if isinstance(item.get("fee"), dict) else {} for item in items]
    # Lago gives the credit note's tax, not each item's: it is spread over the items by amount and
    # tax rate, the way Lago computed it.
    weights = [Decimal(amount) * _rate(fee) for amount, fee in zip(amounts, fees, strict=True)]
    if not any(weights):
        weights = [Decimal(amount) for amount in amounts]
    taxes = _allocate(tax, weights)
    lines = [
        CreditMemoLineData(
            description=_fee_description(fee) if fee else _text(obj.get("description")) or "Credit",
            quantity=Decimal(1),
            unit_amount_minor=amount,
            amount_minor=amount,
            tax_minor=item_tax,
            source_line_id=_text(item.get("lago_id")),
            invoice_line_source_id=_text(fee.get("lago_id")),
        )
        for item, fee, amount, item_tax in zip(items, fees, amounts, taxes, strict=True)
    ]
    # Items are credited before coupons; the coupons' share comes back as on the invoice (rounded
    # by Lago from unrounded amounts, so derived from the subtotal).
    adjustment = subtotal - sum(amounts)
    if adjustment:
        coupons = bool(obj.get("coupons_adjustment_amount_cents"))
        lines.append(
            CreditMemoLineData(
                description="Coupons" if coupons else "Rounding",
                quantity=Decimal(1),
                unit_amount_minor=adjustment,
                amount_minor=adjustment,
                source_line_id=f"{memo_id}:{COUPONS_LINE if coupons else 'rounding'}",
                invoice_line_source_id=f"{invoice_id}:{COUPONS_LINE}" if coupons else "",
            )
        )
    memo_date = _date(obj, "issuing_date", what)
    if memo_date is None:
        raise InvalidPayload(f"{what} has no 'issuing_date'.")
    status = "void" if obj.get("credit_status") == "voided" else "issued"
    reason = " — ".join(part for part in (_text(obj.get("reason")), _text(obj.get("description"))) if part)
    return CreditMemoData(
        source_id=memo_id,
        source_version=_version(obj, what),
        number=_text(obj.get("number")),
        customer_source_id=customer_id,
        invoice_source_id=invoice_id,
        status=status,
        currency=_currency(obj, what),
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=total,
        memo_date=memo_date,
        lines=tuple(lines),
        reason=reason,
        # Lago decides the refund when it issues the note and sends no webhook when the refund later
        # succeeds; a refund already reported failed is not money paid back.
        refunded_minor=0 if obj.get("refund_status") == "failed" else refund,
        status_date=_date(obj, "updated_at", what) if status == "void" else memo_date,
    )


# --- API -----------------------------------------------------------------------------------------


class LagoApiError(InvalidPayload):
    """Lago's API refused the request (4xx other than 429): asking again will not help."""


class LagoUnavailable(RuntimeError):
    """Lago could not answer now (429, 5xx, timeout, network): the event is tried again later."""


_ERROR_HINTS = {
    401: " Check the Lago API key configured for this source (Lago: Developers > API keys).",
    403: " The API key may not read payments: give it read access to payments in Lago.",
}


class LagoApi:
    """The read call of Lago's REST API the adapter needs, with ``Authorization: Bearer <api key>``."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_API_URL,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        session: requests.Session | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Lago API key is required")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._session = session or requests.Session()
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    def invoice_payments(self, invoice_id: str) -> list[dict[str, Any]]:
        """Every payment record of the invoice, page by page."""
        found: list[dict[str, Any]] = []
        page: int | None = 1
        while page:
            answer = self._get("/api/v1/payments", {"invoice_id": invoice_id, "page": page, "per_page": PAGE_SIZE})
            found.extend(payment for payment in answer.get("payments") or [] if isinstance(payment, dict))
            meta = answer.get("meta") if isinstance(answer.get("meta"), dict) else {}
            following = meta.get("next_page")
            page = following if isinstance(following, int) and following > page else None
        return found

    def _get(self, path: str, params: dict[str, str | int]) -> dict[str, Any]:
        try:
            response = self._session.get(
                f"{self.base_url}{path}", params=params, headers=self._headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise LagoUnavailable(f"Lago API GET {path} did not answer: {exc}") from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 429 or response.status_code >= 500:
            raise LagoUnavailable(f"Lago API GET {path} answered {response.status_code}: try again later.")
        if response.status_code != 200:
            said = body if isinstance(body, dict) else {}
            message = " ".join(str(said.get(key) or "") for key in ("error", "code")).strip() or response.reason
            raise LagoApiError(
                f"Lago API GET {path} answered {response.status_code}: {message}."
                f"{_ERROR_HINTS.get(response.status_code, '')} Replay the event after the fix."
            )
        if not isinstance(body, dict):
            raise LagoUnavailable(f"Lago API GET {path} answered 200 without a JSON object.")
        return body


def recorded_payments(api: LagoApi, obj: dict[str, Any], invoice: InvoiceData) -> list[PaymentData]:
    """The invoice's payment records read back from Lago, when it shows money paid: the manual ones
    that sent no receipt included."""
    if settlement_of(obj, f"Invoice {invoice.number or invoice.source_id}").recorded <= 0:
        return []
    payments = []
    for record in api.invoice_payments(invoice.source_id):
        try:
            payment = payment_from_object(record)
        except IgnoredEvent:
            continue  # not succeeded, or a payment request over several invoices (its own event says so)
        if payment.applications[0].invoice_source_id == invoice.source_id:
            payments.append(payment)
    return payments


# --- events --------------------------------------------------------------------------------------


def parse_message(message: dict[str, Any], api: LagoApi | None = None) -> list[LedgerCommand]:
    """Canonical commands for one stored webhook; raises ``IgnoredEvent`` for types not posted.
    With ``api``, an invoice's payment records are read back from Lago too."""
    webhook_type = str(message.get("webhook_type"))
    obj = _object(message)
    if webhook_type == "invoice.drafted":
        raise IgnoredEvent(
            "Lago webhook type invoice.drafted is not posted: a draft can still change; the invoice is posted "
            "when Lago finalizes it (invoice.created)."
        )
    if webhook_type == DISPUTE_LOST_EVENT:
        return [dispute_from_lost_payment(message)]
    if webhook_type in CUSTOMER_EVENTS:
        return [customer_from_object(obj)]
    if webhook_type in INVOICE_EVENTS:
        if obj.get("invoice_type") == "credit":
            return credit_purchase(obj)
        invoice = invoice_from_object(obj)
        commands: list[LedgerCommand] = [invoice, *credits_used(obj, invoice)]
        if api is not None:
            commands.extend(recorded_payments(api, obj, invoice))
        payment = payment_from_paid_invoice(obj, invoice)
        if payment is not None:
            commands.append(payment)
        return commands
    if webhook_type in PAYMENT_EVENTS:
        return [payment_from_object(obj)]
    if webhook_type in CREDIT_NOTE_EVENTS:
        return [credit_memo_from_object(obj)]
    raise IgnoredEvent(f"Lago webhook type {webhook_type} is not posted by this hub version.")


class LagoAdapter(SourceAdapter):
    kind = "lago"
    label = "Lago"
    kept_headers = (
        "content-type",
        "user-agent",
        SIGNATURE_HEADER.lower(),
        ALGORITHM_HEADER.lower(),
        UNIQUE_KEY_HEADER.lower(),
        "x-correlation-id",
    )

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: list[str]) -> Envelope:
        verify_signature(body, headers, secrets)
        message = parse_envelope(body)
        return Envelope(
            event_id=event_id(message, headers.get(UNIQUE_KEY_HEADER.lower()), body),
            event_type=str(message["webhook_type"]),
            object_id=_text(_object(message).get("lago_id")),
        )

    def __init__(self, api: LagoApi | None = None) -> None:
        self.api = api

    def bind(self, api_settings: Mapping[str, str]) -> LagoAdapter:
        """With the source's Lago API key (``api_key``, ``base_url``), invoices' payment records are
        read back; without it, the adapter posts what the webhooks carry."""
        api_key = str(api_settings.get("api_key") or "")
        if not api_key:
            return self
        return LagoAdapter(LagoApi(api_key, str(api_settings.get("base_url") or DEFAULT_API_URL)))

    def parse(self, body: bytes) -> list[LedgerCommand]:
        return parse_message(parse_envelope(body), self.api)
