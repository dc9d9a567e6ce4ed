"""Tryton over JSON-RPC: parties, customer invoices and their payments.

Tryton has no idempotency keys, so this connector finds before it creates (``dedupe_strategy =
"lookup"``): a party by its ``code`` (unique in Tryton), an invoice by its ``reference``
(searchable, not unique: only this lookup keeps it single), a payment by the description of its
move line. The hub runs one executor per posting at a time, so lookup-then-create cannot race with
itself. A post whose answer was lost is never repeated blind: the executor asks ``find_document``
first.

Outcomes are classified once, in ``TrytonRPC.call``: connection refused, 429 and 503 are
transient (nothing was done); a read timeout or a connection dropped after sending is uncertain
for calls that write; a 401 logs in again once; Tryton's ``UserError`` and ``UserWarning`` are
business refusals carried to finance in Tryton's own words.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import requests

from apps.connectors.base import (
    ACCEPTED_FROM,
    CLOSED_PERIOD,
    DISPUTE_MOVEMENTS,
    ERP_CREDIT_MEMO,
    ERP_INVOICE,
    INVOICE_DATE_ORDER,
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
    ErpDocument,
    journal_entry_kind,
)
from apps.connectors.documents import (
    Address,
    CreditMemoDocument,
    CustomerDocument,
    DisputeMovementDocument,
    InvoiceDocument,
    OnAccountDocument,
    PaymentDocument,
    PostResult,
    ReferenceItem,
    RefundDocument,
    VoidDocument,
    WriteOffDocument,
)
from apps.connectors.http import connection_refused, retry_after
from apps.core.correlation import outbound_headers
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

POSTED_STATES = ("posted", "paid")
# A customer invoice's state in Tryton, as a reconciliation compares it with billing's.
RECONCILED_STATES = {"posted": "open", "paid": "paid", "cancelled": "void"}
LISTING_PAGE = 5000
ACCOUNT_CACHE_SECONDS = 300.0
_ids = itertools.count(1)


def encode(value: Any) -> Any:
    """Python values to Tryton's JSON-RPC encoding (Decimals and dates are tagged objects)."""
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, datetime.datetime):
        raise TypeError("send dates, not datetimes, to Tryton")
    if isinstance(value, datetime.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    if isinstance(value, dict):
        return {key: encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [encode(item) for item in value]
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
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
            )
        return {key: decode(item) for key, item in value.items()}
    if isinstance(value, list):
        return [decode(item) for item in value]
    return value


def _excerpt(value: Any, limit: int = 1500) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:limit]


class TrytonRPC:
    """One authenticated JSON-RPC session to one Tryton database."""

    def __init__(self, url: str, database: str, username: str, password: str, timeout: float) -> None:
        self.endpoint = f"{url.rstrip('/')}/{database}/rpc/"
        self.username = username
        self.password = password
        self.timeout = (min(10.0, timeout), timeout)  # (connect, read)
        self.http = requests.Session()
        self._auth: str | None = None
        self._context: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self.before_send: Callable[[], None] | None = None  # the request budget

    @property
    def context(self) -> dict[str, Any]:
        if self._context is None:
            prefs = self.call("model.res.user.get_preferences", [True, {}], writes=False, with_context=False)
            if not prefs.get("company"):
                raise ConfigurationError(
                    f"the Tryton user {self.username!r} has no current company",
                    finance_message="The ERP user the hub signs in with has no company; an engineer must fix it.",
                )
            self._context = {
                key: prefs[key] for key in ("company", "companies", "language", "employee") if key in prefs
            }
        return self._context

    def login(self) -> None:
        result = self._send("common.db.login", [self.username, {"password": self.password}, "en"], writes=False)
        if not isinstance(result, list) or len(result) < 2:
            raise AuthenticationError(f"Tryton login returned {_excerpt(result, 200)}")
        uid, token = result[0], result[1]
        self._auth = "Session " + base64.b64encode(f"{self.username}:{uid}:{token}".encode()).decode()

    def call(self, method: str, params: list[Any], *, writes: bool, with_context: bool = True) -> Any:
        """Call ``method``; a ``model.*`` call gets the user's context appended to its params."""
        with self._lock:
            if self._auth is None:
                self.login()
        full = [*params, self.context] if with_context else params
        try:
            return self._send(method, full, writes=writes)
        except _SessionExpired:
            # A 401 is answered before anything runs: sign in again and send once more.
            with self._lock:
                self.login()
            try:
                return self._send(method, full, writes=writes)
            except _SessionExpired as exc:
                raise AuthenticationError(f"Tryton refused a fresh session for {method}") from exc

    def _send(self, method: str, params: list[Any], *, writes: bool) -> Any:
        if self.before_send is not None:
            self.before_send()
        headers = {"Content-Type": "application/json", **outbound_headers()}
        if self._auth and not method.startswith("common.db.login"):
            headers["Authorization"] = self._auth
        payload = {"id": next(_ids), "method": method, "params": encode(params)}
        where = f"{method} at {self.endpoint}"
        try:
            response = self.http.post(self.endpoint, json=payload, headers=headers, timeout=self.timeout)
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise TransientError(f"could not connect for {where}: {exc}") from exc
        except requests.ConnectionError as exc:
            if connection_refused(exc) or not writes:
                raise TransientError(f"connection failed for {where}: {exc}") from exc
            raise UncertainOutcome(f"connection dropped after sending {where}: {exc}") from exc
        except requests.Timeout as exc:
            if not writes:
                raise TransientError(f"no answer in {self.timeout[1]}s for {where}") from exc
            raise UncertainOutcome(f"no answer in {self.timeout[1]}s for {where}; Tryton may have done it") from exc

        status = response.status_code
        body = response.text
        if status == 401:
            if method == "common.db.login":
                raise AuthenticationError(f"Tryton refused the login of {self.username!r}", status=status)
            raise _SessionExpired(where)
        if status == 403 and method == "common.db.login":
            raise AuthenticationError(f"Tryton refused the login of {self.username!r}", status=status)
        if status == 429:
            raise TransientError(
                f"Tryton throttled {where}", status=status, retry_after=retry_after(response.headers), body_excerpt=body
            )
        if status in (502, 503, 504):
            # 503: a lock could not be obtained; 504: a database timeout. Tryton rolled back.
            raise TransientError(
                f"Tryton was busy for {where}",
                status=status,
                retry_after=retry_after(response.headers),
                body_excerpt=body,
            )
        if status == 404:
            raise ConfigurationError(f"Tryton has no database behind {self.endpoint}", status=status)
        if status == 422 or 400 <= status < 500:
            raise ConfigurationError(f"Tryton refused the request for {where}", status=status, body_excerpt=body)
        if status >= 500:
            if writes:
                raise UncertainOutcome(f"Tryton failed answering {where}", status=status, body_excerpt=body)
            raise TransientError(f"Tryton failed answering {where}", status=status, body_excerpt=body)
        try:
            data = response.json()
        except ValueError as exc:
            raise (UncertainOutcome if writes else TransientError)(
                f"Tryton answered {where} with something that is not JSON", status=status, body_excerpt=body
            ) from exc
        if data.get("error"):
            raise _classify_error(method, data["error"])
        return decode(data.get("result"))


class _SessionExpired(Exception):
    pass


def _classify_error(method: str, error: Any) -> ConnectorError:
    """Tryton's error array to the hub's taxonomy. A Tryton error means its transaction was rolled
    back, so nothing here is uncertain."""
    kind = error[0] if isinstance(error, list) and error else ""
    args = error[1] if isinstance(error, list) and len(error) > 1 else []
    if kind == "UserError":
        message = args[0] if args else "Tryton refused the document"
        description = args[1] if len(args) > 1 else ""
        return _ErpUserError(method, str(message), str(description or ""), _excerpt(error))
    if kind == "UserWarning":
        message = args[1] if len(args) > 1 else str(args)
        return BusinessRuleError(
            "erp_warning",
            f"Tryton asked for a confirmation the hub does not give on its own: {message}",
            f"UserWarning from {method}",
            body_excerpt=_excerpt(error),
            params={"erp_message": str(message)},
        )
    if kind in ("ConcurrencyException", "TimeoutException"):
        return TransientError(f"{kind} from {method}", body_excerpt=_excerpt(error))
    if kind in ("LoginException", "RateLimitException"):
        return AuthenticationError(f"{kind} from {method}", body_excerpt=_excerpt(error))
    # Any other exception is a crash inside Tryton; its transaction was rolled back.
    return TransientError(
        f"Tryton raised an unexpected error in {method}: {_excerpt(kind, 300)}", body_excerpt=_excerpt(error)
    )


class _ErpUserError(BusinessRuleError):
    def __init__(self, method: str, message: str, description: str, excerpt: str) -> None:
        text = message + (f" {description}" if description else "")
        super().__init__(
            "erp_rejected",
            f"Tryton refused it: {text}",
            f"UserError from {method}",
            body_excerpt=excerpt,
            params={"erp_message": text},
        )


def _address_values(address: Address) -> dict[str, Any]:
    street = "\n".join(part for part in (address.line1, address.line2) if part)
    values: dict[str, Any] = {"street": street, "city": address.city, "postal_code": address.postal_code}
    return {key: value for key, value in values.items() if value}


def _redated_memo(original: datetime.date, posted_on: datetime.date) -> str:
    """What a re-dated document says in Tryton: billing's date, which the ERP's own date no longer is."""
    return f"billing date {original.isoformat()}, re-dated {posted_on.isoformat()} by the hub"


def _with_memo(label: str, posted_on: datetime.date, original: datetime.date | None) -> str:
    return f"{label} ({_redated_memo(original, posted_on)})" if original is not None else label


def _invoice_description(doc: InvoiceDocument | CreditMemoDocument) -> str:
    """Billing's number and customer; for a re-dated document also billing's date, kept whole when
    the description is cut to Tryton's length."""
    description = f"{doc.number} ({doc.customer_ref})"
    if doc.original_date is None:
        return description[:200]
    memo = _redated_memo(doc.original_date, doc.invoice_date)
    return f"{description[: 200 - len(memo) - 3]} - {memo}"


class TrytonConnector(ERPConnector):
    kind = "tryton"
    dedupe_strategy = "lookup"

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        missing = [key for key in ("url", "database", "username", "password") if not settings.get(key)]
        if missing:
            raise ConfigurationError(f"Tryton connection settings lack {', '.join(missing)}")
        self.rpc = TrytonRPC(
            str(settings["url"]),
            str(settings["database"]),
            str(settings["username"]),
            str(settings["password"]),
            float(settings.get("timeout", 60)),
        )
        self.rpc.before_send = self.pace
        self._ids: dict[tuple[str, str], int] = {}
        self._company_currencies: dict[int, str] = {}
        # Revenue accounts by code, as last found open: every invoice line needs one, and a chart of
        # accounts changes rarely (a code found closed or missing is looked up on every call).
        self._revenue_accounts: dict[str, tuple[float, dict[str, Any]]] = {}
        # Rows per search_read when a reconciliation lists the books (a setting, for large books).
        self.listing_page = int(settings.get("listing_page") or LISTING_PAGE)

    # -- lookups --------------------------------------------------------------------------

    def _search_read(
        self, model: str, domain: list[Any], fields: list[str], *, limit: int | None = None, order: Any = None
    ) -> list[dict[str, Any]]:
        return self.rpc.call(f"model.{model}.search_read", [domain, 0, limit, order, fields], writes=False)  # type: ignore[no-any-return]

    def _read(self, model: str, ids: list[int], fields: list[str]) -> list[dict[str, Any]]:
        return self.rpc.call(f"model.{model}.read", [ids, fields], writes=False)  # type: ignore[no-any-return]

    def _find_party(self, code: str) -> dict[str, Any] | None:
        found = self._search_read("party.party", [["code", "=", code]], ["id", "name", "code"], limit=1)
        return found[0] if found else None

    def _find_invoices(self, reference: str) -> list[dict[str, Any]]:
        return self._search_read(
            "account.invoice",
            [["reference", "=", reference], ["type", "=", "out"]],
            ["id", "state", "number", "total_amount", "currency.code", "invoice_date", "description"],
            order=[["id", "ASC"]],
        )

    def _lookup_id(self, model: str, field: str, value: str, *, code: str, message: str) -> int:
        key = (model, value)
        if key not in self._ids:
            found = self._search_read(model, [[field, "=", value]], ["id"], limit=1)
            if not found:
                raise BusinessRuleError(code, message, f"no {model} with {field} = {value!r}", params={"value": value})
            self._ids[key] = int(found[0]["id"])
        return self._ids[key]

    def _currency_id(self, currency: str) -> int:
        return self._lookup_id(
            "currency.currency",
            "code",
            currency,
            code="unknown_currency",
            message=f"The currency {currency} is not set up in Tryton. "
            "Ask the ERP administrator to add it, then retry.",
        )

    def reference_data(self) -> list[ReferenceItem]:
        """Customers by the hub's party code, taxes by name, open accounts by code and payment
        methods by name (the values the connection's mappings point at)."""
        items = [
            ReferenceItem("customer", str(party["code"]), str(party["name"] or ""))
            for party in self._search_read("party.party", [["code", "!=", None]], ["code", "name"])
        ]
        items += [
            ReferenceItem("tax_code", str(tax["name"]), str(tax["description"] or ""))
            for tax in self._search_read("account.tax", [], ["name", "description"])
        ]
        items += [
            ReferenceItem("dimension", str(account["code"]), str(account["name"] or ""), dimension="account")
            for account in self._search_read(
                "account.account", [["code", "!=", None], ["closed", "!=", True]], ["code", "name"]
            )
        ]
        items += [
            ReferenceItem("dimension", str(method["name"]), str(method["name"]), dimension="payment_journal")
            for method in self._search_read("account.invoice.payment.method", [], ["name"])
        ]
        return items

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        if operation == OPERATION_ENSURE_CUSTOMER:
            party = self._find_party(external_ref)
            return PostResult(str(party["id"]), external_ref) if party else None
        if operation in (OPERATION_POST_INVOICE, OPERATION_POST_CREDIT_MEMO):
            for invoice in self._find_invoices(external_ref):
                if invoice["state"] in POSTED_STATES:
                    return self._invoice_result(invoice)
            return None
        if operation in (OPERATION_APPLY_PAYMENT, OPERATION_REFUND_CREDIT_MEMO):
            line = self._find_payment_line(external_ref)
            return PostResult(str(line["id"]), external_ref) if line else None
        if operation in (OPERATION_VOID_INVOICE, OPERATION_VOID_CREDIT_MEMO):
            invoice_ref = external_ref.removesuffix(VOID_SUFFIX)
            for invoice in self._find_invoices(invoice_ref):
                if invoice["state"] == "cancelled":
                    return self._void_result(invoice)
            return None
        if operation == OPERATION_WRITE_OFF:
            move = self._find_move(external_ref)
            return PostResult(str(move["id"]), move.get("number") or "", {"action": "written off"}) if move else None
        if operation == OPERATION_RECEIVE_ON_ACCOUNT:
            move = self._find_move(external_ref)
            if move is None or move["state"] != "posted":
                return None
            return PostResult(str(move["id"]), move.get("number") or "", {"action": "received on account"})
        if operation == OPERATION_APPLY_CREDIT:
            line = self._find_credit_application(external_ref)
            return PostResult(str(line["id"]), external_ref, {"action": "applied from credit"}) if line else None
        if operation in DISPUTE_MOVEMENTS:
            move = self._find_move(external_ref)
            if move is None or move["state"] != "posted":
                return None
            return PostResult(str(move["id"]), move.get("number") or "", {"action": DISPUTE_MOVEMENTS[operation]})
        raise ConfigurationError(f"the Tryton connector does not know the operation {operation!r}")

    def _find_payment_line(self, external_ref: str) -> dict[str, Any] | None:
        """The receivable line of the payment move the pay wizard wrote with our reference."""
        found = self._search_read(
            "account.move.line",
            [["move.description", "=", external_ref], ["account.type.receivable", "=", True]],
            ["id", "move"],
            limit=1,
        )
        return found[0] if found else None

    @staticmethod
    def _invoice_result(invoice: dict[str, Any]) -> PostResult:
        return PostResult(
            str(invoice["id"]),
            invoice.get("number") or "",
            {"state": str(invoice["state"]), "total": str(invoice.get("total_amount", ""))},
        )

    # -- customers ------------------------------------------------------------------------

    def ensure_customer(self, doc: CustomerDocument) -> PostResult:
        party = self._find_party(doc.external_ref)
        if party is None:
            values: dict[str, Any] = {"name": doc.name or doc.external_ref, "code": doc.external_ref}
            address = _address_values(doc.bill_to)
            values["addresses"] = [["create", [address]]]
            if doc.email:
                values["contact_mechanisms"] = [["create", [{"type": "email", "value": doc.email}]]]
            if doc.tax_id:
                values["identifiers"] = [["create", [{"code": doc.tax_id}]]]
            try:
                [party_id] = self.rpc.call("model.party.party.create", [[values]], writes=True)
                return PostResult(str(party_id), doc.external_ref, {"action": "created"})
            except BusinessRuleError:
                # Lookup-then-create can lose a race: another posting of the same customer (a newer
                # revision) created the party in between, and Tryton refused a second one with the
                # same code. That party is ours; anything else is a real refusal.
                party = self._find_party(doc.external_ref)
                if party is None:
                    raise
        if doc.name and party["name"] != doc.name:
            self.rpc.call("model.party.party.write", [[party["id"]], {"name": doc.name}], writes=True)
            return PostResult(str(party["id"]), doc.external_ref, {"action": "updated"})
        return PostResult(str(party["id"]), doc.external_ref, {"action": "unchanged"})

    # -- invoices -------------------------------------------------------------------------

    def post_invoice(self, doc: InvoiceDocument) -> PostResult:
        return self._post_out_document(doc, sign=1)

    def post_credit_memo(self, doc: CreditMemoDocument) -> PostResult:
        """A credit note in Tryton is a customer invoice with negative quantities. When it credits
        exactly what is still open on the invoice, the two are reconciled, so the invoice is
        settled; a partial credit lowers the customer's receivable and leaves the invoice open."""
        result = self._post_out_document(doc, sign=-1)
        self._reconcile_if_settled(int(doc.invoice_erp_id), int(result.erp_id))
        return result

    def _post_out_document(self, doc: InvoiceDocument | CreditMemoDocument, *, sign: int) -> PostResult:
        kind = "Invoice" if sign > 0 else "Credit note"
        expected_total = sign * to_decimal(doc.total_minor, doc.currency)
        invoice_id = None
        for invoice in self._find_invoices(doc.external_ref):
            if invoice["state"] in POSTED_STATES:
                if invoice["total_amount"] != expected_total:
                    raise BusinessRuleError(
                        "amount_mismatch",
                        f"{kind} {doc.number} is already posted in Tryton as {invoice['number']} for "
                        f"{invoice['total_amount']} {doc.currency}, but billing now says {expected_total}. "
                        "Issue a credit note in billing rather than changing a posted document.",
                        f"posted total {invoice['total_amount']} != {expected_total}",
                        params={"erp_total": str(invoice["total_amount"]), "billing_total": str(expected_total)},
                    )
                return self._invoice_result(invoice)
            if invoice["state"] in ("draft", "validated"):
                if invoice_id is None and invoice["total_amount"] == expected_total:
                    invoice_id = int(invoice["id"])  # left by a post that failed: reuse it
                    self._redate_draft(invoice, doc)
                elif invoice["state"] == "draft":
                    self.rpc.call("model.account.invoice.delete", [[invoice["id"]]], writes=True)
        if invoice_id is None:
            invoice_id = self._create_invoice(doc, sign=sign)
            [created] = self._read("account.invoice", [invoice_id], ["total_amount"])
            if created["total_amount"] != expected_total:
                raise BusinessRuleError(
                    "amount_mismatch",
                    f"Tryton computes {created['total_amount']} {doc.currency} for {kind.lower()} {doc.number}, "
                    f"billing says {expected_total}. Check the tax mapping of its lines; the draft stays in "
                    "Tryton and is replaced on retry.",
                    f"draft {invoice_id} total {created['total_amount']} != {expected_total}",
                    params={"erp_total": str(created["total_amount"]), "billing_total": str(expected_total)},
                )
        try:
            self.rpc.call("model.account.invoice.post", [[invoice_id]], writes=True)
        except _ErpUserError as refused:
            refined = self._date_refusal(
                refused, doc.invoice_date, invoice_id, "invoice" if sign > 0 else "credit_note"
            )
            if refined is refused:
                raise
            raise refined from refused
        [posted] = self._read("account.invoice", [invoice_id], ["id", "state", "number", "total_amount"])
        return self._invoice_result(posted)

    def _reconcile_if_settled(self, invoice_id: int, credit_note_id: int) -> None:
        rows = self._read(
            "account.invoice",
            [invoice_id, credit_note_id],
            ["id", "state", "amount_to_pay", "lines_to_pay", "payment_lines"],
        )
        by_id = {int(row["id"]): row for row in rows}
        invoice, credit = by_id[invoice_id], by_id[credit_note_id]
        if invoice["state"] != "posted" or credit["state"] != "posted":
            return  # already settled (a retry), or nothing to settle
        if invoice["amount_to_pay"] != -credit["amount_to_pay"]:
            return  # a partial credit: the customer's balance is right, the invoice stays open
        self._reconcile(
            self._unreconciled(*invoice["lines_to_pay"], *invoice["payment_lines"], *credit["lines_to_pay"])
        )

    def _unreconciled(self, *line_ids: int) -> list[int]:
        rows = self._read("account.move.line", list(line_ids), ["id", "reconciliation"])
        return [int(row["id"]) for row in rows if not row.get("reconciliation")]

    @contextlib.contextmanager
    def _wizard(self, name: str, model: str, ids: list[int]) -> Iterator[Callable[..., Any]]:
        """A Tryton wizard session on ``ids`` of ``model``, deleted afterwards. Yields
        ``execute(state, data, writes=...)``."""
        session_id, _, _ = self.rpc.call(f"{name}.create", [], writes=False)
        context = {**self.rpc.context, "active_model": model, "active_id": ids[0], "active_ids": ids}

        def execute(state: str, data: dict[str, Any], *, writes: bool) -> Any:
            return self.rpc.call(
                f"{name}.execute", [session_id, data, state, context], writes=writes, with_context=False
            )

        try:
            yield execute
        finally:
            try:
                self.rpc.call(f"{name}.delete", [session_id], writes=False)
            except ConnectorError as exc:
                log.warning("could not delete a Tryton wizard session: %s", exc, extra={"session": session_id})

    @staticmethod
    def _defaults(view: dict[str, Any] | None) -> dict[str, Any]:
        """A wizard view's default values, without the dotted keys Tryton adds for display."""
        return {key: value for key, value in ((view or {}).get("defaults") or {}).items() if "." not in key}

    def _reconcile(self, lines: list[int], writeoff: dict[str, Any] | None = None) -> None:
        """Tryton's reconcile-lines wizard; ``writeoff`` (method, date, description) when the
        lines do not balance."""
        with self._wizard("wizard.account.move.reconcile_lines", "account.move.line", lines) as execute:
            shown = execute("start", {}, writes=writeoff is None)
            if writeoff is not None:
                execute("reconcile", {"writeoff": {**self._defaults(shown.get("view")), **writeoff}}, writes=True)

    def _create_invoice(self, doc: InvoiceDocument | CreditMemoDocument, *, sign: int = 1) -> int:
        currency_id = self._currency_id(doc.currency)
        party_id = int(doc.customer_erp_id)
        [party] = self._read("party.party", [party_id], ["addresses", "account_receivable"])
        if not party["addresses"]:
            raise BusinessRuleError(
                "customer_without_address",
                f"The customer of invoice {doc.number} has no address in Tryton; add one and retry.",
            )
        receivable = party.get("account_receivable") or self._default_receivable()
        journal = self._lookup_id(
            "account.journal",
            "type",
            "revenue",
            code="no_revenue_journal",
            message="Tryton has no revenue journal to post customer invoices in.",
        )
        accounts = self._accounts({line.revenue_account for line in doc.lines})
        taxes = self._taxes({line.tax_code for line in doc.lines if line.tax_code})
        lines = []
        for line in doc.lines:
            values: dict[str, Any] = {
                "type": "line",
                "account": accounts[line.revenue_account],
                "description": line.description,
                "quantity": sign * line.quantity,
                "unit_price": to_decimal(line.unit_amount_minor, doc.currency),
                "currency": currency_id,
            }
            if line.tax_code:
                values["taxes"] = [["add", [taxes[line.tax_code]]]]
            lines.append(values)
        values = {
            "type": "out",
            "party": party_id,
            "invoice_address": party["addresses"][0],
            "account": receivable,
            "journal": journal,
            "currency": currency_id,
            "invoice_date": doc.invoice_date,
            "reference": doc.external_ref,
            "description": _invoice_description(doc),
            "lines": [["create", lines]],
        }
        if doc.due_date:
            values["payment_term_date"] = doc.due_date
        [invoice_id] = self.rpc.call("model.account.invoice.create", [[values]], writes=True)
        return int(invoice_id)

    def _default_receivable(self) -> int:
        key = ("account.configuration", "default_account_receivable")
        if key not in self._ids:
            [config] = self._read("account.configuration", [1], ["default_account_receivable"])
            if not config.get("default_account_receivable"):
                raise ConfigurationError(
                    "Tryton has no default receivable account for customers",
                    finance_message="Tryton has no default customer receivable account; the ERP administrator "
                    "must set one in the accounting configuration.",
                )
            self._ids[key] = int(config["default_account_receivable"])
        return self._ids[key]

    def _accounts(self, codes: set[str]) -> dict[str, int]:
        now = time.monotonic()
        by_code = {
            code: row for code, (seen, row) in self._revenue_accounts.items() if now - seen < ACCOUNT_CACHE_SECONDS
        }
        wanted = sorted(codes - by_code.keys())
        if wanted:
            found = self._search_read(
                "account.account", [["code", "in", wanted], ["closed", "!=", True]], ["id", "code", "type.revenue"]
            )
            for row in found:
                by_code[row["code"]] = row
                if (row.get("type.") or {}).get("revenue"):
                    self._revenue_accounts[row["code"]] = (now, row)
        by_code = {code: by_code[code] for code in codes if code in by_code}
        for code in sorted(codes):
            row = by_code.get(code)
            if row is None:
                raise BusinessRuleError(
                    "unmapped_revenue_account",
                    f"The revenue account '{code}' does not exist (or is closed) in Tryton. Fix the revenue "
                    "account mapping in the hub, or open the account in Tryton, then retry.",
                    f"no open account.account with code {code!r}",
                    params={"value": code},
                )
            if not (row.get("type.") or {}).get("revenue"):
                raise BusinessRuleError(
                    "unmapped_revenue_account",
                    f"The account '{code}' in Tryton is not a revenue account. Map invoice lines to a revenue "
                    "account, then retry.",
                    f"account.account {row['id']} ({code}) has no revenue type",
                    params={"value": code},
                )
        return {code: int(row["id"]) for code, row in by_code.items()}

    def _taxes(self, names: set[str]) -> dict[str, int]:
        if not names:
            return {}
        found = self._search_read("account.tax", [["name", "in", sorted(names)]], ["id", "name"])
        by_name = {row["name"]: int(row["id"]) for row in found}
        for name in sorted(names):
            if name not in by_name:
                raise BusinessRuleError(
                    "unknown_tax_code",
                    f"The tax '{name}' does not exist in Tryton. Fix the tax code mapping in the hub, then retry.",
                    f"no account.tax named {name!r}",
                    params={"value": name},
                )
        return by_name

    # -- payments -------------------------------------------------------------------------

    def apply_payment(self, doc: PaymentDocument) -> PostResult:
        invoice_id = int(doc.invoice_erp_id)
        existing = self._find_payment_line(doc.external_ref)
        if existing is not None:
            self._note_redated(existing, doc.paid_on, doc.original_date)
            return PostResult(str(existing["id"]), doc.external_ref, {"action": "already applied"})
        method_id = self._payment_method_id(doc.payment_journal)
        amount = to_decimal(doc.amount_minor, doc.currency)
        [invoice] = self._read("account.invoice", [invoice_id], ["state", "amount_to_pay", "number", "currency.code"])
        if invoice["state"] == "paid" or invoice["amount_to_pay"] < amount:
            raise BusinessRuleError(
                "overpayment",
                f"Tryton invoice {invoice['number']} has {invoice['amount_to_pay']} left to pay; the payment of "
                f"{amount} {doc.currency} does not fit. Check for a payment recorded by hand in Tryton.",
                f"invoice {invoice_id} state {invoice['state']} amount_to_pay {invoice['amount_to_pay']}",
                params={"erp_total": str(invoice["amount_to_pay"]), "billing_total": str(amount)},
            )
        return self._pay(invoice_id, amount, method_id, doc.paid_on, doc.external_ref, doc.original_date)

    def refund_credit_memo(self, doc: RefundDocument) -> PostResult:
        """Tryton pays a credit note out with the same pay wizard, for a negative amount: the money
        leaves the payment method's account and the customer's credit is used up."""
        existing = self._find_payment_line(doc.external_ref)
        if existing is not None:
            self._note_redated(existing, doc.refunded_on, doc.original_date)
            return PostResult(str(existing["id"]), doc.external_ref, {"action": "already refunded"})
        credit_id = int(doc.credit_memo_erp_id)
        method_id = self._payment_method_id(doc.payment_journal)
        amount = to_decimal(doc.amount_minor, doc.currency)
        [credit] = self._read("account.invoice", [credit_id], ["state", "amount_to_pay", "number"])
        owed = -credit["amount_to_pay"]  # what the hub's customer is still owed on the credit note
        if credit["state"] != "posted" or owed < amount:
            raise BusinessRuleError(
                "overrefund",
                f"Billing refunded {amount} {doc.currency} on credit note {doc.number or doc.credit_memo_ref}, but "
                f"Tryton credit note {credit['number']} leaves {owed} to pay back. Look for a refund recorded by "
                "hand in the ERP; link or skip this one.",
                f"credit note {credit_id} state {credit['state']} amount_to_pay {credit['amount_to_pay']}",
                params={"erp_total": str(owed), "billing_total": str(amount)},
            )
        return self._pay(credit_id, -amount, method_id, doc.refunded_on, doc.external_ref, doc.original_date)

    def _payment_method_id(self, name: str) -> int:
        return self._lookup_id(
            "account.invoice.payment.method",
            "name",
            name,
            code="unknown_payment_journal",
            message=f"The payment method '{name}' does not exist in Tryton. Fix the payment journal "
            "mapping in the hub, then retry.",
        )

    def _pay(
        self,
        invoice_id: int,
        amount: Decimal,
        method_id: int,
        on: datetime.date,
        reference: str,
        original_date: datetime.date | None = None,
    ) -> PostResult:
        """Run the pay wizard (a partial payment answers its "ask" step) and return the payment
        line it wrote with ``reference``. The move's description is the reference (how it is
        found again), so billing's date of a re-dated payment goes into a note on the move."""
        with (
            self._dated(on, invoice_id),
            self._wizard("wizard.account.invoice.pay", "account.invoice", [invoice_id]) as execute,
        ):
            shown = execute("start", {}, writes=False)
            start = {**self._defaults(shown["view"]), "amount": amount, "payment_method": method_id}
            data = {"start": {**start, "date": on, "description": reference}}
            result = execute("choice", data, writes=True)
            view = result.get("view") if isinstance(result, dict) else None
            if view and view.get("state") == "ask":
                data["ask"] = {**self._defaults(view), "type": "partial"}
                execute("pay", data, writes=True)
        line = self._find_payment_line(reference)
        if line is None:
            raise UncertainOutcome(f"the pay wizard finished but no payment line carries {reference}")
        self._note_redated(line, on, original_date)
        return PostResult(str(line["id"]), reference, {"action": "applied" if amount > 0 else "refunded"})

    # -- voids and write-offs -------------------------------------------------------------

    def void_invoice(self, doc: VoidDocument) -> PostResult:
        """Tryton's rule for a posted customer invoice: it may be cancelled outright only when the
        company allows it (``cancel_invoice_out``); otherwise it is credited with refund, which
        posts a credit note and cancels the invoice against it. Either way it ends 'cancelled'."""
        invoice_id = int(doc.invoice_erp_id)
        [invoice] = self._read(
            "account.invoice", [invoice_id], ["id", "state", "number", "reference", "payment_lines", "company"]
        )
        if invoice["state"] == "cancelled":
            return self._void_result(invoice)  # done before: a retry, or voided by hand
        if invoice["state"] == "paid" or invoice["payment_lines"]:
            raise BusinessRuleError(
                "void_after_payment",
                f"Billing {doc.why} invoice {doc.number or doc.invoice_ref}, but Tryton invoice {invoice['number']} "
                "already has payments recorded, so it cannot be cancelled. Refund the payment in billing (or "
                "remove the payment in Tryton), then retry.",
                f"invoice {invoice_id} state {invoice['state']} payment_lines {invoice['payment_lines']}",
                params={"erp_number": str(invoice["number"])},
            )
        if invoice["state"] != "posted" or self._company_cancels_posted_invoices(int(invoice["company"])):
            # a draft has nothing to undo; a posted one is cancelled where the company allows it
            self.rpc.call("model.account.invoice.cancel", [[invoice_id]], writes=True)
        else:
            with self._dated(doc.voided_on, invoice_id, "credit_note"):
                self._credit_with_refund(invoice_id, doc.voided_on)
        [cancelled] = self._read("account.invoice", [invoice_id], ["id", "state", "number"])
        if cancelled["state"] != "cancelled":
            raise UncertainOutcome(f"Tryton invoice {invoice_id} is {cancelled['state']} after the void")
        if doc.original_date is not None:
            self._ensure_note("account.invoice", invoice_id, _redated_memo(doc.original_date, doc.voided_on))
        return self._void_result(cancelled)

    def _company_cancels_posted_invoices(self, company_id: int) -> bool:
        key = ("company.cancel_invoice_out", str(company_id))
        if key not in self._ids:
            [company] = self._read("company.company", [company_id], ["cancel_invoice_out"])
            self._ids[key] = int(bool(company.get("cancel_invoice_out")))
        return bool(self._ids[key])

    def _credit_with_refund(self, invoice_id: int, on: datetime.date) -> None:
        with self._wizard("wizard.account.invoice.credit", "account.invoice", [invoice_id]) as execute:
            shown = execute("start", {}, writes=False)
            execute(
                "credit",
                {"start": {**self._defaults(shown["view"]), "with_refund": True, "invoice_date": on}},
                writes=True,
            )

    def _void_result(self, invoice: dict[str, Any]) -> PostResult:
        return PostResult(str(invoice["id"]), invoice.get("number") or "", {"action": "cancelled"})

    def write_off(self, doc: WriteOffDocument) -> PostResult:
        """Reconcile what is open on the invoice (its receivable lines and any partial payments)
        with a write-off move to the bad-debt account, described with our reference."""
        existing = self._find_move(doc.external_ref)
        if existing is not None:
            if doc.original_date is not None:
                memo = _redated_memo(doc.original_date, doc.written_off_on)
                self._ensure_note("account.move", int(existing["id"]), memo)
            return PostResult(str(existing["id"]), existing.get("number") or "", {"action": "already written off"})
        invoice_id = int(doc.invoice_erp_id)
        [invoice] = self._read(
            "account.invoice", [invoice_id], ["state", "number", "amount_to_pay", "lines_to_pay", "payment_lines"]
        )
        expected = to_decimal(doc.amount_minor, doc.currency)
        open_amount = invoice["amount_to_pay"]
        if invoice["state"] != "posted" or open_amount != expected:
            if invoice["state"] == "posted" and open_amount > expected:
                # Billing counts a payment the ERP does not hold yet: its posting is on its way.
                raise LookupError(
                    f"Tryton invoice {invoice['number']} still has {open_amount} open, billing writes off "
                    f"{expected}: waiting for a payment posting"
                )
            raise BusinessRuleError(
                "write_off_amount_mismatch",
                f"Billing writes off {expected} {doc.currency} of invoice {doc.number or doc.invoice_ref}, but "
                f"Tryton invoice {invoice['number']} is {invoice['state']} with {open_amount} open. Check for a "
                "payment or credit recorded by hand in Tryton, then retry or skip.",
                f"invoice {invoice_id} state {invoice['state']} amount_to_pay {open_amount} != {expected}",
                params={"erp_total": str(open_amount), "billing_total": str(expected)},
            )
        method_id = self._lookup_id(
            "account.move.reconcile.write_off",
            "name",
            doc.write_off_method,
            code="unknown_write_off_method",
            message=f"The write-off method '{doc.write_off_method}' does not exist in Tryton. Fix the write-off "
            "method mapping in the hub (or create the method in Tryton), then retry.",
        )
        with self._dated(doc.written_off_on, invoice_id):
            self._reconcile(
                self._unreconciled(*invoice["lines_to_pay"], *invoice["payment_lines"]),
                writeoff={"writeoff": method_id, "date": doc.written_off_on, "description": doc.external_ref},
            )
        move = self._find_move(doc.external_ref)
        if move is None:
            raise UncertainOutcome(f"the reconcile wizard finished but no move carries {doc.external_ref}")
        if doc.original_date is not None:
            self._ensure_note("account.move", int(move["id"]), _redated_memo(doc.original_date, doc.written_off_on))
        return PostResult(str(move["id"]), move.get("number") or "", {"action": "written off"})

    def _find_move(self, external_ref: str) -> dict[str, Any] | None:
        found = self._search_read(
            "account.move", [["description", "=", external_ref]], ["id", "number", "state"], limit=1
        )
        return found[0] if found else None

    # -- disputes -------------------------------------------------------------------------

    def move_disputed_funds(self, doc: DisputeMovementDocument) -> PostResult:
        """One posted journal entry per movement, in the payment method's journal, described with
        our reference."""
        existing = self._find_move(doc.external_ref)
        if existing is not None and existing["state"] == "posted":
            return PostResult(str(existing["id"]), existing.get("number") or "", {"action": f"already {doc.movement}"})
        method = self._payment_method(doc.payment_journal)
        self._require_company_currency(
            method,
            doc.currency,
            "dispute_in_foreign_currency",
            f"The dispute {doc.dispute_ref} is in {doc.currency}; the hub posts disputes to Tryton only in the "
            "company currency ({company}). Record it by hand in Tryton, then skip this posting.",
        )
        cash = int(method["debit_account"])
        disputed = self._account_id(doc.dispute_account, "dispute_account")
        debit, credit = {
            "withdrawn": (disputed, cash),
            "reinstated": (cash, disputed),
            "lost": (self._account_id(doc.loss_account, "dispute_loss_account") if doc.loss_account else 0, disputed),
        }[doc.movement]
        if not debit:
            raise ConfigurationError(f"a lost dispute needs a loss account: {doc.external_ref}")
        amount = to_decimal(doc.amount_minor, doc.currency)
        label = _with_memo(
            f"Dispute {doc.dispute_ref} on payment {doc.payment_ref}: funds {doc.movement}",
            doc.moved_on,
            doc.original_date,
        )
        move = self._post_move(
            method,
            doc.moved_on,
            doc.external_ref,
            [{"account": debit, "debit": amount}, {"account": credit, "credit": amount}],
            label,
            existing,
        )
        return PostResult(str(move["id"]), move.get("number") or "", {"action": doc.movement})

    # -- customer credit ------------------------------------------------------------------

    def receive_on_account(self, doc: OnAccountDocument) -> PostResult:
        """Cash in, credited to the customer's receivable without an invoice: Tryton shows it as
        the customer's credit, and the receivable balance goes down by it."""
        existing = self._find_move(doc.external_ref)
        if existing is not None and existing["state"] == "posted":
            return PostResult(str(existing["id"]), existing.get("number") or "", {"action": "already received"})
        method = self._payment_method(doc.payment_journal)
        self._require_company_currency(
            method,
            doc.currency,
            "unapplied_cash_in_foreign_currency",
            f"Payment {doc.payment_ref} left {doc.currency} unapplied; the hub posts unapplied cash to Tryton only in "
            "the company currency ({company}). Record it by hand in Tryton, then skip this posting.",
        )
        party_id = int(doc.customer_erp_id)
        amount = to_decimal(doc.amount_minor, doc.currency)
        move = self._post_move(
            method,
            doc.received_on,
            doc.external_ref,
            [
                {"account": int(method["debit_account"]), "debit": amount},
                {"account": self._receivable_of(party_id), "credit": amount, "party": party_id},
            ],
            _with_memo(f"Unapplied cash from payment {doc.payment_ref}", doc.received_on, doc.original_date),
            existing,
        )
        return PostResult(str(move["id"]), move.get("number") or "", {"action": "received on account"})

    def apply_credit(self, doc: PaymentDocument) -> PostResult:
        """Settle part of an invoice from the customer's credit: a transfer within the customer's
        receivable (debit the credit, credit the invoice), whose credit line becomes a payment line
        of the invoice. No cash moves."""
        invoice_id = int(doc.invoice_erp_id)
        existing = self._find_move(doc.external_ref)
        if existing is None or existing["state"] != "posted":
            [invoice] = self._read("account.invoice", [invoice_id], ["state", "amount_to_pay", "number", "account"])
            amount = to_decimal(doc.amount_minor, doc.currency)
            if invoice["state"] == "paid" or invoice["amount_to_pay"] < amount:
                raise BusinessRuleError(
                    "overpayment",
                    f"Tryton invoice {invoice['number']} has {invoice['amount_to_pay']} left to pay; applying "
                    f"{amount} {doc.currency} of customer credit does not fit. Check for a payment recorded by hand "
                    "in Tryton.",
                    f"invoice {invoice_id} state {invoice['state']} amount_to_pay {invoice['amount_to_pay']}",
                    params={"erp_total": str(invoice["amount_to_pay"]), "billing_total": str(amount)},
                )
            party_id = int(doc.customer_erp_id)
            receivable = int(invoice["account"])
            self._post_move(
                self._payment_method(doc.payment_journal),
                doc.paid_on,
                doc.external_ref,
                [
                    {"account": receivable, "debit": amount, "party": party_id},
                    {"account": receivable, "credit": amount, "party": party_id},
                ],
                _with_memo(f"Customer credit applied to {doc.invoice_ref}", doc.paid_on, doc.original_date),
                existing,
            )
        [line] = self._search_read(
            "account.move.line",
            [["move.description", "=", doc.external_ref], ["credit", ">", 0]],
            ["id", "invoice_payment"],
            limit=1,
        )
        if not line.get("invoice_payment"):
            self.rpc.call(
                "model.account.invoice.write", [[invoice_id], {"payment_lines": [["add", [line["id"]]]]}], writes=True
            )
        [invoice] = self._read("account.invoice", [invoice_id], ["amount_to_pay", "lines_to_pay", "payment_lines"])
        if invoice["amount_to_pay"] == 0:
            self._reconcile(self._unreconciled(*invoice["lines_to_pay"], *invoice["payment_lines"]))
        return PostResult(str(line["id"]), doc.external_ref, {"action": "applied from credit"})

    def _find_credit_application(self, external_ref: str) -> dict[str, Any] | None:
        found = self._search_read(
            "account.move.line",
            [["move.description", "=", external_ref], ["credit", ">", 0], ["invoice_payment", "!=", None]],
            ["id"],
            limit=1,
        )
        return found[0] if found else None

    # -- journal entries ------------------------------------------------------------------

    def _payment_method(self, name: str) -> dict[str, Any]:
        [method] = self._read(
            "account.invoice.payment.method", [self._payment_method_id(name)], ["journal", "debit_account", "company"]
        )
        return method

    def _require_company_currency(self, method: dict[str, Any], currency: str, code: str, message: str) -> None:
        company_currency = self._company_currency(int(method["company"]))
        if company_currency and company_currency != currency:
            raise BusinessRuleError(
                code,
                message.format(company=company_currency),
                f"document currency {currency} != company currency {company_currency}",
                params={"currency": currency},
            )

    def _receivable_of(self, party_id: int) -> int:
        [party] = self._read("party.party", [party_id], ["account_receivable"])
        return int(party.get("account_receivable") or self._default_receivable())

    def _post_move(
        self,
        method: dict[str, Any],
        on: datetime.date,
        reference: str,
        lines: list[dict[str, Any]],
        label: str,
        existing: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Create (unless a draft with ``reference`` was left by an interrupted call) and post a
        journal entry in the payment method's journal, described with ``reference``."""
        if existing is not None:
            move_id = int(existing["id"])
        else:
            company = int(method["company"])
            values = [{"debit": Decimal(0), "credit": Decimal(0), "description": label, **line} for line in lines]
            [move_id] = self.rpc.call(
                "model.account.move.create",
                [
                    [
                        {
                            "journal": int(method["journal"]),
                            "company": company,
                            "period": self._period_id(company, on),
                            "date": on,
                            "description": reference,
                            "lines": [["create", values]],
                        }
                    ]
                ],
                writes=True,
            )
        self.rpc.call("model.account.move.post", [[int(move_id)]], writes=True)
        move = self._find_move(reference)
        if move is None or move["state"] != "posted":
            raise UncertainOutcome(f"the move {move_id} for {reference} is not posted")
        return move

    def _company_currency(self, company_id: int) -> str:
        if company_id not in self._company_currencies:
            [company] = self._read("company.company", [company_id], ["currency.code"])
            self._company_currencies[company_id] = str((company.get("currency.") or {}).get("code") or "")
        return self._company_currencies[company_id]

    def _account_id(self, code: str, mapping: str) -> int:
        return self._lookup_id(
            "account.account",
            "code",
            code,
            code=f"unknown_{mapping}",
            message=f"The account '{code}' does not exist in Tryton. Fix the {mapping.replace('_', ' ')} mapping "
            "in the hub (or create the account in Tryton), then retry.",
        )

    def _period_id(self, company_id: int, on: datetime.date) -> int:
        found = self._search_read(
            "account.period",
            [
                ["company", "=", company_id],
                ["start_date", "<=", on],
                ["end_date", ">=", on],
                ["type", "=", "standard"],
                ["state", "=", "open"],
            ],
            ["id"],
            limit=1,
        )
        if not found:
            closed = self._closed_period(company_id, on, None)
            if closed is not None:
                raise closed
            raise BusinessRuleError(
                "no_open_period",
                f"Tryton has no open accounting period for {on.isoformat()}. Ask the ERP administrator to open "
                "(or create) the period, then retry.",
                f"no open standard account.period on {on.isoformat()} for company {company_id}",
                params={"date": on.isoformat()},
            )
        return int(found[0]["id"])

    # -- closed periods -------------------------------------------------------------------

    def first_open_date(self, on_or_after: datetime.date, company: str = "") -> datetime.date | None:
        """The day itself when its standard period is open, else the first day of the next open
        one (a closed fiscal year has only closed periods)."""
        company_id = int(company) if company else int(self.rpc.context["company"])
        found = self._search_read(
            "account.period",
            [
                ["company", "=", company_id],
                ["type", "=", "standard"],
                ["state", "=", "open"],
                ["end_date", ">=", on_or_after],
            ],
            ["start_date"],
            limit=1,
            order=[["start_date", "ASC"]],
        )
        return max(on_or_after, found[0]["start_date"]) if found else None

    def _period_of(self, company_id: int, on: datetime.date) -> dict[str, Any] | None:
        found = self._search_read(
            "account.period",
            [["company", "=", company_id], ["type", "=", "standard"], ["start_date", "<=", on], ["end_date", ">=", on]],
            ["id", "name", "state", "fiscalyear"],
            limit=1,
        )
        return found[0] if found else None

    def _closed_period(
        self,
        company_id: int,
        on: datetime.date,
        refused: BusinessRuleError | None,
        period: dict[str, Any] | None = None,
    ) -> BusinessRuleError | None:
        """The refusal to give when ``on`` falls in a period Tryton has closed (or locked); None
        when its period is open or does not exist (a missing period or fiscal year is set up by
        the ERP administrator, not re-dated)."""
        period = period or self._period_of(company_id, on)
        if period is None or period["state"] == "open":
            return None
        said = refused.params.get("erp_message") if refused is not None else ""
        return BusinessRuleError(
            CLOSED_PERIOD,
            f"Tryton's accounting period {period['name']} is {period['state']}, so nothing can be posted on "
            f"{on.isoformat()}. Ask the accountant to reopen it (or set the connection's closed-period policy to "
            "re-date), then retry.",
            f"account.period {period['id']} ({period['name']}) is {period['state']} on {on.isoformat()}",
            body_excerpt=refused.body_excerpt if refused is not None else "",
            params={
                "date": on.isoformat(),
                "period": str(period["name"]),
                "erp_message": said or f"The period {period['name']} is {period['state']}.",
            },
        )

    def _date_refusal(
        self, refused: BusinessRuleError, on: datetime.date, invoice_id: int, sequence: str | None = None
    ) -> BusinessRuleError:
        """Tryton refused a document dated ``on`` (on invoice ``invoice_id``). Its ``UserError``
        names no reason a program can read, so ask Tryton whether the date is the reason: a closed
        period, or (``sequence``: ``invoice`` or ``credit_note``) a later customer document already
        numbered in the sequence, which Tryton keeps in date order. Anything else, or a question
        Tryton does not answer (a user without access to periods): the refusal as Tryton said it."""
        try:
            [invoice] = self._read("account.invoice", [invoice_id], ["company"])
            company_id = int(invoice["company"])
            period = self._period_of(company_id, on)
            if period is None:
                return refused  # no period at all: Tryton checks it before the numbering order
            closed = self._closed_period(company_id, on, refused, period)
            if closed is not None:
                return closed
            later = self._numbered_after(int(period["fiscalyear"]), on, sequence) if sequence else None
        except ConnectorError as unanswered:
            log.warning("could not ask Tryton why it refused a date: %s", unanswered)
            return refused
        if later is None:
            return refused
        return BusinessRuleError(
            INVOICE_DATE_ORDER,
            f"Tryton numbers customer {str(sequence).replace('_', ' ')}s in date order and {later['number']} is "
            f"already dated {later['invoice_date'].isoformat()}, so a document dated {on.isoformat()} cannot be "
            "numbered. Re-date it in billing (or set the connection's closed-period policy to re-date), then retry.",
            f"account.invoice {later['id']} ({later['number']}) dated {later['invoice_date']} > {on}",
            body_excerpt=refused.body_excerpt,
            params={
                "date": on.isoformat(),
                ACCEPTED_FROM: later["invoice_date"].isoformat(),
                "erp_number": str(later["number"]),
                "erp_message": str(refused.params.get("erp_message", "")),
            },
        )

    def _numbered_after(self, fiscal_year_id: int, on: datetime.date, sequence: str) -> dict[str, Any] | None:
        """The latest customer document after ``on`` in the sequences the fiscal year numbers
        ``sequence`` documents with (Tryton's own check before numbering one)."""
        field = f"out_{sequence}_sequence"
        rows = self._search_read("account.fiscalyear.invoice_sequence", [["fiscalyear", "=", fiscal_year_id]], [field])
        sequences = sorted({int(row[field]) for row in rows if row.get(field)})
        if not sequences:
            return None
        later = self._search_read(
            "account.invoice",
            [["type", "=", "out"], ["sequence", "in", sequences], ["invoice_date", ">", on]],
            ["id", "number", "invoice_date"],
            limit=1,
            order=[["invoice_date", "DESC"]],
        )
        return later[0] if later else None

    @contextlib.contextmanager
    def _dated(self, on: datetime.date, invoice_id: int, sequence: str | None = None) -> Iterator[None]:
        """Refusals inside say so when ``on`` is why (see ``_date_refusal``)."""
        try:
            yield
        except _ErpUserError as refused:
            refined = self._date_refusal(refused, on, invoice_id, sequence)
            if refined is refused:
                raise
            raise refined from refused

    def _redate_draft(self, invoice: dict[str, Any], doc: InvoiceDocument | CreditMemoDocument) -> None:
        """A draft left by an attempt Tryton refused to post on billing's date carries that date:
        give it the document's (a re-dated retry) before posting it."""
        description = _invoice_description(doc)
        if invoice.get("invoice_date") == doc.invoice_date and invoice.get("description") == description:
            return
        if invoice["state"] == "validated":
            self.rpc.call("model.account.invoice.draft", [[invoice["id"]]], writes=True)
        self.rpc.call(
            "model.account.invoice.write",
            [[invoice["id"]], {"invoice_date": doc.invoice_date, "description": description}],
            writes=True,
        )

    def _note_redated(self, line: dict[str, Any], on: datetime.date, original: datetime.date | None) -> None:
        if original is not None:
            self._ensure_note("account.move", int(line["move"]), _redated_memo(original, on))

    def _ensure_note(self, model: str, record_id: int, message: str) -> None:
        """A note on the record, as people read them in Tryton's client: once, however often asked."""
        resource = f"{model},{record_id}"
        if self._search_read("ir.note", [["resource", "=", resource], ["message", "=", message]], ["id"], limit=1):
            return
        self.rpc.call("model.ir.note.create", [[{"resource": resource, "message": message}]], writes=True)

    # -- reconciliation -------------------------------------------------------------------

    def ledger_documents(self, start: datetime.date, end: datetime.date, company: str = "") -> list[ErpDocument]:
        """Customer invoices and credit notes (by ``reference``) and the journal entries the hub
        wrote on customer receivables (by ``description``: payments, refunds, write-offs), read a
        page at a time. An invoice's own move is left out (revenue journal): the invoice stands for
        it. A journal entry's amount is what it moved on the receivable, in the document's currency
        (Tryton's second currency where it has one)."""
        company_id = int(company) if company else int(self.rpc.context["company"])
        documents = []
        invoices = self._pages(
            "account.invoice",
            [
                ["type", "=", "out"],
                ["company", "=", company_id],
                ["invoice_date", ">=", start],
                ["invoice_date", "<=", end],
                ["state", "in", list(RECONCILED_STATES)],
                ["reference", "!=", None],
            ],
            ["id", "number", "reference", "state", "total_amount", "currency.code", "invoice_date"],
        )
        for invoice in invoices:
            total = Decimal(invoice["total_amount"])
            documents.append(
                ErpDocument(
                    kind=ERP_CREDIT_MEMO if total < 0 else ERP_INVOICE,
                    external_ref=str(invoice["reference"]),
                    erp_id=str(invoice["id"]),
                    number=str(invoice.get("number") or ""),
                    currency=str((invoice.get("currency.") or {}).get("code") or ""),
                    amount=abs(total),
                    status=RECONCILED_STATES[invoice["state"]],
                    document_date=invoice["invoice_date"],
                )
            )
        company_currency = self._company_currency(company_id)
        moves: dict[int, dict[str, Any]] = {}
        lines = self._pages(
            "account.move.line",
            [
                ["move.company", "=", company_id],
                ["move.date", ">=", start],
                ["move.date", "<=", end],
                ["move.state", "=", "posted"],
                ["move.description", "!=", None],
                ["move.journal.type", "!=", "revenue"],
                ["account.type.receivable", "=", True],
            ],
            [
                "id",
                "move.description",
                "move.number",
                "move.date",
                "debit",
                "credit",
                "second_currency.code",
                "amount_second_currency",
            ],
        )
        for line in lines:
            move = line["move."]
            entry = moves.setdefault(int(move["id"]), {"move": move, "amount": Decimal(0), "currency": ""})
            second = (line.get("second_currency.") or {}).get("code")
            if second:
                entry["currency"] = str(second)
                entry["amount"] += Decimal(line["amount_second_currency"] or 0)
            else:
                entry["amount"] += Decimal(line["debit"]) - Decimal(line["credit"])
        for move_id, entry in moves.items():
            move = entry["move"]
            reference = str(move["description"])
            documents.append(
                ErpDocument(
                    kind=journal_entry_kind(reference),
                    external_ref=reference,
                    erp_id=str(move_id),
                    number=str(move.get("number") or ""),
                    currency=entry["currency"] or company_currency,
                    amount=abs(entry["amount"]),
                    status="posted",
                    document_date=move["date"],
                )
            )
        return documents

    def _pages(self, model: str, domain: list[Any], fields: list[str]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.rpc.call(
                f"model.{model}.search_read", [domain, offset, self.listing_page, [["id", "ASC"]], fields], writes=False
            )
            yield from page
            if len(page) < self.listing_page:
                return
            offset += self.listing_page

    def close(self) -> None:
        self.rpc.http.close()
