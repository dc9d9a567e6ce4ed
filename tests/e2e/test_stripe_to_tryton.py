"""The walking skeleton, end to end: signed Stripe webhooks → inbox → Celery worker process →
canonical ledger → postings → the real Tryton, on the real PostgreSQL and Redis."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.test import Client

from apps.console.models import CaseStatus, ExceptionCase
from apps.console.services import case_postings
from apps.core.models import AuditEvent
from apps.ingest.models import InboxEvent
from apps.ledger.models import Invoice
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.conftest import SECRET, SOURCE, deliver, wait_for
from tests.fault_proxy import FaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


def postings_for(invoice_id: str) -> dict[str, Posting]:
    invoice = Invoice.objects.get(source_id=invoice_id)
    found = (
        Posting.objects.filter(invoice=invoice)
        | Posting.objects.filter(customer=invoice.customer)
        | (Posting.objects.filter(payment_application__invoice=invoice))
    )
    return {p.operation: p for p in found}


def wait_posted(invoice_id: str, operations: int = 3, timeout: float = 120) -> dict[str, Posting]:
    def settled() -> dict[str, Posting] | None:
        if not Invoice.objects.filter(source_id=invoice_id).exists():
            return None
        postings = postings_for(invoice_id)
        if len(postings) == operations and all(p.state == PostingState.POSTED for p in postings.values()):
            return postings
        return None

    return wait_for(settled, timeout=timeout, what=f"{operations} postings of {invoice_id} to be posted")


def new_invoice(**kwargs: Any) -> dict[str, Any]:
    return se.invoice(
        se.uid("cus"),
        [
            se.line(4900, description="Pro plan (monthly)"),
            se.line(1250, quantity=5, description="API calls", product="prod_usage_api_calls", price="price_api"),
        ],
        **kwargs,
    )


def test_finalized_and_paid_give_one_party_one_posted_invoice_paid(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    assert deliver(client, se.event("invoice.finalized", obj)).status_code == 200
    assert deliver(client, se.event("invoice.paid", se.paid(obj))).status_code == 200

    postings = wait_posted(obj["id"])
    customer_ref, invoice_ref = f"{SOURCE}:{obj['customer']}", f"{SOURCE}:{obj['id']}"
    [party] = tryton.parties(customer_ref)
    [invoice] = tryton.invoices(invoice_ref)
    assert party["name"] == "ACME Corp"
    assert invoice["state"] == "paid"
    assert invoice["total_amount"] == Decimal("61.50")
    assert invoice["amount_to_pay"] == Decimal("0")
    lines = sorted(
        (line["description"], line["amount"], line["account_code"]) for line in tryton.invoice_lines(invoice["id"])
    )
    assert lines == [("API calls", Decimal("12.50"), "4100"), ("Pro plan (monthly)", Decimal("49.00"), "4000")]
    assert postings[Operation.ENSURE_CUSTOMER].erp_id == str(party["id"])
    assert postings[Operation.POST_INVOICE].erp_id == str(invoice["id"])
    assert postings[Operation.POST_INVOICE].erp_number == invoice["number"]
    assert postings[Operation.APPLY_PAYMENT].erp_id
    assert len(tryton.payment_lines(invoice["id"])) == 1


def test_each_event_delivered_three_times_some_concurrently_posts_once(live_server: Any, tryton: Any) -> None:
    obj = new_invoice()
    events = [se.event("invoice.finalized", obj), se.event("invoice.paid", se.paid(obj))]

    def send(event: dict[str, Any]) -> int:
        body = json.dumps(event).encode()
        return requests.post(
            f"{live_server.url}/webhooks/{SOURCE}/",
            data=body,
            timeout=60,
            headers={"Content-Type": "application/json", "Stripe-Signature": se.sign(body, SECRET)},
        ).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(send, events * 2)) == [200] * 4  # two rounds at once
    wait_posted(obj["id"])
    assert [send(event) for event in events] == [200, 200]  # a third, late round

    assert [e.delivery_count for e in InboxEvent.objects.filter(event_id__in=[e["id"] for e in events])] == [3, 3]
    assert len(tryton.parties(f"{SOURCE}:{obj['customer']}")) == 1
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "paid"
    assert len(tryton.payment_lines(invoice["id"])) == 1
    assert Posting.objects.filter(source_id=obj["id"]).count() == 1


def test_paid_before_finalized_the_payment_waits_for_its_invoice_then_applies(client: Client, tryton: Any) -> None:
    obj = new_invoice()
    # Hold the invoice back (its revenue account is not in Tryton) to watch the payment wait.
    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4999")
    now = int(time.time())
    finalized = se.event("invoice.finalized", obj, created=now - 10)  # Stripe sent it first; it arrives last
    deliver(client, se.event("invoice.paid", se.paid(obj), created=now))
    wait_for(
        lambda: Posting.objects.filter(source_id=obj["id"], state=PostingState.PARKED).exists(), what="parked invoice"
    )
    payment = wait_for(
        lambda: Posting.objects.filter(
            operation=Operation.APPLY_PAYMENT,
            state=PostingState.WAITING,
            payment_application__invoice__source_id=obj["id"],
        ).first(),
        what="the payment to wait",
    )
    # The parked invoice and the payment waiting on it are one case for finance.
    [case] = ExceptionCase.objects.filter(source_id=obj["id"], status=CaseStatus.OPEN)
    assert sorted(p.operation for p in case_postings(case)) == [Operation.APPLY_PAYMENT, Operation.POST_INVOICE]
    deliver(client, finalized)  # the older event arrives last: changes nothing
    wait_for(lambda: InboxEvent.objects.filter(status="received").count() == 0, what="inbox drained")
    assert Invoice.objects.get(source_id=obj["id"]).status == Invoice.STATUS_PAID

    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4000")
    from apps.posting.services import retry_posting

    retry_posting(Posting.objects.get(source_id=obj["id"]).pk, actor="finance.ops", reason="mapping fixed")
    wait_posted(obj["id"])
    wait_for(lambda: ExceptionCase.objects.get(pk=case.pk).status == CaseStatus.RESOLVED, what="the case to close")
    payment.refresh_from_db()
    assert payment.attempt_count == 1  # waiting burnt no attempts
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "paid"


def test_a_timeout_after_tryton_committed_does_not_create_a_second_invoice(
    client: Client, tryton: Any, hub: Any
) -> None:
    proxy = FaultProxy(hub.url)
    try:
        connection = ERPConnection.objects.get(name="tryton-local")
        connection.settings = {**connection.settings, "url": proxy.url, "timeout": 3}
        connection.save()
        # Tryton posts the invoice, but its answer comes back after the hub stopped waiting.
        proxy.inject("model.account.invoice.post", hold_seconds=6)
        obj = new_invoice()
        deliver(client, se.event("invoice.finalized", obj))
        posting = wait_for(
            lambda: Posting.objects.filter(
                operation=Operation.POST_INVOICE, source_id=obj["id"], state=PostingState.POSTED
            ).first(),
            what="the invoice posting",
            timeout=120,
        )
        assert proxy.injected["model.account.invoice.post"] == 1
        outcomes = list(posting.attempts.values_list("outcome", flat=True))
        assert outcomes[0] == PostingAttempt.Outcome.UNCERTAIN
        assert outcomes[-1] == PostingAttempt.Outcome.FOUND
        [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
        assert invoice["state"] == "posted" and posting.erp_id == str(invoice["id"])
        assert proxy.calls["model.account.invoice.post"] == 1  # never sent twice
    finally:
        proxy.stop()


def test_rejected_posting_is_parked_for_finance_and_the_admin_retry_posts_it_once(client: Client, tryton: Any) -> None:
    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4999")
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    posting = wait_for(
        lambda: Posting.objects.filter(source_id=obj["id"], state=PostingState.PARKED).first(), what="parked posting"
    )
    assert posting.error_category == "business"
    assert "4999" in posting.finance_message
    assert posting.technical_detail
    admin = get_user_model().objects.create_superuser("controller", "c@example.com", "pw")
    client.force_login(admin)
    page = client.get("/admin/console/postingexception/")
    assert obj["id"] in page.content.decode() and "4999" in page.content.decode()

    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4000")
    response = client.post(
        "/admin/console/postingexception/", {"action": "retry_selected", "_selected_action": [posting.pk]}, follow=True
    )
    assert "1 posting(s) queued for retry." in response.content.decode()
    wait_for(lambda: Posting.objects.get(pk=posting.pk).state == PostingState.POSTED, what="posted after retry")
    invoices = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert [i["state"] for i in invoices] == ["posted"]
    assert AuditEvent.objects.filter(action="posting.retried", actor="controller", object_id=str(posting.pk)).exists()
