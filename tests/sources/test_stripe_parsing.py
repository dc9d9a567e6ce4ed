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


# --- customer credit: the credit balance --------------------------------------------------------


def test_an_over_paid_invoice_applies_what_it_asked_and_leaves_the_rest_as_customer_credit() -> None:
    obj = se.invoice("cus_A", [se.line(6150)])
    invoice, payment, overpaid = parse_event(
        se.event("invoice.overpaid", se.paid(obj, payment_intent="pi_over", amount_paid=10000))
    )
    assert isinstance(invoice, InvoiceData) and isinstance(payment, PaymentData) and isinstance(overpaid, PaymentData)
    assert (invoice.status, invoice.amount_paid_minor) == ("paid", 6150)  # nothing left open, nothing more
    assert (payment.source_id, payment.amount_minor, payment.unapplied_is_credit) == ("pi_over", 6150, True)
    assert [(a.invoice_source_id, a.amount_minor, a.from_credit) for a in payment.applications] == [
        (obj["id"], 6150, False)
    ]
    assert (overpaid.source_id, overpaid.amount_minor, overpaid.applications) == (f"{obj['id']}:overpaid", 3850, ())
    assert overpaid.unapplied_is_credit and overpaid.customer_source_id == "cus_A"
    # invoice.paid of the same invoice says the same: the same three commands, so the ledger keeps one of each.
    assert parse_event(se.event("invoice.paid", se.paid(obj, payment_intent="pi_over", amount_paid=10000)))[2] == (
        overpaid
    )


def test_the_next_invoice_takes_the_credit_balance_as_credit_applied_and_the_rest_stays_due() -> None:
    obj = se.with_credit_balance(se.invoice("cus_A", [se.line(4900), se.line(1250)]), 3850)
    assert (obj["amount_due"], obj["starting_balance"], obj["ending_balance"]) == (2300, -3850, 0)
    invoice, credit = parse_event(se.event("invoice.finalized", obj))
    assert isinstance(invoice, InvoiceData) and isinstance(credit, PaymentData)
    assert (invoice.status, invoice.total_minor, invoice.amount_paid_minor) == ("open", 6150, 3850)
    assert (credit.source_id, credit.amount_minor, credit.method) == (
        f"{obj['id']}:customer-balance",
        3850,
        "credit_balance",
    )
    assert [(a.invoice_source_id, a.amount_minor, a.from_credit) for a in credit.applications] == [
        (obj["id"], 3850, True)
    ]
    assert not credit.unapplied_is_credit

    invoice, credit_again, rest = parse_event(se.event("invoice.paid", se.paid(obj, payment_intent="pi_rest")))
    assert credit_again == credit  # the same credit application, named the same
    assert invoice.amount_paid_minor == 6150  # type: ignore[union-attr]
    assert (rest.source_id, rest.amount_minor, rest.applications[0].amount_minor) == ("pi_rest", 2300, 2300)  # type: ignore[union-attr]


def test_an_invoice_the_credit_balance_pays_in_full_leaves_what_is_left_on_the_balance() -> None:
    obj = se.with_credit_balance(se.invoice("cus_A", [se.line(6150)]), 10000)
    assert (obj["status"], obj["amount_due"], obj["ending_balance"]) == ("paid", 0, -3850)
    invoice, credit = parse_event(se.event("invoice.finalized", obj))  # no payment: no cash reached the bank
    assert (invoice.status, invoice.amount_paid_minor) == ("paid", 6150)  # type: ignore[union-attr]
    assert credit.amount_minor == 6150 and credit.applications[0].from_credit  # type: ignore[union-attr]


def test_a_debt_carried_on_the_balance_is_not_credit_and_a_voided_invoice_gives_its_credit_back() -> None:
    carried = {**se.invoice("cus_A", [se.line(6150)]), "starting_balance": 50, "ending_balance": 0}
    [invoice] = parse_event(se.event("invoice.finalized", carried))
    assert invoice.amount_paid_minor == 0  # type: ignore[union-attr]
    voided = se.voided(se.with_credit_balance(se.invoice("cus_A", [se.line(6150)]), 1000))
    [void] = parse_event(se.event("invoice.voided", voided))
    assert (void.status, void.amount_paid_minor) == ("void", 0)  # type: ignore[union-attr]


def test_an_over_payment_larger_than_what_was_paid_is_refused_by_name() -> None:
    obj = {**se.paid(se.invoice("cus_A", [se.line(6150)])), "amount_overpaid": 7000}
    with pytest.raises(InvalidPayload, match="'amount_overpaid' 7000 must be between 0 and 'amount_paid' 6150"):
        parse_event(se.event("invoice.paid", obj))


# --- customer credit: the cash balance ----------------------------------------------------------


def test_a_bank_transfer_into_the_cash_balance_is_unapplied_cash_for_the_customer() -> None:
    funded = se.cash_balance_transaction("cus_A", "funded", 10000, ending_balance=10000)
    customer, payment = parse_event(se.event("customer_cash_balance_transaction.created", funded))
    assert isinstance(customer, CustomerData) and customer.snapshot and customer.source_id == "cus_A"
    assert isinstance(payment, PaymentData)
    assert (payment.source_id, payment.amount_minor, payment.currency) == (funded["id"], 10000, "USD")
    assert (payment.method, payment.applications, payment.unapplied_is_credit) == ("us_bank_transfer", (), True)


def test_a_bank_transfer_invoice_is_paid_from_the_cash_balance_as_credit_applied() -> None:
    obj = se.invoice("cus_A", [se.line(6150)], payment_method_types=["customer_balance"])
    _, payment = parse_event(se.event("invoice.paid", se.paid(obj, payment_intent="pi_bank")))
    assert (payment.source_id, payment.method, payment.unapplied_is_credit) == ("pi_bank", "customer_balance", False)  # type: ignore[union-attr]
    assert [(a.amount_minor, a.from_credit) for a in payment.applications] == [(6150, True)]  # type: ignore[union-attr]

    applied = se.cash_balance_transaction(
        "cus_A", "applied_to_payment", -6150, ending_balance=3850, payment_intent="pi_bank"
    )
    [recorded] = parse_event(se.event("customer_cash_balance_transaction.created", applied))
    assert (recorded.source_id, recorded.amount_minor, recorded.applications) == ("pi_bank", 6150, ())  # type: ignore[union-attr]
    assert not recorded.unapplied_is_credit  # type: ignore[union-attr]

    intent = se.bank_transfer_intent("cus_A", 6150)
    [from_intent] = parse_event(se.event("payment_intent.succeeded", {**intent, "invoice": "in_1"}))  # older API
    assert from_intent.applications[0].from_credit and not from_intent.unapplied_is_credit  # type: ignore[union-attr]


def test_an_invoice_that_also_offers_cards_is_a_cash_payment() -> None:
    obj = se.invoice("cus_A", [se.line(6150)], payment_method_types=["card", "customer_balance"])
    _, payment = parse_event(se.event("invoice.paid", se.paid(obj, payment_intent="pi_card")))
    assert (payment.method, payment.applications[0].from_credit) == ("stripe", False)  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kind", "net", "says"),
    [
        ("return_initiated", -3850, "being returned to their bank account"),
        ("refunded_from_payment", 2000, "refunded into the customer's cash balance"),
        ("unapplied_from_payment", 6150, "reverse that payment's credit application"),
        ("adjusted_for_overdraft", 500, "negative cash balance"),
        ("a_type_stripe_adds_later", 100, "does not know this cash balance transaction type"),
    ],
)
def test_cash_balance_movements_the_hub_cannot_post_fail_with_what_to_record(kind: str, net: int, says: str) -> None:
    obj = se.cash_balance_transaction("cus_A", kind, net, ending_balance=0)
    with pytest.raises(InvalidPayload, match=says):
        parse_event(se.event("customer_cash_balance_transaction.created", obj))


def test_a_payment_intent_that_allowed_cards_too_is_not_taken_for_the_cash_balance() -> None:
    intent = {**se.bank_transfer_intent("cus_A", 6150), "invoice": "in_1"}
    [both] = parse_event(
        se.event("payment_intent.succeeded", {**intent, "payment_method_types": ["customer_balance", "card"]})
    )
    assert (both.method, both.applications[0].from_credit, both.unapplied_is_credit) == ("stripe", False, True)  # type: ignore[union-attr]
    charge = {
        "id": "ch_1",
        "object": "charge",
        "amount": 6150,
        "amount_captured": 6150,
        "currency": "usd",
        "customer": "cus_A",
        "invoice": "in_1",
        "payment_intent": intent["id"],
        "payment_method_details": {"type": "customer_balance"},
        "created": 1_700_000_000,
    }
    [from_charge] = parse_event(se.event("charge.succeeded", charge))  # the charge says which method paid
    assert (from_charge.source_id, from_charge.method) == (intent["id"], "customer_balance")  # type: ignore[union-attr]
    assert from_charge.applications[0].from_credit and not from_charge.unapplied_is_credit  # type: ignore[union-attr]
