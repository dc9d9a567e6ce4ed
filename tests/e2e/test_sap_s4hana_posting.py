"""Signed Stripe webhooks through the real hub (inbox, a real Celery worker process, the ledger,
postings) into SAP S/4HANA Cloud, played by its contract simulator: the customer becomes one
business partner in the legal entity's company code, the invoice and its payment become one journal
entry each, and an answer lost after SAP posted the invoice makes no second entry."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.connectors.sap_s4hana import reference_key
from apps.posting.models import Operation, PostingAttempt
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver
from tests.e2e.test_stripe_to_tryton import wait_posted
from tests.sap_simulator import SapSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

MAPPINGS = [
    ("company", "US01", "1710"),  # the legal entity's SAP company code
    (Mapping.KIND_REVENUE_ACCOUNT, "default", "41000000"),
    (Mapping.KIND_REVENUE_ACCOUNT, "prod_usage_api_calls", "41000100"),
    (Mapping.KIND_TAX_CODE, "default", "O1"),
    (Mapping.KIND_PAYMENT_JOURNAL, "default", "11001000"),
]


def route_everything_to(connection: ERPConnection) -> None:
    """Send every document to ``connection`` (the example configuration routes to Tryton)."""
    RoutingRule.objects.update(connection=connection)


@pytest.fixture
def sap() -> Iterator[SapSimulator]:
    simulator = SapSimulator(hang_seconds=5)
    yield simulator
    simulator.stop()


@pytest.fixture
def connection(hub: Any, sap: SapSimulator) -> ERPConnection:
    # The worker process reads the settings from the database; the simulator's password is a test one.
    connection = ERPConnection.objects.create(
        name="sap-s4hana-cloud", kind="sap_s4hana", settings=sap.settings(timeout=2)
    )
    for kind, key, value in MAPPINGS:
        Mapping.objects.create(connection=connection, kind=kind, key=key, value=value)
    route_everything_to(connection)
    return connection


def taxed_invoice() -> dict[str, Any]:
    return se.invoice(
        se.uid("cus"),
        [
            se.line(4900, description="Pro plan (monthly)"),
            se.line(
                1250, quantity=5, description="API calls", product="prod_usage_api_calls", price="price_api", tax=250
            ),
        ],
    )


def test_customer_invoice_and_payment_reach_sap_once_as_a_business_partner_and_journal_entries(
    client: Client, sap: SapSimulator, connection: ERPConnection
) -> None:
    obj = taxed_invoice()
    for event in (se.event("invoice.finalized", obj), se.event("invoice.paid", se.paid(obj))):
        assert deliver(client, event).status_code == 200
        assert deliver(client, event).status_code == 200  # every event delivered twice

    postings = wait_posted(obj["id"])

    assert {p.connection_id for p in postings.values()} == {connection.pk}
    [partner] = sap.partners_with_reference(reference_key(f"{SOURCE}:{obj['customer']}", 20))
    assert (partner["OrganizationBPName1"], set(partner["companies"]), set(partner["roles"])) == (
        "ACME Corp",
        {"1710"},
        {"FLCU00", "FLCU01"},
    )
    assert postings[Operation.ENSURE_CUSTOMER].erp_id == partner["Customer"]

    [invoice] = sap.entries_with_reference(reference_key(f"{SOURCE}:{obj['id']}"))
    assert postings[Operation.POST_INVOICE].erp_id == invoice.key
    assert postings[Operation.POST_INVOICE].erp_number == invoice.document
    assert (invoice.document_type, invoice.company_code, invoice.currency) == ("DR", "1710", "USD")
    items = sorted(
        (row["FinancialAccountType"], row["GLAccount"], row["AmountInTransactionCurrency"]) for row in invoice.rows
    )
    assert items == [
        ("D", "12100000", "64.00"),
        ("S", "22000000", "-2.50"),
        ("S", "41000000", "-49.00"),
        ("S", "41000100", "-12.50"),
    ]

    [payment] = [entry for entry in sap.entries if entry.document_type == "DZ"]
    assert postings[Operation.APPLY_PAYMENT].erp_id == payment.key
    assert sap.account_balance("11001000") == Decimal("64.00")
    assert sap.customer_balance(partner["Customer"]) == Decimal("0.00")  # billing says: paid
    assert len(sap.entries) == 2
    assert len([r for r in sap.soap_posts() if r.committed]) == 2  # posted once, whatever was delivered twice
    assert len([r for r in sap.odata_writes("A_BusinessPartner") if r.committed]) == 1


def test_an_invoice_sap_posted_before_the_answer_was_lost_is_found_not_posted_again(
    client: Client, sap: SapSimulator, connection: ERPConnection
) -> None:
    sap.fail_next("timeout_after_commit", on="soap")  # posted, answered after the hub's 2 s timeout
    obj = taxed_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("invoice.paid", se.paid(obj)))

    postings = wait_posted(obj["id"])

    invoice_posting = postings[Operation.POST_INVOICE]
    outcomes = list(invoice_posting.attempts.order_by("id").values_list("outcome", flat=True))
    assert outcomes[0] == PostingAttempt.Outcome.UNCERTAIN and outcomes[-1] == PostingAttempt.Outcome.FOUND
    [invoice] = sap.entries_with_reference(reference_key(f"{SOURCE}:{obj['id']}"))
    assert invoice_posting.erp_id == invoice.key
    assert len([r for r in sap.soap_posts() if r.committed]) == 2  # the invoice once, the payment once
    customer = postings[Operation.ENSURE_CUSTOMER].erp_id
    assert sap.customer_balance(customer) == Decimal("0.00")
