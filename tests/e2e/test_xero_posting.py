"""Signed Stripe webhooks through the real hub (inbox, a real Celery worker process, the ledger,
the planner, the executor) into Xero, played by the Xero contract simulator: the customer, the
invoice and its payment reach Xero exactly once, through redeliveries and a write whose answer
was lost after Xero saved it."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.test import Client

from apps.posting.models import Operation, PostingAttempt, PostingState
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver
from tests.e2e.test_stripe_to_tryton import new_invoice, wait_posted
from tests.xero_simulator import XeroSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

MAPPINGS = {
    Mapping.KIND_REVENUE_ACCOUNT: {"default": "200", "prod_usage_api_calls": "210"},
    Mapping.KIND_TAX_CODE: {"default": "OUTPUT2"},
    Mapping.KIND_PAYMENT_JOURNAL: {"default": "091"},
    Mapping.KIND_WRITE_OFF_METHOD: {"default": "684"},
    Mapping.KIND_DISPUTE_ACCOUNT: {"default": "1190"},
    Mapping.KIND_DISPUTE_LOSS_ACCOUNT: {"default": "6810"},
}


@pytest.fixture
def xero() -> Iterator[XeroSimulator]:
    simulator = XeroSimulator(hang_seconds=3.0)
    yield simulator
    simulator.stop()


def route_everything_to(connection: ERPConnection) -> None:
    """Send every legal entity's documents to ``connection`` (the example configuration routes
    them to Tryton)."""
    RoutingRule.objects.update(connection=connection)


@pytest.fixture
def xero_connection(hub: object, xero: XeroSimulator) -> ERPConnection:
    connection = ERPConnection.objects.create(name="xero-us", kind="xero", settings=xero.settings(timeout=1.5))
    for kind, values in MAPPINGS.items():
        for key, value in values.items():
            Mapping.objects.create(connection=connection, kind=kind, key=key, value=value)
    route_everything_to(connection)
    return connection


def test_a_stripe_invoice_and_its_payment_reach_xero_once(
    client: Client, xero: XeroSimulator, xero_connection: ERPConnection
) -> None:
    obj = new_invoice()
    finalized, paid = se.event("invoice.finalized", obj), se.event("invoice.paid", se.paid(obj))
    xero.fail_next("timeout_after_commit")  # Xero saves the contact, the hub never hears back
    for event in (finalized, paid, finalized, paid):  # Stripe delivers each twice
        assert deliver(client, event).status_code == 200

    postings = wait_posted(obj["id"], timeout=180)

    assert {p.connection_id for p in postings.values()} == {xero_connection.pk}
    customer_posting = postings[Operation.ENSURE_CUSTOMER]
    outcomes = list(customer_posting.attempts.order_by("pk").values_list("outcome", flat=True))
    assert outcomes == [PostingAttempt.Outcome.UNCERTAIN, PostingAttempt.Outcome.FOUND]

    [contact] = xero.contacts.values()
    assert contact["ContactNumber"] == f"{SOURCE}:{obj['customer']}" and contact["Name"] == "ACME Corp"
    assert customer_posting.erp_id == contact["ContactID"]

    [invoice] = xero.by_reference(xero.invoices, f"{SOURCE}:{obj['id']}")
    assert (invoice["Status"], invoice["Total"], invoice["AmountDue"]) == ("PAID", Decimal("61.50"), Decimal("0"))
    assert sorted((line["AccountCode"], line["LineAmount"]) for line in invoice["LineItems"]) == [
        ("200", Decimal("49.00")),
        ("210", Decimal("12.50")),
    ]
    assert postings[Operation.POST_INVOICE].erp_id == invoice["InvoiceID"]
    assert postings[Operation.POST_INVOICE].erp_number == invoice["InvoiceNumber"]

    [payment] = xero.payments.values()
    assert payment["Amount"] == Decimal("61.50") and payment["Account"]["Code"] == "091"
    assert postings[Operation.APPLY_PAYMENT].erp_id == payment["PaymentID"]
    assert payment["Reference"] == postings[Operation.APPLY_PAYMENT].external_ref

    assert xero.receivable(contact["ContactID"]) == Decimal("0")
    assert xero.account_balance("091") == Decimal("61.50")
    writes = xero.writes()
    assert all(r.idempotency_key for r in writes)
    assert [r.path for r in writes if r.applied] == [
        "Contacts",
        "Invoices",
        f"Invoices/{invoice['InvoiceID']}",
        "Payments",
    ]  # each document written once
    assert all(p.state == PostingState.POSTED for p in postings.values())
