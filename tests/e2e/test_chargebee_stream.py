"""The lifecycle worked examples from a Chargebee stream (Basic-authenticated webhooks, API v2
events): the real Tryton must end with the same documents and receivable as from Stripe."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.posting.models import Operation, Posting
from apps.sources import chargebee_samples as cb
from tests.e2e.test_lifecycle import billing_receivable, posted

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

SOURCE = "chargebee-us"
CREDENTIALS = os.environ["CHARGEBEE_WEBHOOK_CREDENTIALS"]


def send(client: Client, event: dict[str, Any]) -> None:
    response = client.post(
        f"/webhooks/{SOURCE}/",
        data=json.dumps(event).encode(),
        content_type="application/json",
        HTTP_AUTHORIZATION=cb.basic_auth_header(CREDENTIALS),
    )
    assert response.status_code == 200, response.content


def new_invoice() -> tuple[dict[str, Any], dict[str, Any]]:
    customer = cb.customer()
    invoice = cb.invoice(
        customer["id"],
        [
            cb.line_item(4900, description="Pro plan (monthly)"),
            cb.line_item(250, quantity=5, description="API calls", entity_id="api-calls-USD"),
        ],
    )
    return customer, invoice


def test_invoice_then_two_partial_payments_settle_it(client: Client, tryton: Any) -> None:
    customer, invoice = new_invoice()
    send(client, cb.invoice_generated(invoice, customer))
    posted(invoice["id"], Operation.POST_INVOICE)
    customer_ref = f"{SOURCE}:{customer['id']}"
    assert tryton.receivable(customer_ref) == Decimal("61.50") == billing_receivable(customer["id"])

    first = cb.payment_succeeded(invoice, cb.transaction(customer["id"], 2000, [(invoice["id"], 2000)]))
    send(client, first)
    send(client, first)  # redelivered: still one payment
    posted(f"{first['content']['transaction']['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    assert tryton.receivable(customer_ref) == Decimal("41.50") == billing_receivable(customer["id"])

    after_first = first["content"]["invoice"]
    second = cb.payment_succeeded(after_first, cb.transaction(customer["id"], 4150, [(invoice["id"], 4150)]))
    send(client, second)
    posted(f"{second['content']['transaction']['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(customer["id"])


def test_paid_invoice_then_credit_note_refunded_later(client: Client, tryton: Any) -> None:
    customer, invoice = new_invoice()
    txn = cb.transaction(customer["id"], 6150, [(invoice["id"], 6150)])
    send(client, cb.invoice_generated(invoice, customer))
    send(client, cb.payment_succeeded(invoice, txn))
    note = cb.credit_note(invoice, [cb.credit_line(invoice["line_items"][1], 1250)])  # refund_due
    send(client, cb.credit_note_created(note))
    posted(note["id"], Operation.POST_CREDIT_MEMO)
    assert not Posting.objects.filter(source_id=f"{note['id']}:refund").exists()  # nothing paid back yet

    refunded = cb.changed(note, status="refunded", amount_refunded=1250, amount_available=0)
    send(client, cb.payment_refunded(refunded, 1250))
    posted(f"{note['id']}:refund", Operation.REFUND_CREDIT_MEMO)

    [credit_note] = tryton.invoices(f"{SOURCE}:{note['id']}")
    assert (credit_note["state"], credit_note["total_amount"]) == ("paid", Decimal("-12.50"))
    assert tryton.receivable(f"{SOURCE}:{customer['id']}") == Decimal("0")


def test_invoice_then_void_cancels_it_in_tryton(client: Client, tryton: Any) -> None:
    customer, invoice = new_invoice()
    send(client, cb.invoice_generated(invoice, customer))
    posted(invoice["id"], Operation.POST_INVOICE)
    send(client, cb.invoice_voided(invoice))
    posted(f"{invoice['id']}:void", Operation.VOID_INVOICE)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert erp_invoice["state"] == "cancelled"
    assert tryton.receivable(f"{SOURCE}:{customer['id']}") == Decimal("0") == billing_receivable(customer["id"])


def test_invoice_partly_paid_then_written_off(client: Client, tryton: Any) -> None:
    customer, invoice = new_invoice()
    send(client, cb.invoice_generated(invoice, customer))
    first = cb.payment_succeeded(invoice, cb.transaction(customer["id"], 2000, [(invoice["id"], 2000)]))
    send(client, first)
    posted(f"{first['content']['transaction']['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    bad_debts_before = tryton.account_balance("6800")

    # Chargebee's write-off: the invoice becomes paid, with the unpaid rest as write_off_amount.
    written_off = cb.changed(first["content"]["invoice"], status="paid", write_off_amount=4150, amount_due=0)
    send(client, cb.event("invoice_updated", {"invoice": written_off}))
    posted(f"{invoice['id']}:write-off", Operation.WRITE_OFF)

    assert tryton.account_balance("6800") - bad_debts_before == Decimal("41.50")
    assert tryton.receivable(f"{SOURCE}:{customer['id']}") == Decimal("0") == billing_receivable(customer["id"])
