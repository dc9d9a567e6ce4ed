"""Xero (accounting API 2.0): contacts, sales invoices, credit notes, payments, overpayments and
manual journals, over HTTPS with ``requests``.

Settings (``ERPConnection.settings``, secrets as ``env:`` references):

- ``client_id``, ``client_secret``: the custom connection's OAuth 2.0 client credentials. The
  access token comes from ``token_url`` (client credentials grant) and is kept until shortly
  before it expires (Xero: 30 minutes). Standard (refresh-token) connections are not supported:
  Xero rotates the refresh token on every use and the hub has nowhere to keep the new one.
- ``tenant_id``: sent as ``xero-tenant-id`` (a custom connection has one organisation and may
  leave it out).
- ``base_url`` (default ``https://api.xero.com/api.xro/2.0``), ``token_url`` (default
  ``https://identity.xero.com/connect/token``), ``scopes`` (optional, space separated),
  ``timeout`` (read timeout in seconds, default 30).
- ``tracking_categories``: optional ``{dimension: Xero tracking category name}``, at most two
  (Xero's limit); each line then carries the document's dimension values as tracking options.
- ``no_tax_type``: the TaxType of an untaxed line (default ``NONE``), so an account's default tax
  never adds tax billing did not charge.
- ``processor_contact``: the contact of the bank transactions that record chargeback money
  leaving or coming back to a *bank* account (default ``Card processor``, created when missing).
- ``reference_cache_seconds``: how long the chart of accounts, tax rates and the organisation are
  kept between reads (default 300).

Exactly once. Every POST/PUT carries an ``Idempotency-Key`` derived from the document's external
reference, the step and the request body, so a resend of the same request is answered by Xero
without applying it twice. Xero keeps keys only for minutes, and replays an error it answered
under a key, so the key is not the whole story: every operation first looks the document up by
the hub's reference (an invoice or credit note ``Reference``, a contact ``ContactNumber``, a
payment or overpayment ``Reference``, a manual journal ``Narration``) and a timeout is an
``UncertainOutcome``, after which the executor asks ``find_document`` before sending anything.
After Xero answered an error (a 5xx, or a refusal someone then fixes), this process sends that
request again under a fresh key, so Xero does not replay the error; the lookup before every send
is what keeps that safe. Another worker process still has the old key and may get the refusal
replayed until Xero forgets the key (six minutes).

Limits. Xero allows 60 calls a minute, 5 at once and a daily quota per organisation. A 429 is a
``TransientError`` with Xero's ``Retry-After``; until then, and for a minute after a response says
``X-MinLimit-Remaining: 0`` (a day when ``X-DayLimit-Remaining: 0``), the connector sends nothing
and answers ``Throttled`` (no attempt used).

How each operation books (Xero's own way):

- invoice: ``ACCREC`` created as a draft, its total compared with billing's (billing's tax is sent
  as each line's ``TaxAmount``), then ``AUTHORISED``; a draft left by a failed attempt is reused,
  or deleted when its total is not billing's; ``LineAmountTypes`` Exclusive, ``AccountCode`` from
  the revenue account mapping, ``TaxType`` from the tax code, ``ItemCode`` from the item mapping.
- credit note: ``ACCRECCREDIT`` the same way, then allocated to its invoice for what the invoice
  still has due (the rest stays as the customer's credit, to be refunded or used).
- payment: a ``Payment`` on the invoice into the mapped account (a bank account, or one with
  payments enabled); refund of a credit note: a ``Payment`` on the credit note.
- void: the invoice gets ``Status: VOIDED`` (a draft is ``DELETED``); one with payments or credit
  allocated is refused (``void_after_payment``). A credit note's allocations are removed first.
- write-off: a credit note to the bad-debt account (``write_off_method`` mapping), without tax,
  allocated to the invoice: Xero's documented way of writing off a bad debt.
- cash on account: an overpayment (``BankTransactions`` ``RECEIVE-OVERPAYMENT``); credit applied
  later: an allocation of that payment's overpayment to the invoice.
- disputes: manual journals (``Narration`` = the hub's reference). Xero takes no manual journal on
  a bank account, so a withdrawal from (or return to) a *bank* account is a Spend/Receive Money
  bank transaction to the disputed-funds account instead, against ``processor_contact``.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, ClassVar

import requests

from apps.connectors.base import (
    DISPUTE_MOVEMENTS,
    ON_ACCOUNT_SUFFIX,
    OPERATION_APPLY_CREDIT,
    OPERATION_APPLY_PAYMENT,
    OPERATION_ENSURE_CUSTOMER,
    OPERATION_POST_CREDIT_MEMO,
    OPERATION_POST_INVOICE,
    OPERATION_RECEIVE_ON_ACCOUNT,
    OPERATION_REFUND_CREDIT_MEMO,
    OPERATION_VOID_CREDIT_MEMO,
    OPERATION_VOID_INVOICE,
    OPERATION_WRITE_OFF,
    VOID_SUFFIX,
    ERPConnector,
)
from apps.connectors.documents import (
    Address,
    CreditMemoDocument,
    CustomerDocument,
    DisputeMovementDocument,
    InvoiceDocument,
    InvoiceLineDocument,
    OnAccountDocument,
    PaymentDocument,
    PostResult,
    RefundDocument,
    VoidDocument,
    WriteOffDocument,
)
from apps.connectors.http import retry_after
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    Throttled,
    TransientError,
    UncertainOutcome,
)
from apps.core.money import to_decimal

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.xero.com/api.xro/2.0"
DEFAULT_TOKEN_URL = "https://identity.xero.com/connect/token"
POSTED = ("AUTHORISED", "PAID")
CONTACT_NUMBER_MAX = 50  # Xero's limit on ContactNumber
MAX_TRACKING_CATEGORIES = 2  # Xero's limit per line
_DECIMAL_MARK = "\u0000decimal:"
_DECIMAL_RE = re.compile(r'"\\u0000decimal:(-?\d+(?:\.\d+)?)"')


# -- the wire ---------------------------------------------------------------------------------


def wire_json(value: Any) -> bytes:
    """JSON for Xero: Decimals as JSON numbers written exactly (never through float), dates as
    ``YYYY-MM-DD``."""

    def prepare(item: Any) -> Any:
        if isinstance(item, Decimal):
            return f"{_DECIMAL_MARK}{item:f}"
        if isinstance(item, float):
            raise TypeError("money is never a float")
        if isinstance(item, datetime.date):
            return item.isoformat()
        if isinstance(item, dict):
            return {key: prepare(element) for key, element in item.items()}
        if isinstance(item, list | tuple):
            return [prepare(element) for element in item]
        return item

    return _DECIMAL_RE.sub(r"\1", json.dumps(prepare(value), ensure_ascii=False)).encode()


def where(**clauses: str) -> str:
    """A Xero ``where`` filter of equalities joined with AND; dotted paths as ``Contact__ContactID``."""
    parts = []
    for path, value in clauses.items():
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'{path.replace("__", ".")}=="{escaped}"')
    return " AND ".join(parts)


def contact_number(external_ref: str) -> str:
    """The hub's reference as Xero's ContactNumber (at most 50 characters): as is when it fits,
    otherwise a stable digest of it."""
    if len(external_ref) <= CONTACT_NUMBER_MAX:
        return external_ref
    return "hub-" + hashlib.sha256(external_ref.encode()).hexdigest()[: CONTACT_NUMBER_MAX - 4]


def _dec(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value or 0))


def _excerpt(text: str, limit: int = 1500) -> str:
    return text[:limit]


def _int_header(response: requests.Response, name: str) -> int | None:
    try:
        return int(response.headers[name])
    except (KeyError, ValueError):
        return None


def validation_messages(data: Any) -> list[str]:
    """Every ``ValidationErrors[].Message`` in a Xero 400 body (documents and their lines)."""
    messages: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for error in node.get("ValidationErrors") or []:
                message = str((error or {}).get("Message") or "").strip()
                if message and message not in messages:
                    messages.append(message)
            for key, child in node.items():
                if key != "ValidationErrors" and isinstance(child, dict | list):
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(data.get("Elements") if isinstance(data, dict) else None)
    if not messages and isinstance(data, dict) and data.get("Message"):
        messages.append(str(data["Message"]))
    return messages


_LOCK_WORDS = ("lock date", "period lock", "end of year lock", "locked period", "financial year end")


def refusal(what: str, messages: list[str], *, status: int, body: str) -> BusinessRuleError:
    """A Xero validation refusal, worded for finance with Xero's own message."""
    text = " ".join(messages) or "Xero refused the document without a message."
    lowered = text.lower()
    if any(word in lowered for word in _LOCK_WORDS):
        return BusinessRuleError(
            "closed_period",
            f"Xero refused {what}: {text} The accounting period is locked in Xero. Ask the accountant to move the "
            "lock date (or date the document in an open period in billing), then retry.",
            f"ValidationException on {what}",
            params={"erp_message": text},
            status=status,
            body_excerpt=body,
        )
    if "exceeds the amount outstanding" in lowered:
        return BusinessRuleError(
            "overpayment",
            f"Xero refused {what}: {text} Check for a payment or credit recorded by hand in Xero.",
            f"ValidationException on {what}",
            params={"erp_message": text},
            status=status,
            body_excerpt=body,
        )
    return BusinessRuleError(
        "erp_rejected",
        f"Xero refused {what}: {text} Correct it (in billing, the hub's mappings or Xero), then retry.",
        f"ValidationException on {what}",
        params={"erp_message": text},
        status=status,
        body_excerpt=body,
    )


# -- the transport ----------------------------------------------------------------------------


class XeroAPI:
    """One organisation of the Xero accounting API: the access token, the request budget Xero
    reports, and one classification of every answer into the hub's error taxonomy."""

    def __init__(self, settings: dict[str, Any], pace: Any) -> None:
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.token_url = str(settings.get("token_url") or DEFAULT_TOKEN_URL)
        self.client_id = str(settings["client_id"])
        self.client_secret = str(settings["client_secret"])
        self.tenant_id = str(settings.get("tenant_id") or "")
        self.scopes = str(settings.get("scopes") or "")
        read_timeout = float(settings.get("timeout", 30))
        self.timeout = (min(10.0, read_timeout), read_timeout)
        self.http = requests.Session()
        self.pace = pace
        self.correlation_id = ""
        self._token = ""
        self._token_expires = 0.0
        self._lock = threading.Lock()
        self._not_before = 0.0  # monotonic: Xero said to wait (429, or a spent minute or day)
        self._not_before_why = ""
        self._fresh_keys: dict[str, int] = {}  # requests Xero answered with a 5xx: resend under a new key
        self.remaining: dict[str, int] = {}  # the last limits Xero reported, for the logs and tests

    # -- authentication

    def access_token(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._token_expires:
                return self._token
            self._token = ""
            self.pace()
            data = {"grant_type": "client_credentials"}
            if self.scopes:
                data["scope"] = self.scopes
            try:
                response = self.http.post(
                    self.token_url,
                    data=data,
                    auth=(self.client_id, self.client_secret),
                    headers={"Accept": "application/json"},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise TransientError(f"could not reach Xero's token endpoint {self.token_url}: {exc}") from exc
            body = response.text
            if response.status_code in (400, 401, 403):
                raise AuthenticationError(
                    f"Xero refused the client credentials of the custom connection ({_excerpt(body, 200)})",
                    status=response.status_code,
                    body_excerpt=body,
                )
            if response.status_code != 200:
                raise TransientError(
                    "Xero's token endpoint failed",
                    status=response.status_code,
                    retry_after=retry_after(response.headers),
                    body_excerpt=body,
                )
            try:
                token = response.json()
                self._token = str(token["access_token"])
                lifetime = float(token.get("expires_in") or 1800)
            except (ValueError, KeyError, TypeError) as exc:
                raise TransientError("Xero's token endpoint answered without a token", body_excerpt=body) from exc
            # Renew a little before Xero's expiry, so a token never runs out between check and use.
            self._token_expires = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            return self._token

    def forget_token(self) -> None:
        with self._lock:
            self._token = ""

    # -- requests

    def get(self, path: str, params: dict[str, str] | None = None, *, what: str, missing_ok: bool = False) -> Any:
        return self._send("GET", path, params=params, what=what, missing_ok=missing_ok)

    def write(self, method: str, path: str, body: dict[str, Any], *, reference: str, step: str, what: str) -> Any:
        """POST or PUT with an Idempotency-Key that names the document, the step and the body."""
        payload = wire_json(body)
        base = hashlib.sha256(f"{reference}\n{step}\n".encode() + payload).hexdigest()
        generation = self._fresh_keys.get(base, 0)
        key = f"hub-{base}" + (f"-{generation}" if generation else "")
        try:
            return self._send(method, path, data=payload, key=key, what=what)
        except (UncertainOutcome, BusinessRuleError, ConfigurationError) as exc:
            if exc.status is not None and exc.status != 429:
                # Xero keeps the answer it gave under a key for minutes, errors included. The next
                # attempt (after a lookup, or after someone fixed what Xero refused) must not be
                # answered with this error again, so it goes under a new key.
                self._fresh_keys[base] = generation + 1
            raise

    def delete(self, path: str, *, what: str) -> Any:
        return self._send("DELETE", path, what=what)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        data: bytes | None = None,
        key: str = "",
        what: str,
        missing_ok: bool = False,
        retried: bool = False,
    ) -> Any:
        writes = method != "GET"
        wait = self._not_before - time.monotonic()
        if wait > 0:
            raise Throttled(f"Xero asked to wait ({self._not_before_why}) before {method} {path}", retry_after=wait)
        token = self.access_token()
        self.pace()
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if self.tenant_id:
            headers["xero-tenant-id"] = self.tenant_id
        if self.correlation_id:
            headers["X-Correlation-ID"] = self.correlation_id
        if data is not None:
            headers["Content-Type"] = "application/json"
        if key:
            headers["Idempotency-Key"] = key
        url = f"{self.base_url}/{path.lstrip('/')}"
        where_ = f"{method} {path} ({what})"
        try:
            response = self.http.request(method, url, params=params, data=data, headers=headers, timeout=self.timeout)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise TransientError(f"could not connect to Xero for {where_}: {exc}") from exc
        except requests.ConnectionError as exc:
            if not writes or "NewConnectionError" in repr(exc) or "Connection refused" in repr(exc):
                raise TransientError(f"connection to Xero failed for {where_}: {exc}") from exc
            raise UncertainOutcome(f"connection to Xero dropped after sending {where_}: {exc}") from exc
        except requests.Timeout as exc:
            if not writes:
                raise TransientError(f"Xero did not answer {where_} in {self.timeout[1]}s") from exc
            raise UncertainOutcome(f"Xero did not answer {where_} in {self.timeout[1]}s; it may have done it") from exc

        self._note_limits(response)
        status, body = response.status_code, response.text
        if status == 401:
            # Answered before anything ran: an expired or revoked token. Sign in again, once.
            self.forget_token()
            if retried:
                raise AuthenticationError(
                    f"Xero refused a fresh access token for {where_}", status=status, body_excerpt=body
                )
            return self._send(
                method, path, params=params, data=data, key=key, what=what, missing_ok=missing_ok, retried=True
            )
        if status == 403:
            raise AuthenticationError(
                f"Xero refused access to the organisation for {where_} (tenant not connected, or a missing scope)",
                status=status,
                body_excerpt=body,
            )
        if status == 429:
            problem = response.headers.get("X-Rate-Limit-Problem", "")
            wait = retry_after(response.headers)
            if wait is not None and problem.lower() != "concurrent":
                self._hold(wait, f"429, {problem or 'rate'} limit")
            raise TransientError(
                f"Xero throttled {where_} ({problem or 'rate'} limit)",
                status=status,
                retry_after=wait if wait is not None else 1.0,
                body_excerpt=body,
            )
        if status == 404 and missing_ok:
            return None
        if status in (502, 503, 504) and not writes:
            raise TransientError(
                f"Xero was unavailable for {where_}",
                status=status,
                retry_after=retry_after(response.headers),
                body_excerpt=body,
            )
        if status == 503:
            # Xero answers 503 when the organisation is offline or the API is down: nothing ran.
            raise TransientError(
                f"Xero was unavailable for {where_}",
                status=status,
                retry_after=retry_after(response.headers),
                body_excerpt=body,
            )
        if status >= 500:
            if writes:
                raise UncertainOutcome(f"Xero failed answering {where_}", status=status, body_excerpt=body)
            raise TransientError(f"Xero failed answering {where_}", status=status, body_excerpt=body)
        if status == 400:
            try:
                error = response.json()
            except ValueError:
                error = None
            if isinstance(error, dict) and error.get("Type") == "ValidationException":
                raise refusal(what, validation_messages(error), status=status, body=body)
            raise ConfigurationError(f"Xero refused the request {where_}", status=status, body_excerpt=body)
        if status >= 400:
            raise ConfigurationError(f"Xero refused the request {where_}", status=status, body_excerpt=body)
        try:
            return response.json(parse_float=Decimal)
        except ValueError as exc:
            raise (UncertainOutcome if writes else TransientError)(
                f"Xero answered {where_} with something that is not JSON", status=status, body_excerpt=body
            ) from exc

    def _note_limits(self, response: requests.Response) -> None:
        for header, name in (
            ("X-MinLimit-Remaining", "minute"),
            ("X-DayLimit-Remaining", "day"),
            ("X-AppMinLimit-Remaining", "app_minute"),
        ):
            value = _int_header(response, header)
            if value is not None:
                self.remaining[name] = value
        if self.remaining.get("day") == 0:
            self._hold(3600.0, "the day's calls are spent")
        elif self.remaining.get("minute") == 0 or self.remaining.get("app_minute") == 0:
            self._hold(60.0, "the minute's calls are spent")

    def _hold(self, seconds: float, why: str) -> None:
        until = time.monotonic() + seconds
        if until > self._not_before:
            self._not_before, self._not_before_why = until, why
            log.info("xero asks the hub to wait", extra={"seconds": seconds, "why": why})

    def close(self) -> None:
        self.http.close()


# -- the connector ----------------------------------------------------------------------------


class XeroConnector(ERPConnector):
    kind: ClassVar[str] = "xero"
    dedupe_strategy: ClassVar[str] = (
        "An Idempotency-Key (from the hub's reference, the step and the body) on every write, and a lookup by the "
        "hub's reference (Reference, ContactNumber, Narration) before every create, since Xero keeps keys for minutes."
    )
    required_mappings: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        missing = [key for key in ("client_id", "client_secret") if not settings.get(key)]
        if missing:
            raise ConfigurationError(f"Xero connection settings lack {', '.join(missing)}")
        tracking = settings.get("tracking_categories") or {}
        if not isinstance(tracking, dict) or len(tracking) > MAX_TRACKING_CATEGORIES:
            raise ConfigurationError("tracking_categories maps at most two dimensions to Xero tracking categories")
        self.tracking: dict[str, str] = {str(k): str(v) for k, v in tracking.items()}
        self.no_tax_type = str(settings.get("no_tax_type") or "NONE")
        self.processor_contact = str(settings.get("processor_contact") or "Card processor")
        self.cache_seconds = float(settings.get("reference_cache_seconds", 300))
        self.api = XeroAPI(settings, self.pace)
        self._reference: dict[str, tuple[float, Any]] = {}

    def close(self) -> None:
        self.api.close()

    def _begin(self, correlation_id: str) -> None:
        self.api.correlation_id = correlation_id

    # -- reference data (cached) ----------------------------------------------------------

    def _cached(self, name: str, path: str, key: str) -> Any:
        stamp, value = self._reference.get(name, (0.0, None))
        if value is None or time.monotonic() - stamp > self.cache_seconds:
            value = self.api.get(path, what=f"the {name}")[key]
            self._reference[name] = (time.monotonic(), value)
        return value

    def _accounts(self) -> dict[str, dict[str, Any]]:
        return {str(row.get("Code") or ""): row for row in self._cached("chart of accounts", "Accounts", "Accounts")}

    def _tax_rates(self) -> list[dict[str, Any]]:
        return list(self._cached("tax rates", "TaxRates", "TaxRates"))

    def _base_currency(self) -> str:
        [organisation] = self._cached("organisation", "Organisation", "Organisations")
        return str(organisation.get("BaseCurrency") or "")

    def _account(self, code: str, *, error: str, mapping: str, fits: Any, why: str) -> dict[str, Any]:
        account = self._accounts().get(code)
        if account is None or account.get("Status") != "ACTIVE":
            state = "does not exist" if account is None else f"is {str(account.get('Status')).lower()}"
            raise BusinessRuleError(
                error,
                f"The account '{code}' {state} in Xero. Fix the {mapping} mapping in the hub (or restore the account "
                "in Xero), then retry.",
                f"no ACTIVE account with Code {code!r}",
                params={"value": code},
            )
        if not fits(account):
            raise BusinessRuleError(
                error,
                f"The account '{code}' ({account.get('Name')}) in Xero {why}. Fix the {mapping} mapping in the hub, "
                "then retry.",
                f"account {code} is Type {account.get('Type')} Class {account.get('Class')}",
                params={"value": code},
            )
        return account

    def _revenue_account(self, code: str) -> None:
        self._account(
            code,
            error="unmapped_revenue_account",
            mapping="revenue account",
            fits=lambda account: account.get("Class") == "REVENUE",
            why="is not a revenue account",
        )

    def _payment_account(self, code: str) -> dict[str, Any]:
        return self._account(
            code,
            error="unknown_payment_journal",
            mapping="payment journal",
            fits=lambda account: account.get("Type") == "BANK" or bool(account.get("EnablePaymentsToAccount")),
            why="takes no payments (it is neither a bank account nor one with payments enabled)",
        )

    def _ledger_account(self, code: str, *, error: str, mapping: str) -> dict[str, Any]:
        return self._account(
            code,
            error=error,
            mapping=mapping,
            fits=lambda account: account.get("Type") != "BANK" and not account.get("SystemAccount"),
            why="is a bank or system account, which Xero does not let the hub post to here",
        )

    def _tax_type(self, code: str) -> str:
        for rate in self._tax_rates():
            if code in (rate.get("TaxType"), rate.get("Name")) and rate.get("Status") == "ACTIVE":
                return str(rate["TaxType"])
        raise BusinessRuleError(
            "unknown_tax_code",
            f"The tax rate '{code}' does not exist (or is not active) in Xero. Fix the tax code mapping in the hub, "
            "then retry.",
            f"no ACTIVE TaxRate with TaxType or Name {code!r}",
            params={"value": code},
        )

    # -- lookups --------------------------------------------------------------------------

    def _find(self, resource: str, filter_: str, *, what: str, **params: str) -> list[dict[str, Any]]:
        data = self.api.get(resource, {"where": filter_, **params}, what=what)
        return list((data or {}).get(resource) or [])

    def _one(self, resource: str, object_id: str, *, what: str) -> dict[str, Any] | None:
        data = self.api.get(f"{resource}/{object_id}", what=what, missing_ok=True)
        found = (data or {}).get(resource) or []
        return found[0] if found else None

    def _must(self, resource: str, object_id: str, *, what: str) -> dict[str, Any]:
        found = self._one(resource, object_id, what=what)
        if found is None:
            # The parent posting says Xero holds it; someone removed it since.
            raise BusinessRuleError(
                "erp_document_missing",
                f"Xero no longer has {what} (id {object_id}) although the hub posted it. Check Xero (deleted or "
                "archived by hand?), then link the posting to the right document or skip it with a reason.",
                f"404 for {resource}/{object_id}",
                params={"value": object_id},
            )
        return found

    def _find_contact(self, external_ref: str) -> dict[str, Any] | None:
        found = self._find(
            "Contacts",
            where(ContactNumber=contact_number(external_ref)),
            what=f"the customer {external_ref}",
            includeArchived="true",
        )
        return found[0] if found else None

    def _find_documents(self, resource: str, kind: str, reference: str) -> list[dict[str, Any]]:
        found = self._find(resource, where(Type=kind, Reference=reference), what=f"the document {reference}")
        return [row for row in found if row.get("Status") != "DELETED"]

    def _find_payment(self, reference: str) -> dict[str, Any] | None:
        found = self._find("Payments", where(Reference=reference), what=f"the payment {reference}")
        live = [row for row in found if row.get("Status") == "AUTHORISED"]
        return live[0] if live else None

    def _find_overpayment(self, reference: str) -> dict[str, Any] | None:
        found = self._find("Overpayments", where(Reference=reference), what=f"the overpayment {reference}")
        live = [row for row in found if row.get("Status") in POSTED]
        return live[0] if live else None

    def _find_journal(self, reference: str) -> dict[str, Any] | None:
        found = self._find("ManualJournals", where(Narration=reference), what=f"the journal {reference}")
        live = [row for row in found if row.get("Status") in ("DRAFT", "POSTED")]
        return live[0] if live else None

    def _find_bank_transaction(self, reference: str) -> dict[str, Any] | None:
        found = self._find("BankTransactions", where(Reference=reference), what=f"the bank transaction {reference}")
        live = [row for row in found if row.get("Status") == "AUTHORISED"]
        return live[0] if live else None

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        self._begin("")
        if operation == OPERATION_ENSURE_CUSTOMER:
            contact = self._find_contact(external_ref)
            return PostResult(str(contact["ContactID"]), contact_number(external_ref)) if contact else None
        if operation == OPERATION_POST_INVOICE:
            for invoice in self._find_documents("Invoices", "ACCREC", external_ref):
                if invoice.get("Status") in POSTED:
                    return self._invoice_result(invoice)
            return None
        if operation in (OPERATION_POST_CREDIT_MEMO, OPERATION_WRITE_OFF):
            for credit in self._find_documents("CreditNotes", "ACCRECCREDIT", external_ref):
                # Complete once allocated (or nothing left to allocate); otherwise the operation,
                # run again, allocates it.
                if credit.get("Status") == "PAID" or (
                    credit.get("Status") == "AUTHORISED" and credit.get("Allocations")
                ):
                    return self._credit_result(credit, "written off" if operation == OPERATION_WRITE_OFF else "")
            return None
        if operation in (OPERATION_APPLY_PAYMENT, OPERATION_REFUND_CREDIT_MEMO):
            payment = self._find_payment(external_ref)
            return PostResult(str(payment["PaymentID"]), external_ref) if payment else None
        if operation in (OPERATION_VOID_INVOICE, OPERATION_VOID_CREDIT_MEMO):
            reference = external_ref.removesuffix(VOID_SUFFIX)
            resource, kind = (
                ("Invoices", "ACCREC") if operation == OPERATION_VOID_INVOICE else ("CreditNotes", "ACCRECCREDIT")
            )
            for document in self._find_documents(resource, kind, reference):
                if document.get("Status") == "VOIDED":
                    return self._void_result(document)
            return None
        if operation == OPERATION_RECEIVE_ON_ACCOUNT:
            overpayment = self._find_overpayment(external_ref)
            return self._overpayment_result(overpayment) if overpayment else None
        if operation == OPERATION_APPLY_CREDIT:
            return self._find_credit_application(external_ref)
        if operation in DISPUTE_MOVEMENTS:
            return self._find_dispute_movement(external_ref, DISPUTE_MOVEMENTS[operation])
        raise ConfigurationError(f"the Xero connector does not know the operation {operation!r}")

    @staticmethod
    def _invoice_result(invoice: dict[str, Any]) -> PostResult:
        return PostResult(
            str(invoice["InvoiceID"]),
            str(invoice.get("InvoiceNumber") or ""),
            {"status": str(invoice.get("Status")), "total": str(invoice.get("Total"))},
        )

    @staticmethod
    def _credit_result(credit: dict[str, Any], action: str = "") -> PostResult:
        detail = {"status": str(credit.get("Status")), "total": str(credit.get("Total"))}
        if action:
            detail["action"] = action
        return PostResult(str(credit["CreditNoteID"]), str(credit.get("CreditNoteNumber") or ""), detail)

    @staticmethod
    def _void_result(document: dict[str, Any]) -> PostResult:
        erp_id = document.get("InvoiceID") or document.get("CreditNoteID")
        number = document.get("InvoiceNumber") or document.get("CreditNoteNumber") or ""
        return PostResult(str(erp_id), str(number), {"action": str(document.get("Status")).lower()})

    @staticmethod
    def _overpayment_result(overpayment: dict[str, Any]) -> PostResult:
        return PostResult(
            str(overpayment["OverpaymentID"]),
            str(overpayment.get("Reference") or ""),
            {"action": "received on account", "remaining_credit": str(overpayment.get("RemainingCredit"))},
        )

    # -- customers ------------------------------------------------------------------------

    def ensure_customer(self, doc: CustomerDocument) -> PostResult:
        """A contact whose ContactNumber is the hub's reference. Xero wants contact names unique,
        so a second billing customer with a name Xero already holds is created as
        ``<name> (<billing id>)``. Later only the name is kept in step (accountants edit the rest)."""
        self._begin(doc.correlation_id)
        number = contact_number(doc.external_ref)
        contact = self._find_contact(doc.external_ref)
        name = (doc.name or doc.external_ref).strip()
        if contact is None:
            values: dict[str, Any] = {"Name": name, "ContactNumber": number}
            if doc.email:
                values["EmailAddress"] = doc.email
            if doc.tax_id:
                values["TaxNumber"] = doc.tax_id[:50]
            addresses = [
                address
                for address in (_address("POBOX", doc.bill_to), _address("STREET", doc.sold_to))
                if address is not None
            ]
            if addresses:
                values["Addresses"] = addresses
            if doc.payment_terms_days is not None:
                values["PaymentTerms"] = {"Sales": {"Day": doc.payment_terms_days, "Type": "DAYSAFTERBILLDATE"}}
            try:
                contact = self._create_contact(values, doc.external_ref)
            except BusinessRuleError as exc:
                message = str(exc.params.get("erp_message", "")).lower()
                if "contact name" in message and "already" in message:
                    values["Name"] = _distinct_name(name, doc.external_ref)
                    contact = self._create_contact(values, doc.external_ref)
                elif "contact number" in message and "already" in message:
                    contact = self._find_contact(doc.external_ref)  # lost a race with another revision
                    if contact is None:
                        raise
                else:
                    raise
            return PostResult(str(contact["ContactID"]), number, {"action": "created", "name": str(contact["Name"])})
        if doc.name and contact.get("Name") not in (name, _distinct_name(name, doc.external_ref)):
            body = {"Contacts": [{"ContactID": contact["ContactID"], "Name": name}]}
            try:
                self.api.write(
                    "POST", "Contacts", body, reference=doc.external_ref, step="rename", what=f"customer {name}"
                )
            except BusinessRuleError as exc:
                if "already" not in str(exc.params.get("erp_message", "")).lower():
                    raise
                body["Contacts"][0]["Name"] = _distinct_name(name, doc.external_ref)
                self.api.write(
                    "POST", "Contacts", body, reference=doc.external_ref, step="rename", what=f"customer {name}"
                )
            return PostResult(str(contact["ContactID"]), number, {"action": "updated"})
        return PostResult(str(contact["ContactID"]), number, {"action": "unchanged"})

    def _create_contact(self, values: dict[str, Any], external_ref: str) -> dict[str, Any]:
        data = self.api.write(
            "PUT",
            "Contacts",
            {"Contacts": [values]},
            reference=external_ref,
            step="create",
            what=f"customer {values['Name']}",
        )
        return dict(data["Contacts"][0])

    # -- invoices and credit notes --------------------------------------------------------

    def post_invoice(self, doc: InvoiceDocument) -> PostResult:
        self._begin(doc.correlation_id)
        invoice = self._post_document(
            doc, resource="Invoices", kind="ACCREC", label=f"invoice {doc.number or doc.external_ref}"
        )
        return self._invoice_result(invoice)

    def post_credit_memo(self, doc: CreditMemoDocument) -> PostResult:
        """The credit note, then allocated to its invoice for what the invoice still has due."""
        self._begin(doc.correlation_id)
        credit = self._post_document(
            doc, resource="CreditNotes", kind="ACCRECCREDIT", label=f"credit note {doc.number or doc.external_ref}"
        )
        credit = self._allocate_credit(credit, doc.invoice_erp_id, doc.invoice_date, doc.external_ref, exact=None)
        return self._credit_result(credit)

    def _post_document(
        self, doc: InvoiceDocument | CreditMemoDocument, *, resource: str, kind: str, label: str
    ) -> dict[str, Any]:
        id_field = "InvoiceID" if resource == "Invoices" else "CreditNoteID"
        expected = to_decimal(doc.total_minor, doc.currency)
        draft_id = ""
        for found in self._find_documents(resource, kind, doc.external_ref):
            status = found.get("Status")
            if status in POSTED:
                if _dec(found.get("Total")) != expected:
                    raise BusinessRuleError(
                        "amount_mismatch",
                        f"The {label} is already in Xero ({_number(found)}) "
                        f"for {found.get('Total')} {doc.currency}, but billing now says {expected}. Issue a credit "
                        "note in billing rather than changing a posted document.",
                        f"{resource} {found[id_field]} Total {found.get('Total')} != {expected}",
                        params={"erp_total": str(found.get("Total")), "billing_total": str(expected)},
                    )
                return found
            if status == "VOIDED":
                raise BusinessRuleError(
                    "erp_rejected",
                    f"The {label} was voided in Xero, but billing still holds it. Re-issue it in billing, or link this "
                    "posting to the Xero document that replaces it.",
                    f"{resource} {found[id_field]} is VOIDED",
                    params={"erp_message": "The document is voided in Xero."},
                )
            if status in ("DRAFT", "SUBMITTED"):
                if not draft_id and _dec(found.get("Total")) == expected:
                    draft_id = str(found[id_field])  # left by an attempt that failed before approval
                else:
                    self._set_status(resource, str(found[id_field]), "DELETED", doc.external_ref, label)
        if not draft_id:
            self._check_lines(doc.lines)
            body = {resource: [self._document_values(doc, kind)]}
            data = self.api.write("PUT", resource, body, reference=doc.external_ref, step="draft", what=label)
            created = data[resource][0]
            draft_id = str(created[id_field])
            if _dec(created.get("Total")) != expected:
                raise BusinessRuleError(
                    "amount_mismatch",
                    f"Xero computes {created.get('Total')} {doc.currency} for {label}, billing says {expected}. Check "
                    "the tax code mapping of its lines; the draft stays in Xero and is replaced on retry.",
                    f"draft {draft_id} Total {created.get('Total')} != {expected}",
                    params={"erp_total": str(created.get("Total")), "billing_total": str(expected)},
                )
        return self._set_status(resource, draft_id, "AUTHORISED", doc.external_ref, label)

    def _set_status(self, resource: str, document_id: str, status: str, reference: str, label: str) -> dict[str, Any]:
        id_field = "InvoiceID" if resource == "Invoices" else "CreditNoteID"
        data = self.api.write(
            "POST",
            f"{resource}/{document_id}",
            {resource: [{id_field: document_id, "Status": status}]},
            reference=reference,
            step=f"status:{document_id}:{status}",
            what=label,
        )
        return dict(data[resource][0])

    def _check_lines(self, lines: Iterable[InvoiceLineDocument]) -> None:
        for line in lines:
            self._revenue_account(line.revenue_account)
            if line.tax_code:
                self._tax_type(line.tax_code)

    def _document_values(self, doc: InvoiceDocument | CreditMemoDocument, kind: str) -> dict[str, Any]:
        values: dict[str, Any] = {
            "Type": kind,
            "Contact": {"ContactID": doc.customer_erp_id},
            "Date": doc.invoice_date,
            "LineAmountTypes": "Exclusive",
            "LineItems": [self._line(line, doc.currency, doc.dimensions) for line in doc.lines],
            "Reference": doc.external_ref,
            "CurrencyCode": doc.currency,
            "Status": "DRAFT",
        }
        if kind == "ACCREC":
            # Xero wants a due date on an approved sales invoice; none in billing means due on issue.
            values["DueDate"] = doc.due_date or doc.invoice_date
        return values

    def _line(self, line: InvoiceLineDocument, currency: str, dimensions: dict[str, str]) -> dict[str, Any]:
        amount = to_decimal(line.amount_minor, currency)
        quantity, unit, description = line.quantity, to_decimal(line.unit_amount_minor, currency), line.description
        if quantity.as_tuple().exponent < -4 or quantity * unit != amount:  # type: ignore[operator]
            # Xero keeps four decimals of quantity: carry billing's amount as one unit instead.
            description = f"{description} (quantity {quantity.normalize()})"
            quantity, unit = Decimal(1), amount
        values: dict[str, Any] = {
            "Description": (description or "-")[:4000],
            "Quantity": quantity,
            "UnitAmount": unit,
            "LineAmount": amount,
            "AccountCode": line.revenue_account,
            "TaxType": self._tax_type(line.tax_code) if line.tax_code else self.no_tax_type,
            "TaxAmount": to_decimal(line.tax_minor, currency),
        }
        if line.item:
            values["ItemCode"] = line.item
        tracking = self._tracking(dimensions)
        if tracking:
            values["Tracking"] = tracking
        return values

    def _tracking(self, dimensions: dict[str, str]) -> list[dict[str, str]]:
        return [
            {"Name": category, "Option": dimensions[dimension]}
            for dimension, category in self.tracking.items()
            if dimensions.get(dimension)
        ]

    def _allocate_credit(
        self, credit: dict[str, Any], invoice_id: str, on: datetime.date, reference: str, *, exact: Decimal | None
    ) -> dict[str, Any]:
        """Allocate the credit note to the invoice: ``exact`` (a write-off: all of it, or nothing),
        otherwise as much as both still have. Idempotent: an allocation already made is kept."""
        credit_id = str(credit["CreditNoteID"])
        if credit.get("Allocations") or credit.get("Status") != "AUTHORISED":
            return credit
        invoice = self._must("Invoices", invoice_id, what=f"the invoice of {reference}")
        remaining = _dec(credit.get("RemainingCredit"))
        due = _dec(invoice.get("AmountDue")) if invoice.get("Status") == "AUTHORISED" else Decimal(0)
        amount = exact if exact is not None else min(remaining, due)
        if amount <= 0:
            return credit  # a paid invoice: the credit stays with the customer (to refund or use)
        body = {
            "Allocations": [
                {"Invoice": {"InvoiceID": invoice_id}, "Amount": amount, "Date": max(on, _xero_date(invoice))}
            ]
        }
        self.api.write(
            "PUT",
            f"CreditNotes/{credit_id}/Allocations",
            body,
            reference=reference,
            step=f"allocate:{invoice_id}",
            what=f"the allocation of credit note {_number(credit)} to invoice {_number(invoice)}",
        )
        return self._must("CreditNotes", credit_id, what=f"credit note {reference}")

    # -- payments and refunds -------------------------------------------------------------

    def apply_payment(self, doc: PaymentDocument) -> PostResult:
        self._begin(doc.correlation_id)
        existing = self._find_payment(doc.external_ref)
        if existing is not None:
            return PostResult(str(existing["PaymentID"]), doc.external_ref, {"action": "already applied"})
        amount = to_decimal(doc.amount_minor, doc.currency)
        invoice = self._must("Invoices", doc.invoice_erp_id, what=f"the invoice {doc.invoice_ref}")
        if invoice.get("Status") != "AUTHORISED" or _dec(invoice.get("AmountDue")) < amount:
            raise BusinessRuleError(
                "overpayment",
                f"Xero invoice {invoice.get('InvoiceNumber')} is {invoice.get('Status')} with "
                f"{invoice.get('AmountDue')} due; the payment of {amount} {doc.currency} does not fit. Check for a "
                "payment or credit recorded by hand in Xero.",
                f"invoice {doc.invoice_erp_id} Status {invoice.get('Status')} AmountDue {invoice.get('AmountDue')}",
                params={"erp_total": str(invoice.get("AmountDue")), "billing_total": str(amount)},
            )
        self._payment_account(doc.payment_journal)
        payment = self._pay(
            {"Invoice": {"InvoiceID": doc.invoice_erp_id}},
            doc.payment_journal,
            max(doc.paid_on, _xero_date(invoice)),
            amount,
            doc.external_ref,
            f"the payment {doc.external_ref} of invoice {invoice.get('InvoiceNumber')}",
        )
        return PostResult(str(payment["PaymentID"]), doc.external_ref, {"action": "applied"})

    def refund_credit_memo(self, doc: RefundDocument) -> PostResult:
        """A payment on the credit note: the money leaves the mapped account and the customer's
        credit is used up."""
        self._begin(doc.correlation_id)
        existing = self._find_payment(doc.external_ref)
        if existing is not None:
            return PostResult(str(existing["PaymentID"]), doc.external_ref, {"action": "already refunded"})
        amount = to_decimal(doc.amount_minor, doc.currency)
        credit = self._must("CreditNotes", doc.credit_memo_erp_id, what=f"the credit note {doc.credit_memo_ref}")
        owed = _dec(credit.get("RemainingCredit"))
        if credit.get("Status") != "AUTHORISED" or owed < amount:
            raise BusinessRuleError(
                "overrefund",
                f"Billing refunded {amount} {doc.currency} on credit note {doc.number or doc.credit_memo_ref}, but "
                f"Xero credit note {credit.get('CreditNoteNumber')} is {credit.get('Status')} with {owed} credit "
                "left to pay back. Look for a refund or allocation recorded by hand in Xero; link or skip this one.",
                f"credit note {doc.credit_memo_erp_id} Status {credit.get('Status')} RemainingCredit {owed}",
                params={"erp_total": str(owed), "billing_total": str(amount)},
            )
        self._payment_account(doc.payment_journal)
        payment = self._pay(
            {"CreditNote": {"CreditNoteID": doc.credit_memo_erp_id}},
            doc.payment_journal,
            max(doc.refunded_on, _xero_date(credit)),
            amount,
            doc.external_ref,
            f"the refund {doc.external_ref} of credit note {credit.get('CreditNoteNumber')}",
        )
        return PostResult(str(payment["PaymentID"]), doc.external_ref, {"action": "refunded"})

    def _pay(
        self, target: dict[str, Any], account: str, on: datetime.date, amount: Decimal, reference: str, what: str
    ) -> dict[str, Any]:
        body = {
            "Payments": [{**target, "Account": {"Code": account}, "Date": on, "Amount": amount, "Reference": reference}]
        }
        data = self.api.write("PUT", "Payments", body, reference=reference, step="pay", what=what)
        return dict(data["Payments"][0])

    # -- voids and write-offs -------------------------------------------------------------

    def void_invoice(self, doc: VoidDocument) -> PostResult:
        """Xero's rule: an approved document without payments or allocated credit is voided, a
        draft deleted. The VoidDocument names an invoice or, for a voided credit memo, a credit
        note: the id says which."""
        self._begin(doc.correlation_id)
        invoice = self._one("Invoices", doc.invoice_erp_id, what=f"the invoice {doc.invoice_ref}")
        if invoice is None:
            credit = self._must("CreditNotes", doc.invoice_erp_id, what=f"the document {doc.invoice_ref}")
            return self._void_credit_note(credit, doc)
        status = invoice.get("Status")
        if status in ("VOIDED", "DELETED"):
            return self._void_result(invoice)  # done before: a retry, or voided by hand
        if status == "PAID" or _dec(invoice.get("AmountPaid")) > 0 or _dec(invoice.get("AmountCredited")) > 0:
            raise BusinessRuleError(
                "void_after_payment",
                f"Billing {doc.why} invoice {doc.number or doc.invoice_ref}, but Xero invoice "
                f"{invoice.get('InvoiceNumber')} already has payments or credit allocated to it, so it cannot be "
                "voided. Refund the payment in billing (or remove the payment or allocation in Xero), then retry.",
                f"invoice {doc.invoice_erp_id} Status {status} AmountPaid {invoice.get('AmountPaid')} "
                f"AmountCredited {invoice.get('AmountCredited')}",
                params={"erp_number": str(invoice.get("InvoiceNumber"))},
            )
        target = "VOIDED" if status == "AUTHORISED" else "DELETED"
        voided = self._set_status(
            "Invoices", doc.invoice_erp_id, target, doc.external_ref, f"the void of {doc.invoice_ref}"
        )
        if voided.get("Status") != target:
            raise UncertainOutcome(f"Xero invoice {doc.invoice_erp_id} is {voided.get('Status')} after the void")
        return self._void_result(voided)

    def _void_credit_note(self, credit: dict[str, Any], doc: VoidDocument) -> PostResult:
        credit_id = str(credit["CreditNoteID"])
        if credit.get("Status") in ("VOIDED", "DELETED"):
            return self._void_result(credit)
        if credit.get("Payments"):
            raise BusinessRuleError(
                "void_after_payment",
                f"Billing voided credit note {doc.number or doc.invoice_ref}, but Xero credit note "
                f"{credit.get('CreditNoteNumber')} was already refunded, so it cannot be voided. Reverse the refund in "
                "billing (or remove the refund in Xero), then retry.",
                f"credit note {credit_id} has payments",
                params={"erp_number": str(credit.get("CreditNoteNumber"))},
            )
        # Voiding gives the invoice back what the credit note paid off: remove the allocations first.
        for allocation in credit.get("Allocations") or []:
            if allocation.get("AllocationID") and not allocation.get("IsDeleted"):
                self.api.delete(
                    f"CreditNotes/{credit_id}/Allocations/{allocation['AllocationID']}",
                    what=f"the allocation of credit note {credit.get('CreditNoteNumber')}",
                )
        target = "VOIDED" if credit.get("Status") in POSTED else "DELETED"
        voided = self._set_status("CreditNotes", credit_id, target, doc.external_ref, f"the void of {doc.invoice_ref}")
        if voided.get("Status") != target:
            raise UncertainOutcome(f"Xero credit note {credit_id} is {voided.get('Status')} after the void")
        return self._void_result(voided)

    def write_off(self, doc: WriteOffDocument) -> PostResult:
        """A credit note for what is left, to the bad-debt account, without tax, allocated to the
        invoice (Xero's documented way to write off a bad debt)."""
        self._begin(doc.correlation_id)
        amount = to_decimal(doc.amount_minor, doc.currency)
        existing = [
            c
            for c in self._find_documents("CreditNotes", "ACCRECCREDIT", doc.external_ref)
            if c.get("Status") in POSTED
        ]
        if existing:
            credit = self._allocate_credit(
                existing[0], doc.invoice_erp_id, doc.written_off_on, doc.external_ref, exact=amount
            )
            return self._credit_result(credit, "written off")
        invoice = self._must("Invoices", doc.invoice_erp_id, what=f"the invoice {doc.invoice_ref}")
        due = _dec(invoice.get("AmountDue"))
        if invoice.get("Status") != "AUTHORISED" or due != amount:
            if invoice.get("Status") == "AUTHORISED" and due > amount:
                # Billing counts a payment Xero does not hold yet: its posting is on its way.
                raise LookupError(
                    f"Xero invoice {invoice.get('InvoiceNumber')} still has {due} due, billing writes off {amount}: "
                    "waiting for a payment posting"
                )
            raise BusinessRuleError(
                "write_off_amount_mismatch",
                f"Billing writes off {amount} {doc.currency} of invoice {doc.number or doc.invoice_ref}, but Xero "
                f"invoice {invoice.get('InvoiceNumber')} is {invoice.get('Status')} with {due} due. Check for a "
                "payment or credit recorded by hand in Xero, then retry or skip.",
                f"invoice {doc.invoice_erp_id} Status {invoice.get('Status')} AmountDue {due} != {amount}",
                params={"erp_total": str(due), "billing_total": str(amount)},
            )
        self._ledger_account(doc.write_off_method, error="unknown_write_off_method", mapping="write-off method")
        on = max(doc.written_off_on, _xero_date(invoice))
        line: dict[str, Any] = {
            "Description": f"Bad debt written off: invoice {invoice.get('InvoiceNumber')} ({doc.invoice_ref})"
            + (f", {doc.reason}" if doc.reason else ""),
            "Quantity": Decimal(1),
            "UnitAmount": amount,
            "LineAmount": amount,
            "AccountCode": doc.write_off_method,
        }
        tracking = self._tracking(doc.dimensions)
        if tracking:
            line["Tracking"] = tracking
        body = {
            "CreditNotes": [
                {
                    "Type": "ACCRECCREDIT",
                    "Contact": {"ContactID": invoice["Contact"]["ContactID"]},
                    "Date": on,
                    "LineAmountTypes": "NoTax",
                    "LineItems": [line],
                    "Reference": doc.external_ref,
                    "CurrencyCode": doc.currency,
                    "Status": "AUTHORISED",
                }
            ]
        }
        data = self.api.write(
            "PUT",
            "CreditNotes",
            body,
            reference=doc.external_ref,
            step="credit",
            what=f"the write-off of {doc.invoice_ref}",
        )
        credit = self._allocate_credit(data["CreditNotes"][0], doc.invoice_erp_id, on, doc.external_ref, exact=amount)
        return self._credit_result(credit, "written off")

    # -- customer credit ------------------------------------------------------------------

    def receive_on_account(self, doc: OnAccountDocument) -> PostResult:
        """An overpayment: cash into the mapped bank account, credited to the customer's
        receivable without an invoice (Xero: Receive Money as an overpayment)."""
        self._begin(doc.correlation_id)
        existing = self._find_overpayment(doc.external_ref)
        if existing is not None:
            return self._overpayment_result(existing)
        account = self._payment_account(doc.payment_journal)
        if account.get("Type") != "BANK":
            raise BusinessRuleError(
                "unknown_payment_journal",
                f"Xero records unapplied cash only into a bank account, and '{doc.payment_journal}' "
                f"({account.get('Name')}) is not one. Map the payment method to a bank account in the hub, then retry.",
                f"account {doc.payment_journal} is Type {account.get('Type')}",
                params={"value": doc.payment_journal},
            )
        amount = to_decimal(doc.amount_minor, doc.currency)
        body = {
            "BankTransactions": [
                {
                    "Type": "RECEIVE-OVERPAYMENT",
                    "Contact": {"ContactID": doc.customer_erp_id},
                    "BankAccount": {"Code": doc.payment_journal},
                    "Date": doc.received_on,
                    "Reference": doc.external_ref,
                    "CurrencyCode": doc.currency,
                    "LineAmountTypes": "NoTax",
                    "LineItems": [
                        {"Description": f"Unapplied cash from payment {doc.payment_ref}", "LineAmount": amount}
                    ],
                }
            ]
        }
        self.api.write(
            "PUT",
            "BankTransactions",
            body,
            reference=doc.external_ref,
            step="receive",
            what=f"the unapplied cash {doc.external_ref}",
        )
        overpayment = self._find_overpayment(doc.external_ref)
        if overpayment is None:
            raise UncertainOutcome(
                f"Xero created the overpayment bank transaction but no overpayment carries {doc.external_ref}"
            )
        return self._overpayment_result(overpayment)

    @staticmethod
    def _credit_source(external_ref: str, invoice_ref: str) -> str:
        """The on-account reference of the payment an application ``<payment>:<invoice id>`` draws on."""
        invoice_id = invoice_ref.split(":", 1)[-1]
        return external_ref.removesuffix(f":{invoice_id}") + ON_ACCOUNT_SUFFIX

    def apply_credit(self, doc: PaymentDocument) -> PostResult:
        """Allocate the payment's own overpayment (its unapplied cash) to the invoice; no cash moves.
        One allocation per payment and invoice, which is how a retry recognises it."""
        self._begin(doc.correlation_id)
        source = self._credit_source(doc.external_ref, doc.invoice_ref)
        overpayment = self._find_overpayment(source)
        if overpayment is None:
            raise LookupError(f"no Xero overpayment carries {source} yet: waiting for the unapplied cash posting")
        overpayment_id = str(overpayment["OverpaymentID"])
        for allocation in overpayment.get("Allocations") or []:
            if (
                not allocation.get("IsDeleted")
                and (allocation.get("Invoice") or {}).get("InvoiceID") == doc.invoice_erp_id
            ):
                return self._credit_application_result(overpayment_id, allocation, doc.external_ref, "already applied")
        amount = to_decimal(doc.amount_minor, doc.currency)
        invoice = self._must("Invoices", doc.invoice_erp_id, what=f"the invoice {doc.invoice_ref}")
        left = _dec(overpayment.get("RemainingCredit"))
        if invoice.get("Status") != "AUTHORISED" or _dec(invoice.get("AmountDue")) < amount or left < amount:
            raise BusinessRuleError(
                "overpayment",
                f"Applying {amount} {doc.currency} of customer credit to Xero invoice {invoice.get('InvoiceNumber')} "
                f"does not fit: the invoice has {invoice.get('AmountDue')} due and the credit {left} left. Check for "
                "a payment or allocation recorded by hand in Xero.",
                f"invoice {doc.invoice_erp_id} AmountDue {invoice.get('AmountDue')}, overpayment {overpayment_id} "
                f"RemainingCredit {left}",
                params={"erp_total": str(invoice.get("AmountDue")), "billing_total": str(amount)},
            )
        body = {
            "Allocations": [
                {
                    "Invoice": {"InvoiceID": doc.invoice_erp_id},
                    "Amount": amount,
                    "Date": max(doc.paid_on, _xero_date(invoice), _xero_date(overpayment)),
                }
            ]
        }
        data = self.api.write(
            "PUT",
            f"Overpayments/{overpayment_id}/Allocations",
            body,
            reference=doc.external_ref,
            step="allocate",
            what=f"the customer credit applied to invoice {invoice.get('InvoiceNumber')}",
        )
        [allocation] = data["Allocations"]
        return self._credit_application_result(overpayment_id, allocation, doc.external_ref, "applied from credit")

    @staticmethod
    def _credit_application_result(
        overpayment_id: str, allocation: dict[str, Any], external_ref: str, action: str
    ) -> PostResult:
        return PostResult(
            str(allocation.get("AllocationID") or overpayment_id),
            external_ref,
            {"action": action, "overpayment": overpayment_id},
        )

    def _find_credit_application(self, external_ref: str) -> PostResult | None:
        """``<source>:<payment id>:<invoice id>``: the payment's overpayment has an allocation to a
        version of that invoice (its Reference is the invoice's, or ``<invoice>#r<n>``)."""
        payment_ref, _, invoice_id = external_ref.rpartition(":")
        source = external_ref.split(":", 1)[0]
        overpayment = self._find_overpayment(payment_ref + ON_ACCOUNT_SUFFIX)
        if overpayment is None:
            return None
        invoice_ref = f"{source}:{invoice_id}"
        for allocation in overpayment.get("Allocations") or []:
            invoice_id_in_xero = (allocation.get("Invoice") or {}).get("InvoiceID")
            if allocation.get("IsDeleted") or not invoice_id_in_xero:
                continue
            invoice = self._one("Invoices", str(invoice_id_in_xero), what=f"the invoice of {external_ref}")
            reference = str((invoice or {}).get("Reference") or "")
            if reference == invoice_ref or reference.startswith(f"{invoice_ref}#r"):
                return self._credit_application_result(
                    str(overpayment["OverpaymentID"]), allocation, external_ref, "applied from credit"
                )
        return None

    # -- disputes -------------------------------------------------------------------------

    def move_disputed_funds(self, doc: DisputeMovementDocument) -> PostResult:
        """Withdrawn: the money leaves the payment account for the disputed-funds account; won
        (reinstated): it comes back; lost: disputed funds become a dispute loss. A manual journal
        where Xero allows one; money leaving or entering a bank account is a bank transaction."""
        self._begin(doc.correlation_id)
        existing = self._find_dispute_movement(doc.external_ref, doc.movement, post_draft=True)
        if existing is not None:
            return existing
        base = self._base_currency()
        if base and doc.currency != base:
            raise BusinessRuleError(
                "dispute_in_foreign_currency",
                f"The dispute {doc.dispute_ref} is in {doc.currency}; the hub posts disputes to Xero only in the "
                f"organisation's currency ({base}). Record it by hand in Xero, then skip this posting.",
                f"document currency {doc.currency} != base currency {base}",
                params={"currency": doc.currency},
            )
        disputed = doc.dispute_account
        self._ledger_account(disputed, error="unknown_dispute_account", mapping="disputed funds account")
        amount = to_decimal(doc.amount_minor, doc.currency)
        label = f"Dispute {doc.dispute_ref} on payment {doc.payment_ref}: funds {doc.movement}"
        if doc.movement == "lost":
            if not doc.loss_account:
                raise ConfigurationError(f"a lost dispute needs a loss account: {doc.external_ref}")
            self._ledger_account(doc.loss_account, error="unknown_dispute_loss_account", mapping="dispute loss account")
            journal = self._journal(doc, doc.loss_account, disputed, amount, label)
            return self._journal_result(journal, doc.movement)
        cash = self._payment_account(doc.payment_journal)
        if cash.get("Type") == "BANK":
            transaction = self._bank_movement(doc, disputed, amount, label)
            return PostResult(str(transaction["BankTransactionID"]), doc.external_ref, {"action": doc.movement})
        debit, credit = (
            (disputed, doc.payment_journal) if doc.movement == "withdrawn" else (doc.payment_journal, disputed)
        )
        journal = self._journal(doc, debit, credit, amount, label)
        return self._journal_result(journal, doc.movement)

    def _journal(
        self, doc: DisputeMovementDocument, debit: str, credit: str, amount: Decimal, label: str
    ) -> dict[str, Any]:
        tracking = self._tracking(doc.dimensions)
        lines = [
            {"LineAmount": amount, "AccountCode": debit, "Description": label},
            {"LineAmount": -amount, "AccountCode": credit, "Description": label},
        ]
        if tracking:
            lines = [{**line, "Tracking": tracking} for line in lines]
        body = {
            "ManualJournals": [
                {
                    "Narration": doc.external_ref,
                    "Date": doc.moved_on,
                    "Status": "POSTED",
                    "LineAmountTypes": "NoTax",
                    "JournalLines": lines,
                }
            ]
        }
        data = self.api.write(
            "PUT",
            "ManualJournals",
            body,
            reference=doc.external_ref,
            step="journal",
            what=f"the dispute movement {doc.external_ref}",
        )
        return dict(data["ManualJournals"][0])

    def _bank_movement(
        self, doc: DisputeMovementDocument, disputed: str, amount: Decimal, label: str
    ) -> dict[str, Any]:
        contact = self._processor_contact()
        line: dict[str, Any] = {
            "Description": label,
            "Quantity": Decimal(1),
            "UnitAmount": amount,
            "LineAmount": amount,
            "AccountCode": disputed,
        }
        tracking = self._tracking(doc.dimensions)
        if tracking:
            line["Tracking"] = tracking
        body = {
            "BankTransactions": [
                {
                    "Type": "SPEND" if doc.movement == "withdrawn" else "RECEIVE",
                    "Contact": {"ContactID": contact},
                    "BankAccount": {"Code": doc.payment_journal},
                    "Date": doc.moved_on,
                    "Reference": doc.external_ref,
                    "CurrencyCode": doc.currency,
                    "LineAmountTypes": "NoTax",
                    "LineItems": [line],
                }
            ]
        }
        data = self.api.write(
            "PUT",
            "BankTransactions",
            body,
            reference=doc.external_ref,
            step="bank",
            what=f"the dispute movement {doc.external_ref}",
        )
        return dict(data["BankTransactions"][0])

    def _processor_contact(self) -> str:
        reference = f"hub:processor:{self.processor_contact}"
        contact = self._find_contact(reference)
        if contact is None:
            values = {"Name": self.processor_contact, "ContactNumber": contact_number(reference)}
            try:
                contact = self._create_contact(values, reference)
            except BusinessRuleError as exc:
                if "contact name" not in str(exc.params.get("erp_message", "")).lower():
                    raise
                found = self._find("Contacts", where(Name=self.processor_contact), what="the card processor contact")
                if not found:
                    raise
                contact = found[0]
        return str(contact["ContactID"])

    def _find_dispute_movement(
        self, external_ref: str, movement: str, *, post_draft: bool = False
    ) -> PostResult | None:
        journal = self._find_journal(external_ref)
        if journal is not None:
            if journal.get("Status") != "POSTED":
                if not post_draft:
                    return None  # a draft carries our reference: the movement posts it
                posted = self.api.write(
                    "POST",
                    f"ManualJournals/{journal['ManualJournalID']}",
                    {"ManualJournals": [{"ManualJournalID": journal["ManualJournalID"], "Status": "POSTED"}]},
                    reference=external_ref,
                    step="post",
                    what=f"the dispute movement {external_ref}",
                )
                journal = posted["ManualJournals"][0]
            return self._journal_result(journal, movement)
        if movement == "lost":
            return None
        transaction = self._find_bank_transaction(external_ref)
        if transaction is None:
            return None
        return PostResult(str(transaction["BankTransactionID"]), external_ref, {"action": movement})

    @staticmethod
    def _journal_result(journal: dict[str, Any], movement: str) -> PostResult:
        return PostResult(str(journal["ManualJournalID"]), str(journal.get("Narration") or ""), {"action": movement})


def _address(kind: str, address: Address) -> dict[str, Any] | None:
    values = {
        "AddressType": kind,
        "AddressLine1": address.line1[:500],
        "AddressLine2": address.line2[:500],
        "City": address.city[:255],
        "Region": address.state[:255],
        "PostalCode": address.postal_code[:50],
        "Country": address.country[:50],
    }
    values = {key: value for key, value in values.items() if value}
    return values if len(values) > 1 else None


def _number(document: dict[str, Any]) -> str:
    return str(document.get("InvoiceNumber") or document.get("CreditNoteNumber") or "")


def _distinct_name(name: str, external_ref: str) -> str:
    """Xero wants contact names unique: a second customer of the same name is told apart by its
    billing id."""
    return f"{name} ({external_ref.split(':', 1)[-1]})"[:255]


_MS_DATE = re.compile(r"/Date\((-?\d+)")


def _xero_date(document: dict[str, Any]) -> datetime.date:
    """A document's ``Date`` as Xero answers it (``/Date(ms+0000)/``, or ``DateString``)."""
    text = str(document.get("DateString") or "")
    if text:
        return datetime.date.fromisoformat(text[:10])
    match = _MS_DATE.search(str(document.get("Date") or ""))
    if match:
        return datetime.datetime.fromtimestamp(int(match.group(1)) / 1000, tz=datetime.UTC).date()
    return datetime.date.min
