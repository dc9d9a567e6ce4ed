"""Backfill and cutover: the hub switched on mid-period imports Stripe's open invoices for a date
range from Stripe's API (the contract simulator), posts those the ERP does not hold, and records,
without posting again, the one an earlier integration already posted to Tryton."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from apps.connectors.documents import Address, CustomerDocument, InvoiceDocument, InvoiceLineDocument
from apps.connectors.registry import get_connector
from apps.ingest.models import InboxEvent
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from apps.sources.models import BillingSource
from tests.conftest import SOURCE
from tests.e2e.test_lifecycle import posted
from tests.stripe_simulator import StripeSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

DAY = 86400


@pytest.fixture
def stripe_api(hub: Any) -> Iterator[StripeSimulator]:
    simulator = StripeSimulator()
    BillingSource.objects.filter(name=SOURCE).update(
        api_settings={"api_key": "env:STRIPE_API_KEY", "base_url": simulator.url}
    )
    yield simulator
    simulator.stop()


def stripe_invoice(created: int, amount: int, *, paid: int = 0) -> dict[str, Any]:
    obj = se.invoice(se.uid("cus"), [se.line(amount)])
    obj["created"] = created
    if paid:
        obj["amount_paid"], obj["amount_remaining"] = paid, obj["total"] - paid
        obj["payments"] = {
            "object": "list",
            "data": [
                {
                    "object": "invoice_payment",
                    "amount_paid": paid,
                    "status": "paid",
                    "payment": {"type": "payment_intent", "payment_intent": se.uid("pi")},
                }
            ],
        }
    return obj


def posted_by_the_earlier_integration(obj: dict[str, Any]) -> str:
    """The invoice as the previous integration left it in Tryton: referenced by the bare Stripe id."""
    connector = get_connector("tryton", ERPConnection.objects.get(name="tryton-local").resolved_settings())
    party = connector.ensure_customer(
        CustomerDocument(
            external_ref=f"legacy:{obj['customer']}",
            name="ACME Corp (legacy)",
            bill_to=Address(line1="1 Main St", city="Springfield", postal_code="12345", country="US"),
        )
    )
    result = connector.post_invoice(
        InvoiceDocument(
            external_ref=obj["id"],
            number=obj["number"],
            customer_ref=f"legacy:{obj['customer']}",
            customer_erp_id=party.erp_id,
            currency="USD",
            invoice_date=date.today(),  # Tryton keeps invoice dates in sequence order: never before the last one
            due_date=None,
            lines=(InvoiceLineDocument("Pro plan", Decimal(1), obj["total"], obj["total"], "4000"),),
            subtotal_minor=obj["total"],
            tax_minor=0,
            total_minor=obj["total"],
        )
    )
    return result.erp_id


def run_backfill(*options: str) -> str:
    out = io.StringIO()
    since = (date.today() - timedelta(days=7)).isoformat()
    call_command("backfill", SOURCE, "--since", since, *options, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def test_a_cutover_posts_what_the_erp_lacks_and_records_what_it_holds(
    client: Client, tryton: Any, stripe_api: StripeSimulator
) -> None:
    now = int(time.time())
    legacy = stripe_invoice(now - 3 * DAY, 4900)
    fresh = stripe_invoice(now - 2 * DAY, 2500)
    partly_paid = stripe_invoice(now - 1 * DAY, 6000, paid=2000)
    too_old = stripe_invoice(now - 30 * DAY, 1000)
    for obj in (legacy, fresh, partly_paid, too_old):
        stripe_api.add_invoice(obj)
    legacy_erp_id = posted_by_the_earlier_integration(legacy)

    preview = run_backfill("--dry-run", "--erp-reference", "{id}")
    assert f"{legacy['id']}" in preview and f"already in the ERP (ERP id {legacy_erp_id})" in preview
    assert (
        sum(line.startswith("in_") and line.endswith("would post") for line in preview.splitlines()) == 2
        and too_old["id"] not in preview
    )
    assert "dry run, nothing changed: 3 open invoices" in preview
    assert not InboxEvent.objects.filter(source=SOURCE).exists()

    report = run_backfill("--erp-reference", "{id}")
    assert "3 open invoices: 1 already in the ERP, 2 posting" in report
    posted(fresh["id"], Operation.POST_INVOICE)
    payment = posted(
        f"{partly_paid['payments']['data'][0]['payment']['payment_intent']}:{partly_paid['id']}",
        Operation.APPLY_PAYMENT,
    )
    assert payment.erp_id
    adopted = Posting.objects.get(source_id=legacy["id"], operation=Operation.POST_INVOICE)
    assert (adopted.state, adopted.erp_id) == (PostingState.POSTED, legacy_erp_id)
    assert tryton.invoices(f"{SOURCE}:{legacy['id']}") == []  # not posted a second time
    assert len(tryton.invoices(legacy["id"])) == 1
    [erp_partly_paid] = tryton.invoices(f"{SOURCE}:{partly_paid['id']}")
    assert erp_partly_paid["amount_to_pay"] == Decimal("40.00")

    again = run_backfill("--erp-reference", "{id}")
    assert "3 open invoices: 3 already imported" in again
    assert InboxEvent.objects.filter(source=SOURCE).count() == 3
