"""One correlation id, followed from a Stripe webhook to the ERP: the inbox row, the ledger, the
postings and their attempts, the audit trail and the exception case, the worker's log lines and
the requests Tryton received (seen by a recording proxy in front of the real Tryton)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.console.models import ExceptionCase
from apps.core.correlation import HEADER
from apps.core.models import AuditEvent
from apps.ingest.models import InboxEvent
from apps.ledger.models import Customer, Invoice
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.conftest import SECRET, SOURCE, WorkerProcess, wait_for
from tests.e2e.test_stripe_to_tryton import new_invoice
from tests.fault_proxy import FaultProxy

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def proxy(hub: Any) -> Iterator[FaultProxy]:
    recording = FaultProxy(hub.url)
    connection = ERPConnection.objects.get(name="tryton-local")
    connection.settings = {**connection.settings, "url": recording.url}
    connection.save()
    yield recording
    recording.stop()


def send(client: Client, event: dict[str, Any], correlation_id: str) -> Any:
    body = json.dumps(event).encode()
    return client.post(
        f"/webhooks/{SOURCE}/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=se.sign(body, SECRET),
        HTTP_X_CORRELATION_ID=correlation_id,
    )


def settled(source_ids: list[str], states: tuple[str, ...]) -> list[Posting] | None:
    postings = list(Posting.objects.filter(source_id__in=source_ids))
    if len(postings) == len(source_ids) and all(p.state in states for p in postings):
        return postings
    return None


def test_one_correlation_id_from_the_webhook_to_the_erp_request(
    client: Client, proxy: FaultProxy, worker: WorkerProcess
) -> None:
    correlation_id = f"e2e-trace-{uuid.uuid4().hex[:12]}"
    obj = new_invoice()
    response = send(client, se.event("invoice.finalized", obj), correlation_id)
    assert response.status_code == 200 and response[HEADER] == correlation_id

    postings = wait_for(
        lambda: settled([obj["customer"], obj["id"]], (PostingState.POSTED,)),
        timeout=120,
        what="the customer and the invoice posted",
    )

    # The rows.
    assert InboxEvent.objects.get(source=SOURCE, object_id=obj["id"]).correlation_id == correlation_id
    assert Invoice.objects.get(source_id=obj["id"]).correlation_id == correlation_id
    assert Customer.objects.get(source_id=obj["customer"]).correlation_id == correlation_id
    assert {p.operation: p.correlation_id for p in postings} == {
        Operation.ENSURE_CUSTOMER: correlation_id,
        Operation.POST_INVOICE: correlation_id,
    }
    attempts = PostingAttempt.objects.filter(posting__in=postings)
    assert attempts.count() >= 2 and {a.correlation_id for a in attempts} == {correlation_id}
    trail = AuditEvent.objects.filter(correlation_id=correlation_id)
    assert {"customer.created", "invoice.created", "posting.posted"} <= set(trail.values_list("action", flat=True))
    posting_ids = [str(p.pk) for p in postings]
    about_postings = AuditEvent.objects.filter(object_type="posting.posting", object_id__in=posting_ids)
    assert about_postings.exists() and {e.correlation_id for e in about_postings} == {correlation_id}

    # The worker's log lines about these postings, written by another process.
    text = worker.log_path.read_text()
    for posting in postings:
        lines = [line for line in text.splitlines() if re.search(rf"\bposting_id={posting.pk}\b", line)]
        assert any(" posted posting_id=" in line for line in lines), lines
        assert all(f"[{correlation_id}]" in line for line in lines), lines
        assert all("connection=tryton-local" in line for line in lines), lines

    # What Tryton received: every request about this customer and invoice carried the id.
    about = [
        request
        for request in proxy.received
        if f"{SOURCE}:{obj['id']}".encode() in request.body or f"{SOURCE}:{obj['customer']}".encode() in request.body
    ]
    assert len(about) >= 2
    assert {request.headers.get(HEADER) for request in about} == {correlation_id}


def test_a_parked_postings_case_carries_the_correlation_id_of_its_webhook(
    client: Client, proxy: FaultProxy, worker: WorkerProcess
) -> None:
    correlation_id = f"e2e-case-{uuid.uuid4().hex[:12]}"
    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4999")  # no such account
    obj = new_invoice()
    assert send(client, se.event("invoice.finalized", obj), correlation_id).status_code == 200
    wait_for(
        lambda: Posting.objects.filter(source_id=obj["id"], state=PostingState.PARKED).exists(),
        timeout=120,
        what="the invoice parked",
    )
    case = ExceptionCase.objects.get(source_id=obj["id"])
    assert case.correlation_id == correlation_id
    parked = AuditEvent.objects.get(action="posting.parked", object_id=str(Posting.objects.get(source_id=obj["id"]).pk))
    assert parked.correlation_id == correlation_id
