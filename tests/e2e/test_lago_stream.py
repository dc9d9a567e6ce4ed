"""The lifecycle worked examples from a Lago stream (HMAC-signed webhooks, in the order Lago sends
them) into the real Tryton: after each step the customer's receivable in Tryton equals what Lago
says the customer owes (open amounts less the wallet credit bought ahead), to the cent, and the
documents are the ones the Stripe and canonical streams leave.

Lago has no bad-debt write-off (an invoice voided after a partial payment is written off), cannot be
over-paid (prepaid credits bought ahead are its customer credit), and reports only lost disputes, so
"dispute won" has no Lago form (see ``apps/sources/lago.py``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.core.money import to_decimal
from apps.ledger.models import Payment
from apps.posting.models import Operation, Posting
from apps.sources import lago_samples as lg
from apps.sources.models import BillingSource
from tests.e2e.test_lifecycle import billing_receivable, posted
from tests.lago_simulator import LagoSimulator

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


def lago_owes(*invoices: dict[str, Any], wallet_cents: int = 0) -> Decimal:
    """What Lago says the customer owes: the amounts still due on its finalized invoices, less the
    prepaid credits it holds in its wallet (cash paid ahead)."""
    due = sum(invoice["total_due_amount_cents"] for invoice in invoices if invoice["invoice_type"] != "credit")
    return to_decimal(due - wallet_cents, "USD")


def new_invoice(customer: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    customer = customer or lg.customer()
    fees = [
        lg.fee(4900, code="pro_monthly", name="Pro plan (monthly)"),
        lg.fee(1250, code="api_calls", name="API calls"),
    ]
    return lg.invoice(customer, fees, **changes)  # 61.50 plus 12.30 of tax: 73.80


def updated(invoice: dict[str, Any], seconds: int, **changes: Any) -> dict[str, Any]:
    """The same invoice as Lago sends it after a change, ``seconds`` later."""
    return lg.invoice(
        invoice["customer"],
        invoice["fees"],
        lago_id=invoice["lago_id"],
        number=invoice["number"],
        issuing_date=datetime.fromisoformat(invoice["issuing_date"]).date(),
        updated_at=later(seconds),
        **changes,
    )


def customer_ref(invoice: dict[str, Any]) -> str:
    return f"{SOURCE}:{invoice['customer']['lago_id']}"


def test_invoice_then_card_payment_settles_it(client: Client, tryton: Any) -> None:
    invoice = new_invoice()
    key = send(client, lg.webhook("invoice.created", invoice))
    send(client, lg.webhook("invoice.created", invoice), unique_key=key)  # Lago's retry: same unique key
    posted(invoice["lago_id"], Operation.POST_INVOICE)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert (erp_invoice["total_amount"], erp_invoice["tax_amount"]) == (Decimal("73.80"), Decimal("12.30"))
    assert tryton.receivable(customer_ref(invoice)) == Decimal("73.80") == lago_owes(invoice)

    # Stripe charged it: Lago sends the payment record, the invoice's new status, then a receipt.
    charge = lg.payment(invoice, 7380)
    paid = updated(invoice, 5, payment_status="succeeded")
    send(client, lg.webhook("payment.succeeded", charge))
    send(client, lg.webhook("invoice.payment_status_updated", paid))
    send(client, lg.webhook("payment_receipt.created", lg.payment_receipt(charge)))
    posted(f"{charge['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert erp_invoice["state"] == "paid"
    assert Payment.objects.filter(source=SOURCE, applications__invoice__source_id=invoice["lago_id"]).count() == 1
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(paid)
    assert billing_receivable(invoice["customer"]["lago_id"]) == Decimal("0")


def test_invoice_marked_paid_by_hand_is_paid_from_the_invoice(client: Client, tryton: Any) -> None:
    invoice = new_invoice()
    send(client, lg.webhook("invoice.created", invoice))
    marked = updated(invoice, 5, payment_status="succeeded", total_paid_amount_cents=0)  # no payment record
    send(client, lg.webhook("invoice.payment_status_updated", marked))
    posted(f"{invoice['lago_id']}:payment:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert erp_invoice["state"] == "paid"
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(marked)


def test_invoice_then_two_partial_payments_settle_it(client: Client, tryton: Any) -> None:
    invoice = new_invoice()
    send(client, lg.webhook("invoice.created", invoice))
    posted(invoice["lago_id"], Operation.POST_INVOICE)

    # POST /api/v1/payments for 20.00: Lago sends only the receipt (the payment status is unchanged).
    first = lg.payment(invoice, 2000, manual=True)
    send(client, lg.webhook("payment_receipt.created", lg.payment_receipt(first)))
    posted(f"{first['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("posted", Decimal("53.80"))
    partly_paid = updated(invoice, 5, total_paid_amount_cents=2000)  # the invoice as Lago now shows it
    assert tryton.receivable(customer_ref(invoice)) == Decimal("53.80") == lago_owes(partly_paid)

    # The rest: the receipt, and the invoice now paid in full.
    second = lg.payment(invoice, 5380, manual=True)
    paid = updated(invoice, 10, payment_status="succeeded", total_paid_amount_cents=7380)
    send(client, lg.webhook("invoice.payment_status_updated", paid))
    send(client, lg.webhook("payment_receipt.created", lg.payment_receipt(second)))
    posted(f"{second['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert not Posting.objects.filter(source_id=f"{invoice['lago_id']}:payment:{invoice['lago_id']}").exists()
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(paid)
    assert billing_receivable(invoice["customer"]["lago_id"]) == Decimal("0")


@pytest.fixture
def lago_api() -> Iterator[LagoSimulator]:
    simulator = LagoSimulator()
    yield simulator
    simulator.stop()


def test_partial_payments_that_sent_no_receipt_are_read_back_when_the_invoice_is_paid(
    client: Client, tryton: Any, lago_api: LagoSimulator
) -> None:
    """Receipts off: Lago sends nothing for a manual payment until the invoice is paid in full. The
    source's API settings let the hub read the payment records back then."""
    BillingSource.objects.filter(name=SOURCE).update(
        api_settings={"api_key": "env:LAGO_API_KEY", "base_url": lago_api.url}
    )
    invoice = new_invoice()
    send(client, lg.webhook("invoice.created", invoice))
    posted(invoice["lago_id"], Operation.POST_INVOICE)
    first, second = lg.payment(invoice, 2000, manual=True), lg.payment(invoice, 5380, manual=True)
    lago_api.add_payment(first)
    lago_api.add_payment(second)

    paid = updated(invoice, 10, payment_status="succeeded", total_paid_amount_cents=7380)
    send(client, lg.webhook("invoice.payment_status_updated", paid))
    posted(f"{first['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    posted(f"{second['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(paid)
    assert billing_receivable(invoice["customer"]["lago_id"]) == Decimal("0")


def test_paid_invoice_then_credit_note_refunded(client: Client, tryton: Any) -> None:
    invoice = new_invoice(payment_status="succeeded")
    send(client, lg.webhook("payment.succeeded", lg.payment(invoice, 7380)))
    send(client, lg.webhook("invoice.created", invoice))
    note = lg.credit_note(invoice, [lg.credit_item(invoice["fees"][1], 1250)])  # the usage fee, with its tax
    send(client, lg.webhook("credit_note.created", note))
    posted(f"{note['lago_id']}:refund", Operation.REFUND_CREDIT_MEMO)

    [credit_note] = tryton.invoices(f"{SOURCE}:{note['lago_id']}")
    assert (credit_note["state"], credit_note["total_amount"]) == ("paid", Decimal("-15.00"))
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert erp_invoice["state"] == "paid"
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(invoice)


def test_invoice_then_void_cancels_it_in_tryton(client: Client, tryton: Any) -> None:
    invoice = new_invoice()
    send(client, lg.webhook("invoice.created", invoice))
    posted(invoice["lago_id"], Operation.POST_INVOICE)
    voided = updated(invoice, 5, status="voided")
    send(client, lg.webhook("invoice.voided", voided))
    posted(f"{invoice['lago_id']}:void", Operation.VOID_INVOICE)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert erp_invoice["state"] == "cancelled"
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(voided)
    assert billing_receivable(invoice["customer"]["lago_id"]) == Decimal("0")


def test_invoice_partly_paid_then_voided_writes_off_the_rest_to_bad_debts(client: Client, tryton: Any) -> None:
    invoice = new_invoice()
    send(client, lg.webhook("invoice.created", invoice))
    first = lg.payment(invoice, 2000, manual=True)
    send(client, lg.webhook("payment_receipt.created", lg.payment_receipt(first)))
    posted(f"{first['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    assert tryton.receivable(customer_ref(invoice)) == Decimal("53.80")
    bad_debts_before = tryton.account_balance("6800")

    # Dunning ended: the invoice is voided in Lago, which keeps the 20.00 and claims nothing more.
    voided = updated(invoice, 5, status="voided", total_paid_amount_cents=2000)
    send(client, lg.webhook("invoice.voided", voided))
    posted(f"{invoice['lago_id']}:write-off", Operation.WRITE_OFF)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert tryton.account_balance("6800") - bad_debts_before == Decimal("53.80")
    assert not Posting.objects.filter(source_id=f"{invoice['lago_id']}:void").exists()
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(voided)
    assert billing_receivable(invoice["customer"]["lago_id"]) == Decimal("0")


def test_credit_bought_ahead_is_customer_credit_and_settles_the_next_invoice(client: Client, tryton: Any) -> None:
    first = new_invoice(payment_status="succeeded")
    customer = first["customer"]
    ref = customer_ref(first)
    send(client, lg.webhook("invoice.created", first))
    charge = lg.payment(first, 7380)
    send(client, lg.webhook("payment.succeeded", charge))
    posted(f"{charge['lago_id']}:{first['lago_id']}", Operation.APPLY_PAYMENT)

    # The customer pays 38.50 more than was owed: in Lago, prepaid credits bought for its wallet.
    purchase = lg.credit_purchase_invoice(customer, 3850)
    send(client, lg.webhook("invoice.paid_credit_added", purchase))
    purchase_paid = lg.credit_purchase_invoice(
        customer, 3850, lago_id=purchase["lago_id"], number=purchase["number"], payment_status="succeeded"
    )
    send(client, lg.webhook("payment.succeeded", lg.payment(purchase_paid, 3850)))
    send(client, lg.webhook("invoice.payment_status_updated", purchase_paid))
    credit = posted(f"{purchase['lago_id']}:payment:on-account", Operation.RECEIVE_ON_ACCOUNT)
    [move] = tryton.moves(f"{SOURCE}:{purchase['lago_id']}:payment:on-account")
    assert move["state"] == "posted" and credit.erp_id == str(move["id"])
    assert tryton.receivable(ref) == Decimal("-38.50") == lago_owes(first, purchase_paid, wallet_cents=3850)
    assert billing_receivable(customer["lago_id"]) == Decimal("-38.50")

    # The next invoice uses the credits: Lago asks 35.30 of its 73.80.
    second = new_invoice(customer, prepaid_credit_amount_cents=3850)
    assert second["total_amount_cents"] == 3530
    send(client, lg.webhook("invoice.created", second))
    posted(f"{second['lago_id']}:prepaid-credits:{second['lago_id']}", Operation.APPLY_CREDIT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['lago_id']}")
    assert (erp_second["total_amount"], erp_second["amount_to_pay"]) == (Decimal("73.80"), Decimal("35.30"))
    assert tryton.receivable(ref) == Decimal("35.30") == lago_owes(first, second)
    assert billing_receivable(customer["lago_id"]) == Decimal("35.30")

    rest = lg.payment(second, 3530)
    second_paid = updated(second, 5, payment_status="succeeded", prepaid_credit_amount_cents=3850)
    send(client, lg.webhook("payment.succeeded", rest))
    send(client, lg.webhook("invoice.payment_status_updated", second_paid))
    posted(f"{rest['lago_id']}:{second['lago_id']}", Operation.APPLY_PAYMENT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['lago_id']}")
    assert erp_second["state"] == "paid"
    assert tryton.receivable(ref) == Decimal("0") == lago_owes(first, second_paid)
    assert billing_receivable(customer["lago_id"]) == Decimal("0")


def test_paid_invoice_then_dispute_lost_moves_the_money_to_dispute_losses(client: Client, tryton: Any) -> None:
    invoice = new_invoice(payment_status="succeeded")
    charge = lg.payment(invoice, 7380)
    send(client, lg.webhook("invoice.created", invoice))
    send(client, lg.webhook("payment.succeeded", charge))
    posted(f"{charge['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    before = {code: tryton.account_balance(code) for code in ("1150", "1190", "6810")}

    # The cardholder disputed the charge and Stripe ruled against the merchant: Lago says only that.
    lost = lg.payment_dispute_lost(invoice)
    key = send(client, lost)
    send(client, lost, unique_key=key)  # Lago's retry
    withdrawn = posted(f"{invoice['lago_id']}:dispute:withdrawn", Operation.WITHDRAW_DISPUTED_FUNDS)
    loss = posted(f"{invoice['lago_id']}:dispute:lost", Operation.LOSE_DISPUTE)

    assert loss.depends_on_key == withdrawn.idempotency_key
    assert len(tryton.moves(f"{SOURCE}:{invoice['lago_id']}:dispute:lost")) == 1
    after = {code: tryton.account_balance(code) for code in ("1150", "1190", "6810")}
    assert after["1150"] - before["1150"] == Decimal("-73.80")  # the money left the card clearing account
    assert after["1190"] == before["1190"]  # withdrawn and lost at once: nothing stays disputed
    assert after["6810"] - before["6810"] == Decimal("73.80")
    # Lago keeps the invoice paid; so does the ERP.
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0") == lago_owes(invoice)
    assert billing_receivable(invoice["customer"]["lago_id"]) == Decimal("0")
