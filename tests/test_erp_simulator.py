"""The ERP simulator driven by the real Tryton connector: it holds what the connector posts the way
Tryton does (read back with the same inspector the real-Tryton tests use), it duplicates whatever
the connector would duplicate, and each injected fault reaches the connector as the failure a real
Tryton would cause, with the document left exactly where that failure leaves it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
import requests

from apps.connectors.base import OPERATION_APPLY_PAYMENT, OPERATION_ENSURE_CUSTOMER, OPERATION_POST_INVOICE
from apps.connectors.documents import (
    Address,
    CustomerDocument,
    InvoiceDocument,
    InvoiceLineDocument,
    PaymentDocument,
)
from apps.connectors.tryton import TrytonConnector, TrytonRPC
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from tests.erp_simulator import ErpSimulator, FaultRates
from tests.tryton_plugin import TrytonInspector

HANG = 2.0  # the simulator holds a timed-out answer this long; the connectors here wait 1 s
POST = "model.account.invoice.post"
CREATE = "model.account.invoice.create"
PAY = "wizard.account.invoice.pay.execute"
_refs = iter(range(1, 1_000_000))


def ref(prefix: str) -> str:
    return f"sim:{prefix}_{next(_refs)}"


@pytest.fixture
def sim() -> Iterator[ErpSimulator]:
    simulator = ErpSimulator(seed=7, hang_seconds=HANG)
    yield simulator
    simulator.stop()


@pytest.fixture
def connector(sim: ErpSimulator) -> Iterator[TrytonConnector]:
    tryton = TrytonConnector(sim.connector_settings(timeout=1))
    yield tryton
    tryton.close()


@pytest.fixture
def inspector(sim: ErpSimulator) -> TrytonInspector:
    return TrytonInspector(sim)  # type: ignore[arg-type]  # url, database, username, password


def customer(connector: TrytonConnector, name: str = "Globex Ltd") -> tuple[str, str]:
    external_ref = ref("cus")
    result = connector.ensure_customer(
        CustomerDocument(
            external_ref=external_ref,
            name=name,
            email="ap@globex.example",
            tax_id="US-12-3456789",
            bill_to=Address(line1="1 Main St", line2="Suite 4", city="Springfield", postal_code="12345"),
        )
    )
    return external_ref, result.erp_id


def invoice_doc(customer_ref: str, customer_erp_id: str, **overrides: Any) -> InvoiceDocument:
    lines = overrides.pop(
        "lines",
        (
            InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, "4000"),
            InvoiceLineDocument("API calls", Decimal(5), 250, 1250, "4100", tax_code="VAT20", tax_minor=250),
        ),
    )
    values: dict[str, Any] = {
        "external_ref": ref("in"),
        "number": "INV-0042",
        "customer_ref": customer_ref,
        "customer_erp_id": customer_erp_id,
        "currency": "USD",
        "invoice_date": date.today(),
        "due_date": date.today(),
        "lines": lines,
        "subtotal_minor": 6150,
        "tax_minor": 250,
        "total_minor": 6400,
    }
    values.update(overrides)
    return InvoiceDocument(**values)


def payment_doc(invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int, journal: str = "Card") -> Any:
    return PaymentDocument(
        external_ref=ref("py"),
        invoice_ref=invoice.external_ref,
        invoice_erp_id=invoice_erp_id,
        customer_erp_id=invoice.customer_erp_id,
        currency=invoice.currency,
        amount_minor=amount_minor,
        paid_on=date.today(),
        payment_journal=journal,
    )


def states(sim: ErpSimulator, reference: str) -> list[str]:
    return [invoice["state"] for invoice in sim.invoices_for(reference)]


# -- what the connector posts, held the way Tryton holds it ------------------------------------


def test_customer_is_created_once_and_renamed_in_place(
    sim: ErpSimulator, connector: TrytonConnector, inspector: TrytonInspector
) -> None:
    external_ref, erp_id = customer(connector)
    unchanged = connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="Globex Ltd"))
    renamed = connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="Globex Corporation"))

    assert (unchanged.detail["action"], renamed.detail["action"]) == ("unchanged", "updated")
    assert unchanged.erp_id == renamed.erp_id == erp_id
    assert inspector.parties(external_ref) == [{"id": int(erp_id), "name": "Globex Corporation", "code": external_ref}]
    party = sim.parties[external_ref]
    assert party["addresses"][0]["street"] == "1 Main St\nSuite 4" and party["addresses"][0]["city"] == "Springfield"
    assert [m["value"] for m in party["contact_mechanisms"]] == ["ap@globex.example"]
    assert [i["code"] for i in party["identifiers"]] == ["US-12-3456789"]
    assert sim.requests["model.party.party.create"] == 1 and sim.requests["model.party.party.write"] == 1
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, external_ref).erp_id == erp_id  # type: ignore[union-attr]
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus")) is None


def test_a_second_party_with_the_same_code_is_refused(sim: ErpSimulator, connector: TrytonConnector) -> None:
    external_ref, _ = customer(connector)
    with pytest.raises(BusinessRuleError) as raised:
        connector.rpc.call("model.party.party.create", [[{"name": "Again", "code": external_ref}]], writes=True)
    assert raised.value.code == "erp_rejected" and "The code on party must be unique." in raised.value.finance_message
    assert sim.events["party_code_conflict"] == 1 and len(sim.parties) == 1


def test_invoice_is_posted_once_with_billing_amounts_accounts_and_tax(
    sim: ErpSimulator, connector: TrytonConnector, inspector: TrytonInspector
) -> None:
    doc = invoice_doc(*customer(connector))
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None

    first = connector.post_invoice(doc)
    second = connector.post_invoice(doc)

    [invoice] = inspector.invoices(doc.external_ref)
    assert (invoice["state"], invoice["total_amount"], invoice["tax_amount"], invoice["amount_to_pay"]) == (
        "posted",
        Decimal("64.00"),
        Decimal("2.50"),
        Decimal("64.00"),
    )
    assert first.erp_id == second.erp_id == str(invoice["id"])
    assert first.erp_number == second.erp_number == invoice["number"] == f"INV/{date.today().year}/1"
    lines = sorted((line["description"], line["amount"], line["account_code"]) for line in inspector.invoice_lines(1))
    assert lines == [("API calls", Decimal("12.50"), "4100"), ("Pro plan", Decimal("49.00"), "4000")]
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref).erp_id == first.erp_id  # type: ignore[union-attr]
    assert sim.requests[CREATE] == 1 and sim.requests[POST] == 1
    assert sim.duplicate_invoices() == {}
    assert sim.posted_total_by_party_and_currency() == {(doc.customer_ref, "USD"): Decimal("64.00")}


def test_dotted_fields_come_back_the_way_tryton_returns_them(connector: TrytonConnector) -> None:
    rpc = connector.rpc
    domain = [["code", "=", "4000"]]
    [account] = rpc.call("model.account.account.search_read", [domain, 0, 1, None, ["type.revenue"]], writes=False)
    assert set(account) == {"id", "type."} and account["type."]["revenue"] is True and "id" in account["type."]
    doc = invoice_doc(*customer(connector))
    invoice_id = int(connector.post_invoice(doc).erp_id)
    [invoice] = rpc.call("model.account.invoice.read", [[invoice_id], ["currency.code", "party.code"]], writes=False)
    assert invoice["currency."]["code"] == "USD" and invoice["party."]["code"] == doc.customer_ref
    assert "currency" not in invoice  # only the dotted key, as Tryton does
    assert rpc.call("model.account.invoice.search_count", [[["reference", "=", doc.external_ref]]], writes=False) == 1


def test_a_draft_left_by_a_failed_post_is_reused_and_a_stale_one_replaced(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    customer_ref, customer_id = customer(connector)
    doc = invoice_doc(customer_ref, customer_id)
    draft_id = connector._create_invoice(doc)
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None  # a draft is not done
    assert connector.post_invoice(doc).erp_id == str(draft_id)

    other = invoice_doc(customer_ref, customer_id)
    stale = invoice_doc(
        customer_ref,
        customer_id,
        external_ref=other.external_ref,
        lines=(InvoiceLineDocument("Pro plan", Decimal(1), 1000, 1000, "4000"),),
        subtotal_minor=1000,
        tax_minor=0,
        total_minor=1000,
    )
    stale_id = connector._create_invoice(stale)
    posted = connector.post_invoice(other)

    assert posted.erp_id != str(stale_id) and sim.invoices[stale_id]["deleted"]
    assert [(i["state"], i["total"]) for i in sim.invoices_for(other.external_ref)] == [("posted", Decimal("64.00"))]
    assert sim.invoice_creations[other.external_ref] == 2 and sim.duplicate_invoices() == {}


def test_partial_payments_settle_the_invoice_and_are_applied_once(
    sim: ErpSimulator, connector: TrytonConnector, inspector: TrytonInspector
) -> None:
    doc = invoice_doc(*customer(connector))
    invoice_id = connector.post_invoice(doc).erp_id
    first = payment_doc(doc, invoice_id, 4000)
    second = payment_doc(doc, invoice_id, 2400, journal="Bank")
    assert connector.find_document(OPERATION_APPLY_PAYMENT, first.external_ref) is None

    applied = connector.apply_payment(first)
    assert connector.apply_payment(first).erp_id == applied.erp_id  # repeated: nothing new
    [partly] = inspector.invoices(doc.external_ref)
    assert (partly["state"], partly["amount_to_pay"]) == ("posted", Decimal("24.00"))
    connector.apply_payment(second)

    [paid] = inspector.invoices(doc.external_ref)
    assert (paid["state"], paid["amount_to_pay"]) == ("paid", Decimal("0"))
    lines = inspector.payment_lines(int(invoice_id))
    assert sorted((line["move."]["description"], line["credit"]) for line in lines) == sorted(
        [(first.external_ref, Decimal("40.00")), (second.external_ref, Decimal("24.00"))]
    )
    assert connector.find_document(OPERATION_APPLY_PAYMENT, first.external_ref).erp_id == applied.erp_id  # type: ignore[union-attr]
    assert sim.payments[first.external_ref]["method"] == "Card" and sim.payments[second.external_ref]["count"] == 1
    assert sim.duplicate_payments() == {}
    assert sim.paid_total_by_party_and_currency() == {(doc.customer_ref, "USD"): Decimal("64.00")}
    assert sim.requests[PAY] == 5  # start, choice, pay (partial: asked); start, choice (the rest: paid at once)


def test_the_pay_wizard_refuses_more_than_is_due_and_unfiltered_dotted_keys(connector: TrytonConnector) -> None:
    doc = invoice_doc(*customer(connector))
    invoice_id = int(connector.post_invoice(doc).erp_id)
    rpc = connector.rpc
    [session, start_state, end_state] = rpc.call("wizard.account.invoice.pay.create", [], writes=False)
    assert (start_state, end_state) == ("start", "end")
    context = {**rpc.context, "active_model": "account.invoice", "active_id": invoice_id, "active_ids": [invoice_id]}
    shown = rpc.call(PAY, [session, {}, "start", context], writes=False, with_context=False)
    defaults = shown["view"]["defaults"]
    assert defaults["amount"] == Decimal("64.00") and "company." in defaults

    with pytest.raises(TransientError, match="unexpected error"):  # a dotted key is not a field: Tryton crashes
        rpc.call(PAY, [session, {"start": defaults}, "choice", context], writes=True, with_context=False)

    start = {key: value for key, value in defaults.items() if "." not in key}
    start.update(amount=Decimal("99.00"), payment_method=1, date=date.today(), description=ref("py"))
    asked = rpc.call(PAY, [session, {"start": start}, "choice", context], writes=True, with_context=False)
    assert asked["view"]["state"] == "ask" and asked["view"]["defaults"]["type"] == "overpayment"
    ask = {key: value for key, value in asked["view"]["defaults"].items() if "." not in key} | {"type": "partial"}
    with pytest.raises(BusinessRuleError) as raised:
        rpc.call(PAY, [session, {"start": start, "ask": ask}, "pay", context], writes=True, with_context=False)
    assert raised.value.code == "erp_rejected" and "greater than the amount to pay" in raised.value.finance_message
    assert rpc.call("wizard.account.invoice.pay.delete", [session], writes=False) is None


def test_unmapped_not_revenue_and_closed_accounts_are_refused_in_finance_words(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    customer_ref, customer_id = customer(connector)
    for code, words in (("4999", "'4999' does not exist"), ("4200", "'4200' does not exist (or is closed)")):
        doc = invoice_doc(customer_ref, customer_id, lines=(InvoiceLineDocument("Pro", Decimal(1), 6400, 6400, code),))
        with pytest.raises(BusinessRuleError) as raised:
            connector.post_invoice(doc)
        assert raised.value.code == "unmapped_revenue_account" and words in raised.value.finance_message
        assert sim.invoices_for(doc.external_ref) == []
    doc = invoice_doc(customer_ref, customer_id, lines=(InvoiceLineDocument("Pro", Decimal(1), 6400, 6400, "1150"),))
    with pytest.raises(BusinessRuleError) as not_revenue:
        connector.post_invoice(doc)
    assert "'1150' in Tryton is not a revenue account" in not_revenue.value.finance_message
    assert sim.requests[CREATE] == 0


def test_unknown_tax_currency_and_payment_method_are_refused(connector: TrytonConnector) -> None:
    customer_ref, customer_id = customer(connector)
    untaxed = (InvoiceLineDocument("Pro", Decimal(1), 6400, 6400, "4000", tax_code="GST7", tax_minor=448),)
    with pytest.raises(BusinessRuleError) as tax:
        connector.post_invoice(invoice_doc(customer_ref, customer_id, lines=untaxed))
    assert tax.value.code == "unknown_tax_code"
    with pytest.raises(BusinessRuleError) as currency:
        connector.post_invoice(invoice_doc(customer_ref, customer_id, currency="CHF"))
    assert currency.value.code == "unknown_currency"
    doc = invoice_doc(customer_ref, customer_id)
    invoice_id = connector.post_invoice(doc).erp_id
    with pytest.raises(BusinessRuleError) as method:
        connector.apply_payment(payment_doc(doc, invoice_id, 6400, journal="Crypto"))
    assert method.value.code == "unknown_payment_journal"


def test_totals_follow_each_currency_and_a_total_tryton_cannot_reproduce_is_not_posted(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    customer_ref, customer_id = customer(connector)
    yen = (InvoiceLineDocument("Plan", Decimal(2), 1500, 3000, "4000", tax_code="VAT20", tax_minor=600),)
    totals = {"subtotal_minor": 3000, "tax_minor": 600, "total_minor": 3600}
    jpy = invoice_doc(customer_ref, customer_id, currency="JPY", lines=yen, **totals)
    eur = invoice_doc(customer_ref, customer_id, currency="EUR")
    connector.post_invoice(jpy)
    connector.post_invoice(eur)
    assert sim.posted_total_by_party_and_currency() == {
        (customer_ref, "JPY"): Decimal("3600"),
        (customer_ref, "EUR"): Decimal("64.00"),
    }
    # Billing says 10.00 tax on a 49.00 line; VAT20 gives 9.80.
    lines = (InvoiceLineDocument("Pro", Decimal(1), 4900, 4900, "4000", tax_code="VAT20", tax_minor=1000),)
    wrong = invoice_doc(customer_ref, customer_id, lines=lines, subtotal_minor=4900, tax_minor=1000, total_minor=5900)
    with pytest.raises(BusinessRuleError) as raised:
        connector.post_invoice(wrong)
    assert raised.value.code == "amount_mismatch" and "58.80" in raised.value.finance_message
    assert states(sim, wrong.external_ref) == ["draft"]


def test_tax_is_rounded_per_line_or_per_document() -> None:
    cents = tuple(InvoiceLineDocument(f"Tiny {n}", Decimal(1), 1, 1, "4000", tax_code="VAT20") for n in range(3))
    totals = {}
    for mode in ("line", "document"):
        with ErpSimulator(tax_rounding=mode) as sim:
            tryton = TrytonConnector(sim.connector_settings())
            doc = invoice_doc(*customer(tryton), lines=cents)
            invoice_id = tryton._create_invoice(doc)
            totals[mode] = sim.invoices[invoice_id]["tax"]
            tryton.close()
    assert totals == {"line": Decimal("0.00"), "document": Decimal("0.01")}  # 3 x 0.002


def test_tryton_refusals_and_warnings_at_post(sim: ErpSimulator, connector: TrytonConnector) -> None:
    customer_ref, customer_id = customer(connector)
    old = invoice_doc(customer_ref, customer_id, invoice_date=date(1999, 6, 30), due_date=None)
    with pytest.raises(BusinessRuleError) as no_year:
        connector.post_invoice(old)
    assert no_year.value.code == "erp_rejected" and "fiscal year" in no_year.value.finance_message
    future = invoice_doc(customer_ref, customer_id, invoice_date=date.today() + timedelta(days=3))
    with pytest.raises(BusinessRuleError) as warning:
        connector.post_invoice(future)
    assert warning.value.code == "erp_warning" and "in the future" in warning.value.finance_message
    assert states(sim, old.external_ref) == states(sim, future.external_ref) == ["draft"]


# -- faults, each forced for one call ----------------------------------------------------------


@pytest.mark.parametrize(("status", "error"), [(503, TransientError), (500, UncertainOutcome)])
def test_a_server_error_does_nothing_and_a_500_on_a_write_is_uncertain(
    sim: ErpSimulator, connector: TrytonConnector, status: int, error: type[Exception]
) -> None:
    doc = invoice_doc(*customer(connector))
    sim.inject("server_error", POST, status=status)

    with pytest.raises(error) as raised:
        connector.post_invoice(doc)

    assert raised.value.status == status  # type: ignore[attr-defined]
    assert states(sim, doc.external_ref) == ["draft"]
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None
    assert connector.post_invoice(doc).erp_number == f"INV/{date.today().year}/1"  # the next try posts the draft
    assert states(sim, doc.external_ref) == ["posted"] and sim.faults_injected["server_error"] == 1


def test_server_errors_at_rate_one_refuse_every_write_until_stopped(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    doc = invoice_doc(*customer(connector), external_ref="sim:in_rate_one")  # fixed: its draws follow it
    sim.faults = FaultRates(server_error=1.0, methods=(POST,))
    statuses = set()
    for _ in range(8):
        with pytest.raises((TransientError, UncertainOutcome)) as raised:
            connector.post_invoice(doc)
        statuses.add(raised.value.status)  # type: ignore[union-attr]
    assert statuses == {500, 503} and sim.faults_injected["server_error"] == 8
    assert states(sim, doc.external_ref) == ["draft"]
    sim.faults = FaultRates()
    connector.post_invoice(doc)
    assert states(sim, doc.external_ref) == ["posted"] and sim.duplicate_invoices() == {}


def test_throttling_is_transient_and_carries_retry_after(sim: ErpSimulator, connector: TrytonConnector) -> None:
    doc = invoice_doc(*customer(connector))
    sim.faults = FaultRates(throttle=1.0, methods=(POST,))
    with pytest.raises(TransientError) as raised:
        connector.post_invoice(doc)
    assert (raised.value.status, raised.value.retry_after) == (429, 1.0)
    assert states(sim, doc.external_ref) == ["draft"]
    sim.faults = FaultRates()
    connector.post_invoice(doc)
    assert states(sim, doc.external_ref) == ["posted"]


def test_a_timeout_after_commit_is_uncertain_and_the_lookup_finds_the_posted_invoice(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    doc = invoice_doc(*customer(connector))
    sim.faults = FaultRates(timeout_after_commit=1.0, methods=(POST,))
    started = time.monotonic()
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    assert time.monotonic() - started < HANG  # the client gave up before the answer came
    sim.faults = FaultRates()

    found = connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)
    [invoice] = sim.invoices_for(doc.external_ref)
    assert invoice["state"] == "posted" and found is not None and found.erp_id == str(invoice["id"])
    assert connector.post_invoice(doc).erp_id == found.erp_id and sim.requests[POST] == 1


def test_a_timeout_before_commit_is_uncertain_and_nothing_is_posted(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    doc = invoice_doc(*customer(connector))
    sim.faults = FaultRates(timeout_before_commit=1.0, methods=(POST,))
    with pytest.raises((UncertainOutcome, TransientError)):
        connector.post_invoice(doc)
    sim.faults = FaultRates()

    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None
    assert states(sim, doc.external_ref) == ["draft"]
    connector.post_invoice(doc)
    assert states(sim, doc.external_ref) == ["posted"] and sim.duplicate_invoices() == {}


def test_a_lost_answer_to_a_create_leaves_one_draft_that_the_retry_reuses(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    doc = invoice_doc(*customer(connector))
    sim.inject("timeout_after_commit", CREATE)
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    assert states(sim, doc.external_ref) == ["draft"]

    connector.post_invoice(doc)

    assert states(sim, doc.external_ref) == ["posted"] and sim.invoice_creations[doc.external_ref] == 1


def test_a_lost_answer_to_a_payment_is_found_and_not_paid_twice(sim: ErpSimulator, connector: TrytonConnector) -> None:
    doc = invoice_doc(*customer(connector))
    invoice_id = connector.post_invoice(doc).erp_id
    payment = payment_doc(doc, invoice_id, 6400)
    sim.faults = FaultRates(timeout_after_commit=1.0, methods=(PAY,))
    with pytest.raises(UncertainOutcome):
        connector.apply_payment(payment)
    sim.faults = FaultRates()

    found = connector.find_document(OPERATION_APPLY_PAYMENT, payment.external_ref)
    again = connector.apply_payment(payment)

    assert found is not None and again.erp_id == found.erp_id and again.detail["action"] == "already applied"
    assert sim.payment_counts[payment.external_ref] == 1 and sim.duplicate_payments() == {}
    assert states(sim, doc.external_ref) == ["paid"]


def test_a_validation_error_is_a_permanent_refusal_the_same_on_every_retry(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    doc = invoice_doc(*customer(connector))
    sim.faults = FaultRates(validation_error=1.0)
    messages = set()
    for _ in range(3):
        with pytest.raises(BusinessRuleError) as raised:
            connector.post_invoice(doc)
        assert raised.value.code == "erp_rejected"
        messages.add(raised.value.finance_message)
    assert len(messages) == 1 and "has an invalid tax configuration" in messages.pop()
    assert states(sim, doc.external_ref) == ["draft"]
    assert sim.permanently_failed_references() == {doc.external_ref} and sim.faults_injected["validation_error"] == 3


def test_a_validation_error_at_a_lower_rate_picks_the_same_invoices_every_time(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    customer_ref, customer_id = customer(connector)
    docs = [invoice_doc(customer_ref, customer_id, external_ref=f"sim:in_rate_{n}") for n in range(30)]
    sim.faults = FaultRates(validation_error=0.4)
    refused: list[set[str]] = []
    for _ in range(2):
        failed = set()
        for doc in docs:
            try:
                connector.post_invoice(doc)
            except BusinessRuleError:
                failed.add(doc.external_ref)
        refused.append(failed)
    expected = {doc.external_ref for doc in docs if sim.validation_fails(doc.external_ref)}
    assert refused[0] == refused[1] == expected == sim.permanently_failed_references()
    assert 0 < len(expected) < len(docs)


def test_an_expired_session_signs_in_again_without_losing_the_call(
    sim: ErpSimulator, connector: TrytonConnector
) -> None:
    external_ref, _ = customer(connector)
    sim.expire_sessions()
    connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="Globex Renamed"))
    sim.faults = FaultRates(session_expiry=1.0)
    connector.post_invoice(invoice_doc(external_ref, str(sim.parties[external_ref]["id"])))

    assert sim.parties[external_ref]["name"] == "Globex Renamed"
    assert sim.events["login"] == 4 and sim.faults_injected["session_expiry"] == 2  # create, post; once each


def test_read_faults_are_transient(sim: ErpSimulator, connector: TrytonConnector) -> None:
    customer(connector)
    sim.faults = FaultRates(read_server_error=1.0, methods=("model.party.party.search_read",))
    with pytest.raises(TransientError):
        connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus"))
    sim.faults = FaultRates(read_timeout=1.0, methods=("model.party.party.search_read",))
    with pytest.raises(TransientError, match="no answer"):
        connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus"))
    sim.faults = FaultRates(read_throttle=1.0)
    with pytest.raises(TransientError) as throttled:
        connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus"))
    assert throttled.value.status == 429
    sim.enabled = False
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus")) is None


def test_the_same_seed_injects_the_same_faults() -> None:
    def run(seed: int) -> list[tuple[str, str, str, int]]:
        faults = FaultRates(server_error=0.3, throttle=0.2, session_expiry=0.1)
        with ErpSimulator(seed=seed, faults=faults) as sim:
            tryton = TrytonConnector(sim.connector_settings())
            sim.enabled = False
            customer_ref, customer_id = (
                "sim:cus_seeded",
                tryton.ensure_customer(
                    CustomerDocument("sim:cus_seeded", "Seeded", bill_to=Address(line1="1 Main St"))
                ).erp_id,
            )
            sim.enabled = True
            for n in range(25):
                doc = invoice_doc(customer_ref, customer_id, external_ref=f"sim:in_seeded_{n}")
                for _ in range(3):
                    try:
                        tryton.post_invoice(doc)
                        break
                    except (TransientError, UncertainOutcome):
                        pass
            tryton.close()
            return sorted(sim.fault_log)

    first, again, other = run(11), run(11), run(12)
    assert first == again and first != other and len(first) > 10


# -- the protocol ------------------------------------------------------------------------------


def test_wrong_password_is_an_authentication_error(sim: ErpSimulator) -> None:
    tryton = TrytonConnector(sim.connector_settings(password="not-the-password"))
    with pytest.raises(AuthenticationError) as raised:
        tryton.ensure_customer(CustomerDocument(external_ref=ref("cus"), name="Nobody"))
    assert "sign in" in raised.value.finance_message and raised.value.status == 401


def test_protocol_errors_answer_like_trytond(sim: ErpSimulator, connector: TrytonConnector) -> None:
    rpc = connector.rpc
    with pytest.raises(ConfigurationError) as forbidden:  # the model exists, the method is not exposed
        rpc.call("model.account.invoice.frobnicate", [[1]], writes=True)
    assert forbidden.value.status == 403
    with pytest.raises(TransientError, match="unexpected error"):  # Tryton's pool has no such model
        rpc.call("model.no.such.model.search", [[]], writes=False)
    with pytest.raises(ConfigurationError) as no_context:
        rpc.call("model.party.party.search", [[]], writes=False, with_context=False)
    assert no_context.value.status == 422

    endpoint = f"{sim.url}/{sim.database}/rpc/"
    unsigned = {"id": 1, "method": "model.party.party.search", "params": [[], {}]}
    assert requests.post(endpoint, json=unsigned, timeout=5).status_code == 401
    bare = requests.post(
        endpoint,
        json={"jsonrpc": "2.0", "id": 1, "method": "common.db.login", "params": ["admin", {"password": "x"}, "en"]},
        timeout=5,
    )
    assert bare.status_code == 401
    auth = {"Authorization": rpc._auth or ""}
    body = {"jsonrpc": "2.0", "id": 2, "method": "model.party.party.read", "params": [[999], ["name"], {}]}
    html = requests.post(endpoint, json=body, headers=auth, timeout=5)
    assert html.status_code == 400 and html.headers["Content-Type"].startswith("text/html")
    assert requests.post(f"{sim.url}/x/y/", json={}, timeout=5).status_code == 404
    login = TrytonRPC(sim.url, "any-database-name", sim.username, sim.password, 5)
    assert login.call("common.server.version", [], writes=False, with_context=False) == "8.2.1"


# -- load --------------------------------------------------------------------------------------


def test_concurrent_connectors_get_one_strict_invoice_sequence(sim: ErpSimulator) -> None:
    setup = TrytonConnector(sim.connector_settings())
    customer_ref, customer_id = customer(setup)
    errors: list[BaseException] = []

    def post_many(worker: int) -> None:
        tryton = TrytonConnector(sim.connector_settings())
        try:
            for n in range(25):
                tryton.post_invoice(invoice_doc(customer_ref, customer_id, external_ref=f"sim:in_w{worker}_{n}"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            tryton.close()

    threads = [threading.Thread(target=post_many, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    year = date.today().year
    assert errors == []
    assert sorted(sim.invoice_numbers()) == sorted(f"INV/{year}/{n}" for n in range(1, 201))
    assert sim.duplicate_invoices() == {} and sim.max_in_flight > 1
    assert sim.posted_total_by_party_and_currency() == {(customer_ref, "USD"): Decimal("64.00") * 200}
    setup.close()


def test_three_hundred_invoices_go_through_in_seconds(sim: ErpSimulator) -> None:
    tryton = TrytonConnector(sim.connector_settings())
    customer_ref, customer_id = customer(tryton)
    started = time.monotonic()
    for n in range(300):
        tryton.post_invoice(invoice_doc(customer_ref, customer_id, external_ref=f"sim:in_load_{n}"))
    elapsed = time.monotonic() - started
    requests_sent = sum(sim.requests.values())
    print(f"\n300 invoices posted in {elapsed:.2f}s ({300 / elapsed:.0f}/s, {requests_sent / elapsed:.0f} requests/s)")
    assert len(sim.invoice_numbers()) == 300 and sim.duplicate_invoices() == {}
    assert sim.requests[POST] == 300 and sim.requests[CREATE] == 300
    tryton.close()
