"""An in-memory Tryton 8.2 for chaos tests: the subset of its JSON-RPC that ``TrytonConnector`` uses,
served over real HTTP so the real connector posts to it unchanged, with seeded fault injection and a
record of everything it holds.

It answers the way trytond 8.2 does (checked against its source): ``POST /<db>/rpc/`` with a body of
exactly ``{"id", "method", "params"}`` (an extra key turns errors into bare HTML pages), Decimals and
dates as ``{"__class__": ...}`` objects, a model call's last param is its context (missing: 422), a
``Session`` header from ``common.db.login`` (missing or stale: 401; a wrong password: 401), a
``UserError`` as HTTP 200 ``{"error": ["UserError", [message, description, domain]]}``, any other
exception as HTTP 200 ``{"error": [message, traceback]}``, a method the model does not expose: 403.
Like Tryton it has no idempotency at all beyond the unique party code: a second create makes a second
invoice. Keeping postings single is the hub's job, and the record helpers say whether it did.

Faults are decided per write request (``*.create``, ``*.write``, ``*.delete``, ``*.post``, the pay
wizard's ``choice`` and ``pay`` steps) and optionally per read, from ``FaultRates``. Each decision
draws from ``random.Random(f"{seed}|{method}|{document}|{n}")`` where ``document`` is the external
reference the request is about (party code, invoice reference, payment description) and ``n`` counts
the requests of that method for that document: the same seed gives every document the same fault
sequence whatever order concurrent workers reach the simulator in.

Divergences from a real Tryton worth knowing: amounts of foreign-currency move lines stay in the
invoice currency (no rates); tax is rounded per line, half up, unless ``tax_rounding="document"`` and
``rounding=ROUND_HALF_EVEN`` (Tryton 8.2's defaults) are asked for; unknown fields in wizard data are
refused (so dotted keys such as ``"company."`` must be filtered by the client).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import itertools
import json
import random
import re
import secrets
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fault_proxy import most_in_any_window

VERSION = "8.2.1"
COMPANY_ID = 1
COMPANY_NAME = "Hub Demo Company"
POSTED_STATES = ("posted", "paid")

# Fault kinds, in the order a draw walks through them.
WRITE_FAULTS = ("server_error", "throttle", "timeout_before_commit", "timeout_after_commit", "session_expiry")
READ_FAULTS = ("read_server_error", "read_throttle", "read_timeout")
FAULT_KINDS = (*WRITE_FAULTS, *READ_FAULTS, "validation_error")

_WRITE_METHODS = ("create", "write", "delete", "post", "copy", "validate_invoice", "draft", "cancel")
# What Tryton's ModelStorage/ModelView expose over RPC (others answer 403), and the invoice buttons.
_TRYTON_RPC = {"read", "search", "search_read", "search_count", "create", "write", "delete", "copy", "fields_get"}
_TRYTON_RPC |= {"default_get", "fields_view_get", "view_toolbar_get", "export_data", "import_data", "on_change"}
_INVOICE_BUTTONS = {"post", "validate_invoice", "draft", "cancel", "pay", "process", "credit"}

# model -> field -> relation: None for a plain field, "<model>" for a many2one, "<model>*" for x2many.
_SCHEMA: dict[str, dict[str, str | None]] = {
    "company.company": {"id": None, "name": None, "currency": "currency.currency"},
    "currency.currency": {"id": None, "name": None, "code": None, "symbol": None, "digits": None, "rounding": None},
    "party.party": {
        "id": None,
        "name": None,
        "code": None,
        "active": None,
        "lang": None,
        "addresses": "party.address*",
        "contact_mechanisms": "party.contact_mechanism*",
        "identifiers": "party.identifier*",
        "account_receivable": "account.account",
        "account_payable": "account.account",
    },
    "party.address": {
        "id": None,
        "party": "party.party",
        "party_name": None,
        "name": None,
        "street": None,
        "city": None,
        "postal_code": None,
        "country": None,
        "subdivision": None,
        "active": None,
    },
    "party.contact_mechanism": {"id": None, "party": "party.party", "type": None, "value": None, "name": None},
    "party.identifier": {"id": None, "party": "party.party", "type": None, "code": None},
    "account.account.type": {
        "id": None,
        "name": None,
        "revenue": None,
        "receivable": None,
        "payable": None,
        "expense": None,
    },
    "account.account": {
        "id": None,
        "code": None,
        "name": None,
        "type": "account.account.type",
        "closed": None,
        "company": "company.company",
        "party_required": None,
    },
    "account.tax": {
        "id": None,
        "name": None,
        "description": None,
        "type": None,
        "rate": None,
        "invoice_account": "account.account",
        "company": "company.company",
    },
    "account.journal": {"id": None, "name": None, "code": None, "type": None},
    "account.invoice.payment.method": {
        "id": None,
        "name": None,
        "journal": "account.journal",
        "credit_account": "account.account",
        "debit_account": "account.account",
        "company": "company.company",
    },
    "account.configuration": {
        "id": None,
        "default_account_receivable": "account.account",
        "default_account_payable": "account.account",
        "tax_rounding": None,
    },
    "account.invoice": {
        "id": None,
        "type": None,
        "number": None,
        "reference": None,
        "description": None,
        "state": None,
        "company": "company.company",
        "party": "party.party",
        "invoice_address": "party.address",
        "account": "account.account",
        "journal": "account.journal",
        "currency": "currency.currency",
        "invoice_date": None,
        "accounting_date": None,
        "payment_term_date": None,
        "lines": "account.invoice.line*",
        "untaxed_amount": None,
        "tax_amount": None,
        "total_amount": None,
        "amount_to_pay": None,
        "amount_to_pay_today": None,
        "payment_lines": "account.move.line*",
        "lines_to_pay": "account.move.line*",
        "move": "account.move",
    },
    "account.invoice.line": {
        "id": None,
        "invoice": "account.invoice",
        "type": None,
        "account": "account.account",
        "description": None,
        "quantity": None,
        "unit_price": None,
        "amount": None,
        "currency": "currency.currency",
        "taxes": "account.tax*",
        "company": "company.company",
    },
    "account.move": {
        "id": None,
        "number": None,
        "description": None,
        "date": None,
        "journal": "account.journal",
        "state": None,
        "origin": None,
        "company": "company.company",
        "lines": "account.move.line*",
    },
    "account.move.line": {
        "id": None,
        "move": "account.move",
        "account": "account.account",
        "party": "party.party",
        "debit": None,
        "credit": None,
        "description": None,
        "reconciliation": None,
        "second_currency": "currency.currency",
        "amount_second_currency": None,
    },
}
# Equality indexes so lookups by reference stay O(1) with thousands of documents held.
_INDEXED = {
    "party.party": ("code",),
    "party.address": ("party",),
    "account.invoice": ("reference", "party"),
    "account.invoice.line": ("invoice",),
    "account.move": ("description",),
    "account.move.line": ("move",),
}
_PARTY_NESTED = {
    "addresses": ("party.address", {"name", "party_name", "street", "city", "postal_code", "country", "subdivision"}),
    "contact_mechanisms": ("party.contact_mechanism", {"type", "value", "name"}),
    "identifiers": ("party.identifier", {"type", "code"}),
}
_INVOICE_FIELDS = {
    "type",
    "company",
    "party",
    "invoice_address",
    "account",
    "journal",
    "currency",
    "invoice_date",
    "accounting_date",
    "payment_term",
    "payment_term_date",
    "reference",
    "description",
    "comment",
    "lines",
}
_LINE_FIELDS = {"type", "account", "description", "quantity", "unit_price", "currency", "taxes", "product", "unit"}
_PAY_START_FIELDS = {"amount", "currency", "description", "company", "date", "payment_method", "payee", "payees"}
_PAY_START_FIELDS |= {"invoice_account"}
_PAY_ASK_FIELDS = {"type", "amount", "currency", "company", "lines_to_pay", "lines", "payment_lines", "invoice"}
_PAY_ASK_FIELDS |= {"writeoff", "amount_writeoff", "description", "date"}


@dataclass(frozen=True)
class FaultRates:
    """Probabilities per request. Write faults apply to writes, ``read_*`` to reads; ``methods``
    narrows every kind to the RPC methods named (e.g. ``("model.account.invoice.post",)``)."""

    server_error: float = 0.0  # 503, or 500 for half of them; nothing done
    throttle: float = 0.0  # 429 with Retry-After; nothing done
    timeout_after_commit: float = 0.0  # done, then answered after hang_seconds
    timeout_before_commit: float = 0.0  # hang_seconds, then 503; nothing done
    validation_error: float = 0.0  # invoice post only: a UserError fixed per invoice reference
    session_expiry: float = 0.0  # the session is forgotten: 401; nothing done (a fresh session is never expired)
    read_server_error: float = 0.0
    read_throttle: float = 0.0
    read_timeout: float = 0.0  # answered after hang_seconds
    methods: tuple[str, ...] = ()

    def applies_to(self, method: str) -> bool:
        return not self.methods or method in self.methods


@dataclass(frozen=True)
class Fault:
    kind: str
    status: int = 0


@dataclass
class _Forced:
    kind: str
    method: str
    times: int
    status: int


class _Abort(Exception):
    """An HTTP status answered instead of a JSON-RPC body (werkzeug's ``abort``)."""

    def __init__(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(status, text)
        self.status = status
        self.text = text
        self.headers = headers or {}


class _TrytonError(Exception):
    bare_status = 400

    def payload(self) -> list[Any]:
        raise NotImplementedError


class UserError(_TrytonError):
    def __init__(self, message: str, description: str = "", domain: Any = None) -> None:
        super().__init__(message)
        self.message, self.description, self.domain = message, description, domain

    def payload(self) -> list[Any]:
        return ["UserError", [self.message, self.description, self.domain]]


class TrytonWarning(_TrytonError):
    """Tryton's ``UserWarning``: answered as ``["UserWarning", [key, message, description]]``."""

    bare_status = 409

    def __init__(self, name: str, message: str, description: str = "") -> None:
        super().__init__(message)
        self.name, self.message, self.description = name, message, description

    def payload(self) -> list[Any]:
        return ["UserWarning", [self.name, self.message, self.description]]


class LoginException(_TrytonError):
    bare_status = 403

    def __init__(self, name: str, message: str, kind: str = "password") -> None:
        super().__init__(message)
        self.args_ = [name, message, kind]

    def payload(self) -> list[Any]:
        return ["LoginException", self.args_]


_HTTP_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _decode_hook(value: dict[str, Any]) -> Any:
    kind = value.get("__class__")
    if kind == "Decimal":
        return Decimal(value["decimal"])
    if kind == "date":
        return datetime.date(value["year"], value["month"], value["day"])
    if kind == "datetime":
        return datetime.datetime(
            value["year"],
            value["month"],
            value["day"],
            value.get("hour", 0),
            value.get("minute", 0),
            value.get("second", 0),
            value.get("microsecond", 0),
        )
    return value


def _encode_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, datetime.datetime):
        return {
            "__class__": "datetime",
            "year": value.year,
            "month": value.month,
            "day": value.day,
            "hour": value.hour,
            "minute": value.minute,
            "second": value.second,
            "microsecond": value.microsecond,
        }
    if isinstance(value, datetime.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, set | frozenset):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} for JSON-RPC")


def _dumps(value: Any) -> bytes:
    return json.dumps(value, default=_encode_default, separators=(",", ":")).encode()


def _like(pattern: str, value: Any, *, fold: bool) -> bool:
    if not isinstance(value, str):
        return False
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if fold else 0) is not None


def _is_write(method: str, params: list[Any]) -> bool:
    if method.startswith("model."):
        return method.rsplit(".", 1)[-1] in _WRITE_METHODS
    if method.startswith("wizard.") and method.endswith(".execute"):
        return len(params) > 2 and params[2] in ("choice", "pay")
    return False


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    sim: ErpSimulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: thousands of requests without a connect each
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        self.server.sim._serve(self)

    def do_GET(self) -> None:
        self.server.sim._write(self, *self.server.sim._html(405))


class ErpSimulator:
    """A fault-injecting Tryton in memory. ``url``, ``database``, ``username`` and ``password`` make it
    a drop-in for the ``tryton_server`` fixture (``connector_settings(sim)``, ``TrytonInspector(sim)``);
    with ``any_database`` (the default) it answers on ``/<any name>/rpc/``.

    Controls: ``faults`` (a ``FaultRates``, replace it at any time; ``FaultRates()`` stops faults),
    ``enabled`` (False: no fault at all, forced ones included), ``inject(kind, method, times=1)``,
    ``expire_sessions()``, ``hang_seconds``, ``throttle_retry_after``.

    Records (live; read them when no request is running, or through the helpers, which lock):
    ``parties`` (code -> dict), ``invoices`` (id -> dict, deleted ones kept with ``deleted=True``),
    ``payments`` (description -> dict with ``count``); counters ``requests`` (method), ``responses``
    (HTTP status), ``faults_injected`` (kind), ``faults_by_method`` ((kind, method)), ``events``,
    ``invoice_creations`` (reference -> creates), ``payment_counts`` (description -> payment moves),
    ``refused_references`` (reference -> validation refusals); ``fault_log`` (kind, method, document,
    n); ``arrivals``, ``in_flight``, ``max_in_flight``; ``ids`` (seeded record ids by name).
    Helpers: ``duplicate_invoices()``, ``duplicate_payments()``, ``posted_total_by_party_and_currency()``,
    ``paid_total_by_party_and_currency()``, ``permanently_failed_references()``, ``validation_fails(ref)``,
    ``invoices_for(ref)``, ``invoice_numbers()``, ``snapshot()``, ``max_in_any_window(seconds)``.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        faults: FaultRates | None = None,
        throttle_retry_after: float = 1,
        hang_seconds: float = 3.0,
        database: str = "sim",
        any_database: bool = True,
        username: str = "admin",
        password: str = "sim-admin",
        uid: int = 1,
        tax_rounding: str = "line",
        rounding: str = ROUND_HALF_UP,
        fiscal_years: Iterable[int] | None = None,
        strict_date_order: bool = False,
        today: Callable[[], datetime.date] = datetime.date.today,
    ) -> None:
        if tax_rounding not in ("line", "document"):
            raise ValueError("tax_rounding is 'line' or 'document'")
        self.seed = seed
        self.faults = faults or FaultRates()
        self.enabled = True
        self.throttle_retry_after = throttle_retry_after
        self.hang_seconds = hang_seconds
        self.database = database
        self.any_database = any_database  # serve /<any name>/rpc/: hub connections keep their own database
        self.username = username
        self.password = password
        self.uid = uid
        self.tax_rounding = tax_rounding
        self.rounding = rounding
        self.today = today
        year = today().year
        self.fiscal_years = set(fiscal_years) if fiscal_years is not None else {year - 1, year, year + 1}
        self.strict_date_order = strict_date_order

        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._db: dict[str, dict[int, dict[str, Any]]] = {model: {} for model in _SCHEMA}
        self._ids: dict[str, itertools.count[int]] = {model: itertools.count(1) for model in _SCHEMA}
        self._index: dict[tuple[str, str], defaultdict[Any, set[int]]] = {
            (model, name): defaultdict(set) for model, names in _INDEXED.items() for name in names
        }
        self._sessions: dict[str, dict[str, Any]] = {}
        self._wizards: dict[int, dict[str, Any]] = {}
        self._wizard_ids = itertools.count(1)
        self._sequences: Counter[tuple[str, int]] = Counter()
        self._last_numbered: dict[tuple[str, int], tuple[datetime.date, str]] = {}
        self._reconciliations = itertools.count(1)
        self._draws: Counter[tuple[str, str]] = Counter()
        self._forced: list[_Forced] = []

        self.parties: dict[str, dict[str, Any]] = {}
        self.invoices: dict[int, dict[str, Any]] = {}
        self.payments: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()
        self.faults_injected: Counter[str] = Counter()
        self.faults_by_method: Counter[tuple[str, str]] = Counter()
        self.fault_log: list[tuple[str, str, str, int]] = []
        self.events: Counter[str] = Counter()
        self.invoice_creations: Counter[str] = Counter()
        self.payment_counts: Counter[str] = Counter()
        self.refused_references: Counter[str] = Counter()  # invoice references refused by validation_error
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.ids: dict[str, int] = {}  # seeded records by name: "account:4000", "tax:VAT20", "currency:EUR", ...
        self._seed_data()

        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.sim = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.rpc_path = f"/{database}/rpc/"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, name="erp-simulator", daemon=True
        )
        self._thread.start()

    # -- life cycle and test controls ---------------------------------------------------------

    def stop(self) -> None:
        self._stopped.set()  # wakes the requests held by a hang
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ErpSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connector_settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings for ``TrytonConnector`` pointing at this simulator."""
        return {
            "url": self.url,
            "database": self.database,
            "username": self.username,
            "password": self.password,
            "timeout": 10,
            **overrides,
        }

    def inject(self, kind: str, method: str = "", *, times: int = 1, status: int = 0) -> None:
        """Force ``kind`` on the next ``times`` requests of ``method`` ("" = any write), ahead of the
        rates. ``status`` picks the server error's status (503 by default)."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; one of {FAULT_KINDS}")
        if kind == "validation_error":
            method = method or "model.account.invoice.post"
        with self._lock:
            self._forced.append(_Forced(kind, method, times, status))

    def expire_sessions(self) -> None:
        """Forget every session, as a restarted Tryton or the session timeout does: next calls get 401."""
        with self._lock:
            self._sessions.clear()

    def validation_fails(self, reference: str) -> bool:
        """Whether posting the invoice with ``reference`` meets the seeded validation error under the
        current rates (the same answer on every retry)."""
        rates = self.faults
        if not self.enabled or rates.validation_error <= 0 or not rates.applies_to("model.account.invoice.post"):
            return False
        digest = hashlib.sha256(f"{self.seed}|validation|{reference}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < rates.validation_error

    # -- record helpers -----------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """A consistent copy of the records and counters."""
        with self._lock:
            return {
                "parties": {code: dict(party) for code, party in self.parties.items()},
                "invoices": {key: dict(invoice) for key, invoice in self.invoices.items()},
                "payments": {key: dict(payment) for key, payment in self.payments.items()},
                "requests": Counter(self.requests),
                "responses": Counter(self.responses),
                "faults_injected": Counter(self.faults_injected),
                "events": Counter(self.events),
            }

    def invoices_for(self, reference: str, *, include_deleted: bool = False) -> list[dict[str, Any]]:
        with self._lock:
            return [
                dict(invoice)
                for invoice in self.invoices.values()
                if invoice["reference"] == reference and (include_deleted or not invoice["deleted"])
            ]

    def duplicate_invoices(self, *, posted_only: bool = False) -> dict[str, int]:
        """{reference: n} for references held by more than one invoice that is not deleted."""
        counts: Counter[str] = Counter()
        with self._lock:
            for invoice in self.invoices.values():
                if invoice["deleted"] or (posted_only and invoice["state"] not in POSTED_STATES):
                    continue
                counts[invoice["reference"]] += 1
        return {reference: n for reference, n in counts.items() if n > 1}

    def duplicate_payments(self) -> dict[str, int]:
        """{description: n} for payment descriptions carried by more than one payment move."""
        with self._lock:
            return {description: n for description, n in self.payment_counts.items() if n > 1}

    def permanently_failed_references(self) -> set[str]:
        """References whose post met the validation error and that no posted invoice holds."""
        with self._lock:
            posted = {
                invoice["reference"]
                for invoice in self.invoices.values()
                if not invoice["deleted"] and invoice["state"] in POSTED_STATES
            }
            return set(self.refused_references) - posted

    def posted_total_by_party_and_currency(self) -> dict[tuple[str, str], Decimal]:
        totals: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
        with self._lock:
            for invoice in self.invoices.values():
                if not invoice["deleted"] and invoice["state"] in POSTED_STATES:
                    totals[invoice["party"], invoice["currency"]] += invoice["total"]
        return dict(totals)

    def paid_total_by_party_and_currency(self) -> dict[tuple[str, str], Decimal]:
        totals: defaultdict[tuple[str, str], Decimal] = defaultdict(Decimal)
        with self._lock:
            for payment in self.payments.values():
                totals[payment["party"], payment["currency"]] += payment["amount"]
        return dict(totals)

    def invoice_numbers(self) -> list[str]:
        with self._lock:
            return [invoice["number"] for invoice in self.invoices.values() if invoice["number"]]

    def max_in_any_window(self, seconds: float) -> int:
        """The most requests that arrived within any window of ``seconds``."""
        with self._lock:
            return most_in_any_window(self.arrivals, seconds)

    # -- seed data ----------------------------------------------------------------------------

    def _seed_data(self) -> None:
        def add(model: str, key: str, **values: Any) -> int:
            record_id = self._insert(model, values)
            self.ids[key] = record_id
            return record_id

        currencies = {"USD": ("U.S. Dollar", "$", 2), "EUR": ("Euro", "€", 2), "GBP": ("Pound Sterling", "£", 2)}
        currencies["JPY"] = ("Yen", "¥", 0)
        for code, (name, symbol, digits) in currencies.items():
            rounding = Decimal(1).scaleb(-digits)
            add("currency.currency", f"currency:{code}", name=name, code=code, symbol=symbol, digits=digits)
            self._db["currency.currency"][self.ids[f"currency:{code}"]]["rounding"] = rounding
        add("company.company", "company", name=COMPANY_NAME, currency=self.ids["currency:USD"])
        types = {
            "revenue": {"revenue": True},
            "receivable": {"receivable": True},
            "payable": {"payable": True},
            "expense": {"expense": True},
            "cash": {},
            "tax": {},
        }
        for name, flags in types.items():
            values = {"revenue": False, "receivable": False, "payable": False, "expense": False, **flags}
            add("account.account.type", f"type:{name}", name=name.title(), **values)
        accounts = [
            ("1200", "Accounts receivable", "receivable", False, True),
            ("2100", "Accounts payable", "payable", False, True),
            ("1150", "Card processor clearing", "cash", False, False),
            ("1160", "Bank receipts clearing", "cash", False, False),
            ("2300", "VAT payable", "tax", False, False),
            ("4000", "Subscription revenue", "revenue", False, False),
            ("4100", "Usage revenue", "revenue", False, False),
            ("4200", "Discontinued revenue", "revenue", True, False),
        ]
        for code, name, kind, closed, party_required in accounts:
            add(
                "account.account",
                f"account:{code}",
                code=code,
                name=name,
                type=self.ids[f"type:{kind}"],
                closed=closed,
                company=COMPANY_ID,
                party_required=party_required,
            )
        add(
            "account.tax",
            "tax:VAT20",
            name="VAT20",
            description="VAT20 (20%)",
            type="percentage",
            rate=Decimal("0.20"),
            invoice_account=self.ids["account:2300"],
            company=COMPANY_ID,
        )
        add("account.journal", "journal:revenue", name="Revenue", code="REV", type="revenue")
        add("account.journal", "journal:cash", name="Cash", code="CASH", type="cash")
        for name, code in (("Card", "1150"), ("Bank", "1160")):
            account = self.ids[f"account:{code}"]
            add(
                "account.invoice.payment.method",
                f"method:{name}",
                name=name,
                journal=self.ids["journal:cash"],
                credit_account=account,
                debit_account=account,
                company=COMPANY_ID,
            )
        add(
            "account.configuration",
            "configuration",
            default_account_receivable=self.ids["account:1200"],
            default_account_payable=self.ids["account:2100"],
            tax_rounding=self.tax_rounding,
        )

    # -- storage ------------------------------------------------------------------------------

    def _insert(self, model: str, values: dict[str, Any]) -> int:
        record_id = next(self._ids[model])
        record: dict[str, Any] = {
            name: ([] if relation and relation.endswith("*") else None) for name, relation in _SCHEMA[model].items()
        }
        record.update(values, id=record_id)
        self._db[model][record_id] = record
        for name in _INDEXED.get(model, ()):
            self._index[model, name][record[name]].add(record_id)
        return record_id

    def _update(self, model: str, record_id: int, values: dict[str, Any]) -> None:
        record = self._db[model][record_id]
        for name in _INDEXED.get(model, ()):
            if name in values:
                self._index[model, name][record[name]].discard(record_id)
                self._index[model, name][values[name]].add(record_id)
        record.update(values)

    def _remove(self, model: str, record_id: int) -> None:
        record = self._db[model].pop(record_id)
        for name in _INDEXED.get(model, ()):
            self._index[model, name][record[name]].discard(record_id)

    def _get(self, model: str, record_id: Any) -> dict[str, Any]:
        record = self._db[model].get(record_id) if isinstance(record_id, int) else None
        if record is None:
            raise UserError(f'You are trying to read records "{record_id}" of "{model}" that don\'t exist.')
        return record

    # -- HTTP ---------------------------------------------------------------------------------

    def _serve(self, handler: _Handler) -> None:
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            self._write(handler, *self._respond(handler))
        finally:
            with self._lock:
                self.in_flight -= 1

    def _write(self, handler: _Handler, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.responses[status] += 1
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True  # the client gave up waiting: the fault we wanted

    @staticmethod
    def _html(status: int, text: str = "", headers: dict[str, str] | None = None) -> tuple[int, bytes, str, dict]:
        reason = _HTTP_REASONS.get(status, "Error")
        body = f"<!doctype html>\n<html lang=en>\n<title>{status} {reason}</title>\n<h1>{reason}</h1>\n<p>{text}</p>\n"
        return status, body.encode(), "text/html; charset=utf-8", headers or {}

    def _hang(self) -> None:
        self._stopped.wait(self.hang_seconds)  # never under the lock

    def _respond(self, handler: _Handler) -> tuple[int, bytes, str, dict]:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        if handler.path != self.rpc_path and not (self.any_database and re.fullmatch(r"/[^/]+/rpc/", handler.path)):
            return self._html(404, "The requested URL was not found on the server.")
        if "json" not in handler.headers.get("Content-Type", ""):
            return self._html(400, "Not a JSON request")
        try:
            data = json.loads(raw, object_hook=_decode_hook)
        except ValueError:
            return self._html(400, "Unable to read JSON request")
        if not isinstance(data, dict):
            return self._html(400, "Unable to get RPC method")
        bare = set(data) != {"id", "method", "params"}  # Tryton then answers errors as HTML pages
        method = data.get("method") or ""
        params = data.get("params") or []
        if not isinstance(method, str) or not isinstance(params, list):
            return self._html(400, "Unable to get RPC params")
        with self._lock:
            self.requests[method] += 1
        try:
            session = None
            if method not in ("common.db.login", "common.server.version"):
                session = self._authenticate(handler.headers.get("Authorization", ""))
            fault = self._decide_fault(method, params, session)
            if fault is not None:
                early = self._fault_before(fault, session)
                if early is not None:
                    return early
            try:
                with self._lock:
                    result = self._dispatch(method, params, fault)
                reply: dict[str, Any] = {"id": data.get("id"), "result": result}
                error_status = 0
            except _Abort:
                raise
            except _TrytonError as exc:
                reply = {"id": data.get("id"), "error": exc.payload()}
                error_status = exc.bare_status
            except Exception as exc:  # noqa: BLE001 - Tryton answers any crash as an error array
                reply = {"id": data.get("id"), "error": [str(exc), traceback.format_exc()]}
                error_status = 500
            if fault is not None and fault.kind in ("timeout_after_commit", "read_timeout"):
                self._hang()
            if bare:
                if error_status:
                    return self._html(error_status, str(reply["error"]))
                return 200, _dumps(reply["result"]), "application/json", {}
            return 200, _dumps(reply), "application/json", {}
        except _Abort as abort:
            return self._html(abort.status, abort.text, abort.headers)

    def _authenticate(self, header: str) -> dict[str, Any]:
        scheme, _, encoded = header.partition(" ")
        if scheme != "Session" or not encoded:
            raise _Abort(401)
        try:
            user, uid, token = base64.b64decode(encoded, validate=True).decode().split(":", 2)
        except (ValueError, binascii.Error):
            raise _Abort(401) from None
        with self._lock:
            session = self._sessions.get(token)
            if session is None or session["user"] != user or str(session["uid"]) != uid:
                raise _Abort(401)
            session["calls"] += 1
            return session

    # -- faults -------------------------------------------------------------------------------

    def _decide_fault(self, method: str, params: list[Any], session: dict[str, Any] | None) -> Fault | None:
        write = _is_write(method, params)
        with self._lock:
            if not self.enabled:
                return None
            for forced in self._forced:
                if forced.times > 0 and (forced.method == method or (not forced.method and write)):
                    forced.times -= 1
                    kind = forced.kind
                    status = forced.status or (503 if kind in ("server_error", "read_server_error") else 0)
                    if kind != "validation_error":  # counted where it bites
                        self._count_fault(kind, method, "forced", 0)
                    return Fault(kind, status)
            rates = self.faults
            if method.startswith("common.") or not rates.applies_to(method):
                return None
            kinds = WRITE_FAULTS if write else READ_FAULTS
            chances = [getattr(rates, kind) for kind in kinds]
            if not any(chances):
                return None
            document = self._fault_document(method, params) if write else ""
            self._draws[method, document] += 1
            n = self._draws[method, document]
            rng = random.Random(f"{self.seed}|{method}|{document}|{n}")
            draw, edge, picked = rng.random(), 0.0, ""
            for candidate, chance in zip(kinds, chances, strict=True):
                edge += chance
                if draw < edge:
                    picked = candidate
                    break
            if not picked:
                return None
            kind = picked
            if kind == "session_expiry" and (session is None or session["calls"] <= 1):
                return None  # a session signed in for this very call is never expired: no 401 loop
            status = (503 if rng.random() < 0.5 else 500) if kind.endswith("server_error") else 0
            self._count_fault(kind, method, document, n)
            return Fault(kind, status)

    def _count_fault(self, kind: str, method: str, document: str, n: int) -> None:
        self.faults_injected[kind] += 1
        self.faults_by_method[kind, method] += 1
        self.fault_log.append((kind, method, document, n))

    def _fault_document(self, method: str, params: list[Any]) -> str:
        """The external reference a write is about, so fault sequences follow documents."""
        try:
            if method.startswith("wizard."):
                return str(((params[1] or {}).get("start") or {}).get("description") or "")
            model, _, verb = method[len("model.") :].rpartition(".")
            if verb == "create" and model in ("party.party", "account.invoice"):
                values = params[0][0]
                return str(values.get("code") if model == "party.party" else values.get("reference"))
            ids = params[0]
            field = {"party.party": "code", "account.invoice": "reference"}.get(model)
            if field and isinstance(ids, list):
                return ",".join(str(self._db[model].get(i, {}).get(field)) for i in ids if isinstance(i, int))
        except (IndexError, KeyError, TypeError, AttributeError):
            pass
        return ""

    def _fault_before(self, fault: Fault, session: dict[str, Any] | None) -> tuple[int, bytes, str, dict] | None:
        kind = fault.kind
        if kind in ("throttle", "read_throttle"):
            return self._html(429, "Too many requests", {"Retry-After": f"{self.throttle_retry_after:g}"})
        if kind in ("server_error", "read_server_error"):
            return self._html(fault.status or 503, "The server is busy")
        if kind == "timeout_before_commit":
            self._hang()
            return self._html(503, "The server is busy")
        if kind == "session_expiry":
            with self._lock:
                self._sessions = {t: s for t, s in self._sessions.items() if s is not session}
            return self._html(401)
        return None  # timeout_after_commit, read_timeout: work first; validation_error: in the post

    # -- dispatch -----------------------------------------------------------------------------

    def _dispatch(self, method: str, params: list[Any], fault: Fault | None) -> Any:
        if method == "common.db.login":
            return self._login(params)
        if method == "common.server.version":
            return VERSION
        prefix, _, rest = method.partition(".")
        name, _, verb = rest.rpartition(".")
        args = list(params)
        if prefix == "model":
            if name == "res.user" and verb == "get_preferences":
                self._pop_context(args)
                return self._preferences()
            if name not in _SCHEMA:
                raise KeyError(name)  # what Tryton's pool answers for a model it does not have
            context = self._pop_context(args)
            if name.startswith("account.") and context.get("company") != COMPANY_ID:
                raise RuntimeError(f"{name}: the context has no company {COMPANY_ID}; company rules need it")
            return self._model_call(name, verb, args, context, fault)
        if prefix == "wizard":
            if name != "account.invoice.pay":
                raise KeyError(name)
            return self._wizard_call(verb, args)
        raise KeyError(method)

    @staticmethod
    def _pop_context(args: list[Any]) -> dict[str, Any]:
        context = args.pop() if args else None
        if not isinstance(context, dict):
            raise _Abort(422, "Missing context argument")
        return context

    def _login(self, params: list[Any]) -> list[Any]:
        user = params[0] if params else None
        parameters = params[1] if len(params) > 1 else {}
        if not isinstance(user, str):
            raise _Abort(400, "user argument must be a string")
        if not isinstance(parameters, dict) or "password" not in parameters:
            raise LoginException("password", "Password", "password")
        if user != self.username or parameters["password"] != self.password:
            self.events["login_refused"] += 1
            raise _Abort(401)
        token = secrets.token_hex(32)
        self._sessions[token] = {"user": user, "uid": self.uid, "calls": 0}
        self.events["login"] += 1
        return [self.uid, token, None]

    def _preferences(self) -> dict[str, Any]:
        return {
            "id": self.uid,
            "login": self.username,
            "name": "Administrator",
            "language": "en",
            "language_direction": "ltr",
            "company": COMPANY_ID,
            "companies": [COMPANY_ID],
            "employee": None,
            "employees": [],
            "groups": [1],
        }

    def _model_call(self, model: str, verb: str, args: list[Any], context: dict[str, Any], fault: Fault | None) -> Any:
        if verb == "read":
            return self._read(model, args[0], args[1] if len(args) > 1 else None)
        if verb in ("search", "search_read", "search_count"):
            domain = args[0] if args else []
            offset = args[1] if len(args) > 1 and verb != "search_count" else 0
            limit = args[2] if len(args) > 2 and verb != "search_count" else None
            order = args[3] if len(args) > 3 and verb != "search_count" else None
            ids = self._search(model, domain, offset or 0, limit, order)
            if verb == "search_count":
                return len(ids)
            if verb == "search":
                return ids
            return self._read(model, ids, args[4] if len(args) > 4 else None)
        handler = {
            ("party.party", "create"): self._party_create,
            ("party.party", "write"): self._party_write,
            ("account.invoice", "create"): self._invoice_create,
            ("account.invoice", "delete"): self._invoice_delete,
            ("account.invoice", "post"): self._invoice_post,
        }.get((model, verb))
        if handler is not None:
            return handler(args, fault)
        if verb in _TRYTON_RPC or (model == "account.invoice" and verb in _INVOICE_BUTTONS):
            raise NotImplementedError(f"the ERP simulator does not simulate {model}.{verb}")
        raise _Abort(403)

    # -- reads and domains --------------------------------------------------------------------

    def _read(self, model: str, ids: Any, fields: list[str] | None) -> list[dict[str, Any]]:
        if not isinstance(ids, list):
            raise TypeError(f"read of {model} takes a list of ids, not {ids!r}")
        missing = [i for i in ids if not isinstance(i, int) or i not in self._db[model]]
        if missing:
            listed = ", ".join(map(str, missing))
            raise UserError(f'You are trying to read records "{listed}" of "{model}" that don\'t exist.')
        names = list(fields) if fields else list(_SCHEMA[model])
        return [self._row(model, self._db[model][i], names) for i in ids]

    def _row(self, model: str, record: dict[str, Any], names: list[str]) -> dict[str, Any]:
        schema = _SCHEMA[model]
        row: dict[str, Any] = {"id": record["id"]}
        related: dict[str, list[str]] = {}
        for name in names:
            base, dot, rest = name.partition(".")
            if base == "rec_name":
                row["rec_name"] = self._rec_name(model, record)
                continue
            if base not in schema:
                raise ValueError(f'"{base}" is not a field of "{model}"')  # Tryton fails the call, not the field
            if dot:
                if not schema[base]:
                    raise ValueError(f'"{base}" of "{model}" is not a relation field: "{name}" cannot be read')
                related.setdefault(base, []).append(rest)
            else:
                value = record[base]
                row[base] = list(value) if isinstance(value, list) else value
        for base, rest_names in related.items():
            target = str(schema[base]).rstrip("*")
            value = record[base]
            if isinstance(value, list):
                row[base + "."] = [self._row(target, self._db[target][i], rest_names) for i in value]
            else:
                row[base + "."] = self._row(target, self._db[target][value], rest_names) if value else None
        return row

    def _rec_name(self, model: str, record: dict[str, Any]) -> str:
        if model == "account.invoice":
            items = [record["number"]] if record["number"] else []
            if record["reference"]:
                items.append(f"[{record['reference']}]")
            return " ".join(items) or f"({record['id']})"
        for name in ("name", "code", "number", "description"):
            if record.get(name):
                return str(record[name])
        return str(record["id"])

    def _search(self, model: str, domain: Any, offset: int, limit: int | None, order: Any) -> list[int]:
        if not isinstance(domain, list):
            raise TypeError(f"a domain is a list, not {domain!r}")
        table = self._db[model]
        candidates = self._candidates(model, domain)
        ids = sorted(table) if candidates is None else sorted(candidates)
        found = [i for i in ids if i in table and self._match(model, table[i], domain)]
        for field, direction in reversed(self._order(model, order)):
            found.sort(key=lambda i, f=field: self._sort_key(table[i].get(f)), reverse=direction == "DESC")
        found = found[offset:]
        return found[:limit] if limit is not None else found

    @staticmethod
    def _sort_key(value: Any) -> tuple[int, Any]:
        return (0, 0) if value is None else (1, value)

    @staticmethod
    def _order(model: str, order: Any) -> list[tuple[str, str]]:
        if not order:
            return [("id", "ASC")]
        result = []
        for item in order:
            field, direction = item[0], str(item[1] if len(item) > 1 else "ASC").split()[0].upper()
            if field not in _SCHEMA[model] or "." in field:
                raise ValueError(f'the ERP simulator cannot order "{model}" by "{field}"')
            result.append((field, direction))
        return result

    def _candidates(self, model: str, domain: list[Any]) -> set[int] | None:
        """Ids that can match an AND domain, from the first indexed equality in it; None: scan."""
        if domain and domain[0] == "OR":
            return None
        for clause in domain:
            if isinstance(clause, list | tuple) and len(clause) == 3 and isinstance(clause[0], str):
                if clause[1] == "=":
                    found = self._lookup(model, clause[0], [clause[2]])
                elif clause[1] == "in" and isinstance(clause[2], list):
                    found = self._lookup(model, clause[0], clause[2])
                else:
                    continue
                if found is not None:
                    return found
        return None

    def _lookup(self, model: str, path: str, values: list[Any]) -> set[int] | None:
        base, dot, rest = path.partition(".")
        if base == "id" and not dot:
            return {v for v in values if isinstance(v, int)}
        if not dot:
            index = self._index.get((model, base))
            if index is None:
                return None
            return set().union(*(index.get(v, ()) for v in values)) if values else set()
        relation = _SCHEMA[model].get(base)
        index = self._index.get((model, base))
        if not relation or relation.endswith("*") or index is None:
            return None
        targets = self._lookup(relation, rest, values)
        if targets is None:
            return None
        return set().union(*(index.get(t, ()) for t in targets)) if targets else set()

    def _match(self, model: str, record: dict[str, Any], domain: list[Any]) -> bool:
        if not domain:
            return True
        mode, clauses = "AND", domain
        if isinstance(domain[0], str) and domain[0] in ("AND", "OR"):
            mode, clauses = domain[0], domain[1:]
        results = (self._clause(model, record, clause) for clause in clauses)
        return any(results) if mode == "OR" else all(results)

    def _clause(self, model: str, record: dict[str, Any], clause: Any) -> bool:
        if not isinstance(clause, list | tuple) or not clause:
            raise ValueError(f"invalid domain clause {clause!r}")
        if isinstance(clause[0], list | tuple) or clause[0] in ("AND", "OR"):
            return self._match(model, record, list(clause))
        if len(clause) < 3:
            raise ValueError(f"invalid domain clause {clause!r}")
        path, operator, value = clause[0], clause[1], clause[2]
        values = self._path_values(model, record, path)
        if operator == "=":
            return any(v == value for v in values)
        if operator == "!=":
            return bool(values) and any(v != value for v in values)
        if operator in ("in", "not in"):
            if not isinstance(value, list):
                raise ValueError(f'"{operator}" takes a list, not {value!r}')
            hit = any(v in value for v in values)
            return hit if operator == "in" else not hit
        if operator in ("<", "<=", ">", ">="):
            compare = {
                "<": lambda a: a < value,
                "<=": lambda a: a <= value,
                ">": lambda a: a > value,
                ">=": lambda a: a >= value,
            }[operator]
            return any(v is not None and compare(v) for v in values)
        if operator in ("like", "ilike", "not like", "not ilike"):
            hit = any(_like(str(value), v, fold="ilike" in operator) for v in values)
            return not hit if operator.startswith("not") else hit
        raise ValueError(f'the ERP simulator does not know the domain operator "{operator}"')

    def _path_values(self, model: str, record: dict[str, Any], path: str) -> list[Any]:
        base, dot, rest = path.partition(".")
        schema = _SCHEMA[model]
        if base not in schema:
            raise ValueError(f'"{base}" is not a field of "{model}" (domain {path!r})')
        value = record[base]
        relation = schema[base]
        if not dot:
            return list(value) if isinstance(value, list) else [value]
        if not relation:
            raise ValueError(f'"{base}" of "{model}" is not a relation: cannot search on "{path}"')
        target = relation.rstrip("*")
        ids = value if isinstance(value, list) else ([value] if value else [])
        out: list[Any] = []
        for related_id in ids:
            out.extend(self._path_values(target, self._db[target][related_id], rest))
        return out

    # -- parties ------------------------------------------------------------------------------

    def _party_create(self, args: list[Any], fault: Fault | None) -> list[int]:
        vlist = args[0] if args else None
        if not isinstance(vlist, list) or not all(isinstance(v, dict) for v in vlist):
            raise TypeError("create takes a list of value dicts")
        taken = self._index["party.party", "code"]
        seen: set[str] = set()
        prepared = []
        for values in vlist:
            unknown = set(values) - {"name", "code", "active", "lang", *_PARTY_NESTED}
            if unknown:
                raise ValueError(f"party.party has no field(s) {', '.join(sorted(unknown))}")
            code = values.get("code")
            if code is not None and (taken.get(code) or code in seen):
                self.events["party_code_conflict"] += 1
                raise UserError("The code on party must be unique.")
            if code is not None:
                seen.add(code)
            nested = {key: self._nested_creates("party.party", key, values.get(key)) for key in _PARTY_NESTED}
            prepared.append((values, nested))
        created = []
        for values, nested in prepared:
            party_id = self._insert(
                "party.party",
                {"name": values.get("name"), "code": values.get("code"), "active": values.get("active", True)},
            )
            if values.get("code") is None:
                self._update("party.party", party_id, {"code": str(party_id)})
            self._add_nested(party_id, nested)
            self._sync_party(party_id)
            created.append(party_id)
        self.events["party_created"] += len(created)
        return created

    def _nested_creates(self, model: str, key: str, ops: Any) -> list[dict[str, Any]]:
        if ops is None:
            return []
        target, allowed = _PARTY_NESTED[key]
        if not isinstance(ops, list):
            raise TypeError(f"{model}.{key} takes a list of actions such as [['create', [...]]], not {ops!r}")
        records = []
        for op in ops:
            if not isinstance(op, list) or len(op) != 2 or op[0] != "create" or not isinstance(op[1], list):
                raise NotImplementedError(f"the ERP simulator only takes ['create', [...]] for {model}.{key}: {op!r}")
            for values in op[1]:
                if not isinstance(values, dict) or set(values) - allowed:
                    raise ValueError(f"{target} does not take {values!r}")
                records.append(values)
        return records

    def _add_nested(self, party_id: int, nested: dict[str, list[dict[str, Any]]]) -> None:
        party = self._db["party.party"][party_id]
        for key, records in nested.items():
            target = _PARTY_NESTED[key][0]
            for values in records:
                party[key].append(self._insert(target, {**values, "party": party_id}))

    def _party_write(self, args: list[Any], fault: Fault | None) -> None:
        if len(args) < 2 or len(args) % 2:
            raise TypeError("write takes pairs of ids and values")
        taken = self._index["party.party", "code"]
        prepared = []
        for ids, values in zip(args[::2], args[1::2], strict=True):
            if not isinstance(ids, list) or not isinstance(values, dict):
                raise TypeError("write takes pairs of a list of ids and a dict of values")
            for party_id in ids:
                self._get("party.party", party_id)
            unknown = set(values) - {"name", "code", "active", "lang", *_PARTY_NESTED}
            if unknown:
                raise ValueError(f"party.party has no field(s) {', '.join(sorted(unknown))}")
            code = values.get("code")
            if code is not None and (len(ids) > 1 or taken.get(code, set()) - set(ids)):
                self.events["party_code_conflict"] += 1
                raise UserError("The code on party must be unique.")
            nested = {key: self._nested_creates("party.party", key, values.get(key)) for key in _PARTY_NESTED}
            prepared.append((ids, values, nested))
        for ids, values, nested in prepared:
            plain = {key: value for key, value in values.items() if key not in _PARTY_NESTED}
            for party_id in ids:
                old_code = self._db["party.party"][party_id]["code"]
                self._update("party.party", party_id, plain)
                self._add_nested(party_id, nested)
                if old_code != self._db["party.party"][party_id]["code"]:
                    self.parties.pop(old_code, None)
                self._sync_party(party_id)
        self.events["party_written"] += 1

    def _sync_party(self, party_id: int) -> None:
        party = self._db["party.party"][party_id]
        summary = self.parties.setdefault(party["code"], {"writes": -1})
        summary.update(
            id=party_id,
            code=party["code"],
            name=party["name"],
            addresses=[dict(self._db["party.address"][i]) for i in party["addresses"]],
            contact_mechanisms=[dict(self._db["party.contact_mechanism"][i]) for i in party["contact_mechanisms"]],
            identifiers=[dict(self._db["party.identifier"][i]) for i in party["identifiers"]],
            writes=summary["writes"] + 1,
        )

    # -- invoices -----------------------------------------------------------------------------

    def _currency(self, currency_id: int) -> dict[str, Any]:
        return self._db["currency.currency"][currency_id]

    def _round(self, amount: Decimal, currency: dict[str, Any]) -> Decimal:
        return amount.quantize(Decimal(1).scaleb(-currency["digits"]), rounding=self.rounding)

    def _domain_error(self, value: Any, field: str, record: str, model: str) -> UserError:
        return UserError(
            f'The value "{value}" for field "{field}" in record "{record}" of "{model}" is not valid according to '
            "its domain."
        )

    def _invoice_create(self, args: list[Any], fault: Fault | None) -> list[int]:
        vlist = args[0] if args else None
        if not isinstance(vlist, list) or not all(isinstance(v, dict) for v in vlist):
            raise TypeError("create takes a list of value dicts")
        prepared = [self._prepare_invoice(values) for values in vlist]
        created = []
        for values, lines in prepared:
            invoice_id = self._insert("account.invoice", values)
            for line in lines:
                line_id = self._insert("account.invoice.line", {**line, "invoice": invoice_id})
                self._db["account.invoice"][invoice_id]["lines"].append(line_id)
            self.invoice_creations[values["reference"]] += 1
            self._sync_invoice(invoice_id)
            created.append(invoice_id)
        self.events["invoice_created"] += len(created)
        return created

    def _prepare_invoice(self, values: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        unknown = set(values) - _INVOICE_FIELDS
        if unknown:
            raise ValueError(f"account.invoice has no field(s) {', '.join(sorted(unknown))}")
        for field, label in (("type", "Type"), ("party", "Party"), ("invoice_address", "Invoice Address")):
            if not values.get(field):
                raise UserError(f'A value is required for field "{label}" in "Invoice".')
        for field, label in (("currency", "Currency"), ("account", "Account")):
            if not values.get(field):
                raise UserError(f'A value is required for field "{label}" in "Invoice".')
        if values["type"] != "out":
            raise NotImplementedError("the ERP simulator only holds customer invoices (type 'out')")
        party = self._get("party.party", values["party"])
        address = self._get("party.address", values["invoice_address"])
        if address["party"] != party["id"]:
            raise self._domain_error(address["id"], "Invoice Address", "new", "Invoice")
        account = self._get("account.account", values["account"])
        if account["closed"] or not self._db["account.account.type"][account["type"]]["receivable"]:
            raise self._domain_error(account["code"], "Account", "new", "Invoice")
        if values.get("journal") is not None:
            self._get("account.journal", values["journal"])
        currency = self._get("currency.currency", values["currency"])
        for field in ("invoice_date", "payment_term_date", "accounting_date"):
            if values.get(field) is not None and not isinstance(values[field], datetime.date):
                raise TypeError(f"{field} must be a date, not {values[field]!r}")
        ops = values.get("lines") or []
        lines_in: list[dict[str, Any]] = []
        for op in ops:
            if not isinstance(op, list) or len(op) != 2 or op[0] != "create" or not isinstance(op[1], list):
                raise NotImplementedError(f"the ERP simulator only takes ['create', [...]] for invoice lines: {op!r}")
            lines_in.extend(op[1])
        lines = []
        untaxed, tax_total = Decimal(0), Decimal(0)
        tax_bases: defaultdict[int, Decimal] = defaultdict(Decimal)
        for values_line in lines_in:
            line = self._prepare_line(values_line, currency)
            untaxed += line["amount"]
            for tax_id in line["taxes"]:
                tax_amount = line["amount"] * self._db["account.tax"][tax_id]["rate"]
                if self.tax_rounding == "line":
                    tax_total += self._round(tax_amount, currency)
                else:
                    tax_bases[tax_id] += tax_amount
            lines.append(line)
        tax_total += sum((self._round(amount, currency) for amount in tax_bases.values()), Decimal(0))
        zero = self._round(Decimal(0), currency)
        record = {
            "type": "out",
            "state": "draft",
            "number": None,
            "reference": values.get("reference"),
            "description": values.get("description"),
            "company": COMPANY_ID,
            "party": party["id"],
            "invoice_address": address["id"],
            "account": account["id"],
            "journal": values.get("journal"),
            "currency": currency["id"],
            "invoice_date": values.get("invoice_date"),
            "accounting_date": values.get("accounting_date"),
            "payment_term_date": values.get("payment_term_date"),
            "untaxed_amount": untaxed + zero,
            "tax_amount": tax_total + zero,
            "total_amount": untaxed + tax_total + zero,
            "amount_to_pay": zero,
            "amount_to_pay_today": zero,
        }
        return record, lines

    def _prepare_line(self, values: dict[str, Any], currency: dict[str, Any]) -> dict[str, Any]:
        unknown = set(values) - _LINE_FIELDS
        if unknown:
            raise ValueError(f"account.invoice.line has no field(s) {', '.join(sorted(unknown))}")
        if values.get("type", "line") != "line":
            raise NotImplementedError("the ERP simulator only takes invoice lines of type 'line'")
        for field, label in (("account", "Account"), ("currency", "Currency")):
            if not values.get(field):
                raise UserError(f'A value is required for field "{label}" in "Invoice Line".')
        account = self._get("account.account", values["account"])
        if account["closed"] or not self._db["account.account.type"][account["type"]]["revenue"]:
            raise self._domain_error(account["code"], "Account", "new", "Invoice Line")
        if values["currency"] != currency["id"]:
            raise self._domain_error(values["currency"], "Currency", "new", "Invoice Line")
        quantity, unit_price = values.get("quantity"), values.get("unit_price")
        if isinstance(quantity, bool) or not isinstance(quantity, int | float | Decimal):
            raise TypeError(f"quantity must be a number, not {quantity!r}")
        if isinstance(unit_price, bool) or not isinstance(unit_price, int | Decimal):
            raise TypeError(f"unit_price must be a Decimal, not {unit_price!r}")  # a float is a client bug
        if isinstance(unit_price, Decimal) and unit_price.as_tuple().exponent < -4:  # type: ignore[operator]
            raise UserError(
                f'The number of digits in the value "{unit_price!r}" for field "Unit Price" in record "new" of '
                '"Invoice Line" exceeds the limit of "4".'
            )
        taxes: list[int] = []
        for op in values.get("taxes") or []:
            if not isinstance(op, list) or len(op) != 2 or op[0] != "add" or not isinstance(op[1], list):
                raise NotImplementedError(f"the ERP simulator only takes ['add', [ids]] for line taxes: {op!r}")
            for tax_id in op[1]:
                self._get("account.tax", tax_id)
                taxes.append(tax_id)
        amount = self._round(Decimal(str(quantity)) * Decimal(unit_price), currency)
        return {
            "type": "line",
            "account": account["id"],
            "description": values.get("description"),
            "quantity": float(quantity),  # a Float field in Tryton
            "unit_price": Decimal(unit_price),
            "amount": amount,
            "currency": currency["id"],
            "taxes": taxes,
            "company": COMPANY_ID,
        }

    def _invoice_delete(self, args: list[Any], fault: Fault | None) -> None:
        ids = args[0] if args else None
        if not isinstance(ids, list):
            raise TypeError("delete takes a list of ids")
        invoices = [self._get("account.invoice", i) for i in ids]
        for invoice in invoices:
            if invoice["state"] not in ("draft", "cancelled"):
                raise UserError(f'To delete invoice "{self._rec_name("account.invoice", invoice)}" you must cancel it.')
            if invoice["number"]:
                raise UserError(
                    f'You cannot delete invoice "{self._rec_name("account.invoice", invoice)}" because it has a number.'
                )
        for invoice in invoices:
            for line_id in invoice["lines"]:
                self._remove("account.invoice.line", line_id)
            self._remove("account.invoice", invoice["id"])
            self.invoices[invoice["id"]]["deleted"] = True
        self.events["invoice_deleted"] += len(invoices)

    def _invoice_post(self, args: list[Any], fault: Fault | None) -> None:
        ids = args[0] if args else None
        if not isinstance(ids, list) or len(ids) != len(set(ids)):
            raise TypeError("post takes a list of distinct ids")
        invoices = [self._get("account.invoice", i) for i in ids]
        to_post = [invoice for invoice in invoices if invoice["state"] in ("draft", "validated")]
        today = self.today()
        future = []
        numbered: dict[tuple[str, int], tuple[datetime.date, str]] = {}
        for invoice in to_post:
            name = self._rec_name("account.invoice", invoice)
            if (fault is not None and fault.kind == "validation_error") or self.validation_fails(
                str(invoice["reference"])
            ):
                self._count_fault("validation_error", "model.account.invoice.post", str(invoice["reference"]), 0)
                self.refused_references[str(invoice["reference"])] += 1
                raise UserError(
                    f'The invoice "{name}" has an invalid tax configuration.',
                    "A tax of its lines does not apply to this company and date (simulated refusal).",
                )
            if not invoice["journal"]:
                raise UserError('A value is required for field "Journal" in "Invoice".')
            date = invoice["invoice_date"] or today
            if date.year not in self.fiscal_years:
                raise UserError(
                    f'To continue, you must create a fiscal year for the date "{date:%m/%d/%Y}" and company '
                    f'"{COMPANY_NAME}".'
                )
            if date > today:
                future.append(name)
            sequence = ("CN" if invoice["total_amount"] < 0 else "INV", date.year)
            last = numbered.get(sequence) or self._last_numbered.get(sequence)
            if self.strict_date_order and last is not None and date < last[0]:
                raise UserError(
                    f'To number the invoice "{name}", you must set an invoice date after "{last[0]:%m/%d/%Y}" '
                    f'because the sequence "{sequence[0]} {sequence[1]}" has already been used for invoice '
                    f'"{last[1]}".'
                )
            numbered[sequence] = (max(date, last[0]) if last else date, name)
        if future:
            keys = ",".join(str(invoice["id"]) for invoice in to_post)
            names = ", ".join(future[:5]) + ("..." if len(future) > 5 else "")
            raise TrytonWarning(
                f"invoice_date_future.{keys}", f'The invoices "{names}" have an invoice date in the future.'
            )
        for invoice in to_post:
            date = invoice["invoice_date"] or today
            sequence = ("CN" if invoice["total_amount"] < 0 else "INV", date.year)
            self._sequences[sequence] += 1
            number = f"{sequence[0]}/{date.year}/{self._sequences[sequence]}"
            last = self._last_numbered.get(sequence)
            self._last_numbered[sequence] = (max(date, last[0]) if last else date, number)
            move_id = self._post_move(invoice, date)
            self._update(
                "account.invoice",
                invoice["id"],
                {
                    "state": "posted",
                    "number": number,
                    "invoice_date": date,
                    "move": move_id,
                    "amount_to_pay": invoice["total_amount"],
                    "amount_to_pay_today": invoice["total_amount"],
                },
            )
            self._sync_invoice(invoice["id"])
        self.events["invoice_posted"] += len(to_post)
        return None

    def _post_move(self, invoice: dict[str, Any], date: datetime.date) -> int:
        """The accounting move of a posted invoice: receivable debit, revenue and tax credits."""
        move_id = self._insert(
            "account.move",
            {
                "description": invoice["description"],
                "date": date,
                "journal": invoice["journal"],
                "state": "posted",
                "origin": f"account.invoice,{invoice['id']}",
                "company": COMPANY_ID,
            },
        )
        total = invoice["total_amount"]
        entries = [(invoice["account"], invoice["party"], total)]
        for line_id in invoice["lines"]:
            line = self._db["account.invoice.line"][line_id]
            entries.append((line["account"], None, -line["amount"]))
        if invoice["tax_amount"]:
            entries.append((self.ids["account:2300"], None, -invoice["tax_amount"]))
        for account, party, amount in entries:
            line_id = self._move_line(move_id, account, party, amount, invoice["currency"])
            if account == invoice["account"]:
                self._db["account.invoice"][invoice["id"]]["lines_to_pay"].append(line_id)
        return move_id

    def _move_line(self, move_id: int, account: int, party: int | None, amount: Decimal, currency: int) -> int:
        zero = amount - amount
        foreign = currency != self._db["company.company"][COMPANY_ID]["currency"]
        line_id = self._insert(
            "account.move.line",
            {
                "move": move_id,
                "account": account,
                "party": party,
                "debit": amount if amount > 0 else zero,
                "credit": -amount if amount < 0 else zero,
                "description": self._db["account.move"][move_id]["description"],
                "second_currency": currency if foreign else None,
                "amount_second_currency": amount if foreign else None,
            },
        )
        self._db["account.move"][move_id]["lines"].append(line_id)
        return line_id

    def _sync_invoice(self, invoice_id: int) -> None:
        invoice = self._db["account.invoice"][invoice_id]
        summary = self.invoices.setdefault(invoice_id, {"payments": [], "deleted": False})
        summary.update(
            id=invoice_id,
            reference=invoice["reference"],
            state=invoice["state"],
            number=invoice["number"],
            total=invoice["total_amount"],
            tax=invoice["tax_amount"],
            untaxed=invoice["untaxed_amount"],
            amount_to_pay=invoice["amount_to_pay"],
            currency=self._currency(invoice["currency"])["code"],
            party=self._db["party.party"][invoice["party"]]["code"],
            party_id=invoice["party"],
            invoice_date=invoice["invoice_date"],
            payment_lines=list(invoice["payment_lines"]),
        )

    # -- the pay wizard -----------------------------------------------------------------------

    def _wizard_call(self, verb: str, args: list[Any]) -> Any:
        context = self._pop_context(args)
        if verb == "create":
            session_id = next(self._wizard_ids)
            self._wizards[session_id] = {"data": {}}
            return [session_id, "start", "end"]
        if verb == "delete":
            self._wizards.pop(args[0] if args else None, None)  # type: ignore[arg-type]
            return None
        if verb != "execute":
            raise _Abort(403)
        if len(args) != 3:
            raise TypeError("execute takes a session id, data and a state name")
        session_id, data, state = args
        session = self._wizards.get(session_id)
        if session is None:
            raise KeyError(f"wizard session {session_id} does not exist")
        if context.get("active_model") != "account.invoice" or not isinstance(context.get("active_id"), int):
            raise ValueError("the pay wizard runs on one account.invoice: active_model and active_id in its context")
        if context.get("company") != COMPANY_ID:
            raise RuntimeError("the context has no company: company rules need it")
        invoice = self._get("account.invoice", context["active_id"])
        if not isinstance(data, dict):
            raise TypeError("wizard data is a dict of state values")
        merged = {key: dict(values) for key, values in session["data"].items()}
        for key, values in data.items():
            allowed = {"start": _PAY_START_FIELDS, "ask": _PAY_ASK_FIELDS}.get(key)
            if allowed is None or not isinstance(values, dict):
                raise AttributeError(f"'account.invoice.pay' has no state view {key!r}")
            unknown = set(values) - allowed - {"id"}
            if unknown:
                raise AttributeError(f"'account.invoice.pay.{key}' has no field(s) {', '.join(sorted(unknown))}")
            merged.setdefault(key, {}).update(values)
        if state == "end":
            return {}
        if state == "start":
            return self._pay_start_view(invoice)
        start = self._pay_start(invoice, merged.get("start") or {})
        if state == "choice":
            if start["amount"] == invoice["amount_to_pay"]:
                self._pay(invoice, start)
                session["data"] = merged
                return {}
            session["data"] = merged
            return self._pay_ask_view(invoice, start["amount"])
        if state == "ask":
            return self._pay_ask_view(invoice, start["amount"])
        if state == "pay":
            kind = (merged.get("ask") or {}).get("type")
            name = self._rec_name("account.invoice", invoice)
            if start["amount"] > invoice["amount_to_pay"]:
                if kind == "partial":
                    raise UserError(
                        f'You cannot add a partial payment on invoice "{name}" with an amount greater than the '
                        f'amount to pay "{invoice["amount_to_pay"]}".'
                    )
                if not invoice["amount_to_pay"]:
                    raise UserError(f'You cannot overpay invoice "{name}" because there is no more left to pay.')
            if start["amount"] != invoice["amount_to_pay"] and kind != "partial":
                raise NotImplementedError(f"the ERP simulator only pays with ask type 'partial', not {kind!r}")
            self._pay(invoice, start)
            session["data"] = merged
            return {}
        raise KeyError(f"'account.invoice.pay' has no state {state!r}")

    def _pay_start_view(self, invoice: dict[str, Any]) -> dict[str, Any]:
        if invoice["state"] != "posted":
            name = self._rec_name("account.invoice", invoice)
            raise UserError(f'The invoice "{name}" must be posted to be paid; it is {invoice["state"]}.')
        defaults = {
            "payee": invoice["party"],
            "payees": [invoice["party"]],
            "company": COMPANY_ID,
            "currency": invoice["currency"],
            "amount": invoice["amount_to_pay"],
            "invoice_account": invoice["account"],
            "date": self.today(),
            "company.": {"id": COMPANY_ID, "rec_name": COMPANY_NAME},
            "currency.": {"id": invoice["currency"], "rec_name": self._currency(invoice["currency"])["code"]},
        }
        return self._view("start", defaults, ["end", "choice"])

    def _pay_ask_view(self, invoice: dict[str, Any], amount: Decimal) -> dict[str, Any]:
        open_lines = [i for i in invoice["lines_to_pay"] if not self._db["account.move.line"][i]["reconciliation"]]
        defaults = {
            "lines_to_pay": open_lines,
            "amount": amount,
            "currency": invoice["currency"],
            "company": COMPANY_ID,
            "lines": [],
            "payment_lines": list(invoice["payment_lines"]),
            "invoice": invoice["id"],
            "type": "overpayment" if amount >= invoice["amount_to_pay"] else "partial",
            "currency.": {"id": invoice["currency"], "rec_name": self._currency(invoice["currency"])["code"]},
        }
        return self._view("ask", defaults, ["end", "pay"])

    @staticmethod
    def _view(state: str, defaults: dict[str, Any], buttons: list[str]) -> dict[str, Any]:
        return {
            "view": {
                "fields_view": {"model": f"account.invoice.pay.{state}", "type": "form", "fields": {}},
                "defaults": defaults,
                "values": {},
                "buttons": [{"state": b, "string": b.title(), "default": b != "end"} for b in buttons],
                "state": state,
            }
        }

    def _pay_start(self, invoice: dict[str, Any], start: dict[str, Any]) -> dict[str, Any]:
        for field, label in (("amount", "Amount"), ("currency", "Currency"), ("date", "Date")):
            if start.get(field) is None:
                raise UserError(f'A value is required for field "{label}" in "Pay Invoice".')
        if not start.get("payment_method"):
            raise UserError('A value is required for field "Payment Method" in "Pay Invoice".')
        amount = start["amount"]
        if isinstance(amount, bool) or not isinstance(amount, int | Decimal):
            raise TypeError(f"amount must be a Decimal, not {amount!r}")
        currency = self._currency(invoice["currency"])
        amount = Decimal(amount)
        if amount.as_tuple().exponent < -currency["digits"]:  # type: ignore[operator]
            raise UserError(
                f'The number of digits in the value "{amount!r}" for field "Amount" in "Pay Invoice" exceeds the '
                f'limit of "{currency["digits"]}".'
            )
        if amount <= 0:
            raise NotImplementedError("the ERP simulator only takes positive payments")
        if start["currency"] != invoice["currency"]:
            raise NotImplementedError("the ERP simulator only takes payments in the invoice currency")
        if not isinstance(start["date"], datetime.date):
            raise TypeError(f"date must be a date, not {start['date']!r}")
        method = self._get("account.invoice.payment.method", start["payment_method"])
        return {**start, "amount": amount, "method": method}

    def _pay(self, invoice: dict[str, Any], start: dict[str, Any]) -> None:
        """Tryton's ``pay_invoice``: a payment move crediting the receivable, on the method's journal."""
        amount, method = start["amount"], start["method"]
        description = start.get("description") or ""
        move_id = self._insert(
            "account.move",
            {
                "description": description,
                "date": start["date"],
                "journal": method["journal"],
                "state": "posted",
                "origin": f"account.invoice,{invoice['id']}",
                "company": COMPANY_ID,
            },
        )
        line_id = self._move_line(move_id, invoice["account"], invoice["party"], -amount, invoice["currency"])
        self._move_line(move_id, method["debit_account"], None, amount, invoice["currency"])
        remaining = invoice["amount_to_pay"] - amount
        payment_lines = [*invoice["payment_lines"], line_id]
        changes: dict[str, Any] = {
            "payment_lines": payment_lines,
            "amount_to_pay": remaining,
            "amount_to_pay_today": remaining,
        }
        if remaining == 0:
            changes["state"] = "paid"
            reconciliation = next(self._reconciliations)
            for paid_line in (*invoice["lines_to_pay"], *payment_lines):
                self._db["account.move.line"][paid_line]["reconciliation"] = reconciliation
        self._update("account.invoice", invoice["id"], changes)
        self._sync_invoice(invoice["id"])
        self.invoices[invoice["id"]]["payments"].append(description)
        self.payment_counts[description] += 1
        currency = self._currency(invoice["currency"])["code"]
        party = self._db["party.party"][invoice["party"]]["code"]
        payment = self.payments.get(description)
        if payment is None:
            self.payments[description] = {
                "description": description,
                "invoice_id": invoice["id"],
                "reference": invoice["reference"],
                "party": party,
                "currency": currency,
                "amount": amount,
                "line_ids": [line_id],
                "method": method["name"],
                "date": start["date"],
                "count": 1,
            }
        else:  # the same description paid again: a duplicate the hub must never cause
            payment["amount"] += amount
            payment["line_ids"].append(line_id)
            payment["count"] += 1
        self.events["payment"] += 1


__all__ = ["FAULT_KINDS", "ErpSimulator", "Fault", "FaultRates", "TrytonWarning", "UserError"]
