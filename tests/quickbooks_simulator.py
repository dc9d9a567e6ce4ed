"""A contract simulator of the QuickBooks Online Accounting API v3, the part the hub posts to, served
over real HTTP so the real ``QuickBooksConnector`` talks to it unchanged.

Written from Intuit's public documentation:

- the Accounting API reference (developer.intuit.com, "API reference / Accounting"): the entities
  Customer, Invoice, CreditMemo, Payment and JournalEntry, their fields and the ones a request must
  carry; ``POST /v3/company/<realmId>/<entity>`` to create (or update when the body names ``Id`` and
  ``SyncToken``; ``sparse: true`` changes only the fields sent), ``GET .../<entity>/<id>`` to read,
  ``POST .../invoice?operation=void`` with ``Id`` and ``SyncToken`` to void an invoice (amounts and
  quantities zeroed, "Voided" prepended to ``PrivateNote``); every answer wrapped in the entity's
  name with a ``time``;
- "Query operations and syntax": ``GET .../query?query=select * from <Entity> where ...`` with
  ``=``, ``LIKE`` (``%`` wildcards) and ``IN``, joined by ``AND`` only, ``STARTPOSITION`` and
  ``MAXRESULTS`` (at most 1000); name lists answer active records unless ``Active`` is filtered;
  only the documented filterable fields may be filtered (``PrivateNote`` may not);
- "Request ID" (Intuit developer blog, 2015-04-06): a ``requestid`` query parameter of at most 50
  characters; the same ``requestid`` again gets the first answer, nothing is done twice;
- "Error codes" and "Handling common errors": the ``Fault`` body
  ``{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type"}, "time"}``; 610 Object
  Not Found, 2010 unsupported property, 2020 required parameter missing, 2050 string too long,
  2500 Invalid Reference Id, 5010 Stale Object Error (a ``SyncToken`` that is not the current
  one), 6000 business validation, 6140 Duplicate Document Number, 6210 Account Period Closed
  ("The account period has closed and the account books cannot be updated through the QBO
  Services API"), 6240 Duplicate Name Exists; a 401 with ``AuthenticationFailed`` (code 3200);
- throttling (Intuit developer blog, 2016-08-08): 500 requests per minute and 10 concurrent
  requests per realm, beyond which a 429 with ``message=ThrottleExceeded; errorCode=003001``;
- OAuth 2.0 ("Refresh the token"): ``POST /oauth2/v1/tokens/bearer`` with the app's client id and
  secret as HTTP Basic and ``grant_type=refresh_token``; the answer carries ``access_token``
  (valid ``expires_in`` = 3600 s), ``refresh_token`` (it may change: the newest must be kept) and
  ``x_refresh_token_expires_in``; a refused refresh token is a 400 ``invalid_grant``, refused
  client credentials a 401 ``invalid_client``.

What it holds can be read back: the documents, each invoice's and credit memo's open balance, each
payment's unapplied amount, the customer's receivable (``customer_balance``) and the balance of
any account (``account_balance``, debit positive), so tests compare them with billing.

Faults on demand, for the next writes in order (``fail_next``): ``500`` (refused before anything
is done), ``503``, ``429`` (with ``Retry-After``), ``stale`` (a person edits the document first, so
its ``SyncToken`` moves and the write meets 5010), ``401`` (the access token is revoked),
``timeout_after_commit`` (done, then the answer is held back past the client's read timeout) and
``forget_requestid`` (this request's ``requestid`` is not recognised: the duplicate that field
reports say ``requestid`` alone has let through). ``fail_next_read`` does the same for queries and
reads. ``books_closed_through`` closes the books up to a date.

Divergences worth knowing: one home currency (USD) plus the currencies listed as enabled, no
exchange rates; sales tax is whatever ``TxnTaxDetail.TotalTax`` says (the override QuickBooks
accepts), nothing is computed; the rule against a colon in a display name is enforced with a
generic 6000 (Intuit documents the rule, not its code); a voided invoice's payments are unlinked.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

REALM_ID = "9341453908059321"
CLIENT_ID = "ABqboHubClientId0123456789"
CLIENT_SECRET = "qbo-hub-client-secret"
INITIAL_REFRESH_TOKEN = "AB11700000000hubRefreshToken0001"
HOME_CURRENCY = "USD"
PACIFIC = timezone(timedelta(hours=-7))

# Chart of accounts, items, tax codes, classes and departments a small US company would have.
ACCOUNTS: dict[str, dict[str, str]] = {
    "4": {"Name": "Undeposited Funds", "AccountType": "Other Current Asset"},
    "35": {"Name": "Stripe Clearing", "AccountType": "Bank"},
    "36": {"Name": "Checking", "AccountType": "Bank"},
    "84": {"Name": "Accounts Receivable (A/R)", "AccountType": "Accounts Receivable"},
    "79": {"Name": "Subscription Income", "AccountType": "Income"},
    "80": {"Name": "Usage Income", "AccountType": "Income"},
    "89": {"Name": "Sales Tax Payable", "AccountType": "Other Current Liability"},
    "90": {"Name": "Bad Debts", "AccountType": "Expense"},
    "91": {"Name": "Disputed Payments", "AccountType": "Other Current Asset"},
    "92": {"Name": "Chargeback Losses", "AccountType": "Expense"},
}
ITEMS: dict[str, dict[str, str]] = {
    "1": {"Name": "Subscription", "Type": "Service", "IncomeAccountRef": "79"},
    "2": {"Name": "API usage", "Type": "Service", "IncomeAccountRef": "80"},
    "9": {"Name": "Bad debt", "Type": "Service", "IncomeAccountRef": "90"},
}
TAX_CODES = {"TAX", "NON"}
CLASSES = {"100": "Subscriptions"}
DEPARTMENTS = {"1": "US"}
AR_ACCOUNT = "84"
TAX_ACCOUNT = "89"

# What each entity accepts (documented fields), what it requires, and what a query may filter on.
_REF = {"value", "name", "type"}
_ADDRESS = {"Id", "Line1", "Line2", "Line3", "Line4", "Line5", "City", "CountrySubDivisionCode", "PostalCode"}
_ADDRESS |= {"Country", "Lat", "Long"}
_COMMON = {"Id", "SyncToken", "sparse", "domain", "MetaData"}
_SALES_FORM = {"DocNumber", "TxnDate", "CustomerRef", "CurrencyRef", "ExchangeRate", "PrivateNote", "CustomerMemo"}
_SALES_FORM |= {"Line", "TxnTaxDetail", "DepartmentRef", "ClassRef", "BillEmail", "BillAddr", "ShipAddr"}
_SALES_FORM |= {"GlobalTaxCalculation", "ApplyTaxAfterDiscount", "PrintStatus", "EmailStatus", "CustomField"}
_FIELDS: dict[str, set[str]] = {
    "Customer": _COMMON
    | {"DisplayName", "CompanyName", "Title", "GivenName", "MiddleName", "FamilyName", "Suffix", "PrimaryEmailAddr"}
    | {"PrimaryPhone", "BillAddr", "ShipAddr", "CurrencyRef", "Notes", "Active", "Taxable", "SalesTermRef"}
    | {"PreferredDeliveryMethod", "PrintOnCheckName", "ResaleNum"},
    "Invoice": _COMMON
    | _SALES_FORM
    | {"DueDate", "SalesTermRef", "AllowOnlineCreditCardPayment"}
    | {"AllowOnlineACHPayment", "Deposit", "DepositToAccountRef"},
    "CreditMemo": _COMMON | _SALES_FORM | {"PaymentMethodRef"},
    "Payment": _COMMON
    | {"TotalAmt", "CustomerRef", "CurrencyRef", "ExchangeRate", "TxnDate", "PrivateNote", "PaymentRefNum"}
    | {"PaymentMethodRef", "DepositToAccountRef", "ARAccountRef", "Line", "TxnSource", "ProcessPayment"},
    "JournalEntry": _COMMON
    | {"DocNumber", "TxnDate", "PrivateNote", "Line", "CurrencyRef", "ExchangeRate", "Adjustment", "TxnTaxDetail"},
}
_REQUIRED = {
    "Customer": ("DisplayName",),
    "Invoice": ("CustomerRef", "Line"),
    "CreditMemo": ("CustomerRef", "Line"),
    "Payment": ("TotalAmt", "CustomerRef"),
    "JournalEntry": ("Line",),
}
_MAX_LENGTH = {
    "DisplayName": 500,
    "CompanyName": 100,
    "Notes": 2000,
    "DocNumber": 21,
    "PaymentRefNum": 21,
    "PrivateNote": 4000,
    "Description": 4000,
}
_FILTERABLE = {
    "Customer": {"Id", "DisplayName", "CompanyName", "GivenName", "FamilyName", "PrimaryEmailAddr", "Active"},
    "Invoice": {"Id", "DocNumber", "TxnDate", "CustomerRef", "DueDate", "TotalAmt", "Balance"},
    "CreditMemo": {"Id", "DocNumber", "TxnDate", "CustomerRef", "TotalAmt", "Balance"},
    "Payment": {"Id", "PaymentRefNum", "TxnDate", "CustomerRef", "TotalAmt"},
    "JournalEntry": {"Id", "DocNumber", "TxnDate"},
    "Account": {"Id", "Name", "AccountType", "Active"},
}
_ENTITIES = {name.lower(): name for name in _FIELDS}
_QUERYABLE = {**_ENTITIES, "account": "Account"}
_NAME_LISTS = {"Customer"}
_DEC = re.compile(r'"\\u0000DEC(\d+)\\u0000"')


def dumps(value: Any) -> bytes:
    """JSON with Decimals written as exact JSON numbers (no float on the way)."""
    numbers: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, Decimal):
            numbers.append(format(item, "f"))
            return f"\u0000DEC{len(numbers) - 1}\u0000"
        if isinstance(item, dict):
            return {key: mark(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [mark(inner) for inner in item]
        return item

    text = json.dumps(mark(value))
    return _DEC.sub(lambda match: numbers[int(match.group(1))], text).encode()


class Fault(Exception):
    """A documented QuickBooks fault: HTTP status, code, message, detail, element."""

    def __init__(
        self, code: str, message: str, detail: str = "", element: str = "", *, status: int = 400, kind: str = ""
    ) -> None:
        super().__init__(f"{code} {message}: {detail}")
        self.status = status
        self.body: dict[str, Any] = {
            "Fault": {
                "Error": [{"Message": message, "Detail": detail or message, "code": code, "element": element}],
                "type": kind or "ValidationFault",
            }
        }


def _date(value: Any, element: str) -> date:
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise Fault(
            "2010",
            "Request has invalid or unsupported property",
            f"{element}: {value!r} is not a date (yyyy-mm-dd)",
            element,
        ) from exc


def _drop_subtotals(record: dict[str, Any]) -> None:
    if isinstance(record.get("Line"), list):
        record["Line"] = [line for line in record["Line"] if line.get("DetailType") != "SubTotalLineDetail"]


def _split_and(where: str) -> list[str]:
    """The conditions of a where clause: QuickBooks joins them with AND only (no OR, no brackets);
    an AND inside a quoted literal is part of the literal."""
    clauses, current, quoted, index = [], "", False, 0
    while index < len(where):
        step = None if quoted else re.match(r"\s+and\s+", where[index:], re.IGNORECASE)
        if step is not None and current:
            clauses.append(current)
            current, index = "", index + step.end()
            continue
        char = where[index]
        if char == "\\" and quoted:  # an escaped character inside a literal
            current += where[index : index + 2]
            index += 2
            continue
        if char == "'":
            quoted = not quoted
        current += char
        index += 1
    if current.strip():
        clauses.append(current)
    return clauses


def _invalid_ref(what: str, value: Any, element: str) -> Fault:
    return Fault(
        "2500",
        "Invalid Reference Id",
        f"Invalid Reference Id : {what} assigned to this transaction has been deleted. Before you can modify "
        f"this transaction, you must restore {what} (Id {value}).",
        element,
    )


@dataclass
class Recorded:
    method: str
    entity: str  # "token", "query", or the entity path segment ("invoice", "payment", ...)
    params: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int = 0
    committed: bool = False
    replayed: bool = False
    fault_code: str = ""

    @property
    def requestid(self) -> str:
        return self.params.get("requestid", "")


@dataclass
class QuickBooksSimulator:
    hang_seconds: float = 2.0
    access_token_ttl: int = 3600
    max_per_minute: int = 500
    max_concurrent: int = 10
    retry_after_seconds: int = 3
    books_closed_through: date | None = None
    duplicate_doc_number_check: bool = False
    currencies: set[str] = field(default_factory=lambda: {"USD", "EUR"})
    requests: list[Recorded] = field(default_factory=list)
    store: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {name: {} for name in _FIELDS})

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._ids = itertools.count(101)
        self._faults: list[str] = []
        self._read_faults: list[str] = []
        self._replies: dict[str, tuple[int, bytes, str]] = {}  # requestid -> the first answer, its fault code
        self._access_tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.refresh_token = INITIAL_REFRESH_TOKEN
        self._rotate_on_next_refresh = False
        self.refreshes = 0
        self._recent: deque[float] = deque()
        self._in_flight = 0
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                simulator._handle(self, "GET")

            def do_POST(self) -> None:
                simulator._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # -- for tests ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def connector_settings(self, **overrides: Any) -> dict[str, Any]:
        """The settings of an ERP connection pointing at this simulator."""
        return {
            "base_url": self.url,
            "token_url": f"{self.url}/oauth2/v1/tokens/bearer",
            "realm_id": REALM_ID,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": self.refresh_token,
            "timeout": 1,
            **overrides,
        }

    def fail_next(self, *modes: str) -> None:
        """Faults for the next writes, in order: 500, 503, 429, stale, 401, timeout_after_commit,
        forget_requestid."""
        self._faults.extend(modes)

    def fail_next_read(self, *modes: str) -> None:
        """Faults for the next queries or reads: 500, 429, 401."""
        self._read_faults.extend(modes)

    def expire_access_tokens(self) -> None:
        with self._lock:
            self._access_tokens.clear()

    def rotate_refresh_token_on_next_refresh(self) -> None:
        self._rotate_on_next_refresh = True

    def revoke_refresh_token(self) -> None:
        """The company disconnected the app: the refresh token stops working."""
        self.refresh_token = "revoked-" + secrets.token_hex(8)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def add_customer(self, display_name: str, **fields: Any) -> str:
        with self._lock:
            return self._save("Customer", {"DisplayName": display_name, "Active": True, **fields})["Id"]

    def documents(self, entity: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._view(entity, record) for record in self.store[entity].values()]

    def find(self, entity: str, **where: Any) -> list[dict[str, Any]]:
        return [doc for doc in self.documents(entity) if all(doc.get(k) == v for k, v in where.items())]

    def get(self, entity: str, entity_id: str) -> dict[str, Any]:
        with self._lock:
            return self._view(entity, self.store[entity][entity_id])

    def writes(self, entity: str) -> list[Recorded]:
        """The write requests for ``entity`` (path segment) that QuickBooks carried out."""
        return [r for r in self.requests if r.method == "POST" and r.entity == entity and r.committed]

    def customer_balance(self, customer_id: str) -> Decimal:
        """The customer's receivable, as QuickBooks' Customer.Balance shows it: invoices less credit
        memos and payments, plus journal lines on A/R naming the customer."""
        with self._lock:
            return self._customer_balance(customer_id)

    def account_balance(self, account_id: str) -> Decimal:
        """Debit minus credit on one account, from every document QuickBooks holds."""
        with self._lock:
            total = Decimal(0)
            for entity in ("Invoice", "CreditMemo", "Payment", "JournalEntry"):
                for record in self.store[entity].values():
                    for account, amount in self._postings(entity, record):
                        if account == account_id:
                            total += amount
            return total

    # -- HTTP -----------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parsed = urlparse(handler.path)
        params = dict(parse_qsl(parsed.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {key.lower(): value for key, value in handler.headers.items()}
        parts = parsed.path.strip("/").split("/")
        if parsed.path.rstrip("/") == "/oauth2/v1/tokens/bearer" and method == "POST":
            form = dict(parse_qsl(raw.decode()))
            record = Recorded(method, "token", params, form, headers)
            self._record(record)
            return self._token(handler, record, form)
        entity = parts[3].lower() if len(parts) >= 4 else ""
        record = Recorded(method, entity, params, None, headers)
        self._record(record)
        try:
            record.body = self._parse_body(raw, headers, entity)
        except Fault as fault:
            return self._fault(handler, record, fault)
        with self._lock:
            self._in_flight += 1
        try:
            self._api(handler, record, method, parts)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _record(self, record: Recorded) -> None:
        with self._lock:
            self.requests.append(record)

    @staticmethod
    def _parse_body(raw: bytes, headers: dict[str, str], entity: str) -> Any:
        if not raw:
            return None
        if entity == "query":
            return raw.decode()
        try:
            return json.loads(raw, parse_float=Decimal)
        except ValueError as exc:
            raise Fault("4000", "Error parsing object", f"The request body is not JSON: {exc}") from exc

    def _token(self, handler: BaseHTTPRequestHandler, record: Recorded, form: dict[str, str]) -> None:
        expected = "Basic " + base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        if record.headers.get("authorization") != expected:
            return self._answer(handler, record, 401, dumps({"error": "invalid_client"}))
        if form.get("grant_type") != "refresh_token":
            return self._answer(handler, record, 400, dumps({"error": "unsupported_grant_type"}))
        with self._lock:
            if form.get("refresh_token") != self.refresh_token:
                return self._answer(handler, record, 400, dumps({"error": "invalid_grant"}))
            if self._rotate_on_next_refresh:
                self._rotate_on_next_refresh = False
                self.refresh_token = "AB11" + secrets.token_hex(16)  # the one used stops working
            access = "eyJ.sim." + secrets.token_urlsafe(24)
            self._access_tokens[access] = time.monotonic() + self.access_token_ttl
            self.refreshes += 1
            body = {
                "token_type": "bearer",
                "access_token": access,
                "expires_in": self.access_token_ttl,
                "refresh_token": self.refresh_token,
                "x_refresh_token_expires_in": 8726400,
            }
        record.committed = True
        self._answer(handler, record, 200, dumps(body))

    def _authenticated(self, record: Recorded) -> bool:
        auth = record.headers.get("authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        with self._lock:
            expiry = self._access_tokens.get(token)
            return expiry is not None and expiry > time.monotonic()

    def _throttled(self) -> float | None:
        """Seconds to wait when the realm is over its limits, else None."""
        with self._lock:
            now = time.monotonic()
            while self._recent and now - self._recent[0] > 60:
                self._recent.popleft()
            if self._in_flight > self.max_concurrent:
                return 1
            if len(self._recent) >= self.max_per_minute:
                return max(1.0, 60 - (now - self._recent[0]))
            self._recent.append(now)
            return None

    def _api(self, handler: BaseHTTPRequestHandler, record: Recorded, method: str, parts: list[str]) -> None:
        if len(parts) < 4 or parts[:2] != ["v3", "company"]:
            return self._fault(handler, record, Fault("404", "Not Found", f"/{'/'.join(parts)}", status=404))
        if parts[2] != REALM_ID:
            return self._fault(
                handler,
                record,
                Fault(
                    "003100",
                    "message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403",
                    "The app is not authorized for this company",
                    status=403,
                    kind="AUTHORIZATION",
                ),
            )
        writes = method == "POST" and record.entity != "query"
        fault = ""
        with self._lock:
            queue = self._faults if writes else self._read_faults
            if queue:
                fault = queue.pop(0)
        if fault == "401":
            self.expire_access_tokens()
        if not self._authenticated(record):
            record.status = 401
            body = {
                "fault": {
                    "error": [
                        {
                            "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                            "detail": "Token expired or invalid",
                            "code": "3200",
                        }
                    ],
                    "type": "AUTHENTICATION",
                },
                "time": self._now(),
            }
            return self._answer(handler, record, 401, dumps(body), fault_code="3200")
        wait = self._throttled()
        if fault == "429" or wait is not None:
            return self._throttle(handler, record, wait or self.retry_after_seconds)
        if fault in ("500", "503"):
            status = int(fault)
            return self._fault(
                handler,
                record,
                Fault(
                    "10000",
                    "An application error has occurred while processing your request",
                    "System Failure Error: Something went wrong. Try again later.",
                    status=status,
                    kind="SystemFault",
                ),
            )
        requestid = record.requestid
        if writes and requestid and fault != "forget_requestid":
            with self._lock:
                first = self._replies.get(requestid)
            if first is not None:
                record.replayed = True
                return self._answer(handler, record, first[0], first[1], fault_code=first[2])
        try:
            if record.entity == "query":
                text = record.params.get("query") if method == "GET" else record.body
                status, body = 200, self._query(str(text or ""))
            elif method == "GET":
                status, body = 200, self._read(record.entity, parts)
            else:
                if fault == "stale":
                    self._edited_meanwhile(record.entity, record.body)
                status, body = 200, self._write(record.entity, parts, record.params, record.body)
                record.committed = True
        except Fault as exc:
            status, body = exc.status, {**exc.body}
            record.fault_code = body["Fault"]["Error"][0]["code"]
        body["time"] = self._now()
        payload = dumps(body)
        if writes and requestid and status < 500:
            with self._lock:
                self._replies.setdefault(requestid, (status, payload, record.fault_code))
        if fault == "timeout_after_commit":
            record.status = status
            time.sleep(self.hang_seconds)
        self._answer(handler, record, status, payload, fault_code=record.fault_code)

    def _edited_meanwhile(self, segment: str, body: Any) -> None:
        """Someone changed the document in QuickBooks since the client read it: its SyncToken moved."""
        entity = _ENTITIES.get(segment)
        with self._lock:
            record = self.store[entity].get(str(body.get("Id"))) if entity and isinstance(body, dict) else None
            if record is not None:
                record["SyncToken"] = str(int(record["SyncToken"]) + 1)

    def _throttle(self, handler: BaseHTTPRequestHandler, record: Recorded, wait: float) -> None:
        body = {
            "Fault": {
                "Error": [
                    {
                        "Message": "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                        "Detail": "The request limit was reached.",
                        "code": "3001",
                    }
                ],
                "type": "SERVICE",
            },
            "time": self._now(),
        }
        self._answer(handler, record, 429, dumps(body), retry_after=int(wait + 0.999), fault_code="3001")

    def _fault(self, handler: BaseHTTPRequestHandler, record: Recorded, fault: Fault) -> None:
        body = {**fault.body, "time": self._now()}
        self._answer(handler, record, fault.status, dumps(body), fault_code=body["Fault"]["Error"][0]["code"])

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        body: bytes,
        *,
        retry_after: int | None = None,
        fault_code: str = "",
    ) -> None:
        record.status = status
        record.fault_code = record.fault_code or fault_code
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=UTF-8")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("intuit_tid", f"1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}")
            if retry_after is not None:
                handler.send_header("Retry-After", str(retry_after))
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout after commit)

    @staticmethod
    def _now() -> str:
        return datetime.now(PACIFIC).isoformat(timespec="milliseconds")

    # -- reads and queries ----------------------------------------------------------------------

    def _read(self, segment: str, parts: list[str]) -> dict[str, Any]:
        entity = _ENTITIES.get(segment)
        if entity is None or len(parts) != 5:
            raise Fault("404", "Not Found", f"Unsupported resource {segment}", status=404)
        with self._lock:
            record = self.store[entity].get(parts[4])
            if record is None:
                raise Fault(
                    "610",
                    "Object Not Found",
                    "Object Not Found : Something you're trying to use has been made inactive. Check the fields "
                    "with accounts, customers, items, vendors or employees.",
                )
            return {entity: self._view(entity, record)}

    _QUERY = re.compile(
        r"^\s*select\s+\*\s+from\s+(\w+)(?:\s+where\s+(.*?))?"
        r"(?:\s+startposition\s+(\d+))?(?:\s+maxresults\s+(\d+))?\s*$",
        re.IGNORECASE | re.DOTALL,
    )
    _CONDITION = re.compile(r"^\s*([\w.]+)\s*(=|like|in)\s*('(?:[^'\\]|\\.)*'|\(.*\))\s*$", re.IGNORECASE | re.DOTALL)

    def _query(self, text: str) -> dict[str, Any]:
        match = self._QUERY.match(text)
        if not match:
            raise Fault("4000", "Error parsing query", f"QueryParserError: Encountered an error in {text!r}")
        name, where, start, maximum = match.groups()
        entity = _QUERYABLE.get(name.lower())
        if entity is None:
            raise Fault("4001", "Invalid query", f"QueryValidationError: unsupported entity {name}")
        conditions = []
        for clause in _split_and(where or ""):
            condition = self._CONDITION.match(clause)
            if not condition:
                raise Fault("4000", "Error parsing query", f"QueryParserError: cannot read {clause!r}")
            field_name, operator, value = condition.groups()
            if field_name not in _FILTERABLE[entity]:
                raise Fault("4001", "Invalid query", f"QueryValidationError: property '{field_name}' is not queryable")
            conditions.append((field_name, operator.lower(), value))
        limit = min(int(maximum or 100), 1000)
        with self._lock:
            if entity == "Account":
                rows = [{"Id": key, "Active": True, **account} for key, account in ACCOUNTS.items()]
            else:
                rows = [self._view(entity, record) for record in self.store[entity].values()]
        if entity in _NAME_LISTS and not any(c[0] == "Active" for c in conditions):
            rows = [row for row in rows if row.get("Active", True)]
        rows = [row for row in rows if all(self._matches(row, *c) for c in conditions)]
        rows.sort(key=lambda row: int(row["Id"]))
        offset = int(start or 1) - 1
        page = rows[offset : offset + limit]
        if not page:
            return {"QueryResponse": {}}
        return {"QueryResponse": {entity: page, "startPosition": offset + 1, "maxResults": len(page)}}

    @staticmethod
    def _literal(value: str) -> str:
        return re.sub(r"\\(.)", r"\1", value[1:-1])

    def _matches(self, row: dict[str, Any], field_name: str, operator: str, value: str) -> bool:
        actual = row.get(field_name)
        if isinstance(actual, dict):
            actual = actual.get("value") or actual.get("Address")
        if operator == "in":
            options = [option.strip().strip("'").lower() for option in value.strip("()").split(",")]
            return str(actual).lower() in options
        literal = self._literal(value)
        if operator == "=":
            return str(actual) == literal
        pattern = "^" + ".*".join(re.escape(part) for part in literal.split("%")) + "$"
        return re.match(pattern, str(actual or ""), re.IGNORECASE | re.DOTALL) is not None

    # -- writes ---------------------------------------------------------------------------------

    def _write(self, segment: str, parts: list[str], params: dict[str, str], body: Any) -> dict[str, Any]:
        entity = _ENTITIES.get(segment)
        if entity is None or len(parts) != 4:
            raise Fault("404", "Not Found", f"Unsupported resource {segment}", status=404)
        if not isinstance(body, dict):
            raise Fault("4000", "Error parsing object", f"A {entity} object is required")
        operation = params.get("operation", "")
        with self._lock:
            if operation == "void":
                if entity not in ("Invoice", "Payment"):
                    raise Fault("4000", "Unsupported Operation", f"Operation void is not supported for {entity}")
                return {entity: self._void(entity, body)}
            if operation:
                raise Fault("4000", "Unsupported Operation", f"Operation {operation} is not supported here")
            if body.get("Id"):
                return {entity: self._update(entity, body)}
            self._validate(entity, body)
            return {entity: self._create(entity, body)}

    def _current(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        for key in ("Id", "SyncToken"):
            if key not in body:
                raise Fault(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    f"Required parameter {key} is missing in the request",
                    key,
                )
        record = self.store[entity].get(str(body["Id"]))
        if record is None:
            raise Fault("610", "Object Not Found", f"Object Not Found : {entity} {body['Id']}")
        if str(body["SyncToken"]) != record["SyncToken"]:
            raise Fault(
                "5010",
                "Stale Object Error",
                f"Stale Object Error : You and another user were working on this at the same time. The other "
                f"user finished first, so your work was not saved. (SyncToken {body['SyncToken']} is not "
                f"{record['SyncToken']})",
            )
        return record

    def _update(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self._current(entity, body)
        self._known(body, _FIELDS[entity], entity)
        changes = {key: value for key, value in body.items() if key not in ("Id", "SyncToken", "sparse")}
        merged = {**record, **changes} if body.get("sparse") else {**changes, "Id": record["Id"]}
        merged.pop("SyncToken", None)
        self._validate(entity, {key: value for key, value in merged.items() if key in _FIELDS[entity]})
        self._check_period(entity, record)
        self._check_period(entity, merged)
        merged["SyncToken"] = str(int(record["SyncToken"]) + 1)
        merged["MetaData"] = {**record["MetaData"], "LastUpdatedTime": self._now()}
        _drop_subtotals(merged)
        self.store[entity][record["Id"]] = merged
        return self._view(entity, merged)

    def _void(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self._current(entity, body)
        self._check_period(entity, record)
        voided = json.loads(dumps(record), parse_float=Decimal)
        for line in voided.get("Line", []):
            line["Amount"] = Decimal("0")
            detail = line.get("SalesItemLineDetail")
            if detail:
                detail["Qty"] = Decimal("0")
        if "TotalAmt" in voided:
            voided["TotalAmt"] = Decimal("0")
        if voided.get("TxnTaxDetail"):
            voided["TxnTaxDetail"] = {**voided["TxnTaxDetail"], "TotalTax": Decimal("0")}
        voided["PrivateNote"] = "Voided" + (f" - {record['PrivateNote']}" if record.get("PrivateNote") else "")
        voided["SyncToken"] = str(int(record["SyncToken"]) + 1)
        self.store[entity][record["Id"]] = voided
        if entity == "Invoice":  # its payments lose the link and become unapplied credit
            for payment in self.store["Payment"].values():
                payment["Line"] = [
                    line
                    for line in payment.get("Line", [])
                    if not any(t["TxnId"] == record["Id"] and t["TxnType"] == "Invoice" for t in line["LinkedTxn"])
                ]
        return self._view(entity, voided)

    def _create(self, entity: str, body: dict[str, Any]) -> dict[str, Any]:
        self._check_period(entity, body)
        if entity == "Customer":
            return self._view(entity, self._save(entity, {"Active": True, **body}))
        if self.duplicate_doc_number_check and body.get("DocNumber"):
            for other in self.store[entity].values():
                if other.get("DocNumber") == body["DocNumber"]:
                    raise Fault(
                        "6140",
                        "Duplicate Document Number Error",
                        f"Duplicate Document Number Error : You must specify a different number. This number has "
                        f"already been used. DocNumber={body['DocNumber']} is assigned to TxnType={entity} with "
                        f"TxnId={other['Id']}",
                    )
        values = {"TxnDate": date.today().isoformat(), **body}
        if entity in ("Invoice", "CreditMemo", "Payment"):
            values.setdefault("CurrencyRef", {"value": HOME_CURRENCY})
        return self._view(entity, self._save(entity, values))

    def _save(self, entity: str, values: dict[str, Any]) -> dict[str, Any]:
        record = json.loads(dumps(values), parse_float=Decimal)
        record.pop("sparse", None)
        _drop_subtotals(record)
        record["Id"] = str(next(self._ids))
        record["SyncToken"] = "0"
        record["domain"] = "QBO"
        record["MetaData"] = {"CreateTime": self._now(), "LastUpdatedTime": self._now()}
        self.store[entity][record["Id"]] = record
        return record

    def _check_period(self, entity: str, values: dict[str, Any]) -> None:
        if entity == "Customer" or self.books_closed_through is None:
            return
        txn_date = _date(values.get("TxnDate") or date.today().isoformat(), "TxnDate")
        if txn_date <= self.books_closed_through:
            raise Fault(
                "6210",
                "Account Period Closed, Cannot Update Through Services API",
                "The account period has closed and the account books cannot be updated through the QBO Services "
                "API. Please use the QBO website to make these changes.",
            )

    # -- validation (the documented shape of each entity) ---------------------------------------

    def _validate(self, entity: str, body: dict[str, Any]) -> None:
        self._known(body, _FIELDS[entity], entity)
        for key in _REQUIRED[entity]:
            if body.get(key) in (None, "", []):
                raise Fault(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    f"Required parameter {key} is missing in the request",
                    key,
                )
        self._lengths(body)
        for key in ("CustomerRef", "CurrencyRef", "DepartmentRef", "ClassRef", "DepositToAccountRef", "ARAccountRef"):
            if key in body:
                self._ref(body[key], key)
        if "CurrencyRef" in body and body["CurrencyRef"]["value"] not in self.currencies:
            raise Fault(
                "6000",
                "A business validation error has occurred while processing your request",
                f"Business Validation Error: Currency {body['CurrencyRef']['value']} is not enabled",
                "",
            )
        getattr(self, f"_validate_{entity.lower()}")(body)

    def _known(self, values: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in values:
            if key not in allowed:
                raise Fault(
                    "2010",
                    "Request has invalid or unsupported property",
                    f'Property Name:Unrecognized field "{key}" (class {where}) specified is unsupported or invalid',
                    key,
                )

    def _lengths(self, values: dict[str, Any]) -> None:
        for key, limit in _MAX_LENGTH.items():
            value = values.get(key)
            if isinstance(value, str) and len(value) > limit:
                raise Fault(
                    "2050",
                    "String length is either shorter or longer than supported by specification",
                    f"String length specified does not match the supported length. Min:0 Max:{limit} "
                    f"supported. Supplied length:{len(value)}",
                    key,
                )

    def _ref(self, ref: Any, element: str) -> str:
        if not isinstance(ref, dict) or not isinstance(ref.get("value"), str) or not ref["value"]:
            raise Fault(
                "2010",
                "Request has invalid or unsupported property",
                f"{element} must be an object with a string value",
                element,
            )
        self._known(ref, _REF, element)
        value = ref["value"]
        known = {
            "CustomerRef": {key for key, c in self.store["Customer"].items() if c.get("Active", True)},
            "ItemRef": set(ITEMS),
            "AccountRef": set(ACCOUNTS),
            "DepositToAccountRef": {
                key for key, a in ACCOUNTS.items() if a["AccountType"] in ("Bank", "Other Current Asset")
            },
            "ARAccountRef": {AR_ACCOUNT},
            "TaxCodeRef": TAX_CODES,
            "ClassRef": set(CLASSES),
            "DepartmentRef": set(DEPARTMENTS),
            "EntityRef": {key for key, c in self.store["Customer"].items() if c.get("Active", True)},
        }.get(element)
        if known is not None and value not in known:
            raise _invalid_ref(element.removesuffix("Ref"), value, element)
        return value

    @staticmethod
    def _amount(value: Any, element: str) -> Decimal:
        if not isinstance(value, Decimal | int) or isinstance(value, bool):
            raise Fault(
                "2010",
                "Request has invalid or unsupported property",
                f"{element} must be a number, got {value!r}",
                element,
            )
        amount = Decimal(value)
        if amount != amount.quantize(Decimal("0.01")):
            raise Fault(
                "6000",
                "A business validation error has occurred while processing your request",
                f"Business Validation Error: {element} {amount} has more than 2 decimals",
                element,
            )
        return amount

    def _validate_customer(self, body: dict[str, Any]) -> None:
        name = body["DisplayName"]
        if ":" in name or "\t" in name or "\n" in name:
            raise Fault(
                "6000",
                "A business validation error has occurred while processing your request",
                "Business Validation Error: a name cannot contain a colon, a tab or a new line",
                "DisplayName",
            )
        for other in self.store["Customer"].values():
            if other["DisplayName"].lower() == name.lower() and other["Id"] != body.get("Id"):
                raise Fault(
                    "6240",
                    "Duplicate Name Exists Error",
                    "The name supplied already exists. : Another customer is already using this name. Please "
                    "use a different name.",
                    "DisplayName",
                )
        for key in ("BillAddr", "ShipAddr"):
            if key in body:
                self._known(body[key], _ADDRESS, key)
        if "PrimaryEmailAddr" in body:
            self._known(body["PrimaryEmailAddr"], {"Address"}, "PrimaryEmailAddr")
            if "@" not in str(body["PrimaryEmailAddr"].get("Address", "")):
                raise Fault(
                    "2210",
                    "Email Address does not conform to the syntax rules of RFC 822",
                    "Email Address does not conform to the syntax rules of RFC 822.",
                    "PrimaryEmailAddr",
                )

    def _validate_sales_form(self, body: dict[str, Any], entity: str) -> None:
        customer = self.store["Customer"][body["CustomerRef"]["value"]]
        currency = body.get("CurrencyRef", {}).get("value", HOME_CURRENCY)
        if (customer.get("CurrencyRef") or {}).get("value", HOME_CURRENCY) != currency:
            raise Fault(
                "6000",
                "A business validation error has occurred while processing your request",
                "Business Validation Error: The currency of the transaction must be the customer's currency.",
                "CurrencyRef",
            )
        if not isinstance(body["Line"], list):
            raise Fault("2010", "Request has invalid or unsupported property", "Line must be a list", "Line")
        for line in body["Line"]:
            self._known(
                line,
                {
                    "Id",
                    "LineNum",
                    "Description",
                    "Amount",
                    "DetailType",
                    "SalesItemLineDetail",
                    "SubTotalLineDetail",
                    "DiscountLineDetail",
                    "DescriptionOnly",
                },
                "Line",
            )
            self._lengths(line)
            if line.get("DetailType") == "SubTotalLineDetail":
                continue  # QuickBooks computes its subtotal line; one sent back is ignored
            if line.get("DetailType") != "SalesItemLineDetail" or "SalesItemLineDetail" not in line:
                raise Fault(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    "Required parameter Line.SalesItemLineDetail is missing in the request",
                    "Line",
                )
            amount = self._amount(line.get("Amount"), "Line.Amount")
            detail = line["SalesItemLineDetail"]
            self._known(
                detail,
                {
                    "ItemRef",
                    "Qty",
                    "UnitPrice",
                    "TaxCodeRef",
                    "ClassRef",
                    "ServiceDate",
                    "ItemAccountRef",
                    "TaxInclusiveAmt",
                    "DiscountRate",
                    "DiscountAmt",
                },
                "SalesItemLineDetail",
            )
            if "ItemRef" not in detail:
                raise Fault(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    "Required parameter Line.SalesItemLineDetail.ItemRef is missing in the request",
                    "ItemRef",
                )
            for key in ("ItemRef", "TaxCodeRef", "ClassRef"):
                if key in detail:
                    self._ref(detail[key], key)
            qty, price = detail.get("Qty"), detail.get("UnitPrice")
            if (
                qty is not None
                and price is not None
                and not isinstance(qty, bool)
                and Decimal(qty) * Decimal(price) != amount
            ):
                raise Fault(
                    "6070",
                    "Amount is not equal to UnitPrice * Qty",
                    f"Amount is not equal to UnitPrice * Qty. Supplied value:{amount}",
                    "Line.Amount",
                )
            if "ServiceDate" in detail:
                _date(detail["ServiceDate"], "ServiceDate")
        tax = body.get("TxnTaxDetail")
        if tax is not None:
            self._known(tax, {"TotalTax", "TxnTaxCodeRef", "TaxLine"}, "TxnTaxDetail")
            self._amount(tax.get("TotalTax", Decimal(0)), "TxnTaxDetail.TotalTax")
        for key in ("TxnDate", "DueDate"):
            if key in body:
                _date(body[key], key)
        del entity

    def _validate_invoice(self, body: dict[str, Any]) -> None:
        self._validate_sales_form(body, "Invoice")

    def _validate_creditmemo(self, body: dict[str, Any]) -> None:
        self._validate_sales_form(body, "CreditMemo")

    def _validate_payment(self, body: dict[str, Any]) -> None:
        customer_id = body["CustomerRef"]["value"]
        total = self._amount(body["TotalAmt"], "TotalAmt")
        net = Decimal(0)
        for line in body.get("Line") or []:
            self._known(line, {"Amount", "LinkedTxn", "LineEx"}, "Line")
            amount = self._amount(line.get("Amount"), "Line.Amount")
            linked = line.get("LinkedTxn") or []
            if len(linked) != 1:
                raise Fault(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    "Required parameter Line.LinkedTxn is missing in the request",
                    "LinkedTxn",
                )
            self._known(linked[0], {"TxnId", "TxnType", "TxnLineId"}, "LinkedTxn")
            kind, txn_id = linked[0].get("TxnType"), str(linked[0].get("TxnId"))
            if kind not in ("Invoice", "CreditMemo", "JournalEntry"):
                raise Fault("2170", "Invalid Enumeration", f"Invalid Enumeration : {kind}", "TxnType")
            target = self.store[kind].get(txn_id)
            if target is None:
                raise _invalid_ref(kind, txn_id, "LinkedTxn")
            if self._customer_of(kind, target) != customer_id:
                raise Fault(
                    "620",
                    "TxnID Cannot Be Linked",
                    f"Cannot validate linked transactions: {kind} {txn_id} belongs to another customer",
                    "LinkedTxn",
                )
            still_open = self._open(kind, target, excluding=str(body.get("Id") or ""))
            if amount > still_open:
                raise Fault(
                    "6000",
                    "A business validation error has occurred while processing your request",
                    f"Business Validation Error: {amount} is more than the {still_open} open on {kind} {txn_id}",
                    "Line.Amount",
                )
            net += -amount if kind == "CreditMemo" else amount
        if net > total:
            raise Fault(
                "6000",
                "A business validation error has occurred while processing your request",
                f"Business Validation Error: the lines apply {net}, more than the payment's {total}",
                "TotalAmt",
            )

    def _validate_journalentry(self, body: dict[str, Any]) -> None:
        debits = credits = Decimal(0)
        for line in body["Line"]:
            self._known(line, {"Id", "Description", "Amount", "DetailType", "JournalEntryLineDetail"}, "Line")
            self._lengths(line)
            detail = line.get("JournalEntryLineDetail")
            if line.get("DetailType") != "JournalEntryLineDetail" or not isinstance(detail, dict):
                raise Fault(
                    "2020",
                    "Required param missing, need to supply the required value for the API",
                    "Required parameter Line.JournalEntryLineDetail is missing in the request",
                    "Line",
                )
            self._known(
                detail,
                {"PostingType", "AccountRef", "Entity", "ClassRef", "DepartmentRef", "TaxCodeRef", "BillableStatus"},
                "JournalEntryLineDetail",
            )
            amount = self._amount(line.get("Amount"), "Line.Amount")
            account = self._ref(detail.get("AccountRef"), "AccountRef")
            for key in ("ClassRef", "DepartmentRef"):
                if key in detail:
                    self._ref(detail[key], key)
            if detail.get("PostingType") == "Debit":
                debits += amount
            elif detail.get("PostingType") == "Credit":
                credits += amount
            else:
                raise Fault(
                    "2170", "Invalid Enumeration", f"Invalid Enumeration : {detail.get('PostingType')}", "PostingType"
                )
            entity = detail.get("Entity")
            if entity is not None:
                self._known(entity, {"Type", "EntityRef"}, "Entity")
                if entity.get("Type") != "Customer":
                    raise Fault("2170", "Invalid Enumeration", f"Invalid Enumeration : {entity.get('Type')}", "Type")
                self._ref(entity.get("EntityRef"), "EntityRef")
            if ACCOUNTS[account]["AccountType"] == "Accounts Receivable" and entity is None:
                raise Fault(
                    "6000",
                    "A business validation error has occurred while processing your request",
                    "Business Validation Error: When you use Accounts Receivable, you must choose a customer "
                    "in the Name field.",
                    "Entity",
                )
        if debits != credits:
            raise Fault(
                "6000",
                "A business validation error has occurred while processing your request",
                f"Business Validation Error: the journal entry is out of balance (debits {debits}, credits {credits})",
                "Line",
            )

    # -- the ledger -----------------------------------------------------------------------------

    def _customer_of(self, entity: str, record: dict[str, Any]) -> str:
        if entity == "JournalEntry":
            for line in record["Line"]:
                holder = line["JournalEntryLineDetail"].get("Entity")
                if holder:
                    return str(holder["EntityRef"]["value"])
            return ""
        return str(record["CustomerRef"]["value"])

    def _total(self, entity: str, record: dict[str, Any]) -> Decimal:
        if entity == "JournalEntry":  # what the entry charges the customer on A/R
            return sum(
                (
                    Decimal(line["Amount"])
                    for line in record["Line"]
                    if line["JournalEntryLineDetail"]["AccountRef"]["value"] == AR_ACCOUNT
                    and line["JournalEntryLineDetail"]["PostingType"] == "Debit"
                ),
                Decimal(0),
            )
        if entity == "Payment":
            return Decimal(record["TotalAmt"])
        lines = sum((Decimal(line["Amount"]) for line in record["Line"]), Decimal(0))
        return lines + Decimal((record.get("TxnTaxDetail") or {}).get("TotalTax", 0))

    def _applied(self, kind: str, txn_id: str, excluding: str = "") -> tuple[Decimal, list[str]]:
        total, payments = Decimal(0), []
        for payment in self.store["Payment"].values():
            if payment["Id"] == excluding:
                continue
            for line in payment.get("Line", []):
                for linked in line["LinkedTxn"]:
                    if linked["TxnType"] == kind and str(linked["TxnId"]) == txn_id:
                        total += Decimal(line["Amount"])
                        payments.append(payment["Id"])
        return total, payments

    def _open(self, kind: str, record: dict[str, Any], excluding: str = "") -> Decimal:
        return self._total(kind, record) - self._applied(kind, record["Id"], excluding)[0]

    def _view(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        view = json.loads(dumps(record), parse_float=Decimal)
        if entity in ("Invoice", "CreditMemo"):
            view["TotalAmt"] = self._total(entity, record)
            view["Balance"] = self._open(entity, record)
            if entity == "CreditMemo":
                view["RemainingCredit"] = view["Balance"]
            _, payments = self._applied(entity, record["Id"])
            view["LinkedTxn"] = [{"TxnId": pid, "TxnType": "Payment"} for pid in dict.fromkeys(payments)]
            subtotal = sum((Decimal(line["Amount"]) for line in record["Line"]), Decimal(0))
            view["Line"].append({"Amount": subtotal, "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
        elif entity == "Payment":
            net = Decimal(0)
            for line in record.get("Line", []):
                kind = line["LinkedTxn"][0]["TxnType"]
                net += -Decimal(line["Amount"]) if kind == "CreditMemo" else Decimal(line["Amount"])
            view["UnappliedAmt"] = Decimal(record["TotalAmt"]) - net
        elif entity == "Customer":
            view["Balance"] = self._customer_balance(record["Id"])
            view["FullyQualifiedName"] = record["DisplayName"]
        return view

    def _customer_balance(self, customer_id: str) -> Decimal:
        total = Decimal(0)
        for entity in ("Invoice", "CreditMemo", "Payment", "JournalEntry"):
            for record in self.store[entity].values():
                for account, amount in self._postings(entity, record):
                    if account == AR_ACCOUNT and self._customer_of(entity, record) == customer_id:
                        total += amount
        return total

    def _postings(self, entity: str, record: dict[str, Any]) -> list[tuple[str, Decimal]]:
        """The document's effect on each account, debit positive."""
        out: list[tuple[str, Decimal]] = []
        sign = Decimal(1) if entity == "Invoice" else Decimal(-1)
        if entity in ("Invoice", "CreditMemo"):
            total = self._total(entity, record)
            out.append((AR_ACCOUNT, sign * total))
            for line in record["Line"]:
                item = ITEMS[line["SalesItemLineDetail"]["ItemRef"]["value"]]
                out.append((item["IncomeAccountRef"], -sign * Decimal(line["Amount"])))
            tax = Decimal((record.get("TxnTaxDetail") or {}).get("TotalTax", 0))
            out.append((TAX_ACCOUNT, -sign * tax))
        elif entity == "Payment":
            total = Decimal(record["TotalAmt"])
            out.append((AR_ACCOUNT, -total))
            out.append(((record.get("DepositToAccountRef") or {}).get("value", "4"), total))
        else:
            for line in record["Line"]:
                detail = line["JournalEntryLineDetail"]
                direction = Decimal(1) if detail["PostingType"] == "Debit" else Decimal(-1)
                out.append((detail["AccountRef"]["value"], direction * Decimal(line["Amount"])))
        return out
