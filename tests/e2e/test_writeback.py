"""Writeback to Stripe: once Tryton holds the invoice (or a payment on it), Stripe's invoice
metadata names the ERP document and its status, written exactly once through retries, timeouts
after commit included (the contract simulator counts what Stripe applied)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.posting.models import Operation, Posting, PostingAttempt, PostingState
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from apps.sources.models import BillingSource
from tests.conftest import SOURCE, deliver, wait_for
from tests.e2e.test_lifecycle import posted
from tests.e2e.test_stripe_to_tryton import new_invoice
from tests.stripe_simulator import StripeSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


@pytest.fixture
def stripe_api() -> Iterator[StripeSimulator]:
    simulator = StripeSimulator(hang_seconds=2.5)
    yield simulator
    simulator.stop()


@pytest.fixture
def writeback(hub: Any, stripe_api: StripeSimulator) -> ERPConnection:
    connection = ERPConnection.objects.create(
        name="stripe-us-writeback",
        kind="stripe",
        settings={"api_key": "env:STRIPE_API_KEY", "api_base": stripe_api.url, "timeout": 1},
    )
    BillingSource.objects.filter(name=SOURCE).update(writeback_connection=connection)
    return connection


def test_stripe_learns_the_erp_invoice_once_through_a_5xx_and_a_timeout_after_commit(
    client: Client, tryton: Any, stripe_api: StripeSimulator, writeback: ERPConnection
) -> None:
    obj = new_invoice()
    stripe_api.add_invoice(obj["id"])
    stripe_api.fail_next("500", "timeout_after_commit")
    deliver(client, se.event("invoice.finalized", obj))

    invoice_posting = posted(obj["id"], Operation.POST_INVOICE)
    written = posted(f"{obj['id']}:writeback:{invoice_posting.idempotency_key[:16]}", Operation.WRITE_BACK)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    metadata = stripe_api.invoices[obj["id"]]["metadata"]
    assert metadata["tryton-local_erp_id"] == invoice_posting.erp_id == str(erp_invoice["id"])
    assert metadata["tryton-local_erp_number"] == erp_invoice["number"]
    assert metadata["tryton-local_erp_status"] == "posted"
    writes = [r for r in stripe_api.requests if r.method == "POST"]
    assert [(r.status, r.applied, r.replayed) for r in writes] == [
        (500, False, False),
        (200, True, False),
        (200, False, True),
    ]
    assert {r.idempotency_key for r in writes} == {written.idempotency_key}  # one key through every retry
    assert len(stripe_api.applied(obj["id"])) == 1
    assert PostingAttempt.objects.filter(posting=written).count() == 3


def test_a_payment_applied_in_the_erp_is_written_back_too(
    client: Client, tryton: Any, stripe_api: StripeSimulator, writeback: ERPConnection
) -> None:
    obj = new_invoice()
    stripe_api.add_invoice(obj["id"])
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("invoice.paid", se.paid(obj)))
    payment = wait_for(
        lambda: Posting.objects.filter(
            operation=Operation.APPLY_PAYMENT,
            payment_application__invoice__source_id=obj["id"],
            state=PostingState.POSTED,
        ).first(),
        timeout=120,
        what="the payment to be posted",
    )
    posted(f"{obj['id']}:writeback:{payment.idempotency_key[:16]}", Operation.WRITE_BACK)

    metadata = stripe_api.invoices[obj["id"]]["metadata"]
    assert metadata["tryton-local_erp_payment_id"] == payment.erp_id
    assert metadata["tryton-local_erp_status"] in ("posted", "payment applied")  # both writebacks, any order
    assert len(stripe_api.applied(obj["id"])) == 2


def test_an_invoice_stripe_does_not_know_is_parked_for_finance(
    client: Client, tryton: Any, stripe_api: StripeSimulator, writeback: ERPConnection
) -> None:
    obj = new_invoice()  # never added to the simulator: Stripe answers 404
    deliver(client, se.event("invoice.finalized", obj))
    invoice_posting = posted(obj["id"], Operation.POST_INVOICE)
    parked = wait_for(
        lambda: writeback.postings.filter(
            source_id=f"{obj['id']}:writeback:{invoice_posting.idempotency_key[:16]}", state=PostingState.PARKED
        ).first(),
        timeout=60,
        what="the writeback to be parked",
    )
    assert parked.error_code == "billing_document_missing"
    assert f"Stripe invoice {obj['id']} does not exist" in parked.finance_message
