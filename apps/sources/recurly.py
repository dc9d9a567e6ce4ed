"""Recurly (API v3, version v2021-02-25): webhook signatures, the API calls that fetch what a webhook
is about, and Recurly objects into canonical ledger commands.

Authenticity: a Recurly webhook endpoint set to JSON signs every notification with its secret key
(Integrations > Webhooks > the endpoint's secret key). The ``recurly-signature`` header is
``<unix time in milliseconds>,<hex HMAC-SHA256>[,<hex HMAC-SHA256>...]``; each signature is the
HMAC-SHA256 of ``"<that timestamp>.<raw body>"`` with a secret key. While a key is being regenerated
Recurly keeps the old and the new one valid for 24 hours and sends one signature for each. A request
is accepted when any signature matches any of the source's secrets and its timestamp is within
``HUB["SIGNATURE_TOLERANCE_SECONDS"]`` of now (either way: a replay, or a clock far off). XML
endpoints are not signed and are not supported.

Payloads: Recurly's JSON notifications carry no object, only what names it:
``{"id", "object_type", "site_id", "event_type", "event_time"}`` plus ``account_code`` (accounts) or
``uuid`` (payments, credit payments). ``verify`` stores that; ``parse`` fetches the object through the
API (``RecurlyApi``: ``GET /accounts/{id}``, ``/invoices/{id}`` (+ ``/line_items`` when
``has_more_line_items``), ``/transactions/{id}``, ``/credit_payments/{id}``), so it always posts the
object's current state. An API answer of 4xx is ``RecurlyApiError`` (an ``InvalidPayload``: the
event fails with the reason and can be replayed after the fix); 429, 5xx, timeouts and network
errors are ``RecurlyUnavailable`` and leave the event received, so the inbox sweeper tries again.
The API key and URL come from ``RecurlyAdapter(api_factory=...)``; without one, from the environment
(``RECURLY_API_KEY``, and ``RECURLY_API_URL`` for the EU site ``https://v3.eu.recurly.com``).

Event identity: the payload has no id of its own, so an event is named
``"<object_type>.<event_type>:<object id>:<event_time>"``; a retry of a notification keeps all four.

Money: API amounts are JSON decimals in major units (``49.99``). They are read as exact decimals
(never float) and converted to minor units; an amount with more decimals than the currency has is
refused, naming the field. Only unit prices may be finer (Recurly prices usage in fractions of a
cent): a line's unit amount is derived from its amount when that happens.

Ordering: ``source_version`` is the object's ``updated_at`` in milliseconds.

Mapping (``<object_type>.<event_type>``):
- ``account.created|updated`` → CustomerData, named by the account code (immutable in Recurly).
- ``charge_invoice.created|processing|past_due|paid|failed|reopened|updated`` → InvoiceData, plus a
  PaymentData for each collected purchase or capture the invoice carries (Recurly calls its payment
  notifications legacy and says to rely on invoice notifications: the invoice's ``transactions`` are
  the truth). States ``pending``, ``processing`` and ``past_due`` are ``open``; ``paid`` is ``paid``;
  ``failed`` (dunning ended, or marked failed) is ``uncollectible``: the hub writes off what was not
  settled. ``amount_paid`` is ``total - balance`` (settled by transactions and credit) less what was
  written off: Recurly records the write-off of a failed invoice's balance as a credit invoice of
  origin ``write_off`` applied with credit payments of action ``write_off``. Such an invoice is
  ``uncollectible`` for that amount, and the write-off credit invoice itself is not posted (it would
  lower the receivable twice). Lines are net of discounts and exclusive of tax (``subtotal -
  discount``, less ``tax`` for tax-inclusive prices); zero lines (free trials) are left out and an
  invoice of zero is not posted. ``price_id`` is the add-on code, else the plan code, else the item
  code; the product is the plan (else the item).
- ``payment.succeeded`` → PaymentData for a collected purchase/capture transaction (status
  ``success``, or ``chargeback``: collected, then taken back, which is posted as a dispute), applied
  to its invoice, and the invoice as the payment left it (InvoiceData: what is still owed after a
  partial payment), unless that invoice is a prepayment. ``payment.refunded`` (a
  refund transaction) → the credit invoice it belongs to, or the dispute when it is a chargeback.
- ``credit_invoice.created|processing|closed|voided|reopened|opened|updated`` and
  ``credit_payment.created|voided`` → CreditMemoData for the credit invoice (amounts positive;
  Recurly shows them negative). It credits the charge invoice named by ``previous_invoice_id``, else
  by its lines' ``original_line_item_invoice_id`` (refunds, proration credits), else the first charge
  invoice its credit was applied to (a custom credit is posted when it is first applied, against that
  invoice; one spread over several invoices is all posted against the first, and finance matches the
  rest in the ERP). ``refunded_minor`` is what its successful refund transactions paid back.
  ``voided`` is ``void``. Credit from gift cards and carried-forward balances is not a credit note:
  those credit invoices are not posted. A credit payment of action ``write_off`` posts the charge
  invoice it wrote off.
- Anything else: ``IgnoredEvent("Recurly webhook X is not posted by this hub version.")``.

How Recurly's concepts meet the hub's worked examples:
- Void: API v3 voids credit invoices only; a charge invoice issued in error is cancelled with an
  open-amount refund, a credit invoice (origin ``open_amount_refund``) for the whole open amount. The
  hub posts it as a credit note, which the ERP reconciles with the invoice: the receivable is zero,
  as after a void, but the ERP invoice ends paid by the credit note rather than cancelled. A charge
  invoice in the API's ``voided`` state is ``void`` and cancelled in the ERP.
- Over-payment and customer credit: Recurly never takes more than an invoice's balance (an external
  payment cannot exceed it, a card is charged the balance). Cash paid ahead is a prepayment
  ("prepaid account balance"): a charge invoice whose lines have origin ``prepayment``, paid by a
  purchase, and the opposite credit invoice of origin ``prepayment`` that holds the balance. The hub
  posts the purchase as unapplied cash (the customer's credit), not the prepayment invoice (it is
  not a sale), and each credit payment from the prepayment credit invoice to a charge invoice as that
  same payment settling the invoice from the credit (``apply_credit``). The credit invoice is linked
  to its prepayment invoice by ``previous_invoice_id`` or its lines' ``original_line_item_invoice_id``;
  one with neither is not posted, with that reason. A credit payment voided later (its invoice
  failed) is not taken back in the ERP, and prepaid credit refunded to the card (a credit payment of
  action ``refund``) is not posted: finance records both in the ERP by hand.
- Disputes: Recurly learns of a chargeback only when it is final and lost (Chargeback management for
  cards, Adyen, Chase and Stripe gateways): it then creates an external refund credit invoice and a
  refund transaction of origin ``chargeback``. The hub posts that as a dispute that is lost (funds
  withdrawn, then moved to dispute losses, the invoice staying paid), not as a credit note and a
  refund. Recurly sends nothing while a dispute is open, nothing when the merchant wins it, and
  processes no chargeback reversals: a won dispute moves no money in the ERP, which is the net of the
  other engines' withdrawn-then-reinstated moves; a reversal after a loss is recorded in the ERP by
  hand.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import requests
from django.conf import settings

from apps.core.money import CurrencyError, exponent_for, normalize_currency, to_minor
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

SIGNATURE_HEADER = "recurly-signature"
API_VERSION = "v2021-02-25"
ACCEPT = f"application/vnd.recurly.{API_VERSION}"
DEFAULT_API_URL = "https://v3.recurly.com"
API_KEY_ENV = "RECURLY_API_KEY"
API_URL_ENV = "RECURLY_API_URL"
USER_AGENT = "integration-hub-recurly-adapter"

ACCOUNT_EVENTS = {"account.created", "account.updated"}
CHARGE_INVOICE_EVENTS = {
    f"charge_invoice.{event}"
    for event in ("created", "processing", "past_due", "paid", "failed", "reopened", "updated")
}
CREDIT_INVOICE_EVENTS = {
    f"credit_invoice.{event}"
    for event in ("created", "processing", "closed", "voided", "reopened", "opened", "updated")
}
PAYMENT_EVENTS = {"payment.succeeded", "payment.refunded"}
CREDIT_PAYMENT_EVENTS = {"credit_payment.created", "credit_payment.voided"}
SUPPORTED_EVENTS = (
    ACCOUNT_EVENTS | CHARGE_INVOICE_EVENTS | CREDIT_INVOICE_EVENTS | PAYMENT_EVENTS | CREDIT_PAYMENT_EVENTS
)

_CHARGE_STATES = {
    "pending": "open",
    "processing": "open",
    "past_due": "open",
    "paid": "paid",
    "failed": "uncollectible",
}
# Credit that stands for money already received: applying it settles an invoice, it does not credit one.
_SETTLEMENT_ORIGINS = {"gift_card", "prepayment", "carryforward_credit", "carryforward_gift_credit"}
_PAYMENT_TYPES = {"purchase", "capture"}
# A collected payment: ``chargeback`` is money that came in and was later taken back by the card
# network (posted as a dispute of its own), so the payment itself still stands.
_COLLECTED = {"success", "chargeback"}
_PREPAYMENT = "prepayment"
_WRITE_OFF = "write_off"
_CHARGEBACK = "chargeback"
_NAMING_KEYS = ("id", "uuid", "account_code", "invoice_number")
_SIGNATURE = re.compile(r"^[0-9a-fA-F]{64}$")


# --- authenticity -----------------------------------------------------------------------------------


def verify_signature(
    body: bytes, header: str | None, secrets: list[str], tolerance: int, *, now_ms: int | None = None
) -> None:
    """Accept the body if a secret key of the source signed it within ``tolerance`` seconds."""
    if not secrets:
        raise SignatureError("No webhook secret is configured for this source; the event was not accepted.")
    if not header or not header.strip():
        raise SignatureError(
            f"Missing {SIGNATURE_HEADER} header: set the Recurly webhook endpoint's payload to JSON "
            "(XML notifications are not signed)."
        )
    timestamp, *signatures = (part.strip() for part in header.split(","))
    if not timestamp.isdigit() or not signatures or not all(_SIGNATURE.match(sig) for sig in signatures):
        raise SignatureError(
            f"{SIGNATURE_HEADER} must be '<unix time in milliseconds>,<hex HMAC-SHA256>[,<hex HMAC-SHA256>...]'."
        )
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if abs(now_ms - int(timestamp)) > tolerance * 1000:
        raise SignatureError(
            f"Stale webhook: the {SIGNATURE_HEADER} timestamp is more than {tolerance} seconds from now "
            "(a replayed request, or a clock that is off; Recurly sends milliseconds)."
        )
    message = timestamp.encode("ascii") + b"." + body
    expected = [hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest() for secret in secrets]
    # Every pair is compared, so the time taken does not tell which key came close.
    matches = [hmac.compare_digest(key, sig.lower()) for key in expected for sig in signatures]
    if not any(matches):
        raise SignatureError(
            f"{SIGNATURE_HEADER} does not match the body for any of this source's secret keys: the body was "
            "altered, or the endpoint's key in Recurly is not one of the source's secrets."
        )


# --- API --------------------------------------------------------------------------------------------


class RecurlyApiError(InvalidPayload):
    """Recurly's API refused the request (4xx other than 429): the object or the configuration is
    wrong, and asking again will not help. The message says what Recurly answered."""

    def __init__(self, message: str, *, status: int, error_type: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type


class RecurlyUnavailable(RuntimeError):
    """Recurly could not answer now (429, 5xx, timeout, network): the event is tried again later."""


_ERROR_HINTS = {
    401: " Check the Recurly API key configured for this source (Recurly: Integrations > API Credentials).",
    403: " The API key lacks permission for this object: give it read access in Recurly.",
    404: " The object is not on the Recurly site this API key belongs to, or it was deleted.",
    406: f" This hub reads Recurly API version {API_VERSION}.",
}


class RecurlyApi:
    """The few read calls of Recurly's API v3 the adapter needs: HTTP Basic with the API key as
    username, ``Accept: application/vnd.recurly.v2021-02-25``, amounts read as exact decimals."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_API_URL,
        *,
        timeout: tuple[float, float] = (5.0, 30.0),
        session: requests.Session | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("a Recurly API key is required")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._auth = (api_key, "")
        self._session = session or requests.Session()

    @classmethod
    def from_environment(cls) -> RecurlyApi:
        api_key = os.environ.get(API_KEY_ENV, "").strip()
        if not api_key:
            raise InvalidPayload(
                f"No Recurly API key is configured: Recurly webhooks only name the object, which the hub reads "
                f"through the API. Set {API_KEY_ENV} (and {API_URL_ENV} for an EU site), then replay the event."
            )
        return cls(api_key, os.environ.get(API_URL_ENV, "").strip() or DEFAULT_API_URL)

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}{path}"
        try:
            response = self._session.get(
                url,
                params=params,
                auth=self._auth,
                headers={"Accept": ACCEPT, "User-Agent": USER_AGENT},
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise RecurlyUnavailable(f"Recurly API GET {path} did not answer: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise self._error(path, response, response.headers.get("X-Request-Id", ""))
        try:
            data = json.loads(response.content, parse_float=Decimal)
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            raise RecurlyUnavailable(f"Recurly API GET {path} answered {response.status_code} without a JSON object.")
        return data

    def _error(self, path: str, response: requests.Response, request_id: str) -> Exception:
        status = response.status_code
        error_type, message = "", response.reason or ""
        try:
            error = json.loads(response.content).get("error")
        except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            error = None
        if isinstance(error, dict):
            error_type, message = str(error.get("type") or ""), str(error.get("message") or message)
        text = f"Recurly API GET {path} answered {status}{f' {error_type}' if error_type else ''}: {message}"
        text += f" (Recurly request id {request_id})." if request_id else "."
        if status == 429 or status >= 500:
            return RecurlyUnavailable(text)
        hint = _ERROR_HINTS.get(status, "") if status >= 400 else f" Check the Recurly API URL ({self.base_url})."
        return RecurlyApiError(text + hint, status=status, error_type=error_type)

    @staticmethod
    def _quote(value: str) -> str:
        return urllib.parse.quote(value, safe="")

    def account(self, account_id: str) -> dict[str, Any]:
        """``account_id``: the account's id, or ``code-<account code>``."""
        return self.get(f"/accounts/{self._quote(account_id)}")

    def invoice(self, invoice_id: str) -> dict[str, Any]:
        """The invoice with every line item (fetched page by page when it has more than it carries)."""
        invoice = self.get(f"/invoices/{self._quote(invoice_id)}")
        if invoice.get("has_more_line_items") is True:
            invoice = {**invoice, "line_items": self.line_items(str(invoice.get("id") or invoice_id))}
        return invoice

    def line_items(self, invoice_id: str) -> list[dict[str, Any]]:
        path, params = f"/invoices/{self._quote(invoice_id)}/line_items", {"limit": 200}
        items: list[dict[str, Any]] = []
        while True:
            page = self.get(path, params)
            items.extend(item for item in page.get("data") or [] if isinstance(item, dict))
            next_page = page.get("next")
            if page.get("has_more") is not True or not next_page:
                return items
            # Only the path and query are followed: the API key never goes to another host.
            parts = urllib.parse.urlsplit(str(next_page))
            path, params = parts.path + (f"?{parts.query}" if parts.query else ""), {}

    def transaction(self, transaction_id: str) -> dict[str, Any]:
        """``transaction_id``: the transaction's id, or ``uuid-<uuid>``."""
        return self.get(f"/transactions/{self._quote(transaction_id)}")

    def credit_payment(self, credit_payment_id: str) -> dict[str, Any]:
        """``credit_payment_id``: the credit payment's id, or ``uuid-<uuid>``."""
        return self.get(f"/credit_payments/{self._quote(credit_payment_id)}")


# --- envelope ---------------------------------------------------------------------------------------


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The notification, checked enough to store: an object type, an event type and what names it."""
    try:
        notification = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(f"The body is not valid JSON: {exc}") from exc
    if (
        not isinstance(notification, dict)
        or not isinstance(notification.get("object_type"), str)
        or not isinstance(notification.get("event_type"), str)
        or not notification["object_type"]
        or not notification["event_type"]
    ):
        raise InvalidPayload(
            "The body is not a Recurly JSON notification: it needs 'object_type' and 'event_type' "
            "(set the webhook endpoint's payload to JSON, not XML)."
        )
    if not _named(notification):
        raise InvalidPayload(
            f"The Recurly {event_key(notification)} notification names no object: it has no 'id' "
            "(nor 'uuid', 'account_code' or 'invoice_number')."
        )
    return notification


def _named(notification: Mapping[str, Any]) -> str:
    """What names the object: its id, else the uuid, account code or invoice number the payload has."""
    return next(
        (_text(notification.get(key)) for key in _NAMING_KEYS if _text(notification.get(key))),
        "",
    )


def event_key(notification: Mapping[str, Any]) -> str:
    """``charge_invoice.paid``: how Recurly names a JSON notification."""
    return f"{notification['object_type']}.{notification['event_type']}"


def event_id(notification: Mapping[str, Any], body: bytes) -> str:
    subject = _named(notification)
    moment = _text(notification.get("event_time"))
    if moment:
        return f"{event_key(notification)}:{subject}:{moment}"[:255]
    return f"{event_key(notification)}:sha256:{hashlib.sha256(body).hexdigest()}"


# --- field readers ----------------------------------------------------------------------------------


def _text(value: object) -> str:
    return str(value).strip() if value is not None else ""


def _decimal(obj: Mapping[str, Any], key: str, what: str) -> Decimal:
    value = obj.get(key)
    if isinstance(value, bool | float) or not isinstance(value, int | Decimal | str):
        raise InvalidPayload(f"{what}: '{key}' must be a decimal amount, got {value!r}.")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidPayload(f"{what}: '{key}' must be a decimal amount, got {value!r}.") from None
    if not amount.is_finite():
        raise InvalidPayload(f"{what}: '{key}' must be a decimal amount, got {value!r}.")
    return amount


def _money(obj: Mapping[str, Any], key: str, currency: str, what: str, *, default: int | None = None) -> int:
    """A Recurly amount (major units) as an integer of the currency's minor unit, exactly."""
    if obj.get(key) is None:
        if default is not None:
            return default
        raise InvalidPayload(f"{what}: '{key}' is missing.")
    amount = _decimal(obj, key, what)
    try:
        return to_minor(amount, currency)
    except CurrencyError:
        raise InvalidPayload(
            f"{what}: '{key}' {amount} has more decimals than {currency} allows ({exponent_for(currency)})."
        ) from None


def _currency(obj: Mapping[str, Any], what: str) -> str:
    try:
        return normalize_currency(_text(obj.get("currency")))
    except CurrencyError as exc:
        raise InvalidPayload(f"{what}: 'currency' {exc}.") from exc


def _datetime(obj: Mapping[str, Any], key: str, what: str) -> datetime | None:
    value = obj.get(key)
    if value in (None, ""):
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise InvalidPayload(f"{what}: '{key}' must be an ISO 8601 time, got {value!r}.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _date(obj: Mapping[str, Any], key: str, what: str) -> date | None:
    moment = _datetime(obj, key, what)
    return moment.astimezone(UTC).date() if moment else None


def version_of(obj: Mapping[str, Any], what: str) -> int:
    """``updated_at`` in milliseconds: a later change of the object has a higher version."""
    updated = _datetime(obj, "updated_at", what)
    if updated is None:
        raise InvalidPayload(f"{what} has no 'updated_at'; it orders the updates of the record.")
    return int(updated.timestamp() * 1000)


def _quantity(line: Mapping[str, Any], what: str) -> Decimal:
    raw = line.get("quantity_decimal") or line.get("quantity")
    if raw in (None, ""):
        return Decimal(1)
    if isinstance(raw, bool | float):
        raise InvalidPayload(f"{what}: 'quantity' {raw!r} is not a number.")
    try:
        quantity = Decimal(str(raw))
    except InvalidOperation:
        raise InvalidPayload(f"{what}: 'quantity' {raw!r} is not a number.") from None
    if not quantity.is_finite():
        raise InvalidPayload(f"{what}: 'quantity' {raw!r} is not a number.")
    return quantity


def _mini(obj: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    return value if isinstance(value, dict) else {}


def _address(data: Mapping[str, Any] | None) -> dict[str, str]:
    data = data or {}
    return {
        "line1": _text(data.get("street1")),
        "line2": _text(data.get("street2")),
        "city": _text(data.get("city")),
        "postal_code": _text(data.get("postal_code")),
        "state": _text(data.get("region")),
        "country": _text(data.get("country")),
    }


def _name(*sources: Mapping[str, Any]) -> str:
    """The company, else the person's name, else the email, from the first source that has one."""
    for source in sources:
        if _text(source.get("company")):
            return _text(source["company"])
    for source in sources:
        person = " ".join(_text(source.get(key)) for key in ("first_name", "last_name") if _text(source.get(key)))
        if person or _text(source.get("name_on_account")):
            return person or _text(source["name_on_account"])
    for source in sources:
        if _text(source.get("email")):
            return _text(source["email"])
    return ""


def _account_code(account: Mapping[str, Any], what: str) -> str:
    code = _text(account.get("code"))
    if not code:
        raise InvalidPayload(f"{what}: its account has no 'code'; the hub names Recurly customers by account code.")
    return code


# --- customers --------------------------------------------------------------------------------------


def customer_from_account(account: Mapping[str, Any]) -> CustomerData:
    what = f"Recurly account {account.get('code') or account.get('id') or '?'}"
    code = _account_code(account, what)
    billing = _mini(account, "billing_info")
    address = _mini(account, "address")
    if not any(_address(address).values()):
        address = _mini(billing, "address")
    vat = _text(account.get("vat_number")) or _text(billing.get("vat_number"))
    return CustomerData(
        source_id=code,
        source_version=version_of(account, what),
        name=_name(account, billing) or code,
        email=_text(account.get("email")),
        tax_id=vat,
        tax_id_type="vat" if vat else "",
        bill_to=_address(address),
    )


def _customer_snapshot(invoice: Mapping[str, Any], version: int, what: str) -> CustomerData:
    """The account as the invoice shows it; it only fills what the ledger does not know yet."""
    account = _mini(invoice, "account")
    address = _mini(invoice, "address")
    code = _account_code(account, what)
    vat = _text(invoice.get("vat_number"))
    terms = invoice.get("net_terms")
    return CustomerData(
        source_id=code,
        source_version=version,
        name=_name(address, account) or code,
        email=_text(account.get("email")),
        currency=_text(invoice.get("currency")).upper(),
        tax_id=vat,
        tax_id_type="vat" if vat else "",
        # eom terms count from the end of the month: not a plain number of days.
        payment_terms_days=terms
        if isinstance(terms, int) and not isinstance(terms, bool) and invoice.get("net_terms_type") != "eom"
        else None,
        bill_to=_address(address),
        sold_to=_address(_mini(invoice, "shipping_address")) if invoice.get("shipping_address") else {},
        snapshot=True,
    )


# --- lines ------------------------------------------------------------------------------------------


def _line_amounts(line: Mapping[str, Any], currency: str, what: str, *, sign: int = 1) -> tuple[int, int, int, Decimal]:
    """(net amount excluding tax, tax, unit amount, quantity) of a line, each multiplied by ``sign``."""
    tax = _money(line, "tax", currency, what, default=0)
    discount = _money(line, "discount", currency, what, default=0)
    total = _money(line, "amount", currency, what) if line.get("amount") is not None else None
    if line.get("subtotal") is not None:
        gross = _money(line, "subtotal", currency, what)
        net = gross - discount - (tax if line.get("tax_inclusive") is True else 0)
    elif total is not None:
        net = total - tax  # Recurly's line amount is after discount and tax
    else:
        raise InvalidPayload(f"{what}: 'subtotal' is missing.")
    net, tax = net * sign, tax * sign
    quantity = _quantity(line, what)
    if quantity < 0:  # a refunded quantity: the sign goes to the unit price
        quantity, sign = -quantity, -sign
    unit = net
    if quantity > 0 and quantity == quantity.to_integral_value():
        count = int(quantity)
        try:
            price = to_minor(_decimal(line, "unit_amount", what), currency) * sign
        except (InvalidPayload, CurrencyError):
            price = None  # a price in fractions of the minor unit, or none: derived from the amount
        if price is not None and price * count == net:
            unit = price
        elif net % count == 0:
            unit = net // count
    return net, tax, unit, quantity


def _price_id(line: Mapping[str, Any]) -> str:
    return _text(line.get("add_on_code")) or _text(line.get("plan_code")) or _text(line.get("item_code"))


def _invoice_line(line: Mapping[str, Any], currency: str, what: str) -> InvoiceLineData:
    net, tax, unit, quantity = _line_amounts(line, currency, what)
    return InvoiceLineData(
        description=_text(line.get("description")) or _price_id(line) or "Charge",
        quantity=quantity,
        unit_amount_minor=unit,
        amount_minor=net,
        tax_minor=tax,
        source_line_id=_text(line.get("id")),
        product_source_id=_text(line.get("plan_code")) or _text(line.get("item_code")),
        price_id=_price_id(line),
        period_start=_date(line, "start_date", what),
        period_end=_date(line, "end_date", what),
    )


def _line_items(invoice: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    items = invoice.get("line_items")
    if isinstance(items, dict):  # a list object, as some API versions nest it
        items = items.get("data")
    if not isinstance(items, list):
        raise InvalidPayload(f"{what} carries no 'line_items'; the hub posts an invoice with its lines.")
    return [item for item in items if isinstance(item, dict)]


def _line_what(what: str, index: int, line: Mapping[str, Any]) -> str:
    return f"{what} line_items[{index}] ({line.get('id') or 'no id'})"


# --- charge invoices --------------------------------------------------------------------------------


def _invoice_what(invoice: Mapping[str, Any], kind: str) -> str:
    return f"Recurly {kind} invoice {invoice.get('number') or invoice.get('id') or '?'}"


def charge_status(invoice: Mapping[str, Any], what: str) -> str:
    state = _text(invoice.get("state"))
    if state in _CHARGE_STATES:
        return _CHARGE_STATES[state]
    if state == "voided":
        return "void"
    raise InvalidPayload(
        f"{what}: 'state' {state!r} is not a charge invoice state (pending, processing, past_due, paid, failed)."
    )


def is_prepayment(invoice: Mapping[str, Any]) -> bool:
    """A prepaid account balance purchase: cash taken ahead of any sale, not an invoice to post."""
    if invoice.get("origin") == _PREPAYMENT:
        return True
    items = invoice.get("line_items")
    if isinstance(items, dict):
        items = items.get("data")
    lines = [line for line in items or [] if isinstance(line, dict)] if isinstance(items, list) else []
    return bool(lines) and all(line.get("origin") == _PREPAYMENT for line in lines)


def _live_credit_payments(invoice: Mapping[str, Any], hint: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """The invoice's credit payments not voided, with ``hint`` (a credit payment just read) in its
    place when the invoice does not list it yet."""
    payments = {
        _text(payment.get("id")) or str(index): payment
        for index, payment in enumerate(invoice.get("credit_payments") or [])
        if isinstance(payment, dict)
    }
    if hint and _text(hint.get("id")):
        payments[_text(hint["id"])] = dict(hint)
    return [payment for payment in payments.values() if not payment.get("voided_at")]


def written_off(invoice: Mapping[str, Any], currency: str, what: str) -> int:
    """What Recurly wrote off on the charge invoice: its credit payments of action ``write_off``."""
    total = 0
    for index, payment in enumerate(_live_credit_payments(invoice)):
        if payment.get("action") == _WRITE_OFF:
            total += abs(_money(payment, "amount", currency, f"{what} credit_payments[{index}]"))
    return total


def invoice_from_object(invoice: Mapping[str, Any]) -> InvoiceData:
    """A charge invoice (with all its line items) as canonical invoice data."""
    what = _invoice_what(invoice, "charge")
    invoice_id = _text(invoice.get("id"))
    if not invoice_id:
        raise InvalidPayload(f"{what}: 'id' is missing.")
    if invoice.get("type") == "legacy":
        raise IgnoredEvent(
            f"{what} is a legacy invoice (issued before the site had Credit Invoices): this hub version "
            "posts charge and credit invoices only."
        )
    if invoice.get("type") not in (None, "charge"):
        raise InvalidPayload(f"{what}: 'type' is {invoice.get('type')!r}, not a charge invoice.")
    status = charge_status(invoice, what)
    currency = _currency(invoice, what)
    version = version_of(invoice, what)
    total = _money(invoice, "total", currency, what)
    tax = _money(invoice, "tax", currency, what, default=0)
    balance = _money(invoice, "balance", currency, what, default=0 if status == "paid" else None)
    write_off = written_off(invoice, currency, what)
    if write_off and status in ("open", "paid"):
        status = "uncollectible"  # closed by a write-off credit rather than by the customer
    paid = total - balance - write_off
    if paid < 0:
        raise InvalidPayload(
            f"{what}: its balance {invoice.get('balance')} and write-offs ({write_off} minor units) exceed its "
            f"total {invoice.get('total')}."
        )
    lines = []
    for index, line in enumerate(_line_items(invoice, what)):
        data = _invoice_line(line, currency, _line_what(what, index, line))
        if data.amount_minor or data.tax_minor:
            lines.append(data)
    if not lines:
        if total == 0:
            raise IgnoredEvent(f"{what} is for zero {currency}: there is nothing to post.")
        raise InvalidPayload(f"{what} has a total of {invoice.get('total')} {currency} but no line with an amount.")
    invoice_date = _date(invoice, "created_at", what)
    if invoice_date is None:
        raise InvalidPayload(f"{what} has no 'created_at'.")
    status_date = None
    if status in ("paid", "uncollectible"):
        status_date = _date(invoice, "closed_at", what) or _date(invoice, "updated_at", what)
    elif status == "void":
        status_date = _date(invoice, "updated_at", what)
    starts = [line.period_start for line in lines if line.period_start]
    ends = [line.period_end for line in lines if line.period_end]
    return InvoiceData(
        source_id=invoice_id,
        source_version=version,
        number=_text(invoice.get("number")),
        customer=_customer_snapshot(invoice, version, what),
        status=status,
        currency=currency,
        subtotal_minor=total - tax,
        tax_minor=tax,
        total_minor=total,
        amount_paid_minor=paid,
        invoice_date=invoice_date,
        due_date=_date(invoice, "due_at", what),
        lines=tuple(lines),
        period_start=min(starts) if starts else None,
        period_end=max(ends) if ends else None,
        status_date=status_date,
    )


def _is_collected_payment(txn: Mapping[str, Any]) -> bool:
    return (
        txn.get("type") in _PAYMENT_TYPES
        and txn.get("status") in _COLLECTED
        and not (txn.get("status") == "success" and txn.get("success") is False)
    )


def _collected_payments(invoice: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The purchases and captures that collected money on the invoice, each naming the invoice."""
    mini = {key: invoice.get(key) for key in ("id", "object", "number", "type", "state")}
    return [
        {**txn, "invoice": _mini(txn, "invoice") or mini}
        for txn in invoice.get("transactions") or []
        if isinstance(txn, dict) and _is_collected_payment(txn)
    ]


def charge_invoice_commands(invoice: Mapping[str, Any]) -> list[LedgerCommand]:
    """The invoice and the payments it carries. A prepayment invoice is not a sale: only its
    payment is posted, as the customer's credit."""
    commands: list[LedgerCommand] = []
    if not is_prepayment(invoice):
        commands.append(invoice_from_object(invoice))
    commands.extend(payment_from_transaction(txn, invoice) for txn in _collected_payments(invoice))
    if not commands:
        raise IgnoredEvent(
            f"{_invoice_what(invoice, 'charge')} is a prepayment (prepaid account balance), not a sale, and nothing "
            "collected it yet: its payment is posted as the customer's credit once collected."
        )
    return commands


# --- payments ---------------------------------------------------------------------------------------


def payment_from_transaction(txn: Mapping[str, Any], invoice: Mapping[str, Any] | None = None) -> PaymentData:
    """A collected purchase or capture, applied to the charge invoice it paid; when that invoice
    (``invoice``, read by the caller) is a prepayment, applied to nothing: the customer's credit."""
    txn_id = _text(txn.get("id"))
    what = f"Recurly transaction {txn_id or txn.get('uuid') or '?'}"
    if not txn_id:
        raise InvalidPayload(f"{what}: 'id' is missing.")
    if txn.get("type") not in _PAYMENT_TYPES:
        raise IgnoredEvent(f"{what} is a {txn.get('type')!r} transaction; only purchases and captures are payments.")
    if not _is_collected_payment(txn):
        raise IgnoredEvent(f"{what} has status {txn.get('status')!r}; only successful payments are posted.")
    mini = _mini(txn, "invoice")
    if mini.get("type") == "credit":
        raise IgnoredEvent(
            f"{what} paid credit invoice {mini.get('number') or mini.get('id')}: a purchase pays charge invoices "
            "only, so this one is not posted."
        )
    currency = _currency(txn, what)
    amount = _money(txn, "amount", currency, what)
    settled = _datetime(txn, "collected_at", what) or _datetime(txn, "created_at", what)
    if settled is None:
        raise InvalidPayload(f"{what} has no 'collected_at' or 'created_at'.")
    applications = ()
    prepaid = invoice is not None and is_prepayment(invoice)
    if _text(mini.get("id")) and not prepaid:
        applications = (PaymentApplicationData(invoice_source_id=_text(mini["id"]), amount_minor=amount),)
    return PaymentData(
        source_id=txn_id,
        source_version=version_of(txn, what),
        customer_source_id=_account_code(_mini(txn, "account"), what),
        currency=currency,
        amount_minor=amount,
        method=_text(_mini(txn, "payment_method").get("object")) or "recurly",
        settled_at=settled,
        applications=applications,
    )


def _is_chargeback(txn: Mapping[str, Any]) -> bool:
    return txn.get("type") == "refund" and txn.get("origin") == _CHARGEBACK and txn.get("status") in _COLLECTED


def dispute_from_chargeback(txn: Mapping[str, Any]) -> DisputeData:
    """Recurly's record of a lost chargeback (a refund transaction of origin ``chargeback``) as a
    dispute that is lost: the only state of a dispute Recurly ever reports."""
    txn_id = _text(txn.get("id"))
    what = f"Recurly chargeback transaction {txn_id or txn.get('uuid') or '?'}"
    if not txn_id:
        raise InvalidPayload(f"{what}: 'id' is missing.")
    payment_id = _text(txn.get("original_transaction_id"))
    if not payment_id:
        raise InvalidPayload(f"{what}: 'original_transaction_id' (the payment charged back) is missing.")
    currency = _currency(txn, what)
    moment = _date(txn, "collected_at", what) or _date(txn, "created_at", what)
    if moment is None:
        raise InvalidPayload(f"{what} has no 'created_at'.")
    return DisputeData(
        source_id=txn_id,
        source_version=version_of(txn, what),
        payment_source_id=payment_id,
        currency=currency,
        amount_minor=abs(_money(txn, "amount", currency, what)),
        status="lost",
        opened_on=moment,
        reason=_text(txn.get("status_message")) or _CHARGEBACK,
        closed_on=moment,
    )


# --- credit invoices --------------------------------------------------------------------------------


def _first_application(credit_invoice: Mapping[str, Any], hint: Mapping[str, Any] | None) -> str:
    """The charge invoice the credit was first applied to (voided applications count: the answer
    never changes once given)."""
    credit_id = _text(credit_invoice.get("id"))
    payments = [p for p in credit_invoice.get("credit_payments") or [] if isinstance(p, dict)]
    if hint:
        payments.append(dict(hint))
    applied = [
        p
        for p in payments
        if _text(_mini(p, "applied_to_invoice").get("id"))
        and _text(_mini(p, "original_invoice").get("id")) in ("", credit_id)
        and p.get("action") in (None, "payment", "write_off")
    ]
    applied.sort(key=lambda p: (_text(p.get("created_at")), _text(p.get("id"))))
    return _text(_mini(applied[0], "applied_to_invoice").get("id")) if applied else ""


def credited_invoice_id(
    credit_invoice: Mapping[str, Any], lines: list[dict[str, Any]], hint: Mapping[str, Any] | None = None
) -> str:
    """The charge invoice a credit invoice credits: the one it refunds, else the one its first credited
    line came from, else the first one its credit was applied to; "" when it was not applied yet."""
    previous = _text(credit_invoice.get("previous_invoice_id"))
    if previous:
        return previous
    for line in lines:
        original = _text(line.get("original_line_item_invoice_id"))
        if original and original != _text(credit_invoice.get("id")):
            return original
    return _first_application(credit_invoice, hint)


def credit_memo_from_object(
    credit_invoice: Mapping[str, Any], *, applied_by: Mapping[str, Any] | None = None
) -> CreditMemoData:
    """A credit invoice (with all its line items) as a credit memo against the charge invoice it
    credits; ``applied_by``: the credit payment that applied it, when that is what the event is about."""
    what = _invoice_what(credit_invoice, "credit")
    memo_id = _text(credit_invoice.get("id"))
    if not memo_id:
        raise InvalidPayload(f"{what}: 'id' is missing.")
    if credit_invoice.get("type") != "credit":
        raise InvalidPayload(f"{what}: 'type' is {credit_invoice.get('type')!r}, not a credit invoice.")
    origin = _text(credit_invoice.get("origin"))
    if origin in _SETTLEMENT_ORIGINS:
        raise IgnoredEvent(
            f"{what} holds {origin.replace('_', ' ')} credit, money already received rather than a credit note: "
            "this hub version does not post it (record its use on an invoice in the ERP by hand)."
        )
    raw_lines = _line_items(credit_invoice, what)
    invoice_id = credited_invoice_id(credit_invoice, raw_lines, applied_by)
    if not invoice_id:
        raise IgnoredEvent(
            f"{what} ({origin or 'credit'}) is not tied to a charge invoice yet: the hub posts it against the first "
            "charge invoice its credit is applied to (credit_payment.created)."
        )
    currency = _currency(credit_invoice, what)
    total = _money(credit_invoice, "total", currency, what)
    if total == 0:
        raise IgnoredEvent(f"{what} is for zero {currency}: there is nothing to post.")
    sign = -1 if total < 0 else 1  # Recurly shows a credit invoice's amounts negative
    tax = _money(credit_invoice, "tax", currency, what, default=0) * sign
    lines = []
    for index, line in enumerate(raw_lines):
        line_what = _line_what(what, index, line)
        net, line_tax, unit, quantity = _line_amounts(line, currency, line_what, sign=sign)
        if not net and not line_tax:
            continue
        lines.append(
            CreditMemoLineData(
                description=_text(line.get("description")) or _price_id(line) or "Credit",
                quantity=quantity,
                unit_amount_minor=unit,
                amount_minor=net,
                tax_minor=line_tax,
                source_line_id=_text(line.get("id")),
                invoice_line_source_id=_text(line.get("previous_line_item_id")),
            )
        )
    if not lines:
        raise InvalidPayload(
            f"{what} has a total of {credit_invoice.get('total')} {currency} but no line with an amount."
        )
    refunded = 0
    for index, txn in enumerate(credit_invoice.get("transactions") or []):
        if isinstance(txn, dict) and txn.get("type") == "refund" and txn.get("status") == "success":
            refunded += abs(_money(txn, "amount", currency, f"{what} transactions[{index}] ({txn.get('id')})"))
    if refunded > total * sign:
        raise InvalidPayload(
            f"{what}: its refund transactions pay back {refunded}, more than its total {total * sign}."
        )
    memo_date = _date(credit_invoice, "created_at", what)
    if memo_date is None:
        raise InvalidPayload(f"{what} has no 'created_at'.")
    void = credit_invoice.get("state") == "voided"
    return CreditMemoData(
        source_id=memo_id,
        source_version=version_of(credit_invoice, what),
        number=_text(credit_invoice.get("number")),
        customer_source_id=_account_code(_mini(credit_invoice, "account"), what),
        invoice_source_id=invoice_id,
        status="void" if void else "issued",
        currency=currency,
        subtotal_minor=total * sign - tax,
        tax_minor=tax,
        total_minor=total * sign,
        memo_date=memo_date,
        lines=tuple(lines),
        reason=origin.replace("_", " "),
        refunded_minor=refunded,
        status_date=_date(credit_invoice, "updated_at", what) if void else memo_date,
    )


def _prepayment_invoice_id(credit_invoice: Mapping[str, Any], what: str) -> str:
    """The prepayment charge invoice a prepayment credit invoice is the opposite of."""
    if _text(credit_invoice.get("previous_invoice_id")):
        return _text(credit_invoice["previous_invoice_id"])
    credit_id = _text(credit_invoice.get("id"))
    for line in _line_items(credit_invoice, what):
        original = _text(line.get("original_line_item_invoice_id"))
        if original and original != credit_id:
            return original
    return ""


def prepaid_credit(
    api: RecurlyApi, credit_invoice: Mapping[str, Any], applied_by: Mapping[str, Any] | None = None
) -> PaymentData:
    """A prepayment credit invoice as the payment that funded it, applied to each charge invoice
    its credit settled so far (the ledger takes applications added later as settled from credit)."""
    what = _invoice_what(credit_invoice, "credit")
    charge_id = _prepayment_invoice_id(credit_invoice, what)
    if not charge_id:
        raise IgnoredEvent(
            f"{what} holds prepaid credit but names no prepayment invoice (no 'previous_invoice_id' and no line "
            "with 'original_line_item_invoice_id'): the hub cannot tell which payment funded it. Record its use "
            "in the ERP by hand."
        )
    charge = api.invoice(charge_id)
    payments = _collected_payments(charge)
    if not payments:
        raise IgnoredEvent(
            f"{what} holds prepaid credit whose prepayment invoice {charge.get('number') or charge_id} is not "
            "collected yet: the credit is posted with the payment that collects it."
        )
    if len(payments) > 1:
        raise InvalidPayload(
            f"{what}: its prepayment invoice {charge.get('number') or charge_id} was collected by "
            f"{len(payments)} transactions; the hub posts prepaid credit funded by one payment."
        )
    funding = payment_from_transaction(payments[0], charge)
    currency = funding.currency
    applied: dict[str, int] = {}
    credit_id = _text(credit_invoice.get("id"))
    for index, payment in enumerate(_live_credit_payments(credit_invoice, applied_by)):
        target = _mini(payment, "applied_to_invoice")
        if (
            payment.get("action") not in (None, "payment")
            or target.get("type") not in (None, "charge")
            or not _text(target.get("id"))
            or _text(_mini(payment, "original_invoice").get("id")) not in ("", credit_id)
        ):
            continue  # a refund of the credit, or credit applied elsewhere: not a settlement of an invoice
        amount = abs(_money(payment, "amount", currency, f"{what} credit_payments[{index}]"))
        applied[_text(target["id"])] = applied.get(_text(target["id"]), 0) + amount
    if sum(applied.values()) > funding.amount_minor:
        raise InvalidPayload(
            f"{what}: its credit payments apply {sum(applied.values())} minor units, more than the "
            f"{funding.amount_minor} its prepayment collected."
        )
    applications = tuple(
        PaymentApplicationData(invoice_source_id=invoice_id, amount_minor=amount)
        for invoice_id, amount in sorted(applied.items())
    )
    return replace(funding, applications=applications)


def credit_invoice_commands(
    api: RecurlyApi, credit_invoice: Mapping[str, Any], applied_by: Mapping[str, Any] | None = None
) -> list[LedgerCommand]:
    """What a credit invoice means for the ERP: a lost chargeback, a prepaid balance, nothing (a
    write-off, posted from the invoice it wrote off), or a credit note."""
    what = _invoice_what(credit_invoice, "credit")
    chargebacks = [
        txn for txn in credit_invoice.get("transactions") or [] if isinstance(txn, dict) and _is_chargeback(txn)
    ]
    if chargebacks:
        return [dispute_from_chargeback(txn) for txn in chargebacks]
    origin = _text(credit_invoice.get("origin"))
    if origin == _WRITE_OFF:
        raise IgnoredEvent(
            f"{what} is Recurly's write-off of a failed invoice's balance: the hub posts the write-off from that "
            "charge invoice (uncollectible), so this credit is not posted as a credit note."
        )
    if origin == _PREPAYMENT and credit_invoice.get("type") == "credit":
        return [prepaid_credit(api, credit_invoice, applied_by)]
    return [credit_memo_from_object(credit_invoice, applied_by=applied_by)]


# --- events -----------------------------------------------------------------------------------------


# The notification field that names an object without its id, and the API's prefix for it.
_ALTERNATE_KEYS = {
    "account": ("account_code", "code"),
    "charge_invoice": ("invoice_number", "number"),
    "credit_invoice": ("invoice_number", "number"),
    "payment": ("uuid", "uuid"),
    "credit_payment": ("uuid", "uuid"),
}


def _subject(notification: Mapping[str, Any]) -> str:
    """The id to fetch: the object's id, else ``code-<account code>``, ``number-<invoice number>`` or
    ``uuid-<uuid>``, the way the API accepts them."""
    if _text(notification.get("id")):
        return _text(notification["id"])
    field, prefix = _ALTERNATE_KEYS[str(notification["object_type"])]
    if _text(notification.get(field)):
        return f"{prefix}-{_text(notification[field])}"
    raise InvalidPayload(f"The Recurly {event_key(notification)} notification has no 'id' (nor '{field}').")


def parse_notification(notification: Mapping[str, Any], api_factory: Callable[[], RecurlyApi]) -> list[LedgerCommand]:
    """Canonical commands for one stored notification; raises ``IgnoredEvent`` for what is not posted."""
    key = event_key(notification)
    if key not in SUPPORTED_EVENTS:
        raise IgnoredEvent(f"Recurly webhook {key} is not posted by this hub version.")
    api = api_factory()
    if key in ACCOUNT_EVENTS:
        return [customer_from_account(api.account(_subject(notification)))]
    if key in CHARGE_INVOICE_EVENTS:
        return charge_invoice_commands(api.invoice(_subject(notification)))
    if key in CREDIT_INVOICE_EVENTS:
        return credit_invoice_commands(api, api.invoice(_subject(notification)))
    if key in PAYMENT_EVENTS:
        txn = api.transaction(_subject(notification))
        if txn.get("type") != "refund":
            invoice = _mini(txn, "invoice")
            if not (_is_collected_payment(txn) and _text(invoice.get("id")) and invoice.get("type") != "credit"):
                return [payment_from_transaction(txn)]  # raises IgnoredEvent for what is not a payment
            # The invoice as the payment left it (what is still owed), or a prepayment: the customer's credit.
            paid = api.invoice(_text(invoice["id"]))
            return [*([] if is_prepayment(paid) else [invoice_from_object(paid)]), payment_from_transaction(txn, paid)]
        if txn.get("status") not in _COLLECTED:
            raise IgnoredEvent(
                f"Recurly refund transaction {txn.get('id')} has status {txn.get('status')!r}; "
                "only successful refunds are posted."
            )
        if _is_chargeback(txn):
            return [dispute_from_chargeback(txn)]
        refunded = _mini(txn, "invoice")
        if refunded.get("type") != "credit" or not _text(refunded.get("id")):
            raise IgnoredEvent(
                f"Recurly refund transaction {txn.get('id')} belongs to no credit invoice: the hub records a refund "
                "through the credit invoice it pays back (sites without Credit Invoices are not supported)."
            )
        return credit_invoice_commands(api, api.invoice(_text(refunded["id"])))
    credit_payment = api.credit_payment(_subject(notification))
    if credit_payment.get("action") == _WRITE_OFF and _text(_mini(credit_payment, "applied_to_invoice").get("id")):
        # The write-off changed the charge invoice: post that invoice as it now is.
        return charge_invoice_commands(api.invoice(_text(credit_payment["applied_to_invoice"]["id"])))
    original = _mini(credit_payment, "original_invoice")
    if not _text(original.get("id")):
        raise InvalidPayload(f"Recurly credit payment {credit_payment.get('id')} has no 'original_invoice'.")
    return credit_invoice_commands(api, api.invoice(_text(original["id"])), credit_payment)


class RecurlyAdapter(SourceAdapter):
    kind = "recurly"
    label = "Recurly"
    kept_headers = ("content-type", "user-agent", SIGNATURE_HEADER)

    def __init__(self, api_factory: Callable[[], RecurlyApi] | None = None) -> None:
        """``api_factory``: makes the API client ``parse`` reads objects with; by default one
        configured from the environment (``RECURLY_API_KEY``, ``RECURLY_API_URL``)."""
        self.api_factory = api_factory or RecurlyApi.from_environment

    def bind(self, api_settings: Mapping[str, str]) -> RecurlyAdapter:
        """The source's own API key and site (``api_key``, ``base_url``), else the environment."""
        api_key = str(api_settings.get("api_key") or "")
        if not api_key:
            return self
        base_url = str(api_settings.get("base_url") or DEFAULT_API_URL)
        return RecurlyAdapter(api_factory=lambda: RecurlyApi(api_key, base_url))

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: list[str]) -> Envelope:
        tolerance = settings.HUB["SIGNATURE_TOLERANCE_SECONDS"]
        verify_signature(body, headers.get(SIGNATURE_HEADER), secrets, tolerance)
        notification = parse_envelope(body)
        return Envelope(
            event_id=event_id(notification, body),
            event_type=event_key(notification),
            object_id=_named(notification),
        )

    def parse(self, body: bytes) -> list[LedgerCommand]:
        return parse_notification(parse_envelope(body), self.api_factory)
