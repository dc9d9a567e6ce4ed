import json
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings

from apps.ledger.commands import CreditMemoData, CustomerData, DisputeData, InvoiceData, PaymentData
from apps.sources import recurly_samples as samples
from apps.sources.base import IgnoredEvent, InvalidPayload, SignatureError
from apps.sources.recurly import RecurlyAdapter, RecurlyApi, RecurlyApiError, RecurlyUnavailable
from tests.recurly_simulator import RecurlySimulator

SECRET = "recurly-endpoint-key-current"
PREVIOUS_SECRET = "recurly-endpoint-key-previous"
ISSUED = datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def ms(moment: str) -> int:
    return int(datetime.fromisoformat(moment).timestamp() * 1000)


@pytest.fixture(scope="module")
def simulator() -> Iterator[RecurlySimulator]:
    with RecurlySimulator() as running:
        yield running


@pytest.fixture
def sim(simulator: RecurlySimulator) -> RecurlySimulator:
    simulator.reset()
    return simulator


@pytest.fixture
def adapter(sim: RecurlySimulator) -> RecurlyAdapter:
    return RecurlyAdapter(api_factory=lambda: RecurlyApi(sim.api_key, sim.url))


def parse(adapter: RecurlyAdapter, object_type: str, event_type: str, obj: dict[str, Any]) -> list[Any]:
    return adapter.parse(samples.body(samples.notification(object_type, event_type, obj)))


def only(commands: list[Any], kind: type) -> Any:
    [command] = commands
    assert isinstance(command, kind)
    return command


def reconciles(document: InvoiceData | CreditMemoData) -> bool:
    return (
        sum(line.amount_minor for line in document.lines) == document.subtotal_minor
        and sum(line.tax_minor for line in document.lines) == document.tax_minor
        and document.subtotal_minor + document.tax_minor == document.total_minor
    )


def acme_invoice(account: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """Gold plan 49.99, 4 seats at 12.50 less 5.00, 1000 API calls at 0.0015, a free trial line;
    8.75% tax on each discounted line: 104.93 in all."""
    lines = [
        samples.line_item("49.99", start=ISSUED, description="Gold plan"),
        samples.line_item("12.50", quantity=4, discount="5.00", add_on_code="seats", description="Seats", start=ISSUED),
        samples.line_item("0.0015", quantity=1000, add_on_code="api_calls", description="API calls", start=ISSUED),
        samples.line_item("0", plan_code="gold", origin="plan_trial", description="Trial", start=ISSUED),
    ]
    return samples.charge_invoice(account, lines, created_at=ISSUED, **kwargs)


# --- authenticity -----------------------------------------------------------------------------------


def notification_body() -> bytes:
    return samples.body(samples.notification("charge_invoice", "paid", {"id": samples.uid()}))


def test_a_notification_signed_with_the_endpoint_key_is_accepted_and_named() -> None:
    account = samples.account()
    message = samples.notification("account", "created", account, event_time="2025-03-01T10:00:00Z")
    body = samples.body(message)
    envelope = RecurlyAdapter().verify(body, samples.headers(body, SECRET), [SECRET])
    assert envelope.event_type == "account.created"
    assert envelope.object_id == account["id"]
    assert envelope.event_id == f"account.created:{account['id']}:2025-03-01T10:00:00Z"


def test_during_key_rotation_either_signature_matches_either_secret() -> None:
    body = notification_body()
    both = samples.headers(body, [PREVIOUS_SECRET, SECRET])
    assert both["recurly-signature"].count(",") == 2
    RecurlyAdapter().verify(body, both, [SECRET])
    RecurlyAdapter().verify(body, both, [PREVIOUS_SECRET])
    # The source rotated first: Recurly still signs with the previous key only.
    RecurlyAdapter().verify(body, samples.headers(body, PREVIOUS_SECRET), [SECRET, PREVIOUS_SECRET])


def test_a_wrong_key_or_a_tampered_body_is_refused() -> None:
    body = notification_body()
    with pytest.raises(SignatureError, match="does not match the body for any of this source's secret keys"):
        RecurlyAdapter().verify(body, samples.headers(body, "retired-key"), [SECRET, PREVIOUS_SECRET])
    headers = samples.headers(body, SECRET)
    with pytest.raises(SignatureError, match="does not match the body"):
        RecurlyAdapter().verify(body.replace(b'"paid"', b'"failed"'), headers, [SECRET])


def test_a_signature_outside_the_tolerance_is_stale_either_way() -> None:
    tolerance = settings.HUB["SIGNATURE_TOLERANCE_SECONDS"]
    body = notification_body()
    now = samples.now_ms()
    RecurlyAdapter().verify(body, samples.headers(body, SECRET, now - (tolerance - 5) * 1000), [SECRET])
    for moment in (now - (tolerance + 5) * 1000, now + (tolerance + 5) * 1000):
        with pytest.raises(SignatureError, match=f"Stale webhook: .* more than {tolerance} seconds from now"):
            RecurlyAdapter().verify(body, samples.headers(body, SECRET, moment), [SECRET])
    # A timestamp in seconds is read as milliseconds in 1970: stale, not accepted.
    seconds = samples.sign(body, SECRET, now // 1000)
    with pytest.raises(SignatureError, match="Stale webhook"):
        RecurlyAdapter().verify(body, {"recurly-signature": seconds}, [SECRET])


@pytest.mark.parametrize(
    ("signature", "reason"),
    [
        (None, "Missing recurly-signature header: set the Recurly webhook endpoint's payload to JSON"),
        ("", "Missing recurly-signature header"),
        ("garbage", "must be '<unix time in milliseconds>,<hex HMAC-SHA256>"),
        ("1700000000000", "must be '<unix time in milliseconds>"),
        ("1700000000000,deadbeef", "must be '<unix time in milliseconds>"),
        ("t=1700000000,v1=" + "a" * 64, "must be '<unix time in milliseconds>"),
    ],
)
def test_a_missing_or_malformed_signature_is_refused_with_a_reason(signature: str | None, reason: str) -> None:
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["recurly-signature"] = signature
    with pytest.raises(SignatureError, match=reason):
        RecurlyAdapter().verify(notification_body(), headers, [SECRET])


def test_without_a_secret_nothing_is_accepted() -> None:
    body = notification_body()
    with pytest.raises(SignatureError, match="No webhook secret is configured"):
        RecurlyAdapter().verify(body, samples.headers(body, SECRET), [])


# --- envelope ---------------------------------------------------------------------------------------


def test_a_retry_keeps_the_event_id_and_a_later_event_gets_a_new_one() -> None:
    invoice = {"id": samples.uid()}
    first = samples.body(samples.notification("charge_invoice", "updated", invoice, event_time="2025-03-01T10:00:00Z"))
    later = samples.body(samples.notification("charge_invoice", "updated", invoice, event_time="2025-03-01T10:00:01Z"))
    ids = [
        RecurlyAdapter().verify(body, samples.headers(body, SECRET), [SECRET]).event_id
        for body in (first, first, later)
    ]
    assert ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{nope", "not valid JSON"),
        (b'{"new_account_notification": {}}', "needs 'object_type' and 'event_type'"),
        (b'{"object_type": "account", "event_type": "created"}', "names no object"),
    ],
)
def test_a_body_that_is_not_a_recurly_json_notification_is_invalid(body: bytes, message: str) -> None:
    with pytest.raises(InvalidPayload, match=message):
        RecurlyAdapter().verify(body, samples.headers(body, SECRET), [SECRET])


# --- accounts ---------------------------------------------------------------------------------------


def test_an_account_is_fetched_and_becomes_customer_data_named_by_its_code(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account(code="acme-42", updated_at="2025-03-01T10:00:00Z")
    sim.put(account)
    customer = only(parse(adapter, "account", "created", account), CustomerData)
    assert (customer.source_id, customer.name, customer.email) == ("acme-42", "ACME Corp", "ap@acme.example")
    assert (customer.tax_id, customer.tax_id_type, customer.snapshot) == ("US123456789", "vat", False)
    assert customer.bill_to == {
        "line1": "5230 Penfield Ave",
        "line2": "Suite 100",
        "city": "Woodland Hills",
        "postal_code": "91364",
        "state": "CA",
        "country": "US",
    }
    assert customer.source_version == ms("2025-03-01T10:00:00+00:00")
    assert sim.requests == [f"/accounts/{account['id']}"]


def test_a_person_without_company_is_named_and_found_by_account_code(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account(company=None, vat_number=None)
    sim.put(account)
    message = {**samples.notification("account", "updated", account), "id": None}
    customer = only(adapter.parse(samples.body(message)), CustomerData)
    assert (customer.name, customer.tax_id) == ("Verena Example", "")
    assert sim.requests == [f"/accounts/code-{account['code']}"]


def test_a_later_account_update_has_a_higher_source_version(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account(updated_at="2025-03-01T10:00:00Z")
    sim.put(account)
    [before] = parse(adapter, "account", "created", account)
    sim.put({**account, "email": "billing@acme.example", "updated_at": "2025-03-01T10:00:01Z"})
    [after] = parse(adapter, "account", "updated", account)
    assert after.email == "billing@acme.example"
    assert after.source_version - before.source_version == 1000


# --- charge invoices --------------------------------------------------------------------------------


def test_a_created_charge_invoice_is_open_with_exact_amounts_and_lines(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account(code="acme-42")
    invoice = acme_invoice(account, number="1001")
    sim.put(invoice)
    data = only(parse(adapter, "charge_invoice", "created", invoice), InvoiceData)
    assert (data.source_id, data.number, data.status, data.currency) == (invoice["id"], "1001", "open", "USD")
    assert (data.subtotal_minor, data.tax_minor, data.total_minor, data.amount_paid_minor) == (9649, 844, 10493, 0)
    assert (data.invoice_date, data.due_date, data.status_date) == (date(2025, 3, 1), date(2025, 3, 31), None)
    assert [(line.description, line.amount_minor, line.tax_minor, line.price_id) for line in data.lines] == [
        ("Gold plan", 4999, 437, "gold"),
        ("Seats", 4500, 394, "seats"),
        ("API calls", 150, 13, "api_calls"),
    ]
    gold, seats, calls = data.lines
    assert (gold.quantity, gold.unit_amount_minor, gold.product_source_id) == (Decimal(1), 4999, "gold")
    assert (seats.quantity, seats.unit_amount_minor) == (Decimal(4), 1125)  # 12.50 less the discount
    assert (calls.quantity, calls.unit_amount_minor) == (Decimal(1000), 150)  # 0.15 cent: carried as the amount
    assert (gold.source_line_id, gold.period_start, gold.period_end) == (
        invoice["line_items"][0]["id"],
        date(2025, 3, 1),
        date(2025, 3, 31),
    )
    assert (data.period_start, data.period_end) == (date(2025, 3, 1), date(2025, 3, 31))
    assert (data.customer.source_id, data.customer.name, data.customer.snapshot) == ("acme-42", "ACME Corp", True)
    assert (data.customer.payment_terms_days, data.customer.tax_id) == (30, "US123456789")
    assert reconciles(data)


def test_a_paid_invoice_is_paid_on_its_closing_day_with_a_higher_version(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    invoice = acme_invoice(samples.account(), updated_at="2025-03-01T10:00:00Z")
    sim.put(invoice)
    created = only(parse(adapter, "charge_invoice", "created", invoice), InvoiceData)
    sim.put(
        {
            **invoice,
            "state": "paid",
            "paid": Decimal("104.93"),
            "balance": Decimal("0.00"),
            "closed_at": "2025-03-02T08:00:00Z",
            "updated_at": "2025-03-02T08:00:00Z",
        }
    )
    paid = only(parse(adapter, "charge_invoice", "paid", invoice), InvoiceData)
    assert (paid.status, paid.amount_paid_minor, paid.status_date) == ("paid", 10493, date(2025, 3, 2))
    assert paid.source_version > created.source_version
    assert paid.source_version == ms("2025-03-02T08:00:00+00:00")


@pytest.mark.parametrize("event_type", ["processing", "past_due"])
def test_processing_and_past_due_invoices_are_still_open(
    adapter: RecurlyAdapter, sim: RecurlySimulator, event_type: str
) -> None:
    invoice = acme_invoice(samples.account(), state=event_type)
    sim.put(invoice)
    assert only(parse(adapter, "charge_invoice", event_type, invoice), InvoiceData).status == "open"


def test_a_failed_invoice_is_uncollectible_for_what_was_not_settled(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    invoice = acme_invoice(samples.account(), state="failed", paid="20.00", closed_at="2025-04-15T00:00:00Z")
    sim.put(invoice)
    data = only(parse(adapter, "charge_invoice", "failed", invoice), InvoiceData)
    assert (data.status, data.status_date) == ("uncollectible", date(2025, 4, 15))
    assert (data.total_minor, data.amount_paid_minor) == (10493, 2000)  # 84.93 to write off


def test_zero_decimal_and_three_decimal_currencies_are_exact(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account()
    yen = samples.charge_invoice(
        account,
        [samples.line_item("1200", quantity=2, tax_rate="0.10", currency="JPY", places=0)],
        currency="JPY",
    )
    dinar = samples.charge_invoice(
        account,
        [samples.line_item("12.345", tax_rate="0", currency="KWD", places=3)],
        currency="KWD",
    )
    sim.put(yen, dinar)
    yen_data = only(parse(adapter, "charge_invoice", "created", yen), InvoiceData)
    assert (yen_data.currency, yen_data.subtotal_minor, yen_data.tax_minor, yen_data.total_minor) == (
        "JPY",
        2400,
        240,
        2640,
    )
    assert yen_data.lines[0].unit_amount_minor == 1200
    dinar_data = only(parse(adapter, "charge_invoice", "created", dinar), InvoiceData)
    assert (dinar_data.currency, dinar_data.total_minor, dinar_data.lines[0].unit_amount_minor) == ("KWD", 12345, 12345)


def test_a_tax_inclusive_line_is_posted_net_of_its_tax(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    invoice = samples.charge_invoice(
        samples.account(), [samples.line_item("10.00", tax="0.83", tax_inclusive=True, plan_code="basic")]
    )
    sim.put(invoice)
    data = only(parse(adapter, "charge_invoice", "created", invoice), InvoiceData)
    assert (data.subtotal_minor, data.tax_minor, data.total_minor) == (917, 83, 1000)
    assert (data.lines[0].amount_minor, data.lines[0].tax_minor, data.lines[0].unit_amount_minor) == (917, 83, 917)
    assert reconciles(data)


def test_line_items_beyond_what_the_invoice_carries_are_fetched_page_by_page(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    lines = [samples.line_item(f"{10 + n}.00", add_on_code=f"addon_{n}", tax_rate="0") for n in range(5)]
    invoice = samples.charge_invoice(samples.account(), lines)
    sim.put(invoice)
    sim.embedded_line_items, sim.max_page_size = 2, 2
    data = only(parse(adapter, "charge_invoice", "created", invoice), InvoiceData)
    assert [line.price_id for line in data.lines] == [f"addon_{n}" for n in range(5)]
    assert data.total_minor == sum(line.amount_minor for line in data.lines) == 6000
    assert [path.split("?")[0] for path in sim.requests] == [f"/invoices/{invoice['id']}"] + [
        f"/invoices/{invoice['id']}/line_items"
    ] * 3


def test_an_invoice_for_nothing_and_a_legacy_invoice_are_not_posted(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    free = samples.charge_invoice(samples.account(), [samples.line_item("0", origin="plan_trial")], number="1002")
    legacy = {**acme_invoice(samples.account(), number="77"), "type": "legacy"}
    sim.put(free, legacy)
    with pytest.raises(IgnoredEvent, match="Recurly charge invoice 1002 is for zero USD"):
        parse(adapter, "charge_invoice", "created", free)
    with pytest.raises(IgnoredEvent, match="Recurly charge invoice 77 is a legacy invoice"):
        parse(adapter, "charge_invoice", "created", legacy)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda invoice: invoice.update(total=Decimal("104.935")), r"'total' 104\.935 has more decimals than USD"),
        (lambda invoice: invoice["line_items"][1].update(tax=Decimal("3.9375")), r"line_items\[1\] .*'tax' 3\.9375"),
        (lambda invoice: invoice.update(currency="US"), r"'currency' 'US' is not an ISO 4217 currency code"),
        (lambda invoice: invoice["line_items"][0].update(subtotal="a lot"), r"'subtotal' must be a decimal amount"),
    ],
)
def test_a_bad_amount_is_refused_naming_the_field(
    adapter: RecurlyAdapter, sim: RecurlySimulator, change: Any, field: str
) -> None:
    invoice = acme_invoice(samples.account(), number="1003")
    change(invoice)
    sim.put(invoice)
    with pytest.raises(InvalidPayload, match=f"Recurly charge invoice 1003.*{field}"):
        parse(adapter, "charge_invoice", "created", invoice)


# --- payments ---------------------------------------------------------------------------------------


def test_a_successful_payment_is_applied_to_the_invoice_it_paid(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account(code="acme-42")
    invoice = acme_invoice(account, state="paid")
    txn = samples.transaction(
        account,
        invoice,
        "104.93",
        payment_method="paypal_billing_agreement",
        collected_at="2025-03-02T08:00:00Z",
        updated_at="2025-03-02T08:00:01Z",
    )
    sim.put(invoice, txn)
    paid, payment = parse(adapter, "payment", "succeeded", txn)
    assert isinstance(paid, InvoiceData) and isinstance(payment, PaymentData)
    assert (paid.source_id, paid.status, paid.amount_paid_minor) == (invoice["id"], "paid", 10493)
    assert (payment.source_id, payment.customer_source_id, payment.currency) == (txn["id"], "acme-42", "USD")
    assert (payment.amount_minor, payment.method) == (10493, "paypal_billing_agreement")
    assert payment.settled_at == datetime(2025, 3, 2, 8, 0, tzinfo=UTC)
    assert payment.source_version == ms("2025-03-02T08:00:01+00:00")
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [(invoice["id"], 10493)]


def test_a_payment_is_found_by_uuid_when_the_notification_has_no_id(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    invoice = acme_invoice(account)
    txn = samples.transaction(account, invoice, "104.93")
    sim.put(invoice, txn)
    message = {**samples.notification("payment", "succeeded", txn), "id": ""}
    assert adapter.parse(samples.body(message))[-1].source_id == txn["id"]
    assert sim.requests == [f"/transactions/uuid-{txn['uuid']}", f"/invoices/{invoice['id']}"]


def test_declined_payments_and_authorizations_are_not_posted(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account()
    declined = samples.transaction(account, acme_invoice(account), "104.93", status="declined")
    hold = samples.transaction(account, None, "1.00", txn_type="authorization")
    sim.put(declined, hold)
    with pytest.raises(IgnoredEvent, match="has status 'declined'; only successful payments are posted"):
        parse(adapter, "payment", "succeeded", declined)
    with pytest.raises(IgnoredEvent, match="is a 'authorization' transaction"):
        parse(adapter, "payment", "succeeded", hold)


# --- credit invoices, credit payments, refunds ------------------------------------------------------


def refunded_gold_line(sim: RecurlySimulator, *, link: str = "previous_invoice") -> tuple[dict[str, Any], ...]:
    """A paid invoice whose gold plan line (49.99 + 4.37 tax) was refunded to the card."""
    account = samples.account(code="acme-42")
    invoice = acme_invoice(account, state="paid")
    credit = samples.credit_invoice(
        account,
        [samples.credit_line(invoice["line_items"][0], invoice)],
        origin="line_item_refund",
        previous_invoice_id=invoice["id"] if link == "previous_invoice" else None,
        number="CR-1",
        updated_at="2025-03-05T12:00:00Z",
    )
    refund = samples.transaction(account, credit, "54.36", txn_type="refund")
    credit["transactions"] = [refund]
    sim.put(account, invoice, credit, refund)
    return account, invoice, credit, refund


@pytest.mark.parametrize("link", ["previous_invoice", "original_line_items"])
def test_a_refund_credit_invoice_is_a_refunded_credit_memo_against_its_invoice(
    adapter: RecurlyAdapter, sim: RecurlySimulator, link: str
) -> None:
    _, invoice, credit, _ = refunded_gold_line(sim, link=link)
    memo = only(parse(adapter, "credit_invoice", "created", credit), CreditMemoData)
    assert (memo.source_id, memo.number, memo.invoice_source_id) == (credit["id"], "CR-1", invoice["id"])
    assert (memo.customer_source_id, memo.status, memo.reason) == ("acme-42", "issued", "line item refund")
    assert (memo.subtotal_minor, memo.tax_minor, memo.total_minor, memo.refunded_minor) == (4999, 437, 5436, 5436)
    [line] = memo.lines
    assert (line.amount_minor, line.tax_minor, line.quantity, line.unit_amount_minor) == (4999, 437, Decimal(1), 4999)
    assert line.invoice_line_source_id == invoice["line_items"][0]["id"]
    assert memo.source_version == ms("2025-03-05T12:00:00+00:00")
    assert reconciles(memo)


def test_a_refund_notification_posts_the_credit_invoice_it_pays_back(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    _, invoice, credit, refund = refunded_gold_line(sim)
    memo = only(parse(adapter, "payment", "refunded", refund), CreditMemoData)
    assert (memo.source_id, memo.invoice_source_id, memo.refunded_minor) == (credit["id"], invoice["id"], 5436)
    assert sim.requests == [f"/transactions/{refund['id']}", f"/invoices/{credit['id']}"]


def test_a_pending_refund_is_not_money_paid_back_yet(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    _, _, credit, refund = refunded_gold_line(sim)
    sim.put({**credit, "state": "processing", "transactions": [{**refund, "status": "processing"}]})
    memo = only(parse(adapter, "credit_invoice", "processing", credit), CreditMemoData)
    assert (memo.total_minor, memo.refunded_minor) == (5436, 0)


def test_a_voided_credit_invoice_is_a_void_credit_memo(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    _, invoice, credit, _ = refunded_gold_line(sim)
    sim.put({**credit, "state": "voided", "transactions": [], "updated_at": "2025-03-09T09:00:00Z"})
    memo = only(parse(adapter, "credit_invoice", "voided", credit), CreditMemoData)
    assert (memo.status, memo.status_date, memo.invoice_source_id) == ("void", date(2025, 3, 9), invoice["id"])


def test_a_custom_credit_is_posted_against_the_first_invoice_it_is_applied_to(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    goodwill = samples.line_item(
        "-10.00", tax="0", line_type="credit", plan_code=None, origin="credit", description="Goodwill"
    )
    credit = samples.credit_invoice(account, [goodwill], origin="credit", state="open", number="CR-2")
    sim.put(credit)
    with pytest.raises(IgnoredEvent, match=r"Recurly credit invoice CR-2 .* not tied to a charge invoice yet"):
        parse(adapter, "credit_invoice", "created", credit)

    first, second = acme_invoice(account), acme_invoice(account)
    applied = samples.credit_payment(account, credit, "6.00", applied_to=first, created_at="2025-03-10T00:00:00Z")
    sim.put(applied)
    memo = only(parse(adapter, "credit_payment", "created", applied), CreditMemoData)
    assert (memo.source_id, memo.invoice_source_id, memo.reason) == (credit["id"], first["id"], "credit")
    assert (memo.subtotal_minor, memo.tax_minor, memo.total_minor, memo.refunded_minor) == (1000, 0, 1000, 0)
    assert [(line.description, line.amount_minor) for line in memo.lines] == [("Goodwill", 1000)]

    # The rest goes to another invoice later: the memo still credits the first one.
    rest = samples.credit_payment(account, credit, "4.00", applied_to=second, created_at="2025-04-10T00:00:00Z")
    sim.put({**credit, "state": "closed", "credit_payments": [applied, rest]}, rest)
    again = only(parse(adapter, "credit_payment", "created", rest), CreditMemoData)
    assert again.invoice_source_id == first["id"]


def test_gift_card_credit_is_not_a_credit_note(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account()
    for origin in ("gift_card", "carryforward_credit"):
        line = samples.line_item("-25.00", tax="0", line_type="credit", plan_code=None, origin="credit")
        credit = samples.credit_invoice(account, [line], origin=origin, state="open", number=f"CR-{origin}")
        sim.put(credit)
        with pytest.raises(IgnoredEvent, match=f"Recurly credit invoice CR-{origin} holds .* credit, money already"):
            parse(adapter, "credit_invoice", "created", credit)


def test_a_credit_invoice_with_a_bad_amount_is_refused_naming_the_field(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    _, _, credit, refund = refunded_gold_line(sim)
    sim.put({**credit, "transactions": [{**refund, "amount": Decimal("54.365")}]})
    with pytest.raises(InvalidPayload, match=r"Recurly credit invoice CR-1 transactions\[0\] .*'amount' 54\.365"):
        parse(adapter, "credit_invoice", "closed", credit)


# --- everything else --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["subscription.created", "account.closed", "invoice.created", "dunning.new_dunning_event", "payment.failed"]
)
def test_other_notifications_are_not_posted(key: str) -> None:
    def no_api() -> RecurlyApi:
        raise AssertionError("an ignored notification must not call the API")

    object_type, event_type = key.split(".")
    message = samples.notification(object_type, event_type, {"id": samples.uid()})
    with pytest.raises(IgnoredEvent, match=rf"^Recurly webhook {key} is not posted by this hub version\.$"):
        RecurlyAdapter(api_factory=no_api).parse(samples.body(message))


# --- the API ----------------------------------------------------------------------------------------


def test_an_object_unknown_to_recurly_fails_the_event_with_recurlys_answer(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    missing = {"id": "rmissing0001"}
    with pytest.raises(RecurlyApiError) as refused:
        parse(adapter, "charge_invoice", "created", missing)
    message = str(refused.value)
    assert message.startswith(
        "Recurly API GET /invoices/rmissing0001 answered 404 not_found: Couldn't find Invoice with id = rmissing0001"
    )
    assert "(Recurly request id " in message and "not on the Recurly site this API key belongs to" in message
    assert isinstance(refused.value, InvalidPayload) and refused.value.status == 404


def test_a_wrong_api_key_says_which_setting_to_fix(sim: RecurlySimulator) -> None:
    account = samples.account()
    sim.put(account)
    wrong = RecurlyAdapter(api_factory=lambda: RecurlyApi("not-the-key", sim.url))
    with pytest.raises(InvalidPayload, match=r"answered 401 unauthorized: Invalid API key.*Check the Recurly API key"):
        parse(wrong, "account", "created", account)


@pytest.mark.parametrize(("status", "error_type"), [(500, "internal_server_error"), (429, "rate_limited")])
def test_a_recurly_outage_leaves_the_event_to_be_tried_again(
    adapter: RecurlyAdapter, sim: RecurlySimulator, status: int, error_type: str
) -> None:
    account = samples.account()
    sim.put(account)
    sim.fail_next(status, error_type, "Try again later")
    with pytest.raises(RecurlyUnavailable, match=f"answered {status} {error_type}: Try again later") as outage:
        parse(adapter, "account", "created", account)
    assert not isinstance(outage.value, InvalidPayload)
    assert only(parse(adapter, "account", "created", account), CustomerData).source_id == account["code"]


def test_an_unreachable_api_is_an_outage_too() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = RecurlyAdapter(api_factory=lambda: RecurlyApi("key", f"http://127.0.0.1:{port}", timeout=(1, 1)))
    with pytest.raises(RecurlyUnavailable, match=r"Recurly API GET /accounts/r.* did not answer"):
        parse(unreachable, "account", "created", samples.account())


def test_the_api_key_and_url_come_from_the_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECURLY_API_KEY", raising=False)
    monkeypatch.delenv("RECURLY_API_URL", raising=False)
    with pytest.raises(InvalidPayload, match=r"No Recurly API key is configured.*Set RECURLY_API_KEY"):
        parse(RecurlyAdapter(), "account", "created", samples.account())
    monkeypatch.setenv("RECURLY_API_KEY", "from-env")
    assert RecurlyApi.from_environment().base_url == "https://v3.recurly.com"
    monkeypatch.setenv("RECURLY_API_URL", "https://v3.eu.recurly.com/")
    assert RecurlyApi.from_environment().base_url == "https://v3.eu.recurly.com"


def test_api_amounts_are_read_as_exact_decimals(sim: RecurlySimulator) -> None:
    invoice = acme_invoice(samples.account())
    sim.put(invoice)
    fetched = RecurlyApi(sim.api_key, sim.url).invoice(invoice["id"])
    assert fetched["total"] == Decimal("104.93") and isinstance(fetched["total"], Decimal)
    assert json.loads(samples.api_json({"unit": Decimal("0.0015")})) == {"unit": 0.0015}
    assert b'"unit": 0.0015' in samples.api_json({"unit": Decimal("0.0015")})


# --- payments carried by the invoice, partial payments, write-offs -----------------------------------


def manual_invoice(account: dict[str, Any]) -> dict[str, Any]:
    """61.50 without tax, collected by hand (external payments)."""
    lines = [
        samples.line_item("49.00", tax_rate="0", description="Pro plan (monthly)", plan_code="pro"),
        samples.line_item("2.50", quantity=5, tax_rate="0", description="API calls", add_on_code="api_calls"),
    ]
    return samples.charge_invoice(account, lines, collection_method="manual", updated_at="2025-03-01T10:00:00Z")


def test_an_invoice_notification_posts_the_payments_the_invoice_carries(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account(code="acme-42")
    invoice = manual_invoice(account)
    first = samples.external_payment(account, invoice, "20.00")
    partly = samples.settled(invoice, transactions=[first])
    sim.put(partly)
    data, payment = parse(adapter, "charge_invoice", "updated", partly)
    assert isinstance(data, InvoiceData) and isinstance(payment, PaymentData)
    assert (data.status, data.total_minor, data.amount_paid_minor) == ("open", 6150, 2000)
    assert (payment.source_id, payment.method, payment.amount_minor) == (first["id"], "check", 2000)
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [(invoice["id"], 2000)]
    sim.put(first)  # the payment's own notification: the invoice as the payment left it, and the payment
    assert parse(adapter, "payment", "succeeded", first) == [data, payment]

    declined = samples.transaction(account, invoice, "41.50", status="declined")
    second = samples.external_payment(account, invoice, "41.50")
    paid = samples.settled(partly, transactions=[declined, second])
    sim.put(paid)
    data, *payments = parse(adapter, "charge_invoice", "paid", paid)
    assert (data.status, data.amount_paid_minor) == ("paid", 6150)
    assert [(p.source_id, p.amount_minor) for p in payments] == [(first["id"], 2000), (second["id"], 4150)]


def test_a_purchase_later_charged_back_is_still_a_payment(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account()
    invoice = acme_invoice(account, state="paid")
    txn = {**samples.transaction(account, invoice, "104.93"), "status": "chargeback"}
    sim.put(invoice, txn)
    _, payment = parse(adapter, "payment", "succeeded", txn)
    assert (payment.amount_minor, payment.applications[0].invoice_source_id) == (10493, invoice["id"])


def test_a_failed_invoice_written_off_by_recurly_writes_off_only_the_unpaid_rest(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    invoice = manual_invoice(account)
    partly = samples.settled(invoice, transactions=[samples.external_payment(account, invoice, "20.00")])
    failed = samples.settled(partly, state="failed")
    cleared, credit, written = samples.write_off(account, failed)
    sim.put(written, credit, cleared)

    data, _ = parse(adapter, "charge_invoice", "failed", written)
    assert (data.status, data.total_minor, data.amount_paid_minor) == ("uncollectible", 6150, 2000)
    assert data.status_date is not None
    with pytest.raises(IgnoredEvent, match=r"write-off of a failed invoice's balance: the hub posts the write-off"):
        parse(adapter, "credit_invoice", "created", credit)
    # The write-off's credit payment posts the charge invoice it closed, not a credit note.
    data, _ = parse(adapter, "credit_payment", "created", cleared)
    assert (data.source_id, data.status, data.amount_paid_minor) == (invoice["id"], "uncollectible", 2000)


def test_a_write_off_credit_closing_an_open_invoice_makes_it_uncollectible(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    invoice = manual_invoice(account)
    _, _, written = samples.write_off(account, invoice)
    assert written["state"] == "paid" and written["balance"] == 0  # closed by credit, not by the customer
    sim.put(written)
    data = only(parse(adapter, "charge_invoice", "paid", written), InvoiceData)
    assert (data.status, data.amount_paid_minor) == ("uncollectible", 0)


# --- prepaid account balance: the customer's credit ------------------------------------------------


def test_a_prepayment_is_the_customers_credit_not_a_sale(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account(code="acme-42")
    charge, purchase, credit = samples.prepayment(account, "100.00")
    sim.put(charge, purchase, credit)

    [payment] = parse(adapter, "charge_invoice", "paid", charge)  # no invoice: only the cash
    assert isinstance(payment, PaymentData)
    assert (payment.source_id, payment.amount_minor, payment.applications) == (purchase["id"], 10000, ())
    assert payment.unapplied_is_credit
    assert only(parse(adapter, "payment", "succeeded", purchase), PaymentData) == payment
    assert only(parse(adapter, "credit_invoice", "created", credit), PaymentData) == payment

    unpaid = {**charge, "state": "pending", "transactions": [], "balance": charge["total"]}
    sim.put(unpaid)
    with pytest.raises(IgnoredEvent, match=r"is a prepayment .* not a sale, and nothing collected it yet"):
        parse(adapter, "charge_invoice", "created", unpaid)
    with pytest.raises(IgnoredEvent, match=r"prepayment invoice .* is not collected yet"):
        parse(adapter, "credit_invoice", "created", credit)


def test_prepaid_credit_applied_to_invoices_settles_them_from_the_same_payment(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    charge, purchase, credit = samples.prepayment(account, "100.00")
    first, second = manual_invoice(account), manual_invoice(account)
    applied_first, credit, first = samples.apply_credit(account, credit, first, "61.50")
    sim.put(charge, credit, applied_first)
    payment = only(parse(adapter, "credit_payment", "created", applied_first), PaymentData)
    assert (payment.source_id, payment.amount_minor) == (purchase["id"], 10000)
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [(first["id"], 6150)]

    applied_second, credit, second = samples.apply_credit(account, credit, second, "38.50")
    refund = samples.credit_payment(account, credit, "1.00", action="refund")  # paid back: settles no invoice
    voided = {**samples.credit_payment(account, credit, "5.00", applied_to=second), "voided_at": samples.timestamp()}
    credit = {**credit, "credit_payments": [*credit["credit_payments"], refund, voided]}
    sim.put(credit, applied_second)
    payment = only(parse(adapter, "credit_payment", "created", applied_second), PaymentData)
    assert sorted((a.invoice_source_id, a.amount_minor) for a in payment.applications) == sorted(
        [(first["id"], 6150), (second["id"], 3850)]
    )
    assert sim.requests[-2:] == [f"/invoices/{credit['id']}", f"/invoices/{charge['id']}"]


def test_a_credit_payment_not_listed_on_its_credit_invoice_yet_still_counts(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    charge, _, credit = samples.prepayment(account, "100.00")
    invoice = manual_invoice(account)
    applied, _, _ = samples.apply_credit(account, credit, invoice, "61.50")
    sim.put(charge, credit, applied)  # the credit invoice as read before the credit payment reached it
    payment = only(parse(adapter, "credit_payment", "created", applied), PaymentData)
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [(invoice["id"], 6150)]


def test_prepaid_credit_that_names_no_prepayment_or_applies_too_much_is_refused(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    charge, _, credit = samples.prepayment(account, "100.00")
    unlinked = [{**line, "original_line_item_invoice_id": None} for line in credit["line_items"]]
    orphan = {**credit, "id": samples.uid(), "number": "CR-9", "line_items": unlinked}
    sim.put(charge, orphan)
    with pytest.raises(IgnoredEvent, match="Recurly credit invoice CR-9 holds prepaid credit but names no prepayment"):
        parse(adapter, "credit_invoice", "created", orphan)
    _, credit, _ = samples.apply_credit(account, credit, manual_invoice(account), "150.00")
    sim.put(credit)
    with pytest.raises(InvalidPayload, match="apply 15000 minor units, more than the 10000 its prepayment collected"):
        parse(adapter, "credit_invoice", "updated", credit)


# --- chargebacks, open-amount refunds ---------------------------------------------------------------


def test_a_lost_chargeback_is_a_lost_dispute_not_a_credit_note(adapter: RecurlyAdapter, sim: RecurlySimulator) -> None:
    account = samples.account()
    invoice = acme_invoice(account)
    purchase = samples.transaction(account, invoice, "104.93")
    credit, refund = samples.chargeback(account, samples.settled(invoice, transactions=[purchase]), purchase)
    sim.put(credit, refund)
    dispute = only(parse(adapter, "credit_invoice", "created", credit), DisputeData)
    assert (dispute.source_id, dispute.payment_source_id, dispute.status) == (refund["id"], purchase["id"], "lost")
    assert (dispute.amount_minor, dispute.currency, dispute.reason) == (10493, "USD", "Chargeback: fraudulent")
    assert dispute.opened_on == dispute.closed_on is not None
    requests = len(sim.requests)
    assert only(parse(adapter, "payment", "refunded", refund), DisputeData) == dispute
    assert sim.requests[requests:] == [f"/transactions/{refund['id']}"]  # the transaction says it all

    sim.put({**refund, "original_transaction_id": None})
    with pytest.raises(InvalidPayload, match=r"'original_transaction_id' \(the payment charged back\) is missing"):
        parse(adapter, "payment", "refunded", refund)


def test_an_open_amount_refund_is_a_credit_note_for_the_whole_invoice(
    adapter: RecurlyAdapter, sim: RecurlySimulator
) -> None:
    account = samples.account()
    invoice = manual_invoice(account)
    credit = samples.credit_invoice(
        account, samples.credit_lines(invoice), origin="open_amount_refund", previous_invoice_id=invoice["id"]
    )
    sim.put(credit)
    memo = only(parse(adapter, "credit_invoice", "created", credit), CreditMemoData)
    assert (memo.invoice_source_id, memo.total_minor, memo.refunded_minor) == (invoice["id"], 6150, 0)
    assert reconciles(memo)
