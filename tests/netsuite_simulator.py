"""A contract simulator of NetSuite's SuiteTalk REST web services for the tests: the part of the
record service (``/services/rest/record/v1``) and the OAuth 2.0 token endpoint the NetSuite
connector uses, served over real HTTP from an in-memory account, so the connector runs unchanged
against it.

Written from Oracle's NetSuite Help Center:

- "Using the Upsert Operation" and "Using External IDs": ``PUT .../<record>/eid:<external id>``
  creates the record or updates the one carrying the external ID; an external ID holds letters,
  digits, ``_`` and ``-``; ``externalId`` may also be given in a body.
- "Creating a Record Instance", "Updating a Record Instance", "Transforming Records": writes answer
  ``204 No Content`` with the record's URL in ``Location``; ``POST .../invoice/<id>/!transform/
  creditMemo`` makes a credit memo from the invoice (its lines, applied to it).
- "Updating a Sublist" and "Replacing a Sublist": on update, lines of a non-keyed sublist (invoice
  ``item``, journal ``line``) are appended unless the sublist is named in ``?replace=``; lines of a
  keyed sublist (``apply``, keyed by ``doc``) are matched by their key, and with ``replace`` the
  unmatched ones are removed (unapplied).
- "Getting a Record Instance": sublists come as links unless ``expandSubResources=true``;
  references as ``{"id", "refName", "links"}``.
- "Customer Payment" (its code sample): ``customer``, ``payment``, ``account``, ``currency``,
  ``apply.items[{doc, apply, amount}]``.
- "Error Handling in REST Web Services": errors are ``{"type", "title", "status", "o:errorDetails":
  [{"detail", "o:errorCode", "o:errorPath"}]}``; an invalid reference reads "Invalid Field Value <v>
  for the following field: <f>"; ``X-NetSuite-PropertyNameValidation: Error`` turns an unknown
  field into a 400 (the default, a warning, ignores it: recorded in ``ignored_fields``).
- "RESTlets and REST Web Services Authentication Errors": 401 with ``WWW-Authenticate: Bearer
  realm="<account>", error="invalid_token"`` and ``INVALID_LOGIN``.
- "Concurrency Governance": a request over the account's limit is refused with 429 and
  ``CONCURRENCY_LIMIT_EXCEEDED``, without ``Retry-After``.
- "POST Request to the Token Endpoint and the Access Token Response" and "The Request Token
  Structure": ``grant_type=client_credentials``, ``client_assertion_type=urn:ietf:params:oauth:
  client-assertion-type:jwt-bearer``, a JWT signed with the certificate's key (header ``kid`` = the
  certificate id, PS256..ES512; claims ``iss`` = client id, ``scope``, ``aud`` = the token URL,
  ``iat``, ``exp`` at most 60 minutes later); the answer is ``{"access_token", "expires_in": "3600",
  "token_type": "bearer"}``.
- Token-based authentication: OAuth 1.0a (RFC 5849) with ``HMAC-SHA256`` and ``realm`` = the
  account id; the signature is checked here with an implementation of its own.

The account is set up as an accountant would: two subsidiaries, currencies by internal id, items
whose income accounts carry revenue (and a bad-debt item on the bad-debt expense account), a 20 %
tax code, deposit, disputed-funds and dispute-loss accounts. It keeps the rules a real account
enforces: a transaction's subsidiary is its customer's, nothing applies more than is open, a
journal entry balances, nothing posts into a closed period (``close_periods_through``). Balances
come from the general ledger the transactions make (``customer_balance``, ``account_balance``).

Faults on demand for the next writes (``fail_next``): ``503`` and ``500`` before anything is
saved, ``429`` (NetSuite's concurrency refusal, ``429:<s>`` with a ``Retry-After``),
``timeout_after_commit`` (saved, then the answer is held past the client's timeout) and
``500_after_commit``. ``refuse_tokens`` refuses the client credentials, ``expire_tokens()`` makes
NetSuite forget every access token it issued.

Divergences worth knowing: only what the connector uses is served (no list or query endpoints, no
deletes); ids are small integers shared by all transactions; NetSuite's own wording of business
errors may differ (a closed period is said here as "The accounting period ... is closed");
``X-NetSuite-Idempotency-Key`` and asynchronous requests are not served.
"""

from __future__ import annotations

import base64
import copy
import datetime
import hashlib
import hmac
import itertools
import json
import re
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ACCOUNT_ID = "1234567_SB1"
CLIENT_ID = "a3f2c1e0b9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2"
CERTIFICATE_PS256 = "pB7dPq0xWmNk2s9TzYh4Lr1cVe8Ju6Gf3Ao5Si"
CERTIFICATE_ES256 = "eC4xQz7wNp2Ls8Kr1Tm6Vy3Hb9Dg5Fj0Ua"
CONSUMER_KEY = "ck0e5d9c3b7a1f6e0d4c8b2a6f0e4d8c2b6a0f4e8d2c6b0a4f8e2d6c0b4a8f2e6"
CONSUMER_SECRET = "cs9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9"
TOKEN_ID = "tk1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a1f2"
TOKEN_SECRET = "ts2e4f6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8e0f2a4b6c8d0e2f4a6b8c0d2e4"
RECORD_PREFIX = "/services/rest/record/v1/"
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
AR = "1100"

# The account's setup: internal id -> name (and what an item or tax code posts to).
SUBSIDIARIES = {"1": "Hub Demo Inc.", "2": "Hub Demo GmbH"}
CURRENCIES = {"1": ("USD", 2), "2": ("EUR", 2), "3": ("GBP", 2), "4": ("JPY", 0)}
DEPARTMENTS = {"3": "Sales", "4": "Customer Success"}
CLASSES = {"5": "Subscriptions", "6": "Usage"}
LOCATIONS = {"7": "New York", "8": "Berlin"}
ACCOUNTS = {
    AR: "Accounts Receivable",
    "1150": "Card clearing",
    "1160": "Operating bank",
    "1190": "Disputed payments",
    "2200": "Sales tax payable",
    "4000": "Subscription revenue",
    "4100": "Usage revenue",
    "6800": "Bad debts",
    "6810": "Dispute losses",
}
ITEMS = {"201": ("Subscription", "4000"), "202": ("API usage", "4100"), "299": ("Bad debt write-off", "6800")}
TAX_CODES = {"301": ("VAT20", Decimal("0.20"), "2200")}

TRANSACTIONS = ("invoice", "creditMemo", "customerPayment", "customerRefund", "journalEntry")
PREFIXES = {
    "invoice": "INV",
    "creditMemo": "CM",
    "customerPayment": "PYMT",
    "customerRefund": "REF",
    "journalEntry": "JE",
}
_EXTERNAL_ID = re.compile(r"^[A-Za-z0-9_-]+$")

# -- the record shapes ------------------------------------------------------------------------

TEXT, BOOL, NUMBER, DATE, COUNTRY = "text", "bool", "number", "date", "country"


def ref(table: str) -> tuple[str, str]:
    return ("ref", table)


SEGMENTS = {"department": ref("department"), "class": ref("class"), "location": ref("location")}
ITEM_LINE = {
    "item": ref("item"),
    "description": TEXT,
    "quantity": NUMBER,
    "rate": NUMBER,
    "amount": NUMBER,
    "taxCode": ref("taxCode"),
    **SEGMENTS,
}
APPLY_LINE = {"doc": ref("transaction"), "apply": BOOL, "amount": NUMBER}
JOURNAL_LINE = {
    "account": ref("account"),
    "debit": NUMBER,
    "credit": NUMBER,
    "memo": TEXT,
    "entity": ref("customer"),
    **SEGMENTS,
}
ADDRESS = {"addr1": TEXT, "addr2": TEXT, "city": TEXT, "state": TEXT, "zip": TEXT, "country": COUNTRY}
ADDRESS_LINE = {
    "defaultBilling": BOOL,
    "defaultShipping": BOOL,
    "label": TEXT,
    "addressBookAddress": ("object", ADDRESS),
}
HEADER = {
    "externalId": TEXT,
    "subsidiary": ref("subsidiary"),
    "currency": ref("currency"),
    "tranDate": DATE,
    "memo": TEXT,
    **SEGMENTS,
}
SALES = {**HEADER, "entity": ref("customer"), "dueDate": DATE, "otherRefNum": TEXT}

# record -> (body fields, sublists: name -> (line fields, key field or None), required on create)
SHAPES: dict[str, tuple[dict[str, Any], dict[str, tuple[dict[str, Any], str | None]], tuple[str, ...]]] = {
    "customer": (
        {
            "externalId": TEXT,
            "companyName": TEXT,
            "isPerson": BOOL,
            "email": TEXT,
            "subsidiary": ref("subsidiary"),
            "currency": ref("currency"),
            "vatRegNumber": TEXT,
        },
        {"addressBook": (ADDRESS_LINE, None)},
        ("companyName", "subsidiary"),
    ),
    "invoice": (SALES, {"item": (ITEM_LINE, None)}, ("entity",)),
    "creditMemo": (SALES, {"item": (ITEM_LINE, None), "apply": (APPLY_LINE, "doc")}, ("entity",)),
    "customerPayment": (
        {
            **HEADER,
            "customer": ref("customer"),
            "payment": NUMBER,
            "account": ref("account"),
            "undepFunds": BOOL,
            "autoApply": BOOL,
        },
        {"apply": (APPLY_LINE, "doc")},
        ("customer", "payment"),
    ),
    "customerRefund": (
        {**HEADER, "customer": ref("customer"), "account": ref("account")},
        {"apply": (APPLY_LINE, "doc")},
        ("customer", "account"),
    ),
    "journalEntry": (HEADER, {"line": (JOURNAL_LINE, None)}, ("subsidiary",)),
}
LABELS = {
    "entity": "Customer",
    "customer": "Customer",
    "companyName": "Company Name",
    "subsidiary": "Subsidiary",
    "payment": "Payment Amount",
    "account": "Account",
}


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str, path: str = "") -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.path = status, code, detail, path


def _user_error(detail: str) -> Refused:
    return Refused(400, "USER_ERROR", f"Error while accessing a resource. {detail}")


def _number(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)


def _cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


def _dumps(value: Any) -> bytes:
    """JSON with Decimals as numbers, digit for digit."""

    def mark(item: Any) -> Any:
        if isinstance(item, Decimal):
            return f"\x00{item:f}\x00"
        if isinstance(item, dict):
            return {key: mark(inner) for key, inner in item.items()}
        if isinstance(item, list):
            return [mark(inner) for inner in item]
        return item

    return re.sub(r'"\\u0000(-?[0-9.]+)\\u0000"', r"\1", json.dumps(mark(value))).encode()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    text: str  # the body as sent
    body: Any = None  # parsed, numbers as Decimal
    status: int = 0
    committed: bool = False


@dataclass
class NetSuiteSimulator:
    token_ttl: int = 3600
    hang_seconds: float = 2.5
    refuse_tokens: bool = False
    closed_through: datetime.date | None = None
    requests: list[Recorded] = field(default_factory=list)
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    ignored_fields: list[str] = field(default_factory=list)
    records: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {name: {} for name in SHAPES})

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._faults: list[tuple[str, str]] = []
        self._tokens: dict[str, float] = {}
        self._nonces: set[tuple[str, str]] = set()
        self._ids = itertools.count(1001)
        self._numbers = itertools.count(1)
        self._rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._ec = ec.generate_private_key(ec.SECP256R1())
        self._certificates: dict[str, Any] = {
            CERTIFICATE_PS256: self._rsa.public_key(),
            CERTIFICATE_ES256: self._ec.public_key(),
        }
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                simulator._handle(self, "GET")

            def do_PUT(self) -> None:
                simulator._handle(self, "PUT")

            def do_POST(self) -> None:
                simulator._handle(self, "POST")

            def do_PATCH(self) -> None:
                simulator._handle(self, "PATCH")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="netsuite-simulator")
        self.thread.start()

    # -- what a test uses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def private_key(self, algorithm: str = "PS256") -> str:
        """The PEM of the key whose certificate is mapped to the integration (M2M setup)."""
        key = self._rsa if algorithm.startswith("PS") else self._ec
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    def settings(self, auth: str = "oauth2", **extra: Any) -> dict[str, Any]:
        """Connection settings pointing at this simulator."""
        common = {"account_id": ACCOUNT_ID, "base_url": self.url, "timeout": 5}
        if auth == "tba":
            credentials = {
                "consumer_key": CONSUMER_KEY,
                "consumer_secret": CONSUMER_SECRET,
                "token_id": TOKEN_ID,
                "token_secret": TOKEN_SECRET,
            }
            return {**common, "auth": "tba", **credentials, **extra}
        algorithm = str(extra.pop("algorithm", "PS256"))
        return {
            **common,
            "auth": "oauth2",
            "client_id": CLIENT_ID,
            "certificate_id": CERTIFICATE_PS256 if algorithm.startswith("PS") else CERTIFICATE_ES256,
            "private_key": self.private_key(algorithm),
            "algorithm": algorithm,
            **extra,
        }

    def fail_next(self, *modes: str, on: str = "") -> None:
        """For the next writes (to the record type ``on`` only, when given), in order: ``503``,
        ``500``, ``429``, ``429:<seconds>``, ``timeout_after_commit``, ``500_after_commit``."""
        with self._lock:
            self._faults.extend((mode, on) for mode in modes)

    def expire_tokens(self) -> None:
        with self._lock:
            self._tokens.clear()

    def close_periods_through(self, day: datetime.date | None) -> None:
        self.closed_through = day

    def record(self, record: str, *, eid: str = "", internal_id: str = "") -> dict[str, Any] | None:
        """A record as ``GET ...?expandSubResources=true`` shows it (derived amounts included)."""
        with self._lock:
            found = self._by_key(record, f"eid:{eid}" if eid else internal_id)
            return self._view(record, found, expand=True) if found else None

    def all(self, record: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._view(record, found, expand=True) for found in self.records[record].values()]

    def writes(self, method: str = "") -> list[Recorded]:
        return [r for r in self.requests if r.method != "GET" and (not method or r.method == method)]

    def customer_balance(self, customer_id: str) -> Decimal:
        """What the customer owes on the receivable: the sum of its lines in the general ledger."""
        with self._lock:
            return sum(
                (amount for account, entity, amount in self._ledger() if account == AR and entity == customer_id),
                Decimal(0),
            )

    def account_balance(self, account_id: str) -> Decimal:
        """Debits less credits on an account."""
        with self._lock:
            return sum((amount for account, _, amount in self._ledger() if account == account_id), Decimal(0))

    # -- HTTP ---------------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode() if length else ""
        record = Recorded(
            method, parts.path, dict(urllib.parse.parse_qsl(parts.query)), dict(handler.headers.items()), raw
        )
        with self._lock:
            self.requests.append(record)
        if parts.path == TOKEN_PATH and method == "POST":
            status, body, headers = self._token(raw)
            return self._answer(handler, record, status, body, headers)
        if not parts.path.startswith(RECORD_PREFIX):
            return self._answer(
                handler, record, *self._error(Refused(404, "NONEXISTENT_ID", f"No resource {parts.path}."))
            )
        challenge = self._authenticate(handler, method, parts)
        if challenge:
            return self._answer(handler, record, *challenge)
        writes = method in ("PUT", "POST", "PATCH")
        fault = ""
        if writes:
            target = parts.path.removeprefix(RECORD_PREFIX).split("/")[0]
            with self._lock:
                index = next((n for n, (_, on) in enumerate(self._faults) if on in ("", target)), None)
                fault = self._faults.pop(index)[0] if index is not None else ""
        if fault in ("503", "500") or fault.startswith("429"):
            return self._answer(handler, record, *self._fault(fault))
        try:
            record.body = json.loads(raw, parse_float=Decimal) if raw else None
            with self._lock:
                status, body, headers = self._route(method, parts, record, handler.headers)
                record.committed = writes and status < 300
        except Refused as exc:
            return self._answer(handler, record, *self._error(exc))
        except ValueError as exc:
            return self._answer(
                handler,
                record,
                *self._error(Refused(400, "INVALID_CONTENT", f"Invalid JSON in the request body: {exc}.")),
            )
        if fault == "timeout_after_commit":
            time.sleep(self.hang_seconds)  # saved; the answer comes after the client stopped waiting
        if fault == "500_after_commit":
            return self._answer(
                handler, record, *self._error(Refused(500, "UNEXPECTED_ERROR", "An unexpected error occurred."))
            )
        self._answer(handler, record, status, body, headers)

    def _fault(self, fault: str) -> tuple[int, bytes, dict[str, str]]:
        if fault == "503":
            return self._error(Refused(503, "SERVICE_UNAVAILABLE", "The service is temporarily unavailable."))
        if fault == "500":
            return self._error(Refused(500, "UNEXPECTED_ERROR", "An unexpected error occurred. Error ID: kq1x8f2e1a."))
        status, body, headers = self._error(
            Refused(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")
        )
        if ":" in fault:
            headers["Retry-After"] = fault.split(":", 1)[1]
        return status, body, headers

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        body: bytes,
        headers: dict[str, str] | None = None,
    ) -> None:
        record.status = status
        try:
            handler.send_response(status)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            if body:
                handler.send_header(
                    "Content-Type",
                    "application/vnd.oracle.resource+json; type=singular"
                    if status < 300
                    else "application/vnd.oracle.resource+json; type=error",
                )
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            if body:
                handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout after commit)

    @staticmethod
    def _error(exc: Refused, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
        sections = {400: "15.5.1", 401: "15.5.2", 403: "15.5.4", 404: "15.5.5", 500: "15.6.1", 503: "15.6.4"}
        titles = {
            400: "Bad Request",
            401: "Unauthorized",
            403: "Forbidden",
            404: "Not Found",
            429: "Too Many Requests",
            500: "Internal Server Error",
            503: "Service Unavailable",
        }
        kind = (
            "https://www.rfc-editor.org/rfc/rfc6585.html#section-4"
            if exc.status == 429
            else f"https://www.rfc-editor.org/rfc/rfc9110.html#section-{sections.get(exc.status, '15.5.1')}"
        )
        detail: dict[str, str] = {"detail": exc.detail, "o:errorCode": exc.code}
        if exc.path:
            detail["o:errorPath"] = exc.path
        body = {
            "type": kind,
            "title": titles.get(exc.status, "Error"),
            "status": exc.status,
            "o:errorDetails": [detail],
        }
        return exc.status, _dumps(body), dict(headers or {})

    # -- authentication -----------------------------------------------------------------------

    def _token(self, raw: str) -> tuple[int, bytes, dict[str, str]]:
        form = dict(urllib.parse.parse_qsl(raw))
        self.token_requests.append(form)

        def refuse(error: str, status: int = 400) -> tuple[int, bytes, dict[str, str]]:
            return status, _dumps({"error": error}), {}

        if form.get("grant_type") != "client_credentials" or form.get("client_assertion_type") != JWT_BEARER:
            return refuse("invalid_request")
        assertion = form.get("client_assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError:
            return refuse("invalid_request")
        key = self._certificates.get(str(header.get("kid")))
        algorithm = str(header.get("alg"))
        family_ok = (algorithm.startswith("PS") and isinstance(key, rsa.RSAPublicKey)) or (
            algorithm.startswith("ES") and isinstance(key, ec.EllipticCurvePublicKey)
        )
        if (
            key is None
            or header.get("typ") != "JWT"
            or algorithm not in ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
            or not family_ok
        ):
            return refuse("invalid_client", 401)
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=[algorithm],
                audience=self.url + TOKEN_PATH,
                issuer=CLIENT_ID,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError:
            return refuse("invalid_grant")
        scope = claims.get("scope")
        scopes = set(scope) if isinstance(scope, list) else {part.strip() for part in str(scope or "").split(",")}
        if "rest_webservices" not in scopes or int(claims["exp"]) - int(claims["iat"]) > 3600:
            return refuse("invalid_grant")
        if self.refuse_tokens:
            return refuse("invalid_grant")
        token = secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_ttl
        return 200, _dumps({"access_token": token, "expires_in": str(self.token_ttl), "token_type": "bearer"}), {}

    def _authenticate(
        self, handler: BaseHTTPRequestHandler, method: str, parts: urllib.parse.SplitResult
    ) -> tuple[int, bytes, dict[str, str]] | None:
        authorization = handler.headers.get("Authorization") or ""
        if authorization.startswith("Bearer "):
            with self._lock:
                expires = self._tokens.get(authorization.removeprefix("Bearer ").strip())
            if expires is not None and time.monotonic() < expires:
                return None
            scheme = f'Bearer realm="{ACCOUNT_ID}", error="invalid_token", error_description="Invalid login attempt."'
        elif authorization.startswith("OAuth "):
            if self._oauth1_valid(authorization, method, handler.headers.get("Host", ""), parts):
                return None
            scheme = f'OAuth realm="{ACCOUNT_ID}", error="token_rejected", error_description="Invalid login attempt."'
        else:
            scheme = f'Bearer realm="{ACCOUNT_ID}", error="invalid_request"'
        refused = Refused(
            401,
            "INVALID_LOGIN",
            "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at Setup > "
            "Users/Roles > User Management > View Login Audit Trail.",
        )
        return self._error(refused, {"WWW-Authenticate": scheme})

    def _oauth1_valid(self, authorization: str, method: str, host: str, parts: urllib.parse.SplitResult) -> bool:
        """RFC 5849 3.4: rebuild the signature base string from the request as received."""
        given = {name: urllib.parse.unquote(value) for name, value in re.findall(r'(\w+)="([^"]*)"', authorization)}
        if (
            given.get("realm") != ACCOUNT_ID
            or given.get("oauth_consumer_key") != CONSUMER_KEY
            or given.get("oauth_token") != TOKEN_ID
            or given.get("oauth_signature_method") != "HMAC-SHA256"
            or given.get("oauth_version", "1.0") != "1.0"
            or not given.get("oauth_nonce")
            or abs(time.time() - int(given.get("oauth_timestamp") or 0)) > 300
        ):
            return False
        nonce = (given["oauth_timestamp"], given["oauth_nonce"])
        with self._lock:
            if nonce in self._nonces:
                return False  # a replayed request
            self._nonces.add(nonce)

        def enc(text: str) -> str:
            return "".join(
                char
                if char.isascii() and (char.isalnum() or char in "-._~")
                else "".join(f"%{b:02X}" for b in char.encode())
                for char in text
            )

        params = [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
        params += [(k, v) for k, v in given.items() if k.startswith("oauth_") and k != "oauth_signature"]
        normalized = "&".join(f"{k}={v}" for k, v in sorted((enc(k), enc(v)) for k, v in params))
        base = f"{method}&{enc('http://' + host.lower() + parts.path)}&{enc(normalized)}"
        key = f"{enc(CONSUMER_SECRET)}&{enc(TOKEN_SECRET)}"
        expected = base64.b64encode(hmac.new(key.encode(), base.encode(), hashlib.sha256).digest()).decode()
        return hmac.compare_digest(expected, given.get("oauth_signature", ""))

    # -- the record service ---------------------------------------------------------------------

    def _route(
        self, method: str, parts: urllib.parse.SplitResult, request: Recorded, headers: Any
    ) -> tuple[int, bytes, dict[str, str]]:
        segments = [urllib.parse.unquote(s) for s in parts.path.removeprefix(RECORD_PREFIX).split("/")]
        query = request.query
        strict = (headers.get("X-NetSuite-PropertyNameValidation") or "").lower() == "error"
        body = request.body if isinstance(request.body, dict) else {}
        if request.body is not None and not isinstance(request.body, dict):
            raise Refused(400, "INVALID_CONTENT", "The request body must be a JSON object.")
        replace = {name for name in query.get("replace", "").split(",") if name}
        match segments:
            case [record, key] if record in SHAPES and method == "GET":
                found = self._by_key(record, key)
                if found is None:
                    raise self._missing(record, key)
                return 200, _dumps(self._view(record, found, expand=query.get("expandSubResources") == "true")), {}
            case [record, key] if record in SHAPES and method == "PUT":
                if not key.startswith("eid:") or not _EXTERNAL_ID.match(key[4:]):
                    raise Refused(
                        400, "INVALID_ID", f"The external ID in {key!r} is not valid: use letters, numbers, _ and -."
                    )
                saved = self._save(record, self._by_key(record, key), body, replace, strict, external_id=key[4:])
                return self._written(record, saved)
            case [record, key] if record in SHAPES and method == "PATCH":
                found = self._by_key(record, key)
                if found is None:
                    raise self._missing(record, key)
                return self._written(record, self._save(record, found, body, replace, strict))
            case ["invoice", key, "!transform", "creditMemo"] if method == "POST":
                invoice = self._by_key("invoice", key)
                if invoice is None:
                    raise self._missing("invoice", key)
                return self._written("creditMemo", self._transform(invoice, body, strict))
        raise Refused(
            404 if method == "GET" else 405,
            "NONEXISTENT_ID" if method == "GET" else "METHOD_NOT_ALLOWED",
            f"{method} {parts.path} is not served.",
        )

    def _written(self, record: str, saved: dict[str, Any]) -> tuple[int, bytes, dict[str, str]]:
        return 204, b"", {"Location": f"{self.url}{RECORD_PREFIX}{record}/{saved['id']}"}

    @staticmethod
    def _missing(record: str, key: str) -> Refused:
        return Refused(
            404,
            "NONEXISTENT_ID",
            f"The record instance does not exist. Provide a valid record instance ID. ({record}/{key})",
        )

    def _by_key(self, record: str, key: str) -> dict[str, Any] | None:
        if key.startswith("eid:"):
            return next((found for found in self.records[record].values() if found.get("externalId") == key[4:]), None)
        return self.records[record].get(key)

    def _find_any(self, internal_id: str) -> tuple[str, dict[str, Any]] | None:
        for record in TRANSACTIONS:
            if internal_id in self.records[record]:
                return record, self.records[record][internal_id]
        return None

    # -- validation ---------------------------------------------------------------------------

    def _clean(self, shape: dict[str, Any], values: dict[str, Any], path: str, strict: bool) -> dict[str, Any]:
        clean: dict[str, Any] = {}
        for name, value in values.items():
            where = f"{path}{name}"
            kind = shape.get(name)
            if kind is None:
                if strict:
                    raise Refused(400, "INVALID_CONTENT", f"Invalid field name: {name}.", where)
                self.ignored_fields.append(where)
                continue
            clean[name] = self._value(kind, value, where, name)
        return clean

    def _value(self, kind: Any, value: Any, where: str, name: str) -> Any:
        def invalid(expected: str) -> Refused:
            return Refused(
                400,
                "INVALID_CONTENT",
                f"Invalid value for the field {name}: expected {expected}, got {json.dumps(value, default=str)}.",
                where,
            )

        if value is None:
            return None
        if kind == TEXT:
            if not isinstance(value, str):
                raise invalid("a string")
            return value
        if kind == BOOL:
            if not isinstance(value, bool):
                raise invalid("a boolean")
            return value
        if kind == NUMBER:
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                raise invalid("a number")
            return value
        if kind == DATE:
            try:
                datetime.date.fromisoformat(value)
            except (TypeError, ValueError):
                raise invalid("a date as YYYY-MM-DD") from None
            return value
        if kind == COUNTRY:
            if not (
                isinstance(value, dict) and isinstance(value.get("id"), str) and re.fullmatch(r"[A-Z]{2}", value["id"])
            ):
                raise invalid('{"id": "<ISO country code>"}')
            return {"id": value["id"]}
        if isinstance(kind, tuple) and kind[0] == "object":
            if not isinstance(value, dict):
                raise invalid("an object")
            return self._clean(kind[1], value, where + ".", strict=True)
        if isinstance(kind, tuple) and kind[0] == "ref":
            if not isinstance(value, dict) or not isinstance(value.get("id"), str) or not value["id"]:
                raise invalid('a reference {"id": "<internal id>"}')
            if not self._exists(kind[1], value["id"]):
                raise Refused(
                    400,
                    "INVALID_CONTENT",
                    f"Error while accessing a resource. You have entered an Invalid Field Value {value['id']} for the "
                    f"following field: {name}",
                    where,
                )
            return {"id": value["id"]}
        raise AssertionError(kind)

    def _exists(self, table: str, internal_id: str) -> bool:
        tables: dict[str, Any] = {
            "subsidiary": SUBSIDIARIES,
            "currency": CURRENCIES,
            "department": DEPARTMENTS,
            "class": CLASSES,
            "location": LOCATIONS,
            "item": ITEMS,
            "taxCode": TAX_CODES,
            "account": ACCOUNTS,
            "customer": self.records["customer"],
        }
        if table == "transaction":
            return self._find_any(internal_id) is not None
        return internal_id in tables[table]

    def _clean_sublist(self, record: str, name: str, value: Any, strict: bool) -> list[dict[str, Any]]:
        line_shape, _ = SHAPES[record][1][name]
        items = value.get("items") if isinstance(value, dict) else None
        if not isinstance(items, list) or not all(isinstance(line, dict) for line in items):
            raise Refused(
                400, "INVALID_CONTENT", f'Invalid value for the sublist {name}: expected {{"items": [...]}}.', name
            )
        return [self._clean(line_shape, line, f"{name}.items[{n}].", strict) for n, line in enumerate(items)]

    # -- saving -------------------------------------------------------------------------------

    def _save(
        self,
        record: str,
        existing: dict[str, Any] | None,
        body: dict[str, Any],
        replace: set[str],
        strict: bool,
        *,
        external_id: str = "",
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        fields, sublists, required = SHAPES[record]
        clean = self._clean(fields, {k: v for k, v in body.items() if k not in sublists}, "", strict)
        lines = {name: self._clean_sublist(record, name, body[name], strict) for name in sublists if name in body}
        if "externalId" in clean and not _EXTERNAL_ID.match(clean["externalId"] or ""):
            raise Refused(
                400, "INVALID_CONTENT", "The external ID may contain only letters, numbers, _ and -.", "externalId"
            )
        new = copy.deepcopy(existing) if existing else {"id": str(next(self._ids)), **(extra or {})}
        if external_id:
            new["externalId"] = external_id
        new.update({k: v for k, v in clean.items() if v is not None})
        for name, (_, key) in sublists.items():
            current = new.setdefault(name, [])
            if name not in lines:
                continue
            if key is None:
                new[name] = lines[name] if name in replace else current + lines[name]
            else:
                merged = {} if name in replace else {line[key]["id"]: line for line in current}
                for line in lines[name]:
                    before = next((old for old in current if old[key]["id"] == line[key]["id"]), {})
                    merged[line[key]["id"]] = {**before, **line}
                new[name] = list(merged.values())
        if existing is None:
            missing = [LABELS.get(name, name) for name in required if new.get(name) is None]
            if missing:
                raise _user_error(f"Please enter value(s) for: {', '.join(missing)}")
            self._defaults(record, new)
        self._check(record, new, creating=existing is None)
        if existing is None and record in PREFIXES:
            new["tranId"] = f"{PREFIXES[record]}{next(self._numbers):05d}"
        if existing is None and record == "customer":
            new["entityId"] = f"CUS{next(self._numbers):05d}"
        before = self.records[record].get(new["id"])
        self.records[record][new["id"]] = new
        try:
            if record == "customerPayment" and existing is None and new.get("autoApply", True):
                self._auto_apply(new)
            self._check_balances()
        except Refused:
            if before is None:
                del self.records[record][new["id"]]
            else:
                self.records[record][new["id"]] = before
            raise
        return new

    def _defaults(self, record: str, new: dict[str, Any]) -> None:
        """What NetSuite fills in on a new record when the request leaves it out."""
        customer = self.records["customer"].get((new.get("entity") or new.get("customer") or {}).get("id", ""))
        if record != "customer":
            new.setdefault("tranDate", datetime.date.today().isoformat())
            if customer is not None:
                new.setdefault("subsidiary", copy.deepcopy(customer["subsidiary"]))
                if customer.get("currency"):
                    new.setdefault("currency", copy.deepcopy(customer["currency"]))
            new.setdefault("currency", {"id": "1"})

    def _check(self, record: str, new: dict[str, Any], *, creating: bool) -> None:
        """The rules the account enforces on every save."""
        if record == "customer":
            return
        day = datetime.date.fromisoformat(new["tranDate"])
        if self.closed_through is not None and day <= self.closed_through:
            raise _user_error(
                f"The accounting period for {day.isoformat()} is closed. Choose a date in an open period, or ask an "
                "administrator to reopen the period."
            )
        customer_id = (new.get("entity") or new.get("customer") or {}).get("id")
        if customer_id:
            customer = self.records["customer"][customer_id]
            if customer["subsidiary"]["id"] != new["subsidiary"]["id"]:
                raise _user_error(
                    f"The subsidiary {new['subsidiary']['id']} is not the subsidiary of customer "
                    f"{customer['entityId']}."
                )
        if record in ("invoice", "creditMemo") and not new.get("item"):
            raise _user_error("You must enter at least one line item for this transaction.")
        if record == "customerPayment" and new.get("undepFunds") is False and not new.get("account"):
            raise _user_error("Please enter value(s) for: Account")
        for line in new.get("apply", []):
            target = self._find_any(line["doc"]["id"])
            allowed = ("creditMemo", "customerPayment") if record == "customerRefund" else ("invoice",)
            if target is None or target[0] not in allowed:
                raise _user_error(f"The transaction {line['doc']['id']} cannot be applied on a {record}.")
            owner = (target[1].get("entity") or target[1].get("customer") or {}).get("id")
            if owner != customer_id:
                raise _user_error(f"The transaction {target[1]['tranId']} belongs to another customer.")
        if record == "customerRefund" and not any(line.get("apply") for line in new.get("apply", [])):
            raise _user_error("You must apply at least one credit to refund.")
        if record == "journalEntry":
            lines = new.get("line", [])
            if len(lines) < 2 or any(
                (_number(line.get("debit")) > 0) == (_number(line.get("credit")) > 0) for line in lines
            ):
                raise _user_error(
                    "Every journal line needs either a debit or a credit, and an entry at least two lines."
                )
            if sum(_number(line.get("debit")) for line in lines) != sum(_number(line.get("credit")) for line in lines):
                raise _user_error("This journal entry does not balance: the debits and credits must be equal.")

    def _auto_apply(self, payment: dict[str, Any]) -> None:
        """An account whose "Auto Apply" preference is on applies what a payment leaves over to the
        customer's oldest open invoices, unless the request says ``autoApply: false``."""
        left = self._derived("customerPayment", payment)["unapplied"]
        for invoice in sorted(
            self.records["invoice"].values(), key=lambda found: (found["tranDate"], int(found["id"]))
        ):
            if left <= 0:
                break
            if invoice["entity"]["id"] != payment["customer"]["id"]:
                continue
            remaining = self._derived("invoice", invoice)["amountRemaining"]
            if remaining > 0 and not any(line["doc"]["id"] == invoice["id"] for line in payment["apply"]):
                amount = min(left, remaining)
                payment["apply"].append({"doc": {"id": invoice["id"]}, "apply": True, "amount": amount})
                left -= amount

    def _check_balances(self) -> None:
        for invoice in self.records["invoice"].values():
            if self._derived("invoice", invoice)["amountRemaining"] < 0:
                raise _user_error(f"The amount applied to {invoice['tranId']} is more than its amount due.")
        for record, what in (("creditMemo", "credit memo"), ("customerPayment", "payment")):
            for found in self.records[record].values():
                if self._derived(record, found)["unapplied"] < 0:
                    raise _user_error(f"You cannot apply more than the amount of {what} {found['tranId']}.")

    def _transform(self, invoice: dict[str, Any], body: dict[str, Any], strict: bool) -> dict[str, Any]:
        """invoice → creditMemo: the invoice's customer, subsidiary, currency, segments and lines, applied to it."""
        copied_lines = [
            {key: copy.deepcopy(line[key]) for key in ITEM_LINE if key in line} for line in invoice.get("item", [])
        ]
        start = {
            "entity": invoice["entity"],
            "subsidiary": invoice["subsidiary"],
            "currency": invoice["currency"],
            "tranDate": datetime.date.today().isoformat(),
            **{name: invoice[name] for name in SEGMENTS if invoice.get(name)},
            "item": copied_lines,
        }
        total = self._derived("invoice", invoice)["amountRemaining"]
        start["apply"] = [{"doc": {"id": invoice["id"]}, "apply": True, "amount": total}] if total > 0 else []
        if "externalId" in body and any(
            m.get("externalId") == body["externalId"] for m in self.records["creditMemo"].values()
        ):
            raise _user_error("A record with this external ID already exists.")
        return self._save(
            "creditMemo",
            None,
            body,
            set(),
            strict,
            extra={**copy.deepcopy(start), "createdFrom": {"id": invoice["id"]}},
        )

    # -- amounts and the ledger -----------------------------------------------------------------

    def _applications(self, target_id: str) -> Decimal:
        total = Decimal(0)
        for record in ("customerPayment", "creditMemo", "customerRefund"):
            for found in self.records[record].values():
                total += sum(
                    (
                        _number(line.get("amount"))
                        for line in found.get("apply", [])
                        if line.get("apply") and line["doc"]["id"] == target_id
                    ),
                    Decimal(0),
                )
        return total

    def _lines(self, record: dict[str, Any]) -> list[tuple[Decimal, Decimal, dict[str, Any]]]:
        """(amount, tax, line) for each item line."""
        found = []
        for line in record.get("item", []):
            amount = (
                _number(line.get("amount"))
                if line.get("amount") is not None
                else _cents(_number(line.get("quantity")) * _number(line.get("rate")))
            )
            rate = TAX_CODES[line["taxCode"]["id"]][1] if line.get("taxCode") else Decimal(0)
            found.append((amount, _cents(amount * rate), line))
        return found

    def _derived(self, record: str, found: dict[str, Any]) -> dict[str, Any]:
        if record in ("invoice", "creditMemo"):
            lines = self._lines(found)
            subtotal = sum((amount for amount, _, _ in lines), Decimal(0))
            tax = sum((tax for _, tax, _ in lines), Decimal(0))
            total = subtotal + tax
            if record == "invoice":
                paid = self._applications(found["id"])
                remaining = total - paid
                status = ("paidInFull", "Paid In Full") if remaining == 0 and total > 0 else ("open", "Open")
                return {
                    "subtotal": subtotal,
                    "taxTotal": tax,
                    "total": total,
                    "amountPaid": paid,
                    "amountRemaining": remaining,
                    "status": {"id": status[0], "refName": status[1]},
                }
            applied = self._own_applied(found) + self._applications(found["id"])
            status = ("fullyApplied", "Fully Applied") if applied == total else ("open", "Open")
            return {
                "subtotal": subtotal,
                "taxTotal": tax,
                "total": total,
                "applied": applied,
                "unapplied": total - applied,
                "status": {"id": status[0], "refName": status[1]},
            }
        if record == "customerPayment":
            payment = _number(found.get("payment"))
            applied = self._own_applied(found) + self._applications(found["id"])
            return {"total": payment, "applied": applied, "unapplied": payment - applied}
        if record == "customerRefund":
            return {"total": self._own_applied(found)}
        return {}

    @staticmethod
    def _own_applied(found: dict[str, Any]) -> Decimal:
        return sum((_number(line.get("amount")) for line in found.get("apply", []) if line.get("apply")), Decimal(0))

    def _ledger(self) -> list[tuple[str, str, Decimal]]:
        """(account, customer, debit - credit) for every line the transactions post."""
        lines: list[tuple[str, str, Decimal]] = []
        for record, sign in (("invoice", 1), ("creditMemo", -1)):
            for found in self.records[record].values():
                customer = found["entity"]["id"]
                for amount, tax, line in self._lines(found):
                    lines.append((AR, customer, sign * (amount + tax)))
                    lines.append((ITEMS[line["item"]["id"]][1], "", -sign * amount))
                    if tax:
                        lines.append((TAX_CODES[line["taxCode"]["id"]][2], "", -sign * tax))
        for found in self.records["customerPayment"].values():
            payment = _number(found.get("payment"))
            lines += [
                (found.get("account", {}).get("id", "1150"), "", payment),
                (AR, found["customer"]["id"], -payment),
            ]
        for found in self.records["customerRefund"].values():
            total = self._own_applied(found)
            lines += [(AR, found["customer"]["id"], total), (found["account"]["id"], "", -total)]
        for found in self.records["journalEntry"].values():
            for line in found.get("line", []):
                amount = _number(line.get("debit")) - _number(line.get("credit"))
                lines.append((line["account"]["id"], (line.get("entity") or {}).get("id", ""), amount))
        return lines

    # -- answers ------------------------------------------------------------------------------

    def _view(self, record: str, found: dict[str, Any], *, expand: bool) -> dict[str, Any]:
        href = f"{self.url}{RECORD_PREFIX}{record}/{found['id']}"
        sublists = SHAPES[record][1]
        view: dict[str, Any] = {"links": [{"rel": "self", "href": href}]}
        for name, value in found.items():
            if name in sublists:
                continue
            view[name] = (
                self._reference(name, value) if isinstance(value, dict) and "id" in value else copy.deepcopy(value)
            )
        view.update(self._derived(record, found))
        for name in sublists:
            sublist_href = f"{href}/{name}"
            if not expand:
                view[name] = {"links": [{"rel": "self", "href": sublist_href}]}
                continue
            items = []
            for number, line in enumerate(found.get(name, []), start=1):
                shown = {
                    key: self._reference(key, value)
                    if isinstance(value, dict) and "id" in value
                    else copy.deepcopy(value)
                    for key, value in line.items()
                }
                if record in ("invoice", "creditMemo") and name == "item":
                    amount, tax, _ = self._lines({"item": [line]})[0]
                    shown.update({"amount": amount, "tax1Amt": tax})
                items.append({"links": [], "line": number, **shown})
            view[name] = {"links": [{"rel": "self", "href": sublist_href}], "items": items, "totalResults": len(items)}
        return view

    def _reference(self, name: str, value: dict[str, Any]) -> dict[str, Any]:
        internal_id = value["id"]
        names: dict[str, Any] = {
            "subsidiary": SUBSIDIARIES,
            "department": DEPARTMENTS,
            "class": CLASSES,
            "location": LOCATIONS,
            "account": ACCOUNTS,
        }
        if name == "currency":
            label = CURRENCIES.get(internal_id, ("", 0))[0]
        elif name == "item":
            label = ITEMS.get(internal_id, ("",))[0]
        elif name == "taxCode":
            label = TAX_CODES.get(internal_id, ("",))[0]
        elif name in ("entity", "customer") and internal_id in self.records["customer"]:
            label = self.records["customer"][internal_id].get("companyName", "")
        elif name in ("doc", "createdFrom"):
            found = self._find_any(internal_id)
            label = found[1].get("tranId", "") if found else ""
        else:
            label = names.get(name, {}).get(internal_id, "")
        return {"id": internal_id, "refName": label, "links": []}
