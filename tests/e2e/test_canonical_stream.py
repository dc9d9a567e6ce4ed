"""The lifecycle worked examples again, sent through the canonical events API instead of Stripe
webhooks: the real Tryton must end with the same documents and the same receivable."""

from __future__ import annotations

import os
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.connectors.registry import get_connector
from apps.posting.models import Operation, Posting
from apps.routing.models import ERPConnection
from apps.sources import canonical_samples as cs
from tests.e2e.test_lifecycle import billing_receivable, posted

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

SOURCE = "billing-api"
SECRET = os.environ["HUB_CANONICAL_API_SECRET"]


def send(client: Client, kind: str, data: dict[str, Any], *, key: str | None = None) -> None:
    body = cs.body(kind, data)
    key = key or f"{data['id']}-{data['revision']}"
    response = client.post(
        f"/api/v1/sources/{SOURCE}/events/",
        data=body,
        content_type="application/json",
        HTTP_IDEMPOTENCY_KEY=key,
        HTTP_X_HUB_SIGNATURE=cs.headers(body, SECRET, key)["X-Hub-Signature"],
    )
    assert response.status_code == 202, response.content


def new_invoice() -> dict[str, Any]:
    return cs.invoice(
        cs.uid("cus"),
        [
            cs.line(4900, description="Pro plan (monthly)"),
            cs.line(1250, quantity=5, description="API calls", product="prod_usage_api_calls", price="price_api"),
        ],
    )


def test_invoice_then_two_partial_payments_settle_it(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    send(client, "invoice", obj)
    send(client, "invoice", obj)  # a retry under the same key: still one invoice
    posted(obj["id"], Operation.POST_INVOICE)
    customer_id = obj["customer"]["id"]
    customer_ref = f"{SOURCE}:{customer_id}"
    [party] = tryton.parties(customer_ref)
    assert party["name"] == "ACME Corp"
    lines = sorted(
        (line["amount"], line["account_code"])
        for line in tryton.invoice_lines(tryton.invoices(f"{SOURCE}:{obj['id']}")[0]["id"])
    )
    assert lines == [(Decimal("12.50"), "4100"), (Decimal("49.00"), "4000")]
    assert tryton.receivable(customer_ref) == Decimal("61.50") == billing_receivable(customer_id)

    first = cs.payment(customer_id, [(obj["id"], 2000)])
    send(client, "payment", first)
    posted(f"{first['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    assert tryton.receivable(customer_ref) == Decimal("41.50")

    second = cs.payment(customer_id, [(obj["id"], 4150)])
    send(client, "payment", second)
    send(client, "invoice", cs.changed(obj, status="paid", amount_paid_minor=6150))
    posted(f"{second['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert (invoice["state"], invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(customer_id)


def test_paid_invoice_then_credit_memo_refunded_pays_the_customer_back(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    send(client, "invoice", obj)
    pay = cs.payment(obj["customer"]["id"], [(obj["id"], 6150)])
    send(client, "payment", pay)
    send(client, "invoice", cs.changed(obj, status="paid", amount_paid_minor=6150))
    memo = cs.credit_memo(obj, [(1, 1250)], refunded=1250)
    send(client, "credit_memo", memo)
    refund = posted(f"{memo['id']}:refund", Operation.REFUND_CREDIT_MEMO)

    credit = Posting.objects.get(source_id=memo["id"], operation=Operation.POST_CREDIT_MEMO)
    assert refund.depends_on_key == credit.idempotency_key
    [credit_note] = tryton.invoices(f"{SOURCE}:{memo['id']}")
    assert (credit_note["state"], credit_note["total_amount"]) == ("paid", Decimal("-12.50"))
    assert tryton.receivable(f"{SOURCE}:{obj['customer']['id']}") == Decimal("0")


def test_invoice_then_void_cancels_it_in_tryton(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    send(client, "invoice", obj)
    posted(obj["id"], Operation.POST_INVOICE)
    send(client, "invoice", cs.voided(obj))
    posted(f"{obj['id']}:void", Operation.VOID_INVOICE)

    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "cancelled"
    customer_id = obj["customer"]["id"]
    assert tryton.receivable(f"{SOURCE}:{customer_id}") == Decimal("0") == billing_receivable(customer_id)


def test_invoice_partly_paid_then_uncollectible_writes_off_the_rest(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    send(client, "invoice", obj)
    first = cs.payment(obj["customer"]["id"], [(obj["id"], 2000)])
    send(client, "payment", first)
    posted(f"{first['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    bad_debts_before = tryton.account_balance("6800")

    send(client, "invoice", cs.uncollectible(obj, amount_paid=2000))
    posted(f"{obj['id']}:write-off", Operation.WRITE_OFF)

    assert tryton.account_balance("6800") - bad_debts_before == Decimal("41.50")
    customer_id = obj["customer"]["id"]
    assert tryton.receivable(f"{SOURCE}:{customer_id}") == Decimal("0") == billing_receivable(customer_id)


def test_over_payment_stays_as_credit_and_settles_the_next_invoice(client: Client, tryton: Any) -> None:
    first = new_invoice()
    customer_id = first["customer"]["id"]
    customer_ref = f"{SOURCE}:{customer_id}"
    send(client, "invoice", first)
    overpaid = cs.payment(customer_id, [(first["id"], 6150)], amount=10000)  # 38.50 more than owed
    send(client, "payment", overpaid)
    send(client, "invoice", cs.changed(first, status="paid", amount_paid_minor=6150))
    posted(f"{overpaid['id']}:{first['id']}", Operation.APPLY_PAYMENT)
    credit = posted(f"{overpaid['id']}:on-account", Operation.RECEIVE_ON_ACCOUNT)
    [move] = tryton.moves(f"{SOURCE}:{overpaid['id']}:on-account")
    assert move["state"] == "posted" and credit.erp_id == str(move["id"])
    assert tryton.receivable(customer_ref) == Decimal("-38.50") == billing_receivable(customer_id)

    second = cs.invoice(customer_id, [cs.line(4900, description="Pro plan (monthly)"), cs.line(1250)])
    send(client, "invoice", second)
    posted(second["id"], Operation.POST_INVOICE)
    assert tryton.receivable(customer_ref) == Decimal("23.00")
    # Billing applies the credit to the next invoice: the same payment, one more application.
    applied = cs.changed(
        overpaid, applications=[*overpaid["applications"], {"invoice_id": second["id"], "amount_minor": 3850}]
    )
    send(client, "payment", applied)
    send(client, "invoice", cs.changed(second, amount_paid_minor=3850))
    posted(f"{overpaid['id']}:{second['id']}", Operation.APPLY_CREDIT)

    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert (erp_second["state"], erp_second["amount_to_pay"]) == ("posted", Decimal("23.00"))
    # What a retry after an unanswered call would look up first: both are found, so neither is sent again.
    connector = get_connector("tryton", ERPConnection.objects.get(name="tryton-local").resolved_settings())
    assert connector.find_document(Operation.APPLY_CREDIT, f"{SOURCE}:{overpaid['id']}:{second['id']}")
    found = connector.find_document(Operation.RECEIVE_ON_ACCOUNT, f"{SOURCE}:{overpaid['id']}:on-account")
    assert found is not None and found.erp_id == credit.erp_id
    assert tryton.receivable(customer_ref) == Decimal("23.00") == billing_receivable(customer_id)

    rest = cs.payment(customer_id, [(second["id"], 2300)])
    send(client, "payment", rest)
    send(client, "invoice", cs.changed(second, status="paid", amount_paid_minor=6150))
    posted(f"{rest['id']}:{second['id']}", Operation.APPLY_PAYMENT)
    [erp_second] = tryton.invoices(f"{SOURCE}:{second['id']}")
    assert erp_second["state"] == "paid"
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(customer_id)


def test_payment_then_dispute_lost_moves_the_money_to_dispute_losses(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    customer_id = obj["customer"]["id"]
    send(client, "invoice", obj)
    pay = cs.payment(customer_id, [(obj["id"], 6150)])
    send(client, "payment", pay)
    send(client, "invoice", cs.changed(obj, status="paid", amount_paid_minor=6150))
    posted(f"{pay['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    before = {code: tryton.account_balance(code) for code in ("1150", "1190", "6810")}

    dispute = {
        "id": cs.uid("dp"),
        "revision": cs.revision(),
        "payment_id": pay["id"],
        "currency": "USD",
        "amount_minor": 6150,
        "status": "open",
        "reason": "fraudulent",
        "opened_on": obj["invoice_date"],
    }
    send(client, "dispute", dispute)
    send(client, "dispute", cs.changed(dispute, status="lost", closed_on=obj["invoice_date"]))
    posted(f"{dispute['id']}:lost", Operation.LOSE_DISPUTE)

    after = {code: tryton.account_balance(code) for code in ("1150", "1190", "6810")}
    assert after["1150"] - before["1150"] == Decimal("-61.50")
    assert after["1190"] == before["1190"]
    assert after["6810"] - before["6810"] == Decimal("61.50")
    assert tryton.receivable(f"{SOURCE}:{customer_id}") == Decimal("0") == billing_receivable(customer_id)


def test_an_amended_invoice_replaces_the_posted_version_in_tryton(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    customer_id = obj["customer"]["id"]
    send(client, "invoice", obj)
    first = posted(obj["id"], Operation.POST_INVOICE)

    extra = cs.line(1000, description="Onboarding")
    amended = cs.changed(
        obj, lines=[*obj["lines"], extra], subtotal_minor=7150, total_minor=7150
    )  # billing added a line after the invoice was posted
    send(client, "invoice", amended)
    second = posted(f"{obj['id']}#r2", Operation.POST_INVOICE)
    void = Posting.objects.get(source_id=f"{obj['id']}:void", operation=Operation.VOID_INVOICE)

    assert (void.depends_on_key, second.depends_on_key) == (first.idempotency_key, void.idempotency_key)
    [old] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    [new] = tryton.invoices(f"{SOURCE}:{obj['id']}#r2")
    assert (old["state"], new["state"], new["total_amount"]) == ("cancelled", "posted", Decimal("71.50"))
    assert tryton.receivable(f"{SOURCE}:{customer_id}") == Decimal("71.50") == billing_receivable(customer_id)

    pay = cs.payment(customer_id, [(obj["id"], 7150)])
    send(client, "payment", pay)
    send(client, "invoice", cs.changed(amended, status="paid", amount_paid_minor=7150))
    posted(f"{pay['id']}:{obj['id']}", Operation.APPLY_PAYMENT)  # applied to the version the ERP now holds
    [new] = tryton.invoices(f"{SOURCE}:{obj['id']}#r2")
    assert new["state"] == "paid"
    assert tryton.receivable(f"{SOURCE}:{customer_id}") == Decimal("0") == billing_receivable(customer_id)


def test_payment_then_dispute_won_reinstates_the_funds(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    customer_id = obj["customer"]["id"]
    send(client, "invoice", obj)
    pay = cs.payment(customer_id, [(obj["id"], 6150)])
    send(client, "payment", pay)
    send(client, "invoice", cs.changed(obj, status="paid", amount_paid_minor=6150))
    posted(f"{pay['id']}:{obj['id']}", Operation.APPLY_PAYMENT)
    dispute = {
        "id": cs.uid("dp"),
        "revision": cs.revision(),
        "payment_id": pay["id"],
        "currency": "USD",
        "amount_minor": 6150,
        "status": "open",
        "reason": "product_not_received",
        "opened_on": obj["invoice_date"],
    }
    send(client, "dispute", dispute)
    posted(f"{dispute['id']}:withdrawn", Operation.WITHDRAW_DISPUTED_FUNDS)
    before = {code: tryton.account_balance(code) for code in ("1150", "1190", "6810")}

    send(client, "dispute", cs.changed(dispute, status="won", closed_on=obj["invoice_date"]))
    posted(f"{dispute['id']}:reinstated", Operation.REINSTATE_DISPUTED_FUNDS)

    after = {code: tryton.account_balance(code) for code in ("1150", "1190", "6810")}
    assert after["1150"] - before["1150"] == Decimal("61.50")
    assert after["1190"] - before["1190"] == Decimal("-61.50")
    assert after["6810"] == before["6810"]
    assert not Posting.objects.filter(source_id=f"{dispute['id']}:lost").exists()
    assert tryton.receivable(f"{SOURCE}:{customer_id}") == Decimal("0") == billing_receivable(customer_id)
