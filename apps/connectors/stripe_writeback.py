"""Writeback to Stripe: once the ERP holds an invoice (or a payment applied to it), the hub tells
Stripe, in the invoice's metadata, which ERP document it became and its status.

A writeback is a posting of its own, on a connection of kind ``stripe`` (settings: ``api_key``,
optionally ``api_base`` and ``timeout``), so it gets the same claim, retries, flow control and
exception cases as a posting to an ERP. It goes through the official ``stripe`` SDK.

Exactly once: every request carries the posting's idempotency key as Stripe's ``Idempotency-Key``,
so Stripe answers a repeated request with the first answer and applies nothing twice. That makes
a retry after a timeout safe without a lookup, so a timeout is transient here, not uncertain.
Beyond Stripe's 24-hour key window the request is still harmless: it sets the same metadata
again. ``find_document`` reads the invoice back and checks the metadata, for the executor's
verification path.
"""

from __future__ import annotations

from typing import Any, ClassVar

import stripe

from apps.connectors.base import ERPConnector
from apps.connectors.documents import PostResult, WritebackDocument
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    ConnectorError,
    TransientError,
)

OPERATION_WRITE_BACK = "write_back"


class StripeWriteback(ERPConnector):
    kind: ClassVar[str] = "stripe"
    dedupe_strategy: ClassVar[str] = "idempotency_key"

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        if not settings.get("api_key"):
            raise ConfigurationError("Stripe writeback settings lack api_key")
        base = settings.get("api_base")
        self.client = stripe.StripeClient(
            str(settings["api_key"]),
            base_addresses={"api": str(base)} if base else None,
            max_network_retries=0,  # the hub retries, with the same idempotency key
            http_client=stripe.RequestsClient(timeout=float(settings.get("timeout", 20))),
        )

    def write_back(self, doc: WritebackDocument) -> PostResult:
        self.pace()
        try:
            invoice = self.client.v1.invoices.update(
                doc.billing_id,
                {"metadata": doc.metadata},
                {"idempotency_key": doc.idempotency_key},
            )
        except stripe.StripeError as exc:
            raise _classify(exc, doc) from exc
        return PostResult(str(invoice.id), "", {"metadata": ", ".join(f"{k}={v}" for k, v in doc.metadata.items())})

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        """``external_ref`` is ``<source>:<invoice id>:writeback:...``; the writeback is done when the
        invoice's metadata carries the reference."""
        if operation != OPERATION_WRITE_BACK:
            raise ConfigurationError(f"Stripe writeback does not know the operation {operation!r}")
        invoice_id = external_ref.split(":")[1]
        self.pace()
        try:
            invoice = self.client.v1.invoices.retrieve(invoice_id)
        except stripe.StripeError as exc:
            raise _classify(exc, None) from exc
        metadata = dict(invoice.metadata or {})
        return PostResult(invoice_id, "") if external_ref in metadata.values() else None

    # An ERP's documents are not this connection's business: routing never sends them here.
    def _not_an_erp(self, *_: object) -> PostResult:
        raise ConfigurationError("a Stripe writeback connection posts no ERP documents; check the routing rules")

    ensure_customer = post_invoice = apply_payment = post_credit_memo = _not_an_erp  # type: ignore[assignment]
    refund_credit_memo = void_invoice = write_off = move_disputed_funds = _not_an_erp  # type: ignore[assignment]
    receive_on_account = apply_credit = _not_an_erp  # type: ignore[assignment]


def _classify(exc: stripe.StripeError, doc: WritebackDocument | None) -> ConnectorError:
    what = f"Stripe invoice {doc.billing_id}" if doc else "Stripe"
    message = f"{what}: {exc.user_message or exc}"
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AuthenticationError(message)
    if isinstance(exc, stripe.RateLimitError):
        return TransientError(message, retry_after=_retry_after(exc))
    if isinstance(exc, stripe.APIConnectionError):
        return TransientError(message)  # safe to resend: the idempotency key makes it one request
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.http_status == 404:
            return BusinessRuleError(
                "billing_document_missing",
                f"{what} does not exist (deleted, or another Stripe account): the ERP status cannot be written "
                "back to it. Skip this writeback with a reason.",
                message,
            )
        return ConfigurationError(message)
    if isinstance(exc, stripe.IdempotencyError):
        return ConfigurationError(f"{message} (the idempotency key was reused with other parameters)")
    return TransientError(message)  # 5xx: Stripe rolled back or will answer the key's first result


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("Retry-After") if exc.headers else None
    try:
        return float(value) if value else None
    except ValueError:
        return None
