import base64
import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import jwt
import pytest
from django.db import DatabaseError, connection, transaction
from django.test import Client

from apps.ingest.models import InboxEvent, InboxStatus
from apps.ingest.services import normalize_event
from apps.ledger import services as ledger
from apps.ledger.commands import CreditMemoData, CustomerData, DisputeData, InvoiceData, PaymentData
from apps.ledger.models import Dispute, Invoice, Payment, PaymentApplication
from apps.posting.models import Operation, Posting
from apps.sources import lago
from apps.sources import lago_samples as samples
from apps.sources.base import IgnoredEvent, InvalidPayload, SignatureError
from apps.sources.lago import LagoAdapter, payment_id
from tests.lago_simulator import API_KEY as LAGO_API_KEY
from tests.lago_simulator import LagoSimulator

ADAPTER = LagoAdapter()
HMAC_KEY = "hmac_current_key"
PRIVATE_KEY, PUBLIC_KEY = samples.rsa_key_pair()
OTHER_PRIVATE_KEY, OTHER_PUBLIC_KEY = samples.rsa_key_pair()


def lowered(headers: dict[str, str]) -> dict[str, str]:
    return {key.lower(): value for key, value in headers.items()}


def customer_body() -> bytes:
    return samples.body(samples.webhook("customer.created", samples.customer()))


def parse(message: dict[str, Any]) -> list[Any]:
    return ADAPTER.parse(samples.body(message))


def invoice_of(commands: list[Any]) -> InvoiceData:
    [invoice] = [command for command in commands if isinstance(command, InvoiceData)]
    return invoice


def reconciles(document: InvoiceData | CreditMemoData) -> bool:
    return (
        sum(line.amount_minor for line in document.lines) == document.subtotal_minor
        and sum(line.tax_minor for line in document.lines) == document.tax_minor
        and document.subtotal_minor + document.tax_minor == document.total_minor
    )


# --- HMAC ----------------------------------------------------------------------------------------


def test_hmac_signed_webhook_is_accepted_and_named_by_its_unique_key() -> None:
    body = customer_body()
    headers = samples.headers(body, hmac_key=HMAC_KEY, unique_key="0f1e2d3c-unique")
    envelope = ADAPTER.verify(body, lowered(headers), [HMAC_KEY])
    assert envelope.event_id == "0f1e2d3c-unique"
    assert envelope.event_type == "customer.created"
    assert envelope.object_id == json.loads(body)["customer"]["lago_id"]


def test_a_webhook_signed_with_the_previous_hmac_key_is_accepted_during_rotation() -> None:
    body = customer_body()
    headers = lowered(samples.headers(body, hmac_key="hmac_previous_key"))
    ADAPTER.verify(body, headers, [HMAC_KEY, "hmac_previous_key"])
    ADAPTER.verify(body, headers, [PUBLIC_KEY, "hmac_previous_key"])  # a public key beside it is not tried


def test_hmac_with_a_wrong_key_or_a_tampered_body_is_refused() -> None:
    body = customer_body()
    headers = lowered(samples.headers(body, hmac_key="hmac_retired_key"))
    with pytest.raises(SignatureError, match="does not match the body for any configured HMAC key"):
        ADAPTER.verify(body, headers, [HMAC_KEY])
    good = lowered(samples.headers(body, hmac_key=HMAC_KEY))
    with pytest.raises(SignatureError, match="does not match"):
        ADAPTER.verify(body.replace(b"ACME", b"EVIL"), good, [HMAC_KEY])


def test_missing_signature_algorithm_or_secret_is_refused_with_a_reason() -> None:
    body = customer_body()
    headers = lowered(samples.headers(body, hmac_key=HMAC_KEY))
    with pytest.raises(SignatureError, match="Missing X-Lago-Signature header"):
        ADAPTER.verify(body, {k: v for k, v in headers.items() if k != "x-lago-signature"}, [HMAC_KEY])
    with pytest.raises(SignatureError, match="Missing X-Lago-Signature-Algorithm header"):
        ADAPTER.verify(body, {k: v for k, v in headers.items() if k != "x-lago-signature-algorithm"}, [HMAC_KEY])
    with pytest.raises(SignatureError, match="Unknown X-Lago-Signature-Algorithm 'sha1'"):
        ADAPTER.verify(body, {**headers, "x-lago-signature-algorithm": "sha1"}, [HMAC_KEY])
    with pytest.raises(SignatureError, match="No webhook secret is configured"):
        ADAPTER.verify(body, headers, [])
    with pytest.raises(SignatureError, match="only has JWT public keys"):
        ADAPTER.verify(body, headers, [PUBLIC_KEY])


# --- JWT -----------------------------------------------------------------------------------------


def test_jwt_signed_webhook_is_accepted_with_lagos_public_key() -> None:
    body = customer_body()
    headers = lowered(samples.headers(body, private_key=PRIVATE_KEY))
    assert ADAPTER.verify(body, headers, [HMAC_KEY, PUBLIC_KEY]).event_type == "customer.created"
    # As GET /api/v1/webhooks/public_key answers it (base64 of the PEM), and as an env var with \n escapes.
    ADAPTER.verify(body, headers, [base64.encodebytes(PUBLIC_KEY.encode()).decode()])
    ADAPTER.verify(body, headers, [PUBLIC_KEY.replace("\n", "\\n")])


def test_jwt_signed_with_another_key_is_refused() -> None:
    body = customer_body()
    headers = lowered(samples.headers(body, private_key=OTHER_PRIVATE_KEY))
    with pytest.raises(SignatureError, match="not signed by any configured Lago public key"):
        ADAPTER.verify(body, headers, [PUBLIC_KEY])
    with pytest.raises(SignatureError, match="no Lago public key"):
        ADAPTER.verify(body, headers, [HMAC_KEY])
    broken = (
        "-----BEGIN PUBLIC KEY-----\nMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAbroken\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(SignatureError, match=r"1 configured public key\(s\) could not be read"):
        ADAPTER.verify(body, headers, [broken])


def test_a_genuine_jwt_replayed_on_an_altered_body_is_refused() -> None:
    body = customer_body()
    headers = lowered(samples.headers(body, private_key=PRIVATE_KEY))
    with pytest.raises(SignatureError, match="signed by Lago for another body"):
        ADAPTER.verify(body.replace(b"ACME", b"EVIL"), headers, [PUBLIC_KEY])


def test_unsigned_or_malformed_jwts_are_refused() -> None:
    body = customer_body()
    unsigned = jwt.encode({"data": body.decode(), "iss": samples.LAGO_API_URL}, key=None, algorithm="none")
    headers = lowered(samples.headers(body, private_key=PRIVATE_KEY))
    with pytest.raises(SignatureError, match="not a valid Lago JWT"):
        ADAPTER.verify(body, {**headers, "x-lago-signature": unsigned}, [PUBLIC_KEY])
    with pytest.raises(SignatureError, match="not a valid Lago JWT"):
        ADAPTER.verify(body, {**headers, "x-lago-signature": "garbage"}, [PUBLIC_KEY])
    # The public key used as an HMAC secret (algorithm confusion) is not accepted.
    segments = [
        base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=")
        for part in ({"alg": "HS256", "typ": "JWT"}, {"data": body.decode(), "iss": samples.LAGO_API_URL})
    ]
    signing_input = b".".join(segments)
    mac = base64.urlsafe_b64encode(hmac.new(PUBLIC_KEY.encode(), signing_input, hashlib.sha256).digest()).rstrip(b"=")
    confused = (signing_input + b"." + mac).decode()
    with pytest.raises(SignatureError, match="not a valid Lago JWT"):
        ADAPTER.verify(body, {**headers, "x-lago-signature": confused}, [PUBLIC_KEY])
    no_issuer = jwt.encode({"data": body.decode()}, PRIVATE_KEY, algorithm="RS256")
    with pytest.raises(SignatureError, match="iss"):
        ADAPTER.verify(body, {**headers, "x-lago-signature": no_issuer}, [PUBLIC_KEY])


# --- envelope ------------------------------------------------------------------------------------


def test_without_a_unique_key_the_event_id_is_stable_for_retries_and_new_for_an_update() -> None:
    customer = samples.customer(updated_at="2025-03-01T10:00:00Z")
    body = samples.body(samples.webhook("customer.updated", customer))
    headers = lowered(samples.headers(body, hmac_key=HMAC_KEY))
    del headers["x-lago-unique-key"]
    first = ADAPTER.verify(body, headers, [HMAC_KEY]).event_id
    assert first == ADAPTER.verify(body, headers, [HMAC_KEY]).event_id
    assert first == f"customer.updated:{customer['lago_id']}:2025-03-01T10:00:00Z"
    later = samples.body(samples.webhook("customer.updated", {**customer, "updated_at": "2025-03-02T10:00:00Z"}))
    assert (
        ADAPTER.verify(
            later, lowered(samples.headers(later, hmac_key=HMAC_KEY)) | {"x-lago-unique-key": ""}, [HMAC_KEY]
        ).event_id
        != first
    )


def test_a_body_that_is_not_a_lago_webhook_is_invalid() -> None:
    for body, message in [
        (b"{nope", "not valid JSON"),
        (b'{"type": "invoice"}', "needs 'webhook_type'"),
        (b'{"webhook_type": "invoice.created", "object_type": "invoice"}', "no object under its object_type"),
    ]:
        with pytest.raises(InvalidPayload, match=message):
            ADAPTER.verify(body, lowered(samples.headers(body, hmac_key=HMAC_KEY)), [HMAC_KEY])


# --- customers -----------------------------------------------------------------------------------


def test_customer_webhook_becomes_customer_data_named_by_lago_id() -> None:
    customer = samples.customer(updated_at="2025-03-01T10:00:00Z")
    [data] = parse(samples.webhook("customer.created", customer))
    assert isinstance(data, CustomerData)
    assert data.source_id == customer["lago_id"]
    assert data.name == "ACME Corporation Inc."
    assert (data.email, data.currency, data.tax_id, data.payment_terms_days) == (
        "ap@acme.example",
        "USD",
        "US123456789",
        30,
    )
    assert data.bill_to == {
        "line1": "5230 Penfield Ave",
        "line2": "",
        "city": "Woodland Hills",
        "postal_code": "91364",
        "state": "CA",
        "country": "US",
    }
    assert data.sold_to == {}
    assert data.snapshot is False
    assert data.source_version == int(datetime(2025, 3, 1, 10, tzinfo=UTC).timestamp() * 1000)


def test_a_later_customer_update_has_a_higher_source_version() -> None:
    customer = samples.customer(updated_at="2025-03-01T10:00:00Z")
    [before] = parse(samples.webhook("customer.created", customer))
    [after] = parse(samples.webhook("customer.updated", {**customer, "updated_at": "2025-03-01T10:00:01Z"}))
    assert after.source_version > before.source_version


# --- invoices ------------------------------------------------------------------------------------


def test_finalized_invoice_is_posted_open_with_exact_amounts() -> None:
    customer = samples.customer()
    plan = samples.fee(10000, code="startup", name="Startup plan", period_start=date(2025, 3, 1))
    usage = samples.fee(2550, units="51.0", code="api_calls", name="API calls", fee_type="charge")
    empty = samples.fee(0, units="0.0", code="storage", name="Storage", fee_type="charge")
    invoice = samples.invoice(customer, [plan, usage, empty], number="ACME-001", issuing_date=date(2025, 3, 31))
    commands = parse(samples.webhook("invoice.created", invoice))
    assert len(commands) == 1
    data = invoice_of(commands)
    assert data.source_id == invoice["lago_id"]
    assert (data.number, data.status, data.currency) == ("ACME-001", "open", "USD")
    assert (data.subtotal_minor, data.tax_minor, data.total_minor, data.amount_paid_minor) == (12550, 2510, 15060, 0)
    assert (data.invoice_date, data.due_date) == (date(2025, 3, 31), date(2025, 4, 30))
    assert [(line.description, line.amount_minor, line.tax_minor) for line in data.lines] == [
        ("Startup plan", 10000, 2000),
        ("API calls", 2550, 510),
    ]
    usage_line = data.lines[1]
    assert (usage_line.quantity, usage_line.unit_amount_minor) == (Decimal("51.0"), 50)
    assert (usage_line.source_line_id, usage_line.product_source_id) == (usage["lago_id"], "api_calls")
    assert data.lines[0].period_start == date(2025, 3, 1)
    assert data.customer.source_id == customer["lago_id"] and data.customer.snapshot is True
    assert reconciles(data)


def test_coupons_and_progressive_billing_credit_become_negative_lines_that_reconcile() -> None:
    invoice = samples.invoice(
        samples.customer(),
        [samples.fee(10000, taxes_amount_cents=1600)],
        coupons_amount_cents=1500,
        progressive_billing_credit_amount_cents=500,
        taxes_amount_cents=1600,
    )
    data = invoice_of(parse(samples.webhook("invoice.created", invoice)))
    assert (data.subtotal_minor, data.tax_minor, data.total_minor) == (8000, 1600, 9600)
    assert [(line.description, line.amount_minor, line.price_id) for line in data.lines[1:]] == [
        ("Coupons", -1500, "coupons"),
        ("Usage already billed", -500, "progressive_billing_credit"),
    ]
    assert reconciles(data)


def test_a_cent_of_tax_rounding_between_fees_and_invoice_is_settled_on_the_lines() -> None:
    fees = [samples.fee(333, taxes_rate=10.0), samples.fee(333, taxes_rate=10.0), samples.fee(334, taxes_rate=10.0)]
    assert sum(item["taxes_amount_cents"] for item in fees) == 99  # each rounded: 33 + 33 + 33
    invoice = samples.invoice(samples.customer(), fees, taxes_amount_cents=100)  # round(99.99)
    data = invoice_of(parse(samples.webhook("invoice.created", invoice)))
    assert data.tax_minor == 100
    assert sorted(line.tax_minor for line in data.lines) == [33, 33, 34]
    assert reconciles(data)


def payments_of(commands: list[Any]) -> list[PaymentData]:
    return [command for command in commands if isinstance(command, PaymentData)]


def test_an_invoice_paid_by_a_payment_record_brings_no_second_payment() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], payment_status="succeeded")
    assert invoice["total_paid_amount_cents"] == 12000  # Lago summed the provider's payment record
    commands = parse(samples.webhook("invoice.payment_status_updated", invoice))
    assert [type(command) for command in commands] == [InvoiceData]
    assert (invoice_of(commands).status, invoice_of(commands).amount_paid_minor) == ("paid", 12000)


def test_an_invoice_marked_paid_without_a_payment_record_brings_one_payment_for_it() -> None:
    customer = samples.customer(payment_provider="gocardless")
    invoice = samples.invoice(
        customer,
        [samples.fee(10000)],
        payment_status="succeeded",
        total_paid_amount_cents=0,  # PUT /invoices/{id} with payment_status succeeded: no payment record
        prepaid_credit_amount_cents=2000,
        updated_at="2025-04-02T09:30:00Z",
    )
    commands = parse(samples.webhook("invoice.payment_status_updated", invoice))
    data = invoice_of(commands)
    assert (data.status, data.total_minor, data.amount_paid_minor, data.status_date) == (
        "paid",
        12000,
        12000,  # 100.00 of cash and 20.00 of prepaid credits
        date(2025, 4, 2),
    )
    [credits, payment] = payments_of(commands)
    assert payment.source_id == payment_id(invoice["lago_id"]) == f"{invoice['lago_id']}:payment"
    assert (payment.amount_minor, payment.currency, payment.method) == (10000, "USD", "gocardless")
    assert payment.customer_source_id == customer["lago_id"]
    assert payment.settled_at == datetime(2025, 4, 2, 9, 30, tzinfo=UTC)
    assert [(a.invoice_source_id, a.amount_minor, a.from_credit) for a in payment.applications] == [
        (invoice["lago_id"], 10000, False)
    ]
    assert credits.source_id == f"{invoice['lago_id']}:prepaid-credits"
    # A redelivery names the same payments, so nothing is counted twice.
    assert [p.source_id for p in payments_of(parse(samples.webhook("invoice.payment_status_updated", invoice)))] == [
        credits.source_id,
        payment.source_id,
    ]


def test_only_what_no_payment_record_covers_is_paid_from_the_invoice() -> None:
    invoice = samples.invoice(
        samples.customer(), [samples.fee(10000)], payment_status="succeeded", total_paid_amount_cents=3000
    )  # 30.00 recorded as a manual payment, then the invoice marked paid by hand
    [payment] = payments_of(parse(samples.webhook("invoice.payment_status_updated", invoice)))
    assert payment.amount_minor == 9000


def test_a_partly_paid_invoice_stays_open_with_what_its_payment_records_hold() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], total_paid_amount_cents=2000)
    commands = parse(samples.webhook("invoice.created", invoice))
    assert [type(command) for command in commands] == [InvoiceData]
    assert (invoice_of(commands).status, invoice_of(commands).amount_paid_minor) == ("open", 2000)


def test_invoice_paid_entirely_by_prepaid_credits_settles_it_from_the_customers_credit() -> None:
    invoice = samples.invoice(
        samples.customer(), [samples.fee(10000)], payment_status="succeeded", prepaid_credit_amount_cents=12000
    )
    commands = parse(samples.webhook("invoice.payment_status_updated", invoice))
    data = invoice_of(commands)
    [credits] = payments_of(commands)
    assert (data.status, data.amount_paid_minor) == ("paid", 12000)
    assert (credits.amount_minor, credits.method, credits.unapplied_is_credit) == (12000, "prepaid_credits", False)
    assert [(a.invoice_source_id, a.amount_minor, a.from_credit) for a in credits.applications] == [
        (invoice["lago_id"], 12000, True)
    ]


def test_credit_notes_used_on_an_invoice_settle_it_from_the_customers_credit() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(5000)], credit_notes_amount_cents=1500)
    commands = parse(samples.webhook("invoice.created", invoice))
    data = invoice_of(commands)
    [credits] = payments_of(commands)
    assert (data.status, data.total_minor, data.amount_paid_minor) == ("open", 6000, 1500)
    assert credits.source_id == f"{invoice['lago_id']}:credit-notes"
    assert [(a.amount_minor, a.from_credit) for a in credits.applications] == [(1500, True)]
    assert credits.settled_at.date() == data.invoice_date


def test_free_credits_are_a_discount_line_and_purchased_ones_a_settlement() -> None:
    invoice = samples.invoice(
        samples.customer(),
        [samples.fee(10000)],
        prepaid_credit_amount_cents=5000,
        prepaid_granted_credit_amount_cents=2000,
    )
    assert invoice["total_amount_cents"] == 7000
    commands = parse(samples.webhook("invoice.created", invoice))
    data = invoice_of(commands)
    assert (data.subtotal_minor, data.tax_minor, data.total_minor, data.amount_paid_minor) == (8000, 2000, 10000, 3000)
    assert (data.lines[-1].description, data.lines[-1].amount_minor, data.lines[-1].tax_minor) == (
        "Free credits",
        -2000,
        0,
    )
    assert reconciles(data)
    assert data.total_minor - data.amount_paid_minor == invoice["total_amount_cents"]  # what Lago says is due
    [credits] = payments_of(commands)
    assert (credits.source_id, credits.amount_minor) == (f"{invoice['lago_id']}:prepaid-credits", 3000)


def test_prepaid_credits_that_do_not_add_up_are_refused() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], prepaid_credit_amount_cents=5000)
    invoice["prepaid_granted_credit_amount_cents"] = 4000  # 4000 + 5000 purchased != 5000
    with pytest.raises(InvalidPayload, match="prepaid credits of 5000 cents do not split"):
        parse(samples.webhook("invoice.created", invoice))


def test_failed_payment_leaves_the_invoice_open_without_payment() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], payment_status="failed")
    commands = parse(samples.webhook("invoice.payment_status_updated", invoice))
    assert [type(command) for command in commands] == [InvoiceData]
    assert invoice_of(commands).status == "open"


def test_voided_invoice_is_void_on_the_day_lago_voided_it() -> None:
    invoice = samples.invoice(
        samples.customer(), [samples.fee(10000)], status="voided", voided_at="2025-05-06T12:00:00Z"
    )
    data = invoice_of(parse(samples.webhook("invoice.voided", invoice)))
    assert (data.status, data.status_date, data.total_minor) == ("void", date(2025, 5, 6), 12000)


def test_a_later_invoice_update_has_a_higher_source_version() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], updated_at="2025-04-01T00:00:00Z")
    created = invoice_of(parse(samples.webhook("invoice.created", invoice)))
    paid_invoice = {**invoice, "payment_status": "succeeded", "updated_at": "2025-04-03T08:00:00Z"}
    paid = invoice_of(parse(samples.webhook("invoice.payment_status_updated", paid_invoice)))
    assert paid.source_version > created.source_version


def test_voided_invoice_with_money_paid_on_it_is_uncollectible_for_the_unpaid_rest() -> None:
    invoice = samples.invoice(
        samples.customer(),
        [samples.fee(10000)],
        status="voided",
        total_paid_amount_cents=4000,
        voided_at="2025-05-06T12:00:00Z",
    )
    commands = parse(samples.webhook("invoice.voided", invoice))
    data = invoice_of(commands)
    assert (data.status, data.status_date, data.total_minor, data.amount_paid_minor) == (
        "uncollectible",
        date(2025, 5, 6),
        12000,
        4000,
    )
    assert payments_of(commands) == []  # the payment arrived as its own record


def test_draft_invoices_are_ignored_with_a_reason() -> None:
    draft = samples.invoice(samples.customer(), [samples.fee(10000)], status="draft", number="ACME-DRAFT")
    with pytest.raises(IgnoredEvent, match="draft can still change"):
        parse(samples.webhook("invoice.drafted", draft))
    with pytest.raises(IgnoredEvent, match="only finalized and voided invoices are posted"):
        parse(samples.webhook("invoice.created", draft))


# --- payments ------------------------------------------------------------------------------------


def test_a_provider_payment_is_a_payment_of_its_invoice_named_by_its_lago_id() -> None:
    customer = samples.customer(payment_provider="stripe")
    invoice = samples.invoice(customer, [samples.fee(10000)])
    record = samples.payment(invoice, 12000, paid_at="2025-04-02T09:30:00Z")
    [payment] = parse(samples.webhook("payment.succeeded", record))
    assert isinstance(payment, PaymentData)
    assert (payment.source_id, payment.customer_source_id) == (record["lago_id"], customer["lago_id"])
    assert (payment.amount_minor, payment.currency, payment.method) == (12000, "USD", "stripe")
    assert payment.settled_at == datetime(2025, 4, 2, 9, 30, tzinfo=UTC)
    assert [(a.invoice_source_id, a.amount_minor, a.from_credit) for a in payment.applications] == [
        (invoice["lago_id"], 12000, False)
    ]
    # The receipt Lago issues for the same payment names the same payment: it is counted once.
    [from_receipt] = parse(samples.webhook("payment_receipt.created", samples.payment_receipt(record)))
    assert from_receipt == payment


def test_manual_partial_payments_from_receipts_are_payments_of_their_own() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)])
    first = samples.payment(invoice, 2000, manual=True, paid_at="2025-04-02T00:00:00Z")
    second = samples.payment(invoice, 10000, manual=True, paid_at="2025-04-09T00:00:00Z")
    parsed = [parse(samples.webhook("payment_receipt.created", samples.payment_receipt(p)))[0] for p in (first, second)]
    assert [(p.source_id, p.amount_minor, p.method) for p in parsed] == [
        (first["lago_id"], 2000, "manual"),
        (second["lago_id"], 10000, "manual"),
    ]
    assert parsed[1].settled_at.date() == date(2025, 4, 9)  # the paid_at Lago was given


def test_a_receipt_is_named_by_its_payment() -> None:
    record = samples.payment(samples.invoice(samples.customer(), [samples.fee(100)]), 120)
    body = samples.body(samples.webhook("payment_receipt.created", samples.payment_receipt(record)))
    envelope = ADAPTER.verify(body, lowered(samples.headers(body, hmac_key=HMAC_KEY)), [HMAC_KEY])
    assert (envelope.event_type, envelope.object_id) == ("payment_receipt.created", record["lago_id"])


def test_a_payment_not_succeeded_is_not_posted() -> None:
    record = samples.payment(samples.invoice(samples.customer(), [samples.fee(100)]), 120, payment_status="pending")
    with pytest.raises(IgnoredEvent, match="only succeeded payments are posted"):
        parse(samples.webhook("payment.succeeded", record))


def test_a_payment_request_over_several_invoices_is_kept_for_finance() -> None:
    customer = samples.customer()
    one, two = (samples.invoice(customer, [samples.fee(100)], number=n) for n in ("ACME-101", "ACME-102"))
    record = samples.payment(one, 240)
    record.update(
        invoice_ids=[one["lago_id"], two["lago_id"]],
        invoice_numbers=["ACME-101", "ACME-102"],
        payable_type="PaymentRequest",
    )
    with pytest.raises(IgnoredEvent, match=r"payment request for 2 invoices \(ACME-101, ACME-102\).*by hand"):
        parse(samples.webhook("payment.succeeded", record))


def test_a_payment_with_float_cents_is_refused_naming_the_field() -> None:
    record = samples.payment(samples.invoice(samples.customer(), [samples.fee(100)]), 120)
    record["amount_cents"] = 120.0
    with pytest.raises(InvalidPayload, match="'amount_cents' must be an integer amount in cents"):
        parse(samples.webhook("payment.succeeded", record))


# --- prepaid credits -----------------------------------------------------------------------------


def test_paid_credit_purchase_is_the_customers_credit_not_revenue() -> None:
    customer = samples.customer(payment_provider="stripe")
    purchase = samples.credit_purchase_invoice(customer, 3850, payment_status="succeeded")
    commands = parse(samples.webhook("invoice.payment_status_updated", purchase))
    assert [type(command) for command in commands] == [CustomerData, PaymentData]
    credit = commands[1]
    assert credit.source_id == f"{purchase['lago_id']}:payment"
    assert (credit.amount_minor, credit.applications, credit.unapplied_is_credit) == (3850, (), True)
    assert credit.customer_source_id == customer["lago_id"] == commands[0].source_id


def test_an_unpaid_credit_purchase_posts_nothing_yet() -> None:
    purchase = samples.credit_purchase_invoice(samples.customer(), 3850)
    with pytest.raises(IgnoredEvent, match=r"sells prepaid credits.*once Lago reports it paid"):
        parse(samples.webhook("invoice.paid_credit_added", purchase))


# --- disputes ------------------------------------------------------------------------------------


def test_a_lost_dispute_takes_back_what_was_paid_on_the_invoice() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], payment_status="succeeded", number="ACME-042")
    [dispute] = parse(samples.payment_dispute_lost(invoice, lost_at="2025-06-03T10:00:00Z"))
    assert isinstance(dispute, DisputeData)
    assert (dispute.source_id, dispute.payment_source_id) == (
        f"{invoice['lago_id']}:dispute",
        payment_id(invoice["lago_id"]),
    )
    assert (dispute.status, dispute.amount_minor, dispute.currency) == ("lost", 12000, "USD")
    assert dispute.opened_on == dispute.closed_on == date(2025, 6, 3)
    assert dispute.reason == "Chargeback lost"


def test_a_lost_dispute_on_an_invoice_without_payment_moves_no_money() -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], number="ACME-043")
    with pytest.raises(IgnoredEvent, match="ACME-043, but recorded no payment on it"):
        parse(samples.payment_dispute_lost(invoice))


@pytest.mark.parametrize("webhook_type", ["subscription.started", "credit_note.generated", "invoice.generated"])
def test_other_webhook_types_are_not_posted(webhook_type: str) -> None:
    message = samples.webhook(webhook_type, {"lago_id": samples.uid()})
    with pytest.raises(IgnoredEvent, match=f"^Lago webhook type {webhook_type} is not posted by this hub version.$"):
        parse(message)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda invoice: invoice.update(total_amount_cents=12000.5), "total_amount_cents"),
        (lambda invoice: invoice["fees"][0].update(amount_cents=100.0), "amount_cents"),
        (lambda invoice: invoice.update(taxes_amount_cents="2000"), "taxes_amount_cents"),
    ],
)
def test_non_integer_cents_are_refused_naming_the_field(change: Any, field: str) -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], number="ACME-007")
    change(invoice)
    with pytest.raises(InvalidPayload, match=f"Invoice ACME-007.*'{field}' must be an integer amount in cents"):
        parse(samples.webhook("invoice.created", invoice))


# --- credit notes --------------------------------------------------------------------------------


def test_credit_note_becomes_a_credit_memo_against_its_invoice() -> None:
    plan, usage = samples.fee(10000), samples.fee(5000, taxes_rate=10.0, code="api_calls", name="API calls")
    invoice = samples.invoice(samples.customer(), [plan, usage], payment_status="succeeded")
    note = samples.credit_note(
        invoice, [samples.credit_item(plan, 3000), samples.credit_item(usage, 1000)], refund_amount_cents=2000
    )
    [memo] = parse(samples.webhook("credit_note.created", note))
    assert isinstance(memo, CreditMemoData)
    assert (memo.source_id, memo.invoice_source_id) == (note["lago_id"], invoice["lago_id"])
    assert memo.customer_source_id == invoice["customer"]["lago_id"]
    assert (memo.status, memo.currency, memo.reason) == ("issued", "USD", "other — Service outage")
    assert (memo.subtotal_minor, memo.tax_minor, memo.total_minor, memo.refunded_minor) == (4000, 700, 4700, 2000)
    assert [(line.amount_minor, line.tax_minor, line.invoice_line_source_id) for line in memo.lines] == [
        (3000, 600, plan["lago_id"]),
        (1000, 100, usage["lago_id"]),
    ]
    assert reconciles(memo)


def test_credit_note_on_a_discounted_invoice_gives_back_the_coupons_share() -> None:
    plan = samples.fee(10000)
    invoice = samples.invoice(samples.customer(), [plan], coupons_amount_cents=1000)
    note = samples.credit_note(invoice, [samples.credit_item(plan, 5000)], coupons_adjustment_amount_cents=500)
    [memo] = parse(samples.webhook("credit_note.created", note))
    assert (memo.subtotal_minor, memo.tax_minor, memo.total_minor) == (4500, 900, 5400)
    assert [(line.description, line.amount_minor) for line in memo.lines] == [("Startup plan", 5000), ("Coupons", -500)]
    assert memo.lines[1].invoice_line_source_id == f"{invoice['lago_id']}:coupons"
    assert reconciles(memo)


def test_a_failed_refund_is_not_money_paid_back() -> None:
    plan = samples.fee(10000)
    invoice = samples.invoice(samples.customer(), [plan])
    note = samples.credit_note(invoice, [samples.credit_item(plan, 10000)], refund_status="failed")
    [memo] = parse(samples.webhook("credit_note.created", note))
    assert (memo.total_minor, memo.refunded_minor) == (12000, 0)


def test_credit_note_with_float_cents_is_refused_naming_the_field() -> None:
    plan = samples.fee(10000)
    note = samples.credit_note(samples.invoice(samples.customer(), [plan]), [samples.credit_item(plan, 1000)])
    note["refund_amount_cents"] = 1200.0
    with pytest.raises(InvalidPayload, match=r"Credit note .*'refund_amount_cents' must be an integer amount in cents"):
        parse(samples.webhook("credit_note.created", note))


# --- through the ledger and the planner ----------------------------------------------------------


def receive(client: Client, message: dict[str, Any]) -> str:
    """Deliver a signed webhook to the lago-us source and normalize it, as the worker would."""
    payload = samples.body(message)
    headers = samples.headers(payload, hmac_key=os.environ["LAGO_WEBHOOK_HMAC_KEY"])
    meta = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items() if k != "Content-Type"}
    response = client.post("/webhooks/lago-us/", data=payload, content_type="application/json", **meta)
    assert response.status_code == 200, response.content
    event = InboxEvent.objects.get(source="lago-us", event_id=headers[lago.UNIQUE_KEY_HEADER])
    return normalize_event(event.pk)


def operations(**filters: Any) -> list[str]:
    return sorted(Posting.objects.filter(source="lago-us", **filters).values_list("operation", flat=True))


@pytest.mark.usefixtures("configured")
def test_a_payment_reported_three_ways_is_applied_once(client: Client) -> None:
    customer = samples.customer()
    invoice = samples.invoice(customer, [samples.fee(5000)])
    record = samples.payment(invoice, 6000)
    paid = samples.invoice(
        customer, invoice["fees"], lago_id=invoice["lago_id"], number=invoice["number"], payment_status="succeeded"
    )
    receive(client, samples.webhook("invoice.created", invoice))
    assert receive(client, samples.webhook("payment.succeeded", record)) == InboxStatus.PROCESSED
    receive(client, samples.webhook("invoice.payment_status_updated", paid))
    receive(client, samples.webhook("payment_receipt.created", samples.payment_receipt(record)))

    assert list(Payment.objects.filter(source="lago-us").values_list("source_id", "amount_minor")) == [
        (record["lago_id"], 6000)
    ]
    ledger_invoice = Invoice.objects.get(source_id=invoice["lago_id"])
    assert (ledger_invoice.status, ledger_invoice.amount_paid_minor) == (Invoice.STATUS_PAID, 6000)
    assert operations(source_id__startswith=record["lago_id"]) == [Operation.APPLY_PAYMENT]


@pytest.mark.usefixtures("configured")
def test_prepaid_credits_are_received_as_customer_credit_and_applied_from_it(client: Client) -> None:
    customer = samples.customer()
    purchase = samples.credit_purchase_invoice(customer, 3850)
    assert receive(client, samples.webhook("invoice.paid_credit_added", purchase)) == InboxStatus.IGNORED
    paid_purchase = samples.credit_purchase_invoice(
        customer, 3850, lago_id=purchase["lago_id"], number=purchase["number"], payment_status="succeeded"
    )
    record = samples.payment(paid_purchase, 3850)
    receive(client, samples.webhook("payment.succeeded", record))
    receive(client, samples.webhook("invoice.payment_status_updated", paid_purchase))
    credit = Payment.objects.get(source_id=f"{purchase['lago_id']}:payment")
    assert credit.on_account_minor == 3850
    assert operations(payment=credit) == [Operation.RECEIVE_ON_ACCOUNT]
    assert not Invoice.objects.filter(source_id=purchase["lago_id"]).exists()  # not a sale
    # The provider's record of that payment names an invoice the ledger never holds: it is kept, not posted.
    assert not Posting.objects.filter(source_id__startswith=record["lago_id"]).exists()

    following = samples.invoice(customer, [samples.fee(4900), samples.fee(1250)], prepaid_credit_amount_cents=3850)
    receive(client, samples.webhook("invoice.created", following))
    application = PaymentApplication.objects.get(invoice__source_id=following["lago_id"])
    assert (application.from_credit, application.amount_minor) == (True, 3850)
    assert operations(payment_application=application) == [Operation.APPLY_CREDIT]


@pytest.mark.usefixtures("configured")
def test_a_lost_dispute_plans_the_withdrawal_and_the_loss(client: Client) -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(5000)], payment_status="succeeded")
    receive(client, samples.payment_dispute_lost(invoice))
    dispute = Dispute.objects.get(source_id=f"{invoice['lago_id']}:dispute")
    assert (dispute.status, dispute.amount_minor, dispute.legal_entity.code) == ("lost", 6000, "US01")
    assert operations(dispute=dispute) == sorted([Operation.WITHDRAW_DISPUTED_FUNDS, Operation.LOSE_DISPUTE])


@pytest.mark.usefixtures("configured")
def test_an_invoice_voided_after_a_partial_payment_plans_a_write_off(client: Client) -> None:
    customer = samples.customer()
    invoice = samples.invoice(customer, [samples.fee(5000)])
    receive(client, samples.webhook("invoice.created", invoice))
    voided = samples.invoice(
        customer,
        invoice["fees"],
        lago_id=invoice["lago_id"],
        number=invoice["number"],
        status="voided",
        total_paid_amount_cents=2000,
        updated_at=samples.timestamp(datetime.now(UTC) + timedelta(seconds=5)),
    )
    receive(client, samples.webhook("invoice.voided", voided))
    ledger_invoice = Invoice.objects.get(source_id=invoice["lago_id"])
    assert (ledger_invoice.status, ledger_invoice.amount_paid_minor) == (Invoice.STATUS_UNCOLLECTIBLE, 2000)
    assert operations(invoice=ledger_invoice) == sorted([Operation.POST_INVOICE, Operation.WRITE_OFF])


@pytest.mark.django_db(transaction=True)
def test_a_credit_purchase_and_its_payment_record_normalized_at_once_both_land() -> None:
    """Lago sends a credit purchase's payment record and the paid credit invoice together, and two
    workers take them. The record's transaction audits (holding the audit chain's lock) and checks its
    customer reference at commit; the invoice's locks that customer, then audits. Locking the customer
    for a key update made that a deadlock; the lock for a non-key update does not block the check."""
    customer = samples.customer()
    purchase = samples.credit_purchase_invoice(customer, 3850, payment_status="succeeded")
    ledger.upsert_customer("lago-us", lago.customer_from_object(customer), legal_entity=None)
    [snapshot, credit] = lago.parse_message(samples.webhook("invoice.payment_status_updated", purchase))
    [record] = lago.parse_message(samples.webhook("payment.succeeded", samples.payment(purchase, 3850)))
    audited, customer_locked = threading.Event(), threading.Event()
    failures: list[Exception] = []

    def payment_record() -> None:
        try:
            with transaction.atomic():
                ledger.upsert_payment("lago-us", record)  # audits: holds the chain's lock until commit
                audited.set()
                assert customer_locked.wait(10)
        except (AssertionError, DatabaseError) as exc:
            failures.append(exc)
        finally:
            connection.close()

    def paid_purchase() -> None:
        try:
            assert audited.wait(10)
            with transaction.atomic():
                ledger.upsert_customer("lago-us", snapshot, legal_entity=None)  # locks the customer
                customer_locked.set()
                ledger.upsert_payment("lago-us", credit)  # audits: waits for the other to commit
        except (AssertionError, DatabaseError) as exc:
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=payment_record), threading.Thread(target=paid_purchase)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert failures == []
    assert set(Payment.objects.values_list("source_id", flat=True)) == {record.source_id, credit.source_id}


# --- payment records read back through Lago's API ------------------------------------------------


@pytest.fixture
def lago_api() -> Iterator[LagoSimulator]:
    simulator = LagoSimulator()
    yield simulator
    simulator.stop()


def bound(lago_api: LagoSimulator, api_key: str = LAGO_API_KEY) -> Any:
    return ADAPTER.bind({"api_key": api_key, "base_url": lago_api.url})


def test_manual_payments_that_sent_no_receipt_are_read_back_with_the_paid_invoice(lago_api: LagoSimulator) -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], payment_status="succeeded")
    first = samples.payment(invoice, 2000, manual=True, paid_at="2025-04-02T00:00:00Z")
    second = samples.payment(invoice, 10000, manual=True, paid_at="2025-04-09T00:00:00Z")
    other = samples.payment(samples.invoice(invoice["customer"], [samples.fee(500)]), 600)
    for record in (first, second, other):
        lago_api.add_payment(record)
    message = samples.webhook("invoice.payment_status_updated", invoice)

    assert [type(command) for command in parse(message)] == [InvoiceData]  # the webhook alone names no payment
    commands = bound(lago_api).parse(samples.body(message))
    assert invoice_of(commands).amount_paid_minor == 12000
    assert sorted((p.source_id, p.amount_minor, p.method) for p in payments_of(commands)) == sorted(
        [(first["lago_id"], 2000, "manual"), (second["lago_id"], 10000, "manual")]
    )
    [read] = [r for r in lago_api.requests if r.path == "/api/v1/payments"]
    assert read.status == 200


def test_reading_back_follows_every_page(lago_api: LagoSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lago, "PAGE_SIZE", 2)
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], payment_status="succeeded")
    records = [samples.payment(invoice, amount, manual=True) for amount in (3000, 4000, 5000)]
    for record in records:
        lago_api.add_payment(record)
    commands = bound(lago_api).parse(samples.body(samples.webhook("invoice.payment_status_updated", invoice)))
    assert {p.source_id for p in payments_of(commands)} == {r["lago_id"] for r in records}
    assert len([r for r in lago_api.requests if r.path == "/api/v1/payments"]) == 2


def test_nothing_is_read_back_for_an_invoice_with_nothing_paid(lago_api: LagoSimulator) -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)])
    assert [type(c) for c in bound(lago_api).parse(samples.body(samples.webhook("invoice.created", invoice)))] == [
        InvoiceData
    ]
    assert lago_api.requests == []


def test_a_lago_refusal_fails_the_event_and_an_outage_leaves_it_for_later(lago_api: LagoSimulator) -> None:
    invoice = samples.invoice(samples.customer(), [samples.fee(10000)], payment_status="succeeded")
    body = samples.body(samples.webhook("invoice.payment_status_updated", invoice))
    with pytest.raises(InvalidPayload, match=r"answered 401: Unauthorized\. Check the Lago API key"):
        bound(lago_api, api_key="revoked").parse(body)
    lago_api.fail_next_read("500", "429")
    for _ in range(2):
        with pytest.raises(lago.LagoUnavailable, match="try again later"):
            bound(lago_api).parse(body)
    assert ADAPTER.bind({}) is ADAPTER  # without an API key: what the webhooks carry
