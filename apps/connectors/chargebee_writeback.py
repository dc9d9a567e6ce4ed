"""Writeback to Chargebee: once the ERP holds an invoice (or a payment applied to it), the hub tells
Chargebee, as a comment on the invoice, which ERP document it became and its status.

A writeback is a posting of its own, on a connection of kind ``chargebee``, so it gets the same
claim, retries, flow control and exception cases as a posting to an ERP. Settings: ``api_key``
(an ``env:`` reference), ``site`` (``acme`` for ``https://acme.chargebee.com/api/v2``) or
``api_base`` (the whole base URL, for another domain), optionally ``timeout`` in seconds. It uses
``requests`` against Chargebee's REST API v2: HTTP Basic authentication with the API key as the
user name and no password, form-encoded parameters, JSON answers.

Where it is written. Chargebee's invoice has nothing like Stripe's free ``metadata``: ``meta_data``
and custom fields belong to customers, subscriptions and items, not to invoices, and the invoice's
``notes`` are printed on the PDF the customer receives. So the hub adds a comment to the invoice
(``POST /api/v2/comments`` with ``entity_type=invoice``). Comments are internal: finance sees them
on the invoice's page in Chargebee, the customer never does, and
``GET /api/v2/comments?entity_type=invoice&entity_id=<id>`` lists them. A comment cannot be
edited, so each writeback is one comment: ``key: value`` lines named after the ERP connection
(``<connection>_erp_status``, ``_erp_id``, ``_erp_number``, ``_erp_payment_id``), the last one
``hub_writeback: <reference>``. The newest comment is the invoice's current status.

Exactly once. Every request carries the posting's idempotency key as Chargebee's
``chargebee-idempotency-key``: a repeat with the same parameters is answered with the first
answer (``chargebee-idempotency-replayed: true``) and adds nothing. Chargebee keeps a key for 30
minutes only, and the hub's retries can come later (backoff up to 15 minutes over 8 attempts, or
a person's retry days later). So an answer that never came (a read timeout, a connection dropped
after sending, a 500, a gateway's 502/504) is an ``UncertainOutcome``: before anything is sent
again the executor calls ``find_document``, which looks for the reference among the invoice's
comments. Nothing was done on a 503 (maintenance, or a temporary error Chargebee says to retry),
a 429 (``Retry-After`` honoured) or a refused connection: those are transient.

Chargebee's errors are ``{"message", "type", "api_error_code", "param", "http_status_code"}``: 401
and 403 are authentication (the circuit holds the connection); an invoice Chargebee does not
know (404 ``resource_not_found``) is parked for finance (``billing_document_missing``); other 4xx
are configuration for engineers, Chargebee's own message shown.
"""

from __future__ import annotations

from typing import Any, ClassVar

import requests

from apps.connectors.base import ERPConnector
from apps.connectors.documents import PostResult, WritebackDocument
from apps.connectors.http import connection_refused, retry_after
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    ConnectorError,
    TransientError,
    UncertainOutcome,
)

OPERATION_WRITE_BACK = "write_back"
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
REFERENCE_KEY = "hub_writeback"
ADDED_BY = "Integration hub"
PAGE_SIZE = 100  # Chargebee's largest page for list requests


def comment_notes(metadata: dict[str, str]) -> str:
    """The comment's text: one ``key: value`` line each, the hub's reference last."""
    lines = [f"{key}: {value}" for key, value in metadata.items() if key != REFERENCE_KEY and value]
    lines.append(f"{REFERENCE_KEY}: {metadata.get(REFERENCE_KEY, '')}")
    return "\n".join(lines)


def invoice_id_of(external_ref: str) -> str:
    """``<source>:<invoice id>:writeback:<parent>`` → the invoice id (source names are slugs)."""
    _, _, rest = external_ref.partition(":")
    invoice_id, found, _ = rest.rpartition(":writeback:")
    if not found or not invoice_id:
        raise ConfigurationError(f"{external_ref!r} is not a writeback reference")
    return invoice_id


class ChargebeeWriteback(ERPConnector):
    kind: ClassVar[str] = "chargebee"
    dedupe_strategy: ClassVar[str] = "idempotency_key_then_lookup"

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        if not settings.get("api_key"):
            raise ConfigurationError("Chargebee writeback settings lack api_key")
        base = settings.get("api_base") or (
            f"https://{settings['site']}.chargebee.com/api/v2" if settings.get("site") else ""
        )
        if not base:
            raise ConfigurationError("Chargebee writeback settings need site (or api_base)")
        self.base = str(base).rstrip("/")
        self.timeout = float(settings.get("timeout", 20))
        self.session = requests.Session()
        self.session.auth = (str(settings["api_key"]), "")
        self.session.headers.update({"Accept": "application/json", "User-Agent": "billing-erp-hub"})

    def write_back(self, doc: WritebackDocument) -> PostResult:
        notes = comment_notes(doc.metadata)
        answer = self._send(
            "POST",
            "/comments",
            what=f"Chargebee invoice {doc.billing_id}",
            data={"entity_type": "invoice", "entity_id": doc.billing_id, "notes": notes, "added_by": ADDED_BY},
            headers={IDEMPOTENCY_HEADER: doc.idempotency_key},
        )
        comment = answer.get("comment") or {}
        return PostResult(str(comment.get("id") or ""), "", {"comment": notes.replace("\n", "; ")})

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        """The writeback is done when one of the invoice's comments carries its reference."""
        if operation != OPERATION_WRITE_BACK:
            raise ConfigurationError(f"Chargebee writeback does not know the operation {operation!r}")
        invoice_id = invoice_id_of(external_ref)
        marker = f"{REFERENCE_KEY}: {external_ref}"
        offset = ""
        while True:
            params = {"entity_type": "invoice", "entity_id": invoice_id, "limit": str(PAGE_SIZE)}
            if offset:
                params["offset"] = offset
            page = self._send("GET", "/comments", what=f"Chargebee invoice {invoice_id}", params=params)
            for entry in page.get("list") or []:
                comment = entry.get("comment") or {}
                if marker in str(comment.get("notes") or "").splitlines():
                    return PostResult(str(comment.get("id") or ""), "")
            offset = str(page.get("next_offset") or "")
            if not offset:
                return None

    def close(self) -> None:
        self.session.close()

    # An ERP's documents are not this connection's business: routing never sends them here.
    def _not_an_erp(self, *_: object) -> PostResult:
        raise ConfigurationError("a Chargebee writeback connection posts no ERP documents; check the routing rules")

    ensure_customer = post_invoice = apply_payment = post_credit_memo = _not_an_erp  # type: ignore[assignment]
    refund_credit_memo = void_invoice = write_off = move_disputed_funds = _not_an_erp  # type: ignore[assignment]
    receive_on_account = apply_credit = _not_an_erp  # type: ignore[assignment]

    def _send(
        self,
        method: str,
        path: str,
        *,
        what: str,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        self.pace()
        writes = method != "GET"
        try:
            response = self.session.request(
                method, self.base + path, data=data, params=params, headers=headers, timeout=self.timeout
            )
        except (requests.ConnectTimeout, requests.exceptions.SSLError) as exc:
            raise TransientError(f"{what}: could not connect to Chargebee: {exc}") from exc
        except requests.ConnectionError as exc:
            if connection_refused(exc) or not writes:
                raise TransientError(f"{what}: the connection to Chargebee failed: {exc}") from exc
            raise UncertainOutcome(f"{what}: the connection to Chargebee dropped after sending: {exc}") from exc
        except requests.Timeout as exc:  # a read timeout: the request reached Chargebee
            if writes:
                raise UncertainOutcome(
                    f"{what}: Chargebee did not answer within {self.timeout:g}s; it may have added the comment"
                ) from exc
            raise TransientError(f"{what}: Chargebee did not answer within {self.timeout:g}s") from exc
        if response.status_code < 300:
            try:
                body = response.json()
            except ValueError as exc:
                error = UncertainOutcome if writes else TransientError
                raise error(
                    f"{what}: Chargebee answered {response.status_code} without JSON",
                    status=response.status_code,
                    body_excerpt=response.text,
                ) from exc
            return body if isinstance(body, dict) else {}
        raise _classify(response, what, writes=writes)


def _classify(response: requests.Response, what: str, *, writes: bool) -> ConnectorError:
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    code = str(body.get("api_error_code") or "")
    message = f"{what}: {body.get('message') or response.reason or 'HTTP ' + str(status)}"
    if code:
        message += f" ({code})"
    excerpt = response.text
    if status in (401, 403):
        return AuthenticationError(message, status=status, body_excerpt=excerpt)
    if status == 429:
        return TransientError(message, retry_after=retry_after(response.headers), status=status, body_excerpt=excerpt)
    if status == 404 and code == "resource_not_found":
        return BusinessRuleError(
            "billing_document_missing",
            f"{what} does not exist in Chargebee (deleted, or another site): the ERP status cannot be written "
            "back to it. Skip this writeback with a reason.",
            message,
            status=status,
            body_excerpt=excerpt,
        )
    if status == 503:
        return TransientError(message, retry_after=retry_after(response.headers), status=status, body_excerpt=excerpt)
    if status >= 500:
        if writes:  # Chargebee may have done it before failing: look it up before sending again
            return UncertainOutcome(message, status=status, body_excerpt=excerpt)
        return TransientError(message, status=status, body_excerpt=excerpt)
    if status == 422 and code == "unable_to_process_request":
        message += " (the idempotency key was reused with other parameters)"
    return ConfigurationError(message, status=status, body_excerpt=excerpt)
