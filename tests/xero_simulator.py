"""A contract simulator of the part of Xero's accounting API 2.0 the hub posts to, served over real
HTTP (a thread) so ``XeroConnector`` runs unchanged against it.

Written from Xero's public API description: the OpenAPI file ``xero_accounting.yaml`` of
XeroAPI/Xero-OpenAPI (paths, request and response shapes, the ``Idempotency-Key`` header of at
most 128 characters, the ``xero-tenant-id`` header, the ``Error``/``Element``/``ValidationError``
400 body, the ``where`` parameter), its ``xero-identity.yaml`` (the token response) and the
client-credentials request XeroAPI/xero-python sends for custom connections; Xero's API limits
FAQ (developer.xero.com/faq/limits: 60 calls a minute, 5 at once and a day quota per organisation,
``X-DayLimit-Remaining``, ``X-MinLimit-Remaining`` and ``X-AppMinLimit-Remaining`` on every answer,
429 when one is spent, with ``Retry-After`` and ``X-Rate-Limit-Problem``); Xero's idempotency
guide as integrators quote it (a key is kept about six minutes, errors included; the same key
with another request is refused); and refusal messages as Xero words them in integrators' code
and issue threads ("The document date cannot be before the period lock date of ...", "Payment
amount exceeds the amount outstanding on this document", "The contact name ... is already assigned
to another contact. ...", "This document cannot be edited as it has a payment or credit note
allocated to it.", "Account code '...' is not a valid code for this document."). Documents follow
the rules of the Invoices, CreditNotes, Payments, Overpayments, BankTransactions and
ManualJournals pages: a voided invoice has no payments or allocations; a credit note or an
overpayment is allocated to an invoice; a manual journal balances and takes no bank or system
account; nothing is approved, paid, allocated or journaled on or before the period lock date.

What it answers like Xero: ``POST /connect/token`` (HTTP Basic or form client credentials;
``{"error": "invalid_client"}`` when refused), ``/api.xro/2.0/<Resource>`` with a Bearer token
(expired: 401 ``{"Title": "Unauthorized", "Detail": "TokenExpired: ..."}``), the tenant header
(another tenant: 403 ``AuthenticationUnsuccessful``), ``where`` filters of ``==``/``!=`` clauses
joined by ``AND`` (strings, ``guid("...")``, numbers, booleans, dotted paths), dates answered as
``/Date(ms+0000)/`` with a ``DateString``, amounts as JSON numbers, and validation refusals as
``{"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred",
"Elements": [{...the document..., "ValidationErrors": [{"Message": ...}]}]}``.

It keeps a general ledger (``journal``) of everything it holds, so a test can read what Xero's
books say: ``receivable(contact_id)`` (the customer's accounts-receivable balance) and
``account_balance(code)``.

Every answer to a keyed write, refusals and 5xx included, is kept under its key for
``idempotency_window`` seconds and replayed to the same request. Faults on demand:
``fail_next(*modes)`` for the next writes: ``500`` (answered, and kept under the key), ``503``,
``429`` (minute limit, ``Retry-After``), and ``timeout_after_commit`` (the write is applied, then
the answer is held past the client's timeout). ``expire_tokens()``, ``refuse_credentials()``,
``lock_date`` (the period lock date).

Divergences worth knowing: fields the documented shape does not have are refused here (Xero
ignores them silently, which would hide a connector's typo); only status changes are accepted on
an existing invoice, credit note or manual journal; only ``RECEIVE``, ``SPEND`` and
``RECEIVE-OVERPAYMENT`` bank transactions; single-currency books (no rates, no gains); tax is
computed per line, rounded half up, unless the request overrides ``TaxAmount``; the wording of
some refusals (a manual journal on a bank account, an idempotency-key conflict, an overpayment line
with an account) is this simulator's own where Xero's is not published.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlparse

CLIENT_ID = "XERO-HUB-CUSTOM-CONNECTION"
CLIENT_SECRET = "xero-hub-client-secret"
TENANT_ID = "8b1b3f44-6e0c-4fd6-9d8e-3c0b6f1f2a11"
API_PREFIX = "/api.xro/2.0"
TOKEN_PATH = "/connect/token"
AR_CODE = "610"
TAX_CODE = "820"
CENT = Decimal("0.01")

_DECIMAL_MARK = "\u0000decimal:"
_DECIMAL_RE = re.compile(r'"\\u0000decimal:(-?\d+(?:\.\d+)?)"')


def money(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def _json(value: Any) -> bytes:
    def prepare(item: Any) -> Any:
        if isinstance(item, Decimal):
            return f"{_DECIMAL_MARK}{item:f}"
        if isinstance(item, dict):
            return {key: prepare(element) for key, element in item.items()}
        if isinstance(item, list | tuple):
            return [prepare(element) for element in item]
        return item

    return _DECIMAL_RE.sub(r"\1", json.dumps(prepare(value))).encode()


def _ms_date(day: datetime.date) -> str:
    moment = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.UTC)
    return f"/Date({int(moment.timestamp() * 1000)}+0000)/"


def _now_ms() -> str:
    return f"/Date({int(time.time() * 1000)})/"


class Refused(Exception):
    """A 400 ValidationException: the document with its messages."""

    def __init__(self, element: dict[str, Any], *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.element = element
        self.messages = list(messages)


class NotFound(Exception):
    pass


@dataclass
class Recorded:
    method: str
    path: str  # under /api.xro/2.0, e.g. "Invoices/<id>"
    query: dict[str, str]
    body: Any
    idempotency_key: str
    correlation_id: str
    status: int = 0
    applied: bool = False
    replayed: bool = False


@dataclass
class Entry:
    """One line of the simulator's general ledger: debit positive, credit negative."""

    document: str
    account: str
    amount: Decimal
    contact: str = ""


# -- document shapes (from the OpenAPI schemas): field -> kind --------------------------------

_ADDRESS = {
    "AddressType": {"POBOX", "STREET"},
    "AddressLine1": "str",
    "AddressLine2": "str",
    "AddressLine3": "str",
    "AddressLine4": "str",
    "City": "str",
    "Region": "str",
    "PostalCode": "str",
    "Country": "str",
    "AttentionTo": "str",
}
_CONTACT = {
    "ContactID": "guid",
    "ContactNumber": "str",
    "AccountNumber": "str",
    "ContactStatus": {"ACTIVE", "ARCHIVED"},
    "Name": "str",
    "FirstName": "str",
    "LastName": "str",
    "CompanyNumber": "str",
    "EmailAddress": "str",
    "TaxNumber": "str",
    "Addresses": [_ADDRESS],
    "DefaultCurrency": "str",
    "PaymentTerms": {
        "Sales": {
            "Day": "int",
            "Type": {"DAYSAFTERBILLDATE", "DAYSAFTERBILLMONTH", "OFCURRENTMONTH", "OFFOLLOWINGMONTH"},
        }
    },
}
_REF_CONTACT = {"ContactID": "guid"}
_TRACKING = {"Name": "str", "Option": "str", "TrackingCategoryID": "guid", "TrackingOptionID": "guid"}
_LINE = {
    "LineItemID": "guid",
    "Description": "str",
    "Quantity": "num",
    "UnitAmount": "num",
    "ItemCode": "str",
    "AccountCode": "str",
    "TaxType": "str",
    "TaxAmount": "num",
    "LineAmount": "num",
    "Tracking": [_TRACKING],
    "DiscountRate": "num",
}
_AMOUNT_TYPES = {"Exclusive", "Inclusive", "NoTax"}
_INVOICE = {
    "Type": {"ACCREC", "ACCPAY"},
    "InvoiceID": "guid",
    "Contact": _REF_CONTACT,
    "LineItems": [_LINE],
    "Date": "date",
    "DueDate": "date",
    "LineAmountTypes": _AMOUNT_TYPES,
    "InvoiceNumber": "str",
    "Reference": "str",
    "BrandingThemeID": "guid",
    "Url": "str",
    "CurrencyCode": "str",
    "Status": {"DRAFT", "SUBMITTED", "AUTHORISED", "DELETED", "VOIDED"},
    "SentToContact": "bool",
}
_CREDIT_NOTE = {
    "Type": {"ACCRECCREDIT", "ACCPAYCREDIT"},
    "CreditNoteID": "guid",
    "Contact": _REF_CONTACT,
    "LineItems": [_LINE],
    "Date": "date",
    "LineAmountTypes": _AMOUNT_TYPES,
    "CreditNoteNumber": "str",
    "Reference": "str",
    "BrandingThemeID": "guid",
    "CurrencyCode": "str",
    "Status": {"DRAFT", "SUBMITTED", "AUTHORISED", "DELETED", "VOIDED"},
    "SentToContact": "bool",
}
_ACCOUNT_REF = {"Code": "str", "AccountID": "guid"}
_PAYMENT = {
    "Invoice": {"InvoiceID": "guid", "InvoiceNumber": "str"},
    "CreditNote": {"CreditNoteID": "guid", "CreditNoteNumber": "str"},
    "Overpayment": {"OverpaymentID": "guid"},
    "Prepayment": {"PrepaymentID": "guid"},
    "Account": _ACCOUNT_REF,
    "Date": "date",
    "Amount": "num",
    "CurrencyRate": "num",
    "Reference": "str",
    "IsReconciled": "bool",
    "Status": {"AUTHORISED"},
}
_ALLOCATION = {"Invoice": {"InvoiceID": "guid"}, "Amount": "num", "Date": "date"}
_BANK_TRANSACTION = {
    "Type": {"RECEIVE", "RECEIVE-OVERPAYMENT", "RECEIVE-PREPAYMENT", "SPEND", "SPEND-OVERPAYMENT", "SPEND-PREPAYMENT"},
    "Contact": _REF_CONTACT,
    "LineItems": [_LINE],
    "BankAccount": _ACCOUNT_REF,
    "IsReconciled": "bool",
    "Date": "date",
    "Reference": "str",
    "CurrencyCode": "str",
    "CurrencyRate": "num",
    "Url": "str",
    "Status": {"AUTHORISED"},
    "LineAmountTypes": _AMOUNT_TYPES,
}
_JOURNAL_LINE = {
    "LineAmount": "num",
    "AccountCode": "str",
    "Description": "str",
    "TaxType": "str",
    "Tracking": [_TRACKING],
}
_MANUAL_JOURNAL = {
    "ManualJournalID": "guid",
    "Narration": "str",
    "JournalLines": [_JOURNAL_LINE],
    "Date": "date",
    "LineAmountTypes": _AMOUNT_TYPES,
    "Status": {"DRAFT", "POSTED", "DELETED", "VOIDED"},
    "Url": "str",
    "ShowOnCashBasisReports": "bool",
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def check_shape(value: Any, shape: Any, where: str) -> list[str]:
    """Messages for every field of ``value`` that is not in ``shape`` or has the wrong kind."""
    problems: list[str] = []
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{where} must be an object"]
        for key, item in value.items():
            if key not in shape:
                problems.append(f"{where}.{key} is not a field of this document")
            elif item is not None:
                problems.extend(check_shape(item, shape[key], f"{where}.{key}"))
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{where} must be a list"]
        for index, item in enumerate(value):
            problems.extend(check_shape(item, shape[0], f"{where}[{index}]"))
        return problems
    if isinstance(shape, set):
        return [] if value in shape else [f"{where} must be one of {', '.join(sorted(shape))}"]
    if shape == "str" and not isinstance(value, str):
        return [f"{where} must be a string"]
    if shape == "num" and (isinstance(value, bool) or not isinstance(value, int | Decimal)):
        return [f"{where} must be a number"]
    if shape == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{where} must be a whole number"]
    if shape == "bool" and not isinstance(value, bool):
        return [f"{where} must be true or false"]
    if shape == "guid" and not (isinstance(value, str) and _GUID.match(value)):
        return [f"{where} must be a GUID"]
    if shape == "date":
        try:
            datetime.date.fromisoformat(str(value)[:10])
        except ValueError:
            return [f"{where} is not a valid date (YYYY-MM-DD)"]
    return problems


# -- where filters ------------------------------------------------------------------------------

_CLAUSE = re.compile(
    r"\s*(?P<path>[A-Za-z][\w.]*)\s*(?P<op>==|!=)\s*"
    r'(?:guid\("(?P<guid>[^"]*)"\)|"(?P<str>(?:[^"\\]|\\.)*)"|(?P<bool>true|false)|(?P<num>-?\d+(?:\.\d+)?))\s*'
)


def parse_where(text: str) -> list[tuple[str, str, Any]]:
    clauses, position = [], 0
    while True:
        match = _CLAUSE.match(text, position)
        if match is None:
            raise ValueError(f"cannot parse the where filter at {text[position:]!r}")
        if match.group("guid") is not None:
            value: Any = match.group("guid").lower()
        elif match.group("str") is not None:
            value = re.sub(r"\\(.)", r"\1", match.group("str"))
        elif match.group("bool") is not None:
            value = match.group("bool") == "true"
        else:
            value = Decimal(match.group("num"))
        clauses.append((match.group("path"), match.group("op"), value))
        position = match.end()
        if position >= len(text):
            return clauses
        joiner = re.compile(r"AND\s+", re.IGNORECASE).match(text, position)
        if joiner is None:
            raise ValueError(f"cannot parse the where filter at {text[position:]!r}")
        position = joiner.end()


def _path(item: Any, path: str) -> Any:
    for part in path.split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


def matches(item: dict[str, Any], clauses: list[tuple[str, str, Any]]) -> bool:
    for path, op, value in clauses:
        found = _path(item, path)
        if isinstance(value, str) and isinstance(found, str) and _GUID.match(value):
            found = found.lower()
        elif isinstance(value, Decimal) and found is not None:
            found = Decimal(str(found))
        if (found == value) != (op == "=="):
            return False
    return True


# -- the simulator --------------------------------------------------------------------------------


@dataclass
class XeroSimulator:
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    tenant_id: str = TENANT_ID
    token_lifetime: int = 1800
    minute_limit: int = 60
    day_limit: int = 5000
    concurrent_limit: int = 5
    idempotency_window: float = 360.0
    hang_seconds: float = 2.5
    base_currency: str = "USD"
    currencies: tuple[str, ...] = ("USD", "EUR", "GBP")
    lock_date: datetime.date | None = None
    requests: list[Recorded] = field(default_factory=list)
    token_requests: int = 0
    journal: list[Entry] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.accounts: dict[str, dict[str, Any]] = {}
        self.tax_rates: dict[str, dict[str, Any]] = {}
        self.items: set[str] = set()
        self.tracking_categories: dict[str, set[str]] = {}
        self.contacts: dict[str, dict[str, Any]] = {}
        self.invoices: dict[str, dict[str, Any]] = {}
        self.credit_notes: dict[str, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.overpayments: dict[str, dict[str, Any]] = {}
        self.bank_transactions: dict[str, dict[str, Any]] = {}
        self.manual_journals: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, float] = {}
        self._refuse_credentials = False
        self._faults: list[str] = []
        self._idempotent: dict[str, tuple[float, str, bytes, int, bytes]] = {}
        self._calls: deque[float] = deque()
        self._day_calls = 0
        self._in_flight = 0
        self._numbers = {"INV": 0, "CN": 0}
        self._lock = threading.RLock()
        self._seed()
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                simulator._handle(self, "GET")

            def do_POST(self) -> None:
                simulator._handle(self, "POST")

            def do_PUT(self) -> None:
                simulator._handle(self, "PUT")

            def do_DELETE(self) -> None:
                simulator._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- set-up and reports -----------------------------------------------------------------

    def _seed(self) -> None:
        """A small organisation set up like an accountant would, with Xero's demo codes."""
        for code, name, kind, klass, extra in (
            ("090", "Business Bank Account", "BANK", "ASSET", {"BankAccountType": "BANK"}),
            ("091", "Stripe", "BANK", "ASSET", {"BankAccountType": "BANK"}),
            ("1150", "Card clearing", "CURRENT", "ASSET", {"EnablePaymentsToAccount": True}),
            ("1190", "Disputed payments", "CURRENT", "ASSET", {}),
            (AR_CODE, "Accounts Receivable", "CURRENT", "ASSET", {"SystemAccount": "DEBTORS"}),
            (TAX_CODE, "Sales Tax", "CURRLIAB", "LIABILITY", {"SystemAccount": "GST"}),
            ("200", "Sales", "REVENUE", "REVENUE", {}),
            ("210", "Usage revenue", "REVENUE", "REVENUE", {}),
            ("684", "Bad debts", "EXPENSE", "EXPENSE", {}),
            ("6810", "Dispute losses", "EXPENSE", "EXPENSE", {}),
            ("400", "Advertising", "EXPENSE", "EXPENSE", {}),
        ):
            self.add_account(code, name, kind, klass, **extra)
        for tax_type, name, rate in (
            ("NONE", "No Tax", "0"),
            ("OUTPUT2", "VAT on Income 20%", "20"),
            ("TAX001", "Sales Tax", "8.5"),
        ):
            self.tax_rates[tax_type] = {
                "Name": name,
                "TaxType": tax_type,
                "Status": "ACTIVE",
                "ReportTaxType": "OUTPUT" if rate != "0" else "NONE",
                "CanApplyToRevenue": True,
                "DisplayTaxRate": Decimal(rate),
                "EffectiveRate": Decimal(rate),
                "TaxComponents": [{"Name": name, "Rate": Decimal(rate), "IsCompound": False}],
            }

    def add_account(self, code: str, name: str, kind: str, klass: str, **extra: Any) -> None:
        self.accounts[code] = {
            "AccountID": str(uuid.uuid4()),
            "Code": code,
            "Name": name,
            "Type": kind,
            "Class": klass,
            "Status": "ACTIVE",
            "TaxType": "NONE",
            "EnablePaymentsToAccount": False,
            **extra,
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Connection settings pointing the connector at this simulator."""
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "tenant_id": self.tenant_id,
            "base_url": self.url + API_PREFIX,
            "token_url": self.url + TOKEN_PATH,
            **overrides,
        }

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fail_next(self, *modes: str) -> None:
        """``500``, ``503``, ``429`` or ``timeout_after_commit``, for the next writes in order."""
        self._faults.extend(modes)

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens = {token: 0.0 for token in self._tokens}

    def refuse_credentials(self, refuse: bool = True) -> None:
        self._refuse_credentials = refuse

    def receivable(self, contact_id: str) -> Decimal:
        """What the customer owes in Xero's books: the accounts-receivable balance of the contact
        (open invoices less unallocated credit notes and overpayments)."""
        with self._lock:
            return sum((e.amount for e in self.journal if e.account == AR_CODE and e.contact == contact_id), Decimal(0))

    def account_balance(self, code: str) -> Decimal:
        """Debits less credits on an account."""
        with self._lock:
            return sum((e.amount for e in self.journal if e.account == code), Decimal(0))

    def by_reference(self, documents: dict[str, dict[str, Any]], reference: str) -> list[dict[str, Any]]:
        with self._lock:
            return [doc for doc in documents.values() if doc.get("Reference") == reference]

    def contact_by_number(self, number: str) -> dict[str, Any] | None:
        with self._lock:
            return next((c for c in self.contacts.values() if c.get("ContactNumber") == number), None)

    def writes(self, path_prefix: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET" and r.path.startswith(path_prefix)]

    # -- HTTP -------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if parsed.path == TOKEN_PATH and method == "POST":
            return self._token(handler, raw)
        if not parsed.path.startswith(API_PREFIX + "/"):
            return self._answer(handler, 404, {"Title": "NotFound", "Status": 404, "Detail": "Not found"})
        path = unquote(parsed.path[len(API_PREFIX) + 1 :])
        query = dict(parse_qsl(parsed.query))
        key = handler.headers.get("Idempotency-Key", "")
        record = Recorded(method, path, query, None, key, handler.headers.get("X-Correlation-ID", ""))
        with self._lock:
            self.requests.append(record)
        try:
            record.body = json.loads(raw, parse_float=Decimal) if raw else None
        except ValueError:
            return self._answer(
                handler, 400, {"Title": "Bad Request", "Status": 400, "Detail": "The body is not JSON"}, record
            )

        refused = self._authenticate(handler)
        if refused is not None:
            return self._answer(handler, *refused, record)
        limited = self._take_call()
        if limited is not None:
            status, body, headers = limited
            return self._answer(handler, status, body, record, headers=headers)
        try:
            self._serve(handler, method, path, query, raw, key, record)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _token(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        self.token_requests += 1
        form = dict(parse_qsl(raw.decode()))
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        authorization = handler.headers.get("Authorization", "")
        if authorization.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                client_id = ""
        if form.get("grant_type") != "client_credentials":
            return self._answer(handler, 400, {"error": "unsupported_grant_type"})
        if self._refuse_credentials or (client_id, client_secret) != (self.client_id, self.client_secret):
            return self._answer(handler, 400, {"error": "invalid_client"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        scope = form.get("scope") or "accounting.transactions accounting.contacts accounting.settings"
        return self._answer(
            handler,
            200,
            {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer", "scope": scope},
        )

    def _authenticate(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]] | None:
        authorization = handler.headers.get("Authorization", "")
        token = authorization[7:] if authorization.startswith("Bearer ") else ""
        with self._lock:
            expiry = self._tokens.get(token)
        if expiry is None or expiry <= time.monotonic():
            detail = "AuthenticationUnsuccessful"
            if expiry is not None:
                detail = f"TokenExpired: token expired at {datetime.datetime.now(datetime.UTC):%m/%d/%Y %H:%M:%S}"
            return 401, {
                "Type": None,
                "Title": "Unauthorized",
                "Status": 401,
                "Detail": detail,
                "Instance": str(uuid.uuid4()),
                "Extensions": {},
            }
        if self.tenant_id and handler.headers.get("xero-tenant-id", "") != self.tenant_id:
            return 403, {
                "Type": None,
                "Title": "Forbidden",
                "Status": 403,
                "Detail": "AuthenticationUnsuccessful",
                "Instance": str(uuid.uuid4()),
                "Extensions": {},
            }
        return None

    def _take_call(self) -> tuple[int, dict[str, Any], dict[str, str]] | None:
        """Counts the call against the organisation's limits; a 429 when one is spent."""
        with self._lock:
            now = time.monotonic()
            while self._calls and self._calls[0] <= now - 60:
                self._calls.popleft()
            problem, retry_after = "", 0
            if self._day_calls >= self.day_limit:
                problem, retry_after = "day", 3600
            elif len(self._calls) >= self.minute_limit:
                problem, retry_after = "minute", max(1, int(self._calls[0] + 60 - now + 0.999))
            elif self._in_flight >= self.concurrent_limit:
                problem = "concurrent"
            if problem:
                headers = {"X-Rate-Limit-Problem": problem, **self._limit_headers()}
                if retry_after:
                    headers["Retry-After"] = str(retry_after)
                return (
                    429,
                    {"Title": "Too Many Requests", "Status": 429, "Detail": f"{problem} rate limit exceeded"},
                    headers,
                )
            self._calls.append(now)
            self._day_calls += 1
            self._in_flight += 1
            return None

    def _limit_headers(self) -> dict[str, str]:
        return {
            "X-DayLimit-Remaining": str(max(0, self.day_limit - self._day_calls)),
            "X-MinLimit-Remaining": str(max(0, self.minute_limit - len(self._calls))),
            "X-AppMinLimit-Remaining": str(max(0, 10000 - len(self._calls))),
        }

    def _serve(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        path: str,
        query: dict[str, str],
        raw: bytes,
        key: str,
        record: Recorded,
    ) -> None:
        writes = method in ("POST", "PUT")
        if writes and len(key) > 128:
            return self._answer(
                handler,
                400,
                {"Title": "Bad Request", "Status": 400, "Detail": "Idempotency-Key is longer than 128 characters"},
                record,
            )
        fault = ""
        with self._lock:
            if writes and key:
                self._forget_old_keys()
                kept = self._idempotent.get(key)
                if kept is not None:
                    _, request_line, request_body, status, body = kept
                    if (request_line, request_body) != (f"{method} {path}", raw):
                        return self._answer(
                            handler,
                            400,
                            {
                                "Title": "Bad Request",
                                "Status": 400,
                                "Detail": f"Idempotency-Key {key} is used with a different request",
                            },
                            record,
                        )
                    record.replayed = True
                    return self._answer_raw(handler, status, body, record)
            if writes and self._faults:
                fault = self._faults.pop(0)
            if fault in ("503", "429"):
                if fault == "429":
                    headers = {"X-Rate-Limit-Problem": "minute", "Retry-After": "2", **self._limit_headers()}
                    return self._answer(
                        handler, 429, {"Title": "Too Many Requests", "Status": 429}, record, headers=headers
                    )
                return self._answer(
                    handler,
                    503,
                    {"Title": "Service Unavailable", "Status": 503, "Detail": "The Xero API is unavailable"},
                    record,
                    headers={"Retry-After": "1"},
                )
            if fault == "500":
                status, payload = (
                    500,
                    {
                        "Title": "An error occurred",
                        "Status": 500,
                        "Detail": "An error occurred in Xero. Check the API Status page "
                        "http://status.developer.xero.com for current service status.",
                    },
                )
            else:
                status, payload = self._dispatch(method, path, query, record)
            body = _json(payload)
            if writes and key:
                self._idempotent[key] = (time.monotonic(), f"{method} {path}", raw, status, body)
        if fault == "timeout_after_commit":
            record.status = status  # done; the answer comes after the client stopped waiting
            time.sleep(self.hang_seconds)
        self._answer_raw(handler, status, body, record)

    def _forget_old_keys(self) -> None:
        horizon = time.monotonic() - self.idempotency_window
        for key in [k for k, kept in self._idempotent.items() if kept[0] < horizon]:
            del self._idempotent[key]

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        payload: Any,
        record: Recorded | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._answer_raw(handler, status, _json(payload), record, headers=headers)

    def _answer_raw(
        self,
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        record: Recorded | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        if record is not None:
            record.status = status
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            for name, value in {**(self._limit_headers() if record is not None else {}), **(headers or {})}.items():
                handler.send_header(name, value)
            if status == 401:
                handler.send_header("WWW-Authenticate", 'Bearer error="invalid_token"')
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout after commit)

    # -- the resources ----------------------------------------------------------------------

    def _dispatch(self, method: str, path: str, query: dict[str, str], record: Recorded) -> tuple[int, Any]:
        parts = path.split("/")
        try:
            if method == "GET":
                return 200, self._get(parts, query)
            body = record.body if isinstance(record.body, dict) else {}
            result = self._write(method, parts, body)
            record.applied = True
            return 200, result
        except Refused as refused:
            element = {**refused.element, "ValidationErrors": [{"Message": m} for m in refused.messages]}
            return 400, {
                "ErrorNumber": 10,
                "Type": "ValidationException",
                "Message": "A validation exception occurred",
                "Elements": [element],
            }
        except NotFound:
            return 404, {
                "Title": "NotFound",
                "Status": 404,
                "Detail": "The resource you're looking for cannot be found",
            }
        except ValueError as exc:
            return 400, {"ErrorNumber": 16, "Type": "QueryParseException", "Message": str(exc)}
        except Exception as exc:  # noqa: BLE001 - a simulator bug: say so rather than drop the connection
            return 500, {"Title": "Simulator error", "Status": 500, "Detail": f"{type(exc).__name__}: {exc}"}

    def _envelope(self, name: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "Id": str(uuid.uuid4()),
            "Status": "OK",
            "ProviderName": "Hub contract tests",
            "DateTimeUTC": _now_ms(),
            name: items,
        }

    _COLLECTIONS = {
        "Contacts": ("contacts", "_contact_out"),
        "Invoices": ("invoices", "_invoice_out"),
        "CreditNotes": ("credit_notes", "_credit_out"),
        "Payments": ("payments", "_payment_out"),
        "Overpayments": ("overpayments", "_overpayment_out"),
        "BankTransactions": ("bank_transactions", "_bank_out"),
        "ManualJournals": ("manual_journals", "_journal_out"),
    }

    def _get(self, parts: list[str], query: dict[str, str]) -> dict[str, Any]:
        name = parts[0]
        if name == "Organisation":
            return self._envelope(
                "Organisations",
                [
                    {
                        "OrganisationID": str(uuid.UUID(self.tenant_id)) if self.tenant_id else str(uuid.uuid4()),
                        "Name": "Hub Demo Company",
                        "BaseCurrency": self.base_currency,
                        "CountryCode": "US",
                        "Version": "US",
                        "OrganisationStatus": "ACTIVE",
                    }
                ],
            )
        if name == "Accounts":
            return self._envelope("Accounts", [dict(a) for a in self.accounts.values()])
        if name == "TaxRates":
            return self._envelope("TaxRates", [dict(t) for t in self.tax_rates.values()])
        if name == "Currencies":
            return self._envelope("Currencies", [{"Code": c, "Description": c} for c in self.currencies])
        if name not in self._COLLECTIONS:
            raise NotFound(name)
        store_name, render = self._COLLECTIONS[name]
        store: dict[str, dict[str, Any]] = getattr(self, store_name)
        out = getattr(self, render)
        if len(parts) == 2:
            document = store.get(parts[1].lower())
            if document is None:
                raise NotFound(parts[1])
            return self._envelope(name, [out(document)])
        clauses = parse_where(query["where"]) if query.get("where") else []
        found = [out(doc) for doc in store.values()]
        if name == "Contacts" and query.get("includeArchived", "").lower() != "true":
            found = [c for c in found if c["ContactStatus"] != "ARCHIVED"]
        return self._envelope(name, [doc for doc in found if matches(doc, clauses)])

    def _write(self, method: str, parts: list[str], body: dict[str, Any]) -> dict[str, Any]:
        name = parts[0]
        if name == "Contacts" and len(parts) == 1:
            return self._envelope(
                "Contacts",
                [
                    self._contact_out(self._save_contact(c, upsert=method == "POST"))
                    for c in self._items(body, "Contacts", _CONTACT)
                ],
            )
        if name in ("Invoices", "CreditNotes") and len(parts) == 1 and method == "PUT":
            shape = _INVOICE if name == "Invoices" else _CREDIT_NOTE
            created = [self._create_document(name, doc) for doc in self._items(body, name, shape)]
            render = self._invoice_out if name == "Invoices" else self._credit_out
            return self._envelope(name, [render(doc) for doc in created])
        if name in ("Invoices", "CreditNotes") and len(parts) == 2 and method == "POST":
            shape = _INVOICE if name == "Invoices" else _CREDIT_NOTE
            [change] = self._items(body, name, shape)
            document = self._status_change(name, parts[1].lower(), change)
            return self._envelope(name, [(self._invoice_out if name == "Invoices" else self._credit_out)(document)])
        if (
            name in ("CreditNotes", "Overpayments")
            and len(parts) == 3
            and parts[2] == "Allocations"
            and method == "PUT"
        ):
            allocations = [
                self._allocate(name, parts[1].lower(), a) for a in self._items(body, "Allocations", _ALLOCATION)
            ]
            return self._envelope("Allocations", allocations)
        if name == "CreditNotes" and len(parts) == 4 and parts[2] == "Allocations" and method == "DELETE":
            return self._delete_allocation(parts[1].lower(), parts[3].lower())
        if name == "Payments" and len(parts) == 1 and method == "PUT":
            return self._envelope(
                "Payments", [self._payment_out(self._pay(p)) for p in self._items(body, "Payments", _PAYMENT)]
            )
        if name == "BankTransactions" and len(parts) == 1 and method == "PUT":
            return self._envelope(
                "BankTransactions",
                [
                    self._bank_out(self._bank_transaction(t))
                    for t in self._items(body, "BankTransactions", _BANK_TRANSACTION)
                ],
            )
        if name == "ManualJournals" and len(parts) == 1 and method == "PUT":
            return self._envelope(
                "ManualJournals",
                [
                    self._journal_out(self._manual_journal(j))
                    for j in self._items(body, "ManualJournals", _MANUAL_JOURNAL)
                ],
            )
        if name == "ManualJournals" and len(parts) == 2 and method == "POST":
            [change] = self._items(body, "ManualJournals", _MANUAL_JOURNAL)
            return self._envelope("ManualJournals", [self._journal_out(self._post_journal(parts[1].lower(), change))])
        raise NotFound("/".join(parts))

    @staticmethod
    def _items(body: dict[str, Any], name: str, shape: dict[str, Any]) -> list[dict[str, Any]]:
        extra = [key for key in body if key != name]
        items = body.get(name)
        if extra or not isinstance(items, list) or not items:
            raise Refused(
                {},
                f'The request body must be {{"{name}": [...]}}' + (f"; unexpected {', '.join(extra)}" if extra else ""),
            )
        for item in items:
            problems = check_shape(item, shape, name[:-1] if name.endswith("s") else name)
            if problems:
                raise Refused(item if isinstance(item, dict) else {}, *problems)
        return items

    # contacts

    def _save_contact(self, values: dict[str, Any], *, upsert: bool) -> dict[str, Any]:
        existing = self.contacts.get(str(values.get("ContactID", "")).lower()) if values.get("ContactID") else None
        if values.get("ContactID") and existing is None:
            raise Refused(values, "The contact with the specified ContactID could not be found")
        if existing is None and not upsert and values.get("ContactID"):
            raise Refused(values, "Use POST to update a contact")
        merged = {**(existing or {}), **values}
        problems = []
        name = str(merged.get("Name") or "")
        if not name.strip():
            problems.append("The contact name must be specified.")
        elif len(name) > 255:
            problems.append("The contact name must not be longer than 255 characters.")
        number = merged.get("ContactNumber")
        if number and len(number) > 50:
            problems.append("The contact number must not be longer than 50 characters.")
        email = merged.get("EmailAddress")
        if email and not _EMAIL.match(email):
            problems.append("Email address must be valid.")
        if merged.get("TaxNumber") and len(merged["TaxNumber"]) > 50:
            problems.append("The tax number must not be longer than 50 characters.")
        if merged.get("DefaultCurrency") and merged["DefaultCurrency"] not in self.currencies:
            problems.append(f"The currency {merged['DefaultCurrency']} is not set up for this organisation.")
        for other in self.contacts.values():
            if existing is not None and other["ContactID"] == existing["ContactID"]:
                continue
            if other["ContactStatus"] == "ACTIVE" and name and other["Name"].lower() == name.lower():
                problems.append(
                    f"The contact name {name} is already assigned to another contact. The contact name must be unique "
                    "across all active contacts."
                )
            if number and other.get("ContactNumber") == number:
                problems.append(f"The contact number {number} is already assigned to another contact.")
        if problems:
            raise Refused(values, *problems)
        if existing is None:
            merged["ContactID"] = str(uuid.uuid4())
            merged.setdefault("ContactStatus", "ACTIVE")
        self.contacts[merged["ContactID"]] = merged
        return merged

    def _contact_out(self, contact: dict[str, Any]) -> dict[str, Any]:
        return {
            "Addresses": [],
            "Phones": [],
            "ContactGroups": [],
            "ContactPersons": [],
            "IsSupplier": False,
            "IsCustomer": any(i["Contact"]["ContactID"] == contact["ContactID"] for i in self.invoices.values()),
            "HasValidationErrors": False,
            **contact,
            "UpdatedDateUTC": _now_ms(),
        }

    def _contact(self, ref: dict[str, Any], element: dict[str, Any]) -> dict[str, Any]:
        contact = self.contacts.get(str((ref or {}).get("ContactID", "")).lower())
        if contact is None:
            raise Refused(element, "The contact could not be found. A contact must be specified by its ContactID.")
        if contact["ContactStatus"] != "ACTIVE":
            raise Refused(element, "The contact is archived and cannot be used.")
        return contact

    # invoices and credit notes

    def _locked(self, day: datetime.date, element: dict[str, Any]) -> None:
        if self.lock_date is not None and day <= self.lock_date:
            raise Refused(
                element, f"The document date cannot be before the period lock date of {self.lock_date:%d %B %Y}."
            )

    def _lines(
        self, lines: list[dict[str, Any]], amount_types: str, element: dict[str, Any], *, bank: bool = False
    ) -> list[dict[str, Any]]:
        problems, computed = [], []
        for index, given in enumerate(lines):
            line = dict(given)
            if not str(line.get("Description") or "").strip() and "LineAmount" not in line:
                problems.append(f"Line {index + 1}: Description cannot be empty.")
            code = line.get("AccountCode")
            if code is not None:
                account = self.accounts.get(code)
                if account is None:
                    problems.append(f"Account code '{code}' is not a valid code for this document.")
                elif account["Status"] != "ACTIVE":
                    problems.append(f"Account code '{code}' has been archived, or deleted.")
                elif account["Type"] == "BANK" or account.get("SystemAccount"):
                    problems.append(f"Account code '{code}' is not a valid code for this document.")
            elif not bank:
                problems.append(f"Line {index + 1}: An account code must be specified.")
            tax_type = line.get("TaxType")
            if amount_types == "NoTax":
                line["TaxType"], rate = "NONE", Decimal(0)
            elif tax_type is None:
                rate = Decimal(0)
                line["TaxType"] = (self.accounts.get(code or "") or {}).get("TaxType", "NONE")
            elif tax_type not in self.tax_rates or self.tax_rates[tax_type]["Status"] != "ACTIVE":
                problems.append(
                    f"The TaxType code '{tax_type}' does not exist or cannot be used with this type of account."
                )
                rate = Decimal(0)
            else:
                rate = self.tax_rates[tax_type]["EffectiveRate"] / 100
            if line.get("ItemCode") is not None and line["ItemCode"] not in self.items:
                problems.append(f"Item code '{line['ItemCode']}' is not valid.")
            tracking = line.get("Tracking") or []
            if len(tracking) > 2:
                problems.append("A line item can have at most 2 tracking categories.")
            for option in tracking:
                options = self.tracking_categories.get(option.get("Name", ""))
                if options is None or option.get("Option") not in options:
                    problems.append(
                        f"Tracking category '{option.get('Name')}' option '{option.get('Option')}' does not exist."
                    )
            quantity = Decimal(str(line.get("Quantity", 1)))
            unit = line.get("UnitAmount")
            given_amount = line.get("LineAmount")
            if unit is None and given_amount is None:
                problems.append(f"Line {index + 1}: a UnitAmount or a LineAmount is required.")
                continue
            expected = money(quantity * Decimal(str(unit))) if unit is not None else money(Decimal(str(given_amount)))
            if given_amount is not None and money(Decimal(str(given_amount))) != expected:
                problems.append(f"The line total {given_amount} does not match the expected line total {expected}.")
            if "TaxAmount" in line and amount_types != "NoTax":
                tax = money(Decimal(str(line["TaxAmount"])))
            elif amount_types == "Inclusive":
                tax = money(expected * rate / (1 + rate))
            else:
                tax = money(expected * rate) if amount_types == "Exclusive" else Decimal(0)
            line.update(
                Quantity=quantity.quantize(Decimal("0.0001")),
                UnitAmount=money(Decimal(str(unit))) if unit is not None else expected,
                LineAmount=expected,
                TaxAmount=tax,
                LineItemID=str(uuid.uuid4()),
                Tracking=tracking,
            )
            computed.append(line)
        if problems:
            raise Refused(element, *problems)
        return computed

    def _create_document(self, resource: str, values: dict[str, Any]) -> dict[str, Any]:
        invoice = resource == "Invoices"
        kind = values.get("Type")
        if kind not in (("ACCREC", "ACCPAY") if invoice else ("ACCRECCREDIT", "ACCPAYCREDIT")):
            raise Refused(values, "The document type must be specified.")
        contact = self._contact(values.get("Contact", {}), values)
        if not values.get("LineItems"):
            raise Refused(values, "The document must have at least one line item.")
        status = values.get("Status", "DRAFT")
        if status not in ("DRAFT", "SUBMITTED", "AUTHORISED"):
            raise Refused(values, f"A new document cannot be created as {status}.")
        currency = values.get("CurrencyCode") or self.base_currency
        if currency not in self.currencies:
            raise Refused(values, f"The currency code {currency} is not valid for this organisation.")
        if values.get("Reference") and len(values["Reference"]) > 255:
            raise Refused(values, "The reference must not be longer than 255 characters.")
        amount_types = values.get("LineAmountTypes", "Exclusive")
        lines = self._lines(values["LineItems"], amount_types, values)
        day = datetime.date.fromisoformat(values["Date"][:10]) if values.get("Date") else datetime.date.today()
        due = datetime.date.fromisoformat(values["DueDate"][:10]) if values.get("DueDate") else None
        if invoice and kind == "ACCREC" and status == "AUTHORISED" and due is None:
            raise Refused(values, "Due Date is required for an approved sales invoice.")
        subtotal = sum((line["LineAmount"] for line in lines), Decimal(0))
        tax = sum((line["TaxAmount"] for line in lines), Decimal(0))
        if amount_types == "Inclusive":
            subtotal -= tax
        document: dict[str, Any] = {
            "Type": kind,
            "Contact": {"ContactID": contact["ContactID"], "Name": contact["Name"]},
            "Date": day,
            "LineAmountTypes": amount_types,
            "LineItems": lines,
            "Reference": values.get("Reference", ""),
            "CurrencyCode": currency,
            "CurrencyRate": Decimal("1.000000"),
            "Status": "DRAFT",
            "SubTotal": subtotal,
            "TotalTax": tax,
            "Total": subtotal + tax,
            "Payments": [],
            "Allocations": [],
        }
        if invoice:
            number = values.get("InvoiceNumber")
            if number is None and kind == "ACCREC":
                self._numbers["INV"] += 1
                number = f"INV-{self._numbers['INV']:04d}"
            if kind == "ACCREC" and any(
                i.get("InvoiceNumber") == number and i["Status"] != "DELETED" for i in self.invoices.values()
            ):
                raise Refused(values, "Invoice # must be unique.")
            document.update(
                InvoiceID=str(uuid.uuid4()),
                InvoiceNumber=number,
                DueDate=due,
                AmountDue=subtotal + tax,
                AmountPaid=Decimal(0),
                AmountCredited=Decimal(0),
                CreditNotes=[],
                Overpayments=[],
            )
        else:
            self._numbers["CN"] += 1
            document.update(
                CreditNoteID=str(uuid.uuid4()),
                CreditNoteNumber=values.get("CreditNoteNumber") or f"CN-{self._numbers['CN']:04d}",
                RemainingCredit=subtotal + tax,
            )
        if status == "AUTHORISED":
            self._locked(day, values)
        store = self.invoices if invoice else self.credit_notes
        store[document["InvoiceID" if invoice else "CreditNoteID"]] = document
        if status != "DRAFT":
            self._set(resource, document, status, values)
        return document

    def _status_change(self, resource: str, document_id: str, change: dict[str, Any]) -> dict[str, Any]:
        store = self.invoices if resource == "Invoices" else self.credit_notes
        id_field = "InvoiceID" if resource == "Invoices" else "CreditNoteID"
        document = store.get(document_id)
        if document is None:
            raise NotFound(document_id)
        others = [key for key in change if key not in (id_field, "Status")]
        if others:
            raise Refused(
                change, f"This simulator changes only the Status of an existing document, not {', '.join(others)}."
            )
        if change.get(id_field, document_id).lower() != document_id:
            raise Refused(change, f"The {id_field} in the body is not the one in the URL.")
        if "Status" in change and change["Status"] != document["Status"]:
            self._set(resource, document, change["Status"], change)
        return document

    def _set(self, resource: str, document: dict[str, Any], status: str, element: dict[str, Any]) -> None:
        current = document["Status"]
        sign = 1 if resource == "Invoices" else -1
        name = document.get("InvoiceID") or document.get("CreditNoteID")
        if status in ("SUBMITTED", "AUTHORISED") and current in ("DRAFT", "SUBMITTED"):
            if status == "AUTHORISED":
                if resource == "Invoices" and document["Type"] == "ACCREC" and document.get("DueDate") is None:
                    raise Refused(element, "Due Date is required for an approved sales invoice.")
                self._locked(document["Date"], element)
                contact = document["Contact"]["ContactID"]
                self._book(name, AR_CODE, sign * document["Total"], contact)
                for line in document["LineItems"]:
                    self._book(
                        name,
                        line["AccountCode"],
                        -sign * line["LineAmount"]
                        + (sign * line["TaxAmount"] if document["LineAmountTypes"] == "Inclusive" else 0),
                    )
                if document["TotalTax"]:
                    self._book(name, TAX_CODE, -sign * document["TotalTax"])
            document["Status"] = status
            return
        if status == "DELETED" and current in ("DRAFT", "SUBMITTED"):
            document["Status"] = status
            return
        if status == "VOIDED" and current in ("AUTHORISED", "PAID"):
            if resource == "Invoices" and (document["AmountPaid"] or document["AmountCredited"]):
                raise Refused(
                    element, "This document cannot be edited as it has a payment or credit note allocated to it."
                )
            if resource == "CreditNotes" and (
                document["Payments"] or any(not a.get("IsDeleted") for a in document["Allocations"])
            ):
                raise Refused(
                    element, "This document cannot be edited as it has a payment or credit note allocated to it."
                )
            self._locked(document["Date"], element)
            for entry in [e for e in self.journal if e.document == name]:
                self._book(name, entry.account, -entry.amount, entry.contact)
            document["Status"] = "VOIDED"
            if resource == "Invoices":
                document["AmountDue"] = Decimal(0)
            else:
                document["RemainingCredit"] = Decimal(0)
            return
        what = "Invoice" if resource == "Invoices" else "Credit note"
        raise Refused(element, f"{what} not of valid status for modification")

    def _book(self, document: str, account: str, amount: Decimal, contact: str = "") -> None:
        if amount:
            self.journal.append(Entry(document, account, amount, contact))

    def _document_out(self, document: dict[str, Any]) -> dict[str, Any]:
        out = {key: value for key, value in document.items()}
        out["DateString"] = f"{document['Date'].isoformat()}T00:00:00"
        out["Date"] = _ms_date(document["Date"])
        if document.get("DueDate"):
            out["DueDateString"] = f"{document['DueDate'].isoformat()}T00:00:00"
            out["DueDate"] = _ms_date(document["DueDate"])
        out["LineItems"] = [dict(line, ValidationErrors=[]) for line in document["LineItems"]]
        out.update(
            HasErrors=False,
            UpdatedDateUTC=_now_ms(),
            UpdatedDateUTCString=f"{datetime.datetime.now(datetime.UTC):%Y-%m-%dT%H:%M:%SZ}",
        )
        return out

    def _invoice_out(self, invoice: dict[str, Any]) -> dict[str, Any]:
        out = self._document_out(invoice)
        out.pop("Allocations", None)
        out.update(IsDiscounted=False, HasAttachments=False, SentToContact=False)
        return out

    def _credit_out(self, credit: dict[str, Any]) -> dict[str, Any]:
        out = self._document_out(credit)
        out["Allocations"] = [dict(a) for a in credit["Allocations"] if not a.get("IsDeleted")]
        out.update(
            AppliedAmount=credit["Total"] - credit["RemainingCredit"] if credit["Status"] != "VOIDED" else Decimal(0),
            HasAttachments=False,
        )
        return out

    # allocations

    def _allocate(self, resource: str, source_id: str, values: dict[str, Any]) -> dict[str, Any]:
        store = self.credit_notes if resource == "CreditNotes" else self.overpayments
        source = store.get(source_id)
        if source is None:
            raise NotFound(source_id)
        invoice = self.invoices.get(str((values.get("Invoice") or {}).get("InvoiceID", "")).lower())
        amount = values.get("Amount")
        problems = []
        if invoice is None:
            raise Refused(values, "Invoice could not be found")
        if source["Status"] != "AUTHORISED":
            problems.append(
                f"The {'credit note' if resource == 'CreditNotes' else 'overpayment'} is {source['Status']} and has "
                "no credit to allocate."
            )
        if invoice["Status"] != "AUTHORISED":
            problems.append("Invoice is not of valid status for allocation")
        if invoice["Contact"]["ContactID"] != source["Contact"]["ContactID"]:
            problems.append("The invoice and the credit must belong to the same contact")
        if invoice["CurrencyCode"] != source["CurrencyCode"]:
            problems.append("The invoice and the credit must be in the same currency")
        if amount is None or Decimal(str(amount)) <= 0:
            problems.append("Amount must be greater than zero")
        else:
            amount = money(Decimal(str(amount)))
            if amount > source["RemainingCredit"]:
                problems.append("The amount to allocate exceeds the remaining credit")
            if amount > invoice["AmountDue"]:
                problems.append("The amount to allocate exceeds the amount due on the invoice")
        day = datetime.date.fromisoformat(values["Date"][:10]) if values.get("Date") else datetime.date.today()
        if problems:
            raise Refused(values, *problems)
        self._locked(day, values)
        allocation = {
            "AllocationID": str(uuid.uuid4()),
            "Amount": amount,
            "Date": _ms_date(day),
            "Invoice": {"InvoiceID": invoice["InvoiceID"], "InvoiceNumber": invoice["InvoiceNumber"]},
            "IsDeleted": False,
        }
        source["Allocations"].append(allocation)
        source["RemainingCredit"] -= amount
        if source["RemainingCredit"] == 0:
            source["Status"] = "PAID"
        invoice["AmountDue"] -= amount
        invoice["AmountCredited"] += amount
        if resource == "CreditNotes":
            invoice["CreditNotes"].append(
                {
                    "CreditNoteID": source["CreditNoteID"],
                    "CreditNoteNumber": source["CreditNoteNumber"],
                    "AppliedAmount": amount,
                }
            )
            allocation_out = {**allocation, "CreditNote": {"CreditNoteID": source["CreditNoteID"]}}
        else:
            invoice["Overpayments"].append({"OverpaymentID": source["OverpaymentID"], "AppliedAmount": amount})
            allocation_out = {**allocation, "Overpayment": {"OverpaymentID": source["OverpaymentID"]}}
        if invoice["AmountDue"] == 0:
            invoice["Status"] = "PAID"
        return allocation_out

    def _delete_allocation(self, credit_id: str, allocation_id: str) -> dict[str, Any]:
        credit = self.credit_notes.get(credit_id)
        if credit is None:
            raise NotFound(credit_id)
        allocation = next(
            (a for a in credit["Allocations"] if a["AllocationID"].lower() == allocation_id and not a["IsDeleted"]),
            None,
        )
        if allocation is None:
            raise NotFound(allocation_id)
        invoice = self.invoices[allocation["Invoice"]["InvoiceID"]]
        allocation["IsDeleted"] = True
        credit["RemainingCredit"] += allocation["Amount"]
        credit["Status"] = "AUTHORISED"
        invoice["AmountDue"] += allocation["Amount"]
        invoice["AmountCredited"] -= allocation["Amount"]
        invoice["CreditNotes"] = [c for c in invoice["CreditNotes"] if c["CreditNoteID"] != credit["CreditNoteID"]]
        if invoice["Status"] == "PAID":
            invoice["Status"] = "AUTHORISED"
        return {**allocation, "CreditNote": {"CreditNoteID": credit["CreditNoteID"]}}

    # payments

    def _payment_account(
        self, ref: dict[str, Any], element: dict[str, Any], *, bank_only: bool = False
    ) -> dict[str, Any]:
        account = self.accounts.get(str((ref or {}).get("Code", ""))) or next(
            (a for a in self.accounts.values() if a["AccountID"] == (ref or {}).get("AccountID")), None
        )
        if account is None or account["Status"] != "ACTIVE":
            raise Refused(element, "Account code is not a valid code for this document.")
        if account["Type"] != "BANK" and (bank_only or not account.get("EnablePaymentsToAccount")):
            raise Refused(
                element,
                "Account type is invalid for making a payment to/from"
                if not bank_only
                else "The account must be a bank account.",
            )
        return account

    def _pay(self, values: dict[str, Any]) -> dict[str, Any]:
        targets = [key for key in ("Invoice", "CreditNote", "Overpayment", "Prepayment") if values.get(key)]
        if len(targets) != 1:
            raise Refused(
                values, "A payment must be applied to exactly one invoice, credit note, overpayment or prepayment."
            )
        if targets[0] in ("Overpayment", "Prepayment"):
            raise Refused(values, "This simulator pays invoices and credit notes only.")
        if targets[0] == "Invoice":
            document = self.invoices.get(str(values["Invoice"].get("InvoiceID", "")).lower())
            due_key, kind = "AmountDue", "ACCRECPAYMENT"
        else:
            document = self.credit_notes.get(str(values["CreditNote"].get("CreditNoteID", "")).lower())
            due_key, kind = "RemainingCredit", "ARCREDITPAYMENT"
        if document is None:
            raise Refused(values, f"{targets[0]} could not be found")
        account = self._payment_account(values.get("Account", {}), values)
        amount = values.get("Amount")
        problems = []
        if document["Status"] != "AUTHORISED":
            problems.append("Payments can only be made against Authorised documents")
        if amount is None or Decimal(str(amount)) <= 0:
            problems.append("Amount must be greater than zero")
        elif money(Decimal(str(amount))) > document[due_key]:
            problems.append("Payment amount exceeds the amount outstanding on this document")
        if problems:
            raise Refused(values, *problems)
        amount = money(Decimal(str(amount)))
        day = datetime.date.fromisoformat(values["Date"][:10]) if values.get("Date") else datetime.date.today()
        self._locked(day, values)
        payment = {
            "PaymentID": str(uuid.uuid4()),
            "Date": day,
            "Amount": amount,
            "BankAmount": amount,
            "Reference": values.get("Reference", ""),
            "CurrencyRate": Decimal("1.000000"),
            "PaymentType": kind,
            "Status": "AUTHORISED",
            "IsReconciled": False,
            "HasAccount": True,
            "Account": {"AccountID": account["AccountID"], "Code": account["Code"]},
        }
        contact = document["Contact"]["ContactID"]
        document[due_key] -= amount
        if targets[0] == "Invoice":
            payment["Invoice"] = {
                "InvoiceID": document["InvoiceID"],
                "InvoiceNumber": document["InvoiceNumber"],
                "Type": "ACCREC",
            }
            document["AmountPaid"] += amount
            self._book(payment["PaymentID"], account["Code"], amount)
            self._book(payment["PaymentID"], AR_CODE, -amount, contact)
        else:
            payment["CreditNote"] = {
                "CreditNoteID": document["CreditNoteID"],
                "CreditNoteNumber": document["CreditNoteNumber"],
            }
            self._book(payment["PaymentID"], account["Code"], -amount)
            self._book(payment["PaymentID"], AR_CODE, amount, contact)
        document["Payments"].append(
            {
                "PaymentID": payment["PaymentID"],
                "Amount": amount,
                "Date": _ms_date(day),
                "Reference": payment["Reference"],
            }
        )
        if document[due_key] == 0:
            document["Status"] = "PAID"
        self.payments[payment["PaymentID"]] = payment
        return payment

    def _payment_out(self, payment: dict[str, Any]) -> dict[str, Any]:
        return {**payment, "Date": _ms_date(payment["Date"]), "UpdatedDateUTC": _now_ms()}

    # bank transactions and overpayments

    def _bank_transaction(self, values: dict[str, Any]) -> dict[str, Any]:
        kind = values.get("Type")
        if kind not in ("RECEIVE", "SPEND", "RECEIVE-OVERPAYMENT"):
            raise Refused(
                values, f"This simulator records RECEIVE, SPEND and RECEIVE-OVERPAYMENT bank transactions, not {kind}."
            )
        contact = self._contact(values.get("Contact", {}), values)
        bank = self._payment_account(values.get("BankAccount", {}), values, bank_only=True)
        if not values.get("LineItems"):
            raise Refused(values, "The bank transaction must have at least one line item.")
        overpayment = kind == "RECEIVE-OVERPAYMENT"
        amount_types = values.get("LineAmountTypes", "Exclusive")
        if overpayment:
            if amount_types != "NoTax":
                raise Refused(values, "An overpayment is recorded without tax (LineAmountTypes NoTax).")
            if any("AccountCode" in line or "TaxType" in line for line in values["LineItems"]):
                raise Refused(
                    values,
                    "An overpayment line takes no account code or tax type: Xero books it to accounts receivable.",
                )
        lines = self._lines(values["LineItems"], amount_types, values, bank=overpayment)
        currency = values.get("CurrencyCode") or self.base_currency
        if currency not in self.currencies:
            raise Refused(values, f"The currency code {currency} is not valid for this organisation.")
        day = datetime.date.fromisoformat(values["Date"][:10]) if values.get("Date") else datetime.date.today()
        self._locked(day, values)
        total = sum(
            (line["LineAmount"] + (line["TaxAmount"] if amount_types == "Exclusive" else 0) for line in lines),
            Decimal(0),
        )
        transaction: dict[str, Any] = {
            "BankTransactionID": str(uuid.uuid4()),
            "Type": kind,
            "Contact": {"ContactID": contact["ContactID"], "Name": contact["Name"]},
            "BankAccount": {"AccountID": bank["AccountID"], "Code": bank["Code"], "Name": bank["Name"]},
            "Date": day,
            "Reference": values.get("Reference", ""),
            "CurrencyCode": currency,
            "Status": "AUTHORISED",
            "LineAmountTypes": amount_types,
            "LineItems": lines,
            "Total": total,
            "IsReconciled": False,
        }
        name, sign = transaction["BankTransactionID"], 1 if kind.startswith("RECEIVE") else -1
        self._book(name, bank["Code"], sign * total)
        if overpayment:
            self._book(name, AR_CODE, -total, contact["ContactID"])
            overpayment_id = str(uuid.uuid4())
            transaction["OverpaymentID"] = overpayment_id
            self.overpayments[overpayment_id] = {
                "OverpaymentID": overpayment_id,
                "Type": "RECEIVE-OVERPAYMENT",
                "Contact": transaction["Contact"],
                "Date": day,
                "Status": "AUTHORISED",
                "LineAmountTypes": "NoTax",
                "LineItems": lines,
                "SubTotal": total,
                "TotalTax": Decimal(0),
                "Total": total,
                "RemainingCredit": total,
                "Allocations": [],
                "Payments": [],
                "Reference": transaction["Reference"],
                "CurrencyCode": currency,
                "CurrencyRate": Decimal("1.000000"),
            }
        else:
            for line in lines:
                self._book(name, line["AccountCode"], -sign * line["LineAmount"])
                if amount_types == "Exclusive" and line["TaxAmount"]:
                    self._book(name, TAX_CODE, -sign * line["TaxAmount"])
        self.bank_transactions[name] = transaction
        return transaction

    def _bank_out(self, transaction: dict[str, Any]) -> dict[str, Any]:
        return {
            **transaction,
            "Date": _ms_date(transaction["Date"]),
            "DateString": f"{transaction['Date'].isoformat()}T00:00:00",
            "UpdatedDateUTC": _now_ms(),
        }

    def _overpayment_out(self, overpayment: dict[str, Any]) -> dict[str, Any]:
        return {
            **overpayment,
            "Allocations": [dict(a) for a in overpayment["Allocations"] if not a.get("IsDeleted")],
            "AppliedAmount": overpayment["Total"] - overpayment["RemainingCredit"],
            "DateString": f"{overpayment['Date'].isoformat()}T00:00:00",
            "Date": _ms_date(overpayment["Date"]),
            "UpdatedDateUTC": _now_ms(),
            "HasAttachments": False,
        }

    # manual journals

    def _manual_journal(self, values: dict[str, Any]) -> dict[str, Any]:
        problems = []
        if not str(values.get("Narration") or "").strip():
            problems.append("Narration cannot be empty")
        lines = values.get("JournalLines") or []
        if len(lines) < 2:
            problems.append("A manual journal must have at least two journal lines")
        for line in lines:
            account = self.accounts.get(str(line.get("AccountCode")))
            if account is None or account["Status"] != "ACTIVE":
                problems.append(f"Account code '{line.get('AccountCode')}' is not a valid code for this document.")
            elif account["Type"] == "BANK":
                problems.append(
                    f"Account code '{account['Code']}' is a bank account: bank accounts cannot be used in manual "
                    "journals."
                )
            elif account.get("SystemAccount"):
                problems.append(
                    f"Account code '{account['Code']}' is a system account and cannot be used in manual journals."
                )
            if line.get("LineAmount") is None:
                problems.append("Each journal line needs a LineAmount")
        amounts = [money(Decimal(str(line.get("LineAmount") or 0))) for line in lines]
        debits = sum((a for a in amounts if a > 0), Decimal(0))
        credits = -sum((a for a in amounts if a < 0), Decimal(0))
        if debits != credits:
            problems.append(f"The total debits ({debits}) must equal total credits ({credits})")
        status = values.get("Status", "DRAFT")
        if status not in ("DRAFT", "POSTED"):
            problems.append(f"A new manual journal cannot be created as {status}.")
        if problems:
            raise Refused(values, *problems)
        day = datetime.date.fromisoformat(values["Date"][:10]) if values.get("Date") else datetime.date.today()
        journal = {
            "ManualJournalID": str(uuid.uuid4()),
            "Narration": values["Narration"],
            "Date": day,
            "Status": "DRAFT",
            "LineAmountTypes": values.get("LineAmountTypes", "NoTax"),
            "JournalLines": [
                {**line, "LineAmount": amount, "IsBlank": False} for line, amount in zip(lines, amounts, strict=True)
            ],
            "ShowOnCashBasisReports": True,
        }
        if status == "POSTED":
            self._locked(day, values)
            self._post(journal)
        self.manual_journals[journal["ManualJournalID"]] = journal
        return journal

    def _post(self, journal: dict[str, Any]) -> None:
        for line in journal["JournalLines"]:
            self._book(journal["ManualJournalID"], line["AccountCode"], line["LineAmount"])
        journal["Status"] = "POSTED"

    def _post_journal(self, journal_id: str, change: dict[str, Any]) -> dict[str, Any]:
        journal = self.manual_journals.get(journal_id)
        if journal is None:
            raise NotFound(journal_id)
        if set(change) - {"ManualJournalID", "Status"}:
            raise Refused(change, "This simulator changes only the Status of an existing manual journal.")
        if change.get("Status") == "POSTED" and journal["Status"] == "DRAFT":
            self._locked(journal["Date"], change)
            self._post(journal)
        elif change.get("Status") != journal["Status"]:
            raise Refused(change, "Manual journal not of valid status for modification")
        return journal

    def _journal_out(self, journal: dict[str, Any]) -> dict[str, Any]:
        return {**journal, "Date": _ms_date(journal["Date"]), "UpdatedDateUTC": _now_ms(), "HasAttachments": False}
