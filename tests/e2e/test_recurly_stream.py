"""A Recurly stream (signed JSON notifications that only name the object, read back through a
contract simulator of Recurly's API v3) into the real Tryton: the same receivable as from Stripe."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.posting.models import Operation
from apps.sources import recurly_samples as rs
from apps.sources.models import BillingSource
from tests.e2e.test_lifecycle import billing_receivable, posted
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


def notify(client: Client, object_type: str, event_type: str, obj: dict[str, Any]) -> None:
    payload = rs.body(rs.notification(object_type, event_type, obj))
    response = client.post(
        f"/webhooks/{SOURCE}/",
        data=payload,
        content_type="application/json",
        HTTP_RECURLY_SIGNATURE=rs.sign(payload, KEY),
    )
    assert response.status_code == 200, response.content


def test_invoice_then_payment_settles_it(client: Client, tryton: Any, recurly: RecurlySimulator) -> None:
    account = rs.account()
    invoice = rs.charge_invoice(
        account,
        [
            rs.line_item("49.00", tax_rate="0", description="Pro plan (monthly)", plan_code="pro"),
            rs.line_item("2.50", quantity=5, tax_rate="0", description="API calls", add_on_code="api_calls"),
        ],
    )
    recurly.put(account, invoice)
    notify(client, "account", "created", account)
    notify(client, "charge_invoice", "created", invoice)
    posted(invoice["id"], Operation.POST_INVOICE)
    customer_ref = f"{SOURCE}:{account['code']}"
    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert erp_invoice["total_amount"] == Decimal("61.50")
    assert tryton.receivable(customer_ref) == Decimal("61.50") == billing_receivable(account["code"])

    txn = rs.transaction(account, invoice, "61.50")
    later = rs.timestamp(datetime.now(UTC) + timedelta(seconds=5))
    paid = {**invoice, "state": "paid", "paid": Decimal("61.50"), "balance": Decimal("0"), "updated_at": later}
    recurly.put(txn, paid)
    notify(client, "payment", "succeeded", txn)
    notify(client, "charge_invoice", "paid", paid)
    posted(f"{txn['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert erp_invoice["state"] == "paid"
    assert tryton.receivable(customer_ref) == Decimal("0") == billing_receivable(account["code"])
