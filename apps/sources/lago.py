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

Amounts: an invoice is posted at its total including taxes, before credit notes and prepaid credits
are deducted from what the customer owes (those deductions are settlements, not price changes). Its
lines are the non-zero fees at their amount before coupons, plus one negative line for the coupons
and one for progressive billing credit, which is how Lago computes the subtotal.
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

from apps.core.money import CurrencyError, normalize_currency
from apps.ledger.commands import (
    CreditMemoData,
    CreditMemoLineData,
    CustomerData,
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
SUPPORTED_EVENTS = CUSTOMER_EVENTS | INVOICE_EVENTS | CREDIT_NOTE_EVENTS

COUPONS_LINE = "coupons"
PROGRESSIVE_BILLING_LINE = "progressive_billing_credit"


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
    obj = message[message["object_type"]]
    # invoice.payment_dispute_lost wraps the invoice: {"payment_dispute_lost": {"invoice": {...}}}
    if "lago_id" not in obj and isinstance(obj.get("invoice"), dict):
        return obj["invoice"]
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


def invoice_from_object(obj: dict[str, Any]) -> InvoiceData:
    invoice_id = _required_id(obj, "Invoice")
    what = f"Invoice {obj.get('number') or invoice_id}"
    lago_status = obj.get("status")
    if lago_status not in ("finalized", "voided"):
        raise IgnoredEvent(f"{what} is {lago_status!r} in Lago: only finalized and voided invoices are posted.")
    if lago_status == "voided":
        status = "void"
    elif obj.get("payment_status") == "succeeded":
        status = "paid"
    else:
        status = "open"
    customer = customer_from_object(_customer_of(obj, what), snapshot=True)
    version = _version(obj, what)
    subtotal = _int(obj, "sub_total_excluding_taxes_amount_cents", what)
    tax = _int(obj, "taxes_amount_cents", what)
    total = _int(obj, "sub_total_including_taxes_amount_cents", what)
    due = _int(obj, "total_amount_cents", what)

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
    if not lines:
        if total == 0:
            raise IgnoredEvent(f"{what} is for zero {obj.get('currency') or ''}: there is nothing to post.".strip())
        raise InvalidPayload(f"{what} has a total of {total} cents but no fee with an amount.")
    lines = _settle_tax_rounding(lines, tax)

    if status == "paid":
        # What reached the bank: the amount due less what credit notes offset against it.
        paid = max(0, due - _optional_int(obj, "total_offsetted_credit_note_amount_cents", what))
    else:
        paid = _optional_int(obj, "total_paid_amount_cents", what)
    status_date = None
    if status == "void":
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
        amount_paid_minor=paid,
        invoice_date=invoice_date,
        due_date=_date(obj, "payment_due_date", what),
        lines=tuple(lines),
        period_start=min(starts) if starts else None,
        period_end=max(ends) if ends else None,
        status_date=status_date,
    )


def payment_id(invoice_id: str) -> str:
    """Lago reports a paid invoice, not the payment: one payment per invoice, named after it."""
    return f"{invoice_id}:payment"


def payment_from_paid_invoice(obj: dict[str, Any], invoice: InvoiceData) -> PaymentData | None:
    if invoice.amount_paid_minor <= 0:
        return None  # settled by prepaid credits or credit notes: no money moved
    return PaymentData(
        source_id=payment_id(invoice.source_id),
        source_version=invoice.source_version,
        customer_source_id=invoice.customer.source_id,
        currency=invoice.currency,
        amount_minor=invoice.amount_paid_minor,
        method=_payment_provider(obj["customer"]),
        settled_at=datetime.fromtimestamp(invoice.source_version / 1000, UTC),  # when Lago saw it paid
        applications=(
            PaymentApplicationData(invoice_source_id=invoice.source_id, amount_minor=invoice.amount_paid_minor),
        ),
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


# --- events --------------------------------------------------------------------------------------


def parse_message(message: dict[str, Any]) -> list[LedgerCommand]:
    """Canonical commands for one stored webhook; raises ``IgnoredEvent`` for types not posted."""
    webhook_type = str(message.get("webhook_type"))
    obj = _object(message)
    if webhook_type == "invoice.drafted":
        raise IgnoredEvent(
            "Lago webhook type invoice.drafted is not posted: a draft can still change; the invoice is posted "
            "when Lago finalizes it (invoice.created)."
        )
    if webhook_type == "invoice.payment_dispute_lost":
        raise IgnoredEvent(
            "Lago webhook type invoice.payment_dispute_lost is not posted by this hub version: Lago does not say "
            f"which payment or amount the lost dispute took back. Record the chargeback on invoice "
            f"{obj.get('number') or obj.get('lago_id')} in the ERP by hand."
        )
    if webhook_type in CUSTOMER_EVENTS:
        return [customer_from_object(obj)]
    if webhook_type in INVOICE_EVENTS:
        invoice = invoice_from_object(obj)
        commands: list[LedgerCommand] = [invoice]
        if invoice.status == "paid":
            payment = payment_from_paid_invoice(obj, invoice)
            if payment is not None:
                commands.append(payment)
        return commands
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

    def parse(self, body: bytes) -> list[LedgerCommand]:
        return parse_message(parse_envelope(body))
