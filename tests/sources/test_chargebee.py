import json
import os
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.ingest.models import InboxEvent, InboxStatus
from apps.ingest.services import normalize_event
from apps.ledger.commands import CreditMemoData, CustomerData, DisputeData, InvoiceData, PaymentData
from apps.ledger.models import Dispute, Payment
from apps.posting.models import Operation, Posting
from apps.sources import chargebee_samples as cb
from apps.sources.base import IgnoredEvent, InvalidPayload, SignatureError
from apps.sources.chargebee import ChargebeeAdapter

ADAPTER = ChargebeeAdapter()
SECRET = "hub-webhooks:s3cr3t-pa:ss"
ISSUED = 1_717_200_000  # 2024-06-01 00:00 UTC


def body(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def _day(timestamp: int) -> date:
    return datetime.fromtimestamp(timestamp, UTC).date()


def receive(client: Client, event: dict[str, Any]) -> str:
    """Delivered to the example configuration's Chargebee source and normalized in this process."""
    response = client.post(
        "/webhooks/chargebee-us/",
        data=body(event),
        content_type="application/json",
        HTTP_AUTHORIZATION=cb.basic_auth_header(os.environ["CHARGEBEE_WEBHOOK_CREDENTIALS"]),
    )
    assert response.status_code == 200, response.content
    status = normalize_event(InboxEvent.objects.get(source="chargebee-us", event_id=event["id"]).pk)
    assert status == InboxStatus.PROCESSED, InboxEvent.objects.get(event_id=event["id"]).error
    return status


def parse(event: dict[str, Any]) -> list[Any]:
    return ADAPTER.parse(body(event))


def verify(event: dict[str, Any], authorization: str | None, secrets: list[str] | None = None) -> Any:
    headers = {"content-type": "application/json"}
    if authorization is not None:
        headers["authorization"] = authorization
    return ADAPTER.verify(body(event), headers, [SECRET] if secrets is None else secrets)


def sample_invoice(**kwargs: Any) -> dict[str, Any]:
    lines = [
        cb.line_item(4900, tax=306, date_from=ISSUED, date_to=ISSUED + 30 * 86400),
        cb.line_item(
            250,
            quantity=4,
            description="Extra seats",
            entity_type="addon_item_price",
            entity_id="seat-USD-monthly",
            discount=100,
            tax=56,
            date_from=ISSUED,
            date_to=ISSUED + 30 * 86400,
        ),
    ]
    return cb.invoice("cust_acme", lines, date=ISSUED, **kwargs)


# --- authenticity -----------------------------------------------------------------------------------


def test_the_right_basic_credentials_are_accepted_and_name_the_event() -> None:
    invoice = sample_invoice()
    event = cb.invoice_generated(invoice)
    envelope = verify(event, cb.basic_auth_header(SECRET))
    assert (envelope.event_id, envelope.event_type, envelope.object_id) == (
        event["id"],
        "invoice_generated",
        invoice["id"],
    )


def test_a_payment_event_is_about_its_transaction() -> None:
    invoice = sample_invoice()
    txn = cb.transaction("cust_acme", invoice["total"], [(invoice["id"], invoice["total"])])
    envelope = verify(cb.payment_succeeded(invoice, txn), cb.basic_auth_header(SECRET))
    assert envelope.object_id == txn["id"]


def test_after_rotation_both_the_new_and_the_old_credentials_are_accepted() -> None:
    event = cb.customer_created()
    secrets = ["hub-webhooks:new-password", SECRET]
    assert verify(event, cb.basic_auth_header("hub-webhooks:new-password"), secrets).event_id == event["id"]
    assert verify(event, cb.basic_auth_header(SECRET), secrets).event_id == event["id"]


def test_a_wrong_password_is_refused() -> None:
    with pytest.raises(SignatureError, match="do not match"):
        verify(cb.customer_created(), cb.basic_auth_header("hub-webhooks:guess"))


def test_a_missing_header_is_refused_with_what_to_configure() -> None:
    with pytest.raises(SignatureError, match=r"Missing Authorization header.*basic authentication"):
        verify(cb.customer_created(), None)


@pytest.mark.parametrize(
    ("authorization", "reason"),
    [
        (f"Bearer {SECRET}", "must be 'Basic"),
        ("Basic", "must be 'Basic"),
        ("Basic !!not-base64!!", "not valid base64"),
        (cb.basic_auth_header("no-colon-here"), "username:password"),
    ],
)
def test_malformed_credentials_are_refused(authorization: str, reason: str) -> None:
    with pytest.raises(SignatureError, match=reason):
        verify(cb.customer_created(), authorization)


def test_a_source_without_secrets_accepts_nothing() -> None:
    with pytest.raises(SignatureError, match="No webhook secret"):
        verify(cb.customer_created(), cb.basic_auth_header(SECRET), secrets=[])


def test_an_event_in_another_api_version_is_refused_with_the_setting_to_change() -> None:
    event = cb.customer_created()
    event["api_version"] = "v1"
    with pytest.raises(InvalidPayload, match=r"api_version.*set the webhook's API version to v2"):
        verify(event, cb.basic_auth_header(SECRET))


def test_a_body_that_is_not_a_chargebee_event_is_refused() -> None:
    with pytest.raises(InvalidPayload, match="not a Chargebee event"):
        verify({"id": "evt_stripe", "type": "invoice.paid"}, cb.basic_auth_header(SECRET))


# --- customers --------------------------------------------------------------------------------------


def test_customer_created_becomes_the_authoritative_customer() -> None:
    obj = cb.customer("cust_acme", company="ACME Corp", net_term_days=45, vat_number="DE123456789")
    [customer] = parse(cb.customer_created(obj))
    assert isinstance(customer, CustomerData)
    assert not customer.snapshot
    assert customer.source_id == "cust_acme"
    assert customer.source_version == obj["resource_version"]
    assert (customer.name, customer.email, customer.currency) == ("ACME Corp", "ap@acme.example", "USD")
    assert (customer.tax_id, customer.payment_terms_days) == ("DE123456789", 45)
    assert customer.bill_to == {
        "line1": "1 Main St",
        "line2": "Suite 400",
        "city": "Springfield",
        "postal_code": "62701",
        "state": "IL",
        "country": "US",
    }


def test_a_person_without_a_company_is_named_by_first_and_last_name() -> None:
    obj = cb.customer("cust_ada", company="")
    obj["billing_address"]["company"] = ""
    [customer] = parse(cb.event("customer_changed", {"customer": obj}))
    assert customer.name == "Ada Lovelace"


# --- invoices ---------------------------------------------------------------------------------------


def test_invoice_generated_becomes_an_open_invoice_net_of_discounts_with_taxes_per_line() -> None:
    invoice = sample_invoice()
    [data] = parse(cb.invoice_generated(invoice, cb.customer("cust_acme")))
    assert isinstance(data, InvoiceData)
    assert (data.source_id, data.number, data.status) == (invoice["id"], invoice["id"], "open")
    # 4900 + (4 x 250 - 100 discount) = 5800 net; tax 306 + 56.
    assert (data.subtotal_minor, data.tax_minor, data.total_minor, data.amount_paid_minor) == (5800, 362, 6162, 0)
    assert sum(line.amount_minor for line in data.lines) == data.subtotal_minor
    seats = data.lines[1]
    assert (seats.quantity, seats.unit_amount_minor, seats.amount_minor, seats.tax_minor) == (
        Decimal(4),
        225,
        900,
        56,
    )
    assert (seats.price_id, seats.source_line_id, seats.description) == (
        "seat-USD-monthly",
        invoice["line_items"][1]["id"],
        "Extra seats",
    )
    assert (data.invoice_date, data.due_date) == (date(2024, 6, 1), date(2024, 7, 1))
    assert (data.period_start, data.period_end) == (date(2024, 6, 1), date(2024, 7, 1))
    assert data.currency == "USD" and data.status_date is None
    assert data.customer.source_id == "cust_acme" and data.customer.snapshot
    assert data.source_version == invoice["resource_version"]


def test_without_the_customer_object_the_snapshot_comes_from_the_invoice_billing_address() -> None:
    [data] = parse(cb.invoice_generated(sample_invoice()))
    assert data.customer.snapshot
    assert (data.customer.source_id, data.customer.name, data.customer.email) == (
        "cust_acme",
        "ACME Corp",
        "ap@acme.example",
    )
    assert data.customer.bill_to["city"] == "Springfield"


@pytest.mark.parametrize("status", ["posted", "payment_due", "not_paid"])
def test_unpaid_invoices_are_open_receivables(status: str) -> None:
    [data] = parse(cb.invoice_generated(sample_invoice(status=status)))
    assert data.status == "open"


def test_a_tax_inclusive_invoice_posts_its_lines_without_tax() -> None:
    invoice = cb.invoice("cust_acme", [cb.line_item(1200, tax=200)], date=ISSUED)
    invoice.update(price_type="tax_inclusive", sub_total=1200, tax=200, total=1200)
    [data] = parse(cb.invoice_generated(invoice))
    assert (data.lines[0].amount_minor, data.lines[0].tax_minor) == (1000, 200)
    assert (data.subtotal_minor, data.tax_minor, data.total_minor) == (1000, 200, 1200)


def test_a_voided_invoice_is_void_on_the_day_chargebee_voided_it() -> None:
    invoice = sample_invoice()
    [data] = parse(cb.invoice_voided(invoice, voided_at=ISSUED + 3 * 86400))
    assert (data.status, data.status_date) == ("void", date(2024, 6, 4))
    assert data.source_version > invoice["resource_version"]


def test_a_deleted_invoice_is_void() -> None:
    invoice = sample_invoice()
    [data] = parse(cb.event("invoice_deleted", {"invoice": cb.changed(invoice, deleted=True)}))
    assert data.status == "void"


def test_a_written_off_invoice_is_uncollectible_for_the_written_off_amount() -> None:
    invoice = sample_invoice()  # total 6162
    written_off = cb.changed(invoice, status="paid", amount_adjusted=162, write_off_amount=6000, amount_due=0)
    [data] = parse(cb.event("invoice_updated", {"invoice": written_off}))
    assert data.status == "uncollectible"
    # The hub writes off total - amount_paid: exactly Chargebee's write_off_amount.
    assert data.total_minor - data.amount_paid_minor == 6000


def test_the_write_off_credit_note_is_not_posted_a_second_time() -> None:
    invoice = sample_invoice()
    note = cb.credit_note(
        invoice,
        [cb.credit_line(invoice["line_items"][0], 4900)],
        credit_type="adjustment",
        reason_code="write_off",
        create_reason_code="Write Off",
    )
    with pytest.raises(IgnoredEvent, match="write-off"):
        parse(cb.credit_note_created(note))


def test_a_pending_invoice_waits_until_chargebee_closes_it() -> None:
    with pytest.raises(IgnoredEvent, match="pending"):
        parse(cb.invoice_generated(sample_invoice(status="pending")))


def test_an_unknown_invoice_status_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidPayload, match="'status' 'draft'"):
        parse(cb.invoice_generated(sample_invoice(status="draft")))


# --- payments ---------------------------------------------------------------------------------------


def test_payment_succeeded_gives_the_paid_invoice_and_the_payment_applied_to_it() -> None:
    invoice = sample_invoice()
    txn = cb.transaction("cust_acme", 6162, [(invoice["id"], 6162)], date=ISSUED + 3600, payment_method="card")
    data, payment = parse(cb.payment_succeeded(invoice, txn))
    assert isinstance(data, InvoiceData) and isinstance(payment, PaymentData)
    assert (data.status, data.amount_paid_minor, data.status_date) == ("paid", 6162, date(2024, 6, 1))
    assert (payment.source_id, payment.customer_source_id, payment.currency) == (txn["id"], "cust_acme", "USD")
    assert (payment.amount_minor, payment.method) == (6162, "card")
    assert payment.settled_at == datetime(2024, 6, 1, 1, 0, tzinfo=UTC)
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [(invoice["id"], 6162)]


def test_a_payment_applied_to_two_invoices_gives_two_applications() -> None:
    first, second = sample_invoice(), sample_invoice()
    txn = cb.transaction("cust_acme", 10_000, [(first["id"], 6162), (second["id"], 3838)], payment_method="check")
    _, payment = parse(cb.payment_succeeded(first, txn))
    assert payment.amount_minor == 10_000
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [
        (first["id"], 6162),
        (second["id"], 3838),
    ]


def test_applications_larger_than_the_payment_are_refused() -> None:
    invoice = sample_invoice()
    txn = cb.transaction("cust_acme", 100, [(invoice["id"], 6162)])
    with pytest.raises(InvalidPayload, match="more than the transaction's amount 100"):
        parse(cb.payment_succeeded(invoice, txn))


# --- customer credit (excess payments) --------------------------------------------------------------


def test_an_over_payment_leaves_its_unused_amount_as_customer_credit() -> None:
    invoice = sample_invoice()
    txn = cb.transaction("cust_acme", 10_000, [(invoice["id"], 6162)], payment_method="bank_transfer")
    assert txn["amount_unused"] == 3838
    _, payment = parse(cb.payment_succeeded(invoice, txn))
    assert (payment.amount_minor, payment.unapplied_is_credit) == (10_000, True)
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [(invoice["id"], 6162)]


def test_an_excess_payment_applied_later_is_the_same_payment_with_one_more_application() -> None:
    first, second = sample_invoice(), sample_invoice()
    txn = cb.transaction("cust_acme", 10_000, [(first["id"], 6162)])
    _, earlier = parse(cb.payment_succeeded(first, txn))
    second_paid, txn_after = cb.excess_applied(second, txn, 3838)
    [payment] = parse(cb.transaction_event("transaction_updated", txn_after))
    assert isinstance(payment, PaymentData)
    assert (payment.source_id, payment.amount_minor) == (txn["id"], 10_000)
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [
        (first["id"], 6162),
        (second["id"], 3838),
    ]
    assert payment.source_version > earlier.source_version
    [invoice] = parse(cb.invoice_generated(second_paid))
    assert (invoice.status, invoice.amount_paid_minor) == ("open", 3838)


def test_a_payment_recorded_without_an_invoice_is_all_customer_credit() -> None:
    txn = cb.transaction("cust_acme", 5000, [], payment_method="check")
    [payment] = parse(cb.transaction_event("transaction_created", txn))
    assert (payment.amount_minor, payment.applications, payment.unapplied_is_credit) == (5000, (), True)


def test_a_deleted_payment_fails_with_what_to_do_in_the_erp() -> None:
    txn = cb.changed(cb.transaction("cust_acme", 5000, [], payment_method="cash"), deleted=True)
    with pytest.raises(InvalidPayload, match=f"deleted payment {txn['id']}.*reverse it there by hand"):
        parse(cb.transaction_event("transaction_deleted", txn))


def test_a_refund_transaction_on_its_own_is_not_posted() -> None:
    refund = dict(cb.transaction("cust_acme", 500, []), type="refund", payment_method="card")
    with pytest.raises(IgnoredEvent, match="refunds reach the hub through the credit note"):
        parse(cb.transaction_event("transaction_created", refund))


def test_over_payment_then_excess_applied_plans_credit_then_a_credit_application(
    client: Client, configured: None
) -> None:
    customer = cb.customer()
    first = cb.invoice(customer["id"], [cb.line_item(6150)])
    second = cb.invoice(customer["id"], [cb.line_item(6150)])
    txn = cb.transaction(customer["id"], 10_000, [(first["id"], 6150)])
    receive(client, cb.invoice_generated(first, customer))
    receive(client, cb.payment_succeeded(first, txn))
    assert Payment.objects.get(source_id=txn["id"]).on_account_minor == 3850
    assert Posting.objects.filter(source_id=f"{txn['id']}:on-account", operation=Operation.RECEIVE_ON_ACCOUNT).exists()

    second_paid, txn_after = cb.excess_applied(second, txn, 3850)
    receive(client, cb.transaction_event("transaction_updated", txn_after))  # before its invoice: kept
    receive(client, cb.invoice_generated(second_paid))
    application = Payment.objects.get(source_id=txn["id"]).applications.get(invoice_source_id=second["id"])
    assert (application.amount_minor, application.from_credit) == (3850, True)
    assert Posting.objects.filter(source_id=f"{txn['id']}:{second['id']}", operation=Operation.APPLY_CREDIT).exists()
    assert not Posting.objects.filter(source_id=f"{txn['id']}:{second['id']}", operation=Operation.APPLY_PAYMENT)


# --- chargebacks ------------------------------------------------------------------------------------


def paid_invoice() -> tuple[dict[str, Any], dict[str, Any]]:
    invoice = sample_invoice()
    return invoice, cb.transaction("cust_acme", 6162, [(invoice["id"], 6162)], date=ISSUED + 3600)


def test_a_chargeback_booked_with_its_credit_note_is_a_lost_dispute_on_the_payment() -> None:
    invoice, txn = paid_invoice()
    event = cb.chargeback_lost(invoice, txn)
    [dispute] = parse(event)
    refund = event["content"]["transaction"]
    assert isinstance(dispute, DisputeData)
    assert (dispute.source_id, dispute.payment_source_id, dispute.status) == (refund["id"], txn["id"], "lost")
    assert (dispute.amount_minor, dispute.currency, dispute.reason) == (6162, "USD", "chargeback")
    assert dispute.opened_on == dispute.closed_on == _day(refund["date"])
    assert verify(event, cb.basic_auth_header(SECRET)).object_id == refund["id"]


def test_the_chargeback_refund_reported_on_its_own_is_the_same_lost_dispute() -> None:
    invoice, txn = paid_invoice()
    refund = cb.chargeback_lost(invoice, txn)["content"]["transaction"]
    [dispute] = parse(cb.transaction_event("transaction_created", refund))
    assert (dispute.source_id, dispute.status) == (refund["id"], "lost")


def test_the_chargeback_credit_note_is_not_posted_as_a_credit_note() -> None:
    invoice, txn = paid_invoice()
    note = cb.chargeback_lost(invoice, txn)["content"]["credit_note"]
    with pytest.raises(IgnoredEvent, match=r"records a chargeback.*dispute of its chargeback refund"):
        parse(cb.credit_note_created(note))


def test_a_chargeback_refund_without_a_credit_note_withdraws_the_funds_while_it_runs() -> None:
    _, txn = paid_invoice()
    refund = cb.chargeback_refund(txn, 5000)
    [dispute] = parse(cb.transaction_event("transaction_created", refund))
    assert (dispute.status, dispute.amount_minor, dispute.payment_source_id, dispute.closed_on) == (
        "open",
        5000,
        txn["id"],
        None,
    )


def test_removing_an_open_chargeback_refund_wins_the_dispute() -> None:
    _, txn = paid_invoice()
    refund = cb.chargeback_refund(txn)
    [opened] = parse(cb.transaction_event("transaction_created", refund))
    removal = cb.chargeback_removed(refund)
    removal["occurred_at"] = ISSUED + 10 * 86400
    [won] = parse(removal)
    assert (won.source_id, won.status, won.closed_on) == (refund["id"], "won", date(2024, 6, 11))
    assert won.source_version > opened.source_version


def test_a_voided_chargeback_refund_is_won_too() -> None:
    _, txn = paid_invoice()
    voided = cb.changed(cb.chargeback_refund(txn), status="voided", voided_at=ISSUED + 86400)
    [won] = parse(cb.transaction_event("transaction_updated", voided))
    assert (won.status, won.closed_on) == ("won", date(2024, 6, 2))


def test_removing_a_chargeback_booked_as_lost_fails_with_what_finance_does() -> None:
    invoice, txn = paid_invoice()
    refund = cb.chargeback_lost(invoice, txn)["content"]["transaction"]
    with pytest.raises(
        InvalidPayload, match=r"booked as lost with credit note CN-.*Reverse the dispute loss in the ERP"
    ):
        parse(cb.chargeback_removed(refund))


def test_a_failed_chargeback_refund_moved_no_money() -> None:
    _, txn = paid_invoice()
    failed = cb.changed(cb.chargeback_refund(txn), status="failure")
    with pytest.raises(IgnoredEvent, match="no money moved"):
        parse(cb.transaction_event("transaction_updated", failed))


def test_a_chargeback_that_names_no_payment_is_refused_naming_the_field() -> None:
    _, txn = paid_invoice()
    refund = cb.chargeback_refund(txn)
    del refund["refunded_txn_id"]
    with pytest.raises(InvalidPayload, match="'refunded_txn_id' is missing"):
        parse(cb.transaction_event("transaction_created", refund))


def test_a_chargeback_opened_then_won_reaches_the_ledger_and_plans_both_movements(
    client: Client, configured: None
) -> None:
    customer = cb.customer()
    invoice = cb.invoice(customer["id"], [cb.line_item(6150)])
    txn = cb.transaction(customer["id"], 6150, [(invoice["id"], 6150)])
    receive(client, cb.invoice_generated(invoice, customer))
    receive(client, cb.payment_succeeded(invoice, txn))
    refund = cb.chargeback_refund(txn)
    receive(client, cb.transaction_event("transaction_created", refund))
    receive(client, cb.chargeback_removed(refund))
    dispute = Dispute.objects.get(source_id=refund["id"])
    assert (dispute.status, dispute.payment.source_id, dispute.amount_minor) == ("won", txn["id"], 6150)
    assert sorted(Posting.objects.filter(dispute=dispute).values_list("operation", flat=True)) == sorted(
        [Operation.WITHDRAW_DISPUTED_FUNDS, Operation.REINSTATE_DISPUTED_FUNDS]
    )


# --- credit notes -----------------------------------------------------------------------------------


def test_a_refunded_credit_note_becomes_an_issued_credit_memo_with_its_refund() -> None:
    invoice = sample_invoice()
    note = cb.credit_note(invoice, [cb.credit_line(invoice["line_items"][0], 2000, tax=125)], refunded=2125)
    [memo] = parse(cb.credit_note_created(note))
    assert isinstance(memo, CreditMemoData)
    assert (memo.source_id, memo.invoice_source_id, memo.customer_source_id) == (note["id"], invoice["id"], "cust_acme")
    assert (memo.status, memo.refunded_minor) == ("issued", 2125)
    assert (memo.subtotal_minor, memo.tax_minor, memo.total_minor) == (2000, 125, 2125)
    assert memo.lines[0].invoice_line_source_id == invoice["line_items"][0]["id"]
    assert memo.reason == "Product Unsatisfactory"


def test_a_voided_credit_note_is_void() -> None:
    invoice = sample_invoice()
    note = cb.credit_note(invoice, [cb.credit_line(invoice["line_items"][0], 2000)])
    voided = cb.changed(note, status="voided", voided_at=ISSUED + 86400)
    [memo] = parse(cb.event("credit_note_updated", {"credit_note": voided}))
    assert (memo.status, memo.status_date) == ("void", date(2024, 6, 2))


def test_a_credit_note_without_an_invoice_is_refused_naming_the_field() -> None:
    invoice = sample_invoice()
    note = cb.credit_note(invoice, [cb.credit_line(invoice["line_items"][0], 2000)])
    note["reference_invoice_id"] = None
    with pytest.raises(InvalidPayload, match="'reference_invoice_id' is missing"):
        parse(cb.credit_note_created(note))


def test_payment_refunded_posts_the_credit_note_it_refunds() -> None:
    invoice = sample_invoice()
    note = cb.credit_note(invoice, [cb.credit_line(invoice["line_items"][0], 4900, tax=306)], refunded=5206)
    [memo] = parse(cb.payment_refunded(note, 5206))
    assert (memo.source_id, memo.refunded_minor, memo.total_minor) == (note["id"], 5206, 5206)


def test_payment_refunded_without_a_credit_note_is_ignored_with_the_reason() -> None:
    event = cb.payment_refunded(cb.credit_note(sample_invoice(), [cb.line_item(100)]), 100)
    del event["content"]["credit_note"]
    with pytest.raises(IgnoredEvent, match="carries no credit note"):
        parse(event)


# --- what is not posted, and what cannot be ---------------------------------------------------------


def test_an_event_type_the_hub_does_not_post_is_ignored() -> None:
    event = cb.event("subscription_created", {"subscription": {"id": "sub_1"}, "customer": cb.customer()})
    with pytest.raises(IgnoredEvent, match=r"^Chargebee event type subscription_created is not posted"):
        parse(event)
    assert verify(event, cb.basic_auth_header(SECRET)).object_id == "sub_1"


def test_a_float_amount_is_refused_naming_the_line_and_field() -> None:
    invoice = sample_invoice()
    invoice["line_items"][1]["amount"] = 1000.5
    with pytest.raises(InvalidPayload, match=r"line_items\[1\].*'amount' must be an integer.*1000\.5"):
        parse(cb.invoice_generated(invoice))


def test_a_float_payment_amount_is_refused_naming_the_field() -> None:
    invoice = sample_invoice()
    txn = cb.transaction("cust_acme", 6162, [(invoice["id"], 6162)])
    txn["amount"] = 61.62
    with pytest.raises(InvalidPayload, match=f"transaction {txn['id']}: 'amount' must be an integer"):
        parse(cb.payment_succeeded(invoice, txn))


def test_an_invalid_currency_is_refused_naming_the_field() -> None:
    invoice = sample_invoice(currency="dollars")
    with pytest.raises(InvalidPayload, match="'currency_code'"):
        parse(cb.invoice_generated(invoice))


# --- ordering ---------------------------------------------------------------------------------------


def test_a_later_change_has_a_higher_source_version() -> None:
    invoice = sample_invoice()
    txn = cb.transaction("cust_acme", 6162, [(invoice["id"], 6162)])
    [generated] = parse(cb.invoice_generated(invoice))
    paid, _ = parse(cb.payment_succeeded(invoice, txn))
    assert paid.source_version > generated.source_version


def test_without_resource_version_the_event_time_orders_changes() -> None:
    invoice = sample_invoice()
    del invoice["resource_version"], invoice["updated_at"]
    earlier = cb.event("invoice_generated", {"invoice": invoice}, occurred_at=ISSUED)
    later = cb.event("invoice_updated", {"invoice": dict(invoice, status="voided")}, occurred_at=ISSUED + 60)
    [first], [second] = parse(earlier), parse(later)
    assert (first.source_version, second.source_version) == (ISSUED * 1000, (ISSUED + 60) * 1000)
