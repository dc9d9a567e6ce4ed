from datetime import date
from decimal import Decimal

import pytest

from apps.ledger.commands import CreditMemoData, CustomerData, DisputeData, InvoiceData, PaymentData
from apps.sources import stripe_samples as se
from apps.sources.base import IgnoredEvent, InvalidPayload
from apps.sources.stripe import parse_event


def test_invoice_finalized_becomes_an_invoice_with_lines_taxes_and_a_customer_snapshot() -> None:
    obj = se.invoice(
        "cus_A",
        [
            se.line(2500, quantity=1, tax=500),
            se.line(1000, quantity=4, product="prod_usage_api_calls", price="price_api", description="API calls"),
        ],
    )
    [invoice] = parse_event(se.event("invoice.finalized", obj, created=1_700_000_000))
    assert isinstance(invoice, InvoiceData)
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor) == (3500, 500, 4000)
    assert invoice.customer.source_id == "cus_A" and invoice.customer.snapshot
    assert invoice.currency == "USD"
    assert invoice.lines[1].quantity == Decimal(4)
    assert invoice.lines[1].unit_amount_minor == 250
    assert invoice.lines[1].product_source_id == "prod_usage_api_calls"
    assert invoice.lines[0].tax_minor == 500
    assert isinstance(invoice.invoice_date, date)


def test_invoice_paid_also_yields_the_payment_applied_to_it() -> None:
    obj = se.invoice("cus_A", [se.line(4200)], status="paid", payment_intent="pi_123")
    invoice, payment = parse_event(se.event("invoice.paid", obj))
    assert isinstance(invoice, InvoiceData) and invoice.status == "paid"
    assert isinstance(payment, PaymentData)
    assert payment.source_id == "pi_123"
    assert payment.amount_minor == 4200
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [(obj["id"], 4200)]


def test_older_api_shape_is_understood() -> None:
    obj = se.invoice("cus_A", [se.line(1000)], status="paid")
    obj.pop("payments")
    obj["payment_intent"] = "pi_old"
    obj["tax"] = 0
    line = obj["lines"]["data"][0]
    line.pop("pricing")
    line["price"] = {"id": "price_old", "product": "prod_old", "unit_amount": 1000}
    invoice, payment = parse_event(se.event("invoice.paid", obj))
    assert invoice.lines[0].price_id == "price_old" and invoice.lines[0].product_source_id == "prod_old"
    assert payment.source_id == "pi_old"


def test_payment_intent_with_invoice_is_applied_and_without_is_unapplied() -> None:
    pi = {
        "id": "pi_9",
        "object": "payment_intent",
        "amount": 900,
        "amount_received": 900,
        "currency": "usd",
        "customer": "cus_A",
        "invoice": "in_9",
        "created": 1_700_000_000,
        "payment_method_types": ["card"],
    }
    [payment] = parse_event(se.event("payment_intent.succeeded", pi))
    assert payment.method == "card" and payment.applications[0].invoice_source_id == "in_9"
    pi.pop("invoice")
    [payment] = parse_event(se.event("payment_intent.succeeded", pi))
    assert payment.applications == ()


def test_customer_event_is_authoritative() -> None:
    [customer] = parse_event(se.event("customer.updated", se.customer("cus_B", name="Globex")))
    assert isinstance(customer, CustomerData) and not customer.snapshot and customer.name == "Globex"
    assert customer.bill_to["country"] == "US"


def test_unsupported_and_broken_events_say_why() -> None:
    with pytest.raises(IgnoredEvent):
        parse_event(se.event("plan.created", {"id": "plan_1"}))
    obj = se.invoice("cus_A", [se.line(1000)])
    obj["total"] = 10.5
    with pytest.raises(InvalidPayload, match="'total' must be an integer amount"):
        parse_event(se.event("invoice.finalized", obj))
    obj = se.invoice("cus_A", [se.line(1000)], status="draft")
    with pytest.raises(InvalidPayload, match="only finalized invoices"):
        parse_event(se.event("invoice.finalized", obj))
    obj = se.invoice("cus_A", [se.line(1000)])
    obj["currency"] = "dollars"
    with pytest.raises(InvalidPayload, match="ISO 4217"):
        parse_event(se.event("invoice.finalized", obj))


def test_credit_note_becomes_a_credit_memo_naming_the_invoice_lines_it_credits() -> None:
    invoice_obj = se.invoice(se.uid("cus"), [se.line(4900), se.line(1250, product="prod_usage_api_calls")])
    note = se.credit_note(invoice_obj, [(1, 500)], custom=250, reason="product_unsatisfactory")
    [memo] = parse_event(se.event("credit_note.created", note))
    assert isinstance(memo, CreditMemoData)
    assert (memo.invoice_source_id, memo.customer_source_id) == (invoice_obj["id"], invoice_obj["customer"])
    assert (memo.subtotal_minor, memo.tax_minor, memo.total_minor, memo.status) == (750, 0, 750, "issued")
    assert [line.invoice_line_source_id for line in memo.lines] == [invoice_obj["lines"]["data"][1]["id"], ""]
    assert [line.amount_minor for line in memo.lines] == [500, 250]
    assert memo.reason == "product_unsatisfactory"

    voided = {**note, "status": "void", "voided_at": note["created"] + 86400}
    [void] = parse_event(se.event("credit_note.voided", voided))
    assert void.status == "void" and void.status_date is not None  # type: ignore[union-attr]


def test_a_credit_note_without_an_invoice_or_lines_is_refused_with_its_reason() -> None:
    invoice_obj = se.invoice(se.uid("cus"), [se.line(4900)])
    note = se.credit_note(invoice_obj, [(0, 100)])
    with pytest.raises(InvalidPayload, match="names no invoice"):
        parse_event(se.event("credit_note.created", {**note, "invoice": None}))
    with pytest.raises(InvalidPayload, match="has no lines"):
        parse_event(se.event("credit_note.created", {**note, "lines": {"data": [], "has_more": False}}))


def test_voided_and_uncollectible_invoices_carry_the_day_billing_changed_them() -> None:
    invoice_obj = se.invoice(se.uid("cus"), [se.line(4900)])
    [void] = parse_event(se.event("invoice.voided", se.voided(invoice_obj)))
    [bad] = parse_event(se.event("invoice.marked_uncollectible", se.uncollectible(invoice_obj, 900)))
    assert (void.status, bad.status, bad.amount_paid_minor) == ("void", "uncollectible", 900)  # type: ignore[union-attr]
    assert void.status_date is not None and bad.status_date is not None  # type: ignore[union-attr]


def test_dispute_events_become_dispute_commands_with_the_funds_state() -> None:
    intent = se.payment_intent("cus_1", "in_1", 6150)
    opened = se.dispute(intent)
    [dispute] = parse_event(se.event("charge.dispute.created", opened, created=1_760_000_000))
    assert isinstance(dispute, DisputeData)
    assert (dispute.source_id, dispute.payment_source_id, dispute.amount_minor, dispute.currency) == (
        opened["id"],
        intent["id"],
        6150,
        "USD",
    )
    assert (dispute.status, dispute.reason, dispute.closed_on) == ("open", "fraudulent", None)

    [lost] = parse_event(se.event("charge.dispute.closed", se.dispute_closed(opened, "lost"), created=1_760_086_400))
    assert (lost.status, str(lost.closed_on)) == ("lost", "2025-10-10")  # type: ignore[union-attr]
    [inquiry] = parse_event(se.event("charge.dispute.created", se.dispute(intent, status="warning_needs_response")))
    assert inquiry.status == "inquiry"  # type: ignore[union-attr]


def test_a_dispute_with_an_unknown_status_is_refused_by_name() -> None:
    obj = {**se.dispute(se.payment_intent("cus_1", "in_1", 100)), "status": "escalated"}
    with pytest.raises(InvalidPayload, match="unknown dispute status 'escalated'"):
        parse_event(se.event("charge.dispute.updated", obj))


def test_updated_and_payment_failed_invoices_keep_their_status_and_drafts_are_ignored() -> None:
    obj = se.invoice("cus_A", [se.line(2500)])
    [failed] = parse_event(se.event("invoice.payment_failed", obj))
    assert isinstance(failed, InvoiceData) and failed.status == "open" and failed.amount_paid_minor == 0
    with pytest.raises(IgnoredEvent, match="draft invoice"):
        parse_event(se.event("invoice.updated", {**obj, "status": "draft"}))
