"""Microsoft Dynamics 365 Finance through its OData data entities, one legal entity (``dataAreaId``)
per document.

Transport: OData v4 at ``<base_url>/data/<EntitySet>`` with ``requests`` (one session per connector).
Every request asks for ``IEEE754Compatible=true``, so decimals and 64-bit ids travel as JSON
strings and never pass through a float. Every read sends ``cross-company=true``: without it D365
answers from the signed-in user's default company only, and a lookup in another legal entity would
find nothing and create a duplicate. Every record written carries ``dataAreaId`` = the document's
``company`` dimension (the ``company`` mapping is required).

Authentication: Microsoft Entra ID client credentials (``POST <authority>/<tenant>/oauth2/v2.0/token``,
scope ``<base_url>/.default``). The token is kept until shortly before ``expires_in`` runs out and
fetched again after; a 401 from D365 (token revoked or expired early) fetches a new one and sends
the request once more; a refused client secret is an ``AuthenticationError``. The grant is one
form POST, written here with ``requests`` rather than msal: msal refuses an authority that is not
https (the contract simulator is plain http on localhost), starts with an OpenID discovery call,
and keeps its own retry and throttling caches that would hide 429/5xx from the hub's error
taxonomy, where the executor decides about retries.

Duplicate prevention (``dedupe_strategy = "lookup"``): D365 has no idempotency key, so every
create is preceded by a ``$filter`` lookup on a natural key the connector writes:

- customers: ``CustomerAccount`` = ``customer_account_prefix`` + a digest of the hub's reference
  (D365 account numbers are at most 20 characters); D365 itself refuses a second record with the
  same account, so even a lost lookup race cannot make two customers;
- free text invoices and credit notes: ``CustomerReference`` = the hub's reference;
- customer payment journals (payments, refunds, unapplied cash, credit applied, write-offs) and
  general journals (dispute movements): the journal header's ``Description`` = the hub's reference.

A reference longer than those 60-character fields is kept as its first 27 characters, ``~`` and 32
hex digits of its sha256, the same every time.

Posting. The data entities create drafts: a free text invoice header with its lines, a journal
with its lines. Dynamics 365 publishes no standard OData action that posts them; posting is the
form's Post button or the periodic posting batch. The connector therefore works in one of two
modes (setting ``posting``):

- ``action`` (default): after creating the draft it calls a bound OData action on the header,
  ``<EntitySet>(<keys>)/Microsoft.Dynamics.DataEntities.<name>`` (``invoice_post_action``, default
  ``PostInvoice``, on ``FreeTextInvoiceHeaders``; ``journal_post_action``, default ``PostJournal``,
  on both journal header entities). These are one small X++ extension the D365 team deploys
  (methods with ``[SysODataActionAttribute(name, true)]`` that call the standard posting classes).
- ``batch``: the draft is left for D365's recurring posting batch; until that has run the
  connector answers "not yet" (a ``LookupError``: retried later without counting as an ERP failure),
  and then reports the posted document. Choose a batch recurrence shorter than the hub's retry span.

"Posted" means the same to every operation and to ``find_document``: the header's ``IsPosted`` is
``Yes``. A draft is never reported as done. A draft left by an interrupted call is reused when its
total is billing's, deleted and created again otherwise; a posted document with another total is
never changed (``amount_mismatch``).

How each billing event is written (mapping values are D365 identifiers):

- invoice: ``FreeTextInvoiceHeaders`` + ``FreeTextInvoiceLines`` (``MainAccountDisplayValue`` =
  revenue account mapping; ``SalesTaxGroupId``/``SalesTaxItemGroupId`` from the tax code mapping
  written ``<sales tax group>/<item sales tax group>``); D365 computes the tax, and the connector
  compares D365's total (line amounts + ``SalesTaxAmount``) with billing's before posting;
- credit note: a free text invoice with negative quantities (D365's own way); it stays open beside
  the invoice on the customer (settling the two is D365's settlement function, which no data
  entity reaches); the customer's balance is right either way;
- payment / refund: a customer payment journal line on the customer (credit / debit), offset by the
  bank account in the payment journal mapping, with ``MarkedInvoice`` = the invoice's (credit
  note's) posted number, so posting settles it;
- void: D365 does not cancel a posted invoice; it is reversed by a free text invoice with the
  lines negated (``CustomerReference`` = the void's reference). Refused when payments are marked
  to it (``void_after_payment``);
- write-off: a journal line crediting the customer, marked to the invoice, offset by the bad-debt
  main account (write-off method mapping), in ``write_off_journal_name``;
- unapplied cash: a journal line crediting the customer, offset by the bank, marked to nothing;
  credit applied later: one journal, debit the customer (unmarked) and credit it marked to the
  invoice, the same amount, so no cash moves and the invoice is settled;
- dispute movements: ``LedgerJournalHeaders`` + ``LedgerJournalLines`` (general journal): ledger
  and bank lines only, the receivable is not touched.

``find_document`` is given no legal entity: it looks across companies. A hub customer belongs to one
legal entity, so its account is found in one company; were the company mapping changed after a
customer was posted, the lookup could find it in the earlier one.

What is still open on an invoice is read from the entities the hub writes: the invoice's total
less the posted customer payment journal lines marked to it. A settlement made by hand in D365
outside those journals is not seen; the write-off then parks with its amounts for finance.

Financial dimensions go in ``DefaultDimensionDisplayValue``: the document's dimension values in the
order of the legal entity's dimension format for integrations (``dimension_format``: a list of hub
dimension names, or a dict of such lists by ``dataAreaId`` with ``default``), joined by
``dimension_delimiter`` (D365's default ``-``); a dimension the document lacks leaves its segment
empty.

Outcomes: connection refused, 429 (``Retry-After``), 502/503/504 → transient; a read timeout or a
connection dropped after sending a write → uncertain (the executor calls ``find_document`` first);
D365's refusals (a write failed with its Infolog, an X++ error raised while posting; D365 rolled
the transaction back) → business (``erp_rejected`` with D365's own words; the console classes a
period refusal as a closed period); any other 400 (a shape D365's OData layer does not accept) →
configuration (``schema_mismatch``); 401 after a fresh token, 403 → authentication.

Settings (``ERPConnection.settings``, secrets already resolved):
``base_url`` (``https://<env>.operations.dynamics.com``), ``tenant_id``, ``client_id``,
``client_secret`` (an ``env:`` reference), ``authority`` (default ``https://login.microsoftonline.com``),
``scope`` (default ``<base_url>/.default``), ``timeout`` (seconds, default 60), ``customer_group``
(required to create customers), ``customer_account_prefix`` (default ``HUB``), ``payment_journal_name``
(default ``CustPay``), ``write_off_journal_name`` (default: the payment journal name),
``general_journal_name`` (default ``GenJrn``), ``posting`` (``action`` or ``batch``),
``invoice_post_action``, ``journal_post_action``, ``dimension_format``, ``dimension_delimiter``.
The correlation id travels as ``X-Correlation-ID`` (D365 documents no client request-id header of
its own for OData).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

import requests

from apps.connectors.base import (
    DISPUTE_MOVEMENTS,
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
from apps.core.correlation import get_correlation_id
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from apps.core.money import to_decimal

log = logging.getLogger(__name__)

ODATA_JSON = "application/json;odata.metadata=minimal;IEEE754Compatible=true"
ACTION_NAMESPACE = "Microsoft.Dynamics.DataEntities"
KEY_FIELD_LENGTH = 60  # CustomerReference and journal Description in D365
ACCOUNT_LENGTH = 20  # CustAccount
YES = "Yes"

CUSTOMERS = "CustomersV3"
INVOICE_HEADERS = "FreeTextInvoiceHeaders"
INVOICE_LINES = "FreeTextInvoiceLines"
PAYMENT_HEADERS = "CustomerPaymentJournalHeaders"
PAYMENT_LINES = "CustomerPaymentJournalLines"
LEDGER_HEADERS = "LedgerJournalHeaders"
LEDGER_LINES = "LedgerJournalLines"

_CUSTOMER_JOURNAL_OPERATIONS = (
    OPERATION_APPLY_PAYMENT,
    OPERATION_REFUND_CREDIT_MEMO,
    OPERATION_WRITE_OFF,
    OPERATION_RECEIVE_ON_ACCOUNT,
    OPERATION_APPLY_CREDIT,
)


def natural_key(reference: str) -> str:
    """The hub's reference as D365 stores it in a 60-character field, the same every time."""
    if len(reference) <= KEY_FIELD_LENGTH:
        return reference
    return f"{reference[:27]}~{hashlib.sha256(reference.encode()).hexdigest()[:32]}"


def customer_account(reference: str, prefix: str = "HUB") -> str:
    """A D365 customer account (at most 20 characters) derived from the hub's customer reference."""
    digest = hashlib.sha256(reference.encode()).hexdigest().upper()
    return f"{prefix}{digest[: ACCOUNT_LENGTH - len(prefix)]}"


def odata_literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def odata_date(day: datetime.date) -> str:
    """A date as D365 stores it in an Edm.DateTimeOffset field (midday UTC keeps the day in any zone)."""
    return f"{day.isoformat()}T12:00:00Z"


def _excerpt(text: str, limit: int = 1500) -> str:
    return text[:limit]


def _amount(value: Any) -> Decimal:
    try:
        return Decimal(str(value if value is not None else "0"))
    except InvalidOperation as exc:
        raise ConfigurationError(
            f"Dynamics 365 sent {value!r} where an amount was expected", code="schema_mismatch"
        ) from exc


class EntraToken:
    """A client-credentials token from Microsoft Entra ID, kept until shortly before it expires."""

    def __init__(
        self,
        http: requests.Session,
        token_url: str,
        client_id: str,
        client_secret: str,
        scope: str,
        timeout: tuple[float, float],
        before_send: Callable[[], None],
    ) -> None:
        self.http = http
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self.timeout = timeout
        self.before_send = before_send
        self._token = ""
        self._refresh_at = 0.0
        self._lock = threading.Lock()
        self.fetched = 0  # how many tokens this process asked for (logged, and read by tests)

    def get(self) -> str:
        with self._lock:
            if not self._token or time.monotonic() >= self._refresh_at:
                self._fetch()
            return self._token

    def forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = ""

    def _fetch(self) -> None:
        self.before_send()
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scope": self.scope,
        }
        try:
            response = self.http.post(self.token_url, data=form, timeout=self.timeout)
        except requests.RequestException as exc:
            raise TransientError(f"could not reach Microsoft Entra ID at {self.token_url}: {exc}") from exc
        body = response.text
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"Microsoft Entra ID answered {response.status_code} for a token",
                status=response.status_code,
                retry_after=retry_after(response.headers),
                body_excerpt=_excerpt(body),
            )
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code != 200 or not data.get("access_token"):
            # invalid_client (wrong secret), unauthorized_client, invalid_scope, unknown tenant:
            # all need an engineer to fix the app registration or the connection's settings.
            reason = data.get("error_description") or data.get("error") or body[:200]
            raise AuthenticationError(
                f"Microsoft Entra ID refused the client credentials of {self.client_id}: {reason}",
                status=response.status_code,
                body_excerpt=_excerpt(body),
            )
        lifetime = float(data.get("expires_in") or 0)
        # Renew a little early so a token never expires in flight: a tenth of its life, at most 60 s.
        self._refresh_at = time.monotonic() + lifetime - min(60.0, lifetime / 10)
        self._token = str(data["access_token"])
        self.fetched += 1
        log.info("fetched a Dynamics 365 access token", extra={"expires_in": lifetime})


class ODataClient:
    """One authenticated OData session to one Dynamics 365 environment; classifies every answer."""

    def __init__(self, base_url: str, token: EntraToken, http: requests.Session, timeout: tuple[float, float]) -> None:
        self.root = f"{base_url.rstrip('/')}/data"
        self.token = token
        self.http = http
        self.timeout = timeout
        self.before_send: Callable[[], None] = lambda: None
        self._local = threading.local()

    @property
    def correlation_id(self) -> str:
        return getattr(self._local, "correlation_id", "") or get_correlation_id()

    @correlation_id.setter
    def correlation_id(self, value: str) -> None:
        self._local.correlation_id = value

    def query(self, entity_set: str, filters: dict[str, str | int], select: Iterable[str] = ()) -> list[dict[str, Any]]:
        """``GET <entity_set>?cross-company=true&$filter=a eq 'x' and b eq 1``; the rows found."""
        clause = " and ".join(f"{name} eq {odata_literal(value)}" for name, value in filters.items())
        query = f"cross-company=true&$filter={quote(clause, safe='')}"
        fields = list(select)
        if fields:
            query += f"&$select={quote(','.join(fields), safe=',')}"
        data = self.request("GET", f"{entity_set}?{query}", writes=False)
        return list(data.get("value") or []) if isinstance(data, dict) else []

    def create(self, entity_set: str, values: dict[str, Any]) -> dict[str, Any]:
        data = self.request("POST", entity_set, body=values, writes=True)
        return data if isinstance(data, dict) else {}

    def update(self, entity_set: str, keys: dict[str, str | int], values: dict[str, Any]) -> None:
        self.request("PATCH", f"{entity_set}({self.key(keys)})", body=values, writes=True)

    def delete(self, entity_set: str, keys: dict[str, str | int]) -> None:
        self.request("DELETE", f"{entity_set}({self.key(keys)})", writes=True)

    def action(self, entity_set: str, keys: dict[str, str | int], name: str) -> None:
        self.request("POST", f"{entity_set}({self.key(keys)})/{ACTION_NAMESPACE}.{name}", body={}, writes=True)

    @staticmethod
    def key(keys: dict[str, str | int]) -> str:
        return ",".join(f"{name}={quote(odata_literal(value), safe=chr(39))}" for name, value in keys.items())

    def request(self, method: str, path: str, *, body: dict[str, Any] | None = None, writes: bool) -> Any:
        token = self.token.get()
        try:
            return self._send(method, path, body, token, writes=writes)
        except _TokenRejected:
            # D365 answers 401 before doing anything: take a fresh token and send once more.
            self.token.forget(token)
            try:
                return self._send(method, path, body, self.token.get(), writes=writes)
            except _TokenRejected as exc:
                raise AuthenticationError(f"Dynamics 365 refused a fresh access token for {method} {path}") from exc

    def _send(self, method: str, path: str, body: dict[str, Any] | None, token: str, *, writes: bool) -> Any:
        self.before_send()
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": ODATA_JSON,
            "OData-Version": "4.0",
            "OData-MaxVersion": "4.0",
        }
        if self.correlation_id:
            headers["X-Correlation-ID"] = self.correlation_id
        data = None
        if body is not None:
            headers["Content-Type"] = ODATA_JSON
            data = json.dumps(body, default=_json_default).encode()
        if method in ("PATCH", "DELETE"):
            headers["If-Match"] = "*"
        url = f"{self.root}/{path}"
        where = f"{method} {url.split('?')[0]}"
        try:
            response = self.http.request(method, url, data=data, headers=headers, timeout=self.timeout)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise TransientError(f"could not connect for {where}: {exc}") from exc
        except requests.ConnectionError as exc:
            if connection_refused(exc) or not writes:
                raise TransientError(f"connection failed for {where}: {exc}") from exc
            raise UncertainOutcome(f"connection dropped after sending {where}: {exc}") from exc
        except requests.Timeout as exc:
            if not writes:
                raise TransientError(f"no answer in {self.timeout[1]}s for {where}") from exc
            raise UncertainOutcome(
                f"no answer in {self.timeout[1]}s for {where}; Dynamics 365 may have done it"
            ) from exc
        return self._answer(response, where, writes=writes)

    def _answer(self, response: requests.Response, where: str, *, writes: bool) -> Any:
        status = response.status_code
        text = response.text
        if status == 401:
            raise _TokenRejected(where)
        if status == 403:
            raise AuthenticationError(
                f"Dynamics 365 refused {where}: the app registration has no D365 user with the rights it needs",
                status=status,
                body_excerpt=_excerpt(text),
            )
        if status == 429:
            raise TransientError(
                f"Dynamics 365 throttled {where}",
                status=status,
                retry_after=retry_after(response.headers),
                body_excerpt=text,
            )
        if status in (502, 503, 504):
            raise TransientError(
                f"Dynamics 365 was unavailable for {where}",
                status=status,
                retry_after=retry_after(response.headers),
                body_excerpt=_excerpt(text),
            )
        if status == 204:
            return None
        error = _odata_error(text) if status >= 400 else None
        if error is not None and error.refused_by_application:
            # X++ rolled its transaction back: nothing was written, whatever the status.
            return self._refusal(error, where, status, text)
        if status == 404:
            raise ConfigurationError(
                f"Dynamics 365 has nothing at {where}",
                status=status,
                body_excerpt=_excerpt(text),
                code="schema_mismatch",
            )
        if 400 <= status < 500:
            raise ConfigurationError(
                f"Dynamics 365 did not accept the request {where}: {error.message if error else text[:300]}",
                status=status,
                body_excerpt=_excerpt(text),
                code="schema_mismatch",
            )
        if status >= 500:
            cls = UncertainOutcome if writes else TransientError
            raise cls(f"Dynamics 365 failed answering {where}", status=status, body_excerpt=_excerpt(text))
        if not text:
            return None
        try:
            return json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            cls = UncertainOutcome if writes else TransientError
            raise cls(f"Dynamics 365 answered {where} with something that is not JSON", status=status) from exc

    @staticmethod
    def _refusal(error: _ODataError, where: str, status: int, text: str) -> Any:
        message = error.application_message
        raise BusinessRuleError(
            "erp_rejected",
            f"Dynamics 365 refused it: {message}",
            f"{error.kind or 'error'} from {where}",
            status=status,
            body_excerpt=_excerpt(text),
            params={"erp_message": message},
        )


class _TokenRejected(Exception):
    pass


class _ODataError:
    """``{"error": {"code", "message", "innererror": {"message", "type", "stacktrace"}}}``."""

    APPLICATION_TYPES = ("AxODataWriteException", "Xpp.ErrorException")

    def __init__(self, message: str, inner_message: str, kind: str) -> None:
        self.message = message
        self.inner_message = inner_message
        self.kind = kind

    @property
    def refused_by_application(self) -> bool:
        return any(self.kind.endswith(name) for name in self.APPLICATION_TYPES) or "Infolog" in self.inner_message

    @property
    def application_message(self) -> str:
        """D365's own words: the Infolog part of a failed write, or the X++ error."""
        text = self.inner_message or self.message
        _, _, infolog = text.partition("Infolog:")
        text = (infolog or text).strip()
        for prefix in ("Error:", "Warning:", "Info:"):
            text = text.replace(prefix, "").strip()
        return " ".join(text.split())[:500]


def _odata_error(text: str) -> _ODataError | None:
    try:
        body = json.loads(text)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    inner = error.get("innererror") if isinstance(error.get("innererror"), dict) else {}
    return _ODataError(str(error.get("message") or ""), str(inner.get("message") or ""), str(inner.get("type") or ""))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # IEEE754Compatible: decimals are JSON strings
    raise TypeError(f"cannot send {type(value).__name__} to Dynamics 365")


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _traced(method: _Method) -> _Method:
    """Send the document's correlation id with every request the operation makes."""

    @functools.wraps(method)
    def wrapper(self: Dynamics365Connector, doc: Any) -> Any:
        self.odata.correlation_id = getattr(doc, "correlation_id", "") or ""
        try:
            return method(self, doc)
        finally:
            self.odata.correlation_id = ""

    return wrapper  # type: ignore[return-value]


class Dynamics365Connector(ERPConnector):
    kind: ClassVar[str] = "dynamics365"
    dedupe_strategy: ClassVar[str] = "lookup"
    required_mappings: ClassVar[frozenset[str]] = frozenset({"company"})

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        missing = [key for key in ("base_url", "tenant_id", "client_id", "client_secret") if not settings.get(key)]
        if missing:
            raise ConfigurationError(f"Dynamics 365 connection settings lack {', '.join(missing)}")
        base_url = str(settings["base_url"]).rstrip("/")
        authority = str(settings.get("authority") or "https://login.microsoftonline.com").rstrip("/")
        seconds = float(settings.get("timeout", 60))
        timeout = (min(10.0, seconds), seconds)
        self.posting_mode = str(settings.get("posting") or "action")
        if self.posting_mode not in ("action", "batch"):
            raise ConfigurationError(
                f"Dynamics 365 setting posting must be 'action' or 'batch', not {self.posting_mode!r}"
            )
        self.http = requests.Session()
        self.token = EntraToken(
            self.http,
            f"{authority}/{settings['tenant_id']}/oauth2/v2.0/token",
            str(settings["client_id"]),
            str(settings["client_secret"]),
            str(settings.get("scope") or f"{base_url}/.default"),
            timeout,
            self.pace,
        )
        self.odata = ODataClient(base_url, self.token, self.http, timeout)
        self.odata.before_send = self.pace
        self.account_prefix = str(settings.get("customer_account_prefix", "HUB"))
        if len(self.account_prefix) > 8:
            raise ConfigurationError("Dynamics 365 setting customer_account_prefix is longer than 8 characters")
        self.payment_journal = str(settings.get("payment_journal_name") or "CustPay")
        self.write_off_journal = str(settings.get("write_off_journal_name") or self.payment_journal)
        self.general_journal = str(settings.get("general_journal_name") or "GenJrn")
        self.invoice_post_action = str(settings.get("invoice_post_action") or "PostInvoice")
        self.journal_post_action = str(settings.get("journal_post_action") or "PostJournal")
        self.delimiter = str(settings.get("dimension_delimiter") or "-")
        self.dimension_format = settings.get("dimension_format") or []

    # -- shared pieces --------------------------------------------------------------------

    @staticmethod
    def _company(doc: Any) -> str:
        company = (getattr(doc, "dimensions", None) or {}).get("company", "")
        if not company:
            raise ConfigurationError(
                f"{doc.external_ref} has no company: map the legal entity to a Dynamics 365 dataAreaId "
                "(company mapping)",
                code="missing_company_mapping",
            )
        return str(company).lower()

    def _dimensions(self, dimensions: dict[str, str], company: str) -> dict[str, str]:
        """``{"DefaultDimensionDisplayValue": ...}`` in the legal entity's format, or nothing."""
        value = self._dimension_value(dimensions, company)
        return {"DefaultDimensionDisplayValue": value} if value else {}

    def _dimension_value(self, dimensions: dict[str, str], company: str) -> str:
        fmt = self.dimension_format
        if isinstance(fmt, dict):
            fmt = fmt.get(company) or fmt.get(company.upper()) or fmt.get("default") or []
        segments = [str(dimensions.get(name, "")) for name in fmt]
        return self.delimiter.join(segments) if any(segments) else ""

    def _currency(self, doc: Any) -> str:
        return str(getattr(doc, "erp_currency", "") or doc.currency).upper()

    @staticmethod
    def _money(minor: int, currency: str) -> Decimal:
        return to_decimal(minor, currency)

    def _post(self, entity_set: str, keys: dict[str, str | int], action: str, what: str) -> None:
        if self.posting_mode == "batch":
            raise LookupError(f"{what} waits for Dynamics 365's posting batch")
        self.odata.action(entity_set, keys, action)

    # -- lookups --------------------------------------------------------------------------

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        if operation == OPERATION_ENSURE_CUSTOMER:
            account = customer_account(external_ref, self.account_prefix)
            found = self.odata.query(CUSTOMERS, {"CustomerAccount": account}, ["dataAreaId", "CustomerAccount"])
            return self._customer_result(found[0], "found") if found else None
        if operation in (OPERATION_POST_INVOICE, OPERATION_POST_CREDIT_MEMO):
            return self._find_posted_free_text(external_ref)
        if operation in (OPERATION_VOID_INVOICE, OPERATION_VOID_CREDIT_MEMO):
            found = self._find_posted_free_text(external_ref)  # the reversal, under the void's reference
            return PostResult(found.erp_id, found.erp_number, {**found.detail, "action": "reversed"}) if found else None
        if operation in _CUSTOMER_JOURNAL_OPERATIONS:
            return self._find_posted_journal(PAYMENT_HEADERS, external_ref)
        if operation in DISPUTE_MOVEMENTS:
            return self._find_posted_journal(LEDGER_HEADERS, external_ref)
        raise ConfigurationError(f"the Dynamics 365 connector does not know the operation {operation!r}")

    def _find_posted_free_text(self, reference: str) -> PostResult | None:
        for header in self._free_text_headers(natural_key(reference), company=None):
            if header.get("IsPosted") == YES:
                company = str(header["dataAreaId"])
                return self._invoice_result(company, header, self._free_text_total(company, header))
        return None

    def _find_posted_journal(self, entity_set: str, reference: str) -> PostResult | None:
        for header in self._journal_headers(entity_set, natural_key(reference), company=None):
            if header.get("IsPosted") == YES:
                return self._journal_result(header, "found")
        return None

    def _free_text_headers(self, key: str, company: str | None) -> list[dict[str, Any]]:
        filters: dict[str, str | int] = {"CustomerReference": key}
        if company:
            filters["dataAreaId"] = company
        found = self.odata.query(
            INVOICE_HEADERS,
            filters,
            ["dataAreaId", "InvoiceIdentifier", "IsPosted", "InvoiceId", "CustomerAccount", "CurrencyCode"],
        )
        return sorted(found, key=lambda row: int(row["InvoiceIdentifier"]))

    def _free_text_header(self, company: str, invoice_identifier: str) -> dict[str, Any]:
        found = self.odata.query(
            INVOICE_HEADERS,
            {"dataAreaId": company, "InvoiceIdentifier": int(invoice_identifier)},
            [
                "dataAreaId",
                "InvoiceIdentifier",
                "IsPosted",
                "InvoiceId",
                "CustomerAccount",
                "CurrencyCode",
                "CustomerReference",
                "DefaultDimensionDisplayValue",
            ],
        )
        if not found:
            raise ConfigurationError(
                f"Dynamics 365 holds no free text invoice {invoice_identifier} in legal entity {company}",
                code="schema_mismatch",
            )
        return found[0]

    def _free_text_lines(self, company: str, invoice_identifier: int) -> list[dict[str, Any]]:
        found = self.odata.query(
            INVOICE_LINES,
            {"dataAreaId": company, "ParentRecId": invoice_identifier},
            [
                "LineNumber",
                "Description",
                "InvoiceText",
                "MainAccountDisplayValue",
                "Quantity",
                "UnitPrice",
                "SalesTaxGroupId",
                "SalesTaxItemGroupId",
                "DefaultDimensionDisplayValue",
                "TransactionCurrencyAmount",
                "SalesTaxAmount",
            ],
        )
        return sorted(found, key=lambda row: _amount(row["LineNumber"]))

    def _free_text_total(self, company: str, header: dict[str, Any]) -> Decimal:
        lines = self._free_text_lines(company, int(header["InvoiceIdentifier"]))
        return sum(
            (_amount(line.get("TransactionCurrencyAmount")) + _amount(line.get("SalesTaxAmount")) for line in lines),
            Decimal(0),
        )

    def _journal_headers(self, entity_set: str, key: str, company: str | None) -> list[dict[str, Any]]:
        filters: dict[str, str | int] = {"Description": key}
        if company:
            filters["dataAreaId"] = company
        found = self.odata.query(
            entity_set, filters, ["dataAreaId", "JournalBatchNumber", "JournalName", "Description", "IsPosted"]
        )
        return sorted(found, key=lambda row: str(row["JournalBatchNumber"]))

    @staticmethod
    def _invoice_result(company: str, header: dict[str, Any], total: Decimal) -> PostResult:
        return PostResult(
            str(header["InvoiceIdentifier"]),
            str(header.get("InvoiceId") or ""),
            {"company": company, "state": "posted" if header.get("IsPosted") == YES else "draft", "total": str(total)},
        )

    @staticmethod
    def _journal_result(header: dict[str, Any], action: str) -> PostResult:
        return PostResult(
            str(header["JournalBatchNumber"]),
            str(header["JournalBatchNumber"]),
            {"company": str(header["dataAreaId"]), "journal": str(header.get("JournalName") or ""), "action": action},
        )

    @staticmethod
    def _customer_result(row: dict[str, Any], action: str) -> PostResult:
        return PostResult(
            str(row["CustomerAccount"]), str(row["CustomerAccount"]), {"company": row["dataAreaId"], "action": action}
        )

    # -- customers ------------------------------------------------------------------------

    @_traced
    def ensure_customer(self, doc: CustomerDocument) -> PostResult:
        company = self._company(doc)
        account = customer_account(doc.external_ref, self.account_prefix)
        name = (doc.name or doc.external_ref)[:100]
        found = self.odata.query(
            CUSTOMERS,
            {"dataAreaId": company, "CustomerAccount": account},
            ["dataAreaId", "CustomerAccount", "OrganizationName"],
        )
        if not found:
            group = self.settings.get("customer_group")
            if not group:
                raise ConfigurationError("Dynamics 365 setting customer_group is needed to create customers")
            address = doc.bill_to
            values: dict[str, Any] = {
                "dataAreaId": company,
                "CustomerAccount": account,
                "PartyType": "Organization",
                "OrganizationName": name,
                "CustomerGroupId": str(group),
                "SalesCurrencyCode": self._currency(doc) if doc.currency else None,
                "PrimaryContactEmail": doc.email or None,
                "AddressStreet": "\n".join(part for part in (address.line1, address.line2) if part) or None,
                "AddressCity": address.city or None,
                "AddressZipCode": address.postal_code or None,
                "AddressState": address.state or None,
                "AddressCountryRegionISOCode": address.country or None,
                "TaxExemptNumber": doc.tax_id or None,
                **self._dimensions(doc.dimensions, company),
            }
            try:
                created = self.odata.create(CUSTOMERS, {k: v for k, v in values.items() if v is not None})
                return self._customer_result({"dataAreaId": company, **created, "CustomerAccount": account}, "created")
            except BusinessRuleError:
                # Another posting of this customer (a newer revision) created it in between, and D365
                # refused a second record with the same account: that customer is ours.
                found = self.odata.query(
                    CUSTOMERS,
                    {"dataAreaId": company, "CustomerAccount": account},
                    ["dataAreaId", "CustomerAccount", "OrganizationName"],
                )
                if not found:
                    raise
        row = found[0]
        if doc.name and row.get("OrganizationName") != name:
            self.odata.update(
                CUSTOMERS, {"dataAreaId": company, "CustomerAccount": account}, {"OrganizationName": name}
            )
            return self._customer_result(row, "updated")
        return self._customer_result(row, "unchanged")

    # -- invoices and credit notes --------------------------------------------------------

    @_traced
    def post_invoice(self, doc: InvoiceDocument) -> PostResult:
        return self._post_free_text(doc, sign=1)

    @_traced
    def post_credit_memo(self, doc: CreditMemoDocument) -> PostResult:
        """A credit note is a free text invoice with negative quantities."""
        return self._post_free_text(doc, sign=-1)

    def _post_free_text(self, doc: InvoiceDocument | CreditMemoDocument, *, sign: int) -> PostResult:
        kind = "Invoice" if sign > 0 else "Credit note"
        company = self._company(doc)
        key = natural_key(doc.external_ref)
        expected = sign * to_decimal(doc.total_minor, doc.currency)
        draft: dict[str, Any] | None = None
        for header in self._free_text_headers(key, company):
            total = self._free_text_total(company, header)
            if header.get("IsPosted") == YES:
                if total != expected:
                    raise self._posted_mismatch(kind, doc, header, total, expected)
                return self._invoice_result(company, header, total)
            if draft is None and total == expected:
                draft = header  # left by a post that failed: reuse it
            else:
                self.odata.delete(
                    INVOICE_HEADERS, {"dataAreaId": company, "InvoiceIdentifier": int(header["InvoiceIdentifier"])}
                )
        if draft is None:
            draft = self._create_free_text(doc, company, key, sign)
            total = self._free_text_total(company, draft)
            if total != expected:
                raise BusinessRuleError(
                    "amount_mismatch",
                    f"Dynamics 365 computes {total} {doc.currency} for {kind.lower()} {doc.number}, billing says "
                    f"{expected}. Check the tax code mapping of its lines; the draft stays in Dynamics 365 and is "
                    "replaced on retry.",
                    f"draft {draft['InvoiceIdentifier']} in {company} totals {total} != {expected}",
                    params={"erp_total": str(total), "billing_total": str(expected)},
                )
        return self._post_free_text_header(company, draft, f"{kind} {doc.number}")

    def _post_free_text_header(self, company: str, header: dict[str, Any], what: str) -> PostResult:
        keys: dict[str, str | int] = {"dataAreaId": company, "InvoiceIdentifier": int(header["InvoiceIdentifier"])}
        self._post(INVOICE_HEADERS, keys, self.invoice_post_action, what)
        posted = self._free_text_header(company, str(header["InvoiceIdentifier"]))
        if posted.get("IsPosted") != YES:
            raise UncertainOutcome(f"{what}: free text invoice {keys} is not posted after {self.invoice_post_action}")
        return self._invoice_result(company, posted, self._free_text_total(company, posted))

    @staticmethod
    def _posted_mismatch(
        kind: str, doc: InvoiceDocument | CreditMemoDocument, header: dict[str, Any], total: Decimal, expected: Decimal
    ) -> BusinessRuleError:
        return BusinessRuleError(
            "amount_mismatch",
            f"{kind} {doc.number} is already posted in Dynamics 365 as {header.get('InvoiceId')} for {total} "
            f"{doc.currency}, but billing now says {expected}. Issue a credit note in billing rather than changing "
            "a posted document.",
            f"posted total {total} != {expected}",
            params={"erp_total": str(total), "billing_total": str(expected)},
        )

    def _create_free_text(
        self, doc: InvoiceDocument | CreditMemoDocument, company: str, key: str, sign: int
    ) -> dict[str, Any]:
        header: dict[str, Any] = {
            "dataAreaId": company,
            "CustomerAccount": doc.customer_erp_id,
            "InvoiceAccount": doc.customer_erp_id,
            "CurrencyCode": self._currency(doc),
            "InvoiceDate": odata_date(doc.invoice_date),
            "DocumentDate": odata_date(doc.invoice_date),
            "CustomerReference": key,
            "CustomerRequisition": doc.number[:20],
            **self._dimensions(doc.dimensions, company),
        }
        if doc.due_date:
            header["DueDate"] = odata_date(doc.due_date)
        created = self.odata.create(INVOICE_HEADERS, header)
        if "InvoiceIdentifier" not in created:
            raise UncertainOutcome(f"Dynamics 365 created a free text invoice for {key} without naming it")
        identifier = int(created["InvoiceIdentifier"])
        for number, line in enumerate(doc.lines, start=1):
            self.odata.create(INVOICE_LINES, self._line_values(doc, company, identifier, number, line, sign))
        return {"dataAreaId": company, **created}

    def _line_values(
        self,
        doc: InvoiceDocument | CreditMemoDocument,
        company: str,
        identifier: int,
        number: int,
        line: InvoiceLineDocument,
        sign: int,
    ) -> dict[str, Any]:
        text = line.description
        if line.period_start and line.period_end:
            text = f"{text} ({line.period_start.isoformat()} to {line.period_end.isoformat()})"
        values: dict[str, Any] = {
            "dataAreaId": company,
            "ParentRecId": identifier,
            "LineNumber": Decimal(number),
            "Description": line.description[:60],
            "InvoiceText": text[:1000],
            "MainAccountDisplayValue": line.revenue_account,
            "Quantity": sign * line.quantity,
            "UnitPrice": to_decimal(line.unit_amount_minor, doc.currency),
            **self._dimensions(doc.dimensions, company),
        }
        if line.tax_code:
            group, slash, item_group = line.tax_code.partition("/")
            if not slash or not group or not item_group:
                raise BusinessRuleError(
                    "unknown_tax_code",
                    f"The tax code mapping '{line.tax_code}' is not a Dynamics 365 tax pair: write it as "
                    "'<sales tax group>/<item sales tax group>' (for example 'VAT/STD'), then retry.",
                    f"tax code {line.tax_code!r} lacks a '/'",
                    params={"value": line.tax_code},
                )
            values["SalesTaxGroupId"] = group
            values["SalesTaxItemGroupId"] = item_group
        return values

    # -- what is open on an invoice --------------------------------------------------------

    def _settled(self, company: str, invoice_number: str) -> Decimal:
        """How much posted customer journal lines marked to the invoice took off it (credits less
        debits: positive for payments on an invoice, negative for refunds of a credit note)."""
        lines = self.odata.query(
            PAYMENT_LINES,
            {"dataAreaId": company, "MarkedInvoice": invoice_number},
            ["JournalBatchNumber", "LineNumber", "DebitAmount", "CreditAmount", "AccountType"],
        )
        posted: dict[str, bool] = {}
        settled = Decimal(0)
        for line in lines:
            batch = str(line["JournalBatchNumber"])
            if batch not in posted:
                headers = self.odata.query(
                    PAYMENT_HEADERS, {"dataAreaId": company, "JournalBatchNumber": batch}, ["IsPosted"]
                )
                posted[batch] = bool(headers) and headers[0].get("IsPosted") == YES
            if posted[batch] and line.get("AccountType") == "Cust":
                settled += _amount(line.get("CreditAmount")) - _amount(line.get("DebitAmount"))
        return settled

    def _posted_invoice(self, company: str, invoice_identifier: str, what: str) -> tuple[dict[str, Any], Decimal]:
        """The posted free text invoice and what is still open on it (signed: negative for a credit note)."""
        header = self._free_text_header(company, invoice_identifier)
        if header.get("IsPosted") != YES:
            raise LookupError(f"{what}: free text invoice {invoice_identifier} in {company} is not posted yet")
        total = self._free_text_total(company, header)
        return header, total - self._settled(company, str(header["InvoiceId"]))

    # -- customer payment journals ---------------------------------------------------------

    def _customer_journal(
        self,
        company: str,
        journal_name: str,
        reference: str,
        lines: list[dict[str, Any]],
        what: str,
        check: Callable[[], None] | None = None,
    ) -> PostResult:
        return self._journal(PAYMENT_HEADERS, PAYMENT_LINES, company, journal_name, reference, lines, what, check)

    def _journal(
        self,
        header_set: str,
        line_set: str,
        company: str,
        journal_name: str,
        reference: str,
        lines: list[dict[str, Any]],
        what: str,
        check: Callable[[], None] | None,
    ) -> PostResult:
        """Find the journal by its description, else check and create it; add missing lines; post."""
        key = natural_key(reference)
        headers = self._journal_headers(header_set, key, company)
        for header in headers:
            if header.get("IsPosted") == YES:
                return self._journal_result(header, "already posted")
        if check is not None:
            check()
        if headers:
            header = headers[0]
        else:
            created = self.odata.create(
                header_set, {"dataAreaId": company, "JournalName": journal_name, "Description": key}
            )
            if "JournalBatchNumber" not in created:
                raise UncertainOutcome(f"Dynamics 365 created a journal for {key} without naming it")
            header = {"dataAreaId": company, "JournalName": journal_name, **created}
        batch = str(header["JournalBatchNumber"])
        present = {
            int(_amount(row["LineNumber"]))
            for row in self.odata.query(line_set, {"dataAreaId": company, "JournalBatchNumber": batch}, ["LineNumber"])
        }
        for number, line in enumerate(lines, start=1):
            if number not in present:
                self.odata.create(
                    line_set,
                    {"dataAreaId": company, "JournalBatchNumber": batch, "LineNumber": Decimal(number), **line},
                )
        self._post(header_set, {"dataAreaId": company, "JournalBatchNumber": batch}, self.journal_post_action, what)
        found = self.odata.query(
            header_set,
            {"dataAreaId": company, "JournalBatchNumber": batch},
            ["dataAreaId", "JournalBatchNumber", "JournalName", "IsPosted"],
        )
        posted = found[0] if found else {}
        if posted.get("IsPosted") != YES:
            raise UncertainOutcome(
                f"{what}: journal {batch} in {company} is not posted after {self.journal_post_action}"
            )
        return self._journal_result(posted, "posted")

    def _customer_line(
        self,
        doc: Any,
        company: str,
        *,
        debit: Decimal = Decimal(0),
        credit: Decimal = Decimal(0),
        on: datetime.date,
        text: str,
        marked: str = "",
        offset: tuple[str, str] | None = None,
        currency: str,
    ) -> dict[str, Any]:
        values: dict[str, Any] = {
            "AccountType": "Cust",
            "AccountDisplayValue": doc.customer_erp_id,
            "TransactionDate": odata_date(on),
            "CurrencyCode": currency,
            "DebitAmount": debit,
            "CreditAmount": credit,
            "TransactionText": text[:60],
        }
        dims = self._dimension_value(doc.dimensions, company)
        if dims:
            values["DefaultDimensionsForAccountDisplayValue"] = dims
        if marked:
            values["MarkedInvoice"] = marked
            values["MarkedInvoiceCompany"] = company
        if offset is not None:
            values["OffsetAccountType"], values["OffsetAccountDisplayValue"] = offset
            if dims:
                values["DefaultDimensionsForOffsetAccountDisplayValue"] = dims
        return values

    @_traced
    def apply_payment(self, doc: PaymentDocument) -> PostResult:
        company = self._company(doc)
        amount = self._money(doc.amount_minor, doc.currency)
        invoice, open_amount = self._posted_invoice(company, doc.invoice_erp_id, f"payment {doc.external_ref}")

        def fits() -> None:
            if open_amount < amount:
                raise self._overpayment(invoice, open_amount, amount, doc.currency, "the payment of")

        line = self._customer_line(
            doc,
            company,
            credit=amount,
            on=doc.paid_on,
            text=f"Payment {doc.method or ''} for {doc.invoice_ref}".replace("  ", " "),
            marked=str(invoice["InvoiceId"]),
            offset=("Bank", doc.payment_journal),
            currency=self._currency(doc),
        )
        return self._customer_journal(company, self.payment_journal, doc.external_ref, [line], "payment", fits)

    @staticmethod
    def _overpayment(
        invoice: dict[str, Any], open_amount: Decimal, amount: Decimal, currency: str, what: str
    ) -> BusinessRuleError:
        return BusinessRuleError(
            "overpayment",
            f"Dynamics 365 invoice {invoice['InvoiceId']} has {open_amount} left to pay; {what} {amount} {currency} "
            "does not fit. Check for a payment recorded by hand in Dynamics 365.",
            f"invoice {invoice['InvoiceIdentifier']} open {open_amount} < {amount}",
            params={"erp_total": str(open_amount), "billing_total": str(amount)},
        )

    @_traced
    def refund_credit_memo(self, doc: RefundDocument) -> PostResult:
        """Money back to the customer against the posted credit note: debit the customer, marked to
        the credit note, offset by the bank it left from."""
        company = self._company(doc)
        amount = self._money(doc.amount_minor, doc.currency)
        credit_note, open_amount = self._posted_invoice(company, doc.credit_memo_erp_id, f"refund {doc.external_ref}")
        owed = -open_amount

        def fits() -> None:
            if owed < amount:
                raise BusinessRuleError(
                    "overrefund",
                    f"Billing refunded {amount} {doc.currency} on credit note {doc.number or doc.credit_memo_ref}, but "
                    f"Dynamics 365 credit note {credit_note['InvoiceId']} leaves {owed} to pay back. Look for a refund "
                    "recorded by hand in the ERP; link or skip this one.",
                    f"credit note {credit_note['InvoiceIdentifier']} owed {owed} < {amount}",
                    params={"erp_total": str(owed), "billing_total": str(amount)},
                )

        customer = doc.customer_erp_id or str(credit_note["CustomerAccount"])
        line = self._customer_line(
            _WithCustomer(doc, customer),
            company,
            debit=amount,
            on=doc.refunded_on,
            text=f"Refund of credit note {doc.number or doc.credit_memo_ref}",
            marked=str(credit_note["InvoiceId"]),
            offset=("Bank", doc.payment_journal),
            currency=self._currency(doc),
        )
        return self._customer_journal(company, self.payment_journal, doc.external_ref, [line], "refund", fits)

    @_traced
    def receive_on_account(self, doc: OnAccountDocument) -> PostResult:
        """Cash in, credited to the customer without an invoice: D365 shows it as the customer's credit."""
        company = self._company(doc)
        line = self._customer_line(
            doc,
            company,
            credit=self._money(doc.amount_minor, doc.currency),
            on=doc.received_on,
            text=f"Unapplied cash from payment {doc.payment_ref}",
            offset=("Bank", doc.payment_journal),
            currency=self._currency(doc),
        )
        return self._customer_journal(company, self.payment_journal, doc.external_ref, [line], "unapplied cash")

    @_traced
    def apply_credit(self, doc: PaymentDocument) -> PostResult:
        """Settle part of an invoice from the customer's credit: debit the customer and credit it again,
        marked to the invoice, in one balanced journal. No cash moves."""
        company = self._company(doc)
        amount = self._money(doc.amount_minor, doc.currency)
        invoice, open_amount = self._posted_invoice(company, doc.invoice_erp_id, f"credit {doc.external_ref}")

        def fits() -> None:
            if open_amount < amount:
                raise self._overpayment(invoice, open_amount, amount, doc.currency, "applying customer credit of")

        currency = self._currency(doc)
        lines = [
            self._customer_line(
                doc,
                company,
                debit=amount,
                on=doc.paid_on,
                text=f"Customer credit used for {doc.invoice_ref}",
                currency=currency,
            ),
            self._customer_line(
                doc,
                company,
                credit=amount,
                on=doc.paid_on,
                text=f"Customer credit applied to {doc.invoice_ref}",
                marked=str(invoice["InvoiceId"]),
                currency=currency,
            ),
        ]
        return self._customer_journal(company, self.payment_journal, doc.external_ref, lines, "credit applied", fits)

    # -- voids and write-offs -------------------------------------------------------------

    @_traced
    def void_invoice(self, doc: VoidDocument) -> PostResult:
        """D365 does not cancel a posted free text invoice: it is reversed by a free text invoice with
        the same lines negated, under the void's reference. Works the same on a credit note."""
        company = self._company(doc)
        key = natural_key(doc.external_ref)
        drafts = []
        for header in self._free_text_headers(key, company):
            if header.get("IsPosted") == YES:
                return self._void_result(company, header)
            drafts.append(header)
        original = self._free_text_header(company, doc.invoice_erp_id)
        if original.get("IsPosted") != YES:
            # Never posted: there is nothing in the books to undo.
            self.odata.delete(
                INVOICE_HEADERS, {"dataAreaId": company, "InvoiceIdentifier": int(original["InvoiceIdentifier"])}
            )
            return PostResult(str(original["InvoiceIdentifier"]), "", {"company": company, "action": "draft deleted"})
        settled = self._settled(company, str(original["InvoiceId"]))
        if settled:
            raise BusinessRuleError(
                "void_after_payment",
                f"Billing {doc.why} invoice {doc.number or doc.invoice_ref}, but Dynamics 365 invoice "
                f"{original['InvoiceId']} already has payments settled against it, so it cannot be reversed. Refund "
                "the payment in billing (or reverse the payment journal in Dynamics 365), then retry.",
                f"invoice {original['InvoiceIdentifier']} settled {settled}",
                params={"erp_number": str(original["InvoiceId"])},
            )
        lines = self._free_text_lines(company, int(original["InvoiceIdentifier"]))
        total = sum(
            (_amount(row.get("TransactionCurrencyAmount")) + _amount(row.get("SalesTaxAmount")) for row in lines),
            Decimal(0),
        )
        reversal = None
        for draft in drafts:
            if reversal is None and self._free_text_total(company, draft) == -total:
                reversal = draft  # left by an interrupted void: reuse it
            else:
                self.odata.delete(
                    INVOICE_HEADERS, {"dataAreaId": company, "InvoiceIdentifier": int(draft["InvoiceIdentifier"])}
                )
        if reversal is None:
            reversal = self._create_reversal(doc, company, key, original, lines)
            reversed_total = self._free_text_total(company, reversal)
            if reversed_total != -total:
                raise BusinessRuleError(
                    "amount_mismatch",
                    f"The reversal of Dynamics 365 invoice {original['InvoiceId']} totals {reversed_total}, not "
                    f"{-total}; the draft stays in Dynamics 365 and is replaced on retry. Check its tax setup.",
                    f"reversal {reversal['InvoiceIdentifier']} total {reversed_total} != {-total}",
                    params={"erp_total": str(reversed_total), "billing_total": str(-total)},
                )
        result = self._post_free_text_header(company, reversal, f"reversal of {original['InvoiceId']}")
        return PostResult(
            result.erp_id,
            result.erp_number,
            {**result.detail, "action": "reversed", "reverses": str(original["InvoiceId"])},
        )

    def _create_reversal(
        self, doc: VoidDocument, company: str, key: str, original: dict[str, Any], lines: list[dict[str, Any]]
    ) -> dict[str, Any]:
        header: dict[str, Any] = {
            "dataAreaId": company,
            "CustomerAccount": original["CustomerAccount"],
            "InvoiceAccount": original["CustomerAccount"],
            "CurrencyCode": original["CurrencyCode"],
            "InvoiceDate": odata_date(doc.voided_on),
            "DocumentDate": odata_date(doc.voided_on),
            "CustomerReference": key,
            "CustomerRequisition": (doc.number or "")[:20],
        }
        if original.get("DefaultDimensionDisplayValue"):
            header["DefaultDimensionDisplayValue"] = original["DefaultDimensionDisplayValue"]
        created = self.odata.create(INVOICE_HEADERS, header)
        identifier = int(created["InvoiceIdentifier"])
        for number, line in enumerate(lines, start=1):
            values: dict[str, Any] = {
                "dataAreaId": company,
                "ParentRecId": identifier,
                "LineNumber": Decimal(number),
                "Description": str(line.get("Description") or "")[:60],
                "InvoiceText": f"Reverses {original['InvoiceId']}: {line.get('InvoiceText') or ''}"[:1000],
                "MainAccountDisplayValue": line["MainAccountDisplayValue"],
                "Quantity": -_amount(line["Quantity"]),
                "UnitPrice": _amount(line["UnitPrice"]),
            }
            for name in ("SalesTaxGroupId", "SalesTaxItemGroupId", "DefaultDimensionDisplayValue"):
                if line.get(name):
                    values[name] = line[name]
            self.odata.create(INVOICE_LINES, values)
        return {"dataAreaId": company, **created}

    def _void_result(self, company: str, header: dict[str, Any]) -> PostResult:
        result = self._invoice_result(company, header, self._free_text_total(company, header))
        return PostResult(result.erp_id, result.erp_number, {**result.detail, "action": "reversed"})

    @_traced
    def write_off(self, doc: WriteOffDocument) -> PostResult:
        """Credit the customer, marked to the invoice, offset by the bad-debt account."""
        company = self._company(doc)
        expected = self._money(doc.amount_minor, doc.currency)
        invoice, open_amount = self._posted_invoice(company, doc.invoice_erp_id, f"write-off {doc.external_ref}")

        def matches() -> None:
            if open_amount > expected:
                # Billing counts a payment D365 does not hold yet: its posting is on its way.
                raise LookupError(
                    f"Dynamics 365 invoice {invoice['InvoiceId']} still has {open_amount} open, billing writes off "
                    f"{expected}: waiting for a payment posting"
                )
            if open_amount < expected:
                raise BusinessRuleError(
                    "write_off_amount_mismatch",
                    f"Billing writes off {expected} {doc.currency} of invoice {doc.number or doc.invoice_ref}, but "
                    f"Dynamics 365 invoice {invoice['InvoiceId']} has {open_amount} open. Check for a payment or "
                    "credit recorded by hand in Dynamics 365, then retry or skip.",
                    f"invoice {invoice['InvoiceIdentifier']} open {open_amount} != {expected}",
                    params={"erp_total": str(open_amount), "billing_total": str(expected)},
                )

        customer = doc.customer_erp_id or str(invoice["CustomerAccount"])
        line = self._customer_line(
            _WithCustomer(doc, customer),
            company,
            credit=expected,
            on=doc.written_off_on,
            text=f"Bad debt: {doc.number or doc.invoice_ref}",
            marked=str(invoice["InvoiceId"]),
            offset=("Ledger", doc.write_off_method),
            currency=self._currency(doc),
        )
        return self._customer_journal(company, self.write_off_journal, doc.external_ref, [line], "write-off", matches)

    # -- disputes -------------------------------------------------------------------------

    @_traced
    def move_disputed_funds(self, doc: DisputeMovementDocument) -> PostResult:
        """One general journal line per movement: ledger and bank only, the receivable stays as it is."""
        company = self._company(doc)
        amount = self._money(doc.amount_minor, doc.currency)
        bank = ("Bank", doc.payment_journal)
        disputed = ("Ledger", doc.dispute_account)
        if doc.movement == "lost" and not doc.loss_account:
            raise ConfigurationError(f"a lost dispute needs a loss account: {doc.external_ref}")
        account, offset = {
            "withdrawn": (disputed, bank),
            "reinstated": (bank, disputed),
            "lost": (("Ledger", doc.loss_account), disputed),
        }[doc.movement]
        dims = self._dimension_value(doc.dimensions, company)
        line: dict[str, Any] = {
            "AccountType": account[0],
            "AccountDisplayValue": account[1],
            "OffsetAccountType": offset[0],
            "OffsetAccountDisplayValue": offset[1],
            "TransDate": odata_date(doc.moved_on),
            "CurrencyCode": self._currency(doc),
            "DebitAmount": amount,
            "CreditAmount": Decimal(0),
            "Text": f"Dispute {doc.dispute_ref} on payment {doc.payment_ref}: funds {doc.movement}"[:60],
        }
        if dims:
            line["DefaultDimensionDisplayValue"] = dims
            line["OffsetDefaultDimensionDisplayValue"] = dims
        return self._journal(
            LEDGER_HEADERS,
            LEDGER_LINES,
            company,
            self.general_journal,
            doc.external_ref,
            [line],
            f"dispute {doc.movement}",
            None,
        )

    def close(self) -> None:
        self.http.close()


class _WithCustomer:
    """A document seen with the customer account D365 holds for it (refunds and write-offs may not
    carry one)."""

    def __init__(self, doc: Any, customer: str) -> None:
        self._doc = doc
        self.customer_erp_id = customer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._doc, name)
