"""How the console names the document of a posting: what a finance person recognises."""

from __future__ import annotations

import pytest
from django.test import Client

from apps.console.catalogue import document_facts
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting.models import Operation, Posting
from apps.sources import stripe_samples as se
from tests.conftest import deliver

pytestmark = pytest.mark.usefixtures("configured")


def receive(client: Client, event: dict) -> None:  # type: ignore[type-arg]
    deliver(client, event)
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)


def test_credit_notes_refunds_voids_and_write_offs_are_named_after_what_they_do(client: Client) -> None:
    obj = se.invoice(se.uid("cus"), [se.line(4900), se.line(1250)], number="INV-7")
    receive(client, se.event("invoice.finalized", obj))
    memo = se.credit_note(obj, [(1, 1250)], refunded=1250)
    receive(client, se.event("credit_note.created", memo))
    receive(client, se.event("invoice.marked_uncollectible", se.uncollectible(obj, amount_paid=0)))

    facts = {p.operation: document_facts(p) for p in Posting.objects.filter(invoice__source_id=obj["id"])}
    assert facts[Operation.POST_INVOICE]["document"] == "Invoice INV-7"
    assert facts[Operation.POST_CREDIT_MEMO]["document"] == "Credit note INV-7-CN-01 on Invoice INV-7"
    assert facts[Operation.POST_CREDIT_MEMO]["amount"] == "12.50 USD"
    assert facts[Operation.REFUND_CREDIT_MEMO]["document"] == "Refund of credit note INV-7-CN-01 on Invoice INV-7"
    assert facts[Operation.WRITE_OFF]["document"] == "Write-off of Invoice INV-7"
