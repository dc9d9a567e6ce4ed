"""A contract simulator of the parts of SAP S/4HANA Cloud the SAP connector uses, served over real
HTTP so ``S4HanaConnector`` runs unchanged against it, with a set of books it can report on.

Written from SAP's public documentation of communication scenario SAP_COM_0002 (Finance - Posting
Integration) and the Business Partner API:

- *Journal Entry - Post (Synchronous)*, SOAP inbound service
  ``JournalEntryCreateRequestConfirmation_In`` at ``/sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfi``
  (SOAP 1.1, ``SOAPAction`` ``http://sap.com/xi/SAPSCORE/SFIN/JournalEntryCreateRequestConfirmation_In/
  JournalEntryCreateRequestConfirmation_InRequest``): the request ``JournalEntryBulkCreateRequest``
  and the answer ``JournalEntryBulkCreateConfirmation`` (namespace ``http://sap.com/xi/SAPSCORE/SFIN``,
  child elements unqualified) follow the service's WSDL: element names, their order (XSD
  sequences), which are required, and the lengths and patterns of their types (DocumentReferenceID
  16, DocumentHeaderText 25, DocumentItemText 50, AssignmentReference 18, CompanyCode 4, GLAccount
  10, CreatedByUser 12, amounts as decimals with a ``currencyCode`` attribute, ``GLOBAL_DateTime``
  ending in ``Z``, UUIDs in 8-4-4-4-12 form). A request that breaks the schema gets a SOAP fault
  ``soap-env:Client`` (HTTP 500); a refused posting gets HTTP 200 with AccountingDocument
  ``0000000000`` and log items of severity 3 (the last one "Error in document: BKPFF $ ..."); a
  posted one gets its AccountingDocument, CompanyCode and FiscalYear and the log item "Document
  posted successfully". A message whose ``MessageHeader`` UUID was processed before is answered
  with the first confirmation and posts nothing (SAP's idempotent message handling). See SAP's
  blog "User Guide for Journal Entry Post API on S/4 HANA Cloud" (2019) for the endpoint and shapes.
- *Business Partner (A2X)*, OData v2 ``/sap/opu/odata/sap/API_BUSINESS_PARTNER``:
  ``A_BusinessPartner`` (deep insert with ``to_BusinessPartnerAddress``/``to_EmailAddress``,
  ``to_BusinessPartnerRole``, ``to_Customer``/``to_CustomerCompany``, each to-many as
  ``{"results": [...]}``), ``$filter``/``$expand``/``$top``, ``PATCH`` with ``If-Match`` (missing:
  428, stale: 412), and ``A_CustomerCompany`` to extend a customer to a company code.
- *Operational Journal Entry Item - Read*, OData v2 ``/sap/opu/odata/sap/API_OPLACCTGDOCITEMCUBE_SRV/
  A_OperationalAcctgDocItemCube``: one row per item of every posted entry (``FinancialAccountType``
  D for a customer item, ``TransactionTypeDetermination`` MWS for output tax, signed amounts),
  filtered with ``eq`` and ``and``, ``$select``, ``$top``/``$skip`` with ``__next``.
- SAP Gateway's CSRF protection: a ``GET`` with ``x-csrf-token: Fetch`` answers a token and the
  session cookies (``SAP_SESSIONID_<SID>_<client>``, ``sap-usercontext``); an OData write without
  the token of its session is refused with 403, ``x-csrf-token: Required`` and the text "CSRF token
  validation failed". OData answers ``{"d": ...}``; errors ``{"error": {"code", "message": {"lang",
  "value"}, "innererror"}}``.
- Authentication: HTTP basic for the communication user, or an OAuth 2.0 client-credentials token
  (``POST /oauth/token``, ``{"access_token", "token_type": "bearer", "expires_in"}``; wrong client:
  401 ``invalid_client``); a missing or expired credential on the API: 401.

Faults on demand (``fail_next``): 503 before anything is done, 429 with ``Retry-After``, a SOAP
server fault (500) before anything is done, and a timeout after commit (the entry is posted, then
the answer is held back past the client's timeout). ``close_period`` makes SAP refuse postings in
a month; ``refuse_credentials``, ``expire_tokens`` and ``expire_sessions`` act on authentication.

Divergences worth knowing: only the elements of the WSDL that clients commonly send are known
(others are refused as unexpected); tax amounts are taken as sent (SAP can be set to recompute
them); numbering is one range per document type, company code and year; SAP's message numbers
in log items and OData error codes are illustrative where the documentation does not give them;
the automatic clearing of open items is not simulated (the books keep every item open, and an
invoice's open amount is the sum of the customer items sharing its assignment).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import itertools
import json
import re
import secrets
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SFIN = "http://sap.com/xi/SAPSCORE/SFIN"
JOURNAL_ENTRY_POST_PATH = "/sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfi"
SOAP_ACTION = (
    "http://sap.com/xi/SAPSCORE/SFIN/JournalEntryCreateRequestConfirmation_In/"
    "JournalEntryCreateRequestConfirmation_InRequest"
)
BP_SERVICE = "/sap/opu/odata/sap/API_BUSINESS_PARTNER"
ITEM_SERVICE = "/sap/opu/odata/sap/API_OPLACCTGDOCITEMCUBE_SRV"
ITEM_ENTITY = "A_OperationalAcctgDocItemCube"
TOKEN_PATH = "/oauth/token"
SYSTEM = "HUB"
CLIENT = "100"
SESSION_COOKIE = f"SAP_SESSIONID_{SYSTEM}_{CLIENT}"

USERNAME = "HUB_COMM_USER"
PASSWORD = "comm-user-secret"
CLIENT_ID = "hub-integration"
CLIENT_SECRET = "client-secret"

# The tenant's set-up, as a US company code would have it (SAP best-practice numbering).
COMPANIES = {"1710": "USD", "1010": "EUR"}
GL_ACCOUNTS = {
    "11001000": "Bank 1 - incoming payments (clearing)",
    "11009000": "Disputed card payments",
    "12100000": "Receivables - domestic (reconciliation)",
    "22000000": "Output tax",
    "41000000": "Revenue - subscriptions",
    "41000100": "Revenue - usage",
    "65000000": "Bad debt expense",
    "65100000": "Chargeback losses",
}
TAX_CODES = {"O1": ("22000000", Decimal("0.20")), "O0": ("22000000", Decimal(0))}
RECONCILIATION_ACCOUNT = "12100000"
DOCUMENT_TYPES = {"DR": "18", "DG": "16", "DZ": "14", "DA": "19", "SA": "10", "AB": "11"}
CUSTOMER_ROLES = {"FLCU00", "FLCU01", "FLVN00", "FLVN01", "000000"}

# -- the WSDL's XSD sequences, as far as the simulator knows them --------------------------------
# (element, minOccurs, maxOccurs or None for unbounded, type): a type is the name of a sequence
# below or a simple type ("token", maxLength) / ("string", maxLength) / "amount" / "date" / ...
Spec = tuple[str, int, int | None, Any]
SCHEMA: dict[str, list[Spec]] = {
    "Bulk": [("MessageHeader", 1, 1, "Header"), ("JournalEntryCreateRequest", 1, None, "Request")],
    "Header": [
        ("ID", 0, 1, ("token", 35)),
        ("UUID", 0, 1, "uuid"),
        ("ReferenceID", 0, 1, ("token", 35)),
        ("ReferenceUUID", 0, 1, "uuid"),
        ("CreationDateTime", 1, 1, "datetime"),
        ("TestDataIndicator", 0, 1, "bool"),
        ("ReconciliationIndicator", 0, 1, "bool"),
        ("SenderBusinessSystemID", 0, 1, ("token", 60)),
        ("RecipientBusinessSystemID", 0, 1, ("token", 60)),
    ],
    "Request": [("MessageHeader", 1, 1, "Header"), ("JournalEntry", 1, 1, "JournalEntry")],
    "JournalEntry": [
        ("OriginalReferenceDocumentType", 1, 1, ("token", 5)),
        ("OriginalReferenceDocument", 0, 1, ("token", 20)),
        ("OriginalReferenceDocumentLogicalSystem", 0, 1, ("token", 10)),
        ("BusinessTransactionType", 1, 1, ("token", 4)),
        ("AccountingDocumentType", 1, 1, ("token", 5)),
        ("AccountingDocument", 0, 1, ("token", 10)),
        ("DocumentReferenceID", 0, 1, ("token", 16)),
        ("OriginalPredecessorRefDocument", 0, 1, ("token", 20)),
        ("InvoiceReferenceDocument", 0, 1, ("token", 20)),
        ("DocumentHeaderText", 0, 1, ("string", 25)),
        ("ReversalReason", 0, 1, ("token", 2)),
        ("ReversalReferenceDocument", 0, 1, ("token", 20)),
        ("ReversalDate", 0, 1, "date"),
        ("DoTaxAmountCheck", 0, 1, "bool"),
        ("TaxFulfillmentDate", 0, 1, "date"),
        ("CreatedByUser", 1, 1, ("token", 12)),
        ("CompanyCode", 1, 1, ("token", 4)),
        ("DocumentDate", 1, 1, "date"),
        ("PostingDate", 1, 1, "date"),
        ("PostingFiscalPeriod", 0, 1, ("token", 3)),
        ("TaxReportingDate", 0, 1, "date"),
        ("TaxDeterminationDate", 0, 1, "date"),
        ("InvoiceReceiptDate", 0, 1, "date"),
        ("ExchangeRateDate", 0, 1, "date"),
        ("ECSEnvironment", 0, 1, ("token", 10)),
        ("ExchangeRate", 0, 1, "decimal"),
        ("IndirectQuotedExchangeRate", 0, 1, "decimal"),
        ("SourceSystemCompanyCode", 0, 1, ("token", 20)),
        ("SourceSystemAccountingDocument", 0, 1, ("token", 35)),
        ("Reference1InDocumentHeader", 0, 1, ("token", 20)),
        ("Reference2InDocumentHeader", 0, 1, ("token", 20)),
        ("Item", 0, None, "Item"),
        ("DebtorItem", 0, None, "DebtorItem"),
        ("ProductTaxItem", 0, None, "ProductTaxItem"),
    ],
    "Item": [
        ("ReferenceDocumentItem", 0, 1, ("token", 10)),
        ("ItemGroup", 0, 1, ("token", 6)),
        ("CompanyCode", 0, 1, ("token", 4)),
        ("GLAccount", 1, 1, ("token", 10)),
        ("AmountInTransactionCurrency", 1, 1, "amount"),
        ("AmountInCompanyCodeCurrency", 0, 1, "amount"),
        ("AmountInGroupCurrency", 0, 1, "amount"),
        ("AmountInFreeDefinedCurrency1", 0, 1, "amount"),
        ("DebitCreditCode", 0, 1, "debit_credit"),
        ("DocumentItemText", 0, 1, ("string", 50)),
        ("ReasonCode", 0, 1, ("token", 3)),
        ("AssignmentReference", 0, 1, ("token", 18)),
        ("FinancialTransactionType", 0, 1, ("token", 3)),
        ("Tax", 0, 1, "Tax"),
        ("Plant", 0, 1, ("token", 4)),
        ("Material", 0, 1, ("token", 40)),
        ("ValueDate", 0, 1, "date"),
        ("HouseBank", 0, 1, ("token", 5)),
        ("HouseBankAccount", 0, 1, ("token", 5)),
        ("Reference1IDByBusinessPartner", 0, 1, ("token", 12)),
        ("Reference2IDByBusinessPartner", 0, 1, ("token", 12)),
        ("Reference3IDByBusinessPartner", 0, 1, ("token", 20)),
        ("AccountAssignment", 0, 1, "AccountAssignment"),
    ],
    "Tax": [
        ("TaxCode", 1, 1, ("token", 2)),
        ("TaxJurisdiction", 0, 1, ("token", 15)),
        ("TaxItemGroup", 0, 1, ("token", 6)),
        ("TaxCountry", 0, 1, ("token", 3)),
    ],
    "AccountAssignment": [
        ("AccountAssignmentType", 0, 1, ("token", 2)),
        ("OrderID", 0, 1, ("token", 12)),
        ("ProfitCenter", 0, 1, ("token", 10)),
        ("PartnerProfitCenter", 0, 1, ("token", 10)),
        ("Segment", 0, 1, ("token", 10)),
        ("PartnerSegment", 0, 1, ("token", 10)),
        ("CostCenter", 0, 1, ("token", 10)),
        ("CostCtrActivityType", 0, 1, ("token", 6)),
        ("WBSElement", 0, 1, ("token", 24)),
    ],
    "DebtorItem": [
        ("ReferenceDocumentItem", 1, 1, ("token", 10)),
        ("Debtor", 1, 1, ("token", 10)),
        ("AmountInTransactionCurrency", 1, 1, "amount"),
        ("AmountInCompanyCodeCurrency", 0, 1, "amount"),
        ("AmountInGroupCurrency", 0, 1, "amount"),
        ("AmountInFreeDefinedCurrency1", 0, 1, "amount"),
        ("DebitCreditCode", 0, 1, "debit_credit"),
        ("AltvRecnclnAccts", 0, 1, ("token", 10)),
        ("DocumentItemText", 0, 1, ("string", 50)),
        ("AssignmentReference", 0, 1, ("token", 18)),
        ("Reference1IDByBusinessPartner", 0, 1, ("token", 12)),
        ("Reference2IDByBusinessPartner", 0, 1, ("token", 12)),
        ("Reference3IDByBusinessPartner", 0, 1, ("token", 20)),
        ("CashDiscountTerms", 0, 1, "CashDiscountTerms"),
    ],
    "CashDiscountTerms": [
        ("CashDiscountBaseAmount", 0, 1, "amount"),
        ("DueCalculationBaseDate", 1, 1, "date"),
        ("CashDiscount1Days", 0, 1, "duration"),
        ("CashDiscount1Percent", 0, 1, "decimal"),
        ("CashDiscount2Days", 0, 1, "duration"),
        ("CashDiscount2Percent", 0, 1, "decimal"),
        ("NetPaymentDays", 1, 1, "duration"),
    ],
    "ProductTaxItem": [
        ("ReferenceDocumentItem", 0, 1, ("token", 10)),
        ("TaxCode", 1, 1, ("token", 2)),
        ("TaxItemClassification", 0, 1, ("token", 3)),
        ("ConditionType", 0, 1, ("token", 4)),
        ("TaxJurisdiction", 0, 1, ("token", 15)),
        ("TaxItemGroup", 0, 1, ("token", 6)),
        ("TaxRate", 0, 1, "decimal"),
        ("TaxDeterminationDate", 0, 1, "date"),
        ("IsDirectTaxPosting", 0, 1, "bool"),
        ("TaxCountry", 0, 1, ("token", 3)),
        ("AmountInTransactionCurrency", 1, 1, "amount"),
        ("AmountInCompanyCodeCurrency", 0, 1, "amount"),
        ("AmountInGroupCurrency", 0, 1, "amount"),
        ("AmountInFreeDefinedCurrency1", 0, 1, "amount"),
        ("DebitCreditCode", 0, 1, "debit_credit"),
        ("ProductiveTaxText", 0, 1, ("string", 50)),
        ("TaxBaseAmountInTransCrcy", 1, 1, "amount"),
        ("TaxBaseAmountInCoCodeCrcy", 0, 1, "amount"),
    ],
}
_PATTERNS = {
    "uuid": re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"),
    "datetime": re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,7})?Z$"),
    "date": re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
    "amount": re.compile(r"^-?[0-9]{1,22}(\.[0-9]{1,6})?$"),
    "decimal": re.compile(r"^-?[0-9]+(\.[0-9]+)?$"),
    "duration": re.compile(r"^-?P[0-9]+D$"),
    "bool": re.compile(r"^(true|false|1|0)$"),
    "debit_credit": re.compile(r"^[SH]$"),
}

# -- the Business Partner API's properties the simulator knows (max lengths) -----------------------
BP_PROPERTIES = {
    "BusinessPartnerCategory": 1,
    "BusinessPartnerGrouping": 4,
    "OrganizationBPName1": 40,
    "OrganizationBPName2": 40,
    "OrganizationBPName3": 40,
    "OrganizationBPName4": 40,
    "SearchTerm1": 20,
    "SearchTerm2": 20,
    "BusinessPartnerIDByExtSystem": 20,
    "CorrespondenceLanguage": 2,
    "Language": 2,
    "FirstName": 40,
    "LastName": 40,
}
ADDRESS_PROPERTIES = {
    "Country": 3,
    "Region": 3,
    "CityName": 40,
    "PostalCode": 10,
    "StreetName": 60,
    "HouseNumber": 10,
    "StreetPrefixName": 40,
    "StreetSuffixName": 40,
    "Language": 2,
}
EMAIL_PROPERTIES = {"EmailAddress": 241}
ROLE_PROPERTIES = {"BusinessPartnerRole": 6}
TAX_PROPERTIES = {"BPTaxType": 4, "BPTaxNumber": 20}
CUSTOMER_COMPANY_PROPERTIES = {"Customer": 10, "CompanyCode": 4, "ReconciliationAccount": 10, "PaymentTerms": 4}
ITEM_PROPERTIES = (
    "CompanyCode",
    "FiscalYear",
    "AccountingDocument",
    "AccountingDocumentItem",
    "AccountingDocumentType",
    "DocumentReferenceID",
    "AccountingDocumentHeaderText",
    "PostingDate",
    "DocumentDate",
    "FinancialAccountType",
    "Customer",
    "GLAccount",
    "TaxCode",
    "TransactionTypeDetermination",
    "AssignmentReference",
    "DocumentItemText",
    "DebitCreditCode",
    "AmountInTransactionCurrency",
    "TransactionCurrency",
    "AmountInCompanyCodeCurrency",
    "CompanyCodeCurrency",
    "NetDueDate",
    "CostCenter",
    "ProfitCenter",
    "WBSElement",
    "IsReversal",
    "IsReversed",
)


class _SchemaError(Exception):
    pass


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    status: int = 0
    committed: bool = False

    def json(self) -> Any:
        return json.loads(self.body)

    def xml(self) -> ET.Element:
        return ET.fromstring(self.body)


@dataclass
class PostedEntry:
    company_code: str
    fiscal_year: str
    document: str
    document_type: str
    reference: str
    header_text: str
    posting_date: datetime.date
    currency: str
    message_uuid: str
    created_by: str
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.company_code}/{self.document}/{self.fiscal_year}"


@dataclass
class _Fault:
    kind: str  # "503", "429", "server_error", "timeout_after_commit"
    on: str  # "soap", "odata_write", "odata_read", "token", "write" (soap or OData write), "any"


@dataclass
class _Answer:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    committed: bool = False


class SapSimulator:
    def __init__(
        self,
        *,
        token_lifetime: float = 3600,
        hang_seconds: float = 2.5,
        retry_after: int = 7,
        page_size: int = 500,
    ) -> None:
        self.token_lifetime = token_lifetime
        self.hang_seconds = hang_seconds
        self.retry_after = retry_after
        self.page_size = page_size
        self.partners: dict[str, dict[str, Any]] = {}
        self.entries: list[PostedEntry] = []
        self.requests: list[Recorded] = []
        self.closed_periods: set[tuple[str, int, int]] = set()
        self.credentials_refused = False
        self.tokens_issued = 0
        self._tokens: dict[str, float] = {}
        self._sessions: dict[str, str] = {}
        self._messages: dict[str, bytes] = {}
        self._faults: list[_Fault] = []
        self._numbers: dict[tuple[str, str, str], itertools.count[int]] = {}
        self._partner_numbers = itertools.count(17100001)
        self._lock = threading.RLock()
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                simulator._handle(self, "GET")

            def do_POST(self) -> None:
                simulator._handle(self, "POST")

            def do_PATCH(self) -> None:
                simulator._handle(self, "PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="sap-simulator")
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Connection settings for the connector: basic authentication unless ``auth="oauth"``."""
        values: dict[str, Any] = {"base_url": self.url, "username": USERNAME, "password": PASSWORD, "timeout": 1}
        if overrides.get("auth") == "oauth":
            values = {
                "base_url": self.url,
                "auth": "oauth",
                "token_url": f"{self.url}{TOKEN_PATH}",
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "timeout": 1,
            }
        return {**values, **overrides}

    # -- faults and set-up ------------------------------------------------------------------

    def fail_next(self, *kinds: str, on: str = "write") -> None:
        """``503``, ``429``, ``server_error`` or ``timeout_after_commit`` for the next requests of
        the kind ``on`` (``soap``, ``odata_write``, ``odata_read``, ``token``, ``write`` or ``any``)."""
        with self._lock:
            self._faults.extend(_Fault(kind, on) for kind in kinds)

    def close_period(self, company_code: str, year: int, month: int) -> None:
        self.closed_periods.add((company_code, year, month))

    def refuse_credentials(self, refused: bool = True) -> None:
        self.credentials_refused = refused

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def expire_sessions(self) -> None:
        with self._lock:
            self._sessions.clear()

    def add_partner(self, name: str, company_code: str = "1710", external_key: str = "") -> str:
        """A customer someone created in SAP by hand; returns its number."""
        with self._lock:
            number = str(next(self._partner_numbers))
            self.partners[number] = self._new_partner(
                number,
                {
                    "BusinessPartnerCategory": "2",
                    "OrganizationBPName1": name,
                    "BusinessPartnerIDByExtSystem": external_key,
                },
                roles=["FLCU00", "FLCU01"],
                companies={company_code: {"ReconciliationAccount": RECONCILIATION_ACCOUNT}},
            )
            return number

    # -- what the books hold --------------------------------------------------------------

    def entries_with_reference(self, document_reference: str) -> list[PostedEntry]:
        return [entry for entry in self.entries if entry.reference == document_reference]

    def entry(self, key: str) -> PostedEntry:
        return next(entry for entry in self.entries if entry.key == key)

    def partners_with_reference(self, external_key: str) -> list[dict[str, Any]]:
        return [p for p in self.partners.values() if p["BusinessPartnerIDByExtSystem"] == external_key]

    def customer_balance(self, customer: str, company_code: str | None = None) -> Decimal:
        """What the customer owes (positive) or is owed (negative) on the receivables."""
        return sum(
            (
                Decimal(row["AmountInTransactionCurrency"])
                for entry in self.entries
                for row in entry.rows
                if row["FinancialAccountType"] == "D"
                and row["Customer"] == customer
                and (company_code is None or row["CompanyCode"] == company_code)
            ),
            Decimal(0),
        )

    def open_item(self, assignment: str) -> Decimal:
        """The customer items sharing one assignment: what is open on one invoice."""
        return sum(
            (
                Decimal(row["AmountInTransactionCurrency"])
                for entry in self.entries
                for row in entry.rows
                if row["FinancialAccountType"] == "D" and row["AssignmentReference"] == assignment
            ),
            Decimal(0),
        )

    def account_balance(self, gl_account: str, company_code: str | None = None) -> Decimal:
        """Debits less credits on a G/L account (customer items count on their reconciliation account)."""
        return sum(
            (
                Decimal(row["AmountInTransactionCurrency"])
                for entry in self.entries
                for row in entry.rows
                if row["GLAccount"] == gl_account and (company_code is None or row["CompanyCode"] == company_code)
            ),
            Decimal(0),
        )

    def soap_posts(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == JOURNAL_ENTRY_POST_PATH and r.method == "POST"]

    def odata_writes(self, entity: str = "") -> list[Recorded]:
        return [
            r
            for r in self.requests
            if r.method in ("POST", "PATCH") and r.path.startswith(BP_SERVICE) and entity in r.path
        ]

    # -- HTTP -----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        record = Recorded(method, path, query, {k.lower(): v for k, v in handler.headers.items()}, body)
        with self._lock:
            self.requests.append(record)
        if path == TOKEN_PATH:
            answer = self._token(handler, method, body)
        elif not self._authenticated(handler.headers.get("Authorization", "")):
            answer = _Answer(
                401,
                b"<html><head><title>Logon Error Message</title></head><body>Logon failed</body></html>",
                "text/html",
                {"WWW-Authenticate": f'Basic realm="SAP NetWeaver Application Server [{SYSTEM}/{CLIENT}]"'},
            )
        else:
            kind = "soap" if path == JOURNAL_ENTRY_POST_PATH else ("odata_read" if method == "GET" else "odata_write")
            fault = self._take_fault(kind)
            if fault is not None and fault.kind != "timeout_after_commit":
                answer = self._fault_answer(fault, kind)
            elif kind == "soap":
                answer = self._journal_entry(handler, method, body)
            else:
                answer = self._odata(handler, method, path, query, body)
            if fault is not None and fault.kind == "timeout_after_commit":
                record.status, record.committed = answer.status, answer.committed
                time.sleep(self.hang_seconds)
        record.status, record.committed = answer.status, answer.committed
        try:
            handler.send_response(answer.status)
            handler.send_header("Content-Type", answer.content_type)
            handler.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(answer.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped waiting (a timeout after commit)

    def _take_fault(self, kind: str) -> _Fault | None:
        with self._lock:
            for index, fault in enumerate(self._faults):
                if fault.on in (kind, "any") or (fault.on == "write" and kind in ("soap", "odata_write")):
                    return self._faults.pop(index)
        return None

    def _fault_answer(self, fault: _Fault, kind: str) -> _Answer:
        if fault.kind == "429":
            return _Answer(
                429,
                b"Too Many Requests",
                "text/plain",
                {"Retry-After": str(self.retry_after)},
            )
        if fault.kind == "503":
            return _Answer(503, b"<html><body>Service Unavailable</body></html>", "text/html", {"Retry-After": "1"})
        if kind == "soap":
            return _soap_fault(
                "Server",
                "Web service processing error; more details in the web service error log on provider side "
                f"(UTC timestamp {datetime.datetime.now(datetime.UTC):%Y%m%d%H%M%S}; Transaction ID "
                f"{uuid.uuid4().hex.upper()})",
            )
        return _odata_error(500, "/IWBEP/CM_MGW_RT/004", "Internal server error", "API_BUSINESS_PARTNER")

    # -- authentication -------------------------------------------------------------------

    def _authenticated(self, authorization: str) -> bool:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "basic":
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            return not self.credentials_refused and decoded == f"{USERNAME}:{PASSWORD}"
        if scheme.lower() == "bearer":
            with self._lock:
                expiry = self._tokens.get(value.strip())
            return expiry is not None and time.monotonic() < expiry
        return False

    def _token(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> _Answer:
        if method != "POST":
            return _Answer(405, b"", "text/plain")
        fault = self._take_fault("token")
        if fault is not None and fault.kind in ("429", "503"):
            return self._fault_answer(fault, "token")
        form = dict(parse_qsl(body.decode()))
        scheme, _, value = handler.headers.get("Authorization", "").partition(" ")
        client = ("", "")
        if scheme.lower() == "basic":
            try:
                user, _, secret = base64.b64decode(value.strip()).decode().partition(":")
                client = (user, secret)
            except (binascii.Error, UnicodeDecodeError):
                client = ("", "")
        elif form.get("client_id"):
            client = (form.get("client_id", ""), form.get("client_secret", ""))
        if form.get("grant_type") != "client_credentials":
            return _json_answer(400, {"error": "unsupported_grant_type", "error_description": "Unsupported grant type"})
        if self.credentials_refused or client != (CLIENT_ID, CLIENT_SECRET):
            return _json_answer(401, {"error": "invalid_client", "error_description": "Bad credentials"})
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime
            self.tokens_issued += 1
        return _json_answer(
            200,
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": int(self.token_lifetime),
                "scope": "uaa.resource",
                "jti": uuid.uuid4().hex,
            },
        )

    def _session(self, handler: BaseHTTPRequestHandler) -> str:
        cookie = SimpleCookie()
        try:
            cookie.load(handler.headers.get("Cookie", ""))
        except Exception:  # noqa: BLE001 - a malformed cookie header is no session
            return ""
        morsel = cookie.get(SESSION_COOKIE)
        return morsel.value if morsel is not None else ""

    # -- OData ----------------------------------------------------------------------------

    def _odata(
        self, handler: BaseHTTPRequestHandler, method: str, path: str, query: dict[str, str], body: bytes
    ) -> _Answer:
        service = "API_BUSINESS_PARTNER" if path.startswith(BP_SERVICE) else "API_OPLACCTGDOCITEMCUBE_SRV"
        if method == "GET" and handler.headers.get("x-csrf-token", "").lower() == "fetch":
            with self._lock:
                session = self._session(handler)
                headers: dict[str, str] = {}
                if session not in self._sessions:
                    session = secrets.token_hex(16).upper()
                    self._sessions[session] = secrets.token_urlsafe(18)
                    headers["Set-Cookie"] = f"{SESSION_COOKIE}={session}; path=/; HttpOnly"
                token = self._sessions[session]
            answer = self._odata_read(path, query, service) if not path.endswith("/") else _service_document(service)
            answer.headers.update(headers)
            answer.headers["x-csrf-token"] = token
            return answer
        if method == "GET":
            return self._odata_read(path, query, service)
        with self._lock:
            session = self._session(handler)
            valid = session in self._sessions and self._sessions[session] == handler.headers.get("x-csrf-token")
        if not valid:
            return _Answer(403, b"CSRF token validation failed", "text/plain", {"x-csrf-token": "Required"})
        if "json" not in handler.headers.get("Content-Type", ""):
            return _odata_error(415, "/IWBEP/CM_MGW_RT/013", "Content type not supported", service)
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            return _odata_error(400, "/IWBEP/CM_MGW_RT/021", "Malformed JSON in the request body", service)
        if not isinstance(payload, dict):
            return _odata_error(400, "/IWBEP/CM_MGW_RT/021", "The request body is not an entity", service)
        entity = path.removeprefix(BP_SERVICE + "/")
        if method == "POST" and entity == "A_BusinessPartner":
            return self._create_partner(payload)
        if method == "POST" and entity == "A_CustomerCompany":
            return self._create_customer_company(payload)
        match = re.fullmatch(r"A_BusinessPartner\('([^']*)'\)", entity)
        if method == "PATCH" and match:
            return self._update_partner(match.group(1), payload, handler.headers.get("If-Match"))
        return _odata_error(405, "/IWBEP/CM_MGW_RT/020", f"Method {method} not allowed for {entity}", service)

    def _odata_read(self, path: str, query: dict[str, str], service: str) -> _Answer:
        if query.get("$format") != "json":
            return _Answer(
                200,
                b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"/>',
                "application/atom+xml",
            )
        entity = path.removeprefix(BP_SERVICE + "/").removeprefix(ITEM_SERVICE + "/")
        try:
            filters = _parse_filter(query.get("$filter", ""))
        except _SchemaError as exc:
            return _odata_error(400, "/IWBEP/CM_MGW_RT/022", str(exc), service)
        with self._lock:
            if entity == "A_BusinessPartner":
                rows = [self._partner_json(p, set(query.get("$expand", "").split(","))) for p in self.partners.values()]
                known = set(BP_PROPERTIES) | {"BusinessPartner", "Customer"}
            elif entity == ITEM_ENTITY:
                rows = [dict(row) for entry in self.entries for row in entry.rows]
                known = set(ITEM_PROPERTIES)
            else:
                match = re.fullmatch(r"A_BusinessPartner\('([^']*)'\)", entity)
                if match and match.group(1) in self.partners:
                    partner = self._partner_json(
                        self.partners[match.group(1)], set(query.get("$expand", "").split(","))
                    )
                    return _json_answer(200, {"d": partner})
                if match:
                    return _odata_error(
                        404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{entity}'", service
                    )
                return _odata_error(404, "/IWBEP/CM_MGW_RT/021", f"Resource not found for segment '{entity}'", service)
        for name, _, _ in filters:
            if name not in known:
                return _odata_error(400, "/IWBEP/CM_MGW_RT/022", f"Property '{name}' not found in type", service)
        rows = [row for row in rows if all((str(row.get(n, "")) == v) == (op == "eq") for n, op, v in filters)]
        if "$select" in query:
            fields = [name for name in query["$select"].split(",") if name]
            unknown = [name for name in fields if name not in known]
            if unknown:
                return _odata_error(400, "/IWBEP/CM_MGW_RT/022", f"Property '{unknown[0]}' not found in type", service)
            rows = [
                {"__metadata": row.get("__metadata", {}), **{name: row.get(name) for name in fields}} for row in rows
            ]
        skip = int(query.get("$skip", "0"))
        top = min(int(query.get("$top", str(self.page_size))), self.page_size)
        page: dict[str, Any] = {"results": rows[skip : skip + top]}
        if skip + top < len(rows):
            page["__next"] = f"{self.url}{path}?$skiptoken={skip + top}"
        return _json_answer(200, {"d": page})

    def _new_partner(
        self, number: str, values: dict[str, Any], *, roles: list[str], companies: dict[str, dict[str, str]]
    ) -> dict[str, Any]:
        partner = {name: "" for name in BP_PROPERTIES}
        partner.update({k: v for k, v in values.items() if k in BP_PROPERTIES})
        partner.update(
            {
                "BusinessPartner": number,
                "Customer": number if "FLCU01" in roles or "FLCU00" in roles else "",
                "roles": roles,
                "addresses": [],
                "companies": companies,
                "changed": time.time_ns(),
            }
        )
        return partner

    def _partner_json(self, partner: dict[str, Any], expand: set[str]) -> dict[str, Any]:
        number = partner["BusinessPartner"]
        uri = f"{self.url}{BP_SERVICE}/A_BusinessPartner('{number}')"
        result: dict[str, Any] = {
            "__metadata": {
                "id": uri,
                "uri": uri,
                "type": "API_BUSINESS_PARTNER.A_BusinessPartnerType",
                "etag": f"W/\"datetimeoffset'{partner['changed']}'\"",
            },
            **{name: partner[name] for name in BP_PROPERTIES},
            "BusinessPartner": number,
            "Customer": partner["Customer"],
            "BusinessPartnerFullName": " ".join(
                part for part in (partner["OrganizationBPName1"], partner["OrganizationBPName2"]) if part
            ),
        }
        result["to_BusinessPartnerRole"] = (
            {"results": [{"BusinessPartner": number, "BusinessPartnerRole": role} for role in partner["roles"]]}
            if "to_BusinessPartnerRole" in expand
            else {"__deferred": {"uri": f"{uri}/to_BusinessPartnerRole"}}
        )
        result["to_BusinessPartnerAddress"] = (
            {"results": partner["addresses"]}
            if "to_BusinessPartnerAddress" in expand
            else {"__deferred": {"uri": f"{uri}/to_BusinessPartnerAddress"}}
        )
        if "to_Customer" in expand or "to_Customer/to_CustomerCompany" in expand:
            customer: dict[str, Any] | None = None
            if partner["Customer"]:
                customer = {"Customer": partner["Customer"]}
                customer["to_CustomerCompany"] = (
                    {
                        "results": [
                            {"Customer": partner["Customer"], "CompanyCode": code, **values}
                            for code, values in partner["companies"].items()
                        ]
                    }
                    if "to_Customer/to_CustomerCompany" in expand
                    else {"__deferred": {"uri": f"{self.url}{BP_SERVICE}/A_Customer('{number}')/to_CustomerCompany"}}
                )
            result["to_Customer"] = customer
        else:
            result["to_Customer"] = {"__deferred": {"uri": f"{uri}/to_Customer"}}
        return result

    def _create_partner(self, payload: dict[str, Any]) -> _Answer:
        service = "API_BUSINESS_PARTNER"
        try:
            _check_properties(
                "A_BusinessPartnerType",
                payload,
                BP_PROPERTIES,
                {"to_BusinessPartnerAddress", "to_BusinessPartnerRole", "to_BusinessPartnerTax", "to_Customer"},
            )
            addresses = _results(payload, "to_BusinessPartnerAddress")
            for address in addresses:
                _check_properties("A_BusinessPartnerAddressType", address, ADDRESS_PROPERTIES, {"to_EmailAddress"})
                for email in _results(address, "to_EmailAddress"):
                    _check_properties("A_AddressEmailAddressType", email, EMAIL_PROPERTIES, set())
            roles = _results(payload, "to_BusinessPartnerRole")
            for role in roles:
                _check_properties("A_BusinessPartnerRoleType", role, ROLE_PROPERTIES, set())
            for tax in _results(payload, "to_BusinessPartnerTax"):
                _check_properties("A_BusinessPartnerTaxNumberType", tax, TAX_PROPERTIES, set())
            customer = payload.get("to_Customer") or {}
            if not isinstance(customer, dict):
                raise _SchemaError("Navigation property 'to_Customer' expects an entity")
            _check_properties("A_CustomerType", customer, {"CustomerAccountGroup": 4}, {"to_CustomerCompany"})
            companies = _results(customer, "to_CustomerCompany")
            for company in companies:
                _check_properties("A_CustomerCompanyType", company, CUSTOMER_COMPANY_PROPERTIES, set())
        except _SchemaError as exc:
            return _odata_error(400, "/IWBEP/CM_MGW_RT/021", str(exc), service)
        # The application's own checks, in the business partner's words.
        if payload.get("BusinessPartnerCategory") not in ("1", "2", "3"):
            return _odata_error(400, "R11/142", "Enter a valid business partner category", service)
        if payload["BusinessPartnerCategory"] == "2" and not payload.get("OrganizationBPName1"):
            return _odata_error(400, "R11/401", "Enter a name for the organization", service)
        for address in addresses:
            if not address.get("Country"):
                return _odata_error(400, "AM/216", "Enter a country for the address", service)
        role_codes = [str(role.get("BusinessPartnerRole")) for role in roles]
        for code in role_codes:
            if code not in CUSTOMER_ROLES:
                return _odata_error(400, "R11/205", f"Role {code} does not exist", service)
        if companies and not {"FLCU00", "FLCU01"} & set(role_codes):
            return _odata_error(400, "CVI_EI/030", "Customer data requires a customer role", service)
        for company in companies:
            if company.get("CompanyCode") not in COMPANIES:
                return _odata_error(400, "F2/013", f"Company code {company.get('CompanyCode')} does not exist", service)
            account = company.get("ReconciliationAccount") or RECONCILIATION_ACCOUNT
            if account not in GL_ACCOUNTS:
                return _odata_error(400, "F2/204", f"Reconciliation account {account} does not exist", service)
        with self._lock:
            number = str(next(self._partner_numbers))
            partner = self._new_partner(
                number,
                payload,
                roles=role_codes,
                companies={
                    str(c["CompanyCode"]): {
                        "ReconciliationAccount": str(c.get("ReconciliationAccount") or RECONCILIATION_ACCOUNT),
                        "PaymentTerms": str(c.get("PaymentTerms") or ""),
                    }
                    for c in companies
                },
            )
            partner["addresses"] = [
                {
                    "BusinessPartner": number,
                    "AddressID": str(index),
                    **{k: v for k, v in a.items() if k in ADDRESS_PROPERTIES},
                    "to_EmailAddress": {"results": _results(a, "to_EmailAddress")},
                }
                for index, a in enumerate(addresses, start=1)
            ]
            self.partners[number] = partner
            body = self._partner_json(
                partner, {"to_BusinessPartnerRole", "to_BusinessPartnerAddress", "to_Customer/to_CustomerCompany"}
            )
        answer = _json_answer(201, {"d": body})
        answer.headers["Location"] = body["__metadata"]["uri"]
        answer.committed = True
        return answer

    def _create_customer_company(self, payload: dict[str, Any]) -> _Answer:
        service = "API_BUSINESS_PARTNER"
        try:
            _check_properties("A_CustomerCompanyType", payload, CUSTOMER_COMPANY_PROPERTIES, set())
        except _SchemaError as exc:
            return _odata_error(400, "/IWBEP/CM_MGW_RT/021", str(exc), service)
        with self._lock:
            partner = next((p for p in self.partners.values() if p["Customer"] == payload.get("Customer")), None)
            if partner is None:
                return _odata_error(400, "F2/003", f"Customer {payload.get('Customer')} does not exist", service)
            code = str(payload.get("CompanyCode") or "")
            if code not in COMPANIES:
                return _odata_error(400, "F2/013", f"Company code {code} does not exist", service)
            if code in partner["companies"]:
                return _odata_error(
                    400, "F2/102", f"Customer {partner['Customer']} already exists in company code {code}", service
                )
            partner["companies"][code] = {
                "ReconciliationAccount": str(payload.get("ReconciliationAccount") or RECONCILIATION_ACCOUNT),
                "PaymentTerms": str(payload.get("PaymentTerms") or ""),
            }
            partner["changed"] = time.time_ns()
        answer = _json_answer(
            201, {"d": {"Customer": partner["Customer"], "CompanyCode": code, **partner["companies"][code]}}
        )
        answer.committed = True
        return answer

    def _update_partner(self, number: str, payload: dict[str, Any], if_match: str | None) -> _Answer:
        service = "API_BUSINESS_PARTNER"
        with self._lock:
            partner = self.partners.get(number)
            if partner is None:
                return _odata_error(
                    404,
                    "/IWBEP/CM_MGW_RT/020",
                    f"Resource not found for segment 'A_BusinessPartner('{number}')'",
                    service,
                )
            etag = f"W/\"datetimeoffset'{partner['changed']}'\""
            if not if_match:
                return _odata_error(428, "/IWBEP/CM_MGW_RT/084", "Precondition required: send If-Match", service)
            if if_match not in ("*", etag):
                return _odata_error(412, "/IWBEP/CM_MGW_RT/085", "Precondition failed: the entity was changed", service)
            try:
                _check_properties("A_BusinessPartnerType", payload, BP_PROPERTIES, set())
            except _SchemaError as exc:
                return _odata_error(400, "/IWBEP/CM_MGW_RT/021", str(exc), service)
            partner.update(payload)
            partner["changed"] = time.time_ns()
        return _Answer(204, b"", "text/plain", committed=True)

    # -- journal entries ------------------------------------------------------------------

    def _journal_entry(self, handler: BaseHTTPRequestHandler, method: str, body: bytes) -> _Answer:
        if method != "POST":
            return _Answer(405, b"", "text/plain")
        if "text/xml" not in handler.headers.get("Content-Type", ""):
            return _Answer(415, b"Unsupported Media Type: SOAP 1.1 wants text/xml", "text/plain")
        if handler.headers.get("SOAPAction", "").strip('"') != SOAP_ACTION:
            return _soap_fault("Client", "The SOAP action does not name an operation of this service")
        try:
            root = ET.fromstring(body)
        except ET.ParseError as exc:
            return _soap_fault("Client", f"XML parsing error: {exc}")
        request = root.find(f"{{{SOAP_ENV}}}Body/{{{SFIN}}}JournalEntryBulkCreateRequest")
        if root.tag != f"{{{SOAP_ENV}}}Envelope" or request is None:
            return _soap_fault("Client", "Operation not found: the body holds no JournalEntryBulkCreateRequest")
        try:
            _validate(request, "Bulk", "JournalEntryBulkCreateRequest")
        except _SchemaError as exc:
            return _soap_fault("Client", f"Error during deserialization: {exc}")
        message = request.findtext("MessageHeader/UUID") or ""
        with self._lock:
            if message and message in self._messages:
                return _Answer(200, self._messages[message], "text/xml; charset=utf-8")
            confirmations = [self._post_entry(item) for item in request.findall("JournalEntryCreateRequest")]
            answer = _confirmation(message, confirmations)
            if message:
                self._messages[message] = answer
        committed = any(key for key, _ in confirmations)
        return _Answer(200, answer, "text/xml; charset=utf-8", committed=committed)

    def _post_entry(self, request: ET.Element) -> tuple[str, list[tuple[str, int, str]]]:
        """Check and post one journal entry: (``<document><company><year>`` or "", log items)."""
        journal = request.find("JournalEntry")
        assert journal is not None  # the schema requires it
        company = journal.findtext("CompanyCode") or ""
        posting_date = datetime.date.fromisoformat(journal.findtext("PostingDate") or "")
        document_type = journal.findtext("AccountingDocumentType") or ""
        errors: list[tuple[str, int, str]] = []
        if company not in COMPANIES:
            errors.append(("165(F5)", 3, f"Company code {company} does not exist"))
        if document_type not in DOCUMENT_TYPES:
            errors.append(("814(F5)", 3, f"Document type {document_type} is not defined"))
        if (company, posting_date.year, posting_date.month) in self.closed_periods:
            errors.append(("201(F5)", 3, f"Posting period {posting_date.month:03d} {posting_date.year} is not open"))
        rows: list[dict[str, Any]] = []
        currencies: set[str] = set()
        for element in journal:
            if element.tag not in ("Item", "DebtorItem", "ProductTaxItem"):
                continue
            amount_element = element.find("AmountInTransactionCurrency")
            assert amount_element is not None
            amount = Decimal(amount_element.text or "0")
            currencies.add(amount_element.get("currencyCode", ""))
            debit_credit = element.findtext("DebitCreditCode") or ("S" if amount > 0 else "H")
            if amount == 0 or (amount > 0) != (debit_credit == "S"):
                errors.append(("312(F5)", 3, f"Amount {amount} and debit/credit indicator {debit_credit} do not match"))
            row: dict[str, Any] = {
                "FinancialAccountType": "S",
                "Customer": "",
                "GLAccount": "",
                "TaxCode": "",
                "TransactionTypeDetermination": "",
                "AssignmentReference": element.findtext("AssignmentReference") or "",
                "DocumentItemText": element.findtext("DocumentItemText") or "",
                "DebitCreditCode": debit_credit,
                "AmountInTransactionCurrency": str(amount),
                "CostCenter": element.findtext("AccountAssignment/CostCenter") or "",
                "ProfitCenter": element.findtext("AccountAssignment/ProfitCenter") or "",
                "WBSElement": element.findtext("AccountAssignment/WBSElement") or "",
                "NetDueDate": None,
            }
            if element.tag == "Item":
                account = element.findtext("GLAccount") or ""
                tax_code = element.findtext("Tax/TaxCode") or ""
                if account not in GL_ACCOUNTS:
                    errors.append(("009(F5)", 3, f"G/L account {account} is not defined in chart of accounts YCOA"))
                if tax_code and tax_code not in TAX_CODES:
                    errors.append(("713(FF)", 3, f"Tax code {tax_code} is not defined for country US"))
                row.update(GLAccount=account, TaxCode=tax_code)
            elif element.tag == "DebtorItem":
                debtor = element.findtext("Debtor") or ""
                partner = next((p for p in self.partners.values() if p["Customer"] == debtor), None)
                if partner is None or company not in partner["companies"]:
                    errors.append(("152(F5)", 3, f"Customer {debtor} is not defined in company code {company}"))
                    reconciliation = RECONCILIATION_ACCOUNT
                else:
                    reconciliation = partner["companies"][company]["ReconciliationAccount"]
                row.update(FinancialAccountType="D", Customer=debtor, GLAccount=reconciliation)
                baseline = element.findtext("CashDiscountTerms/DueCalculationBaseDate")
                days = element.findtext("CashDiscountTerms/NetPaymentDays")
                if baseline and days:
                    due = datetime.date.fromisoformat(baseline) + datetime.timedelta(days=int(days.strip("-PD")))
                    row["NetDueDate"] = _odata_date(due)
            else:
                tax_code = element.findtext("TaxCode") or ""
                if tax_code not in TAX_CODES:
                    errors.append(("713(FF)", 3, f"Tax code {tax_code} is not defined for country US"))
                    account = ""
                else:
                    account = TAX_CODES[tax_code][0]
                row.update(GLAccount=account, TaxCode=tax_code, TransactionTypeDetermination="MWS")
            rows.append(row)
        if len(currencies) > 1:
            errors.append(("151(F5)", 3, "All items of a document must be in one currency"))
        currency = next(iter(currencies), COMPANIES.get(company, ""))
        balance = sum((Decimal(row["AmountInTransactionCurrency"]) for row in rows), Decimal(0))
        if balance != 0:
            errors.append(("702(F5)", 3, f"Balance in transaction currency {currency}: {balance}"))
        if not rows:
            errors.append(("701(F5)", 3, "The document has no items"))
        if errors:
            errors.append(("609(RW)", 3, f"Error in document: BKPFF $ {SYSTEM}CLNT{CLIENT}"))
            return "", errors
        year = str(posting_date.year)
        prefix = DOCUMENT_TYPES[document_type]
        counter = self._numbers.setdefault((company, year, prefix), itertools.count(1))
        document = f"{prefix}{next(counter):08d}"
        entry = PostedEntry(
            company,
            year,
            document,
            document_type,
            journal.findtext("DocumentReferenceID") or "",
            journal.findtext("DocumentHeaderText") or "",
            posting_date,
            currency,
            request.findtext("MessageHeader/UUID") or "",
            journal.findtext("CreatedByUser") or "",
        )
        for index, row in enumerate(rows, start=1):
            entry.rows.append(
                {
                    "__metadata": {
                        "type": f"API_OPLACCTGDOCITEMCUBE_SRV.{ITEM_ENTITY}Type",
                        "uri": f"{ITEM_SERVICE}/{ITEM_ENTITY}(CompanyCode='{company}',FiscalYear='{year}',"
                        f"AccountingDocument='{document}',AccountingDocumentItem='{index:03d}')",
                    },
                    "CompanyCode": company,
                    "FiscalYear": year,
                    "AccountingDocument": document,
                    "AccountingDocumentItem": f"{index:03d}",
                    "AccountingDocumentType": document_type,
                    "DocumentReferenceID": entry.reference,
                    "AccountingDocumentHeaderText": entry.header_text,
                    "PostingDate": _odata_date(posting_date),
                    "DocumentDate": _odata_date(datetime.date.fromisoformat(journal.findtext("DocumentDate") or "")),
                    "TransactionCurrency": currency,
                    "AmountInCompanyCodeCurrency": row["AmountInTransactionCurrency"],
                    "CompanyCodeCurrency": COMPANIES[company],
                    "IsReversal": False,
                    "IsReversed": False,
                    **row,
                }
            )
        self.entries.append(entry)
        return f"{document}{company}{year}", [
            ("605(RW)", 1, f"Document posted successfully: BKPFF {document}{company}{year} {SYSTEM}CLNT{CLIENT}")
        ]


# -- helpers -------------------------------------------------------------------------------------


def _validate(element: ET.Element, type_name: str, path: str) -> None:
    spec = SCHEMA[type_name]
    children = list(element)
    index = 0
    for name, low, high, kind in spec:
        count = 0
        while index < len(children) and children[index].tag == name and (high is None or count < high):
            _check_value(children[index], kind, f"{path}/{name}")
            count += 1
            index += 1
        if count < low:
            raise _SchemaError(f"element '{name}' is missing in {path}")
    if index < len(children):
        raise _SchemaError(f"element '{children[index].tag}' is not expected in {path} at this position")


def _check_value(element: ET.Element, kind: Any, path: str) -> None:
    if isinstance(kind, str) and kind in SCHEMA:
        if (element.text or "").strip():
            raise _SchemaError(f"{path} holds text where elements are expected")
        _validate(element, kind, path)
        return
    if len(element):
        raise _SchemaError(f"{path} is a value and cannot hold elements")
    text = element.text or ""
    if isinstance(kind, tuple):
        base, limit = kind
        value = " ".join(text.split()) if base == "token" else text
        if base == "token" and not value:
            raise _SchemaError(f"{path} must not be empty")
        if len(value) > limit:
            raise _SchemaError(f"{path} is longer than {limit} characters: '{value}'")
        return
    if not _PATTERNS[kind].match(text.strip()):
        raise _SchemaError(f"'{text}' is not a valid {kind} in {path}")
    if kind == "amount":
        code = element.get("currencyCode")
        if not code or len(code) != 3:
            raise _SchemaError(f"{path} needs the attribute currencyCode (3 letters)")
        try:
            Decimal(text)
        except InvalidOperation as exc:
            raise _SchemaError(f"'{text}' is not a decimal in {path}") from exc
    if kind == "date":
        try:
            datetime.date.fromisoformat(text)
        except ValueError as exc:
            raise _SchemaError(f"'{text}' is not a date in {path}") from exc


def _confirmation(message: str, confirmations: list[tuple[str, list[tuple[str, int, str]]]]) -> bytes:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = []
    worst_overall = 1
    for key, items in confirmations:
        worst = max(severity for _, severity, _ in items)
        worst_overall = max(worst_overall, worst)
        document, company, year = (key[:10], key[10:14], key[14:]) if key else ("0000000000", "", "0000")
        log_items = "".join(
            f"<Item><TypeID>{escape(type_id)}</TypeID><SeverityCode>{severity}</SeverityCode>"
            f"<Note>{escape(note)}</Note></Item>"
            for type_id, severity, note in items
        )
        parts.append(
            "<JournalEntryCreateConfirmation>"
            f"<MessageHeader><UUID>{uuid.uuid4()}</UUID><ReferenceUUID>{escape(message)}</ReferenceUUID>"
            f"<CreationDateTime>{now}</CreationDateTime></MessageHeader>"
            "<JournalEntryCreateConfirmation>"
            f"<AccountingDocument>{document}</AccountingDocument><CompanyCode>{escape(company)}</CompanyCode>"
            f"<FiscalYear>{year}</FiscalYear></JournalEntryCreateConfirmation>"
            f"<Log><MaximumLogItemSeverityCode>{worst}</MaximumLogItemSeverityCode>{log_items}</Log>"
            "</JournalEntryCreateConfirmation>"
        )
    return (
        '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/"><soap-env:Header/>'
        f'<soap-env:Body><n0:JournalEntryBulkCreateConfirmation xmlns:n0="{SFIN}">'
        f"<MessageHeader><UUID>{uuid.uuid4()}</UUID><ReferenceUUID>{escape(message)}</ReferenceUUID>"
        f"<CreationDateTime>{now}</CreationDateTime></MessageHeader>"
        "<ConfirmationInterfaceOrignName>JournalEntryCreateRequestConfirmation_In</ConfirmationInterfaceOrignName>"
        + "".join(parts)
        + f"<Log><MaximumLogItemSeverityCode>{worst_overall}</MaximumLogItemSeverityCode></Log>"
        "</n0:JournalEntryBulkCreateConfirmation></soap-env:Body></soap-env:Envelope>"
    ).encode()


def _soap_fault(code: str, text: str) -> _Answer:
    body = (
        '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/"><soap-env:Header/>'
        f"<soap-env:Body><soap-env:Fault><faultcode>soap-env:{code}</faultcode>"
        f'<faultstring xml:lang="en">{escape(text)}</faultstring><detail/></soap-env:Fault></soap-env:Body>'
        "</soap-env:Envelope>"
    ).encode()
    return _Answer(500, body, "text/xml; charset=utf-8")


def _json_answer(status: int, payload: Any) -> _Answer:
    return _Answer(status, json.dumps(payload).encode(), "application/json; charset=utf-8")


def _odata_error(status: int, code: str, message: str, service: str) -> _Answer:
    transaction = uuid.uuid4().hex.upper()
    return _json_answer(
        status,
        {
            "error": {
                "code": code,
                "message": {"lang": "en", "value": message},
                "innererror": {
                    "application": {
                        "component_id": "LO-MD-BP" if service == "API_BUSINESS_PARTNER" else "FI-GL",
                        "service_namespace": "/SAP/",
                        "service_id": service,
                        "service_version": "0001",
                    },
                    "transactionid": transaction,
                    "timestamp": datetime.datetime.now(datetime.UTC).strftime("%Y%m%d%H%M%S.%f"),
                    "errordetails": [
                        {"code": code, "message": message, "propertyref": "", "severity": "error", "target": ""}
                    ],
                },
            }
        },
    )


def _service_document(service: str) -> _Answer:
    sets = ["A_BusinessPartner", "A_CustomerCompany"] if service == "API_BUSINESS_PARTNER" else [ITEM_ENTITY]
    return _json_answer(200, {"d": {"EntitySets": sets}})


def _odata_date(value: datetime.date) -> str:
    epoch = datetime.datetime(value.year, value.month, value.day, tzinfo=datetime.UTC).timestamp()
    return f"/Date({int(epoch) * 1000})/"


def _parse_filter(expression: str) -> list[tuple[str, str, str]]:
    """``Name eq 'value' and Name ne 'value'`` (the part of $filter the simulator knows)."""
    if not expression.strip():
        return []
    clauses = []
    for clause in re.split(r"\s+and\s+", expression.strip()):
        match = re.fullmatch(r"\s*(\w+)\s+(eq|ne)\s+'((?:[^']|'')*)'\s*", clause)
        if match is None:
            raise _SchemaError(f"Invalid filter expression: '{clause}'")
        clauses.append((match.group(1), match.group(2), match.group(3).replace("''", "'")))
    return clauses


def _check_properties(type_name: str, values: dict[str, Any], properties: dict[str, int], navigation: set[str]) -> None:
    for name, value in values.items():
        if name in navigation:
            continue
        if name not in properties:
            raise _SchemaError(f"Property '{name}' is invalid for type API_BUSINESS_PARTNER.{type_name}")
        if not isinstance(value, str):
            raise _SchemaError(f"Property '{name}' of type Edm.String has an invalid value")
        if len(value) > properties[name]:
            raise _SchemaError(f"Property '{name}' is longer than {properties[name]} characters")


def _results(values: dict[str, Any], navigation: str) -> list[dict[str, Any]]:
    """A to-many navigation property in a deep insert: ``{"results": [...]}``."""
    if navigation not in values:
        return []
    container = values[navigation]
    if not isinstance(container, dict) or not isinstance(container.get("results"), list):
        raise _SchemaError(f"Navigation property '{navigation}' expects {{\"results\": [...]}}")
    items = container["results"]
    if not all(isinstance(item, dict) for item in items):
        raise _SchemaError(f"Navigation property '{navigation}' holds something that is not an entity")
    return items
