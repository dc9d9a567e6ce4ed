"""The lifecycle worked examples from a Chargebee stream (Basic-authenticated webhooks, API v2
events): the real Tryton must end with the same documents and receivable as from Stripe and the
canonical API, customer credit and chargebacks included."""

from __future__ import annotations

import json
import os
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.connectors.registry import get_connector
from apps.posting.models import Operation, Posting
from apps.routing.models import ERPConnection
from apps.sources import chargebee_samples as cb
from tests.e2e.test_lifecycle import balances, billing_receivable, posted

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


def new_invoice(customer: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    customer = customer or cb.customer()
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


def test_over_payment_stays_as_credit_and_settles_the_next_invoice(client: Client, tryton: Any) -> None:
    customer, first = new_invoice()
    customer_ref = f"{SOURCE}:{customer['id']}"
    send(client, cb.invoice_generated(first, customer))
    # A bank transfer of 100.00 recorded against a 61.50 invoice: 38.50 is left unused.
    overpaid = cb.transaction(customer["id"], 10_000, [(first["id"], 6150)], payment_method="bank_transfer")
    send(client, cb.payment_succeeded(first, overpaid))
    posted(f"{overpaid['id']}:{first['id']}", Operation.APPLY_PAYMENT)
    credit = posted(f"{overpaid['id']}:on-account", Operation.RECEIVE_ON_ACCOUNT)
    [move] = tryton.moves(f"{SOURCE}:{overpaid['id']}:on-account")
    assert move["state"] == "posted" and credit.erp_id == str(move["id"])
    assert tryton.receivable(customer_ref) == Decimal("-38.50") == billing_receivable(customer["id"])

    # Chargebee applies the excess payment to the next invoice itself, and says so twice: the
    # transaction gains a linked invoice (transaction_updated), the invoice is generated part paid.
    _, second = new_invoice(customer)
    second_paid, overpaid_after = cb.excess_applied(second, overpaid, 3850)
    send(client, cb.transaction_event("transaction_updated", overpaid_after))
    send(client, cb.invoice_generated(second_paid))
    applied = posted(f"{overpaid['id']}:{second['id']}", Operation.APPLY_CREDIT)
    assert not Posting.objects.filter(source_id=f"{overpaid['id']}:{second['id']}", operation=Operation.APPLY_PAYMENT)

    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert (erp_second["state"], erp_second["amount_to_pay"]) == ("posted", Decimal("23.00"))
    connector = get_connector("tryton", ERPConnection.objects.get(name="tryton-local").resolved_settings())
    found = connector.find_document(Operation.APPLY_CREDIT, f"{SOURCE}:{overpaid['id']}:{second['id']}")
    assert found is not None and found.erp_id == applied.erp_id  # what a retry would find first
    assert tryton.receivable(customer_ref) == Decimal("23.00") == billing_receivable(customer["id"])

    rest = cb.transaction(customer["id"], 2300, [(second["id"], 2300)])
    send(client, cb.payment_succeeded(second_paid, rest))
    posted(f"{rest['id']}:{second['id']}", Operation.APPLY_PAYMENT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert erp_second["state"] == "paid"
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(customer["id"])


def paid_invoice(client: Client) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A posted invoice paid in full by card: (customer, the invoice as paid, the payment)."""
    customer, invoice = new_invoice()
    payment = cb.transaction(customer["id"], 6150, [(invoice["id"], 6150)], payment_method="card")
    paid = cb.payment_succeeded(invoice, payment, customer)
    send(client, cb.invoice_generated(invoice, customer))
    send(client, paid)
    posted(f"{payment['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    return customer, paid["content"]["invoice"], payment


def test_payment_then_chargeback_lost_moves_the_money_to_dispute_losses(client: Client, tryton: Any) -> None:
    customer, invoice, payment = paid_invoice(client)
    before = balances(tryton, "1150", "1190", "6810")

    # Chargeback Management's "create credit note and record refund": Chargebee's final booking.
    lost = cb.chargeback_lost(invoice, payment)
    refund, note = lost["content"]["transaction"], lost["content"]["credit_note"]
    send(client, lost)
    send(client, cb.transaction_event("transaction_created", refund))  # the same chargeback, once
    send(client, cb.credit_note_created(note))  # never a credit note: the invoice stays paid
    withdrawn = posted(f"{refund['id']}:withdrawn", Operation.WITHDRAW_DISPUTED_FUNDS)
    loss = posted(f"{refund['id']}:lost", Operation.LOSE_DISPUTE)

    assert loss.depends_on_key == withdrawn.idempotency_key
    [move] = tryton.moves(f"{SOURCE}:{refund['id']}:lost")
    assert move["state"] == "posted" and loss.erp_id == str(move["id"])
    after = balances(tryton, "1150", "1190", "6810")
    assert after["1150"] - before["1150"] == Decimal("-61.50")  # left the card clearing account
    assert after["1190"] == before["1190"]
    assert after["6810"] - before["6810"] == Decimal("61.50")
    assert not Posting.objects.filter(source_id=note["id"]).exists()
    assert tryton.credit_notes(f"{SOURCE}:{customer['id']}") == []
    assert tryton.receivable(f"{SOURCE}:{customer['id']}") == Decimal("0") == billing_receivable(customer["id"])


def test_chargeback_won_reinstates_the_funds(client: Client, tryton: Any) -> None:
    customer, _, payment = paid_invoice(client)
    before = balances(tryton, "1150", "1190", "6810")

    refund = cb.chargeback_refund(payment)  # recorded on the payment while the dispute runs
    send(client, cb.transaction_event("transaction_created", refund))
    posted(f"{refund['id']}:withdrawn", Operation.WITHDRAW_DISPUTED_FUNDS)
    withdrawn = balances(tryton, "1150", "1190", "6810")
    assert withdrawn["1150"] - before["1150"] == Decimal("-61.50")
    assert withdrawn["1190"] - before["1190"] == Decimal("61.50")  # held as disputed
    assert tryton.receivable(f"{SOURCE}:{customer['id']}") == Decimal("0") == billing_receivable(customer["id"])

    removed = cb.chargeback_removed(refund)  # won: the merchant removes Chargebee's chargeback refund
    send(client, removed)
    send(client, removed)  # redelivered: still one reinstatement
    posted(f"{refund['id']}:reinstated", Operation.REINSTATE_DISPUTED_FUNDS)

    after = balances(tryton, "1150", "1190", "6810")
    assert (after["1150"], after["1190"], after["6810"]) == (before["1150"], before["1190"], before["6810"])
    assert len(tryton.moves(f"{SOURCE}:{refund['id']}:reinstated")) == 1
    assert not Posting.objects.filter(source_id=f"{refund['id']}:lost").exists()
    assert tryton.receivable(f"{SOURCE}:{customer['id']}") == Decimal("0") == billing_receivable(customer["id"])
