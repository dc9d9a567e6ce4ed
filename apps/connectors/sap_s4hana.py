"""SAP S/4HANA Cloud: customers as business partners (OData v2, ``API_BUSINESS_PARTNER``) and every
hub document as a journal entry posted through the synchronous SOAP service *Journal Entry - Post*
(``JournalEntryCreateRequestConfirmation_In``, communication scenario SAP_COM_0002), read back
through the OData service *Operational Journal Entry Item - Read* (``API_OPLACCTGDOCITEMCUBE_SRV``).
The tenant's communication arrangements must grant the communication user (or OAuth client) all
three: SAP_COM_0008 (business partners), SAP_COM_0002 (journal entry posting) and the scenario
that exposes the journal entry item read service; a service not granted answers 403, which parks
postings for engineers (``ConfigurationError``).

Settings (``ERPConnection.settings``, secrets as ``env:`` references):

- ``base_url``: the tenant's API host, e.g. ``https://my123456-api.s4hana.cloud.sap``.
- ``auth``: ``basic`` (default; the communication user's ``username`` and ``password``) or
  ``oauth`` (OAuth 2.0 client credentials: ``token_url``, ``client_id``, ``client_secret``).
- ``timeout``: seconds to wait for an answer (default 60; connecting waits at most 10).
- ``sap_client``: the ``sap-client`` query parameter, where the tenant needs one.
- ``document_types``: overrides of the accounting document types, by hub document: ``invoice``
  (default DR), ``credit_memo`` (DG), ``payment`` (DZ), ``adjustment`` (DA: write-offs and credit
  applied between a customer's items), ``journal`` (SA: disputes).
- ``created_by_user``: the journal entries' ``CreatedByUser`` (default: the communication user).
- ``reconciliation_account``: the receivables reconciliation account set when a customer is
  extended to a company code (SAP's default for the customer account group otherwise).
- ``bp_grouping``: the ``BusinessPartnerGrouping`` of new business partners (SAP's default otherwise).
- ``default_country``: the country of a customer billing gives no address for (default ``US``).
- ``language``: the correspondence language of new business partners (default ``EN``).

Mappings: ``company`` (required: the SAP company code of each legal entity); revenue accounts,
the payment journal (the G/L account incoming cash is posted to, e.g. a bank clearing account),
the write-off method (the bad-debt G/L account), the disputed-funds and dispute-loss accounts are
G/L account numbers; tax codes are SAP tax codes (two characters). Dimensions ``cost_center``,
``business_unit`` (as profit center) and ``project`` (as WBS element) go on profit-and-loss lines.

How each hub document is booked (amounts signed: a debit is positive, a credit negative):

- invoice (DR): the customer's item (``DebtorItem``) for the total, the revenue lines
  (``Item``, with their tax code) and one ``ProductTaxItem`` per tax code; billing's due date
  becomes the item's net payment days.
- credit note (DG): the same, reversed.
- payment (DZ): the payment journal's G/L account debited, the customer credited.
- refund of a credit note (DZ): the customer debited, the payment journal's account credited.
- void (of an invoice or a credit note): a reversal entry, every item of the original with the
  opposite sign, read back through OData.
- write-off (DA): the bad-debt account debited, the customer credited.
- unapplied cash (DZ): like a payment, on an item of its own; credit applied later (DA) moves
  the amount between the customer's items.
- dispute movements (SA): between the payment journal's account, the disputed-funds account and
  the dispute-loss account; the customer is never touched.

Every item of the customer that concerns one invoice (the invoice itself, its payments, credit
notes and their refunds, a write-off, credit applied, a void) carries the invoice's clearing key
as its ``AssignmentReference``: that is the invoice's open item, which SAP's automatic clearing
groups by assignment, and what the connector reads to refuse an overpayment or a void after
payment.

Exactly once (``dedupe_strategy``): SAP keeps no reference longer than 16 characters on a
journal entry and 20 on a business partner, so the hub writes a key derived from its external
reference (``reference_key``: ``HUB`` and a base32 SHA-256 prefix) into ``DocumentReferenceID``
(journal entries) and ``BusinessPartnerIDByExtSystem`` (business partners), and looks it up
before creating anything. A journal entry's ``MessageHeader`` UUIDs are derived from the same
reference (UUID version 5), so SAP's idempotent message handling answers a repeated request with
the first confirmation instead of posting twice. A journal entry is posted whole or not at all,
so found means done.

Outcomes: a connection refused, 429, 502, 503 and 504 are transient (nothing was done); a read
timeout or a dropped connection after sending a write, and a SOAP server fault, are uncertain; a
401 renews the OAuth token once (basic credentials refused: ``AuthenticationError``); an OData
write refused with 403 "CSRF token validation failed" fetches a new token once; SAP's error log
items on a journal entry and OData application errors are business refusals in SAP's own words;
a SOAP client fault or an OData framework error (``/IWBEP/``) is the hub's own mistake.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import logging
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

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
    REFUND_SUFFIX,
    ERPConnector,
)
from apps.connectors.documents import (
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
from apps.connectors.http import connection_refused, retry_after
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from apps.core.money import CurrencyError, exponent_for, to_decimal

log = logging.getLogger(__name__)

BUSINESS_PARTNER_SERVICE = "/sap/opu/odata/sap/API_BUSINESS_PARTNER"
JOURNAL_ITEM_SERVICE = "/sap/opu/odata/sap/API_OPLACCTGDOCITEMCUBE_SRV"
JOURNAL_ITEM_ENTITY = "A_OperationalAcctgDocItemCube"
JOURNAL_ENTRY_POST_PATH = "/sap/bc/srt/scs_ext/sap/journalentrycreaterequestconfi"
SOAP_ACTION = (
    "http://sap.com/xi/SAPSCORE/SFIN/JournalEntryCreateRequestConfirmation_In/"
    "JournalEntryCreateRequestConfirmation_InRequest"
)
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SFIN = "http://sap.com/xi/SAPSCORE/SFIN"
ET.register_namespace("soapenv", SOAP_ENV)
ET.register_namespace("sfin", SFIN)

# The namespace of the hub's message UUIDs (UUID version 5 over the external reference).
MESSAGE_NAMESPACE = uuid.UUID("6f1c2b9e-52a4-4c1e-9a53-5a1f0e2d7c41")
CUSTOMER_ROLES = ("FLCU00", "FLCU01")  # FI customer, customer
NO_DOCUMENT = "0000000000"
ERROR_SEVERITY = 3
DOCUMENT_REFERENCE_LENGTH = 16  # DocumentReferenceID (XBLNR)
ASSIGNMENT_LENGTH = 18  # AssignmentReference (ZUONR)
PARTNER_REFERENCE_LENGTH = 20  # BusinessPartnerIDByExtSystem (BPEXT)
DEFAULT_DOCUMENT_TYPES = {"invoice": "DR", "credit_memo": "DG", "payment": "DZ", "adjustment": "DA", "journal": "SA"}
DEBTOR = "D"
OUTPUT_TAX = "MWS"  # TransactionTypeDetermination of an output tax item
# What the connector reads of a journal entry's items.
ITEM_FIELDS = (
    "CompanyCode",
    "FiscalYear",
    "AccountingDocument",
    "AccountingDocumentItem",
    "AccountingDocumentType",
    "DocumentReferenceID",
    "FinancialAccountType",
    "Customer",
    "GLAccount",
    "TaxCode",
    "TransactionTypeDetermination",
    "AssignmentReference",
    "DebitCreditCode",
    "AmountInTransactionCurrency",
    "TransactionCurrency",
    "CostCenter",
    "ProfitCenter",
    "WBSElement",
)
JOURNAL_OPERATIONS = frozenset(
    {
        OPERATION_POST_INVOICE,
        OPERATION_POST_CREDIT_MEMO,
        OPERATION_APPLY_PAYMENT,
        OPERATION_REFUND_CREDIT_MEMO,
        OPERATION_VOID_INVOICE,
        OPERATION_VOID_CREDIT_MEMO,
        OPERATION_WRITE_OFF,
        OPERATION_RECEIVE_ON_ACCOUNT,
        OPERATION_APPLY_CREDIT,
        *DISPUTE_MOVEMENTS,
    }
)


def reference_key(external_ref: str, length: int = DOCUMENT_REFERENCE_LENGTH) -> str:
    """The key the hub writes into SAP's short reference fields for ``external_ref``: ``HUB`` and
    the start of its SHA-256 in base32 (upper case, so SAP's case conversion cannot change it)."""
    digest = base64.b32encode(hashlib.sha256(external_ref.encode()).digest()).decode()
    return ("HUB" + digest)[:length]


def message_uuid(external_ref: str, part: str = "") -> str:
    """The MessageHeader UUID of the journal entry for ``external_ref``: the same on every retry."""
    return str(uuid.uuid5(MESSAGE_NAMESPACE, f"{part}|{external_ref}" if part else external_ref))


@dataclass(frozen=True)
class JournalKey:
    """A journal entry's key in SAP; the hub's ``erp_id`` is ``<company>/<document>/<year>``."""

    company_code: str
    document: str
    fiscal_year: str

    def __str__(self) -> str:
        return f"{self.company_code}/{self.document}/{self.fiscal_year}"

    @classmethod
    def parse(cls, erp_id: str) -> JournalKey:
        parts = str(erp_id).split("/")
        if len(parts) != 3 or not all(parts):
            raise ConfigurationError(f"{erp_id!r} is not an SAP journal entry id (<company>/<document>/<year>)")
        return cls(*parts)


@dataclass
class JournalLine:
    """One item of a journal entry. ``amount`` is signed: a debit is positive, a credit negative."""

    kind: str  # "gl" (Item), "debtor" (DebtorItem) or "tax" (ProductTaxItem)
    amount: Decimal
    account: str = ""  # the G/L account, or the customer of a debtor item
    text: str = ""
    assignment: str = ""
    tax_code: str = ""
    tax_base: Decimal = Decimal(0)  # a tax item's base, signed like its amount
    due: tuple[datetime.date, int] | None = None  # (baseline date, net payment days) of a debtor item
    cost_center: str = ""
    profit_center: str = ""
    wbs_element: str = ""


@dataclass
class JournalEntry:
    reference: str  # the hub's external reference
    document_type: str
    company_code: str
    currency: str
    posting_date: datetime.date
    header_text: str
    lines: list[JournalLine] = field(default_factory=list)


@dataclass
class _Found:
    """A journal entry read back from SAP: its key and its items."""

    key: JournalKey
    rows: list[dict[str, Any]]

    @property
    def document_type(self) -> str:
        return str(self.rows[0].get("AccountingDocumentType") or "")

    @property
    def debtor_rows(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row.get("FinancialAccountType") == DEBTOR]

    @property
    def receivable(self) -> Decimal:
        return sum((_amount(row) for row in self.debtor_rows), Decimal(0))

    @property
    def customer(self) -> str:
        return next((str(row.get("Customer") or "") for row in self.debtor_rows), "")

    @property
    def group(self) -> str:
        """The clearing key of the invoice this entry's customer item belongs to."""
        return next((str(row.get("AssignmentReference") or "") for row in self.debtor_rows), "")

    @property
    def currency(self) -> str:
        return str(self.rows[0].get("TransactionCurrency") or "")

    def result(self, action: str) -> PostResult:
        return PostResult(
            str(self.key),
            self.key.document,
            {
                "action": action,
                "company_code": self.key.company_code,
                "fiscal_year": self.key.fiscal_year,
                "document_type": self.document_type,
            },
        )


def _amount(row: dict[str, Any]) -> Decimal:
    return Decimal(str(row.get("AmountInTransactionCurrency") or "0"))


def _money(amount: Decimal, currency: str) -> str:
    try:
        places = exponent_for(currency)
    except CurrencyError:
        places = 2  # an ERP currency id that is not ISO 4217: SAP's own check refuses it if it must
    return str(amount.quantize(Decimal(1).scaleb(-places)))


def _header_text(kind: str, number: str) -> str:
    """DocumentHeaderText holds 25 characters: the billing number, with its kind when it fits."""
    text = f"{kind} {number}"
    return text if len(text) <= 25 else number[:25]


def _odata_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class _Unauthorized(Exception):
    pass


class _CsrfRefused(Exception):
    pass


class SapHttp:
    """One HTTP session to one tenant: authentication (basic or an OAuth token cached until it
    expires), the CSRF token and session cookies OData writes need, and the classification of
    transport failures."""

    def __init__(self, settings: dict[str, Any], pace: Callable[[], None]) -> None:
        self.base_url = str(settings["base_url"]).rstrip("/")
        timeout = float(settings.get("timeout", 60))
        self.timeout = (min(10.0, timeout), timeout)
        self.auth_mode = str(settings.get("auth") or "basic")
        self.username = str(settings.get("username") or "")
        self.password = str(settings.get("password") or "")
        self.token_url = str(settings.get("token_url") or "")
        self.client_id = str(settings.get("client_id") or "")
        self.client_secret = str(settings.get("client_secret") or "")
        self.sap_client = str(settings.get("sap_client") or "")
        self.pace = pace
        self.session = requests.Session()
        self._token = ""
        self._token_renew_at = 0.0
        self._csrf = ""
        self._lock = threading.Lock()

    # -- authentication ---------------------------------------------------------------------

    def _authorization(self) -> dict[str, str]:
        if self.auth_mode == "oauth":
            return {"Authorization": f"Bearer {self._bearer()}"}
        credentials = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {credentials}"}

    def _bearer(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._token_renew_at:
                return self._token
            self.pace()
            where = f"the OAuth token at {self.token_url}"
            try:
                response = self.session.post(
                    self.token_url,
                    data={"grant_type": "client_credentials"},
                    auth=(self.client_id, self.client_secret),
                    headers={"Accept": "application/json"},
                    timeout=self.timeout,
                )
            except requests.RequestException as exc:
                raise TransientError(f"could not get {where}: {exc}") from exc
            body = response.text
            if response.status_code in (400, 401, 403):
                raise AuthenticationError(
                    f"SAP refused the client credentials of {self.client_id!r}",
                    status=response.status_code,
                    body_excerpt=body,
                )
            if response.status_code != 200:
                raise TransientError(
                    f"SAP's token endpoint answered {response.status_code}",
                    status=response.status_code,
                    retry_after=retry_after(response.headers),
                    body_excerpt=body,
                )
            try:
                data = response.json()
                token = str(data["access_token"])
                lifetime = float(data.get("expires_in") or 3600)
            except (ValueError, KeyError) as exc:
                raise AuthenticationError("SAP's token endpoint answered without an access token") from exc
            # Renew a little before SAP's expiry, so a token never runs out between check and use.
            self._token, self._token_renew_at = token, time.monotonic() + lifetime - min(60.0, lifetime / 2)
            return token

    def _forget_token(self) -> None:
        with self._lock:
            self._token = ""

    # -- requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        writes: bool,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        csrf: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """Send once, renewing an expired OAuth token once and a refused CSRF token once."""
        renewed_token = renewed_csrf = False
        while True:
            try:
                return self._request_once(
                    method, path, writes=writes, params=params, headers=headers, csrf=csrf, **kwargs
                )
            except _Unauthorized as exc:
                if self.auth_mode != "oauth" or renewed_token:
                    who = self.client_id if self.auth_mode == "oauth" else self.username
                    raise AuthenticationError(f"SAP refused the credentials of {who!r} for {method} {path}") from exc
                renewed_token = True
                self._forget_token()
            except _CsrfRefused as exc:
                if renewed_csrf:
                    raise AuthenticationError(f"SAP refused a fresh CSRF token for {method} {path}") from exc
                renewed_csrf = True
                self._csrf = ""

    def _request_once(
        self,
        method: str,
        path: str,
        *,
        writes: bool,
        params: dict[str, str] | None,
        headers: dict[str, str] | None,
        csrf: bool,
        **kwargs: Any,
    ) -> requests.Response:
        all_headers = {**self._authorization(), **(headers or {})}
        if csrf:
            all_headers["x-csrf-token"] = self._csrf_token(path)
        response = self._send(method, path, writes=writes, params=params, headers=all_headers, **kwargs)
        if response.status_code == 401:
            raise _Unauthorized(response.text[:200])
        if (
            csrf
            and response.status_code == 403
            and (
                response.headers.get("x-csrf-token", "").lower() == "required"
                or "csrf token validation failed" in response.text.lower()
            )
        ):
            raise _CsrfRefused()
        return response

    def _csrf_token(self, path: str) -> str:
        """SAP binds the token to the session cookies it sets with it (the session keeps them)."""
        if not self._csrf:
            service = path.split("/A_", 1)[0].rstrip("/") + "/"
            response = self._send(
                "GET",
                service,
                writes=False,
                params=None,
                headers={**self._authorization(), "x-csrf-token": "Fetch", "Accept": "application/json"},
            )
            if response.status_code == 401:
                raise _Unauthorized(response.text[:200])
            token = response.headers.get("x-csrf-token", "")
            if response.status_code != 200 or not token or token.lower() == "required":
                _raise_for_transport(response, f"fetching a CSRF token from {service}", writes=False)
                raise ConfigurationError(
                    f"SAP gave no CSRF token for {service}", status=response.status_code, body_excerpt=response.text
                )
            self._csrf = token
        return self._csrf

    def _send(
        self,
        method: str,
        path: str,
        *,
        writes: bool,
        params: dict[str, str] | None,
        headers: dict[str, str],
        **kwargs: Any,
    ) -> requests.Response:
        self.pace()
        query = dict(params or {})
        if self.sap_client:
            query["sap-client"] = self.sap_client
        url = f"{self.base_url}{path}"
        if query:
            # OData wants spaces as %20 in $filter (a '+' is not a space to every gateway).
            url += "?" + urlencode(query, quote_via=quote, safe="$,/'()*")
        where = f"{method} {path}"
        try:
            return self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise TransientError(f"could not connect for {where}: {exc}") from exc
        except requests.ConnectionError as exc:
            if connection_refused(exc) or not writes:
                raise TransientError(f"connection failed for {where}: {exc}") from exc
            raise UncertainOutcome(f"connection dropped after sending {where}: {exc}") from exc
        except requests.Timeout as exc:
            if not writes:
                raise TransientError(f"no answer in {self.timeout[1]}s for {where}") from exc
            raise UncertainOutcome(f"no answer in {self.timeout[1]}s for {where}; SAP may have done it") from exc

    def close(self) -> None:
        self.session.close()


def _raise_for_transport(response: requests.Response, where: str, *, writes: bool) -> None:
    """The statuses that mean the same for every SAP API: throttled, busy, not found, failed."""
    status, body = response.status_code, response.text
    if status == 429:
        raise TransientError(
            f"SAP throttled {where}", status=status, retry_after=retry_after(response.headers), body_excerpt=body
        )
    if status in (502, 503, 504):
        raise TransientError(
            f"SAP was unavailable for {where}",
            status=status,
            retry_after=retry_after(response.headers),
            body_excerpt=body,
        )
    if status == 403:
        raise ConfigurationError(
            f"SAP forbade {where}: the communication arrangement does not grant it",
            status=status,
            body_excerpt=body,
        )
    if status == 404:
        raise ConfigurationError(f"SAP has no service behind {where}", status=status, body_excerpt=body)
    if status >= 500:
        if writes:
            raise UncertainOutcome(f"SAP failed answering {where}", status=status, body_excerpt=body)
        raise TransientError(f"SAP failed answering {where}", status=status, body_excerpt=body)


def _odata_error(response: requests.Response, where: str) -> Exception:
    """An OData 4xx: a framework error (/IWBEP/: the request's shape) is the hub's mistake; an
    application message is SAP refusing the data, in its own words."""
    try:
        error = response.json().get("error") or {}
    except ValueError:
        error = {}
    code = str(error.get("code") or "")
    message = error.get("message")
    text = str(message.get("value") if isinstance(message, dict) else message or response.text[:300])
    if not code or code.startswith("/IWBEP/") or response.status_code in (405, 406, 412, 415, 428):
        return ConfigurationError(
            f"SAP refused {where}: {code} {text}".strip(), status=response.status_code, body_excerpt=response.text
        )
    return BusinessRuleError(
        "erp_rejected",
        f"SAP refused it: {text}",
        f"{where}: {code} {text}",
        status=response.status_code,
        body_excerpt=response.text,
        params={"erp_message": text, "erp_code": code},
    )


def build_journal_entry_request(entry: JournalEntry, created_by: str, now: datetime.datetime) -> bytes:
    """The SOAP envelope of ``JournalEntryBulkCreateRequest`` for one journal entry, elements in
    the order of the service's WSDL (an XSD sequence)."""
    envelope = ET.Element(f"{{{SOAP_ENV}}}Envelope")
    ET.SubElement(envelope, f"{{{SOAP_ENV}}}Header")
    body = ET.SubElement(envelope, f"{{{SOAP_ENV}}}Body")
    bulk = ET.SubElement(body, f"{{{SFIN}}}JournalEntryBulkCreateRequest")
    stamp = now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0Z")
    _message_header(bulk, message_uuid(entry.reference, "bulk"), stamp)
    request = ET.SubElement(bulk, "JournalEntryCreateRequest")
    _message_header(request, message_uuid(entry.reference), stamp)
    journal = ET.SubElement(request, "JournalEntry")
    currency = entry.currency
    _text(journal, "OriginalReferenceDocumentType", "BKPFF")
    _text(journal, "BusinessTransactionType", "RFBU")
    _text(journal, "AccountingDocumentType", entry.document_type)
    _text(journal, "DocumentReferenceID", reference_key(entry.reference))
    _text(journal, "DocumentHeaderText", entry.header_text[:25])
    _text(journal, "CreatedByUser", created_by[:12])
    _text(journal, "CompanyCode", entry.company_code)
    _text(journal, "DocumentDate", entry.posting_date.isoformat())
    _text(journal, "PostingDate", entry.posting_date.isoformat())
    if any(line.tax_code for line in entry.lines):
        _text(journal, "TaxDeterminationDate", entry.posting_date.isoformat())
    numbered = list(enumerate(entry.lines, start=1))
    for number, line in numbered:
        if line.kind == "gl":
            item = ET.SubElement(journal, "Item")
            _text(item, "ReferenceDocumentItem", str(number))
            _text(item, "GLAccount", line.account)
            _amount_element(item, "AmountInTransactionCurrency", line.amount, currency)
            _text(item, "DebitCreditCode", "S" if line.amount > 0 else "H")
            _text(item, "DocumentItemText", line.text[:50])
            _text(item, "AssignmentReference", line.assignment)
            if line.tax_code:
                tax = ET.SubElement(item, "Tax")
                _text(tax, "TaxCode", line.tax_code)
            if line.profit_center or line.cost_center or line.wbs_element:
                assignment = ET.SubElement(item, "AccountAssignment")
                _text(assignment, "ProfitCenter", line.profit_center)
                _text(assignment, "CostCenter", line.cost_center)
                _text(assignment, "WBSElement", line.wbs_element)
    for number, line in numbered:
        if line.kind == "debtor":
            item = ET.SubElement(journal, "DebtorItem")
            _text(item, "ReferenceDocumentItem", str(number))
            _text(item, "Debtor", line.account)
            _amount_element(item, "AmountInTransactionCurrency", line.amount, currency)
            _text(item, "DebitCreditCode", "S" if line.amount > 0 else "H")
            _text(item, "DocumentItemText", line.text[:50])
            _text(item, "AssignmentReference", line.assignment)
            if line.due is not None:
                terms = ET.SubElement(item, "CashDiscountTerms")
                _text(terms, "DueCalculationBaseDate", line.due[0].isoformat())
                _text(terms, "NetPaymentDays", f"P{max(line.due[1], 0)}D")
    for number, line in numbered:
        if line.kind == "tax":
            item = ET.SubElement(journal, "ProductTaxItem")
            _text(item, "ReferenceDocumentItem", str(number))
            _text(item, "TaxCode", line.tax_code)
            _amount_element(item, "AmountInTransactionCurrency", line.amount, currency)
            _text(item, "DebitCreditCode", "S" if line.amount > 0 else "H")
            _amount_element(item, "TaxBaseAmountInTransCrcy", line.tax_base, currency)
    return ET.tostring(envelope, encoding="utf-8", xml_declaration=True)


def _message_header(parent: ET.Element, message_id: str, stamp: str) -> None:
    header = ET.SubElement(parent, "MessageHeader")
    _text(header, "ID", message_id.replace("-", "").upper())
    _text(header, "UUID", message_id)
    _text(header, "CreationDateTime", stamp)


def _text(parent: ET.Element, tag: str, value: str) -> None:
    if value:
        ET.SubElement(parent, tag).text = value


def _amount_element(parent: ET.Element, tag: str, amount: Decimal, currency: str) -> None:
    element = ET.SubElement(parent, tag, {"currencyCode": currency})
    element.text = _money(amount, currency)


@dataclass(frozen=True)
class _LogItem:
    severity: int
    note: str
    type_id: str


def _parse_confirmation(body: bytes) -> tuple[JournalKey | None, list[_LogItem]]:
    root = ET.fromstring(body)
    confirmation = root.find(f"{{{SOAP_ENV}}}Body/{{{SFIN}}}JournalEntryBulkCreateConfirmation")
    if confirmation is None:
        raise ValueError("no JournalEntryBulkCreateConfirmation in the answer")
    entry = confirmation.find("JournalEntryCreateConfirmation")
    logs = [
        log for log in (entry.find("Log") if entry is not None else None, confirmation.find("Log")) if log is not None
    ]
    items = [
        _LogItem(int(item.findtext("SeverityCode") or "0"), item.findtext("Note") or "", item.findtext("TypeID") or "")
        for log in logs
        for item in log.findall("Item")
    ]
    worst = max(
        [int(log.findtext("MaximumLogItemSeverityCode") or "0") for log in logs] + [i.severity for i in items] + [0]
    )
    posted = entry.find("JournalEntryCreateConfirmation") if entry is not None else None
    if posted is None or worst >= ERROR_SEVERITY:
        return None, items
    document = posted.findtext("AccountingDocument") or ""
    if not document or document == NO_DOCUMENT:
        return None, items
    return JournalKey(posted.findtext("CompanyCode") or "", document, posted.findtext("FiscalYear") or ""), items


class S4HanaConnector(ERPConnector):
    kind: ClassVar[str] = "sap_s4hana"
    dedupe_strategy: ClassVar[str] = (
        "A key derived from the hub's reference is written to DocumentReferenceID (journal entries) and "
        "BusinessPartnerIDByExtSystem (business partners) and looked up before every create; a journal entry's "
        "MessageHeader UUID is derived from the same reference, so SAP answers a repeated request with the first "
        "confirmation."
    )
    required_mappings: ClassVar[frozenset[str]] = frozenset({"company"})

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        required = ["base_url"]
        if str(settings.get("auth") or "basic") == "oauth":
            required += ["token_url", "client_id", "client_secret"]
        else:
            required += ["username", "password"]
        missing = [key for key in required if not settings.get(key)]
        if missing:
            raise ConfigurationError(f"SAP S/4HANA connection settings lack {', '.join(missing)}")
        self.http = SapHttp(settings, self.pace)
        self.document_types = {**DEFAULT_DOCUMENT_TYPES, **(settings.get("document_types") or {})}
        self.created_by = str(settings.get("created_by_user") or settings.get("username") or "HUBINTEGR")[:12]
        self.reconciliation_account = str(settings.get("reconciliation_account") or "")
        self.bp_grouping = str(settings.get("bp_grouping") or "")
        self.default_country = str(settings.get("default_country") or "US")
        self.language = str(settings.get("language") or "EN")

    # -- lookups --------------------------------------------------------------------------

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        if operation == OPERATION_ENSURE_CUSTOMER:
            partner = self._find_partner(external_ref)
            return self._partner_result(partner, "found") if partner else None
        if operation in JOURNAL_OPERATIONS:
            found = self._find_entry(external_ref)
            return found.result("found") if found else None
        raise ConfigurationError(f"the SAP S/4HANA connector does not know the operation {operation!r}")

    def _odata_get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        response = self.http.request(
            "GET", path, writes=False, params={**params, "$format": "json"}, headers={"Accept": "application/json"}
        )
        where = f"GET {path}"
        _raise_for_transport(response, where, writes=False)
        if response.status_code != 200:
            raise _odata_error(response, where)
        try:
            return response.json()["d"]  # type: ignore[no-any-return]
        except (ValueError, KeyError) as exc:
            raise TransientError(f"SAP answered {where} with something that is not OData JSON") from exc

    def _journal_rows(self, **filters: str) -> list[dict[str, Any]]:
        path = f"{JOURNAL_ITEM_SERVICE}/{JOURNAL_ITEM_ENTITY}"
        params = {
            "$filter": " and ".join(f"{name} eq {_odata_literal(value)}" for name, value in filters.items()),
            "$select": ",".join(ITEM_FIELDS),
            "$top": "500",
        }
        rows: list[dict[str, Any]] = []
        skip = 0
        while True:
            page = self._odata_get(path, {**params, "$skip": str(skip)} if skip else params)
            results = list(page.get("results") or [])
            rows.extend(results)
            if not page.get("__next") or not results:
                return rows
            skip += len(results)

    @staticmethod
    def _entries(rows: Iterable[dict[str, Any]]) -> list[_Found]:
        grouped: dict[JournalKey, list[dict[str, Any]]] = defaultdict(list)
        for row in rows:
            key = JournalKey(str(row["CompanyCode"]), str(row["AccountingDocument"]), str(row["FiscalYear"]))
            grouped[key].append(row)
        return [_Found(key, items) for key, items in sorted(grouped.items(), key=lambda kv: str(kv[0]))]

    def _find_entry(self, external_ref: str) -> _Found | None:
        found = self._entries(self._journal_rows(DocumentReferenceID=reference_key(external_ref)))
        if len(found) > 1:
            log.warning(
                "more than one SAP journal entry carries one hub reference",
                extra={"reference": external_ref, "entries": [str(f.key) for f in found]},
            )
        return found[0] if found else None

    def _read_entry(self, erp_id: str, what: str) -> _Found:
        key = JournalKey.parse(erp_id)
        found = self._entries(
            self._journal_rows(
                CompanyCode=key.company_code, AccountingDocument=key.document, FiscalYear=key.fiscal_year
            )
        )
        if not found:
            raise BusinessRuleError(
                "erp_rejected",
                f"SAP no longer holds journal entry {key.document} ({what}) in company code {key.company_code}. "
                "Check whether it was reversed or archived in SAP, then link or skip this posting.",
                f"no items for {key}",
                params={"erp_message": f"journal entry {key} not found"},
            )
        return found[0]

    def _group_open(self, company_code: str, group: str) -> Decimal:
        """What is still open on an invoice: the sum of the customer items carrying its clearing key."""
        if not group:
            return Decimal(0)
        rows = self._journal_rows(CompanyCode=company_code, AssignmentReference=group, FinancialAccountType=DEBTOR)
        return sum((_amount(row) for row in rows), Decimal(0))

    # -- customers ------------------------------------------------------------------------

    def _find_partner(self, external_ref: str) -> dict[str, Any] | None:
        partner_key = reference_key(external_ref, PARTNER_REFERENCE_LENGTH)
        page = self._odata_get(
            f"{BUSINESS_PARTNER_SERVICE}/A_BusinessPartner",
            {
                "$filter": f"BusinessPartnerIDByExtSystem eq {_odata_literal(partner_key)}",
                "$expand": "to_Customer/to_CustomerCompany",
                "$top": "2",
            },
        )
        results = page.get("results") or []
        return results[0] if results else None

    @staticmethod
    def _partner_companies(partner: dict[str, Any]) -> set[str]:
        customer = partner.get("to_Customer") or {}
        companies = (customer.get("to_CustomerCompany") or {}).get("results") or []
        return {str(company.get("CompanyCode")) for company in companies}

    @staticmethod
    def _partner_result(partner: dict[str, Any], action: str) -> PostResult:
        number = str(partner.get("BusinessPartner") or "")
        customer = str(partner.get("Customer") or (partner.get("to_Customer") or {}).get("Customer") or number)
        return PostResult(customer, number, {"action": action, "business_partner": number})

    def ensure_customer(self, doc: CustomerDocument) -> PostResult:
        company = self._company_code(doc.dimensions, f"customer {doc.name or doc.external_ref}")
        names = self._names(doc.name or doc.external_ref)
        partner = self._find_partner(doc.external_ref)
        if partner is None:
            partner = self._create_partner(doc, company, names)
            return self._partner_result(partner, "created")
        action = "unchanged"
        if company not in self._partner_companies(partner):
            self._extend_to_company(self._partner_result(partner, "").erp_id, company, doc.correlation_id)
            action = "extended to company code"
        if (
            str(partner.get("OrganizationBPName1") or "") != names[0]
            or str(partner.get("OrganizationBPName2") or "") != names[1]
        ):
            self._rename_partner(partner, names, doc.correlation_id)
            action = "updated"
        return self._partner_result(partner, action)

    @staticmethod
    def _names(name: str) -> tuple[str, str]:
        return name[:40], name[40:80]

    def _create_partner(self, doc: CustomerDocument, company: str, names: tuple[str, str]) -> dict[str, Any]:
        address = doc.bill_to
        street: dict[str, Any] = {
            "Country": (address.country or self.default_country).upper()[:3],
            "Language": self.language,
        }
        for name, value, limit in (
            ("CityName", address.city, 40),
            ("PostalCode", address.postal_code, 10),
            ("Region", address.state, 3),
            ("StreetName", address.line1, 60),
            ("StreetSuffixName", address.line2, 40),
        ):
            if value:
                street[name] = value[:limit]
        if doc.email:
            street["to_EmailAddress"] = {"results": [{"EmailAddress": doc.email[:241]}]}
        company_values: dict[str, str] = {"CompanyCode": company}
        if self.reconciliation_account:
            company_values["ReconciliationAccount"] = self.reconciliation_account
        body: dict[str, Any] = {
            "BusinessPartnerCategory": "2",  # an organization
            "OrganizationBPName1": names[0],
            "SearchTerm1": names[0][:20].upper(),
            "BusinessPartnerIDByExtSystem": reference_key(doc.external_ref, PARTNER_REFERENCE_LENGTH),
            "CorrespondenceLanguage": self.language,
            "to_BusinessPartnerAddress": {"results": [street]},
            "to_BusinessPartnerRole": {"results": [{"BusinessPartnerRole": role} for role in CUSTOMER_ROLES]},
            "to_Customer": {"to_CustomerCompany": {"results": [company_values]}},
        }
        if names[1]:
            body["OrganizationBPName2"] = names[1]
        if self.bp_grouping:
            body["BusinessPartnerGrouping"] = self.bp_grouping
        return self._odata_write("POST", f"{BUSINESS_PARTNER_SERVICE}/A_BusinessPartner", body, doc.correlation_id)

    def _extend_to_company(self, customer: str, company: str, correlation_id: str) -> None:
        body = {"Customer": customer, "CompanyCode": company}
        if self.reconciliation_account:
            body["ReconciliationAccount"] = self.reconciliation_account
        self._odata_write("POST", f"{BUSINESS_PARTNER_SERVICE}/A_CustomerCompany", body, correlation_id)

    def _rename_partner(self, partner: dict[str, Any], names: tuple[str, str], correlation_id: str) -> None:
        number = str(partner["BusinessPartner"])
        etag = str((partner.get("__metadata") or {}).get("etag") or "*")
        self._odata_write(
            "PATCH",
            f"{BUSINESS_PARTNER_SERVICE}/A_BusinessPartner({_odata_literal(number)})",
            {"OrganizationBPName1": names[0], "OrganizationBPName2": names[1]},
            correlation_id,
            extra_headers={"If-Match": etag},
        )

    def _odata_write(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        correlation_id: str,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": "application/json", **(extra_headers or {})}
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        response = self.http.request(method, path, writes=True, json=body, headers=headers, csrf=True)
        where = f"{method} {path}"
        _raise_for_transport(response, where, writes=True)
        if response.status_code == 204:
            return {}
        if response.status_code not in (200, 201):
            raise _odata_error(response, where)
        try:
            return response.json()["d"]  # type: ignore[no-any-return]
        except (ValueError, KeyError) as exc:
            raise UncertainOutcome(f"SAP answered {where} with something that is not OData JSON") from exc

    # -- journal entries ------------------------------------------------------------------

    def _company_code(self, dimensions: dict[str, str], what: str) -> str:
        company = (dimensions or {}).get("company", "")
        if not company:
            raise BusinessRuleError(
                "missing_company_mapping",
                f"No SAP company code is mapped for the legal entity of {what}. Add a company mapping for the legal "
                "entity on this connection, then retry.",
                "dimensions lack 'company'",
                params={"mapping_kind": "company dimension"},
            )
        return company

    def _post(self, entry: JournalEntry, correlation_id: str) -> JournalKey:
        debit = sum((line.amount for line in entry.lines if line.amount > 0), Decimal(0))
        credit = -sum((line.amount for line in entry.lines if line.amount < 0), Decimal(0))
        entry.lines = [line for line in entry.lines if line.amount != 0]
        if debit != credit or not entry.lines:
            raise BusinessRuleError(
                "amount_mismatch",
                f"The journal entry for {entry.header_text} does not balance ({debit} debit, {credit} credit "
                f"{entry.currency}) or has no amount, so SAP cannot post it. Check the document's lines and tax in "
                "billing.",
                f"unbalanced entry for {entry.reference}",
                params={"erp_total": str(credit), "billing_total": str(debit)},
            )
        self._check_identifiers(entry)
        payload = build_journal_entry_request(entry, self.created_by, datetime.datetime.now(datetime.UTC))
        headers = {
            "Content-Type": "text/xml; charset=utf-8",
            "SOAPAction": f'"{SOAP_ACTION}"',
            "Accept": "text/xml",
        }
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        where = f"the journal entry {entry.reference} ({entry.header_text})"
        response = self.http.request("POST", JOURNAL_ENTRY_POST_PATH, writes=True, data=payload, headers=headers)
        if response.status_code == 500 and _soap_fault_code(response.content).endswith("Client"):
            raise ConfigurationError(
                f"SAP refused the shape of {where}: {_soap_fault_text(response.content)}",
                status=500,
                body_excerpt=response.text,
            )
        _raise_for_transport(response, f"posting {where}", writes=True)
        if response.status_code != 200:
            raise UncertainOutcome(
                f"SAP answered {response.status_code} posting {where}",
                status=response.status_code,
                body_excerpt=response.text,
            )
        try:
            key, items = _parse_confirmation(response.content)
        except (ET.ParseError, ValueError) as exc:
            raise UncertainOutcome(
                f"SAP's answer to {where} cannot be read: {exc}", body_excerpt=response.text
            ) from exc
        if key is None:
            raise self._refusal(entry, items, response.text)
        return key

    @staticmethod
    def _check_identifiers(entry: JournalEntry) -> None:
        """SAP's field lengths: a mapping that cannot be an SAP identifier is named to finance
        instead of failing the whole request's schema."""
        for line in entry.lines:
            if line.kind == "gl" and not 0 < len(line.account) <= 10:
                raise BusinessRuleError(
                    "unmapped_revenue_account",
                    f"'{line.account}' cannot be an SAP G/L account (at most 10 characters). Correct the account "
                    "mapping, then retry.",
                    f"G/L account {line.account!r} too long",
                    params={"value": line.account},
                )
            if line.tax_code and len(line.tax_code) > 2:
                raise BusinessRuleError(
                    "unknown_tax_code",
                    f"'{line.tax_code}' cannot be an SAP tax code (two characters). Correct the tax code mapping, "
                    "then retry.",
                    f"tax code {line.tax_code!r} too long",
                    params={"value": line.tax_code},
                )

    @staticmethod
    def _refusal(entry: JournalEntry, items: list[_LogItem], body: str) -> BusinessRuleError:
        errors = [item for item in items if item.severity >= ERROR_SEVERITY] or items
        # SAP adds a generic "Error in document" item after the ones that name the cause.
        specific = [item for item in errors if not item.note.lower().startswith("error in document")] or errors
        message = " ".join(item.note.rstrip(".") + "." for item in specific) or "SAP refused the journal entry."
        params = {"erp_message": message}
        detail = f"journal entry {entry.reference} refused: " + "; ".join(f"{i.type_id} {i.note}" for i in errors)
        lowered = message.lower()
        if "period" in lowered or "fiscal year" in lowered:
            return BusinessRuleError(
                "closed_period",
                f"SAP refused the entry for {entry.header_text} dated {entry.posting_date.isoformat()}: {message} Ask "
                "the accountant to open the posting period in SAP, then retry.",
                detail,
                body_excerpt=body,
                params={**params, "date": entry.posting_date.isoformat()},
            )
        for line in entry.lines:
            if line.tax_code and "tax code" in lowered and line.tax_code in message:
                return BusinessRuleError(
                    "unknown_tax_code",
                    f"SAP does not accept tax code {line.tax_code}: {message} Correct the tax code mapping, then "
                    "retry.",
                    detail,
                    body_excerpt=body,
                    params={**params, "value": line.tax_code},
                )
            if line.kind == "gl" and line.account in message and "account" in lowered:
                return BusinessRuleError(
                    "unmapped_revenue_account",
                    f"SAP does not accept G/L account {line.account}: {message} Correct the account mapping, then "
                    "retry.",
                    detail,
                    body_excerpt=body,
                    params={**params, "value": line.account},
                )
        return BusinessRuleError(
            "erp_rejected",
            f"SAP refused the entry for {entry.header_text}: {message}",
            detail,
            body_excerpt=body,
            params=params,
        )

    def _assignments(self, dimensions: dict[str, str]) -> dict[str, str]:
        return {
            "cost_center": dimensions.get("cost_center", "")[:10],
            "profit_center": dimensions.get("business_unit", "")[:10],
            "wbs_element": dimensions.get("project", "")[:24],
        }

    def _document_type(self, kind: str) -> str:
        return str(self.document_types[kind])

    # -- invoices and credit notes --------------------------------------------------------

    def post_invoice(self, doc: InvoiceDocument) -> PostResult:
        return self._post_billing_document(doc, sign=1)

    def post_credit_memo(self, doc: CreditMemoDocument) -> PostResult:
        return self._post_billing_document(doc, sign=-1)

    def _post_billing_document(self, doc: InvoiceDocument | CreditMemoDocument, *, sign: int) -> PostResult:
        kind = "Invoice" if sign > 0 else "Credit note"
        currency = doc.erp_currency or doc.currency
        expected = sign * to_decimal(doc.total_minor, doc.currency)
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            if existing.receivable != expected:
                raise BusinessRuleError(
                    "amount_mismatch",
                    f"{kind} {doc.number} is already posted in SAP as journal entry {existing.key.document} for "
                    f"{existing.receivable} {currency}, but billing now says {expected}. Issue a credit note in "
                    "billing rather than changing a posted document.",
                    f"posted receivable {existing.receivable} != {expected}",
                    params={"erp_total": str(existing.receivable), "billing_total": str(expected)},
                )
            return existing.result("already posted")
        company = self._company_code(doc.dimensions, f"{kind.lower()} {doc.number}")
        if isinstance(doc, CreditMemoDocument):
            invoice = self._read_entry(doc.invoice_erp_id, f"invoice {doc.invoice_ref}")
            company, group = invoice.key.company_code, invoice.group
            document_type = self._document_type("credit_memo")
        else:
            group = reference_key(doc.external_ref, ASSIGNMENT_LENGTH)
            document_type = self._document_type("invoice")
        due = None
        if doc.due_date is not None:
            due = (doc.invoice_date, (doc.due_date - doc.invoice_date).days)
        lines = [
            JournalLine(
                "debtor",
                expected,
                doc.customer_erp_id,
                text=doc.external_ref,
                assignment=group,
                due=due if sign > 0 else None,
            )
        ]
        lines += self._revenue_lines(doc.lines, doc.currency, sign, doc.dimensions)
        entry = JournalEntry(
            doc.external_ref,
            document_type,
            company,
            currency,
            doc.invoice_date,
            _header_text(kind, doc.number),
            lines,
        )
        key = self._post(entry, doc.correlation_id)
        return PostResult(
            str(key),
            key.document,
            {
                "action": "posted",
                "company_code": key.company_code,
                "fiscal_year": key.fiscal_year,
                "document_type": document_type,
            },
        )

    def _revenue_lines(
        self, lines: Iterable[InvoiceLineDocument], currency: str, sign: int, dimensions: dict[str, str]
    ) -> list[JournalLine]:
        """Revenue items credited (an invoice) or debited (a credit note), and one tax item per tax code."""
        result: list[JournalLine] = []
        taxes: dict[str, tuple[Decimal, Decimal]] = {}
        for line in lines:
            amount = -sign * to_decimal(line.amount_minor, currency)
            result.append(
                JournalLine(
                    "gl",
                    amount,
                    line.revenue_account,
                    text=line.description,
                    tax_code=line.tax_code,
                    **self._assignments(dimensions),
                )
            )
            if line.tax_code:
                tax, base = taxes.get(line.tax_code, (Decimal(0), Decimal(0)))
                taxes[line.tax_code] = (tax - sign * to_decimal(line.tax_minor, currency), base + amount)
        for code, (tax, base) in taxes.items():
            result.append(JournalLine("tax", tax, tax_code=code, tax_base=base))
        return result

    # -- cash -----------------------------------------------------------------------------

    def apply_payment(self, doc: PaymentDocument) -> PostResult:
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            return existing.result("already applied")
        invoice = self._read_entry(doc.invoice_erp_id, f"invoice {doc.invoice_ref}")
        amount = to_decimal(doc.amount_minor, doc.currency)
        self._require_open(invoice, amount, doc.currency, "payment")
        currency = doc.erp_currency or doc.currency
        entry = JournalEntry(
            doc.external_ref,
            self._document_type("payment"),
            invoice.key.company_code,
            currency,
            doc.paid_on,
            f"Payment {invoice.key.document}",
            [
                JournalLine("gl", amount, doc.payment_journal, text=f"Payment {doc.method}".strip()),
                JournalLine(
                    "debtor", -amount, doc.customer_erp_id or invoice.customer, doc.external_ref, invoice.group
                ),
            ],
        )
        return self._posted(self._post(entry, doc.correlation_id), entry, "applied")

    def _require_open(self, invoice: _Found, amount: Decimal, currency: str, what: str) -> Decimal:
        open_amount = self._group_open(invoice.key.company_code, invoice.group)
        if amount > open_amount:
            raise BusinessRuleError(
                "overpayment",
                f"SAP journal entry {invoice.key.document} has {open_amount} {currency} open; the {what} of {amount} "
                f"{currency} does not fit. Check for a payment recorded by hand in SAP.",
                f"open {open_amount} on group {invoice.group} < {amount}",
                params={"erp_total": str(open_amount), "billing_total": str(amount)},
            )
        return open_amount

    def _posted(self, key: JournalKey, entry: JournalEntry, action: str) -> PostResult:
        return PostResult(
            str(key),
            key.document,
            {
                "action": action,
                "company_code": key.company_code,
                "fiscal_year": key.fiscal_year,
                "document_type": entry.document_type,
            },
        )

    def refund_credit_memo(self, doc: RefundDocument) -> PostResult:
        """Money paid back on a credit note: the customer's item debited, the payment journal's
        account credited, within the credited invoice's open item."""
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            return existing.result("already refunded")
        memo = self._read_entry(doc.credit_memo_erp_id, f"credit note {doc.credit_memo_ref}")
        amount = to_decimal(doc.amount_minor, doc.currency)
        owed = -self._group_open(memo.key.company_code, memo.group)
        if amount > owed:
            raise BusinessRuleError(
                "overrefund",
                f"Billing refunded {amount} {doc.currency} on credit note {doc.number or doc.credit_memo_ref}, but "
                f"SAP owes the customer {max(owed, Decimal(0))} on it. Look for a refund recorded by hand in SAP; "
                "link or skip this one.",
                f"owed {owed} on group {memo.group} < {amount}",
                params={"erp_total": str(max(owed, Decimal(0))), "billing_total": str(amount)},
            )
        entry = JournalEntry(
            doc.external_ref,
            self._document_type("payment"),
            memo.key.company_code,
            doc.erp_currency or doc.currency,
            doc.refunded_on,
            f"Refund {memo.key.document}",
            [
                JournalLine("debtor", amount, doc.customer_erp_id or memo.customer, doc.external_ref, memo.group),
                JournalLine("gl", -amount, doc.payment_journal, text=f"Refund of credit note {doc.number}".strip()),
            ],
        )
        return self._posted(self._post(entry, doc.correlation_id), entry, "refunded")

    def receive_on_account(self, doc: OnAccountDocument) -> PostResult:
        """Cash no invoice has taken: a customer item of its own (its own clearing key), so SAP
        shows it as the customer's credit."""
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            return existing.result("already received")
        company = self._company_code(doc.dimensions, f"payment {doc.payment_ref}")
        amount = to_decimal(doc.amount_minor, doc.currency)
        entry = JournalEntry(
            doc.external_ref,
            self._document_type("payment"),
            company,
            doc.erp_currency or doc.currency,
            doc.received_on,
            "Unapplied cash",
            [
                JournalLine("gl", amount, doc.payment_journal, text=f"Unapplied cash {doc.payment_ref}"),
                JournalLine(
                    "debtor",
                    -amount,
                    doc.customer_erp_id,
                    doc.external_ref,
                    reference_key(doc.external_ref, ASSIGNMENT_LENGTH),
                ),
            ],
        )
        return self._posted(self._post(entry, doc.correlation_id), entry, "received on account")

    def apply_credit(self, doc: PaymentDocument) -> PostResult:
        """Credit applied to an invoice: the amount moves from the customer's unapplied-cash item
        (the payment's ``:on-account`` reference) to the invoice's open item. No cash moves."""
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            return existing.result("already applied from credit")
        invoice = self._read_entry(doc.invoice_erp_id, f"invoice {doc.invoice_ref}")
        amount = to_decimal(doc.amount_minor, doc.currency)
        self._require_open(invoice, amount, doc.currency, "customer credit")
        payment_ref = doc.external_ref.rsplit(":", 1)[0]
        credit_group = reference_key(payment_ref + ON_ACCOUNT_SUFFIX, ASSIGNMENT_LENGTH)
        customer = doc.customer_erp_id or invoice.customer
        entry = JournalEntry(
            doc.external_ref,
            self._document_type("adjustment"),
            invoice.key.company_code,
            doc.erp_currency or doc.currency,
            doc.paid_on,
            f"Credit to {invoice.key.document}",
            [
                JournalLine("debtor", amount, customer, f"Credit used: {payment_ref}", credit_group),
                JournalLine("debtor", -amount, customer, doc.external_ref, invoice.group),
            ],
        )
        return self._posted(self._post(entry, doc.correlation_id), entry, "applied from credit")

    # -- voids and write-offs -------------------------------------------------------------

    def void_invoice(self, doc: VoidDocument) -> PostResult:
        """A reversal entry: every item of the invoice (or credit note) with the opposite sign,
        the customer's item in the same open item, so the receivable returns to what it was."""
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            return existing.result("already voided")
        original = self._read_entry(doc.invoice_erp_id, f"document {doc.invoice_ref}")
        what = f"{'credit note' if original.receivable < 0 else 'invoice'} {doc.number or doc.invoice_ref}"
        if original.receivable < 0:
            refunded = self._find_entry(doc.invoice_ref + REFUND_SUFFIX)
            applied = refunded is not None
        else:
            applied = self._group_open(original.key.company_code, original.group) != original.receivable
        if applied:
            raise BusinessRuleError(
                "void_after_payment",
                f"Billing {doc.why} {what}, but SAP journal entry {original.key.document} already has payments, "
                "refunds or credits recorded against it, so it cannot be reversed. Refund the payment in billing (or "
                "reverse it in SAP), then retry.",
                f"open item {original.group} of {original.key} has other items",
                params={"erp_number": original.key.document},
            )
        lines = self._reversal_lines(original)
        entry = JournalEntry(
            doc.external_ref,
            original.document_type,
            original.key.company_code,
            original.currency,
            doc.voided_on,
            f"Void {doc.number or original.key.document}",
            lines,
        )
        result = self._posted(self._post(entry, doc.correlation_id), entry, "voided")
        result.detail["reverses"] = str(original.key)
        return result

    @staticmethod
    def _reversal_lines(original: _Found) -> list[JournalLine]:
        lines: list[JournalLine] = []
        bases: dict[str, Decimal] = defaultdict(Decimal)
        for row in original.rows:
            amount = -_amount(row)
            if row.get("FinancialAccountType") == DEBTOR:
                lines.append(
                    JournalLine(
                        "debtor",
                        amount,
                        str(row.get("Customer") or ""),
                        f"Reversal of {original.key.document}",
                        str(row.get("AssignmentReference") or ""),
                    )
                )
            elif row.get("TransactionTypeDetermination") != OUTPUT_TAX:
                tax_code = str(row.get("TaxCode") or "")
                if tax_code:
                    bases[tax_code] += amount
                lines.append(
                    JournalLine(
                        "gl",
                        amount,
                        str(row.get("GLAccount") or ""),
                        f"Reversal of {original.key.document}",
                        tax_code=tax_code,
                        cost_center=str(row.get("CostCenter") or ""),
                        profit_center=str(row.get("ProfitCenter") or ""),
                        wbs_element=str(row.get("WBSElement") or ""),
                    )
                )
        for row in original.rows:
            if row.get("FinancialAccountType") != DEBTOR and row.get("TransactionTypeDetermination") == OUTPUT_TAX:
                code = str(row.get("TaxCode") or "")
                lines.append(JournalLine("tax", -_amount(row), tax_code=code, tax_base=bases.get(code, Decimal(0))))
        return lines

    def write_off(self, doc: WriteOffDocument) -> PostResult:
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            return existing.result("already written off")
        invoice = self._read_entry(doc.invoice_erp_id, f"invoice {doc.invoice_ref}")
        expected = to_decimal(doc.amount_minor, doc.currency)
        open_amount = self._group_open(invoice.key.company_code, invoice.group)
        if open_amount > expected:
            # Billing counts a payment SAP does not hold yet: its posting is on its way.
            raise LookupError(
                f"SAP journal entry {invoice.key.document} still has {open_amount} open, billing writes off "
                f"{expected}: waiting for a payment posting"
            )
        if open_amount < expected:
            raise BusinessRuleError(
                "write_off_amount_mismatch",
                f"Billing writes off {expected} {doc.currency} of invoice {doc.number or doc.invoice_ref}, but SAP "
                f"journal entry {invoice.key.document} has {open_amount} open. Check for a payment or credit recorded "
                "by hand in SAP, then retry or skip.",
                f"open {open_amount} on group {invoice.group} != {expected}",
                params={"erp_total": str(open_amount), "billing_total": str(expected)},
            )
        entry = JournalEntry(
            doc.external_ref,
            self._document_type("adjustment"),
            invoice.key.company_code,
            doc.erp_currency or doc.currency,
            doc.written_off_on,
            f"Write-off {invoice.key.document}",
            [
                JournalLine(
                    "gl",
                    expected,
                    doc.write_off_method,
                    text=(doc.reason or "Bad debt")[:50],
                    **self._assignments(doc.dimensions),
                ),
                JournalLine(
                    "debtor", -expected, doc.customer_erp_id or invoice.customer, doc.external_ref, invoice.group
                ),
            ],
        )
        return self._posted(self._post(entry, doc.correlation_id), entry, "written off")

    # -- disputes -------------------------------------------------------------------------

    def move_disputed_funds(self, doc: DisputeMovementDocument) -> PostResult:
        """A G/L entry; the invoice stays paid, so the customer is never touched."""
        existing = self._find_entry(doc.external_ref)
        if existing is not None:
            return existing.result(f"already {doc.movement}")
        company = self._company_code(doc.dimensions, f"dispute {doc.dispute_ref}")
        if doc.movement == "lost" and not doc.loss_account:
            raise ConfigurationError(f"a lost dispute needs a loss account: {doc.external_ref}")
        debit, credit = {
            "withdrawn": (doc.dispute_account, doc.payment_journal),
            "reinstated": (doc.payment_journal, doc.dispute_account),
            "lost": (doc.loss_account, doc.dispute_account),
        }[doc.movement]
        amount = to_decimal(doc.amount_minor, doc.currency)
        label = f"Dispute {doc.dispute_ref}: funds {doc.movement}"
        assignments = self._assignments(doc.dimensions) if doc.movement == "lost" else {}
        entry = JournalEntry(
            doc.external_ref,
            self._document_type("journal"),
            company,
            doc.erp_currency or doc.currency,
            doc.moved_on,
            f"Dispute {doc.movement}",
            [
                JournalLine("gl", amount, debit, text=label, **assignments),
                JournalLine("gl", -amount, credit, text=doc.external_ref),
            ],
        )
        return self._posted(self._post(entry, doc.correlation_id), entry, doc.movement)

    def close(self) -> None:
        self.http.close()


def _soap_fault(body: bytes) -> ET.Element | None:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    return root.find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")


def _soap_fault_code(body: bytes) -> str:
    fault = _soap_fault(body)
    return (fault.findtext("faultcode") or "") if fault is not None else ""


def _soap_fault_text(body: bytes) -> str:
    fault = _soap_fault(body)
    return (fault.findtext("faultstring") or "") if fault is not None else ""
