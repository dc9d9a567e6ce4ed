"""QuickBooks Online (Accounting API v3): customers, invoices, credit memos, payments and journal
entries, over HTTPS with ``requests`` and OAuth 2.0.

Settings (the connection's settings; secrets as ``env:`` references):

- ``realm_id``: the QuickBooks company (realmId);
- ``client_id``, ``client_secret``: the app's OAuth 2.0 credentials (HTTP Basic at the token endpoint);
- ``refresh_token``: the company's refresh token;
- ``base_url`` (default ``https://quickbooks.api.intuit.com``; the sandbox is
  ``https://sandbox-quickbooks.api.intuit.com``), ``token_url`` (default Intuit's
  ``https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer``), ``minor_version`` (default 75,
  the oldest Intuit still serves), ``timeout`` (read timeout in seconds, default 30);
- ``no_tax_code``: the tax code of a line without tax (default ``NON``, a US company's; elsewhere the
  id of the zero-rated code); ``global_tax_calculation`` (``TaxExcluded`` outside the US);
- ``receivable_account``: the A/R account id, when the company has more than one.

Mappings: ``item`` (required: QuickBooks posts a sales line to the income account of its item),
``tax_code`` (``TAX`` for a US company with automated sales tax, else the tax code id),
``payment_journal`` (the id of the account cash is deposited to, or a refund leaves from),
``write_off_method`` (the id of the bad-debt item), ``dispute_account`` and ``dispute_loss_account``
(account ids), the ``class`` dimension (``ClassRef``) and ``department`` or ``location``
(``DepartmentRef``: QuickBooks calls its location tracking "department" in the API), ``currency``
(QuickBooks names currencies by ISO code; the mapping only overrides that).

**Finding a document again.** ``DocNumber`` holds at most 21 characters and the hub's references
are longer (``stripe-us:in_1Pq...`` plus suffixes), so a document's number is ``HUB-`` and 17
base32 characters of the SHA-256 of its external reference: deterministic, searchable, and 85 bits
wide, so two references never meet in practice. ``PrivateNote`` carries the whole reference
(``hub:<external_ref>``) and billing's own number for people. Payments use the same number as
``PaymentRefNum`` (``DocNumber`` is not theirs to search). A customer has no number: its display
name ends with the reference in brackets, colons written as ``/`` (a colon separates sub-customers
in QuickBooks names), e.g. ``ACME Corp [stripe-us/cus_123]``, and it is found with ``LIKE`` even
when inactive, so renaming it in billing renames it here. People must keep that bracket.

**Exactly once.** Every write carries a ``requestid`` (50 characters: a digest of the step and the
external reference, then a digest of the body), so QuickBooks answers a resent request with its
first answer and does nothing twice; a corrected body is a new request. Intuit replays that first
answer even when it was a refusal, so after a refusal (which means nothing was done) the write is
sent once more under a fresh ``requestid``: a period reopened since is then seen. Field reports say
``requestid`` alone has let duplicates through, so every create is preceded by a lookup by number,
on the first attempt and on every retry, and ``find_document`` answers only when the work is done.
A duplicate number or name refused by QuickBooks (6140, 6240) is looked up again: another attempt
won the race.

**Decisions.** A credit memo that covers exactly what is still open on its invoice is applied to it
(a zero payment linking both), so the invoice shows paid; a partial one stays as the customer's
credit, as in Tryton. A refund of a credit memo is a journal entry (debit A/R for the customer,
credit the account the money left from) applied against the credit memo with a zero payment: a
RefundReceipt would credit income a second time and leave the credit open. A write-off is a credit
memo on the bad-debt item, applied to the invoice, as Intuit's bad-debt guidance does it. Cash not
applied is a payment without lines (``UnappliedAmt``); applying it later adds a line to that
payment (and names the application in its ``PrivateNote``). Disputes are journal entries. An
invoice is voided with ``operation=void`` (QuickBooks zeroes it and prepends "Voided" to its
note); the API has no void for a credit memo, so one is voided the same way by hand: lines zeroed,
"Voided" prepended. A document with payments or credits applied is never voided
(``void_after_payment``).

**Errors.** A 401 refreshes the access token once and resends (QuickBooks answers 401 before doing
anything), then ``AuthenticationError``; a refused refresh token or client is ``AuthenticationError``.
429 (``ThrottleExceeded``: 500 requests a minute, 10 at once, per company) and 503 are transient,
with ``Retry-After``. A timeout, a dropped connection or a 500/502/504 on a write is uncertain. The
issue named 5010 as the closed-period error; Intuit documents 5010 as "Stale Object Error" (a
stale ``SyncToken``: transient, the next attempt reads the document again) and 6210 "Account Period
Closed" (6200 in Intuit's SDK enumerations too): 6200/6210 are ``closed_period`` for finance.

**The refresh token rotates.** Intuit may answer a refresh with a new refresh token and the old one
then stops working. The connector saves the newest in the connection's token store (the hub's
``routing.ConnectionToken``, encrypted) and every process reads the store before refreshing, so a
rotation by one worker process does not leave the others with a dead token; a refusal is retried
once with the stored token in case another process rotated it meanwhile. ``on_refresh_token`` is
still called with each new token for callers that keep it elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from datetime import date
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
from apps.connectors.http import connection_refused
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    ConnectorError,
    TransientError,
    UncertainOutcome,
)
from apps.core.money import to_decimal

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://quickbooks.api.intuit.com"
DEFAULT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
REFRESH_TOKEN = "refresh_token"  # its name in the connection's token store
DEFAULT_MINOR_VERSION = 75
DOC_NUMBER_PREFIX = "HUB-"
DOC_NUMBER_LENGTH = 21
REQUEST_ID_LENGTH = 50
APPLIED_SUFFIX = "#applied"  # the zero payment that applies a credit memo, written off or refunded
CLOSED_PERIOD_CODES = frozenset({"6200", "6210"})
STALE_OBJECT = "5010"
DUPLICATE_DOC_NUMBER = "6140"
DUPLICATE_NAME = "6240"
INVALID_REFERENCE = "2500"
# Faults that mean the hub sent a request of the wrong shape: an engineer's problem, not finance's.
REQUEST_SHAPE_CODES = frozenset({"2010", "2020", "2050", "2170", "4000", "4001", "6070"})
MAX_NOTE = 4000
MAX_DISPLAY_NAME = 500

_DEC = re.compile(r'"\\u0000DEC(\d+)\\u0000"')


def doc_number(external_ref: str) -> str:
    """The 21-character ``DocNumber`` (and ``PaymentRefNum``) the hub gives the document of
    ``external_ref``: ``HUB-`` and 17 base32 characters of its SHA-256."""
    digest = base64.b32encode(hashlib.sha256(external_ref.encode()).digest()).decode()
    return (DOC_NUMBER_PREFIX + digest)[:DOC_NUMBER_LENGTH]


def request_id(step: str, external_ref: str, body: Any) -> str:
    """QuickBooks' ``requestid`` for one write: the same step, reference and body give the same id
    (so a resend is answered, not done again); a corrected body gives another."""
    key = hashlib.sha256(f"{step}|{external_ref}".encode()).hexdigest()[:20]
    content = hashlib.sha256(dumps(body)).hexdigest()[: REQUEST_ID_LENGTH - 21]
    return f"{key}-{content}"


def customer_tag(external_ref: str) -> str:
    return "[" + external_ref.replace(":", "/") + "]"


def display_name(name: str, external_ref: str) -> str:
    tag = customer_tag(external_ref)
    clean = " ".join(name.replace(":", " ").split())[: MAX_DISPLAY_NAME - len(tag) - 1]
    return f"{clean} {tag}" if clean else tag


def dumps(value: Any) -> bytes:
    """JSON for QuickBooks, with Decimals written as exact JSON numbers: money never passes
    through a float."""
    numbers: list[str] = []

    def mark(item: Any) -> Any:
        if isinstance(item, Decimal):
            numbers.append(format(item, "f"))
            return f"\u0000DEC{len(numbers) - 1}\u0000"
        if isinstance(item, float):
            raise TypeError("money is never float")
        if isinstance(item, date):
            return item.isoformat()
        if isinstance(item, dict):
            return {key: mark(inner) for key, inner in item.items()}
        if isinstance(item, list | tuple):
            return [mark(inner) for inner in item]
        return item

    text = json.dumps(mark(value), sort_keys=True)
    return _DEC.sub(lambda match: numbers[int(match.group(1))], text).encode()


def _quote(value: str) -> str:
    """A literal in QuickBooks' query language (backslash escapes)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _note(external_ref: str, words: str = "") -> str:
    return (f"hub:{external_ref}" + (f" {words}" if words else ""))[:MAX_NOTE]


def _names(note: Any, words: str) -> bool:
    """Whether a note holds ``words`` whole: ``hub:stripe-us:in_1`` is not in ``hub:stripe-us:in_10``."""
    return re.search(rf"(?:^|\s){re.escape(words)}(?:\s|$)", str(note or "")) is not None


def _amount(value: Any) -> Decimal:
    return Decimal(str(value if value is not None else 0))


def _voided(record: dict[str, Any]) -> bool:
    return str(record.get("PrivateNote") or "").startswith("Voided") and _amount(record.get("TotalAmt")) == 0


def _excerpt(text: str, limit: int = 1500) -> str:
    return text[:limit]


class _Unauthorized(Exception):
    pass


class QuickBooksRejected(BusinessRuleError):
    """A ``Fault`` QuickBooks answered, with its own code (6140, 2500, ...) for the caller to act on."""

    def __init__(self, qbo_code: str, element: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.qbo_code = qbo_code
        self.element = element


def _fault_error(status: int, data: dict[str, Any], where: str, text: str) -> ConnectorError:
    """QuickBooks' ``Fault`` body to the hub's taxonomy. A fault means nothing was done."""
    fault = data.get("Fault") or data.get("fault") or {}
    errors = fault.get("Error") or fault.get("error") or [{}]
    first = errors[0] if isinstance(errors, list) and errors else {}
    code = str(first.get("code") or first.get("Code") or "")
    message = str(first.get("Message") or first.get("message") or "QuickBooks refused the request").strip()
    detail = str(first.get("Detail") or first.get("detail") or "").strip()
    element = str(first.get("element") or "")
    said = detail or message
    technical = f"QuickBooks fault {code} ({fault.get('type') or fault.get('Type') or ''}) for {where}: {message}"
    if detail:
        technical += f" - {detail}"
    if code in CLOSED_PERIOD_CODES:
        return QuickBooksRejected(
            code,
            element,
            "closed_period",
            f"QuickBooks refused it because the books are closed for its date: {said} Ask the accountant to "
            "reopen the period in QuickBooks (Account and settings, Advanced, Close the books), then retry.",
            technical,
            params={"erp_message": said, "erp_code": code},
            status=status,
            body_excerpt=text,
        )
    if code == STALE_OBJECT:
        return TransientError(f"{technical} (someone changed it meanwhile; it is read again)", status=status)
    if code in REQUEST_SHAPE_CODES:
        return ConfigurationError(technical, status=status, body_excerpt=text, params={"erp_message": said})
    return QuickBooksRejected(
        code,
        element,
        "erp_rejected",
        f"QuickBooks refused it: {message}. {detail}".strip(),
        technical,
        params={"erp_message": said, "erp_code": code},
        status=status,
        body_excerpt=text,
    )


def _retry_after(response: requests.Response, default: float) -> float:
    try:
        return float(response.headers.get("Retry-After") or default)
    except ValueError:
        return default


class QuickBooksAPI:
    """One company's API over one ``requests`` session, with its OAuth 2.0 tokens."""

    def __init__(
        self, settings: dict[str, Any], pace: Callable[[], None], store: Callable[[], Any] = lambda: None
    ) -> None:
        self.realm_id = str(settings["realm_id"])
        self.client_id = str(settings["client_id"])
        self.client_secret = str(settings["client_secret"])
        self.refresh_token = str(settings["refresh_token"])
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.token_url = str(settings.get("token_url") or DEFAULT_TOKEN_URL)
        self.minor_version = str(settings.get("minor_version") or DEFAULT_MINOR_VERSION)
        read = float(settings.get("timeout", 30))
        self.timeout = (min(10.0, read), read)
        self.http = requests.Session()
        self.pace = pace
        self.on_refresh_token: Callable[[str], None] | None = None
        self.store = store  # the connection's TokenStore, when the hub gave one
        self._access_token: str | None = None
        self._expires_at = 0.0
        self._lock = threading.Lock()

    # -- OAuth 2.0 --------------------------------------------------------------------------

    def _bearer(self) -> str:
        with self._lock:
            if self._access_token is None or time.monotonic() > self._expires_at - 60:
                self._refresh()
            assert self._access_token is not None
            return self._access_token

    def _refresh(self) -> None:
        """Trade the refresh token for an access token. Intuit rotates the refresh token: the newest
        one is kept in the connection's token store, so every worker process uses it; a refusal is
        retried once with the stored one, in case another process rotated it meanwhile."""
        store = self.store()
        stored = store.load(REFRESH_TOKEN) if store is not None else None
        if stored and stored != self.refresh_token:
            self.refresh_token = stored
        try:
            self._refresh_once()
        except AuthenticationError:
            newer = store.load(REFRESH_TOKEN) if store is not None else None
            if not newer or newer == self.refresh_token:
                raise
            self.refresh_token = newer
            self._refresh_once()

    def _refresh_once(self) -> None:
        self.pace()
        where = f"the token refresh at {self.token_url}"
        try:
            response = self.http.post(
                self.token_url,
                data={"grant_type": "refresh_token", "refresh_token": self.refresh_token},
                auth=(self.client_id, self.client_secret),
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            )
        except requests.RequestException as exc:
            raise TransientError(f"no answer from {where}: {exc}") from exc
        status, text = response.status_code, response.text
        if status in (400, 401):
            error = ""
            with contextlib.suppress(ValueError, AttributeError):
                error = str(response.json().get("error") or "")
            raise AuthenticationError(
                f"Intuit refused {where}: {error or status} (invalid_grant: the refresh token expired or the app "
                "was disconnected; invalid_client: wrong client id or secret). Reconnect the company.",
                status=status,
                body_excerpt=text,
            )
        if status == 429 or status >= 500:
            raise TransientError(
                f"Intuit could not answer {where}", status=status, retry_after=_retry_after(response, 30)
            )
        try:
            token = response.json()
            access = str(token["access_token"])
        except (ValueError, KeyError) as exc:
            raise TransientError(f"{where} answered without an access token", status=status) from exc
        self._access_token = access
        self._expires_at = time.monotonic() + float(token.get("expires_in") or 3600)
        rotated = str(token.get("refresh_token") or "")
        if rotated and rotated != self.refresh_token:
            self.refresh_token = rotated
            store = self.store()
            if store is not None:
                store.save(REFRESH_TOKEN, rotated)
                log.info("QuickBooks rotated the refresh token of realm %s; kept in the token store", self.realm_id)
            else:
                log.warning(
                    "QuickBooks rotated the refresh token of realm %s and no token store keeps it", self.realm_id
                )
            if self.on_refresh_token is not None:
                self.on_refresh_token(rotated)

    # -- requests ---------------------------------------------------------------------------

    def query(self, statement: str, *, correlation_id: str = "") -> list[dict[str, Any]]:
        data = self._call("GET", "query", params={"query": statement}, writes=False, correlation_id=correlation_id)
        response = data.get("QueryResponse") or {}
        entity = statement.split()[3]
        return list(response.get(entity) or [])

    def read(self, entity: str, entity_id: str, *, correlation_id: str = "") -> dict[str, Any]:
        data = self._call("GET", f"{entity.lower()}/{entity_id}", writes=False, correlation_id=correlation_id)
        return dict(data[entity])

    def write(
        self,
        entity: str,
        body: dict[str, Any],
        *,
        requestid: str,
        operation: str = "",
        correlation_id: str = "",
    ) -> dict[str, Any]:
        params = {"requestid": requestid}
        if operation:
            params["operation"] = operation
        data = self._call("POST", entity.lower(), params=params, body=body, writes=True, correlation_id=correlation_id)
        return dict(data[entity])

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
        writes: bool,
        correlation_id: str,
    ) -> dict[str, Any]:
        try:
            return self._send(method, path, params or {}, body, writes, correlation_id)
        except _Unauthorized:
            # QuickBooks answers 401 before it does anything: a fresh token and one resend are safe.
            with self._lock:
                self._access_token = None
            try:
                return self._send(method, path, params or {}, body, writes, correlation_id)
            except _Unauthorized as exc:
                raise AuthenticationError(
                    f"QuickBooks refused a freshly refreshed access token for {method} {path}", status=401
                ) from exc

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        body: dict[str, Any] | None,
        writes: bool,
        correlation_id: str,
    ) -> dict[str, Any]:
        token = self._bearer()
        url = f"{self.base_url}/v3/company/{self.realm_id}/{path}"
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        data = None
        if body is not None:
            headers["Content-Type"] = "application/json"
            data = dumps(body)
        where = f"{method} {path}" + (f" ({params['operation']})" if params.get("operation") else "")
        self.pace()
        try:
            response = self.http.request(
                method,
                url,
                params={**params, "minorversion": self.minor_version},
                data=data,
                headers=headers,
                timeout=self.timeout,
            )
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise TransientError(f"could not connect for {where}: {exc}") from exc
        except requests.ConnectionError as exc:
            if connection_refused(exc) or not writes:
                raise TransientError(f"connection failed for {where}: {exc}") from exc
            raise UncertainOutcome(f"connection dropped after sending {where}: {exc}") from exc
        except requests.Timeout as exc:
            if not writes:
                raise TransientError(f"no answer in {self.timeout[1]}s for {where}") from exc
            raise UncertainOutcome(f"no answer in {self.timeout[1]}s for {where}; QuickBooks may have done it") from exc
        status, text = response.status_code, response.text
        tid = response.headers.get("intuit_tid", "")
        where += f" [intuit_tid {tid}]" if tid else ""
        if status == 401:
            raise _Unauthorized(where)
        if status == 403:
            raise AuthenticationError(
                f"QuickBooks refused the app access to company {self.realm_id} for {where}",
                status=status,
                body_excerpt=text,
            )
        if status == 429:
            raise TransientError(
                f"QuickBooks throttled {where} (ThrottleExceeded: 500 a minute or 10 at once per company)",
                status=status,
                retry_after=_retry_after(response, 60),
                body_excerpt=text,
            )
        if status == 503 or (status >= 500 and not writes):
            raise TransientError(
                f"QuickBooks was unavailable for {where}",
                status=status,
                retry_after=_retry_after(response, 30) if "Retry-After" in response.headers else None,
                body_excerpt=text,
            )
        if status >= 500:
            raise UncertainOutcome(f"QuickBooks failed answering {where}", status=status, body_excerpt=text)
        if status == 404:
            raise ConfigurationError(f"QuickBooks has nothing at {url}", status=status, body_excerpt=text)
        try:
            payload = response.json(parse_float=Decimal)
        except ValueError as exc:
            if status < 400 and writes:
                raise UncertainOutcome(f"QuickBooks answered {where} with something that is not JSON") from exc
            raise ConfigurationError(
                f"QuickBooks answered {where} with something that is not JSON", status=status, body_excerpt=text
            ) from exc
        if not isinstance(payload, dict):
            raise ConfigurationError(f"QuickBooks answered {where} with {type(payload).__name__}", status=status)
        if status >= 400 or "Fault" in payload or "fault" in payload:
            raise _fault_error(status, payload, where, _excerpt(text))
        return payload

    def close(self) -> None:
        self.http.close()


def _address(address: Address) -> dict[str, str]:
    values = {
        "Line1": address.line1,
        "Line2": address.line2,
        "City": address.city,
        "PostalCode": address.postal_code,
        "CountrySubDivisionCode": address.state,
        "Country": address.country,
    }
    return {key: value for key, value in values.items() if value}


class QuickBooksConnector(ERPConnector):
    kind: ClassVar[str] = "quickbooks"
    dedupe_strategy: ClassVar[str] = (
        "Every create is preceded by a lookup of the hub's deterministic DocNumber (PaymentRefNum, or the "
        "reference in a customer's display name) and carries a requestid derived from the reference, so "
        "neither a retry nor a lost answer makes a second document."
    )
    required_mappings: ClassVar[frozenset[str]] = frozenset({"item"})
    unused_mappings: ClassVar[frozenset[str]] = frozenset({"revenue_account"})  # the item's income account

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        missing = [key for key in ("realm_id", "client_id", "client_secret", "refresh_token") if not settings.get(key)]
        if missing:
            raise ConfigurationError(f"QuickBooks connection settings lack {', '.join(missing)}")
        self.api = QuickBooksAPI(settings, self.pace, lambda: self.token_store)
        self.no_tax_code = str(settings.get("no_tax_code") or "NON")
        self.global_tax_calculation = str(settings.get("global_tax_calculation") or "")
        self._receivable_account = str(settings.get("receivable_account") or "")

    @property
    def refresh_token(self) -> str:
        """The newest refresh token Intuit gave: persist it when it changes (``on_refresh_token``)."""
        return self.api.refresh_token

    @property
    def on_refresh_token(self) -> Callable[[str], None] | None:
        return self.api.on_refresh_token

    @on_refresh_token.setter
    def on_refresh_token(self, callback: Callable[[str], None] | None) -> None:
        self.api.on_refresh_token = callback

    # -- lookups ----------------------------------------------------------------------------

    def _by_number(self, entity: str, external_ref: str) -> dict[str, Any] | None:
        found = self.api.query(
            f"select * from {entity} where DocNumber = {_quote(doc_number(external_ref))} maxresults 10"
        )
        return self._ours(found, external_ref)

    def _payment(self, external_ref: str) -> dict[str, Any] | None:
        found = self.api.query(
            f"select * from Payment where PaymentRefNum = {_quote(doc_number(external_ref))} maxresults 10"
        )
        return self._ours(found, external_ref)

    @staticmethod
    def _ours(found: list[dict[str, Any]], external_ref: str) -> dict[str, Any] | None:
        """The document among ``found`` that carries ``external_ref`` in its note, else the oldest:
        a person may have rewritten the note, the number is still ours."""
        if not found:
            return None
        for record in found:
            if _names(record.get("PrivateNote"), f"hub:{external_ref}"):
                return record
        return min(found, key=lambda record: int(record["Id"]))

    def _customer(self, external_ref: str) -> dict[str, Any] | None:
        pattern = "%" + customer_tag(external_ref)
        found = self.api.query(
            f"select * from Customer where Active IN (true, false) and DisplayName LIKE {_quote(pattern)} maxresults 10"
        )
        return min(found, key=lambda record: int(record["Id"])) if found else None

    def _write(
        self,
        entity: str,
        body: dict[str, Any],
        step: str,
        external_ref: str,
        *,
        operation: str = "",
        correlation_id: str = "",
    ) -> dict[str, Any]:
        """Send one write with its deterministic ``requestid``. QuickBooks answers a ``requestid`` it
        has seen with its first answer, a refusal included, so a refusal may be an old one whose
        cause has since been fixed (a period reopened, a mapping corrected). A refusal means nothing
        was done, and the caller has just read what it acts on (a create: found nothing), so one
        request under a fresh ``requestid`` gets the present answer."""
        stable = request_id(step, external_ref, body)
        try:
            return self.api.write(entity, body, requestid=stable, operation=operation, correlation_id=correlation_id)
        except QuickBooksRejected as exc:
            if exc.qbo_code in (DUPLICATE_DOC_NUMBER, DUPLICATE_NAME):
                raise  # the caller looks the document up again
            refused: ConnectorError = exc
        except AuthenticationError:
            raise
        except ConfigurationError as exc:
            if exc.status not in (200, 400):
                raise
            refused = exc
        log.info("QuickBooks refused %s %s (%s); asking once more under a fresh requestid", step, external_ref, refused)
        fresh = f"{stable[:20]}-{uuid.uuid4().hex[: REQUEST_ID_LENGTH - 21]}"
        return self.api.write(entity, body, requestid=fresh, operation=operation, correlation_id=correlation_id)

    def _create(
        self,
        entity: str,
        external_ref: str,
        body: dict[str, Any],
        find: Callable[[], dict[str, Any] | None],
        *,
        correlation_id: str = "",
    ) -> dict[str, Any]:
        """Create after the lookup found nothing; a duplicate refused by QuickBooks is looked up again
        (another attempt created it between our lookup and our create)."""
        try:
            return self._write(entity, body, f"create {entity}", external_ref, correlation_id=correlation_id)
        except QuickBooksRejected as exc:
            if exc.qbo_code in (DUPLICATE_DOC_NUMBER, DUPLICATE_NAME):
                again = find()
                if again is not None:
                    return again
            raise

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        if operation == OPERATION_ENSURE_CUSTOMER:
            customer = self._customer(external_ref)
            return self._customer_result(customer, "found") if customer else None
        if operation == OPERATION_POST_INVOICE:
            invoice = self._by_number("Invoice", external_ref)
            return self._document_result(invoice, "posted") if invoice else None
        if operation == OPERATION_POST_CREDIT_MEMO:
            memo = self._by_number("CreditMemo", external_ref)
            # Applied to its invoice or not, a credit memo is complete once the application (when
            # one is due) exists; when unsure, the operation runs again and finishes it.
            if memo is None or _amount(memo.get("Balance")) == _amount(memo.get("TotalAmt")):
                return None
            return self._document_result(memo, "posted and applied")
        if operation in (OPERATION_APPLY_PAYMENT, OPERATION_RECEIVE_ON_ACCOUNT):
            payment = self._payment(external_ref)
            return self._payment_result(payment, "found") if payment else None
        if operation in (OPERATION_REFUND_CREDIT_MEMO, OPERATION_WRITE_OFF):
            entity = "JournalEntry" if operation == OPERATION_REFUND_CREDIT_MEMO else "CreditMemo"
            record = self._by_number(entity, external_ref)
            if record is None or self._payment(external_ref + APPLIED_SUFFIX) is None:
                return None
            return self._document_result(record, "refunded" if entity == "JournalEntry" else "written off")
        if operation in (OPERATION_VOID_INVOICE, OPERATION_VOID_CREDIT_MEMO):
            record = self._by_number("Invoice", external_ref.removesuffix(VOID_SUFFIX)) or self._by_number(
                "CreditMemo", external_ref.removesuffix(VOID_SUFFIX)
            )
            return self._document_result(record, "voided") if record and _voided(record) else None
        if operation == OPERATION_APPLY_CREDIT:
            payment = self._payment(_on_account_ref(external_ref))
            if payment is None or not _names(payment.get("PrivateNote"), f"applied {external_ref}"):
                return None
            return self._payment_result(payment, "applied from credit")
        if operation in DISPUTE_MOVEMENTS:
            entry = self._by_number("JournalEntry", external_ref)
            return self._document_result(entry, DISPUTE_MOVEMENTS[operation]) if entry else None
        raise ConfigurationError(f"the QuickBooks connector does not know the operation {operation!r}")

    @staticmethod
    def _customer_result(customer: dict[str, Any], action: str) -> PostResult:
        return PostResult(str(customer["Id"]), str(customer.get("DisplayName") or ""), {"action": action})

    @staticmethod
    def _document_result(record: dict[str, Any], action: str) -> PostResult:
        return PostResult(
            str(record["Id"]),
            str(record.get("DocNumber") or ""),
            {"action": action, "total": str(record.get("TotalAmt", "")), "balance": str(record.get("Balance", ""))},
        )

    @staticmethod
    def _payment_result(payment: dict[str, Any], action: str) -> PostResult:
        return PostResult(
            str(payment["Id"]),
            str(payment.get("PaymentRefNum") or ""),
            {"action": action, "unapplied": str(payment.get("UnappliedAmt", ""))},
        )

    # -- customers --------------------------------------------------------------------------

    def ensure_customer(self, doc: CustomerDocument) -> PostResult:
        name = display_name(doc.name or doc.external_ref, doc.external_ref)
        customer = self._customer(doc.external_ref)
        if customer is None:
            body: dict[str, Any] = {"DisplayName": name, "Notes": _note(doc.external_ref)[:2000]}
            if doc.name:
                body["CompanyName"] = doc.name[:100]
            if doc.email:
                body["PrimaryEmailAddr"] = {"Address": doc.email}
            if _address(doc.bill_to):
                body["BillAddr"] = _address(doc.bill_to)
            if _address(doc.sold_to):
                body["ShipAddr"] = _address(doc.sold_to)
            if doc.currency:
                body["CurrencyRef"] = {"value": doc.erp_currency or doc.currency}
            if doc.tax_id:
                body["Notes"] = f"{body['Notes']} tax id {doc.tax_id}"[:2000]
            created = self._create(
                "Customer",
                doc.external_ref,
                body,
                lambda: self._customer(doc.external_ref),
                correlation_id=doc.correlation_id,
            )
            return self._customer_result(created, "created")
        if doc.name and customer["DisplayName"] != name:
            update = {"Id": customer["Id"], "SyncToken": customer["SyncToken"], "sparse": True, "DisplayName": name}
            updated = self._write(
                "Customer", update, "rename customer", doc.external_ref, correlation_id=doc.correlation_id
            )
            return self._customer_result(updated, "updated")
        return self._customer_result(customer, "unchanged")

    # -- invoices and credit memos ----------------------------------------------------------

    def _line(self, line: InvoiceLineDocument, currency: str, dimensions: dict[str, str]) -> dict[str, Any]:
        if not line.item:
            raise ConfigurationError(f"the invoice line {line.description!r} has no QuickBooks item")
        detail: dict[str, Any] = {
            "ItemRef": {"value": line.item},
            "Qty": line.quantity,
            "UnitPrice": to_decimal(line.unit_amount_minor, currency),
            "TaxCodeRef": {"value": line.tax_code or self.no_tax_code},
        }
        if dimensions.get("class"):
            detail["ClassRef"] = {"value": dimensions["class"]}
        if line.period_start:
            detail["ServiceDate"] = line.period_start.isoformat()
        return {
            "Amount": to_decimal(line.amount_minor, currency),
            "DetailType": "SalesItemLineDetail",
            "Description": line.description[:4000],
            "SalesItemLineDetail": detail,
        }

    def _sales_form(self, doc: InvoiceDocument | CreditMemoDocument, words: str) -> dict[str, Any]:
        currency = doc.currency
        body: dict[str, Any] = {
            "DocNumber": doc_number(doc.external_ref),
            "TxnDate": doc.invoice_date.isoformat(),
            "CustomerRef": {"value": doc.customer_erp_id},
            "CurrencyRef": {"value": doc.erp_currency or currency},
            "PrivateNote": _note(doc.external_ref, words),
            "Line": [self._line(line, currency, doc.dimensions) for line in doc.lines],
        }
        if doc.tax_minor:
            # QuickBooks accepts billing's tax as an override of what it would compute.
            body["TxnTaxDetail"] = {"TotalTax": to_decimal(doc.tax_minor, currency)}
        department = doc.dimensions.get("department") or doc.dimensions.get("location")
        if department:
            body["DepartmentRef"] = {"value": department}
        if self.global_tax_calculation:
            body["GlobalTaxCalculation"] = self.global_tax_calculation
        if isinstance(doc, InvoiceDocument) and doc.due_date:  # a credit memo has no due date
            body["DueDate"] = doc.due_date.isoformat()
        return body

    def _check_total(self, record: dict[str, Any], doc: InvoiceDocument | CreditMemoDocument, kind: str) -> None:
        expected = to_decimal(doc.total_minor, doc.currency)
        total = _amount(record.get("TotalAmt"))
        if total != expected:
            raise BusinessRuleError(
                "amount_mismatch",
                f"QuickBooks holds {kind} {doc.number} as {record.get('DocNumber')} for {total} {doc.currency}, "
                f"billing says {expected}. Correct the QuickBooks {kind} (its tax most likely) to billing's total, "
                "then retry; or void it in QuickBooks and skip this posting.",
                f"{kind} {record['Id']} TotalAmt {total} != {expected}",
                params={"erp_total": str(total), "billing_total": str(expected)},
            )

    def post_invoice(self, doc: InvoiceDocument) -> PostResult:
        invoice = self._by_number("Invoice", doc.external_ref)
        if invoice is None:
            body = self._sales_form(doc, f"billing invoice {doc.number}".strip())
            invoice = self._create(
                "Invoice",
                doc.external_ref,
                body,
                lambda: self._by_number("Invoice", doc.external_ref),
                correlation_id=doc.correlation_id,
            )
        self._check_total(invoice, doc, "invoice")
        return self._document_result(invoice, "posted")

    def post_credit_memo(self, doc: CreditMemoDocument) -> PostResult:
        """Post the credit memo; when it covers exactly what is still open on its invoice, apply it
        (a zero payment linking both) so the invoice shows paid. A partial credit stays the
        customer's credit."""
        memo = self._by_number("CreditMemo", doc.external_ref)
        if memo is None:
            words = f"billing credit note {doc.number} on invoice {doc.invoice_ref}"
            body = self._sales_form(doc, words)
            memo = self._create(
                "CreditMemo",
                doc.external_ref,
                body,
                lambda: self._by_number("CreditMemo", doc.external_ref),
                correlation_id=doc.correlation_id,
            )
        self._check_total(memo, doc, "credit memo")
        credit = _amount(memo.get("Balance", memo.get("TotalAmt")))
        if credit > 0 and credit == _amount(memo.get("TotalAmt")):
            invoice = self.api.read("Invoice", doc.invoice_erp_id)
            if _amount(invoice.get("Balance")) == credit:
                self._apply_credit_memo(memo, "Invoice", invoice, credit, doc.external_ref, doc.correlation_id)
                memo = self.api.read("CreditMemo", str(memo["Id"]))
        return self._document_result(memo, "posted")

    def _apply_credit_memo(
        self,
        memo: dict[str, Any],
        kind: str,
        target: dict[str, Any],
        amount: Decimal,
        external_ref: str,
        correlation_id: str,
    ) -> dict[str, Any]:
        """A zero payment with two lines: ``amount`` of the credit memo against ``amount`` of the
        invoice (or the journal entry that refunds it). QuickBooks' way of applying a credit."""
        applied_ref = external_ref + APPLIED_SUFFIX
        existing = self._payment(applied_ref)
        if existing is not None:
            return existing
        body = {
            "TotalAmt": Decimal(0),
            "CustomerRef": {"value": str(memo["CustomerRef"]["value"])},
            "CurrencyRef": {"value": str((memo.get("CurrencyRef") or {}).get("value") or "")},
            "TxnDate": str(max(str(memo.get("TxnDate") or ""), str(target.get("TxnDate") or ""))),
            "PaymentRefNum": doc_number(applied_ref),
            "PrivateNote": _note(applied_ref, f"credit memo {memo.get('DocNumber')} applied"),
            "Line": [
                {"Amount": amount, "LinkedTxn": [{"TxnId": str(target["Id"]), "TxnType": kind}]},
                {"Amount": amount, "LinkedTxn": [{"TxnId": str(memo["Id"]), "TxnType": "CreditMemo"}]},
            ],
        }
        if not body["CurrencyRef"]["value"]:
            del body["CurrencyRef"]
        return self._create(
            "Payment", applied_ref, body, lambda: self._payment(applied_ref), correlation_id=correlation_id
        )

    # -- payments ---------------------------------------------------------------------------

    def apply_payment(self, doc: PaymentDocument) -> PostResult:
        existing = self._payment(doc.external_ref)
        if existing is not None:
            return self._payment_result(existing, "already applied")
        invoice = self.api.read("Invoice", doc.invoice_erp_id)
        amount = to_decimal(doc.amount_minor, doc.currency)
        balance = _amount(invoice.get("Balance"))
        if amount > balance:
            raise BusinessRuleError(
                "overpayment",
                f"QuickBooks invoice {invoice.get('DocNumber')} has {balance} left to pay; the payment of {amount} "
                f"{doc.currency} does not fit. Check for a payment recorded by hand in QuickBooks.",
                f"invoice {invoice['Id']} Balance {balance} < {amount}",
                params={"erp_total": str(balance), "billing_total": str(amount)},
            )
        body = {
            "TotalAmt": amount,
            "CustomerRef": {"value": doc.customer_erp_id or str(invoice["CustomerRef"]["value"])},
            "CurrencyRef": {"value": doc.erp_currency or doc.currency},
            "TxnDate": doc.paid_on.isoformat(),
            "PaymentRefNum": doc_number(doc.external_ref),
            "PrivateNote": _note(doc.external_ref, f"payment on invoice {doc.invoice_ref}"),
            "DepositToAccountRef": {"value": doc.payment_journal},
            "Line": [{"Amount": amount, "LinkedTxn": [{"TxnId": str(invoice["Id"]), "TxnType": "Invoice"}]}],
        }
        try:
            payment = self._create(
                "Payment",
                doc.external_ref,
                body,
                lambda: self._payment(doc.external_ref),
                correlation_id=doc.correlation_id,
            )
        except QuickBooksRejected as exc:
            raise self._mapping_error(
                exc, "DepositToAccountRef", "unknown_payment_journal", doc.payment_journal
            ) from exc
        return self._payment_result(payment, "applied")

    def receive_on_account(self, doc: OnAccountDocument) -> PostResult:
        """Cash with no invoice: a payment without lines, all of it ``UnappliedAmt``, the
        customer's credit until billing applies it."""
        existing = self._payment(doc.external_ref)
        if existing is not None:
            return self._payment_result(existing, "already received")
        body = {
            "TotalAmt": to_decimal(doc.amount_minor, doc.currency),
            "CustomerRef": {"value": doc.customer_erp_id},
            "CurrencyRef": {"value": doc.erp_currency or doc.currency},
            "TxnDate": doc.received_on.isoformat(),
            "PaymentRefNum": doc_number(doc.external_ref),
            "PrivateNote": _note(doc.external_ref, f"unapplied cash from payment {doc.payment_ref}"),
            "DepositToAccountRef": {"value": doc.payment_journal},
        }
        try:
            payment = self._create(
                "Payment",
                doc.external_ref,
                body,
                lambda: self._payment(doc.external_ref),
                correlation_id=doc.correlation_id,
            )
        except QuickBooksRejected as exc:
            raise self._mapping_error(
                exc, "DepositToAccountRef", "unknown_payment_journal", doc.payment_journal
            ) from exc
        return self._payment_result(payment, "received on account")

    def apply_credit(self, doc: PaymentDocument) -> PostResult:
        """Settle part of the invoice from the customer's unapplied cash: the payment that brought
        the cash gets a line linking the invoice, and its note names this application."""
        source_ref = _on_account_ref(doc.external_ref)
        payment = self._payment(source_ref)
        if payment is None:
            # receive_on_account of the same payment has not reached QuickBooks yet: retry later.
            raise LookupError(f"no unapplied payment {doc_number(source_ref)} ({source_ref}) in QuickBooks yet")
        marker = f"applied {doc.external_ref}"
        lines = [line for line in payment.get("Line") or [] if line.get("LinkedTxn")]
        linked = {
            (str(txn.get("TxnType")), str(txn.get("TxnId"))) for line in lines for txn in line.get("LinkedTxn") or []
        }
        if _names(payment.get("PrivateNote"), marker) or ("Invoice", doc.invoice_erp_id) in linked:
            return self._payment_result(payment, "already applied from credit")
        amount = to_decimal(doc.amount_minor, doc.currency)
        invoice = self.api.read("Invoice", doc.invoice_erp_id)
        balance, unapplied = _amount(invoice.get("Balance")), _amount(payment.get("UnappliedAmt"))
        if amount > balance or amount > unapplied:
            raise BusinessRuleError(
                "overpayment",
                f"Applying {amount} {doc.currency} of customer credit does not fit: QuickBooks invoice "
                f"{invoice.get('DocNumber')} has {balance} left to pay and payment {payment.get('PaymentRefNum')} "
                f"{unapplied} unapplied. Check for a payment or credit applied by hand in QuickBooks.",
                f"invoice {invoice['Id']} Balance {balance}, payment {payment['Id']} UnappliedAmt {unapplied}",
                params={"erp_total": str(min(balance, unapplied)), "billing_total": str(amount)},
            )
        kept = [{"Amount": _amount(line["Amount"]), "LinkedTxn": line["LinkedTxn"]} for line in lines]
        body = {
            "Id": str(payment["Id"]),
            "SyncToken": str(payment["SyncToken"]),
            "sparse": True,
            "Line": [*kept, {"Amount": amount, "LinkedTxn": [{"TxnId": str(invoice["Id"]), "TxnType": "Invoice"}]}],
            "PrivateNote": f"{payment.get('PrivateNote') or ''}\n{marker}".strip()[:MAX_NOTE],
        }
        updated = self._write("Payment", body, "apply credit", doc.external_ref, correlation_id=doc.correlation_id)
        return self._payment_result(updated, "applied from credit")

    # -- refunds, voids and write-offs ------------------------------------------------------

    def refund_credit_memo(self, doc: RefundDocument) -> PostResult:
        """Money paid back on a credit memo: a journal entry (debit A/R for the customer, credit the
        account the money left from), then the credit memo applied against it, so the memo's credit
        is used up and the customer's balance comes back to what billing says."""
        memo = self.api.read("CreditMemo", doc.credit_memo_erp_id)
        amount = to_decimal(doc.amount_minor, doc.currency)
        entry = self._by_number("JournalEntry", doc.external_ref)
        if entry is None:
            owed = _amount(memo.get("Balance"))
            if _voided(memo) or amount > owed:
                raise BusinessRuleError(
                    "overrefund",
                    f"Billing refunded {amount} {doc.currency} on credit note {doc.number or doc.credit_memo_ref}, "
                    f"but QuickBooks credit memo {memo.get('DocNumber')} leaves {owed} to pay back. Look for a "
                    "refund recorded by hand in QuickBooks; link or skip this one.",
                    f"credit memo {memo['Id']} Balance {owed} < {amount}",
                    params={"erp_total": str(owed), "billing_total": str(amount)},
                )
            customer = str(memo["CustomerRef"]["value"])
            body = {
                "DocNumber": doc_number(doc.external_ref),
                "TxnDate": doc.refunded_on.isoformat(),
                "CurrencyRef": {"value": doc.erp_currency or doc.currency},
                "PrivateNote": _note(doc.external_ref, f"refund of credit memo {memo.get('DocNumber')}"),
                "Line": [
                    self._journal_line(
                        "Debit", amount, self._receivable(), "Refund to customer", doc.dimensions, customer=customer
                    ),
                    self._journal_line("Credit", amount, doc.payment_journal, "Refund paid", doc.dimensions),
                ],
            }
            try:
                entry = self._create(
                    "JournalEntry",
                    doc.external_ref,
                    body,
                    lambda: self._by_number("JournalEntry", doc.external_ref),
                    correlation_id=doc.correlation_id,
                )
            except QuickBooksRejected as exc:
                raise self._mapping_error(exc, "AccountRef", "unknown_payment_journal", doc.payment_journal) from exc
        self._apply_credit_memo(memo, "JournalEntry", entry, amount, doc.external_ref, doc.correlation_id)
        return self._document_result(entry, "refunded")

    def void_invoice(self, doc: VoidDocument) -> PostResult:
        """QuickBooks' void for an invoice (``operation=void``); a credit memo (the API has none) is
        voided the same way by hand. Either way the document stays, zeroed, its note starting with
        "Voided", and that is how a retry knows it is done."""
        entity, record = "Invoice", self._by_number("Invoice", doc.invoice_ref)
        if record is None:
            entity, record = "CreditMemo", self._by_number("CreditMemo", doc.invoice_ref)
        if record is None:
            entity, record = self._read_either(doc.invoice_erp_id)
        if _voided(record):
            return self._document_result(record, "already voided")
        applied = _amount(record.get("TotalAmt")) - _amount(record.get("Balance"))
        links = [txn for txn in record.get("LinkedTxn") or [] if txn.get("TxnType") in ("Payment", "CreditMemo")]
        if applied != 0 or links:
            kind = "invoice" if entity == "Invoice" else "credit memo"
            raise BusinessRuleError(
                "void_after_payment",
                f"Billing {doc.why} {kind} {doc.number or doc.invoice_ref}, but QuickBooks {kind} "
                f"{record.get('DocNumber')} already has {applied} paid or applied on it, so it cannot be voided. "
                "Refund the payment in billing (or remove the payment in QuickBooks), then retry.",
                f"{entity} {record['Id']} TotalAmt {record.get('TotalAmt')} Balance {record.get('Balance')} "
                f"LinkedTxn {record.get('LinkedTxn')}",
                params={"erp_number": str(record.get("DocNumber") or "")},
            )
        if entity == "Invoice":
            body: dict[str, Any] = {"Id": str(record["Id"]), "SyncToken": str(record["SyncToken"])}
            voided = self._write(
                "Invoice", body, "void", doc.external_ref, operation="void", correlation_id=doc.correlation_id
            )
        else:
            lines = []
            for line in record.get("Line") or []:
                if line.get("DetailType") != "SalesItemLineDetail":
                    continue  # QuickBooks' own subtotal line
                detail = {**line["SalesItemLineDetail"], "Qty": Decimal(0)}
                lines.append({**line, "Amount": Decimal(0), "SalesItemLineDetail": detail})
            body = {
                "Id": str(record["Id"]),
                "SyncToken": str(record["SyncToken"]),
                "sparse": True,
                "Line": lines,
                "TxnTaxDetail": {"TotalTax": Decimal(0)},
                "PrivateNote": f"Voided - {record.get('PrivateNote') or ''}"[:MAX_NOTE],
            }
            voided = self._write("CreditMemo", body, "void", doc.external_ref, correlation_id=doc.correlation_id)
        if not _voided(voided):
            raise UncertainOutcome(f"QuickBooks {entity} {record['Id']} is not voided after the void")
        return self._document_result(voided, "voided")

    def _read_either(self, erp_id: str) -> tuple[str, dict[str, Any]]:
        try:
            return "Invoice", self.api.read("Invoice", erp_id)
        except QuickBooksRejected:
            return "CreditMemo", self.api.read("CreditMemo", erp_id)

    def write_off(self, doc: WriteOffDocument) -> PostResult:
        """Bad debt the way QuickBooks does it: a credit memo on the bad-debt item (whose account is
        the bad-debts expense), applied to the invoice, which then shows paid."""
        invoice = self.api.read("Invoice", doc.invoice_erp_id)
        expected = to_decimal(doc.amount_minor, doc.currency)
        memo = self._by_number("CreditMemo", doc.external_ref)
        if memo is None:
            balance = _amount(invoice.get("Balance"))
            if balance > expected and not _voided(invoice):
                # Billing counts a payment QuickBooks does not hold yet: its posting is on its way.
                raise LookupError(
                    f"QuickBooks invoice {invoice.get('DocNumber')} still has {balance} open, billing writes off "
                    f"{expected}: waiting for a payment posting"
                )
            if balance != expected or _voided(invoice):
                raise BusinessRuleError(
                    "write_off_amount_mismatch",
                    f"Billing writes off {expected} {doc.currency} of invoice {doc.number or doc.invoice_ref}, but "
                    f"QuickBooks invoice {invoice.get('DocNumber')} has {balance} open. Check for a payment or credit "
                    "recorded by hand in QuickBooks, then retry or skip.",
                    f"invoice {invoice['Id']} Balance {balance} != {expected}",
                    params={"erp_total": str(balance), "billing_total": str(expected)},
                )
            body: dict[str, Any] = {
                "DocNumber": doc_number(doc.external_ref),
                "TxnDate": doc.written_off_on.isoformat(),
                "CustomerRef": {"value": str(invoice["CustomerRef"]["value"])},
                "CurrencyRef": {"value": doc.erp_currency or doc.currency},
                "PrivateNote": _note(doc.external_ref, f"bad debt on invoice {invoice.get('DocNumber')} {doc.reason}"),
                "Line": [
                    {
                        "Amount": expected,
                        "DetailType": "SalesItemLineDetail",
                        "Description": f"Bad debt written off: invoice {doc.number or doc.invoice_ref}"[:4000],
                        "SalesItemLineDetail": {
                            "ItemRef": {"value": doc.write_off_method},
                            "Qty": Decimal(1),
                            "UnitPrice": expected,
                            "TaxCodeRef": {"value": self.no_tax_code},
                        },
                    }
                ],
            }
            department = doc.dimensions.get("department") or doc.dimensions.get("location")
            if department:
                body["DepartmentRef"] = {"value": department}
            try:
                memo = self._create(
                    "CreditMemo",
                    doc.external_ref,
                    body,
                    lambda: self._by_number("CreditMemo", doc.external_ref),
                    correlation_id=doc.correlation_id,
                )
            except QuickBooksRejected as exc:
                raise self._mapping_error(exc, "ItemRef", "unknown_write_off_method", doc.write_off_method) from exc
        self._apply_credit_memo(
            memo, "Invoice", invoice, _amount(memo.get("TotalAmt")), doc.external_ref, doc.correlation_id
        )
        return self._document_result(memo, "written off")

    # -- journal entries --------------------------------------------------------------------

    def move_disputed_funds(self, doc: DisputeMovementDocument) -> PostResult:
        """One journal entry per movement; the receivable is never touched (billing keeps the
        invoice paid)."""
        existing = self._by_number("JournalEntry", doc.external_ref)
        if existing is not None:
            return self._document_result(existing, f"already {doc.movement}")
        if doc.movement == "lost" and not doc.loss_account:
            raise ConfigurationError(f"a lost dispute needs a loss account: {doc.external_ref}")
        debit, credit = {
            "withdrawn": (doc.dispute_account, doc.payment_journal),
            "reinstated": (doc.payment_journal, doc.dispute_account),
            "lost": (doc.loss_account, doc.dispute_account),
        }[doc.movement]
        amount = to_decimal(doc.amount_minor, doc.currency)
        label = f"Dispute {doc.dispute_ref} on payment {doc.payment_ref}: funds {doc.movement}"
        body = {
            "DocNumber": doc_number(doc.external_ref),
            "TxnDate": doc.moved_on.isoformat(),
            "CurrencyRef": {"value": doc.erp_currency or doc.currency},
            "PrivateNote": _note(doc.external_ref, label),
            "Line": [
                self._journal_line("Debit", amount, debit, label, doc.dimensions),
                self._journal_line("Credit", amount, credit, label, doc.dimensions),
            ],
        }
        entry = self._create(
            "JournalEntry",
            doc.external_ref,
            body,
            lambda: self._by_number("JournalEntry", doc.external_ref),
            correlation_id=doc.correlation_id,
        )
        return self._document_result(entry, doc.movement)

    @staticmethod
    def _journal_line(
        posting_type: str,
        amount: Decimal,
        account: str,
        description: str,
        dimensions: dict[str, str],
        *,
        customer: str = "",
    ) -> dict[str, Any]:
        detail: dict[str, Any] = {"PostingType": posting_type, "AccountRef": {"value": account}}
        if customer:
            detail["Entity"] = {"Type": "Customer", "EntityRef": {"value": customer}}
        if dimensions.get("class"):
            detail["ClassRef"] = {"value": dimensions["class"]}
        department = dimensions.get("department") or dimensions.get("location")
        if department:
            detail["DepartmentRef"] = {"value": department}
        return {
            "Amount": amount,
            "DetailType": "JournalEntryLineDetail",
            "Description": description[:4000],
            "JournalEntryLineDetail": detail,
        }

    def _receivable(self) -> str:
        """The A/R account: the setting, else the company's only Accounts Receivable account."""
        if not self._receivable_account:
            found = self.api.query("select * from Account where AccountType = 'Accounts Receivable' maxresults 10")
            active = [account for account in found if account.get("Active", True)]
            if len(active) != 1:
                raise ConfigurationError(
                    f"QuickBooks company {self.api.realm_id} has {len(active)} Accounts Receivable accounts; set "
                    "receivable_account in the connection's settings"
                )
            self._receivable_account = str(active[0]["Id"])
        return self._receivable_account

    @staticmethod
    def _mapping_error(exc: QuickBooksRejected, element: str, code: str, value: str) -> ConnectorError:
        """An invalid reference on a mapped id is the mapping's fault: say which mapping."""
        if exc.qbo_code != INVALID_REFERENCE or (exc.element and exc.element != element):
            return exc
        word = code.removeprefix("unknown_").replace("_", " ")
        return BusinessRuleError(
            code,
            f"The {word} '{value}' does not exist (or is inactive) in QuickBooks. Fix the {word} mapping in the hub "
            "(or restore it in QuickBooks), then retry.",
            exc.detail,
            params={"value": value, "erp_message": str(exc.params.get("erp_message", ""))},
            status=exc.status,
            body_excerpt=exc.body_excerpt,
        )

    def close(self) -> None:
        self.api.close()


def _on_account_ref(application_ref: str) -> str:
    """The on-account reference of the payment an application ``<source>:<payment>:<invoice>``
    draws its credit from."""
    return application_ref.rsplit(":", 1)[0] + ON_ACCOUNT_SUFFIX
