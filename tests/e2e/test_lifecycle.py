"""The receivables lifecycle after the invoice, end to end from signed Stripe webhooks into the real
Tryton: each worked example ends with the customer's receivable in Tryton equal to billing's."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.connectors.registry import get_connector
from apps.core.money import to_decimal
from apps.ledger.models import Dispute, Invoice, Payment
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver, wait_for
from tests.e2e.test_stripe_to_tryton import new_invoice

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


def posted(source_id: str, operation: str, timeout: float = 120) -> Posting:
    return wait_for(
        lambda: Posting.objects.filter(source_id=source_id, operation=operation, state=PostingState.POSTED).first(),
        timeout=timeout,
        what=f"{operation} of {source_id} to be posted",
    )


def billing_receivable(customer_id: str) -> Decimal:
    """What billing says the customer still owes: open invoices less what was paid on them, less
    the customer's credit (cash received that no invoice has taken yet). Stripe's credit counts
    here as the ledger holds it: an over-payment as unapplied cash (``<invoice>:overpaid``, a
    bank transfer's funding), what an invoice took from the credit or cash balance as credit
    applied, and in its paid amount."""
    total = 0
    for invoice in Invoice.objects.filter(customer__source_id=customer_id):
        if invoice.status in (Invoice.STATUS_VOID, Invoice.STATUS_UNCOLLECTIBLE):
            continue
        total += invoice.total_minor - invoice.amount_paid_minor
    for payment in Payment.objects.filter(customer__source_id=customer_id):
        used = sum(a.amount_minor for a in payment.applications.all() if a.from_credit)
        total -= payment.on_account_minor - used
    return to_decimal(total, "USD")


def test_invoice_then_void_cancels_it_in_tryton_and_clears_the_receivable(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    invoice_posting = posted(obj["id"], Operation.POST_INVOICE)
    customer_ref = f"{SOURCE}:{obj['customer']}"
    assert tryton.receivable(customer_ref) == Decimal("61.50") == billing_receivable(obj["customer"])

    void_event = se.event("invoice.voided", se.voided(obj))
    deliver(client, void_event)
    deliver(client, void_event)  # delivered twice: still one void
    void = posted(f"{obj['id']}:void", Operation.VOID_INVOICE)

    assert void.depends_on_key == invoice_posting.idempotency_key
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "cancelled" and void.erp_id == str(invoice["id"])
    [credit_note] = tryton.credit_notes(customer_ref)  # Tryton's rule: credited with refund, once
    assert Decimal(credit_note["total_amount"]) == Decimal("-61.50")
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(obj["customer"])


def test_invoice_partly_paid_then_uncollectible_writes_off_the_rest_to_bad_debts(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("payment_intent.succeeded", se.payment_intent(obj["customer"], obj["id"], 2000)))
    payment = wait_for(
        lambda: (
            Posting.objects.filter(operation=Operation.APPLY_PAYMENT, payment_application__invoice__source_id=obj["id"])
            .filter(state=PostingState.POSTED)
            .first()
        ),
        timeout=120,
        what="the partial payment to be posted",
    )
    assert payment.erp_id
    customer_ref = f"{SOURCE}:{obj['customer']}"
    assert tryton.receivable(customer_ref) == Decimal("41.50")
    bad_debts_before = tryton.account_balance("6800")

    deliver(client, se.event("invoice.marked_uncollectible", se.uncollectible(obj, amount_paid=2000)))
    write_off = posted(f"{obj['id']}:write-off", Operation.WRITE_OFF)

    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert (invoice["state"], invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert write_off.erp_id  # the write-off move
    assert tryton.account_balance("6800") - bad_debts_before == Decimal("41.50")
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(obj["customer"])


def test_invoice_then_partial_credit_note_then_payment_of_the_rest_settles_it(client: Client, tryton: Any) -> None:
    obj = new_invoice()  # 49.00 plan + 12.50 usage
    deliver(client, se.event("invoice.finalized", obj))
    memo = se.credit_note(obj, [(1, 500)], custom=250)  # 5.00 of the usage line, 2.50 goodwill
    deliver(client, se.event("credit_note.created", memo))
    credit = posted(memo["id"], Operation.POST_CREDIT_MEMO)
    customer_ref = f"{SOURCE}:{obj['customer']}"

    [credit_note] = tryton.invoices(f"{SOURCE}:{memo['id']}")
    assert credit_note["total_amount"] == Decimal("-7.50") and credit.erp_id == str(credit_note["id"])
    lines = sorted((line["amount"], line["account_code"]) for line in tryton.invoice_lines(credit_note["id"]))
    assert lines == [(Decimal("-5.00"), "4100"), (Decimal("-2.50"), "4000")]  # the credited line's account
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "posted"  # a partial credit leaves the invoice open
    assert tryton.receivable(customer_ref) == Decimal("54.00")

    rest = se.payment_intent(obj["customer"], obj["id"], 5400)
    deliver(client, se.event("payment_intent.succeeded", rest))
    posted(f"{rest['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    assert tryton.receivable(customer_ref) == Decimal("0")


def test_a_credit_note_for_the_whole_invoice_settles_it_in_tryton(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    memo = se.credit_note(obj, [(0, 4900), (1, 1250)])
    deliver(client, se.event("credit_note.created", memo))  # before its invoice: it waits for it
    deliver(client, se.event("invoice.finalized", obj))
    posted(memo["id"], Operation.POST_CREDIT_MEMO)

    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    [credit_note] = tryton.invoices(f"{SOURCE}:{memo['id']}")
    assert (invoice["state"], credit_note["state"]) == ("paid", "paid")  # reconciled against each other
    assert tryton.receivable(f"{SOURCE}:{obj['customer']}") == Decimal("0")


def test_paid_invoice_then_credit_note_refunded_to_the_card_pays_the_customer_back(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("invoice.paid", se.paid(obj)))
    memo = se.credit_note(obj, [(1, 1250)], refunded=1250)  # the usage line refunded to the card
    deliver(client, se.event("credit_note.created", memo))
    refund = posted(f"{memo['id']}:refund", Operation.REFUND_CREDIT_MEMO)
    customer_ref = f"{SOURCE}:{obj['customer']}"

    credit = Posting.objects.get(source_id=memo["id"], operation=Operation.POST_CREDIT_MEMO)
    assert refund.depends_on_key == credit.idempotency_key and refund.erp_id
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    [credit_note] = tryton.invoices(f"{SOURCE}:{memo['id']}")
    assert invoice["state"] == "paid"
    assert (credit_note["state"], credit_note["total_amount"]) == ("paid", Decimal("-12.50"))  # paid out
    assert tryton.receivable(customer_ref) == Decimal("0")


def test_a_credit_note_voided_in_billing_is_cancelled_in_tryton_and_the_invoice_is_owed_again(
    client: Client, tryton: Any
) -> None:
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    memo = se.credit_note(obj, [(0, 900)])
    deliver(client, se.event("credit_note.created", memo))
    credit = posted(memo["id"], Operation.POST_CREDIT_MEMO)
    customer_ref = f"{SOURCE}:{obj['customer']}"
    assert tryton.receivable(customer_ref) == Decimal("52.50")

    voided = {**memo, "status": "void", "voided_at": memo["created"] + 60}
    deliver(client, se.event("credit_note.voided", voided))
    void = posted(f"{memo['id']}:void", Operation.VOID_CREDIT_MEMO)

    assert void.depends_on_key == credit.idempotency_key
    [credit_note] = tryton.invoices(f"{SOURCE}:{memo['id']}")
    assert credit_note["state"] == "cancelled"
    assert tryton.receivable(customer_ref) == Decimal("61.50")


def test_invoice_then_two_partial_payments_settle_it(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    first = se.payment_intent(obj["customer"], obj["id"], 2000)
    deliver(client, se.event("payment_intent.succeeded", first))
    posted(f"{first['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    customer_ref = f"{SOURCE}:{obj['customer']}"
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert (invoice["state"], invoice["amount_to_pay"]) == ("posted", Decimal("41.50"))
    assert tryton.receivable(customer_ref) == Decimal("41.50")

    second = se.payment_intent(obj["customer"], obj["id"], 4150)
    deliver(client, se.event("payment_intent.succeeded", second))
    posted(f"{second['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert (invoice["state"], invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert tryton.receivable(customer_ref) == Decimal("0")


def balances(tryton: Any, *codes: str) -> dict[str, Decimal]:
    return {code: tryton.account_balance(code) for code in codes}


def test_paid_invoice_then_dispute_lost_moves_the_money_to_dispute_losses(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    intent = se.payment_intent(obj["customer"], obj["id"], 6150)
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("payment_intent.succeeded", intent))
    deliver(client, se.event("invoice.paid", se.paid(obj, payment_intent=intent["id"])))
    posted(f"{intent['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    before = balances(tryton, "1150", "1190", "6810")
    customer_ref = f"{SOURCE}:{obj['customer']}"

    dispute = se.dispute(intent)  # the card network takes the money back while the dispute runs
    deliver(client, se.event("charge.dispute.created", dispute))
    deliver(client, se.event("charge.dispute.funds_withdrawn", dispute))  # the same withdrawal, once
    withdrawn = posted(f"{dispute['id']}:withdrawn", Operation.WITHDRAW_DISPUTED_FUNDS)
    [move] = tryton.moves(f"{SOURCE}:{dispute['id']}:withdrawn")
    assert move["state"] == "posted" and withdrawn.erp_id == str(move["id"])
    connector = get_connector("tryton", ERPConnection.objects.get(name="tryton-local").resolved_settings())
    found = connector.find_document(Operation.WITHDRAW_DISPUTED_FUNDS, f"{SOURCE}:{dispute['id']}:withdrawn")
    assert found is not None and found.erp_id == withdrawn.erp_id  # what a retry would find first
    after_withdrawal = balances(tryton, "1150", "1190", "6810")
    assert after_withdrawal["1150"] - before["1150"] == Decimal("-61.50")  # left the card clearing account
    assert after_withdrawal["1190"] - before["1190"] == Decimal("61.50")  # held as disputed
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(obj["customer"])  # still paid

    deliver(client, se.event("charge.dispute.closed", se.dispute_closed(dispute, "lost")))
    lost = posted(f"{dispute['id']}:lost", Operation.LOSE_DISPUTE)

    assert lost.depends_on_key == withdrawn.idempotency_key
    after_loss = balances(tryton, "1150", "1190", "6810")
    assert after_loss["1190"] == before["1190"]
    assert after_loss["6810"] - before["6810"] == Decimal("61.50")
    assert after_loss["1150"] - before["1150"] == Decimal("-61.50")
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(obj["customer"])


def test_dispute_won_reinstates_the_funds(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    intent = se.payment_intent(obj["customer"], obj["id"], 6150)
    dispute = se.dispute(intent, status="needs_response")
    deliver(client, se.event("charge.dispute.created", dispute))  # before its payment: posted all the same
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("invoice.paid", se.paid(obj, payment_intent=intent["id"])))
    posted(f"{intent['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    posted(f"{dispute['id']}:withdrawn", Operation.WITHDRAW_DISPUTED_FUNDS)
    before = balances(tryton, "1150", "1190", "6810")

    won = se.dispute_closed(dispute, "won")
    deliver(client, se.event("charge.dispute.funds_reinstated", won))
    deliver(client, se.event("charge.dispute.closed", won))
    posted(f"{dispute['id']}:reinstated", Operation.REINSTATE_DISPUTED_FUNDS)

    after = balances(tryton, "1150", "1190", "6810")
    assert after["1150"] - before["1150"] == Decimal("61.50")
    assert after["1190"] - before["1190"] == Decimal("-61.50")
    assert after["6810"] == before["6810"]
    assert len(tryton.moves(f"{SOURCE}:{dispute['id']}:reinstated")) == 1
    assert not Posting.objects.filter(source_id=f"{dispute['id']}:lost").exists()
    assert tryton.receivable(f"{SOURCE}:{obj['customer']}") == Decimal("0") == billing_receivable(obj["customer"])


def test_an_inquiry_moves_no_money(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    intent = se.payment_intent(obj["customer"], obj["id"], 6150)
    inquiry = se.dispute(intent, status="warning_needs_response")
    deliver(client, se.event("charge.dispute.created", inquiry))
    wait_for(
        lambda: Dispute.objects.filter(source_id=inquiry["id"], status=Dispute.STATUS_INQUIRY).exists(),
        what="the inquiry in the ledger",
    )
    assert not Posting.objects.filter(dispute__source_id=inquiry["id"]).exists()
    assert tryton.moves(f"{SOURCE}:{inquiry['id']}:withdrawn") == []


def stripe_lines() -> list[dict[str, Any]]:
    return [
        se.line(4900, description="Pro plan (monthly)"),
        se.line(1250, quantity=5, description="API calls", product="prod_usage_api_calls", price="price_api"),
    ]


def test_over_payment_stays_as_credit_and_the_credit_balance_settles_the_next_invoice(
    client: Client, tryton: Any
) -> None:
    first = new_invoice()  # 61.50
    customer_id = first["customer"]
    customer_ref = f"{SOURCE}:{customer_id}"
    deliver(client, se.event("customer.created", se.customer(customer_id)))
    deliver(client, se.event("invoice.finalized", first))
    # The customer pays 100.00 for 61.50: Stripe keeps what the invoice asked and credits the 38.50 more to
    # the customer's credit balance (amount_overpaid), announced by invoice.paid and invoice.overpaid.
    intent = se.uid("pi")
    overpaid = se.paid(first, payment_intent=intent, amount_paid=10000)
    deliver(client, se.event("invoice.paid", overpaid))
    deliver(client, se.event("invoice.overpaid", overpaid))
    posted(f"{intent}:{first['id']}", Operation.APPLY_PAYMENT)
    credit = posted(f"{first['id']}:overpaid:on-account", Operation.RECEIVE_ON_ACCOUNT)
    [move] = tryton.moves(f"{SOURCE}:{first['id']}:overpaid:on-account")
    assert move["state"] == "posted" and credit.erp_id == str(move["id"])
    [erp_first] = tryton.invoices(f"{SOURCE}:{first['id']}")
    assert erp_first["state"] == "paid"
    assert tryton.receivable(customer_ref) == Decimal("-38.50") == billing_receivable(customer_id)

    # Stripe applies the credit balance to the next invoice it finalizes: 23.00 is left to pay.
    second = se.with_credit_balance(se.invoice(customer_id, stripe_lines()), 3850)
    deliver(client, se.event("invoice.finalized", second))
    applied = posted(f"{second['id']}:customer-balance:{second['id']}", Operation.APPLY_CREDIT)
    invoice_posting = Posting.objects.get(source_id=second["id"], operation=Operation.POST_INVOICE)
    assert applied.depends_on_key == invoice_posting.idempotency_key
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert (erp_second["total_amount"], erp_second["state"], erp_second["amount_to_pay"]) == (
        Decimal("61.50"),
        "posted",
        Decimal("23.00"),
    )
    assert tryton.receivable(customer_ref) == Decimal("23.00") == billing_receivable(customer_id)

    rest = se.uid("pi")
    deliver(client, se.event("invoice.paid", se.paid(second, payment_intent=rest)))
    posted(f"{rest}:{second['id']}", Operation.APPLY_PAYMENT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert erp_second["state"] == "paid"
    assert (
        Posting.objects.filter(payment_application__payment__source_id=f"{second['id']}:customer-balance").count() == 1
    )
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(customer_id)


def test_a_bank_transfer_beyond_the_invoice_stays_in_the_cash_balance_and_pays_the_next_invoice(
    client: Client, tryton: Any
) -> None:
    first = new_invoice(payment_method_types=["customer_balance"])  # a bank-transfer invoice of 61.50
    customer_id = first["customer"]
    customer_ref = f"{SOURCE}:{customer_id}"
    deliver(client, se.event("customer.created", se.customer(customer_id)))
    deliver(client, se.event("invoice.finalized", first))
    posted(first["id"], Operation.POST_INVOICE)

    # The customer wires 100.00: Stripe reconciles 61.50 with the invoice's PaymentIntent and keeps 38.50
    # in the customer's cash balance.
    funded = se.cash_balance_transaction(customer_id, "funded", 10000, ending_balance=10000)
    intent = se.bank_transfer_intent(customer_id, 6150)
    applied = se.cash_balance_transaction(
        customer_id, "applied_to_payment", -6150, ending_balance=3850, payment_intent=intent["id"]
    )
    for transaction in (funded, applied):
        deliver(client, se.event("customer_cash_balance_transaction.created", transaction))
    deliver(client, se.event("payment_intent.succeeded", intent))
    deliver(client, se.event("invoice.paid", se.paid(first, payment_intent=intent["id"])))
    posted(f"{funded['id']}:on-account", Operation.RECEIVE_ON_ACCOUNT)
    posted(f"{intent['id']}:{first['id']}", Operation.APPLY_CREDIT)
    assert not Posting.objects.filter(operation=Operation.APPLY_PAYMENT, source_id__startswith=intent["id"]).exists()
    [erp_first] = tryton.invoices(f"{SOURCE}:{first['id']}")
    assert erp_first["state"] == "paid"
    assert tryton.receivable(customer_ref) == Decimal("-38.50") == billing_receivable(customer_id)

    second = se.invoice(customer_id, stripe_lines(), payment_method_types=["customer_balance"])
    deliver(client, se.event("invoice.finalized", second))
    posted(second["id"], Operation.POST_INVOICE)
    assert tryton.receivable(customer_ref) == Decimal("23.00") == billing_receivable(customer_id)

    # Stripe funds an invoice only once the cash balance covers it: the customer wires the 23.00 left.
    topped_up = se.cash_balance_transaction(customer_id, "funded", 2300, ending_balance=6150)
    next_intent = se.bank_transfer_intent(customer_id, 6150)
    applied_next = se.cash_balance_transaction(
        customer_id, "applied_to_payment", -6150, ending_balance=0, payment_intent=next_intent["id"]
    )
    deliver(client, se.event("invoice.paid", se.paid(second, payment_intent=next_intent["id"])))  # before the rest
    for transaction in (topped_up, applied_next):
        deliver(client, se.event("customer_cash_balance_transaction.created", transaction))
    posted(f"{topped_up['id']}:on-account", Operation.RECEIVE_ON_ACCOUNT)
    posted(f"{next_intent['id']}:{second['id']}", Operation.APPLY_CREDIT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert erp_second["state"] == "paid"
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(customer_id)
