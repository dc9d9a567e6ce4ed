"""Writeback to Recurly: once the ERP holds an invoice (or a payment or credit applied to it), the hub
tells Recurly, on the invoice, which ERP document it became and its status.

A writeback is a posting of its own, on a connection of kind ``recurly``, so it gets the same claim,
retries, flow control and exception cases as a posting to an ERP. Settings: ``api_key`` (an ``env:``
reference to a private API key with write access), optionally ``base_url``
(``https://v3.eu.recurly.com`` for an EU site) and ``timeout`` in seconds. It uses ``requests``
against Recurly's API v3 (``Accept: application/vnd.recurly.v2021-02-25``), HTTP Basic with the API
key as the user name and no password, JSON bodies; the official ``recurly`` client adds nothing the
two calls below need.

Where it is written. Recurly's invoice has no metadata: custom fields exist on accounts, items,
line items, plans and subscriptions, not on invoices, and account notes cannot be written through
API v3. What ``PUT /invoices/{invoice_id}`` (``InvoiceUpdate``) can change is ``po_number`` (the
customer's purchase order, 50 characters, not ours to overwrite), ``terms_and_conditions`` and
``vat_reverse_charge_notes`` (legal texts), ``net_terms``, the address, and ``customer_notes``. The
hub adds one line per writeback to the invoice's ``customer_notes`` and keeps whatever the notes
held: ``<connection>: <status>, ERP id …, number …`` (or ``ERP payment …``), ending with the
reference in brackets (``[recurly-us:<invoice>:writeback:<parent>]``). Customer notes are printed
on the invoice and shown on Recurly's hosted pages, so the customer sees the ERP's document number
too; a site that does not want that names no writeback connection for the source. Because a PUT
replaces the notes whole, the hub reads the invoice first and writes the notes back with its line
added: two writebacks to one invoice at the same moment could each miss the other's line, so the
connection's default budget lets one Recurly writeback run at a time (``flow.models``).

Exactly once. Recurly API v3 has no idempotency keys, so the connector finds before it writes: the
invoice is read, and when its notes already carry the reference nothing is sent. An answer that
never came to the PUT (a read timeout, a connection dropped after sending) or a 5xx to it is an
``UncertainOutcome``: Recurly may have saved the notes, so the executor calls ``find_document``
(the same read) before anything is sent again. A refused connection, a 5xx or a timeout while only
reading, and a 429 are transient (``Retry-After`` when present, else ``X-RateLimit-Reset``, Recurly's
documented rate-limit header, in Unix seconds).

Recurly's errors are ``{"error": {"type", "message", "params"}}``: 401 and 403 are authentication
(the circuit holds the connection); an invoice Recurly does not know (404) is parked for finance
(``billing_document_missing``); a 422 (Recurly refused the update) is parked with Recurly's message
(``erp_rejected``); other 4xx are configuration for engineers.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any, ClassVar

import requests

from apps.connectors.base import ERPConnector
from apps.connectors.documents import PostResult, WritebackDocument
from apps.connectors.http import connection_refused
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    ConnectorError,
    TransientError,
    UncertainOutcome,
)

OPERATION_WRITE_BACK = "write_back"
API_VERSION = "v2021-02-25"
ACCEPT = f"application/vnd.recurly.{API_VERSION}"
DEFAULT_BASE_URL = "https://v3.recurly.com"
USER_AGENT = "integration-hub-recurly-writeback"
REFERENCE_KEY = "hub_writeback"
STATUS_SUFFIX = "_erp_status"
_LABELS = (("_erp_id", "ERP id"), ("_erp_number", "number"), ("_erp_payment_id", "ERP payment"))


def note_line(metadata: dict[str, str]) -> str:
    """The line one writeback adds to the invoice's notes, e.g. ``tryton-local: posted, ERP id 42,
    number INV/2025/0001 [recurly-us:<invoice>:writeback:<parent>]``."""
    status_key = next((key for key in metadata if key.endswith(STATUS_SUFFIX)), "")
    connection = status_key[: -len(STATUS_SUFFIX)] if status_key else "ERP"
    parts = [f"{connection}: {metadata.get(status_key) or 'posted'}"]
    parts += [
        f"{label} {metadata[connection + suffix]}" for suffix, label in _LABELS if metadata.get(connection + suffix)
    ]
    return f"{', '.join(parts)} {marker(metadata.get(REFERENCE_KEY, ''))}"


def marker(external_ref: str) -> str:
    return f"[{external_ref}]"


def invoice_id_of(external_ref: str) -> str:
    """``<source>:<invoice id>:writeback:<parent>`` → the invoice id (source names are slugs)."""
    _, _, rest = external_ref.partition(":")
    invoice_id, found, _ = rest.rpartition(":writeback:")
    if not found or not invoice_id:
        raise ConfigurationError(f"{external_ref!r} is not a writeback reference")
    return invoice_id


class RecurlyWriteback(ERPConnector):
    kind: ClassVar[str] = "recurly"
    dedupe_strategy: ClassVar[str] = "lookup"

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        if not settings.get("api_key"):
            raise ConfigurationError("Recurly writeback settings lack api_key")
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        timeout = float(settings.get("timeout", 20))
        self.timeout = (min(timeout, 10.0), timeout)
        self.session = requests.Session()
        self.session.auth = (str(settings["api_key"]), "")
        self.session.headers.update({"Accept": ACCEPT, "User-Agent": USER_AGENT})

    def write_back(self, doc: WritebackDocument) -> PostResult:
        invoice = self._invoice(doc.billing_id)
        notes = str(invoice.get("customer_notes") or "")
        reference = marker(doc.external_ref)
        if reference not in notes:  # else an earlier attempt already wrote it
            line = note_line({**doc.metadata, REFERENCE_KEY: doc.external_ref})
            body = {"customer_notes": f"{notes.rstrip()}\n{line}" if notes.strip() else line}
            invoice = self._send("PUT", doc.billing_id, body)
        return PostResult(
            str(invoice.get("id") or doc.billing_id), str(invoice.get("number") or ""), {"notes": reference}
        )

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        """The writeback is done when the invoice's notes carry the reference."""
        if operation != OPERATION_WRITE_BACK:
            raise ConfigurationError(f"Recurly writeback does not know the operation {operation!r}")
        invoice = self._invoice(invoice_id_of(external_ref))
        if marker(external_ref) not in str(invoice.get("customer_notes") or ""):
            return None
        return PostResult(str(invoice.get("id") or ""), str(invoice.get("number") or ""))

    def close(self) -> None:
        self.session.close()

    # An ERP's documents are not this connection's business: routing never sends them here.
    def _not_an_erp(self, *_: object) -> PostResult:
        raise ConfigurationError("a Recurly writeback connection posts no ERP documents; check the routing rules")

    ensure_customer = post_invoice = apply_payment = post_credit_memo = _not_an_erp  # type: ignore[assignment]
    refund_credit_memo = void_invoice = write_off = move_disputed_funds = _not_an_erp  # type: ignore[assignment]
    receive_on_account = apply_credit = _not_an_erp  # type: ignore[assignment]

    # --- HTTP -------------------------------------------------------------------------------------

    def _invoice(self, invoice_id: str) -> dict[str, Any]:
        return self._send("GET", invoice_id)

    def _send(self, method: str, invoice_id: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        what = f"Recurly invoice {invoice_id}"
        url = f"{self.base_url}/invoices/{urllib.parse.quote(invoice_id, safe='')}"
        writes = method != "GET"
        self.pace()
        try:
            response = self.session.request(method, url, json=body, timeout=self.timeout, allow_redirects=False)
        except requests.ConnectTimeout as exc:
            raise TransientError(f"{what}: Recurly did not accept the connection: {exc}") from exc
        except requests.ConnectionError as exc:
            if connection_refused(exc) or not writes:
                raise TransientError(f"{what}: {method} failed before Recurly answered: {exc}") from exc
            raise UncertainOutcome(f"{what}: the connection dropped after the update was sent: {exc}") from exc
        except requests.Timeout as exc:
            if not writes:
                raise TransientError(f"{what}: Recurly did not answer the read in time: {exc}") from exc
            raise UncertainOutcome(f"{what}: no answer to the update in time; Recurly may have saved it") from exc
        if not 200 <= response.status_code < 300:
            raise _classify(response, what, writes=writes)
        try:
            data = json.loads(response.content)
        except (UnicodeDecodeError, json.JSONDecodeError):
            data = None
        if not isinstance(data, dict):
            error = TransientError if not writes else UncertainOutcome
            raise error(
                f"{what}: Recurly answered {response.status_code} without a JSON invoice", status=response.status_code
            )
        return data


def _classify(response: requests.Response, what: str, *, writes: bool) -> ConnectorError:
    status = response.status_code
    error_type, message = "", response.reason or ""
    try:
        error = json.loads(response.content).get("error")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        error = None
    if isinstance(error, dict):
        error_type, message = str(error.get("type") or ""), str(error.get("message") or message)
    request_id = response.headers.get("X-Request-Id", "")
    detail = f"{what}: Recurly answered {status}{f' {error_type}' if error_type else ''}: {message}"
    detail += f" (Recurly request id {request_id})" if request_id else ""
    excerpt = response.text[:2000]
    if status in (401, 403):
        return AuthenticationError(detail, status=status, body_excerpt=excerpt)
    if status == 429:
        return TransientError(detail, retry_after=_retry_after(response), status=status, body_excerpt=excerpt)
    if status >= 500:
        if writes:  # no idempotency key in API v3: the update may have been saved before the error
            return UncertainOutcome(detail, status=status, body_excerpt=excerpt)
        return TransientError(detail, status=status, body_excerpt=excerpt)
    if status == 404:
        return BusinessRuleError(
            "billing_document_missing",
            f"{what} does not exist (deleted, or on another Recurly site): the ERP status cannot be written back "
            "to it. Skip this writeback with a reason.",
            detail,
            status=status,
            body_excerpt=excerpt,
        )
    if status == 422:
        return BusinessRuleError(
            "erp_rejected",
            f"Recurly refused the ERP status for {what}: {message}",
            detail,
            params={"erp_message": message},
            status=status,
            body_excerpt=excerpt,
        )
    return ConfigurationError(detail, status=status, body_excerpt=excerpt)


def _retry_after(response: requests.Response) -> float | None:
    """``Retry-After`` in seconds when a proxy sends it, else Recurly's ``X-RateLimit-Reset`` (the Unix
    time the window resets)."""
    value = response.headers.get("Retry-After")
    try:
        if value:
            return max(float(value), 0.0)
        reset = response.headers.get("X-RateLimit-Reset")
        return max(float(reset) - time.time(), 0.0) if reset else None
    except ValueError:
        return None
