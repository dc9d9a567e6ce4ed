"""Signed Stripe webhooks through the real hub (inbox, a real Celery worker process, the ledger,
the planner, the executor) into QuickBooks Online, played by its contract simulator: the customer,
the invoice and its payment reach QuickBooks exactly once, through redeliveries and a create whose
answer was lost after QuickBooks committed it; a closed period parks the invoice for finance, and
the retry after the books reopen posts it once."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import pytest
from django.test import Client

from apps.connectors.quickbooks import doc_number
from apps.console.models import CaseStatus, ExceptionCase
from apps.ledger.models import Invoice
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState
from apps.posting.services import retry_posting
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver, wait_for
from tests.e2e.test_stripe_to_tryton import new_invoice, wait_posted
from tests.quickbooks_simulator import QuickBooksSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

CLEARING = "35"
MAPPINGS = {
    Mapping.KIND_ITEM: {"default": "1", "prod_usage_api_calls": "2"},
    # QuickBooks posts revenue to each item's income account; the hub still asks for the account.
    Mapping.KIND_REVENUE_ACCOUNT: {"default": "79", "prod_usage_api_calls": "80"},
    Mapping.KIND_TAX_CODE: {"default": "TAX"},
    Mapping.KIND_PAYMENT_JOURNAL: {"default": CLEARING},
    Mapping.KIND_WRITE_OFF_METHOD: {"default": "9"},
    Mapping.KIND_DISPUTE_ACCOUNT: {"default": "91"},
    Mapping.KIND_DISPUTE_LOSS_ACCOUNT: {"default": "92"},
}


@pytest.fixture
def qbo() -> Iterator[QuickBooksSimulator]:
    simulator = QuickBooksSimulator(hang_seconds=3.0)
    yield simulator
    simulator.stop()


def route_everything_to(connection: ERPConnection) -> None:
    """Send every document to ``connection`` (the example configuration routes them to Tryton)."""
    RoutingRule.objects.update(connection=connection)


@pytest.fixture
def qbo_connection(hub: object, qbo: QuickBooksSimulator) -> ERPConnection:
    # Literal test credentials: the worker process cannot see environment variables set now.
    connection = ERPConnection.objects.create(
        name="quickbooks-us", kind="quickbooks", settings=qbo.connector_settings(timeout=1.5)
    )
    for kind, values in MAPPINGS.items():
        for key, value in values.items():
            Mapping.objects.create(connection=connection, kind=kind, key=key, value=value)
    route_everything_to(connection)
    return connection


def test_a_stripe_invoice_and_its_payment_reach_quickbooks_once(
    client: Client, qbo: QuickBooksSimulator, qbo_connection: ERPConnection
) -> None:
    obj = new_invoice()
    finalized, paid = se.event("invoice.finalized", obj), se.event("invoice.paid", se.paid(obj))
    qbo.fail_next("ok", "timeout_after_commit")  # QuickBooks saves the invoice, the hub never hears back
    for event in (finalized, paid, finalized, paid):  # Stripe delivers each twice
        assert deliver(client, event).status_code == 200

    postings = wait_posted(obj["id"], timeout=180)

    assert {p.connection_id for p in postings.values()} == {qbo_connection.pk}
    invoice_posting = postings[Operation.POST_INVOICE]
    outcomes = list(invoice_posting.attempts.order_by("pk").values_list("outcome", flat=True))
    assert outcomes == [PostingAttempt.Outcome.UNCERTAIN, PostingAttempt.Outcome.FOUND]

    [customer] = qbo.documents("Customer")
    assert customer["DisplayName"] == f"ACME Corp [{SOURCE}/{obj['customer']}]"
    assert postings[Operation.ENSURE_CUSTOMER].erp_id == customer["Id"]

    [invoice] = qbo.documents("Invoice")
    assert invoice["DocNumber"] == doc_number(f"{SOURCE}:{obj['id']}") == invoice_posting.erp_number
    assert invoice["PrivateNote"].startswith(f"hub:{SOURCE}:{obj['id']} billing invoice ")
    assert (invoice["TotalAmt"], invoice["Balance"]) == (Decimal("61.50"), Decimal("0"))
    assert sorted(
        (line["SalesItemLineDetail"]["ItemRef"]["value"], line["Amount"])
        for line in invoice["Line"]
        if line["DetailType"] == "SalesItemLineDetail"
    ) == [("1", Decimal("49.00")), ("2", Decimal("12.50"))]
    assert invoice_posting.erp_id == invoice["Id"]

    [payment] = qbo.documents("Payment")
    payment_posting = postings[Operation.APPLY_PAYMENT]
    assert payment["PaymentRefNum"] == doc_number(payment_posting.external_ref) == payment_posting.erp_number
    assert payment["TotalAmt"] == Decimal("61.50") and payment["DepositToAccountRef"] == {"value": CLEARING}
    assert payment_posting.erp_id == payment["Id"]

    assert qbo.customer_balance(customer["Id"]) == Decimal("0")
    assert qbo.account_balance(CLEARING) == Decimal("61.50")
    assert [len(qbo.writes(entity)) for entity in ("customer", "invoice", "payment")] == [1, 1, 1]
    writes = [r for r in qbo.requests if r.method == "POST" and r.entity not in ("token", "query")]
    assert all(r.requestid and r.params["minorversion"] == "75" for r in writes)
    [invoice_write] = qbo.writes("invoice")
    assert invoice_write.headers["x-correlation-id"] == Invoice.objects.get(source_id=obj["id"]).correlation_id


def test_a_closed_period_parks_the_invoice_for_finance_and_the_retry_posts_it_once(
    client: Client, qbo: QuickBooksSimulator, qbo_connection: ERPConnection
) -> None:
    qbo.books_closed_through = date.today()
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))

    parked = wait_for(
        lambda: Posting.objects.filter(
            operation=Operation.POST_INVOICE, source_id=obj["id"], state=PostingState.PARKED
        ).first(),
        timeout=120,
        what="the invoice to be parked",
    )
    assert parked.error_code == "closed_period" and parked.error_category == "business"
    assert "books are closed" in parked.finance_message
    [case] = ExceptionCase.objects.filter(source_id=obj["id"], status=CaseStatus.OPEN)
    assert case.kind == "Closed period" and "account period has closed" in case.message
    assert qbo.documents("Invoice") == []

    qbo.books_closed_through = None  # the accountant reopens the period
    retry_posting(parked.pk, actor="finance.ops", reason="period reopened in QuickBooks")
    wait_for(lambda: Posting.objects.get(pk=parked.pk).state == PostingState.POSTED, timeout=120, what="posted")
    [invoice] = qbo.documents("Invoice")
    assert Posting.objects.get(pk=parked.pk).erp_id == invoice["Id"]
    sent = [r for r in qbo.requests if r.method == "POST" and r.entity == "invoice"]
    # The refusal, asked again under a fresh requestid; after the retry, QuickBooks' replay of its
    # first answer to the same requestid, then the present answer under a fresh one.
    assert [(r.fault_code, r.replayed) for r in sent] == [("6210", False), ("6210", False), ("6210", True), ("", False)]
