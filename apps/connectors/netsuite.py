"""NetSuite through SuiteTalk REST web services (``/services/rest/record/v1``): customers, invoices,
credit memos, customer payments and refunds, journal entries.

Settings (``ERPConnection.settings``, secrets already resolved):

- ``account_id``: the NetSuite account, ``1234567`` or ``1234567_SB1`` for a sandbox. It is the
  realm of token-based authentication and names the host.
- ``base_url``: optional, default ``https://<account>.suitetalk.api.netsuite.com`` (the account id in
  lower case, ``_`` as ``-``). Records live under ``<base_url>/services/rest/record/v1``.
- ``auth``: ``oauth2`` (default) or ``tba``.
  OAuth 2.0 client credentials (machine to machine): ``client_id`` (the integration record's),
  ``certificate_id`` (from "OAuth 2.0 Client Credentials (M2M) Setup"), ``private_key`` (PEM, the
  certificate's key), ``algorithm`` (``PS256`` default; PS384/PS512/ES256/ES384/ES512). The hub signs
  a JWT (header ``kid`` = certificate id; claims ``iss`` = client id, ``scope``, ``aud`` = the token
  URL, ``iat``, ``exp`` five minutes later), trades it at ``/services/rest/auth/oauth2/v1/token``
  (``grant_type=client_credentials``, ``client_assertion_type=urn:ietf:params:oauth:client-assertion-
  type:jwt-bearer``) for an access token valid ``expires_in`` seconds (NetSuite: 3600), keeps it until
  shortly before it expires, and asks for a new one after a 401.
  Token-based authentication (older accounts): ``consumer_key``, ``consumer_secret``, ``token_id``,
  ``token_secret``; every request is signed with OAuth 1.0a, HMAC-SHA256, ``realm`` = the account id.
- ``timeout``: seconds to wait for an answer (default 60).

Exactly once. NetSuite keys records by an external ID, and ``PUT .../<record>/eid:<id>`` is an
upsert: it creates the record, or updates the one that already carries the ID. Every document the
hub writes carries the hub's reference as its external ID (``external_id()``: NetSuite allows only
letters, digits, ``_`` and ``-`` there, so the reference is escaped), and is looked up by it
(``GET .../eid:<id>``) before anything is written, so a repeat finds the first result and a post
whose answer was lost is found again by ``find_document``. Sublists that are not keyed (invoice
lines, journal lines) are appended to on update, so the upsert names them in ``replace``.

How each operation is recorded, NetSuite's own way:

- Invoices and credit notes are ``invoice`` and ``creditMemo`` transactions. Every line names an
  item (the ``item`` mapping): NetSuite posts revenue to the item's income account, so the
  ``revenue_account`` mapping is not sent. Tax is the line's ``taxCode`` (legacy tax). NetSuite's
  computed total is compared with billing's (``amount_mismatch``). A credit note is applied to its
  invoice for as much as the invoice still has open; the rest stays on the credit memo as the
  customer's credit (that is what a refund pays out).
- Payments are ``customerPayment`` records applied to the invoice (``apply`` sublist), deposited to
  the account named by the ``payment_journal`` mapping (an account internal id), with ``autoApply``
  off so NetSuite never spreads them over other invoices.
- Refunds of a credit note are ``customerRefund`` records applying the credit memo, paid from the
  ``payment_journal`` account mapped for refunds.
- Voids: NetSuite's REST record service has no void action for a posted invoice, and voiding with
  reversing journals depends on an account preference. So a void is what the invoice's "Credit"
  button does in every account: the invoice is transformed into a credit memo
  (``POST .../invoice/<id>/!transform/creditMemo``, which copies its lines, tax and dimensions)
  applied to it in full; the invoice ends "Paid In Full" and the receivable is cleared. An invoice
  with payments or credits on it is refused (``void_after_payment``). A credit memo is voided by
  the reverse: an invoice with the credit memo's lines (its external ID is the void's reference)
  to which the whole credit memo is re-applied, taking it off the original invoice, which is owed
  again; a credit memo already refunded is refused.
- Write-offs (bad debt) are a credit memo for the open amount on the bad-debt item (the
  ``write_off_method`` mapping is that item's internal id, an item whose income account is the
  bad-debt expense), applied to the invoice: the usual NetSuite practice, which closes the invoice
  and keeps the write-off visible on the customer's record. A journal entry would move the money
  but leave the invoice open.
- Cash on account is an unapplied ``customerPayment``: it credits the receivable at once, so the
  customer's balance shows the credit as billing does (a ``customerDeposit`` would sit in a
  liability and leave the receivable untouched until applied). Applying that credit to an invoice
  later (``apply_credit``) adds the invoice to the same payment's ``apply`` sublist; until the
  unapplied payment is in NetSuite the application waits (retried).
- Dispute movements are ``journalEntry`` records between the accounts the mappings name
  (``payment_journal``, ``dispute_account``, ``dispute_loss_account``, all account internal ids);
  the receivable is not touched.

Every transaction carries the subsidiary (required mapping), the currency's internal id (required
mapping, by ISO code) and the department, class and location when they are mapped, on the header
and on each line. The document's correlation id travels as ``X-Correlation-ID``.

Outcomes: a refused connection is transient; a read timeout or a dropped connection after sending
is uncertain for writes; a 401 asks for a new access token once; 429 (``CONCURRENCY_LIMIT_EXCEEDED``,
NetSuite's account concurrency governance) is transient, with ``Retry-After`` when NetSuite sends
one and otherwise a backoff that doubles with each refusal in a row (1 s up to 60 s); 503 is
transient; any other 5xx is uncertain for writes; NetSuite's ``USER_ERROR`` is a business refusal
in NetSuite's own words; an invalid field value names the mapping at fault.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import logging
import re
import secrets
import string
import threading
import time
import urllib.parse
from decimal import Decimal
from typing import Any, ClassVar

import jwt
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
from apps.connectors.http import connection_refused, retry_after
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

RECORD_PATH = "/services/rest/record/v1"
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES = ["restlets", "rest_webservices"]
ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
ASSERTION_SECONDS = 300  # NetSuite accepts at most 60 minutes between iat and exp
THROTTLE_BACKOFF_MAX = 60.0
DIMENSION_FIELDS = ("department", "class", "location")

CUSTOMER = "customer"
INVOICE = "invoice"
CREDIT_MEMO = "creditMemo"
PAYMENT = "customerPayment"
REFUND = "customerRefund"
JOURNAL = "journalEntry"

# -- external IDs ---------------------------------------------------------------------------

_EID_PLAIN = frozenset(string.ascii_letters + string.digits + "-")
_EID_ESCAPES = {"_": "__", ":": "_C", "#": "_H"}


def external_id(reference: str) -> str:
    """The hub's reference as a NetSuite external ID, which may hold only letters, digits, ``_`` and
    ``-``. ``_`` is the escape character (``__`` is ``_``, ``_C`` is ``:``, ``_H`` is ``#``,
    ``_X`` and six hex digits any other character), so no two references share an external ID and
    people can still read it: ``stripe-us:in_1Nx`` is ``stripe-us_Cin__1Nx``."""
    out = []
    for char in reference:
        if char in _EID_PLAIN:
            out.append(char)
        else:
            out.append(_EID_ESCAPES.get(char) or f"_X{ord(char):06X}")
    return "".join(out)


# -- JSON with exact numbers ------------------------------------------------------------------

_NUMBER = re.compile(r'"\\u0000(-?\d+(?:\.\d+)?)\\u0000"')


def _marked(value: Any) -> Any:
    if isinstance(value, float):
        raise TypeError("money is never float")
    if isinstance(value, Decimal):
        return f"\x00{value:f}\x00"
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {key: _marked(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_marked(item) for item in value]
    return value


def json_body(value: Any) -> bytes:
    """JSON whose Decimals are written as JSON numbers, digit for digit (never through a float)."""
    return _NUMBER.sub(lambda match: match.group(1), json.dumps(_marked(value), ensure_ascii=False)).encode()


def _parse(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


# -- OAuth 1.0a (token-based authentication) --------------------------------------------------


def _pct(value: str) -> str:
    return urllib.parse.quote(value, safe="-._~")  # RFC 5849 3.6: unreserved characters only


def signature_base_string(method: str, url: str, params: list[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: the method, the base string URI and the normalized parameters (the URL's
    query plus ``params``: the ``oauth_*`` protocol parameters and any form-encoded body)."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    default_port = {"http": 80, "https": 443}.get(scheme)
    netloc = host if parts.port in (None, default_port) else f"{host}:{parts.port}"
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    pairs = sorted((_pct(name), _pct(value)) for name, value in [*query, *params])
    normalized = "&".join(f"{name}={value}" for name, value in pairs)
    return "&".join((method.upper(), _pct(f"{scheme}://{netloc}{parts.path or '/'}"), _pct(normalized)))


def tba_authorization(
    method: str,
    url: str,
    *,
    realm: str,
    consumer_key: str,
    consumer_secret: str,
    token_id: str,
    token_secret: str,
    nonce: str | None = None,
    timestamp: int | None = None,
) -> str:
    """The ``Authorization`` header of a request signed with OAuth 1.0a, HMAC-SHA256."""
    oauth = [
        ("oauth_consumer_key", consumer_key),
        ("oauth_token", token_id),
        ("oauth_signature_method", "HMAC-SHA256"),
        ("oauth_timestamp", str(timestamp if timestamp is not None else int(time.time()))),
        ("oauth_nonce", nonce or secrets.token_hex(16)),
        ("oauth_version", "1.0"),
    ]
    key = f"{_pct(consumer_secret)}&{_pct(token_secret)}".encode()
    digest = hmac.new(key, signature_base_string(method, url, oauth).encode(), hashlib.sha256).digest()
    oauth.append(("oauth_signature", base64.b64encode(digest).decode()))
    return "OAuth " + ", ".join([f'realm="{realm}"', *(f'{name}="{_pct(value)}"' for name, value in oauth)])


# -- the transport ----------------------------------------------------------------------------


class _Response:
    def __init__(self, status: int, headers: requests.structures.CaseInsensitiveDict[str], text: str) -> None:
        self.status = status
        self.headers = headers
        self.text = text

    def json(self) -> Any:
        try:
            return _parse(self.text) if self.text else {}
        except ValueError:
            return {}


class SuiteTalk:
    """One authenticated session to one account's REST record service."""

    def __init__(self, settings: dict[str, Any], connector: ERPConnector) -> None:
        account = str(settings.get("account_id") or "").strip()
        if not account:
            raise ConfigurationError("NetSuite connection settings lack account_id")
        self.realm = account.upper().replace("-", "_")
        host = account.lower().replace("_", "-")
        self.base_url = str(settings.get("base_url") or f"https://{host}.suitetalk.api.netsuite.com").rstrip("/")
        self.record_url = self.base_url + RECORD_PATH
        self.token_url = self.base_url + TOKEN_PATH
        timeout = float(settings.get("timeout", 60))
        self.timeout = (min(10.0, timeout), timeout)
        self.auth = str(settings.get("auth") or "oauth2").lower()
        self.connector = connector
        self.http = requests.Session()
        self._lock = threading.Lock()
        self._token: str | None = None
        self._token_expires = 0.0
        self._throttled_in_a_row = 0
        if self.auth == "oauth2":
            self._oauth2_settings(settings)
        elif self.auth == "tba":
            missing = [
                key for key in ("consumer_key", "consumer_secret", "token_id", "token_secret") if not settings.get(key)
            ]
            if missing:
                raise ConfigurationError(f"NetSuite token-based authentication lacks {', '.join(missing)}")
            self.tba = {
                key: str(settings[key]) for key in ("consumer_key", "consumer_secret", "token_id", "token_secret")
            }
        else:
            raise ConfigurationError(f"NetSuite auth must be 'oauth2' or 'tba', not {self.auth!r}")

    def _oauth2_settings(self, settings: dict[str, Any]) -> None:
        missing = [key for key in ("client_id", "certificate_id", "private_key") if not settings.get(key)]
        if missing:
            raise ConfigurationError(f"NetSuite OAuth 2.0 client credentials lack {', '.join(missing)}")
        self.algorithm = str(settings.get("algorithm") or "PS256").upper()
        if self.algorithm not in ALGORITHMS:
            raise ConfigurationError(
                f"NetSuite signs client assertions with {', '.join(ALGORITHMS)}, not {self.algorithm}"
            )
        self.client_id = str(settings["client_id"])
        self.certificate_id = str(settings["certificate_id"])
        self.private_key = str(settings["private_key"])

    # -- authentication -----------------------------------------------------------------------

    def client_assertion(self) -> str:
        now = int(time.time())
        claims = {
            "iss": self.client_id,
            "scope": SCOPES,
            "aud": self.token_url,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        }
        try:
            return jwt.encode(
                claims, self.private_key, algorithm=self.algorithm, headers={"kid": self.certificate_id, "typ": "JWT"}
            )
        except (ValueError, TypeError, jwt.PyJWTError) as exc:
            raise ConfigurationError(f"the NetSuite private key cannot sign {self.algorithm}: {exc}") from exc

    def access_token(self) -> str:
        with self._lock:
            if self._token and time.monotonic() < self._token_expires:
                return self._token
            self.connector.pace()
            data = {
                "grant_type": "client_credentials",
                "client_assertion_type": JWT_BEARER,
                "client_assertion": self.client_assertion(),
            }
            try:
                response = self.http.post(
                    self.token_url, data=data, headers={"Accept": "application/json"}, timeout=self.timeout
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                raise TransientError(f"could not reach the NetSuite token endpoint: {exc}") from exc
            body = response.text
            if response.status_code in (429, 502, 503, 504) or response.status_code >= 500:
                raise TransientError(
                    "the NetSuite token endpoint is unavailable",
                    status=response.status_code,
                    body_excerpt=body,
                    retry_after=retry_after(response.headers),
                )
            payload = _Response(response.status_code, response.headers, body).json()
            if response.status_code != 200 or not isinstance(payload, dict) or not payload.get("access_token"):
                error = payload.get("error", "") if isinstance(payload, dict) else ""
                raise AuthenticationError(
                    f"NetSuite refused the client credentials of {self.client_id[:12]}… ({error or 'no token'})",
                    status=response.status_code,
                    body_excerpt=body,
                )
            lifetime = float(str(payload.get("expires_in") or 3600))
            self._token = str(payload["access_token"])
            self._token_expires = time.monotonic() + lifetime - min(60.0, lifetime / 10)
            return self._token

    def forget_token(self) -> None:
        with self._lock:
            self._token = None

    def _authorization(self, method: str, url: str) -> str:
        if self.auth == "tba":
            return tba_authorization(method, url, realm=self.realm, **self.tba)
        return f"Bearer {self.access_token()}"

    # -- requests -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        correlation_id: str = "",
    ) -> _Response:
        """Send once (twice after a 401 with OAuth 2.0: the token is renewed first) and classify."""
        url = self.record_url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        writes = method != "GET"
        data = json_body(body) if body is not None else None
        for renewed in (False, True):
            headers = {
                "Accept": "application/json",
                "X-NetSuite-PropertyNameValidation": "Error",
                "Authorization": self._authorization(method, url),
            }
            if data is not None:
                headers["Content-Type"] = "application/json"
            if correlation_id:
                headers["X-Correlation-ID"] = correlation_id
            response = self._send(method, url, headers, data, writes=writes)
            if response.status == 401 and self.auth == "oauth2" and not renewed:
                self.forget_token()  # answered before anything ran: renew the token and send again
                continue
            return self._classify(method, path, response, writes=writes)
        raise AssertionError("unreachable")

    def _send(self, method: str, url: str, headers: dict[str, str], data: bytes | None, *, writes: bool) -> _Response:
        self.connector.pace()
        where = f"{method} {url.removeprefix(self.base_url)}"
        try:
            response = self.http.request(method, url, headers=headers, data=data, timeout=self.timeout)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise TransientError(f"could not connect to NetSuite for {where}: {exc}") from exc
        except requests.ConnectionError as exc:
            if connection_refused(exc) or not writes:
                raise TransientError(f"connection to NetSuite failed for {where}: {exc}") from exc
            raise UncertainOutcome(f"connection dropped after sending {where}: {exc}") from exc
        except requests.Timeout as exc:
            if not writes:
                raise TransientError(f"NetSuite did not answer {where} in {self.timeout[1]}s") from exc
            raise UncertainOutcome(
                f"NetSuite did not answer {where} in {self.timeout[1]}s; it may have done it"
            ) from exc
        return _Response(response.status_code, response.headers, response.text)

    def _classify(self, method: str, path: str, response: _Response, *, writes: bool) -> _Response:
        status, body = response.status, response.text
        where = f"{method} {path}"
        if status < 400 or (status == 404 and method == "GET"):
            if status < 400:
                self._throttled_in_a_row = 0
            return response
        if status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            raise AuthenticationError(
                f"NetSuite refused the credentials for {where} {challenge}".strip(), status=status, body_excerpt=body
            )
        if status == 429:
            self._throttled_in_a_row += 1
            wait = retry_after(response.headers) or min(2.0 ** (self._throttled_in_a_row - 1), THROTTLE_BACKOFF_MAX)
            raise TransientError(
                f"NetSuite's concurrency limit refused {where}", status=status, retry_after=wait, body_excerpt=body
            )
        if status == 503:
            raise TransientError(
                f"NetSuite is unavailable for {where}",
                status=status,
                retry_after=retry_after(response.headers),
                body_excerpt=body,
            )
        if status >= 500:
            if writes:
                raise UncertainOutcome(
                    f"NetSuite failed answering {where}; it may have done it", status=status, body_excerpt=body
                )
            raise TransientError(f"NetSuite failed answering {where}", status=status, body_excerpt=body)
        raise NetSuiteRefusal(status, _details(response.json()), where, body)

    def close(self) -> None:
        self.http.close()


class NetSuiteRefusal(ConnectorError):
    """A 4xx answer other than 401 and 429, before the connector words it for finance."""

    def __init__(self, status: int, details: list[dict[str, str]], where: str, body: str) -> None:
        self.details = details
        text = "; ".join(detail.get("detail", "") for detail in details) or f"HTTP {status}"
        super().__init__(f"NetSuite refused {where}: {text}", status=status, body_excerpt=body)

    @property
    def codes(self) -> set[str]:
        return {detail.get("o:errorCode", "") for detail in self.details}

    @property
    def message(self) -> str:
        text = " ".join(detail.get("detail", "") for detail in self.details).strip()
        return re.sub(r"^Error while accessing (?:a )?resource[.:]\s*", "", text)

    def invalid_value(self) -> tuple[str, str] | None:
        """(field, value) when NetSuite says a field's value does not exist."""
        for detail in self.details:
            found = _INVALID_VALUE.search(detail.get("detail", ""))
            if found:
                path = detail.get("o:errorPath", "")
                return (path.rsplit(".", 1)[-1] if path else found.group(2)), found.group(1)
        return None


_INVALID_VALUE = re.compile(r"Invalid Field Value (\S+) for the following field: (\w+)", re.IGNORECASE)


def _details(payload: Any) -> list[dict[str, str]]:
    found = payload.get("o:errorDetails") if isinstance(payload, dict) else None
    if not isinstance(found, list):
        return []
    return [{key: str(value) for key, value in item.items()} for item in found if isinstance(item, dict)]


def _ref(value: str) -> dict[str, str]:
    return {"id": str(value)}


def _id_of(value: Any) -> str:
    return str(value.get("id", "")) if isinstance(value, dict) else str(value or "")


def _amount(record: dict[str, Any], field: str) -> Decimal:
    value = record.get(field)
    return Decimal(str(value)) if value is not None else Decimal(0)


def _items(record: dict[str, Any], sublist: str) -> list[dict[str, Any]]:
    found = record.get(sublist)
    items = found.get("items") if isinstance(found, dict) else None
    return items if isinstance(items, list) else []


class NetSuiteConnector(ERPConnector):
    kind: ClassVar[str] = "netsuite"
    dedupe_strategy: ClassVar[str] = (
        "NetSuite's external ID: every document is written by upsert (PUT .../<record>/eid:<hub reference>) "
        "after a lookup by the same ID, so a repeat finds or updates the first record instead of adding one."
    )
    required_mappings: ClassVar[frozenset[str]] = frozenset({"currency", "subsidiary", "item"})
    unused_mappings: ClassVar[frozenset[str]] = frozenset({"revenue_account"})  # the item's income account

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        self.api = SuiteTalk(settings, self)

    # -- reading and writing records ----------------------------------------------------------

    def _get(self, record: str, key: str, *, expand: bool = False, correlation_id: str = "") -> dict[str, Any] | None:
        params = {"expandSubResources": "true"} if expand else None
        response = self.api.request("GET", f"/{record}/{key}", params=params, correlation_id=correlation_id)
        if response.status == 404:
            return None
        found = response.json()
        if not isinstance(found, dict) or "id" not in found:
            raise TransientError(f"NetSuite answered GET /{record}/{key} without a record", body_excerpt=response.text)
        return found

    def _find(self, record: str, reference: str, *, expand: bool = False) -> dict[str, Any] | None:
        return self._get(record, f"eid:{external_id(reference)}", expand=expand)

    def _must_get(self, record: str, internal_id: str, what: str, *, expand: bool = False) -> dict[str, Any]:
        found = self._get(record, internal_id, expand=expand)
        if found is None:
            raise BusinessRuleError(
                "erp_document_missing",
                f"NetSuite has no {what} with internal id {internal_id} (deleted, or linked to another record). "
                "Check it in NetSuite, then link the right document or skip this posting.",
                f"GET /{record}/{internal_id} answered 404",
                params={"value": internal_id},
            )
        return found

    def _write(
        self,
        method: str,
        path: str,
        body: dict[str, Any],
        *,
        replace: tuple[str, ...] = (),
        correlation_id: str = "",
        mapping: dict[str, tuple[str, str]] | None = None,
    ) -> str:
        """Send a write; the internal id of the record is the last segment of ``Location``."""
        params = {"replace": ",".join(replace)} if replace else None
        try:
            response = self.api.request(method, path, params=params, body=body, correlation_id=correlation_id)
        except NetSuiteRefusal as exc:
            raise self._refusal(exc, mapping or {}) from exc
        location = response.headers.get("Location", "")
        if not location:
            raise UncertainOutcome(f"NetSuite answered {method} {path} with {response.status} and no Location")
        return location.rstrip("/").rsplit("/", 1)[-1]

    def _upsert(self, record: str, reference: str, body: dict[str, Any], **kwargs: Any) -> str:
        return self._write("PUT", f"/{record}/eid:{external_id(reference)}", body, **kwargs)

    @staticmethod
    def _refusal(exc: NetSuiteRefusal, mapping: dict[str, tuple[str, str]]) -> ConnectorError:
        """NetSuite's refusal in finance words. ``mapping``: field name → (error code, the mapping it
        came from), for fields whose values come from the hub's mappings."""
        invalid = exc.invalid_value()
        if invalid is not None:
            field, value = invalid
            if field in mapping:
                code, what = mapping[field]
                return BusinessRuleError(
                    code,
                    f"NetSuite has no {what} with internal id {value}. Correct the {what} mapping in the hub "
                    "(or create it in NetSuite), then retry.",
                    exc.detail,
                    params={"value": value, "erp_message": exc.message},
                    status=exc.status,
                    body_excerpt=exc.body_excerpt,
                )
        if exc.status == 400 and (invalid is not None or "USER_ERROR" in exc.codes):
            return BusinessRuleError(
                "erp_rejected",
                f"NetSuite refused it: {exc.message}",
                exc.detail,
                params={"erp_message": exc.message},
                status=exc.status,
                body_excerpt=exc.body_excerpt,
            )
        if exc.status == 403:
            return ConfigurationError(
                f"the NetSuite role lacks a permission: {exc.message}",
                finance_message="The NetSuite role the hub signs in with may not do this; an integration engineer "
                "must grant the permission.",
                status=exc.status,
                body_excerpt=exc.body_excerpt,
            )
        return ConfigurationError(
            exc.detail,
            code="schema_mismatch",
            finance_message="NetSuite did not accept the request the hub sent; an integration engineer must check "
            "the connector against the NetSuite account.",
            status=exc.status,
            body_excerpt=exc.body_excerpt,
        )

    # -- document parts -----------------------------------------------------------------------

    @staticmethod
    def _subsidiary(dimensions: dict[str, str]) -> dict[str, str]:
        subsidiary = dimensions.get("subsidiary") or dimensions.get("company")
        if not subsidiary:
            raise ConfigurationError("a NetSuite document needs a subsidiary; map the subsidiary dimension")
        return _ref(subsidiary)

    @staticmethod
    def _segments(dimensions: dict[str, str]) -> dict[str, dict[str, str]]:
        return {name: _ref(dimensions[name]) for name in DIMENSION_FIELDS if dimensions.get(name)}

    def _header(
        self, dimensions: dict[str, str], erp_currency: str, currency: str, on: datetime.date
    ) -> dict[str, Any]:
        if not erp_currency:
            raise ConfigurationError(f"no NetSuite currency id for {currency}; map the currency")
        return {
            "subsidiary": self._subsidiary(dimensions),
            "currency": _ref(erp_currency),
            "tranDate": on.isoformat(),
            **self._segments(dimensions),
        }

    def _item_lines(
        self, lines: tuple[InvoiceLineDocument, ...], currency: str, dimensions: dict[str, str]
    ) -> list[dict[str, Any]]:
        segments = self._segments(dimensions)
        items = []
        for line in lines:
            if not line.item:
                raise ConfigurationError(f"the line {line.description!r} has no NetSuite item; map an item")
            values: dict[str, Any] = {
                "item": _ref(line.item),
                "description": line.description[:4000],
                "quantity": line.quantity,
                "rate": to_decimal(line.unit_amount_minor, currency),
                "amount": to_decimal(line.amount_minor, currency),
                **segments,
            }
            if line.tax_code:
                values["taxCode"] = _ref(line.tax_code)
            items.append(values)
        return items

    _SALES_FIELDS: ClassVar[dict[str, tuple[str, str]]] = {
        "item": ("unknown_item", "item"),
        "taxCode": ("unknown_tax_code", "tax code"),
        "currency": ("unknown_currency", "currency"),
        "subsidiary": ("invalid_legal_entity", "subsidiary"),
        "department": ("unknown_department", "department"),
        "class": ("unknown_class", "class"),
        "location": ("unknown_location", "location"),
    }

    @staticmethod
    def _result(record: dict[str, Any], number_field: str = "tranId", **detail: str) -> PostResult:
        extra = {key: value for key, value in detail.items() if value}
        for field in ("total", "amountRemaining", "unapplied"):
            if record.get(field) is not None:
                extra.setdefault(field, str(record[field]))
        return PostResult(str(record["id"]), str(record.get(number_field) or ""), extra)

    # -- lookups by reference -----------------------------------------------------------------

    _FIND: ClassVar[dict[str, str]] = {
        OPERATION_ENSURE_CUSTOMER: CUSTOMER,
        OPERATION_POST_INVOICE: INVOICE,
        OPERATION_POST_CREDIT_MEMO: CREDIT_MEMO,
        OPERATION_APPLY_PAYMENT: PAYMENT,
        OPERATION_REFUND_CREDIT_MEMO: REFUND,
        OPERATION_VOID_INVOICE: CREDIT_MEMO,
        OPERATION_WRITE_OFF: CREDIT_MEMO,
        OPERATION_RECEIVE_ON_ACCOUNT: PAYMENT,
        **dict.fromkeys(DISPUTE_MOVEMENTS, JOURNAL),
    }

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        if operation == OPERATION_VOID_CREDIT_MEMO:
            reversal = self._find(INVOICE, external_ref)
            if reversal is None or _amount(reversal, "amountRemaining") != 0:
                return None  # the credit memo is not re-applied to its reversal yet: not done
            return self._result(reversal, action="credit memo reversed")
        if operation == OPERATION_APPLY_CREDIT:
            return self._find_credit_application(external_ref)
        record = self._FIND.get(operation)
        if record is None:
            raise ConfigurationError(f"the NetSuite connector does not know the operation {operation!r}")
        found = self._find(record, external_ref)
        if found is None:
            return None
        return self._result(found, "entityId" if record == CUSTOMER else "tranId")

    # -- customers ----------------------------------------------------------------------------

    def ensure_customer(self, doc: CustomerDocument) -> PostResult:
        """Created with its subsidiary, currency, e-mail, tax registration and billing address; later
        only the name and e-mail are kept in step (accountants edit addresses in NetSuite)."""
        existing = self._find(CUSTOMER, doc.external_ref)
        name = (doc.name or doc.external_ref)[:83]
        if existing is None:
            body: dict[str, Any] = {
                "companyName": name,
                "isPerson": False,
                "subsidiary": self._subsidiary(doc.dimensions),
            }
            if doc.erp_currency:
                body["currency"] = _ref(doc.erp_currency)
            if doc.email:
                body["email"] = doc.email
            if doc.tax_id:
                body["vatRegNumber"] = doc.tax_id
            address = _address(doc.bill_to)
            if address:
                body["addressBook"] = {
                    "items": [{"defaultBilling": True, "defaultShipping": True, "addressBookAddress": address}]
                }
            action = "created"
        else:
            body = {}
            if doc.name and existing.get("companyName") != name:
                body["companyName"] = name
            if doc.email and existing.get("email") != doc.email:
                body["email"] = doc.email
            action = "updated" if body else "unchanged"
        if body:
            internal_id = self._upsert(
                CUSTOMER,
                doc.external_ref,
                body,
                correlation_id=doc.correlation_id,
                mapping={
                    "subsidiary": ("invalid_legal_entity", "subsidiary"),
                    "currency": ("unknown_currency", "currency"),
                },
            )
            existing = self._must_get(CUSTOMER, internal_id, "customer")
        return self._result(existing, "entityId", action=action)

    # -- invoices and credit memos ------------------------------------------------------------

    def post_invoice(self, doc: InvoiceDocument) -> PostResult:
        expected = to_decimal(doc.total_minor, doc.currency)
        existing = self._find(INVOICE, doc.external_ref)
        if existing is not None:
            if _amount(existing, "total") == expected:
                return self._result(existing, action="already posted")
            if _amount(existing, "amountRemaining") != _amount(existing, "total"):
                raise self._posted_mismatch("Invoice", doc.number, existing, expected, doc.currency)
        body = {
            "entity": _ref(doc.customer_erp_id),
            **self._header(doc.dimensions, doc.erp_currency, doc.currency, doc.invoice_date),
            "memo": f"{doc.number} ({doc.external_ref})"[:999],
            "otherRefNum": doc.number[:45],
            "item": {"items": self._item_lines(doc.lines, doc.currency, doc.dimensions)},
        }
        if doc.due_date:
            body["dueDate"] = doc.due_date.isoformat()
        internal_id = self._upsert(
            INVOICE,
            doc.external_ref,
            body,
            replace=("item",),
            correlation_id=doc.correlation_id,
            mapping=self._SALES_FIELDS,
        )
        posted = self._must_get(INVOICE, internal_id, "invoice")
        self._check_total("invoice", doc.number, posted, expected, doc.currency)
        return self._result(posted, action="posted")

    def post_credit_memo(self, doc: CreditMemoDocument) -> PostResult:
        """A credit memo with the credited lines, applied to its invoice for as much as the invoice
        still has open; what is left stays on the credit memo as the customer's credit."""
        expected = to_decimal(doc.total_minor, doc.currency)
        existing = self._find(CREDIT_MEMO, doc.external_ref, expand=True)
        already_applied = Decimal(0)
        if existing is not None:
            if _amount(existing, "total") == expected:
                return self._result(existing, action="already posted")
            if _amount(existing, "unapplied") + self._applied_to(existing, doc.invoice_erp_id) != _amount(
                existing, "total"
            ):
                raise self._posted_mismatch("Credit note", doc.number, existing, expected, doc.currency)
            already_applied = self._applied_to(existing, doc.invoice_erp_id)
        invoice = self._must_get(INVOICE, doc.invoice_erp_id, "invoice")
        open_amount = _amount(invoice, "amountRemaining") + already_applied
        applied = min(expected, open_amount)
        body: dict[str, Any] = {
            "entity": _ref(doc.customer_erp_id),
            **self._header(doc.dimensions, doc.erp_currency, doc.currency, doc.invoice_date),
            "memo": f"{doc.number} on {invoice.get('tranId') or doc.invoice_ref}: {doc.reason or 'credit'} "
            f"({doc.external_ref})"[:999],
            "otherRefNum": doc.number[:45],
            "item": {"items": self._item_lines(doc.lines, doc.currency, doc.dimensions)},
            "apply": {
                "items": [{"doc": _ref(doc.invoice_erp_id), "apply": True, "amount": applied}] if applied > 0 else []
            },
        }
        internal_id = self._upsert(
            CREDIT_MEMO,
            doc.external_ref,
            body,
            replace=("item", "apply"),
            correlation_id=doc.correlation_id,
            mapping=self._SALES_FIELDS,
        )
        posted = self._must_get(CREDIT_MEMO, internal_id, "credit memo")
        self._check_total("credit note", doc.number, posted, expected, doc.currency)
        return self._result(posted, action="posted", applied=str(applied))

    @staticmethod
    def _applied_to(record: dict[str, Any], doc_id: str) -> Decimal:
        return sum(
            (
                _amount(line, "amount")
                for line in _items(record, "apply")
                if line.get("apply") and _id_of(line.get("doc")) == str(doc_id)
            ),
            Decimal(0),
        )

    @staticmethod
    def _check_total(what: str, number: str, record: dict[str, Any], expected: Decimal, currency: str) -> None:
        total = _amount(record, "total")
        if total != expected:
            raise BusinessRuleError(
                "amount_mismatch",
                f"NetSuite computes {total} {currency} for {what} {number} ({record.get('tranId')}), billing says "
                f"{expected}. Check the tax code and item mappings of its lines; the document stays in NetSuite "
                "under the hub's external ID and is corrected by the retry.",
                f"{what} {record['id']} total {total} != {expected}",
                params={"erp_total": str(total), "billing_total": str(expected)},
            )

    @staticmethod
    def _posted_mismatch(
        kind: str, number: str, record: dict[str, Any], expected: Decimal, currency: str
    ) -> BusinessRuleError:
        total = _amount(record, "total")
        return BusinessRuleError(
            "amount_mismatch",
            f"{kind} {number} is already in NetSuite as {record.get('tranId')} for {total} {currency}, with payments "
            f"or credits applied, but billing now says {expected}. Issue a credit note in billing rather than "
            "changing a settled document.",
            f"{kind} {record['id']} total {total} != {expected}, already applied",
            params={"erp_total": str(total), "billing_total": str(expected)},
        )

    # -- cash -------------------------------------------------------------------------------

    def _payment_body(
        self, doc: PaymentDocument | OnAccountDocument, on: datetime.date, memo: str, apply: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "customer": _ref(doc.customer_erp_id),
            **self._header(doc.dimensions, doc.erp_currency, doc.currency, on),
            "undepFunds": False,
            "account": _ref(doc.payment_journal),
            "payment": to_decimal(doc.amount_minor, doc.currency),
            "autoApply": False,
            "memo": memo[:999],
            "apply": {"items": apply},
        }

    _CASH_FIELDS: ClassVar[dict[str, tuple[str, str]]] = {
        "account": ("unknown_payment_journal", "payment account"),
        "currency": ("unknown_currency", "currency"),
        "subsidiary": ("invalid_legal_entity", "subsidiary"),
        "department": ("unknown_department", "department"),
        "class": ("unknown_class", "class"),
        "location": ("unknown_location", "location"),
    }

    def apply_payment(self, doc: PaymentDocument) -> PostResult:
        existing = self._find(PAYMENT, doc.external_ref)
        if existing is not None:
            return self._result(existing, action="already applied")
        amount = to_decimal(doc.amount_minor, doc.currency)
        invoice = self._must_get(INVOICE, doc.invoice_erp_id, "invoice")
        self._require_open(invoice, amount, doc.currency, "the payment of")
        body = self._payment_body(
            doc,
            doc.paid_on,
            f"Payment {doc.external_ref} on {invoice.get('tranId') or doc.invoice_ref}",
            [{"doc": _ref(doc.invoice_erp_id), "apply": True, "amount": amount}],
        )
        internal_id = self._upsert(
            PAYMENT, doc.external_ref, body, correlation_id=doc.correlation_id, mapping=self._CASH_FIELDS
        )
        return self._result(self._must_get(PAYMENT, internal_id, "customer payment"), action="applied")

    @staticmethod
    def _require_open(invoice: dict[str, Any], amount: Decimal, currency: str, what: str) -> None:
        remaining = _amount(invoice, "amountRemaining")
        if remaining < amount:
            raise BusinessRuleError(
                "overpayment",
                f"NetSuite invoice {invoice.get('tranId')} has {remaining} {currency} left to pay; {what} {amount} "
                f"{currency} does not fit. Look for a payment or credit recorded by hand in NetSuite; link or skip "
                "this one.",
                f"invoice {invoice['id']} amountRemaining {remaining} < {amount}",
                params={"erp_total": str(remaining), "billing_total": str(amount)},
            )

    def receive_on_account(self, doc: OnAccountDocument) -> PostResult:
        """An unapplied customer payment: the receivable goes down by it and the customer's balance
        shows the credit."""
        existing = self._find(PAYMENT, doc.external_ref)
        if existing is not None:
            return self._result(existing, action="already received")
        body = self._payment_body(doc, doc.received_on, f"Unapplied cash from payment {doc.payment_ref}", [])
        internal_id = self._upsert(
            PAYMENT, doc.external_ref, body, correlation_id=doc.correlation_id, mapping=self._CASH_FIELDS
        )
        return self._result(self._must_get(PAYMENT, internal_id, "customer payment"), action="received on account")

    @staticmethod
    def _on_account_ref(application_ref: str) -> str:
        """``<source>:<payment>:<invoice>`` → the payment's unapplied cash, ``<source>:<payment>:on-account``."""
        return application_ref.rpartition(":")[0] + ON_ACCOUNT_SUFFIX

    def apply_credit(self, doc: PaymentDocument) -> PostResult:
        """The invoice joins the ``apply`` sublist of the payment's unapplied cash (an upsert of that
        payment: a keyed sublist, so the other applications stay)."""
        reference = self._on_account_ref(doc.external_ref)
        cash = self._find(PAYMENT, reference, expand=True)
        if cash is None:
            # The unapplied cash is posted by its own posting, which may not have run yet.
            raise LookupError(f"the unapplied cash {reference} is not in NetSuite yet")
        amount = to_decimal(doc.amount_minor, doc.currency)
        if self._applied_to(cash, doc.invoice_erp_id) > 0:
            return self._result(cash, action="already applied from credit", invoice=doc.invoice_erp_id)
        unapplied = _amount(cash, "unapplied")
        if unapplied < amount:
            raise BusinessRuleError(
                "overpayment",
                f"The customer's credit in NetSuite ({cash.get('tranId')}) has {unapplied} {doc.currency} left; "
                f"applying {amount} {doc.currency} to invoice {doc.invoice_ref} does not fit. Look for credit used "
                "by hand in NetSuite; link or skip this one.",
                f"customerPayment {cash['id']} unapplied {unapplied} < {amount}",
                params={"erp_total": str(unapplied), "billing_total": str(amount)},
            )
        invoice = self._must_get(INVOICE, doc.invoice_erp_id, "invoice")
        self._require_open(invoice, amount, doc.currency, "applying credit of")
        apply = [{"doc": _ref(doc.invoice_erp_id), "apply": True, "amount": amount}]
        self._upsert(PAYMENT, reference, {"apply": {"items": apply}}, correlation_id=doc.correlation_id)
        updated = self._must_get(PAYMENT, str(cash["id"]), "customer payment", expand=True)
        if self._applied_to(updated, doc.invoice_erp_id) != amount:
            raise UncertainOutcome(f"NetSuite accepted the credit application {doc.external_ref} but does not show it")
        return self._result(updated, action="applied from credit", invoice=doc.invoice_erp_id)

    def _find_credit_application(self, external_ref: str) -> PostResult | None:
        """The unapplied cash with an application to the invoice ``external_ref`` names (any version
        of it: an amended invoice has ``#r<n>`` after its reference)."""
        cash = self._find(PAYMENT, self._on_account_ref(external_ref), expand=True)
        if cash is None:
            return None
        source, _, rest = external_ref.partition(":")
        invoice_ref = f"{source}:{rest.rpartition(':')[2]}"
        wanted = external_id(invoice_ref)
        for line in _items(cash, "apply"):
            if not line.get("apply"):
                continue
            invoice = self._get(INVOICE, _id_of(line.get("doc")))
            eid = str((invoice or {}).get("externalId") or "")
            if eid == wanted or eid.startswith(wanted + external_id("#")):
                return self._result(cash, action="applied from credit", invoice=str(invoice["id"]))  # type: ignore[index]
        return None

    def refund_credit_memo(self, doc: RefundDocument) -> PostResult:
        """A customer refund applying the credit memo, paid from the refund account."""
        existing = self._find(REFUND, doc.external_ref)
        if existing is not None:
            return self._result(existing, action="already refunded")
        amount = to_decimal(doc.amount_minor, doc.currency)
        memo = self._must_get(CREDIT_MEMO, doc.credit_memo_erp_id, "credit memo")
        owed = _amount(memo, "unapplied")
        if owed < amount:
            raise BusinessRuleError(
                "overrefund",
                f"Billing refunded {amount} {doc.currency} on credit note {doc.number or doc.credit_memo_ref}, but "
                f"NetSuite credit memo {memo.get('tranId')} leaves {owed} to pay back. Look for a refund recorded "
                "by hand in NetSuite; link or skip this one.",
                f"creditMemo {memo['id']} unapplied {owed} < {amount}",
                params={"erp_total": str(owed), "billing_total": str(amount)},
            )
        body = {
            "customer": _ref(doc.customer_erp_id or _id_of(memo.get("entity"))),
            **self._header(doc.dimensions, doc.erp_currency, doc.currency, doc.refunded_on),
            "account": _ref(doc.payment_journal),
            "memo": f"Refund {doc.external_ref} of {memo.get('tranId') or doc.credit_memo_ref}"[:999],
            "apply": {"items": [{"doc": _ref(doc.credit_memo_erp_id), "apply": True, "amount": amount}]},
        }
        internal_id = self._upsert(
            REFUND, doc.external_ref, body, correlation_id=doc.correlation_id, mapping=self._CASH_FIELDS
        )
        return self._result(self._must_get(REFUND, internal_id, "customer refund"), action="refunded")

    # -- voids and write-offs -----------------------------------------------------------------

    def void_invoice(self, doc: VoidDocument) -> PostResult:
        """An invoice is credited in full by a credit memo transformed from it; a credit memo is
        reversed by an invoice with its lines, to which it is re-applied (see the module doc)."""
        invoice = self._get(INVOICE, doc.invoice_erp_id)
        if invoice is not None:
            return self._credit_invoice(doc, invoice)
        memo = self._get(CREDIT_MEMO, doc.invoice_erp_id, expand=True)
        if memo is not None:
            return self._reverse_credit_memo(doc, memo)
        raise BusinessRuleError(
            "erp_document_missing",
            f"NetSuite has no invoice or credit memo with internal id {doc.invoice_erp_id} to void for "
            f"{doc.number or doc.invoice_ref}. Check it in NetSuite, then link the right document or skip this "
            "posting.",
            f"GET invoice/creditMemo {doc.invoice_erp_id} answered 404",
            params={"value": doc.invoice_erp_id},
        )

    def _credit_invoice(self, doc: VoidDocument, invoice: dict[str, Any]) -> PostResult:
        existing = self._find(CREDIT_MEMO, doc.external_ref)
        if existing is not None:
            return self._result(existing, action="already credited", invoice=str(invoice.get("tranId") or ""))
        total, remaining = _amount(invoice, "total"), _amount(invoice, "amountRemaining")
        if remaining != total:
            raise BusinessRuleError(
                "void_after_payment",
                f"Billing {doc.why} invoice {doc.number or doc.invoice_ref}, but NetSuite invoice "
                f"{invoice.get('tranId')} already has {total - remaining} paid or credited on it, so it cannot be "
                "credited in full. Refund the payment in billing (or remove it in NetSuite), then retry.",
                f"invoice {invoice['id']} amountRemaining {remaining} != total {total}",
                params={"erp_number": str(invoice.get("tranId") or "")},
            )
        body = {
            "externalId": external_id(doc.external_ref),
            "tranDate": doc.voided_on.isoformat(),
            "memo": f"Billing {doc.why} invoice {doc.number or doc.invoice_ref} ({doc.external_ref})"[:999],
            "apply": {"items": [{"doc": _ref(doc.invoice_erp_id), "apply": True, "amount": total}]},
        }
        internal_id = self._write(
            "POST", f"/{INVOICE}/{doc.invoice_erp_id}/!transform/{CREDIT_MEMO}", body, correlation_id=doc.correlation_id
        )
        memo = self._must_get(CREDIT_MEMO, internal_id, "credit memo")
        credited = self._must_get(INVOICE, doc.invoice_erp_id, "invoice")
        if _amount(credited, "amountRemaining") != 0:
            raise UncertainOutcome(f"NetSuite credit memo {internal_id} does not settle invoice {doc.invoice_erp_id}")
        return self._result(memo, action="credited", invoice=str(invoice.get("tranId") or ""))

    def _reverse_credit_memo(self, doc: VoidDocument, memo: dict[str, Any]) -> PostResult:
        total = _amount(memo, "total")
        reversal = self._find(INVOICE, doc.external_ref)
        applied_elsewhere = (
            total
            - _amount(memo, "unapplied")
            - sum((_amount(line, "amount") for line in _items(memo, "apply") if line.get("apply")), Decimal(0))
        )
        if reversal is None:
            if applied_elsewhere > 0:
                raise BusinessRuleError(
                    "void_after_payment",
                    f"Billing voided credit note {doc.number or doc.invoice_ref}, but {applied_elsewhere} of NetSuite "
                    f"credit memo {memo.get('tranId')} was already refunded, so it cannot be reversed. Record the "
                    "reversal by hand in NetSuite, then skip this posting.",
                    f"creditMemo {memo['id']} refunded {applied_elsewhere}",
                    params={"erp_number": str(memo.get("tranId") or "")},
                )
            currency = _id_of(memo.get("currency"))
            lines = []
            for line in _items(memo, "item"):
                values = {
                    key: line[key]
                    for key in ("item", "description", "quantity", "rate", "amount", "taxCode", *DIMENSION_FIELDS)
                    if line.get(key) is not None
                }
                for key in ("item", "taxCode", *DIMENSION_FIELDS):
                    if key in values:
                        values[key] = _ref(_id_of(values[key]))
                lines.append(values)
            body = {
                "entity": _ref(doc.customer_erp_id or _id_of(memo.get("entity"))),
                "subsidiary": _ref(_id_of(memo.get("subsidiary"))),
                "currency": _ref(currency),
                "tranDate": doc.voided_on.isoformat(),
                **{name: _ref(_id_of(memo[name])) for name in DIMENSION_FIELDS if memo.get(name)},
                "memo": f"Reverses credit memo {memo.get('tranId')}: billing {doc.why} credit note "
                f"{doc.number or doc.invoice_ref} ({doc.external_ref})"[:999],
                "item": {"items": lines},
            }
            internal_id = self._upsert(
                INVOICE, doc.external_ref, body, replace=("item",), correlation_id=doc.correlation_id
            )
            reversal = self._must_get(INVOICE, internal_id, "invoice")
            if _amount(reversal, "total") != total:
                raise BusinessRuleError(
                    "amount_mismatch",
                    f"NetSuite computes {reversal.get('total')} for the reversal of credit memo {memo.get('tranId')}, "
                    f"which is {total}. Check its tax codes in NetSuite, then retry.",
                    f"reversal invoice {internal_id} total {reversal.get('total')} != {total}",
                    params={"erp_total": str(reversal.get("total")), "billing_total": str(total)},
                )
        if _amount(reversal, "amountRemaining") != 0:
            # The whole credit memo moves onto its reversal: off the original invoice, which is owed again.
            self._write(
                "PATCH",
                f"/{CREDIT_MEMO}/{memo['id']}",
                {"apply": {"items": [{"doc": _ref(str(reversal["id"])), "apply": True, "amount": total}]}},
                replace=("apply",),
                correlation_id=doc.correlation_id,
            )
            reversal = self._must_get(INVOICE, str(reversal["id"]), "invoice")
            if _amount(reversal, "amountRemaining") != 0:
                raise UncertainOutcome(f"credit memo {memo['id']} is not applied to its reversal {reversal['id']}")
        return self._result(reversal, action="credit memo reversed", credit_memo=str(memo.get("tranId") or ""))

    def write_off(self, doc: WriteOffDocument) -> PostResult:
        """A credit memo for the open amount on the bad-debt item, applied to the invoice."""
        existing = self._find(CREDIT_MEMO, doc.external_ref)
        if existing is not None:
            return self._result(existing, action="already written off")
        amount = to_decimal(doc.amount_minor, doc.currency)
        invoice = self._must_get(INVOICE, doc.invoice_erp_id, "invoice")
        remaining = _amount(invoice, "amountRemaining")
        if remaining > amount:
            # Billing counts a payment the ERP does not hold yet: its posting is on its way.
            raise LookupError(
                f"NetSuite invoice {invoice.get('tranId')} still has {remaining} open, billing writes off {amount}: "
                "waiting for a payment posting"
            )
        if remaining < amount:
            raise BusinessRuleError(
                "write_off_amount_mismatch",
                f"Billing writes off {amount} {doc.currency} of invoice {doc.number or doc.invoice_ref}, but NetSuite "
                f"invoice {invoice.get('tranId')} has {remaining} open. Check for a payment or credit recorded by hand "
                "in NetSuite, then retry or skip.",
                f"invoice {invoice['id']} amountRemaining {remaining} != {amount}",
                params={"erp_total": str(remaining), "billing_total": str(amount)},
            )
        segments = self._segments(doc.dimensions)
        body = {
            "entity": _ref(doc.customer_erp_id or _id_of(invoice.get("entity"))),
            **self._header(doc.dimensions, doc.erp_currency, doc.currency, doc.written_off_on),
            "memo": f"Bad debt: {doc.reason or 'written off'}, invoice {invoice.get('tranId')} ({doc.external_ref})"[
                :999
            ],
            "item": {
                "items": [
                    {
                        "item": _ref(doc.write_off_method),
                        "description": f"Bad debt written off on invoice {doc.number or invoice.get('tranId')}"[:4000],
                        "quantity": Decimal(1),
                        "rate": amount,
                        "amount": amount,
                        **segments,
                    }
                ]
            },
            "apply": {"items": [{"doc": _ref(doc.invoice_erp_id), "apply": True, "amount": amount}]},
        }
        internal_id = self._upsert(
            CREDIT_MEMO,
            doc.external_ref,
            body,
            replace=("item", "apply"),
            correlation_id=doc.correlation_id,
            mapping={**self._SALES_FIELDS, "item": ("unknown_write_off_method", "bad-debt item (write-off method)")},
        )
        return self._result(self._must_get(CREDIT_MEMO, internal_id, "credit memo"), action="written off")

    # -- disputes -----------------------------------------------------------------------------

    def move_disputed_funds(self, doc: DisputeMovementDocument) -> PostResult:
        """One journal entry per movement; the receivable is not touched (the invoice stays paid)."""
        existing = self._find(JOURNAL, doc.external_ref)
        if existing is not None:
            return self._result(existing, action=f"already {doc.movement}")
        if doc.movement == "lost" and not doc.loss_account:
            raise ConfigurationError(f"a lost dispute needs a loss account: {doc.external_ref}")
        debit, credit = {
            "withdrawn": (doc.dispute_account, doc.payment_journal),
            "reinstated": (doc.payment_journal, doc.dispute_account),
            "lost": (doc.loss_account, doc.dispute_account),
        }[doc.movement]
        amount = to_decimal(doc.amount_minor, doc.currency)
        label = f"Dispute {doc.dispute_ref} on payment {doc.payment_ref}: funds {doc.movement}"[:999]
        segments = self._segments(doc.dimensions)
        body = {
            **self._header(doc.dimensions, doc.erp_currency, doc.currency, doc.moved_on),
            "memo": f"{label} ({doc.external_ref})"[:999],
            "line": {
                "items": [
                    {"account": _ref(debit), "debit": amount, "memo": label, **segments},
                    {"account": _ref(credit), "credit": amount, "memo": label, **segments},
                ]
            },
        }
        accounts = {doc.payment_journal: "unknown_payment_journal", doc.dispute_account: "unknown_dispute_account"}
        if doc.loss_account:
            accounts[doc.loss_account] = "unknown_dispute_loss_account"
        try:
            internal_id = self._upsert(
                JOURNAL,
                doc.external_ref,
                body,
                replace=("line",),
                correlation_id=doc.correlation_id,
                mapping=self._CASH_FIELDS,
            )
        except BusinessRuleError as exc:
            if exc.code == "unknown_payment_journal" and exc.params.get("value") in accounts:
                value = exc.params["value"]
                exc.code = accounts[value]
                exc.finance_message = (
                    f"NetSuite has no account with internal id {value}. Correct the "
                    f"{exc.code.removeprefix('unknown_').replace('_', ' ')} mapping in the hub, then retry."
                )
            raise
        return self._result(self._must_get(JOURNAL, internal_id, "journal entry"), action=doc.movement)

    def close(self) -> None:
        self.api.close()


def _address(address: Address) -> dict[str, Any]:
    values: dict[str, Any] = {
        "addr1": address.line1,
        "addr2": address.line2,
        "city": address.city,
        "state": address.state,
        "zip": address.postal_code,
    }
    found = {key: value for key, value in values.items() if value}
    if address.country:
        found["country"] = {"id": address.country.upper()}
    return found
