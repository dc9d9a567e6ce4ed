"""A contract simulator of Microsoft Dynamics 365 Finance for the tests: the Microsoft Entra ID token
endpoint and the OData data entities ``Dynamics365Connector`` uses, served over real HTTP, with a
small receivables ledger behind them so a test can read what D365 would hold.

Written from Microsoft's public documentation:

- Entra ID client credentials (learn.microsoft.com, "Microsoft identity platform and the OAuth 2.0
  client credentials flow"): ``POST /<tenant>/oauth2/v2.0/token`` with a form of ``grant_type``,
  ``client_id``, ``client_secret`` and ``scope`` = ``<resource>/.default``; the answer
  ``{"token_type": "Bearer", "expires_in", "ext_expires_in", "access_token"}``; errors as
  ``{"error", "error_description": "AADSTS...", "error_codes", "timestamp", "trace_id",
  "correlation_id"}`` (a wrong secret: 401 ``invalid_client`` AADSTS7000215).
- Finance and operations OData (dev-itpro/data-entities/odata): ``/data/<EntitySet>``, entity keys
  that include ``dataAreaId``, reads limited to the caller's default company unless
  ``cross-company=true``; ``$filter``/``$select``; the ``IEEE754Compatible=true`` format parameter
  (decimals and Int64 as JSON strings; without it a string where a decimal is due is refused);
  bound actions at ``<EntitySet>(<keys>)/Microsoft.Dynamics.DataEntities.<Action>``.
- Service protection limits (dev-itpro/data-entities/priority-based-throttling): 429 with
  ``Retry-After`` in seconds.
- Entity shapes: the Common Data Model definitions Microsoft publishes for the data entities
  (microsoft/CDM, schemaDocuments/core/operationsCommon: CustCustomerV3Entity,
  FreeTextInvoiceHeaderEntity, FreeTextInvoiceLineEntity, CustomerPaymentJournalHeaderEntity,
  CustomerPaymentJournalLineEntity, LedgerJournalHeaderEntity, LedgerJournalLineEntity) and their
  keys in a D365 ``$metadata`` (free text invoice: ``dataAreaId`` + ``InvoiceIdentifier`` (Int64);
  its lines: ``dataAreaId`` + ``ParentRecId`` + ``LineNumber``; journals: ``dataAreaId`` +
  ``JournalBatchNumber`` [+ ``LineNumber``]). A property an entity does not have is refused with
  400, as D365's OData layer does, so a connector sending the wrong shape fails its tests.
- Errors: ``{"error": {"code", "message", "innererror": {"message", "type", "stacktrace"}}}``; a
  failed write is ``Write failed for table row of type '<Entity>'. Infolog: ...`` with type
  ``Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException``.

The ledger behind it: posting a free text invoice opens a customer transaction for its total and
gives it an invoice number (``FTI-…``, credit notes ``FTC-…``); posting a journal line on a
customer opens one for ``debit - credit`` and, when it marks an invoice, settles the two. Ledger
and bank lines move balances. ``customer_balance`` and ``invoice_open`` report what D365 would show.

Divergences worth knowing: D365 publishes no OData action that posts a free text invoice or a
journal; ``PostInvoice``/``PostJournal`` stand for the X++ extension the connector's docstring
describes (an X++ error raised there answers 500 with ``Microsoft.Dynamics.Ax.Xpp.ErrorException``);
``run_posting_batch`` stands for D365's periodic posting batch. Tax is the line amount times the
rate of the (sales tax group, item sales tax group) pair, rounded half up per line. Messages are
modelled on D365's and may be worded differently. String comparisons in ``$filter`` ignore case,
as D365's database collation does. Paging (``@odata.nextLink``) is not served.

Faults on demand: ``fail_next(mode, on=...)`` for the next data request whose ``"<METHOD> <path>"``
contains ``on`` (default: any write): ``503`` (refused before anything runs), ``429`` (with
``Retry-After``), ``timeout_after_commit`` (done, then the answer is held past the client's
timeout); ``expire_tokens()`` forgets every token issued (the next call gets 401);
``refuse_credentials()`` makes the token endpoint refuse the client secret; ``close_period()``
makes posting refuse documents dated in it.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

TENANT = "7f3c9a2e-0b1d-4c55-9e61-3a2b1c0d9e8f"
CLIENT_ID = "3d2f1e0c-aaaa-4bbb-8ccc-123456789abc"
CLIENT_SECRET = "d365-sim-client-secret"
NAMESPACE = "Microsoft.Dynamics.DataEntities"
WRITE_EXCEPTION = "Microsoft.Dynamics.Platform.Integration.Services.OData.AxODataWriteException"
XPP_EXCEPTION = "Microsoft.Dynamics.Ax.Xpp.ErrorException"
ODATA_EXCEPTION = "Microsoft.OData.ODataException"
NOYES = ("No", "Yes")
ACCOUNT_TYPES = ("Ledger", "Cust", "Vend", "Project", "FixedAssets", "Bank")
FIELD_LENGTH = {"CustomerReference": 60, "Description": 60, "CustomerAccount": 20, "CustomerRequisition": 20}

S, D, INT64, T = "Edm.String", "Edm.Decimal", "Edm.Int64", "Edm.DateTimeOffset"


@dataclass(frozen=True)
class Spec:
    type_name: str  # the entity type in $metadata
    entity_class: str  # the AOT data entity, named in write failures
    keys: tuple[str, ...]
    props: dict[str, Any]  # name -> Edm type, or a tuple of enum members
    required: tuple[str, ...] = ()
    generated: tuple[str, ...] = ()  # assigned by D365; ignored when sent


ENTITIES: dict[str, Spec] = {
    "CustomersV3": Spec(
        "CustomerV3",
        "CustCustomerV3Entity",
        ("dataAreaId", "CustomerAccount"),
        {
            "dataAreaId": S,
            "CustomerAccount": S,
            "PartyType": S,
            "PartyNumber": S,
            "OrganizationName": S,
            "NameAlias": S,
            "CustomerGroupId": S,
            "SalesCurrencyCode": S,
            "PaymentTerms": S,
            "SalesTaxGroup": S,
            "CreditLimit": D,
            "PrimaryContactEmail": S,
            "PrimaryContactPhone": S,
            "AddressStreet": S,
            "AddressCity": S,
            "AddressZipCode": S,
            "AddressState": S,
            "AddressCountryRegionId": S,
            "AddressCountryRegionISOCode": S,
            "TaxExemptNumber": S,
            "DefaultDimensionDisplayValue": S,
            "InvoiceAccount": S,
        },
        required=("dataAreaId", "CustomerAccount", "OrganizationName", "CustomerGroupId"),
        generated=("PartyNumber",),
    ),
    "FreeTextInvoiceHeaders": Spec(
        "FreeTextInvoiceHeader",
        "FreeTextInvoiceHeaderEntity",
        ("dataAreaId", "InvoiceIdentifier"),
        {
            "dataAreaId": S,
            "InvoiceIdentifier": INT64,
            "FreeTextNumber": S,
            "CustomerAccount": S,
            "InvoiceAccount": S,
            "InvoiceDate": T,
            "DueDate": T,
            "DocumentDate": T,
            "InvoiceId": S,
            "CurrencyCode": S,
            "CustomerReference": S,
            "CustomerRequisition": S,
            "TermsOfPayment": S,
            "MethodOfPayment": S,
            "PostingProfile": S,
            "SalesTaxGroupId": S,
            "DefaultDimensionDisplayValue": S,
            "IsPosted": NOYES,
        },
        required=("dataAreaId", "CustomerAccount", "CurrencyCode", "InvoiceDate"),
        generated=("InvoiceIdentifier", "FreeTextNumber", "InvoiceId", "IsPosted"),
    ),
    "FreeTextInvoiceLines": Spec(
        "FreeTextInvoiceLine",
        "FreeTextInvoiceLineEntity",
        ("dataAreaId", "ParentRecId", "LineNumber"),
        {
            "dataAreaId": S,
            "ParentRecId": INT64,
            "LineNumber": D,
            "Description": S,
            "InvoiceText": S,
            "MainAccountDisplayValue": S,
            "Quantity": D,
            "UnitPrice": D,
            "SalesUnit": S,
            "SalesTaxGroupId": S,
            "SalesTaxItemGroupId": S,
            "DefaultDimensionDisplayValue": S,
            "CurrencyCode": S,
            "TransactionCurrencyAmount": D,
            "SalesTaxAmount": D,
        },
        required=("dataAreaId", "ParentRecId", "LineNumber", "MainAccountDisplayValue", "Quantity", "UnitPrice"),
        generated=("CurrencyCode", "TransactionCurrencyAmount", "SalesTaxAmount"),
    ),
    "CustomerPaymentJournalHeaders": Spec(
        "CustomerPaymentJournalHeader",
        "CustomerPaymentJournalHeaderEntity",
        ("dataAreaId", "JournalBatchNumber"),
        {"dataAreaId": S, "JournalBatchNumber": S, "JournalName": S, "Description": S, "IsPosted": NOYES},
        required=("dataAreaId", "JournalName"),
        generated=("JournalBatchNumber", "IsPosted"),
    ),
    "CustomerPaymentJournalLines": Spec(
        "CustomerPaymentJournalLine",
        "CustomerPaymentJournalLineEntity",
        ("dataAreaId", "JournalBatchNumber", "LineNumber"),
        {
            "dataAreaId": S,
            "JournalBatchNumber": S,
            "LineNumber": D,
            "AccountType": ACCOUNT_TYPES,
            "AccountDisplayValue": S,
            "OffsetAccountType": ACCOUNT_TYPES,
            "OffsetAccountDisplayValue": S,
            "TransactionDate": T,
            "CurrencyCode": S,
            "DebitAmount": D,
            "CreditAmount": D,
            "TransactionText": S,
            "MarkedInvoice": S,
            "MarkedInvoiceCompany": S,
            "PaymentReference": S,
            "PaymentMethodName": S,
            "DefaultDimensionsForAccountDisplayValue": S,
            "DefaultDimensionsForOffsetAccountDisplayValue": S,
            "Voucher": S,
            "CustomerName": S,
        },
        required=("dataAreaId", "JournalBatchNumber", "LineNumber", "AccountDisplayValue", "TransactionDate"),
        generated=("Voucher", "CustomerName"),
    ),
    "LedgerJournalHeaders": Spec(
        "LedgerJournalHeader",
        "LedgerJournalHeaderEntity",
        ("dataAreaId", "JournalBatchNumber"),
        {"dataAreaId": S, "JournalBatchNumber": S, "JournalName": S, "Description": S, "IsPosted": NOYES},
        required=("dataAreaId", "JournalName"),
        generated=("JournalBatchNumber", "IsPosted"),
    ),
    "LedgerJournalLines": Spec(
        "LedgerJournalLine",
        "LedgerJournalLineEntity",
        ("dataAreaId", "JournalBatchNumber", "LineNumber"),
        {
            "dataAreaId": S,
            "JournalBatchNumber": S,
            "LineNumber": D,
            "AccountType": ACCOUNT_TYPES,
            "AccountDisplayValue": S,
            "OffsetAccountType": ACCOUNT_TYPES,
            "OffsetAccountDisplayValue": S,
            "TransDate": T,
            "CurrencyCode": S,
            "DebitAmount": D,
            "CreditAmount": D,
            "Text": S,
            "PaymentReference": S,
            "DefaultDimensionDisplayValue": S,
            "OffsetDefaultDimensionDisplayValue": S,
            "Voucher": S,
        },
        required=("dataAreaId", "JournalBatchNumber", "LineNumber", "AccountDisplayValue", "TransDate"),
        generated=("Voucher",),
    ),
}
JOURNAL_SETS = {
    "CustomerPaymentJournalHeaders": ("CustomerPaymentJournalLines", "CustPayment", "TransactionDate"),
    "LedgerJournalHeaders": ("LedgerJournalLines", "Daily", "TransDate"),
}


class ODataFailure(Exception):
    """An answer other than success: status, the OData error body, extra headers."""

    def __init__(
        self, status: int, message: str, inner: str = "", kind: str = "", headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.inner = inner
        self.kind = kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": "", "message": self.message}
        if self.inner or self.kind:
            error["innererror"] = {"message": self.inner, "type": self.kind, "stacktrace": "   at ..."}
        return {"error": error}


def write_failed(spec: Spec, message: str) -> ODataFailure:
    return ODataFailure(
        400,
        "An error has occurred.",
        f"Write failed for table row of type '{spec.entity_class}'. Infolog: Error: {message}",
        WRITE_EXCEPTION,
    )


def xpp_error(message: str) -> ODataFailure:
    return ODataFailure(500, "An error has occurred.", message, XPP_EXCEPTION)


def bad_request(message: str) -> ODataFailure:
    return ODataFailure(400, message, message, ODATA_EXCEPTION)


@dataclass
class Recorded:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    status: int = 0
    committed: bool = False
    ieee754: bool = False  # the body was sent with IEEE754Compatible=true


@dataclass
class CustTrans:
    company: str
    account: str
    amount: Decimal  # debit on the customer positive
    currency: str
    kind: str  # invoice | credit note | journal
    number: str  # the invoice number, or the journal batch
    on: date
    settled: Decimal = Decimal(0)

    @property
    def open(self) -> Decimal:
        return self.amount - self.settled


@dataclass
class Dynamics365Simulator:
    hang_seconds: float = 2.5
    token_lifetime: int = 3599
    retry_after: str = "7"
    default_company: str = "dat"
    companies: dict[str, str] = field(default_factory=lambda: {"dat": "USD", "usmf": "USD", "demf": "EUR"})
    currencies: set[str] = field(default_factory=lambda: {"USD", "EUR", "GBP", "JPY"})
    customer_groups: set[str] = field(default_factory=lambda: {"10", "30"})
    main_accounts: set[str] = field(
        default_factory=lambda: {"401100", "401200", "110200", "130100", "222200", "618100", "618200", "110190"}
    )
    bank_accounts: set[str] = field(default_factory=lambda: {"USMF OPER", "USMF CARD", "DEMF OPER"})
    # (sales tax group, item sales tax group) -> rate
    tax_rates: dict[tuple[str, str], Decimal] = field(
        default_factory=lambda: {("VAT", "STD"): Decimal("0.20"), ("VAT", "ZERO"): Decimal("0")}
    )
    journal_names: dict[str, str] = field(
        default_factory=lambda: {"CustPay": "CustPayment", "CustWO": "CustPayment", "GenJrn": "Daily"}
    )
    dimension_format: tuple[str, ...] = ("BusinessUnit", "CostCenter", "Department")
    dimension_values: dict[str, set[str]] = field(
        default_factory=lambda: {
            "BusinessUnit": {"001", "002"},
            "CostCenter": {"011", "012"},
            "Department": {"022", "023"},
        }
    )
    invoice_post_action: str = "PostInvoice"
    journal_post_action: str = "PostJournal"

    def __post_init__(self) -> None:
        self.tables: dict[str, list[dict[str, Any]]] = {name: [] for name in ENTITIES}
        self.requests: list[Recorded] = []
        self.token_requests: list[dict[str, str]] = []
        self.ar: list[CustTrans] = []
        self.gl: dict[tuple[str, str], Decimal] = {}
        self.banks: dict[tuple[str, str], Decimal] = {}
        self.closed_periods: dict[str, list[tuple[date, date]]] = {}
        self._tokens: dict[str, float] = {}
        self._faults: list[tuple[str, str]] = []
        self._refuse_secret = False
        self._sequences: dict[str, int] = {}
        self._recid = 5637144576
        self._lock = threading.RLock()
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                simulator._handle(self, "GET")

            def do_POST(self) -> None:
                simulator._handle(self, "POST")

            def do_PATCH(self) -> None:
                simulator._handle(self, "PATCH")

            def do_DELETE(self) -> None:
                simulator._handle(self, "DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="d365-simulator")
        self.thread.start()

    # -- lifecycle and what a test puts in ---------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def settings(self, **extra: Any) -> dict[str, Any]:
        """Connection settings pointing at this simulator (the client secret as given)."""
        return {
            "base_url": self.url,
            "authority": self.url,
            "tenant_id": TENANT,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "customer_group": "10",
            "dimension_format": ["business_unit", "cost_center", "department"],
            "timeout": 5,
            **extra,
        }

    def fail_next(self, mode: str, on: str = "") -> None:
        """``503``, ``429`` or ``timeout_after_commit`` for the next data request matching ``on``."""
        with self._lock:
            self._faults.append((mode, on))

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def refuse_credentials(self, refuse: bool = True) -> None:
        self._refuse_secret = refuse

    def close_period(self, company: str, start: date, end: date) -> None:
        self.closed_periods.setdefault(company, []).append((start, end))

    # -- what D365 holds -------------------------------------------------------------------

    def rows(self, entity_set: str, **match: Any) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self.tables[entity_set] if all(row.get(k) == v for k, v in match.items())]

    def customers(self, company: str | None = None) -> list[dict[str, Any]]:
        return self.rows("CustomersV3", **({"dataAreaId": company} if company else {}))

    def invoices(self, reference: str | None = None, company: str | None = None) -> list[dict[str, Any]]:
        """Free text invoice headers, each with its ``lines`` and computed ``total``."""
        match: dict[str, Any] = {}
        if reference is not None:
            match["CustomerReference"] = reference
        if company:
            match["dataAreaId"] = company
        found = []
        for header in self.rows("FreeTextInvoiceHeaders", **match):
            lines = self._lines_of(header)
            header["lines"] = lines
            header["total"] = sum((ln["TransactionCurrencyAmount"] + ln["SalesTaxAmount"] for ln in lines), Decimal(0))
            found.append(header)
        return found

    def journals(
        self, entity_set: str = "CustomerPaymentJournalHeaders", description: str | None = None
    ) -> list[dict[str, Any]]:
        lines_set = JOURNAL_SETS[entity_set][0]
        found = []
        for header in self.rows(entity_set, **({"Description": description} if description is not None else {})):
            header["lines"] = self.rows(
                lines_set, dataAreaId=header["dataAreaId"], JournalBatchNumber=header["JournalBatchNumber"]
            )
            found.append(header)
        return found

    def customer_balance(self, company: str, account: str) -> Decimal:
        with self._lock:
            return sum((t.amount for t in self.ar if t.company == company and t.account == account), Decimal(0))

    def invoice_open(self, company: str, invoice_id: str) -> Decimal:
        with self._lock:
            [trans] = [t for t in self.ar if t.company == company and t.number == invoice_id and t.kind != "journal"]
            return trans.open

    def gl_balance(self, company: str, account: str) -> Decimal:
        return self.gl.get((company, account), Decimal(0))

    def bank_balance(self, company: str, account: str) -> Decimal:
        return self.banks.get((company, account), Decimal(0))

    def writes(self, entity_set: str) -> list[Recorded]:
        """The create requests D365 accepted for an entity set, in order."""
        return [r for r in self.requests if r.method == "POST" and r.path == f"/data/{entity_set}" and r.status == 201]

    def run_posting_batch(self) -> int:
        """D365's periodic posting: post every draft free text invoice and journal. How many."""
        posted = 0
        with self._lock:
            for header in self.tables["FreeTextInvoiceHeaders"]:
                if header["IsPosted"] == "No":
                    self._post_free_text(header)
                    posted += 1
            for entity_set in JOURNAL_SETS:
                for header in self.tables[entity_set]:
                    if header["IsPosted"] == "No":
                        self._post_journal(entity_set, header)
                        posted += 1
        return posted

    # -- HTTP ---------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        split = urlsplit(handler.path)
        path = unquote(split.path)
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        record = Recorded(method, path, query, {k: v for k, v in handler.headers.items()}, None)
        with self._lock:
            self.requests.append(record)
        if path.endswith("/oauth2/v2.0/token") and method == "POST":
            return self._token(handler, record, path, raw)
        if not path.startswith("/data/"):
            return self._send(handler, record, 404, {"error": {"code": "", "message": f"No resource at {path}"}})
        hang = False
        try:
            self._authorize(handler)
            fault = self._take_fault(method, path)
            if fault == "503":
                raise ODataFailure(503, "The service is unavailable.", headers={"Retry-After": "2"})
            if fault == "429":
                raise ODataFailure(
                    429,
                    "Too many requests. Retry after the interval in Retry-After.",
                    headers={"Retry-After": self.retry_after},
                )
            hang = fault == "timeout_after_commit"
            ieee = "ieee754compatible=true" in (handler.headers.get("Accept") or "").replace(" ", "").lower()
            if raw:
                record.body, record.ieee754 = self._decode_body(handler, raw)
            with self._lock:
                status, payload = self._route(method, path, query, record)
                record.committed = method != "GET"
            record.status = status
            if hang:
                time.sleep(self.hang_seconds)
            self._send(handler, record, status, payload, ieee=ieee)
        except ODataFailure as failure:
            if failure.status == 401:
                return self._send(
                    handler, record, 401, None, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
                )
            self._send(handler, record, failure.status, failure.body(), headers=failure.headers)

    def _send(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        payload: Any,
        *,
        ieee: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        record.status = record.status or status
        body = b"" if payload is None else _encode(payload, ieee).encode()
        try:
            handler.send_response(status)
            if body:
                handler.send_header("Content-Type", "application/json; odata.metadata=minimal; charset=utf-8")
            handler.send_header("OData-Version", "4.0")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("ms-dyn-aid", str(uuid.uuid4()))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped waiting (a timeout after commit)

    def _token(self, handler: BaseHTTPRequestHandler, record: Recorded, path: str, raw: bytes) -> None:
        form = dict(parse_qsl(raw.decode()))
        record.body = {k: ("***" if k == "client_secret" else v) for k, v in form.items()}
        with self._lock:
            self.token_requests.append(record.body)
        tenant = path.split("/")[1]

        def refuse(status: int, error: str, code: int, text: str) -> None:
            body = {
                "error": error,
                "error_description": f"AADSTS{code}: {text} Trace ID: {uuid.uuid4()} Correlation ID: {uuid.uuid4()} "
                f"Timestamp: {datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
                "error_codes": [code],
                "timestamp": f"{datetime.now(UTC):%Y-%m-%d %H:%M:%SZ}",
                "trace_id": str(uuid.uuid4()),
                "correlation_id": str(uuid.uuid4()),
                "error_uri": f"https://login.microsoftonline.com/error?code={code}",
            }
            self._send(handler, record, status, body)

        if (handler.headers.get("Content-Type") or "").split(";")[0] != "application/x-www-form-urlencoded":
            return refuse(400, "invalid_request", 900144, "The request body must contain the parameter: 'grant_type'.")
        if tenant != TENANT:
            return refuse(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return refuse(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        if form.get("client_id") != CLIENT_ID:
            return refuse(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found.",
            )
        if self._refuse_secret or form.get("client_secret") != CLIENT_SECRET:
            return refuse(401, "invalid_client", 7000215, "Invalid client secret provided.")
        if form.get("scope") != f"{self.url}/.default":
            return refuse(
                400, "invalid_scope", 1002012, f"The provided value for scope {form.get('scope')} is not valid."
            )
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
        self._send(
            handler,
            record,
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.token_lifetime,
                "ext_expires_in": self.token_lifetime,
                "access_token": token,
            },
        )

    def _authorize(self, handler: BaseHTTPRequestHandler) -> None:
        scheme, _, token = (handler.headers.get("Authorization") or "").partition(" ")
        with self._lock:
            expires = self._tokens.get(token) if scheme == "Bearer" else None
        if expires is None or expires <= time.monotonic():
            raise ODataFailure(401, "")

    def _take_fault(self, method: str, path: str) -> str:
        with self._lock:
            for index, (mode, on) in enumerate(self._faults):
                target = f"{method} {path}"
                if (on and on in target) or (not on and method != "GET"):
                    del self._faults[index]
                    return mode
        return ""

    @staticmethod
    def _decode_body(handler: BaseHTTPRequestHandler, raw: bytes) -> tuple[Any, bool]:
        content_type = (handler.headers.get("Content-Type") or "").replace(" ", "").lower()
        if not content_type.startswith("application/json"):
            raise ODataFailure(415, f"The content type '{content_type}' is not supported.")
        try:
            body = json.loads(raw, parse_float=Decimal, parse_int=Decimal)
        except ValueError as exc:
            raise bad_request(f"The request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise bad_request("An entity or action parameters object was expected in the request body.")
        return body, "ieee754compatible=true" in content_type

    # -- routing ------------------------------------------------------------------------------

    _PATH = re.compile(r"^/data/(?P<set>\w+)(?:\((?P<keys>.*)\))?(?:/(?P<action>[\w.]+))?$")

    def _route(self, method: str, path: str, query: dict[str, str], record: Recorded) -> tuple[int, Any]:
        match = self._PATH.match(path)
        if match is None or match["set"] not in ENTITIES:
            raise ODataFailure(404, f"No HTTP resource was found that matches the request URI '{self.url}{path}'.")
        entity_set, spec = match["set"], ENTITIES[match["set"]]
        keys = _parse_keys(match["keys"], spec) if match["keys"] is not None else None
        if method == "GET" and keys is None and not match["action"]:
            return 200, self._query(entity_set, spec, query)
        if method == "POST" and keys is None:
            return 201, self._create(entity_set, spec, self._typed(spec, record))
        if keys is None:
            raise ODataFailure(405, f"The HTTP method '{method}' is not allowed on '{path}'.")
        row = self._find(entity_set, spec, keys)
        if match["action"]:
            if method != "POST":
                raise ODataFailure(405, f"Actions are invoked with POST: '{path}'.")
            return self._action(entity_set, row, match["action"])
        if method == "PATCH":
            return self._update(entity_set, spec, row, self._typed(spec, record))
        if method == "DELETE":
            return self._delete(entity_set, spec, row)
        if method == "GET":
            return 200, row
        raise ODataFailure(405, f"The HTTP method '{method}' is not allowed on '{path}'.")

    def _find(self, entity_set: str, spec: Spec, keys: dict[str, Any]) -> dict[str, Any]:
        for row in self.tables[entity_set]:
            if all(_equal(row.get(name), value) for name, value in keys.items()):
                return row
        raise ODataFailure(404, f"No resources were found in '{entity_set}' for the key {keys}.")

    def _typed(self, spec: Spec, record: Recorded) -> dict[str, Any]:
        """The body's properties with their Edm types checked, as D365's OData layer reads them."""
        body = record.body
        if body is None:
            raise bad_request("The request body is empty.")
        values: dict[str, Any] = {}
        for name, value in body.items():
            if name.startswith("@odata."):
                continue
            if name not in spec.props:
                raise bad_request(
                    f"The property '{name}' does not exist on type '{NAMESPACE}.{spec.type_name}'. Make sure to only "
                    "use property names that are defined by the type or mark the type as open type."
                )
            if name in spec.generated:
                continue
            values[name] = _convert(spec.props[name], name, value, record.ieee754)
        return values

    # -- reads --------------------------------------------------------------------------------

    def _query(self, entity_set: str, spec: Spec, query: dict[str, str]) -> dict[str, Any]:
        conditions = _parse_filter(query.get("$filter", ""), spec)
        cross_company = query.get("cross-company", "").lower() == "true"
        select = [name for name in query.get("$select", "").split(",") if name]
        for name in select:
            if name not in spec.props:
                raise bad_request(f"Could not find a property named '{name}' on type '{NAMESPACE}.{spec.type_name}'.")
        found = []
        for row in self.tables[entity_set]:
            if not cross_company and row.get("dataAreaId") != self.default_company:
                continue  # D365 reads the caller's default company unless asked across companies
            if all(_equal(row.get(name), value) for name, value in conditions):
                shown = {name: row.get(name) for name in select} if select else dict(row)
                shown["@odata.etag"] = f'W/"{abs(hash(json.dumps(row, default=str))) % 10**12}"'
                found.append(shown)
        return {"@odata.context": f"{self.url}/data/$metadata#{entity_set}", "value": found}

    # -- writes -------------------------------------------------------------------------------

    def _create(self, entity_set: str, spec: Spec, values: dict[str, Any]) -> dict[str, Any]:
        company = str(values.get("dataAreaId") or "")
        if company not in self.companies:
            raise write_failed(spec, f"Company '{company}' does not exist.")
        for name in spec.required:
            if name not in spec.generated and values.get(name) in (None, ""):
                raise write_failed(spec, f"Field '{name}' must be filled in.")
        for name, limit in FIELD_LENGTH.items():
            if isinstance(values.get(name), str) and len(values[name]) > limit:
                raise write_failed(spec, f"The value of field '{name}' is longer than {limit} characters.")
        row = {name: None for name in spec.props} | values
        getattr(self, f"_new_{entity_set}")(spec, row, company)
        self.tables[entity_set].append(row)
        return dict(row)

    def _new_CustomersV3(self, spec: Spec, row: dict[str, Any], company: str) -> None:
        account = row["CustomerAccount"]
        if any(
            _equal(r["CustomerAccount"], account) and r["dataAreaId"] == company for r in self.tables["CustomersV3"]
        ):
            raise write_failed(
                spec,
                f"Cannot create a record in Customers (CustTable). Customer account: {account}. "
                "The record already exists.",
            )
        if row["CustomerGroupId"] not in self.customer_groups:
            raise write_failed(
                spec,
                f"The value '{row['CustomerGroupId']}' in field 'Customer group' is not found in the related table "
                "'Customer groups'.",
            )
        if row.get("SalesCurrencyCode") and row["SalesCurrencyCode"] not in self.currencies:
            raise write_failed(spec, f"Currency '{row['SalesCurrencyCode']}' does not exist.")
        self._check_dimensions(spec, row.get("DefaultDimensionDisplayValue"))
        row["PartyType"] = row.get("PartyType") or "Organization"
        row["PartyNumber"] = f"{self._next('party', ''):09d}"

    def _new_FreeTextInvoiceHeaders(self, spec: Spec, row: dict[str, Any], company: str) -> None:
        self._customer(spec, company, row["CustomerAccount"])
        if row["CurrencyCode"] not in self.currencies:
            raise write_failed(
                spec,
                f"The value '{row['CurrencyCode']}' in field 'Currency' is not found in the related table 'Currency'.",
            )
        self._check_dimensions(spec, row.get("DefaultDimensionDisplayValue"))
        self._recid += 1
        row["InvoiceIdentifier"] = self._recid
        row["FreeTextNumber"] = f"FTN-{self._next('ftn', company):06d}"
        row["InvoiceAccount"] = row.get("InvoiceAccount") or row["CustomerAccount"]
        row["IsPosted"] = "No"
        row["InvoiceId"] = ""

    def _new_FreeTextInvoiceLines(self, spec: Spec, row: dict[str, Any], company: str) -> None:
        header = next(
            (
                h
                for h in self.tables["FreeTextInvoiceHeaders"]
                if h["dataAreaId"] == company and h["InvoiceIdentifier"] == row["ParentRecId"]
            ),
            None,
        )
        if header is None:
            raise write_failed(spec, f"Free text invoice {row['ParentRecId']} does not exist.")
        if header["IsPosted"] == "Yes":
            raise write_failed(spec, "The free text invoice has been posted and cannot be changed.")
        if any(
            r["dataAreaId"] == company
            and r["ParentRecId"] == row["ParentRecId"]
            and r["LineNumber"] == row["LineNumber"]
            for r in self.tables["FreeTextInvoiceLines"]
        ):
            raise write_failed(spec, f"Line {row['LineNumber']} already exists on the free text invoice.")
        if row["MainAccountDisplayValue"] not in self.main_accounts:
            raise write_failed(
                spec,
                f"The value '{row['MainAccountDisplayValue']}' in field 'Main account' is not found in the related "
                "table 'Main accounts'.",
            )
        if row["Quantity"] == 0:
            raise write_failed(spec, "Quantity must not be zero.")
        rate = Decimal(0)
        if row.get("SalesTaxGroupId") or row.get("SalesTaxItemGroupId"):
            pair = (row.get("SalesTaxGroupId") or "", row.get("SalesTaxItemGroupId") or "")
            if pair not in self.tax_rates:
                raise write_failed(
                    spec,
                    f"Sales tax group '{pair[0]}' and item sales tax group '{pair[1]}' have no sales tax code "
                    "in common.",
                )
            rate = self.tax_rates[pair]
        self._check_dimensions(spec, row.get("DefaultDimensionDisplayValue"))
        currency = header["CurrencyCode"]
        amount = _round(row["Quantity"] * row["UnitPrice"], currency)
        row["TransactionCurrencyAmount"] = amount
        row["SalesTaxAmount"] = _round(amount * rate, currency)
        row["CurrencyCode"] = currency

    def _new_CustomerPaymentJournalHeaders(self, spec: Spec, row: dict[str, Any], company: str) -> None:
        self._new_journal(spec, row, company, "CustPayment")

    def _new_LedgerJournalHeaders(self, spec: Spec, row: dict[str, Any], company: str) -> None:
        self._new_journal(spec, row, company, "Daily")

    def _new_journal(self, spec: Spec, row: dict[str, Any], company: str, journal_type: str) -> None:
        name = row["JournalName"]
        if self.journal_names.get(name) != journal_type:
            raise write_failed(
                spec,
                f"The value '{name}' in field 'Name' is not found in the related table 'Journal names' "
                f"({journal_type}).",
            )
        row["JournalBatchNumber"] = f"{self._next('journal', company):05d}"
        row["IsPosted"] = "No"

    def _new_CustomerPaymentJournalLines(self, spec: Spec, row: dict[str, Any], company: str) -> None:
        self._new_journal_line(spec, row, company, "CustomerPaymentJournalHeaders", "TransactionDate")
        if row.get("MarkedInvoice"):
            if row["AccountType"] != "Cust":
                raise write_failed(spec, "Only a customer line can mark an invoice for settlement.")
            marked_company = row.get("MarkedInvoiceCompany") or company
            invoice = next(
                (
                    t
                    for t in self.ar
                    if t.company == marked_company and t.number == row["MarkedInvoice"] and t.kind != "journal"
                ),
                None,
            )
            if invoice is None or invoice.account != row["AccountDisplayValue"]:
                raise write_failed(
                    spec,
                    f"Invoice {row['MarkedInvoice']} is not an open transaction of customer "
                    f"{row['AccountDisplayValue']}.",
                )
        customer = self._find_customer(company, row["AccountDisplayValue"]) if row["AccountType"] == "Cust" else None
        row["CustomerName"] = customer["OrganizationName"] if customer else None

    def _new_LedgerJournalLines(self, spec: Spec, row: dict[str, Any], company: str) -> None:
        self._new_journal_line(spec, row, company, "LedgerJournalHeaders", "TransDate")

    def _new_journal_line(
        self, spec: Spec, row: dict[str, Any], company: str, header_set: str, date_field: str
    ) -> None:
        header = next(
            (
                h
                for h in self.tables[header_set]
                if h["dataAreaId"] == company and h["JournalBatchNumber"] == row["JournalBatchNumber"]
            ),
            None,
        )
        if header is None:
            raise write_failed(spec, f"Journal batch number {row['JournalBatchNumber']} does not exist.")
        if header["IsPosted"] == "Yes":
            raise write_failed(spec, f"Journal {row['JournalBatchNumber']} is posted and cannot be changed.")
        lines_set = JOURNAL_SETS[header_set][0]
        if any(
            r["dataAreaId"] == company
            and r["JournalBatchNumber"] == row["JournalBatchNumber"]
            and r["LineNumber"] == row["LineNumber"]
            for r in self.tables[lines_set]
        ):
            raise write_failed(spec, f"Line {row['LineNumber']} already exists in journal {row['JournalBatchNumber']}.")
        row["AccountType"] = row.get("AccountType") or "Ledger"
        self._check_account(spec, company, row["AccountType"], row["AccountDisplayValue"], "Account")
        if row.get("OffsetAccountDisplayValue"):
            row["OffsetAccountType"] = row.get("OffsetAccountType") or "Ledger"
            self._check_account(
                spec, company, row["OffsetAccountType"], row["OffsetAccountDisplayValue"], "Offset account"
            )
        debit, credit = row.get("DebitAmount") or Decimal(0), row.get("CreditAmount") or Decimal(0)
        if debit < 0 or credit < 0 or (debit > 0) == (credit > 0):
            raise write_failed(spec, "Enter either a debit or a credit amount, not both and not neither.")
        row["DebitAmount"], row["CreditAmount"] = debit, credit
        row["CurrencyCode"] = row.get("CurrencyCode") or self.companies[company]
        if row["CurrencyCode"] not in self.currencies:
            raise write_failed(spec, f"Currency '{row['CurrencyCode']}' does not exist.")
        for dims in ("DefaultDimensionsForAccountDisplayValue", "DefaultDimensionsForOffsetAccountDisplayValue"):
            self._check_dimensions(spec, row.get(dims))
        self._check_dimensions(spec, row.get("DefaultDimensionDisplayValue"))
        self._check_dimensions(spec, row.get("OffsetDefaultDimensionDisplayValue"))
        row["Voucher"] = f"ARP-{self._next('voucher', company):06d}"

    def _check_account(self, spec: Spec, company: str, kind: str, account: str, label: str) -> None:
        known = {
            "Cust": lambda: self._find_customer(company, account) is not None,
            "Ledger": lambda: account.split(self._delimiter)[0] in self.main_accounts,
            "Bank": lambda: account in self.bank_accounts,
        }.get(kind)
        if known is None or not known():
            raise write_failed(spec, f"{label} {account} of type {kind} does not exist in legal entity {company}.")

    _delimiter = "-"

    def _check_dimensions(self, spec: Spec, value: Any) -> None:
        if not value:
            return
        segments = str(value).split(self._delimiter)
        if len(segments) != len(self.dimension_format):
            raise write_failed(
                spec,
                f"The financial dimension value '{value}' has {len(segments)} segments; the dimension format for "
                f"integrations has {len(self.dimension_format)} ({'-'.join(self.dimension_format)}).",
            )
        for name, segment in zip(self.dimension_format, segments, strict=True):
            if segment and segment not in self.dimension_values.get(name, set()):
                raise write_failed(spec, f"The value '{segment}' of the financial dimension '{name}' does not exist.")

    def _find_customer(self, company: str, account: str) -> dict[str, Any] | None:
        return next(
            (
                c
                for c in self.tables["CustomersV3"]
                if c["dataAreaId"] == company and _equal(c["CustomerAccount"], account)
            ),
            None,
        )

    def _customer(self, spec: Spec, company: str, account: str) -> dict[str, Any]:
        customer = self._find_customer(company, account)
        if customer is None:
            raise write_failed(
                spec,
                f"The value '{account}' in field 'Customer account' is not found in the related table 'Customers'.",
            )
        return customer

    def _update(self, entity_set: str, spec: Spec, row: dict[str, Any], values: dict[str, Any]) -> tuple[int, Any]:
        for name in spec.keys:
            if name in values and not _equal(values[name], row[name]):
                raise bad_request(f"The key property '{name}' cannot be changed.")
        if (
            entity_set == "CustomersV3"
            and "CustomerGroupId" in values
            and values["CustomerGroupId"] not in self.customer_groups
        ):
            raise write_failed(spec, f"The value '{values['CustomerGroupId']}' in field 'Customer group' is not found.")
        row.update(values)
        return 204, None

    def _delete(self, entity_set: str, spec: Spec, row: dict[str, Any]) -> tuple[int, Any]:
        if row.get("IsPosted") == "Yes":
            raise write_failed(spec, "A posted document cannot be deleted.")
        self.tables[entity_set].remove(row)
        if entity_set == "FreeTextInvoiceHeaders":
            self.tables["FreeTextInvoiceLines"] = [
                line
                for line in self.tables["FreeTextInvoiceLines"]
                if not (line["dataAreaId"] == row["dataAreaId"] and line["ParentRecId"] == row["InvoiceIdentifier"])
            ]
        return 204, None

    # -- posting ------------------------------------------------------------------------------

    def _action(self, entity_set: str, row: dict[str, Any], action: str) -> tuple[int, Any]:
        namespace, _, name = action.rpartition(".")
        if namespace != NAMESPACE:
            raise ODataFailure(404, f"The action '{action}' is not bound to '{entity_set}'.")
        if entity_set == "FreeTextInvoiceHeaders" and name == self.invoice_post_action:
            self._post_free_text(row)
            return 204, None
        if entity_set in JOURNAL_SETS and name == self.journal_post_action:
            self._post_journal(entity_set, row)
            return 204, None
        raise ODataFailure(404, f"The action '{action}' is not bound to '{entity_set}'.")

    def _open_period(self, company: str, on: date) -> None:
        for start, end in self.closed_periods.get(company, []):
            if start <= on <= end:
                raise xpp_error(
                    f"The accounting date {on.isoformat()} is not in an open period in legal entity {company.upper()}: "
                    f"the ledger period {start.isoformat()} to {end.isoformat()} is closed."
                )

    def _lines_of(self, header: dict[str, Any]) -> list[dict[str, Any]]:
        return sorted(
            (
                dict(line)
                for line in self.tables["FreeTextInvoiceLines"]
                if line["dataAreaId"] == header["dataAreaId"] and line["ParentRecId"] == header["InvoiceIdentifier"]
            ),
            key=lambda line: line["LineNumber"],
        )

    def _post_free_text(self, header: dict[str, Any]) -> None:
        if header["IsPosted"] == "Yes":
            raise xpp_error(f"Free text invoice {header['InvoiceId']} has already been posted.")
        company = header["dataAreaId"]
        lines = self._lines_of(header)
        if not lines:
            raise xpp_error("The free text invoice has no lines to post.")
        on = header["InvoiceDate"]
        self._open_period(company, on)
        total = sum((line["TransactionCurrencyAmount"] + line["SalesTaxAmount"] for line in lines), Decimal(0))
        credit_note = total < 0
        header["InvoiceId"] = f"{'FTC' if credit_note else 'FTI'}-{self._next('invoice', company):06d}"
        header["IsPosted"] = "Yes"
        self.ar.append(
            CustTrans(
                company,
                header["CustomerAccount"],
                total,
                header["CurrencyCode"],
                "credit note" if credit_note else "invoice",
                header["InvoiceId"],
                on,
            )
        )
        for line in lines:
            key = (company, line["MainAccountDisplayValue"])
            self.gl[key] = self.gl.get(key, Decimal(0)) - line["TransactionCurrencyAmount"]
            self.gl[(company, "222200")] = self.gl.get((company, "222200"), Decimal(0)) - line["SalesTaxAmount"]
        self.gl[(company, "130100")] = self.gl.get((company, "130100"), Decimal(0)) + total

    def _post_journal(self, entity_set: str, header: dict[str, Any]) -> None:
        if header["IsPosted"] == "Yes":
            raise xpp_error(f"Journal {header['JournalBatchNumber']} has already been posted.")
        lines_set, _, date_field = JOURNAL_SETS[entity_set]
        company = header["dataAreaId"]
        lines = sorted(
            (
                line
                for line in self.tables[lines_set]
                if line["dataAreaId"] == company and line["JournalBatchNumber"] == header["JournalBatchNumber"]
            ),
            key=lambda line: line["LineNumber"],
        )
        if not lines:
            raise xpp_error(f"Journal {header['JournalBatchNumber']} has no lines.")
        unbalanced = sum(
            (line["DebitAmount"] - line["CreditAmount"] for line in lines if not line.get("OffsetAccountDisplayValue")),
            Decimal(0),
        )
        if unbalanced:
            raise xpp_error(
                f"The transactions on voucher {lines[0]['Voucher']} do not balance as per "
                f"{lines[0][date_field].isoformat()}. (accounting currency: {unbalanced})"
            )
        for line in lines:
            self._open_period(company, line[date_field])
        for line in lines:
            amount = line["DebitAmount"] - line["CreditAmount"]
            self._book(
                company, line["AccountType"], line["AccountDisplayValue"], amount, line, header, line[date_field]
            )
            if line.get("OffsetAccountDisplayValue"):
                self._book(
                    company,
                    line["OffsetAccountType"],
                    line["OffsetAccountDisplayValue"],
                    -amount,
                    None,
                    header,
                    line[date_field],
                )
        header["IsPosted"] = "Yes"

    def _book(
        self,
        company: str,
        kind: str,
        account: str,
        amount: Decimal,
        line: dict[str, Any] | None,
        header: dict[str, Any],
        on: date,
    ) -> None:
        if kind == "Ledger":
            key = (company, account.split(self._delimiter)[0])
            self.gl[key] = self.gl.get(key, Decimal(0)) + amount
        elif kind == "Bank":
            self.banks[(company, account)] = self.banks.get((company, account), Decimal(0)) + amount
        elif kind == "Cust":
            trans = CustTrans(
                company,
                account,
                amount,
                (line or {}).get("CurrencyCode") or "",
                "journal",
                header["JournalBatchNumber"],
                on,
            )
            self.ar.append(trans)
            self.gl[(company, "130100")] = self.gl.get((company, "130100"), Decimal(0)) + amount
            marked = (line or {}).get("MarkedInvoice")
            if marked:
                marked_company = (line or {}).get("MarkedInvoiceCompany") or company
                [invoice] = [
                    t for t in self.ar if t.company == marked_company and t.number == marked and t.kind != "journal"
                ]
                # Settlement takes what both sides leave open, no more.
                if invoice.open * trans.open < 0:
                    take = min(abs(invoice.open), abs(trans.open))
                    sign = 1 if invoice.open > 0 else -1
                    invoice.settled += sign * take
                    trans.settled -= sign * take

    def _next(self, sequence: str, company: str) -> int:
        key = f"{sequence}:{company}"
        self._sequences[key] = self._sequences.get(key, 0) + 1
        return self._sequences[key]


# -- OData values ---------------------------------------------------------------------------


def _equal(left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return left.casefold() == right.casefold()
    if isinstance(left, Decimal | int) and isinstance(right, Decimal | int):
        return Decimal(left) == Decimal(right)
    return bool(left == right)


def _round(amount: Decimal, currency: str) -> Decimal:
    exponent = 0 if currency == "JPY" else 2
    return amount.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_HALF_UP)


_DATETIME = re.compile(r"^(\d{4}-\d{2}-\d{2})T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})$")


def _convert(edm: Any, name: str, value: Any, ieee: bool) -> Any:
    if value is None:
        return None
    if isinstance(edm, tuple):
        if value not in edm:
            raise bad_request(f"The enum member '{value}' is not valid for the property '{name}'.")
        return value
    if edm == S:
        if not isinstance(value, str):
            raise bad_request(f"Cannot convert a primitive value to the expected type 'Edm.String' for '{name}'.")
        return value
    if edm in (D, INT64):
        if isinstance(value, str) and not ieee:
            raise bad_request(
                f"Cannot convert the literal '{value}' to the expected type '{edm}': send the number, or ask for "
                "IEEE754Compatible=true."
            )
        if isinstance(value, bool) or not isinstance(value, str | Decimal | int):
            raise bad_request(f"Cannot convert the literal '{value}' to the expected type '{edm}'.")
        try:
            number = Decimal(str(value))
        except InvalidOperation as exc:
            raise bad_request(f"Cannot convert the literal '{value}' to the expected type '{edm}'.") from exc
        if edm == INT64:
            if number != number.to_integral_value():
                raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.Int64'.")
            return int(number)
        return number
    if edm == T:
        match = _DATETIME.match(value) if isinstance(value, str) else None
        if match is None:
            raise bad_request(f"Cannot convert the literal '{value}' to the expected type 'Edm.DateTimeOffset'.")
        return date.fromisoformat(match.group(1))
    raise bad_request(f"unsupported type {edm}")


def _parse_literal(text: str, spec: Spec) -> Any:
    text = text.strip()
    if text.startswith("'") and text.endswith("'") and len(text) >= 2:
        return text[1:-1].replace("''", "'")
    enum = re.match(rf"^{re.escape(NAMESPACE)}\.\w+'(\w+)'$", text)
    if enum:
        return enum.group(1)
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return Decimal(text)
    raise bad_request(f"Syntax error: character '{text[:1]}' is not valid at position 0 in '{text}'.")


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts, current, quoted, index = [], "", False, 0
    while index < len(text):
        char = text[index]
        if char == "'":
            quoted = not quoted
        if not quoted and text.startswith(separator, index):
            parts.append(current)
            current, index = "", index + len(separator)
            continue
        current += char
        index += 1
    parts.append(current)
    return parts


def _parse_filter(text: str, spec: Spec) -> list[tuple[str, Any]]:
    if not text:
        return []
    conditions = []
    for clause in _split_outside_quotes(text, " and "):
        match = re.match(r"^\s*(\w+)\s+eq\s+(.+?)\s*$", clause)
        if match is None:
            raise bad_request(f"The query specified in the URI is not valid: '{clause}'.")
        name, literal = match.group(1), match.group(2)
        if name not in spec.props:
            raise bad_request(f"Could not find a property named '{name}' on type '{NAMESPACE}.{spec.type_name}'.")
        conditions.append((name, _parse_literal(literal, spec)))
    return conditions


def _parse_keys(text: str, spec: Spec) -> dict[str, Any]:
    keys = {}
    for part in _split_outside_quotes(text, ","):
        name, _, literal = part.partition("=")
        name = name.strip()
        if name not in spec.keys:
            raise bad_request(f"The key '{name}' is not a key of '{NAMESPACE}.{spec.type_name}'.")
        keys[name] = _parse_literal(literal, spec)
    if set(keys) != set(spec.keys):
        raise bad_request(f"The key of '{NAMESPACE}.{spec.type_name}' is ({', '.join(spec.keys)}).")
    return keys


def _encode(payload: Any, ieee: bool) -> str:
    """JSON with decimals as strings (IEEE754Compatible) or as exact JSON numbers, dates as
    DateTimeOffset at midnight UTC, as D365 shows date fields."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict):
            return {key: convert(item) for key, item in value.items()}
        if isinstance(value, list):
            return [convert(item) for item in value]
        if isinstance(value, bool):
            return value
        if isinstance(value, Decimal | int):
            return str(value) if ieee else f"\x00{value}\x00"
        if isinstance(value, date):
            return f"{value.isoformat()}T00:00:00Z"
        return value

    text = json.dumps(convert(payload))
    return re.sub(r'"\\u0000(-?[0-9.]+)\\u0000"', r"\1", text)
