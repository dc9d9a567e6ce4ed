"""Normalization: idempotent under redelivery, correct under out-of-order delivery."""

from typing import Any

import pytest
from django.test import Client

from apps.ingest.models import InboxEvent, InboxStatus
from apps.ingest.services import normalize_event
from apps.ledger.models import Customer, Invoice, Payment, PaymentApplication
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import deliver

pytestmark = pytest.mark.usefixtures("configured")


def receive(client: Client, event: dict[str, Any]) -> str:
    assert deliver(client, event).status_code == 200
    return normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)


def test_invoice_finalized_creates_customer_invoice_and_plans_two_postings(client: Client) -> None:
    obj = se.invoice(se.uid("cus"), [se.line(2500), se.line(1500, description="Seats", product="prod_seats")])
    assert receive(client, se.event("invoice.finalized", obj)) == InboxStatus.PROCESSED
    invoice = Invoice.objects.get(source_id=obj["id"])
    assert invoice.total_minor == 4000 and invoice.lines.count() == 2 and invoice.status == "open"
    assert invoice.customer.name == "ACME Corp" and invoice.legal_entity.code == "US01"
    postings = {p.operation: p for p in Posting.objects.filter(source_id__in=[obj["id"], obj["customer"]])}
    assert set(postings) == {Operation.ENSURE_CUSTOMER, Operation.POST_INVOICE}
    assert postings[Operation.POST_INVOICE].depends_on_key == postings[Operation.ENSURE_CUSTOMER].idempotency_key
    # The customer goes first; the invoice is planned waiting for it, with no message sent yet.
    assert postings[Operation.ENSURE_CUSTOMER].state == PostingState.QUEUED
    assert postings[Operation.POST_INVOICE].state == PostingState.WAITING


def test_paid_before_finalized_ends_paid_with_one_payment_and_the_older_event_changes_nothing(client: Client) -> None:
    finalized = se.invoice(se.uid("cus"), [se.line(9900)])
    paid = se.paid(finalized, payment_intent="pi_" + se.uid("x"))
    receive(client, se.event("invoice.paid", paid, created=2_000_000_100))
    receive(client, se.event("invoice.finalized", finalized, created=2_000_000_000))
    invoice = Invoice.objects.get(source_id=finalized["id"])
    assert invoice.status == Invoice.STATUS_PAID and invoice.amount_paid_minor == 9900
    assert Payment.objects.filter(applications__invoice=invoice).count() == 1
    operations = sorted(Posting.objects.filter(source=invoice.source).values_list("operation", flat=True))
    assert operations == sorted([Operation.ENSURE_CUSTOMER, Operation.POST_INVOICE, Operation.APPLY_PAYMENT])


def test_finalized_and_paid_in_the_same_second_keep_the_paid_status(client: Client) -> None:
    finalized = se.invoice(se.uid("cus"), [se.line(100)])
    receive(client, se.event("invoice.paid", se.paid(finalized), created=2_000_000_000))
    receive(client, se.event("invoice.finalized", finalized, created=2_000_000_000))
    assert Invoice.objects.get(source_id=finalized["id"]).status == Invoice.STATUS_PAID


def test_the_same_object_in_a_new_event_plans_nothing_new(client: Client) -> None:
    obj = se.paid(se.invoice(se.uid("cus"), [se.line(500)]))
    receive(client, se.event("invoice.paid", obj))
    before = Posting.objects.count()
    receive(client, se.event("invoice.paid", obj))  # Stripe resends under a new event id
    assert Posting.objects.count() == before
    assert Invoice.objects.filter(source_id=obj["id"]).count() == 1
    assert PaymentApplication.objects.filter(invoice_source_id=obj["id"]).count() == 1


def test_normalizing_the_same_inbox_event_twice_is_a_no_op(client: Client) -> None:
    event = se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(700)]))
    receive(client, event)
    count = Posting.objects.count()
    assert normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk) == InboxStatus.PROCESSED
    assert Posting.objects.count() == count


def test_payment_before_its_invoice_is_planned_when_the_invoice_arrives(client: Client) -> None:
    customer_id, invoice_id = se.uid("cus"), se.uid("in")
    pi = {
        "id": se.uid("pi"),
        "object": "payment_intent",
        "amount": 1200,
        "amount_received": 1200,
        "currency": "usd",
        "customer": customer_id,
        "invoice": invoice_id,
        "created": 2_000_000_000,
        "payment_method_types": ["card"],
    }
    receive(client, se.event("payment_intent.succeeded", pi))
    assert not Posting.objects.filter(operation=Operation.APPLY_PAYMENT, source_id__startswith=pi["id"]).exists()
    receive(client, se.event("invoice.finalized", se.invoice(customer_id, [se.line(1200)], invoice_id=invoice_id)))
    application = Posting.objects.get(operation=Operation.APPLY_PAYMENT, source_id=f"{pi['id']}:{invoice_id}")
    assert (
        application.depends_on_key
        == Posting.objects.get(operation=Operation.POST_INVOICE, source_id=invoice_id).idempotency_key
    )


def test_an_older_customer_update_never_overwrites_a_newer_one(client: Client) -> None:
    customer_id = se.uid("cus")
    receive(client, se.event("customer.updated", se.customer(customer_id, name="New Name"), created=2_000_000_200))
    receive(client, se.event("customer.updated", se.customer(customer_id, name="Old Name"), created=2_000_000_100))
    assert Customer.objects.get(source_id=customer_id).name == "New Name"


def test_invoice_snapshot_does_not_overwrite_the_customer_object(client: Client) -> None:
    customer_id = se.uid("cus")
    receive(client, se.event("customer.created", se.customer(customer_id, name="Initech GmbH"), created=2_000_000_000))
    obj = se.invoice(customer_id, [se.line(100)], customer_name="initech")
    receive(client, se.event("invoice.finalized", obj, created=2_000_000_500))
    assert Customer.objects.get(source_id=customer_id).name == "Initech GmbH"


def test_an_invoice_repeating_a_known_customer_snapshot_does_not_rewrite_the_customer(client: Client) -> None:
    customer_id = se.uid("cus")
    receive(client, se.event("invoice.finalized", se.invoice(customer_id, [se.line(100)]), created=2_000_000_000))
    first = Customer.objects.get(source_id=customer_id)
    receive(client, se.event("invoice.finalized", se.invoice(customer_id, [se.line(200)]), created=2_000_000_100))
    again = Customer.objects.get(source_id=customer_id)
    assert again.updated_at == first.updated_at and again.revision == first.revision == 1
    assert Invoice.objects.filter(customer=again).count() == 2


def test_an_invoice_that_does_not_add_up_is_parked_for_finance(client: Client) -> None:
    obj = se.invoice(se.uid("cus"), [se.line(1000)])
    obj["total"] = 1100
    receive(client, se.event("invoice.finalized", obj))
    posting = Posting.objects.get(operation=Operation.POST_INVOICE, source_id=obj["id"])
    assert posting.state == PostingState.PARKED and posting.error_code == "amount_mismatch"
    assert f"Invoice {obj['number']} does not add up" in posting.finance_message


def test_no_route_fails_the_event_with_a_reason_and_keeps_it(client: Client) -> None:
    RoutingRule.objects.all().delete()
    event = se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(1000)]))
    assert receive(client, event) == InboxStatus.FAILED
    stored = InboxEvent.objects.get(event_id=event["id"])
    assert stored.error.startswith("No ERP connection is routed for invoice")
    assert stored.error_code == "no_route" and "legal entity US01" in stored.error
    assert not Invoice.objects.filter(source_id=event["data"]["object"]["id"]).exists()


def test_an_unsupported_event_type_is_kept_and_marked_ignored(client: Client) -> None:
    event = se.event("plan.created", {"id": "plan_1", "object": "plan"})
    assert receive(client, event) == InboxStatus.IGNORED


def test_a_payment_normalized_before_its_customer_posts_its_credit_when_the_customer_arrives(client: Client) -> None:
    """Two events of one customer are normalized by two worker processes at once: the payment may
    reach the ledger before the invoice that creates the customer."""
    import os

    from apps.sources import canonical_samples as cs

    secret = os.environ["HUB_CANONICAL_API_SECRET"]

    def store(kind: str, data: dict[str, Any]) -> int:
        body, key = cs.body(kind, data), f"{data['id']}-{data['revision']}"
        response = client.post(
            "/api/v1/sources/billing-api/events/",
            data=body,
            content_type="application/json",
            HTTP_IDEMPOTENCY_KEY=key,
            HTTP_X_HUB_SIGNATURE=cs.headers(body, secret, key)["X-Hub-Signature"],
        )
        assert response.status_code == 202, response.content
        return InboxEvent.objects.get(source="billing-api", event_id=key).pk

    invoice = cs.invoice(cs.uid("cus"), [cs.line(6150)])
    customer_id = invoice["customer"]["id"]
    overpaid = cs.payment(customer_id, [(invoice["id"], 6150)], amount=10000)
    invoice_event, payment_event = store("invoice", invoice), store("payment", overpaid)

    assert normalize_event(payment_event) == InboxStatus.PROCESSED  # before the customer exists
    assert Payment.objects.get(source_id=overpaid["id"]).customer is None
    assert not Posting.objects.filter(operation=Operation.RECEIVE_ON_ACCOUNT).exists()

    assert normalize_event(invoice_event) == InboxStatus.PROCESSED
    payment = Payment.objects.get(source_id=overpaid["id"])
    assert payment.customer is not None and payment.customer.source_id == customer_id
    credit = Posting.objects.get(operation=Operation.RECEIVE_ON_ACCOUNT, payment=payment)
    assert credit.source_id == f"{overpaid['id']}:on-account"
    assert Posting.objects.filter(operation=Operation.APPLY_PAYMENT, payment_application__payment=payment).count() == 1
