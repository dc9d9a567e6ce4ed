"""The lifecycle worked examples from a Lago stream (HMAC-signed webhooks): the real Tryton must end
with the same documents and receivable as from Stripe. Lago has no partial payments or write-offs
(an invoice's payment status is pending, succeeded or failed), so those examples have no Lago form."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.ingest.models import InboxEvent, InboxStatus
from apps.posting.models import Operation
from apps.sources import lago_samples as lg
from tests.conftest import wait_for
from tests.e2e.test_lifecycle import billing_receivable, posted

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

SOURCE = "lago-us"
HMAC_KEY = os.environ["LAGO_WEBHOOK_HMAC_KEY"]


def send(client: Client, message: dict[str, Any], *, unique_key: str | None = None) -> str:
    payload = lg.body(message)
    headers = lg.headers(payload, hmac_key=HMAC_KEY, unique_key=unique_key)
    meta = {
        f"HTTP_{name.upper().replace('-', '_')}": value for name, value in headers.items() if name != "Content-Type"
    }
    response = client.post(f"/webhooks/{SOURCE}/", data=payload, content_type="application/json", **meta)
    assert response.status_code == 200, response.content
    return headers[lg.lago.UNIQUE_KEY_HEADER]


def later(seconds: int) -> str:
    return lg.timestamp(datetime.now(UTC) + timedelta(seconds=seconds))


def new_invoice() -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    customer = lg.customer()
    fees = [
        lg.fee(4900, code="pro_monthly", name="Pro plan (monthly)"),
        lg.fee(1250, code="api_calls", name="API calls"),
    ]
    return customer, fees, lg.invoice(customer, fees)


def test_invoice_then_payment_succeeded_settles_it(client: Client, tryton: Any) -> None:
    customer, fees, invoice = new_invoice()
    key = send(client, lg.webhook("invoice.created", invoice))
    send(client, lg.webhook("invoice.created", invoice), unique_key=key)  # Lago's retry: same unique key
    posted(invoice["lago_id"], Operation.POST_INVOICE)
    customer_ref = f"{SOURCE}:{customer['lago_id']}"
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert (erp_invoice["total_amount"], erp_invoice["tax_amount"]) == (Decimal("73.80"), Decimal("12.30"))
    assert tryton.receivable(customer_ref) == Decimal("73.80") == billing_receivable(customer["lago_id"])

    paid = lg.invoice(
        customer,
        fees,
        lago_id=invoice["lago_id"],
        number=invoice["number"],
        payment_status="succeeded",
        updated_at=later(5),
    )
    send(client, lg.webhook("invoice.payment_status_updated", paid))
    posted(f"{invoice['lago_id']}:payment:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert erp_invoice["state"] == "paid"
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(customer["lago_id"])


def test_paid_invoice_then_credit_note_refunded(client: Client, tryton: Any) -> None:
    customer, fees, invoice = new_invoice()
    paid = lg.invoice(customer, fees, lago_id=invoice["lago_id"], number=invoice["number"], payment_status="succeeded")
    send(client, lg.webhook("invoice.created", paid))
    note = lg.credit_note(paid, [lg.credit_item(fees[1], 1250)])  # the usage fee, refunded with its tax
    send(client, lg.webhook("credit_note.created", note))
    posted(f"{note['lago_id']}:refund", Operation.REFUND_CREDIT_MEMO)

    [credit_note] = tryton.invoices(f"{SOURCE}:{note['lago_id']}")
    assert (credit_note["state"], credit_note["total_amount"]) == ("paid", Decimal("-15.00"))
    assert tryton.receivable(f"{SOURCE}:{customer['lago_id']}") == Decimal("0")


def test_invoice_then_void_cancels_it_in_tryton(client: Client, tryton: Any) -> None:
    customer, fees, invoice = new_invoice()
    send(client, lg.webhook("invoice.created", invoice))
    posted(invoice["lago_id"], Operation.POST_INVOICE)
    voided = lg.invoice(
        customer, fees, lago_id=invoice["lago_id"], number=invoice["number"], status="voided", updated_at=later(5)
    )
    send(client, lg.webhook("invoice.voided", voided))
    posted(f"{invoice['lago_id']}:void", Operation.VOID_INVOICE)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert erp_invoice["state"] == "cancelled"
    assert (
        tryton.receivable(f"{SOURCE}:{customer['lago_id']}") == Decimal("0") == billing_receivable(customer["lago_id"])
    )


def test_a_lost_payment_dispute_is_kept_and_marked_with_what_to_do(client: Client) -> None:
    _customer, _fees, invoice = new_invoice()
    key = send(client, lg.payment_dispute_lost(invoice))
    event = wait_for(
        lambda: InboxEvent.objects.filter(source=SOURCE, event_id=key, status=InboxStatus.IGNORED).first(),
        what="the dispute webhook to be marked ignored",
    )
    assert invoice["number"] in event.error
