"""Writeback to Recurly: once Tryton holds the invoice (or a payment on it), the invoice's customer
notes in Recurly name the ERP document and its status, written exactly once through a 5xx and a
timeout after the update was saved (the contract simulator counts what Recurly applied)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.ingest.models import InboxEvent, InboxStatus
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState
from apps.routing.models import ERPConnection
from apps.sources import recurly_samples as rs
from apps.sources.models import BillingSource
from tests.conftest import wait_for
from tests.e2e.test_lifecycle import posted
from tests.e2e.test_recurly_stream import SOURCE, notify
from tests.recurly_simulator import RecurlySimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


@pytest.fixture
def recurly(hub: Any) -> Iterator[RecurlySimulator]:
    """One simulated Recurly site: the source reads objects from it and the writeback updates them."""
    with RecurlySimulator(hang_seconds=2.5) as simulator:
        BillingSource.objects.filter(name=SOURCE).update(
            api_settings={"api_key": "env:RECURLY_API_KEY", "base_url": simulator.url}
        )
        yield simulator


@pytest.fixture
def writeback(recurly: RecurlySimulator) -> ERPConnection:
    connection = ERPConnection.objects.create(
        name="recurly-us-writeback",
        kind="recurly",
        settings={"api_key": "env:RECURLY_API_KEY", "base_url": recurly.url, "timeout": 1},
    )
    BillingSource.objects.filter(name=SOURCE).update(writeback_connection=connection)
    return connection


def new_invoice(client: Client, recurly: RecurlySimulator) -> tuple[dict[str, Any], dict[str, Any]]:
    account = rs.account()
    invoice = {
        **rs.charge_invoice(account, [rs.line_item("61.50", tax_rate="0", description="Pro plan", plan_code="pro")]),
        "customer_notes": "Thank you for your business.",
    }
    recurly.put(account, invoice)
    notify(client, "account", "created", account)
    notify(client, "charge_invoice", "created", invoice)
    return account, invoice


def hub_lines(recurly: RecurlySimulator, invoice_id: str) -> list[str]:
    return [line for line in str(recurly.invoices[invoice_id]["customer_notes"]).splitlines() if line.endswith("]")]


def test_recurly_learns_the_erp_invoice_once_through_a_5xx_and_a_timeout_after_commit(
    client: Client, tryton: Any, recurly: RecurlySimulator, writeback: ERPConnection
) -> None:
    recurly.fail_next_write("500")
    recurly.fail_next_write("timeout_after_commit")
    _, invoice = new_invoice(client, recurly)

    invoice_posting = posted(invoice["id"], Operation.POST_INVOICE)
    reference = f"{SOURCE}:{invoice['id']}:writeback:{invoice_posting.idempotency_key[:16]}"
    written = posted(reference.removeprefix(f"{SOURCE}:"), Operation.WRITE_BACK)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    assert invoice_posting.erp_id == str(erp_invoice["id"])
    notes = str(recurly.invoices[invoice["id"]]["customer_notes"]).splitlines()
    assert notes == [
        "Thank you for your business.",  # what billing wrote stays
        f"tryton-local: posted, ERP id {erp_invoice['id']}, number {erp_invoice['number']} [{reference}]",
    ]
    # The 500 saved nothing; the update that timed out was saved, and the lookup found it.
    assert [(write.status, write.applied) for write in recurly.writes] == [(500, False), (200, True)]
    assert len(recurly.applied(invoice["id"])) == 1
    attempts = list(PostingAttempt.objects.filter(posting=written).order_by("pk").values_list("outcome", flat=True))
    assert attempts == [
        PostingAttempt.Outcome.UNCERTAIN,
        PostingAttempt.Outcome.UNCERTAIN,
        PostingAttempt.Outcome.FOUND,
    ]


def test_a_payment_applied_in_the_erp_is_written_back_too(
    client: Client, tryton: Any, recurly: RecurlySimulator, writeback: ERPConnection
) -> None:
    account, invoice = new_invoice(client, recurly)
    purchase = rs.transaction(account, invoice, "61.50")
    recurly.put(purchase, rs.settled(invoice, transactions=[purchase]))
    notify(client, "payment", "succeeded", purchase)
    invoice_posting = posted(invoice["id"], Operation.POST_INVOICE)
    payment = posted(f"{purchase['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    for parent in (invoice_posting, payment):
        posted(f"{invoice['id']}:writeback:{parent.idempotency_key[:16]}", Operation.WRITE_BACK)

    lines = hub_lines(recurly, invoice["id"])
    assert len(lines) == 2 and len(recurly.applied(invoice["id"])) == 2  # one line per writeback, in any order
    [paid_line] = [line for line in lines if line.startswith("tryton-local: payment applied")]
    assert f"ERP payment {payment.erp_id} [" in paid_line
    assert any(line.startswith("tryton-local: posted, ERP id ") for line in lines)


def test_an_invoice_deleted_in_recurly_is_parked_for_finance(
    client: Client, tryton: Any, recurly: RecurlySimulator, writeback: ERPConnection
) -> None:
    _, invoice = new_invoice(client, recurly)
    wait_for(
        lambda: InboxEvent.objects.filter(
            source=SOURCE, object_id=invoice["id"], status=InboxStatus.PROCESSED
        ).exists(),
        what="the invoice to be read from Recurly",
    )
    del recurly.invoices[invoice["id"]]  # gone from Recurly once the hub has read it
    invoice_posting = posted(invoice["id"], Operation.POST_INVOICE)
    parked = wait_for(
        lambda: writeback.postings.filter(
            source_id=f"{invoice['id']}:writeback:{invoice_posting.idempotency_key[:16]}", state=PostingState.PARKED
        ).first(),
        timeout=60,
        what="the writeback to be parked",
    )
    assert parked.error_code == "billing_document_missing"
    assert f"Recurly invoice {invoice['id']} does not exist" in parked.finance_message
    assert not recurly.writes
    assert Posting.objects.filter(connection=writeback, state=PostingState.POSTED).count() == 0
