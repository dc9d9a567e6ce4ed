"""Several Stripe accounts, one per subsidiary, each its own source with its own secret: the same
Stripe ids in two accounts are two documents, and each account's events reach its own ERP route."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.ledger.models import Customer, Invoice, LegalEntity
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, RoutingRule
from apps.sources import stripe_samples as se
from apps.sources.models import BillingSource
from tests.conftest import deliver, wait_for
from tests.e2e.test_lifecycle import posted

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

EU_SECRET = "whsec_test_eu_account"


@pytest.fixture
def eu_account(monkeypatch: pytest.MonkeyPatch) -> BillingSource:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_EU", EU_SECRET)
    entity = LegalEntity.objects.create(code="IE01", name="Hub Demo Ireland", country="IE", base_currency="EUR")
    RoutingRule.objects.create(
        priority=5, legal_entity=entity, connection=ERPConnection.objects.get(name="tryton-local")
    )
    return BillingSource.objects.create(
        name="stripe-ie", kind="stripe", legal_entity=entity, webhook_secrets=["env:STRIPE_WEBHOOK_SECRET_EU"]
    )


def test_the_same_ids_in_two_accounts_are_two_invoices_in_the_erp(
    client: Client, tryton: Any, eu_account: BillingSource
) -> None:
    obj = se.invoice(se.uid("cus"), [se.line(4900)])
    deliver(client, se.event("invoice.finalized", obj))
    eu_copy = {**obj, "number": "IE-0001"}  # another account can reuse the same ids
    assert (
        deliver(client, se.event("invoice.finalized", eu_copy), source="stripe-ie", secret=EU_SECRET).status_code == 200
    )

    us = posted(obj["id"], Operation.POST_INVOICE)
    ie = wait_for_other(obj["id"], us.pk)
    assert {us.source, ie.source} == {"stripe-us", "stripe-ie"}
    [us_invoice] = tryton.invoices(f"stripe-us:{obj['id']}")
    [ie_invoice] = tryton.invoices(f"stripe-ie:{obj['id']}")
    assert us_invoice["id"] != ie_invoice["id"]
    assert tryton.receivable(f"stripe-us:{obj['customer']}") == Decimal("49.00")
    assert tryton.receivable(f"stripe-ie:{obj['customer']}") == Decimal("49.00")
    legal_entities = dict(Invoice.objects.filter(source_id=obj["id"]).values_list("source", "legal_entity__code"))
    assert legal_entities == {"stripe-us": "US01", "stripe-ie": "IE01"}


def test_each_account_accepts_only_its_own_secret(client: Client, eu_account: BillingSource) -> None:
    event = se.event("customer.created", se.customer())
    refused = deliver(client, event, source="stripe-ie")  # signed with the US account's secret
    assert refused.status_code == 400 and "Signature verification failed" in refused.json()["error"]
    assert deliver(client, event, source="stripe-ie", secret=EU_SECRET).status_code == 200
    customer = wait_for(
        lambda: Customer.objects.filter(source_id=event["data"]["object"]["id"]).first(),
        what="the customer in the ledger",
    )
    assert (customer.source, customer.legal_entity.code) == ("stripe-ie", "IE01")


def wait_for_other(source_id: str, exclude: int) -> Posting:
    return wait_for(
        lambda: (
            Posting.objects.filter(source_id=source_id, operation=Operation.POST_INVOICE, state=PostingState.POSTED)
            .exclude(pk=exclude)
            .first()
        ),
        timeout=120,
        what="the second account's invoice to be posted",
    )
