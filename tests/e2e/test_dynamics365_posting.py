"""Stripe into Dynamics 365 Finance, end to end: signed webhooks → inbox → the real Celery worker
process → ledger → postings → the D365 contract simulator (Entra ID token, OData data entities),
on the real PostgreSQL and Redis. The customer, the invoice and its payment reach D365 once, in the
legal entity the company mapping names, also when D365's answer to the posting is lost."""

from __future__ import annotations

import os
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.connectors.dynamics365 import customer_account, natural_key
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver, wait_for
from tests.dynamics365_simulator import CLIENT_SECRET, Dynamics365Simulator
from tests.e2e.test_stripe_to_tryton import wait_posted

# The worker process reads the secret through the connection's env: reference; it is started after
# the tests are collected, so it inherits this.
os.environ.setdefault("D365_CLIENT_SECRET", CLIENT_SECRET)

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


@pytest.fixture
def d365() -> Iterator[Dynamics365Simulator]:
    simulator = Dynamics365Simulator(hang_seconds=2.5)
    yield simulator
    simulator.stop()


def route_to(connection: ERPConnection) -> None:
    """Every document the example configuration routes goes to ``connection`` instead."""
    RoutingRule.objects.update(connection=connection)


@pytest.fixture
def d365_connection(hub: Any, d365: Dynamics365Simulator) -> ERPConnection:
    connection = ERPConnection.objects.create(
        name="d365-usmf",
        kind="dynamics365",
        settings={**d365.settings(timeout=1), "client_secret": "env:D365_CLIENT_SECRET"},
    )
    for kind, key, value in [
        ("company", "US01", "usmf"),
        ("revenue_account", "default", "401100"),
        ("revenue_account", "prod_usage_api_calls", "401200"),
        ("tax_code", "default", "VAT/STD"),
        ("payment_journal", "default", "USMF CARD"),
        ("business_unit", "US", "001"),
        ("department", "default", "022"),
    ]:
        Mapping.objects.create(connection=connection, kind=kind, key=key, value=value)
    route_to(connection)
    return connection


def taxed_invoice() -> dict[str, Any]:
    return se.invoice(
        se.uid("cus"),
        [
            se.line(4900, description="Pro plan (monthly)", tax=980),
            se.line(
                1250, quantity=5, description="API calls", product="prod_usage_api_calls", price="price_api", tax=250
            ),
        ],
    )


def test_a_paid_stripe_invoice_reaches_dynamics365_once_settled_in_its_legal_entity(
    client: Client, d365: Dynamics365Simulator, d365_connection: ERPConnection
) -> None:
    obj = taxed_invoice()
    finalized, paid = se.event("invoice.finalized", obj), se.event("invoice.paid", se.paid(obj))
    for event in (finalized, paid, finalized, paid):  # Stripe delivers twice: still one of each
        assert deliver(client, event).status_code == 200

    postings = wait_posted(obj["id"])

    account = customer_account(f"{SOURCE}:{obj['customer']}")
    [customer] = d365.customers("usmf")
    assert (customer["CustomerAccount"], customer["OrganizationName"]) == (account, "ACME Corp")
    [invoice] = d365.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["dataAreaId"] == "usmf" and invoice["IsPosted"] == "Yes"
    assert invoice["total"] == Decimal("73.80")  # 49.00 + 12.50 and 20 % VAT, as billing charged
    assert invoice["DefaultDimensionDisplayValue"] == "001--022"
    assert [(ln["MainAccountDisplayValue"], ln["TransactionCurrencyAmount"]) for ln in invoice["lines"]] == [
        ("401100", Decimal("49.00")),
        ("401200", Decimal("12.50")),
    ]
    [journal] = d365.journals()
    [payment_line] = journal["lines"]
    assert journal["IsPosted"] == "Yes"
    assert (payment_line["CreditAmount"], payment_line["MarkedInvoice"], payment_line["OffsetAccountDisplayValue"]) == (
        Decimal("73.80"),
        invoice["InvoiceId"],
        "USMF CARD",
    )
    assert d365.customer_balance("usmf", account) == Decimal("0.00")
    assert d365.invoice_open("usmf", invoice["InvoiceId"]) == Decimal("0.00")

    assert postings[Operation.ENSURE_CUSTOMER].erp_id == account
    assert postings[Operation.POST_INVOICE].erp_id == str(invoice["InvoiceIdentifier"])
    assert postings[Operation.POST_INVOICE].erp_number == invoice["InvoiceId"]
    assert postings[Operation.APPLY_PAYMENT].erp_id == journal["JournalBatchNumber"]
    assert journal["Description"] == natural_key(postings[Operation.APPLY_PAYMENT].external_ref)
    # Each document was created once; each of the worker's two processes signed in at most once.
    assert [len(d365.writes(name)) for name in ("CustomersV3", "FreeTextInvoiceHeaders")] == [1, 1]
    assert len(d365.writes("CustomerPaymentJournalHeaders")) == 1
    assert 1 <= len(d365.token_requests) <= 2
    assert all(r.query.get("cross-company") == "true" for r in d365.requests if r.method == "GET")


def test_an_answer_lost_after_dynamics365_posted_the_invoice_is_found_not_posted_again(
    client: Client, d365: Dynamics365Simulator, d365_connection: ERPConnection
) -> None:
    obj = taxed_invoice()
    d365.fail_next("timeout_after_commit", on="PostInvoice")  # D365 posts it; the answer comes too late
    deliver(client, se.event("invoice.finalized", obj))

    posting = wait_for(
        lambda: Posting.objects.filter(
            operation=Operation.POST_INVOICE, source_id=obj["id"], state=PostingState.POSTED
        ).first(),
        timeout=120,
        what="the invoice posting",
    )

    outcomes = list(posting.attempts.order_by("id").values_list("outcome", flat=True))
    assert outcomes[0] == PostingAttempt.Outcome.UNCERTAIN
    assert outcomes[-1] == PostingAttempt.Outcome.FOUND
    [invoice] = d365.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["IsPosted"] == "Yes" and posting.erp_id == str(invoice["InvoiceIdentifier"])
    assert posting.erp_number == invoice["InvoiceId"]
    assert len([r for r in d365.requests if r.path.endswith("PostInvoice")]) == 1  # never sent twice
    assert len(d365.writes("FreeTextInvoiceHeaders")) == 1
    account = customer_account(f"{SOURCE}:{obj['customer']}")
    assert d365.customer_balance("usmf", account) == Decimal("73.80")
