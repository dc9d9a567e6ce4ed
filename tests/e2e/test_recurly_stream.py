"""The lifecycle worked examples from a Recurly stream (signed JSON notifications that only name the
object, read back through a contract simulator of Recurly's API v3) into the real Tryton: after each
step the customer's receivable in Tryton equals billing's, and the documents and accounts end where
the Stripe, Chargebee and canonical streams leave them.

Where Recurly has no concept for an example (see ``apps/sources/recurly.py``), the test sends what
Recurly does instead: an open-amount refund for a void, a prepaid account balance for an
over-payment, a lost chargeback as Recurly's chargeback management records it, and nothing at all
for a dispute the merchant wins."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.ingest.models import InboxEvent, InboxStatus
from apps.posting.models import Operation, Posting
from apps.sources import recurly_samples as rs
from apps.sources.models import BillingSource
from tests.conftest import wait_for
from tests.e2e.test_lifecycle import balances, billing_receivable, posted
from tests.recurly_simulator import RecurlySimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

SOURCE = "recurly-us"
KEY = os.environ["RECURLY_WEBHOOK_KEY"]


@pytest.fixture
def recurly(hub: Any) -> Iterator[RecurlySimulator]:
    with RecurlySimulator() as simulator:
        BillingSource.objects.filter(name=SOURCE).update(
            api_settings={"api_key": "env:RECURLY_API_KEY", "base_url": simulator.url}
        )
        yield simulator


def notify(client: Client, object_type: str, event_type: str, obj: dict[str, Any], *, times: int = 1) -> None:
    """Recurly posts the notification (``times`` the same delivery, as on a retry)."""
    payload = rs.body(rs.notification(object_type, event_type, obj))
    for _ in range(times):
        response = client.post(
            f"/webhooks/{SOURCE}/",
            data=payload,
            content_type="application/json",
            HTTP_RECURLY_SIGNATURE=rs.sign(payload, KEY),
        )
        assert response.status_code == 200, response.content


def all_normalized() -> None:
    """Wait until the worker has read every notification sent so far."""
    wait_for(
        lambda: not InboxEvent.objects.filter(source=SOURCE, status=InboxStatus.RECEIVED).exists(),
        timeout=60,
        what="every Recurly notification to be normalized",
    )


def posted_invoice(
    client: Client, tryton: Any, recurly: RecurlySimulator, *, manual: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new account's invoice of 61.50 (Pro plan 49.00, 5 × 2.50 API calls), posted to Tryton."""
    account = rs.account()
    invoice = rs.charge_invoice(
        account,
        [
            rs.line_item("49.00", tax_rate="0", description="Pro plan (monthly)", plan_code="pro"),
            rs.line_item("2.50", quantity=5, tax_rate="0", description="API calls", add_on_code="api_calls"),
        ],
        collection_method="manual" if manual else "automatic",
    )
    recurly.put(account, invoice)
    notify(client, "account", "created", account)
    notify(client, "charge_invoice", "created", invoice)
    posted(invoice["id"], Operation.POST_INVOICE)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert erp_invoice["total_amount"] == Decimal("61.50")
    assert receivable(tryton, account) == Decimal("61.50") == billing_receivable(account["code"])
    return account, invoice


def receivable(tryton: Any, account: dict[str, Any]) -> Decimal:
    return tryton.receivable(f"{SOURCE}:{account['code']}")  # type: ignore[no-any-return]


def paid_by_card(client: Client, recurly: RecurlySimulator, account: dict[str, Any], invoice: dict[str, Any]) -> Any:
    purchase = rs.transaction(account, invoice, invoice["balance"])
    paid = rs.settled(invoice, transactions=[purchase])
    recurly.put(purchase, paid)
    notify(client, "payment", "succeeded", purchase)
    notify(client, "charge_invoice", "paid", paid)
    posted(f"{purchase['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    return purchase, paid


def test_invoice_then_two_partial_payments_settle_it(client: Client, tryton: Any, recurly: RecurlySimulator) -> None:
    account, invoice = posted_invoice(client, tryton, recurly, manual=True)

    first = rs.external_payment(account, invoice, "20.00")  # a check recorded on the manual invoice
    partly = rs.settled(invoice, transactions=[first])
    recurly.put(first, partly)
    notify(client, "payment", "succeeded", first, times=2)  # redelivered: still one payment
    posted(f"{first['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("posted", Decimal("41.50"))
    assert receivable(tryton, account) == Decimal("41.50") == billing_receivable(account["code"])

    second = rs.external_payment(account, invoice, "41.50")
    paid = rs.settled(partly, transactions=[second])
    recurly.put(second, paid)
    notify(client, "charge_invoice", "paid", paid)  # the invoice alone names both payments
    posted(f"{second['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    all_normalized()

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert Posting.objects.filter(source_id=f"{first['id']}:{invoice['id']}").count() == 1
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])


def test_paid_invoice_then_credit_then_refund_pays_the_customer_back(
    client: Client, tryton: Any, recurly: RecurlySimulator
) -> None:
    account, invoice = posted_invoice(client, tryton, recurly)
    purchase, paid = paid_by_card(client, recurly, account, invoice)
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert erp_invoice["state"] == "paid"
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])

    # The usage line refunded to the account's credit balance: a credit invoice left open.
    usage = paid["line_items"][1]
    credit = rs.credit_invoice(
        account,
        [rs.credit_line(usage, paid)],
        origin="line_item_refund",
        state="open",
        previous_invoice_id=invoice["id"],
    )
    recurly.put(credit)
    notify(client, "credit_invoice", "created", credit)
    posted(credit["id"], Operation.POST_CREDIT_MEMO)
    assert not Posting.objects.filter(source_id=f"{credit['id']}:refund").exists()  # nothing paid back yet
    # Billing owes the customer the credit invoice's open balance.
    assert receivable(tryton, account) == Decimal("-12.50") == credit["balance"]

    # Then the credit is refunded to the card: a refund transaction closes the credit invoice.
    refund = rs.transaction(account, credit, "12.50", txn_type="refund", original_transaction_id=purchase["id"])
    refunded = rs.changed(credit, state="closed", balance=Decimal("0"), transactions=[refund])
    recurly.put(refund, refunded)
    notify(client, "payment", "refunded", refund)
    notify(client, "credit_invoice", "closed", refunded)
    posted(f"{credit['id']}:refund", Operation.REFUND_CREDIT_MEMO)

    [credit_note] = tryton.invoices(f"{SOURCE}:{credit['id']}")
    assert (credit_note["state"], credit_note["total_amount"]) == ("paid", Decimal("-12.50"))
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])


def test_invoice_cancelled_by_an_open_amount_refund_leaves_nothing_owed(
    client: Client, tryton: Any, recurly: RecurlySimulator
) -> None:
    """Recurly voids credit invoices only: a charge invoice issued in error is refunded for its open
    amount, a credit invoice that takes its whole balance."""
    account, invoice = posted_invoice(client, tryton, recurly, manual=True)
    credit = rs.credit_invoice(
        account, rs.credit_lines(invoice), origin="open_amount_refund", state="open", previous_invoice_id=invoice["id"]
    )
    reduction, credit, cancelled = rs.apply_credit(account, credit, invoice, invoice["total"], action="reduction")
    recurly.put(credit, reduction, cancelled)
    notify(client, "credit_invoice", "created", credit)
    notify(client, "credit_payment", "created", reduction)
    notify(client, "charge_invoice", "updated", cancelled)
    posted(credit["id"], Operation.POST_CREDIT_MEMO)
    all_normalized()

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    [credit_note] = tryton.invoices(f"{SOURCE}:{credit['id']}")
    assert credit_note["total_amount"] == Decimal("-61.50")
    assert (erp_invoice["state"], credit_note["state"]) == ("paid", "paid")  # reconciled against each other
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])


def test_invoice_partly_paid_then_failed_writes_off_the_rest(
    client: Client, tryton: Any, recurly: RecurlySimulator
) -> None:
    account, invoice = posted_invoice(client, tryton, recurly, manual=True)
    first = rs.external_payment(account, invoice, "20.00")
    partly = rs.settled(invoice, transactions=[first])
    recurly.put(first, partly)
    notify(client, "payment", "succeeded", first)
    posted(f"{first['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    assert receivable(tryton, account) == Decimal("41.50") == billing_receivable(account["code"])
    bad_debts_before = tryton.account_balance("6800")

    # Collection stops (marked failed); Recurly writes the balance off with a write-off credit invoice.
    failed = rs.settled(partly, state="failed")
    cleared, credit, written = rs.write_off(account, failed)
    recurly.put(credit, cleared, written)
    notify(client, "charge_invoice", "failed", written)
    notify(client, "credit_invoice", "created", credit)
    notify(client, "credit_payment", "created", cleared)
    posted(f"{invoice['id']}:write-off", Operation.WRITE_OFF)
    all_normalized()

    assert not Posting.objects.filter(source_id=credit["id"]).exists()  # the write-off is not a credit note too
    assert tryton.account_balance("6800") - bad_debts_before == Decimal("41.50")
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert (erp_invoice["state"], erp_invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])


def test_payment_then_chargeback_lost_moves_the_money_to_dispute_losses(
    client: Client, tryton: Any, recurly: RecurlySimulator
) -> None:
    account, invoice = posted_invoice(client, tryton, recurly)
    purchase, paid = paid_by_card(client, recurly, account, invoice)
    before = balances(tryton, "1150", "1190", "6810")

    credit, chargeback = rs.chargeback(account, paid, purchase)  # Recurly hears of it once it is lost
    recurly.put(credit, chargeback)
    notify(client, "credit_invoice", "created", credit)
    notify(client, "payment", "refunded", chargeback)
    withdrawn = posted(f"{chargeback['id']}:withdrawn", Operation.WITHDRAW_DISPUTED_FUNDS)
    lost = posted(f"{chargeback['id']}:lost", Operation.LOSE_DISPUTE)
    all_normalized()

    assert lost.depends_on_key == withdrawn.idempotency_key
    assert not Posting.objects.filter(source_id__startswith=credit["id"]).exists()  # not a credit note and refund
    after = balances(tryton, "1150", "1190", "6810")
    assert after["1150"] - before["1150"] == Decimal("-61.50")
    assert after["1190"] == before["1190"]
    assert after["6810"] - before["6810"] == Decimal("61.50")
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert erp_invoice["state"] == "paid"  # the invoice stays paid, as billing keeps it
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])


def test_a_dispute_the_merchant_wins_moves_no_money(client: Client, tryton: Any, recurly: RecurlySimulator) -> None:
    """Recurly is not told about open disputes nor about won ones: all it may send again is the
    payment and its invoice, unchanged. The ERP ends where the other engines' won dispute leaves it
    once the funds are reinstated: 1150, 1190 and 6810 as before the dispute."""
    account, invoice = posted_invoice(client, tryton, recurly)
    purchase, paid = paid_by_card(client, recurly, account, invoice)
    all_normalized()
    before = balances(tryton, "1150", "1190", "6810")

    notify(client, "payment", "succeeded", purchase)
    notify(client, "charge_invoice", "updated", rs.changed(paid))
    all_normalized()

    assert balances(tryton, "1150", "1190", "6810") == before
    assert not Posting.objects.filter(dispute__payment_source_id=purchase["id"]).exists()
    assert Posting.objects.filter(source_id=f"{purchase['id']}:{invoice['id']}").count() == 1
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])


def test_prepaid_balance_stays_as_credit_and_settles_the_next_invoices(
    client: Client, tryton: Any, recurly: RecurlySimulator
) -> None:
    """Recurly never takes more than an invoice's balance: cash paid ahead is a prepaid account
    balance, then applied to the next invoices as credit payments."""
    account = rs.account()
    recurly.put(account)
    notify(client, "account", "created", account)
    charge, purchase, credit = rs.prepayment(account, "100.00")
    recurly.put(charge, purchase, credit)
    notify(client, "charge_invoice", "paid", charge)
    notify(client, "payment", "succeeded", purchase)
    notify(client, "credit_invoice", "created", credit)
    on_account = posted(f"{purchase['id']}:on-account", Operation.RECEIVE_ON_ACCOUNT)
    all_normalized()
    [move] = tryton.moves(f"{SOURCE}:{purchase['id']}:on-account")
    assert move["state"] == "posted" and on_account.erp_id == str(move["id"])
    assert not Posting.objects.filter(source_id=charge["id"]).exists()  # a prepayment is not a sale
    assert receivable(tryton, account) == Decimal("-100.00") == billing_receivable(account["code"])

    def invoice() -> dict[str, Any]:
        return rs.charge_invoice(
            account,
            [
                rs.line_item("49.00", tax_rate="0", plan_code="pro"),
                rs.line_item("12.50", tax_rate="0", plan_code="pro"),
            ],
        )

    # The next invoice is settled from the balance as it is created.
    applied, credit, first = rs.apply_credit(account, credit, invoice(), "61.50")
    recurly.put(credit, applied, first)
    notify(client, "charge_invoice", "created", first)
    notify(client, "credit_payment", "created", applied)
    posted(f"{purchase['id']}:{first['id']}", Operation.APPLY_CREDIT)
    [erp_first] = tryton.invoices(f"{SOURCE}:{first['id']}")
    assert erp_first["state"] == "paid"
    assert receivable(tryton, account) == Decimal("-38.50") == billing_receivable(account["code"])

    # The one after takes what is left of the balance; the card pays the rest.
    applied, credit, second = rs.apply_credit(account, credit, invoice(), "38.50")
    recurly.put(credit, applied, second)
    notify(client, "charge_invoice", "created", second)
    notify(client, "credit_payment", "created", applied)
    posted(f"{purchase['id']}:{second['id']}", Operation.APPLY_CREDIT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert (erp_second["state"], erp_second["amount_to_pay"]) == ("posted", Decimal("23.00"))
    assert receivable(tryton, account) == Decimal("23.00") == billing_receivable(account["code"])

    card = rs.transaction(account, second, "23.00")
    paid = rs.settled(second, transactions=[card])
    recurly.put(card, paid)
    notify(client, "charge_invoice", "paid", paid)
    posted(f"{card['id']}:{second['id']}", Operation.APPLY_PAYMENT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert erp_second["state"] == "paid"
    assert receivable(tryton, account) == Decimal("0") == billing_receivable(account["code"])
