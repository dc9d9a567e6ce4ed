"""The QuickBooks Online connector against the contract simulator of the Accounting API v3
(tests/quickbooks_simulator.py): the documented shape of every request, the OAuth 2.0 handshake,
throttling, what happens when an answer is lost after QuickBooks committed, finance-facing
refusals, and the receivables lifecycle on QuickBooks' books compared with billing's."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from apps.connectors.base import (
    OPERATION_APPLY_CREDIT,
    OPERATION_APPLY_PAYMENT,
    OPERATION_ENSURE_CUSTOMER,
    OPERATION_LOSE_DISPUTE,
    OPERATION_POST_CREDIT_MEMO,
    OPERATION_POST_INVOICE,
    OPERATION_RECEIVE_ON_ACCOUNT,
    OPERATION_REFUND_CREDIT_MEMO,
    OPERATION_VOID_CREDIT_MEMO,
    OPERATION_VOID_INVOICE,
    OPERATION_WITHDRAW_DISPUTED_FUNDS,
    OPERATION_WRITE_OFF,
    REFUND_SUFFIX,
    VOID_SUFFIX,
    WRITE_OFF_SUFFIX,
)
from apps.connectors.documents import (
    Address,
    CreditMemoDocument,
    CustomerDocument,
    DisputeMovementDocument,
    InvoiceDocument,
    InvoiceLineDocument,
    OnAccountDocument,
    PaymentDocument,
    RefundDocument,
    VoidDocument,
    WriteOffDocument,
)
from apps.connectors.quickbooks import QuickBooksConnector, doc_number, request_id
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from apps.flow.models import DEFAULT_BUDGETS
from tests.quickbooks_simulator import INITIAL_REFRESH_TOKEN, QuickBooksSimulator

CLEARING = "35"  # Stripe Clearing (bank)
DISPUTED = "91"
CHARGEBACK_LOSSES = "92"
BAD_DEBTS = "90"
BAD_DEBT_ITEM = "9"


@pytest.fixture
def qbo() -> Iterator[QuickBooksSimulator]:
    simulator = QuickBooksSimulator(hang_seconds=1.6)
    yield simulator
    simulator.stop()


@pytest.fixture
def connector(qbo: QuickBooksSimulator) -> Iterator[QuickBooksConnector]:
    connector = QuickBooksConnector(qbo.connector_settings())
    yield connector
    connector.close()


def ref(prefix: str) -> str:
    return f"stripe-us:{prefix}_{uuid.uuid4().hex[:14]}"


def customer(connector: QuickBooksConnector, name: str = "Globex Ltd") -> tuple[str, str]:
    external_ref = ref("cus")
    result = connector.ensure_customer(
        CustomerDocument(
            external_ref=external_ref,
            name=name,
            email="ap@globex.example",
            currency="USD",
            bill_to=Address(line1="1 Main St", city="Springfield", postal_code="12345", state="IL", country="US"),
        )
    )
    return external_ref, result.erp_id


def invoice_doc(customer_ref: str, customer_erp_id: str, **overrides: Any) -> InvoiceDocument:
    values: dict[str, Any] = {
        "external_ref": ref("in"),
        "number": "INV-0042",
        "customer_ref": customer_ref,
        "customer_erp_id": customer_erp_id,
        "currency": "USD",
        "invoice_date": date.today(),
        "due_date": date.today() + timedelta(days=30),
        "lines": (
            InvoiceLineDocument("Pro plan (monthly)", Decimal(1), 4900, 4900, "79", item="1"),
            InvoiceLineDocument("API calls", Decimal(5), 250, 1250, "80", item="2"),
        ),
        "subtotal_minor": 6150,
        "tax_minor": 0,
        "total_minor": 6150,
    }
    values.update(overrides)
    return InvoiceDocument(**values)


def posted_invoice(connector: QuickBooksConnector, **overrides: Any) -> tuple[InvoiceDocument, str]:
    doc = invoice_doc(*customer(connector), **overrides)
    return doc, connector.post_invoice(doc).erp_id


def payment_doc(invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int, **overrides: Any) -> PaymentDocument:
    values: dict[str, Any] = {
        "external_ref": f"{ref('pi')}:{invoice.external_ref.split(':')[1]}",
        "invoice_ref": invoice.external_ref,
        "invoice_erp_id": invoice_erp_id,
        "customer_erp_id": invoice.customer_erp_id,
        "currency": invoice.currency,
        "amount_minor": amount_minor,
        "paid_on": date.today(),
        "payment_journal": CLEARING,
    }
    values.update(overrides)
    return PaymentDocument(**values)


def credit_doc(invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int) -> CreditMemoDocument:
    return CreditMemoDocument(
        due_date=date.today(),  # billing may date it; QuickBooks credit memos have no due date
        external_ref=ref("cn"),
        number="CN-0007",
        invoice_ref=invoice.external_ref,
        invoice_erp_id=invoice_erp_id,
        customer_ref=invoice.customer_ref,
        customer_erp_id=invoice.customer_erp_id,
        currency="USD",
        invoice_date=date.today(),
        lines=(InvoiceLineDocument("Pro plan (monthly)", Decimal(1), amount_minor, amount_minor, "79", item="1"),),
        subtotal_minor=amount_minor,
        tax_minor=0,
        total_minor=amount_minor,
        reason="duplicate",
    )


def last(qbo: QuickBooksSimulator, entity: str) -> Any:
    [*_, record] = [r for r in qbo.requests if r.method == "POST" and r.entity == entity]
    return record


# -- references ------------------------------------------------------------------------------


def test_the_document_number_is_21_characters_deterministic_and_one_per_reference() -> None:
    reference = "stripe-us:in_1PqRsTuVwXyZaBcDeFgHiJkL#r2:write-off"
    assert len(doc_number(reference)) == 21 and doc_number(reference).startswith("HUB-")
    assert doc_number(reference) == doc_number(reference)
    assert doc_number(reference) != doc_number(reference.removesuffix(":write-off"))
    body = {"TotalAmt": Decimal("1.00")}
    assert len(request_id("create Payment", reference, body)) == 50
    assert request_id("create Payment", reference, body) == request_id("create Payment", reference, dict(body))
    assert request_id("create Payment", reference, body) != request_id("create Payment", reference, {"TotalAmt": 2})


def test_the_hub_budget_is_quickbooks_documented_limit_per_company(qbo: QuickBooksSimulator) -> None:
    assert DEFAULT_BUDGETS["quickbooks"] == (qbo.max_per_minute, 60, qbo.max_concurrent) == (500, 60, 10)


# -- customers -------------------------------------------------------------------------------


def test_a_customer_is_created_with_the_hub_reference_in_its_name_and_renamed_in_place(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    external_ref, erp_id = customer(connector)

    body = last(qbo, "customer").body
    tag = f"[{external_ref.replace(':', '/')}]"
    assert body["DisplayName"] == f"Globex Ltd {tag}"
    assert body["CompanyName"] == "Globex Ltd"
    assert body["PrimaryEmailAddr"] == {"Address": "ap@globex.example"}
    assert body["BillAddr"] == {
        "Line1": "1 Main St",
        "City": "Springfield",
        "PostalCode": "12345",
        "CountrySubDivisionCode": "IL",
        "Country": "US",
    }
    assert body["CurrencyRef"] == {"value": "USD"}
    assert f"hub:{external_ref}" in body["Notes"]

    renamed = connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="Globex Corporation"))
    assert renamed.erp_id == erp_id and renamed.detail["action"] == "updated"
    assert [c["DisplayName"] for c in qbo.documents("Customer")] == [f"Globex Corporation {tag}"]
    update = last(qbo, "customer").body
    assert (
        update["sparse"] is True
        and update["Id"] == erp_id
        and set(update)
        == {
            "Id",
            "SyncToken",
            "sparse",
            "DisplayName",
        }
    )
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, external_ref).erp_id == erp_id  # type: ignore[union-attr]
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus")) is None


def test_a_customer_made_inactive_by_an_accountant_is_found_not_duplicated(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    external_ref, erp_id = customer(connector)
    qbo.store["Customer"][erp_id]["Active"] = False

    again = connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="Globex Ltd"))

    assert again.erp_id == erp_id and again.detail["action"] == "unchanged"
    assert len(qbo.documents("Customer")) == 1


def test_a_name_with_a_colon_is_written_without_it(connector: QuickBooksConnector, qbo: QuickBooksSimulator) -> None:
    external_ref, _ = customer(connector, name="ACME: Europe")
    [created] = qbo.documents("Customer")
    assert ":" not in created["DisplayName"] and created["DisplayName"].startswith("ACME Europe [")
    assert external_ref.replace(":", "/") in created["DisplayName"]


# -- invoices --------------------------------------------------------------------------------


def test_an_invoice_has_the_documented_shape_and_billing_amounts(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    customer_ref, customer_id = customer(connector)
    doc = invoice_doc(
        customer_ref,
        customer_id,
        lines=(
            InvoiceLineDocument(
                "Pro plan (monthly)",
                Decimal(1),
                4900,
                4900,
                "79",
                item="1",
                period_start=date(2025, 3, 1),
                period_end=date(2025, 3, 31),
            ),
            InvoiceLineDocument("API calls", Decimal(5), 250, 1250, "80", tax_code="TAX", tax_minor=250, item="2"),
        ),
        tax_minor=250,
        total_minor=6400,
        dimensions={"class": "100", "location": "1"},
        correlation_id="corr-qbo-1",
    )
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None

    result = connector.post_invoice(doc)

    sent = last(qbo, "invoice")
    body = sent.body
    assert body["DocNumber"] == doc_number(doc.external_ref) == result.erp_number
    assert body["TxnDate"] == date.today().isoformat() and body["DueDate"] == doc.due_date.isoformat()  # type: ignore[union-attr]
    assert body["CustomerRef"] == {"value": customer_id}
    assert body["CurrencyRef"] == {"value": "USD"}
    assert body["PrivateNote"] == f"hub:{doc.external_ref} billing invoice INV-0042"
    assert body["TxnTaxDetail"] == {"TotalTax": Decimal("2.50")}
    assert body["DepartmentRef"] == {"value": "1"}
    assert body["Line"] == [
        {
            "Amount": Decimal("49.00"),
            "DetailType": "SalesItemLineDetail",
            "Description": "Pro plan (monthly)",
            "SalesItemLineDetail": {
                "ItemRef": {"value": "1"},
                "Qty": 1,
                "UnitPrice": Decimal("49.00"),
                "TaxCodeRef": {"value": "NON"},
                "ClassRef": {"value": "100"},
                "ServiceDate": "2025-03-01",
            },
        },
        {
            "Amount": Decimal("12.50"),
            "DetailType": "SalesItemLineDetail",
            "Description": "API calls",
            "SalesItemLineDetail": {
                "ItemRef": {"value": "2"},
                "Qty": 5,
                "UnitPrice": Decimal("2.50"),
                "TaxCodeRef": {"value": "TAX"},
                "ClassRef": {"value": "100"},
            },
        },
    ]
    assert sent.params["minorversion"] == "75"
    assert sent.params["requestid"] == request_id("create Invoice", doc.external_ref, body)
    assert sent.headers["x-correlation-id"] == "corr-qbo-1"
    [invoice] = qbo.find("Invoice", DocNumber=result.erp_number)
    assert result.erp_id == invoice["Id"] and invoice["TotalAmt"] == invoice["Balance"] == Decimal("64.00")
    assert qbo.customer_balance(customer_id) == Decimal("64.00")
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref).erp_id == invoice["Id"]  # type: ignore[union-attr]


def test_posting_the_same_invoice_again_finds_it_and_sends_nothing(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc, erp_id = posted_invoice(connector)
    again = connector.post_invoice(doc)
    assert again.erp_id == erp_id
    assert len(qbo.writes("invoice")) == 1 and len(qbo.find("Invoice", DocNumber=doc_number(doc.external_ref))) == 1


def test_a_request_of_the_wrong_shape_gets_quickbooks_validation_fault(connector: QuickBooksConnector) -> None:
    """The simulator refuses what QuickBooks refuses, so a connector sending the wrong shape fails here."""
    with pytest.raises(ConfigurationError) as refused:
        connector.api.write("Invoice", {"CustomerRef": {"value": "1"}, "Line": [], "Memo": "x"}, requestid="shape-1")
    assert refused.value.status == 400 and "2010" in refused.value.detail and "Memo" in refused.value.detail
    with pytest.raises(ConfigurationError) as missing:
        connector.api.write("Payment", {"CustomerRef": {"value": "1"}}, requestid="shape-2")
    assert "2020" in missing.value.detail and "TotalAmt" in missing.value.detail


def test_a_total_quickbooks_computes_differently_is_parked_as_amount_mismatch(connector: QuickBooksConnector) -> None:
    customer_ref, customer_id = customer(connector)
    doc = invoice_doc(customer_ref, customer_id, total_minor=6500)  # billing says 65.00, the lines make 61.50
    with pytest.raises(BusinessRuleError) as parked:
        connector.post_invoice(doc)
    assert parked.value.code == "amount_mismatch"
    assert parked.value.params == {"erp_total": "61.50", "billing_total": "65.00"}
    assert "Correct the QuickBooks invoice" in parked.value.finance_message


# -- OAuth 2.0 -------------------------------------------------------------------------------


def test_the_access_token_is_fetched_once_cached_and_refreshed_after_expiry(qbo: QuickBooksSimulator) -> None:
    qbo.access_token_ttl = 62  # the connector refreshes a minute before expiry: this one lasts 2 s
    connector = QuickBooksConnector(qbo.connector_settings())
    paced: list[int] = []
    connector.pacer = lambda: paced.append(1)
    customer(connector)
    connector.find_document(OPERATION_POST_INVOICE, ref("in"))
    assert qbo.refreshes == 1
    [token_call] = [r for r in qbo.requests if r.entity == "token"]
    assert token_call.body == {"grant_type": "refresh_token", "refresh_token": INITIAL_REFRESH_TOKEN}
    assert token_call.headers["authorization"].startswith("Basic ")
    time.sleep(2.2)
    connector.find_document(OPERATION_POST_INVOICE, ref("in"))
    assert qbo.refreshes == 2
    assert len(paced) == len(qbo.requests)  # the request budget is asked before every request
    assert all(r.params.get("minorversion") == "75" for r in qbo.requests if r.entity != "token")
    assert all(r.requestid for r in qbo.requests if r.method == "POST" and r.entity not in ("token", "query"))


def test_a_rotated_refresh_token_is_kept_and_used_for_the_next_refresh(qbo: QuickBooksSimulator) -> None:
    connector = QuickBooksConnector(qbo.connector_settings())
    persisted: list[str] = []
    connector.on_refresh_token = persisted.append
    qbo.rotate_refresh_token_on_next_refresh()
    customer(connector)
    assert persisted == [qbo.refresh_token] and qbo.refresh_token != INITIAL_REFRESH_TOKEN
    assert connector.refresh_token == qbo.refresh_token

    qbo.expire_access_tokens()  # the next call meets a 401, refreshes with the rotated token, resends
    customer(connector)
    token_calls = [r.body["refresh_token"] for r in qbo.requests if r.entity == "token"]
    assert token_calls == [INITIAL_REFRESH_TOKEN, persisted[0]]
    assert [r.status for r in qbo.requests if r.entity == "token"] == [200, 200]


def test_a_401_refreshes_once_and_resends_and_a_second_401_is_an_authentication_error(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc = invoice_doc(*customer(connector))
    qbo.fail_next("401")
    connector.post_invoice(doc)
    invoice_calls = [(r.status, r.requestid) for r in qbo.requests if r.method == "POST" and r.entity == "invoice"]
    assert [status for status, _ in invoice_calls] == [401, 200]
    assert invoice_calls[0][1] == invoice_calls[1][1]  # the same request, sent again
    assert qbo.refreshes == 2

    qbo.fail_next_read("401", "401")
    with pytest.raises(AuthenticationError):
        connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)


def test_a_refused_refresh_token_or_client_secret_is_an_authentication_error(qbo: QuickBooksSimulator) -> None:
    qbo.revoke_refresh_token()
    with pytest.raises(AuthenticationError) as revoked:
        QuickBooksConnector(qbo.connector_settings(refresh_token=INITIAL_REFRESH_TOKEN)).find_document(
            OPERATION_POST_INVOICE, ref("in")
        )
    assert "invalid_grant" in revoked.value.detail and revoked.value.status == 400

    with pytest.raises(AuthenticationError) as wrong_client:
        QuickBooksConnector(qbo.connector_settings(client_secret="not-it")).find_document(
            OPERATION_POST_INVOICE, ref("in")
        )
    assert "invalid_client" in wrong_client.value.detail and wrong_client.value.status == 401


def test_missing_settings_are_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError) as missing:
        QuickBooksConnector({"realm_id": "1", "client_id": "x"})
    assert "client_secret" in missing.value.detail and "refresh_token" in missing.value.detail


# -- throttling and failures -----------------------------------------------------------------


def test_a_429_is_transient_with_quickbooks_retry_after_and_creates_nothing(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc = invoice_doc(*customer(connector))
    qbo.fail_next("429")
    with pytest.raises(TransientError) as throttled:
        connector.post_invoice(doc)
    assert throttled.value.status == 429 and throttled.value.retry_after == qbo.retry_after_seconds
    assert "ThrottleExceeded" in throttled.value.body_excerpt
    assert qbo.documents("Invoice") == []
    connector.post_invoice(doc)
    assert len(qbo.documents("Invoice")) == 1


def test_going_over_500_requests_a_minute_is_throttled_until_the_window_frees(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    qbo.max_per_minute = 3
    for _ in range(3):
        connector.find_document(OPERATION_POST_INVOICE, ref("in"))
    with pytest.raises(TransientError) as throttled:
        connector.find_document(OPERATION_POST_INVOICE, ref("in"))
    assert throttled.value.status == 429 and 50 <= (throttled.value.retry_after or 0) <= 60


def test_more_than_ten_requests_at_once_are_throttled(qbo: QuickBooksSimulator) -> None:
    qbo.max_concurrent = 1
    slow = QuickBooksConnector(qbo.connector_settings(timeout=5))
    doc = invoice_doc(*customer(slow))
    qbo.fail_next("timeout_after_commit")  # holds its answer 1.6 s: one request in flight
    worker = threading.Thread(target=slow.post_invoice, args=(doc,))
    worker.start()
    try:
        deadline = time.monotonic() + 5
        while not qbo.writes("invoice") and time.monotonic() < deadline:
            time.sleep(0.02)
        other = QuickBooksConnector(qbo.connector_settings())
        with pytest.raises(TransientError) as throttled:
            other.find_document(OPERATION_POST_INVOICE, doc.external_ref)
        assert throttled.value.status == 429
    finally:
        worker.join()


def test_a_500_on_a_write_is_uncertain_then_verified_missing_and_posted_once(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc = invoice_doc(*customer(connector))
    qbo.fail_next("500")
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None  # nothing was done
    connector.post_invoice(doc)
    assert len(qbo.documents("Invoice")) == 1


def test_a_503_is_transient(connector: QuickBooksConnector, qbo: QuickBooksSimulator) -> None:
    doc = invoice_doc(*customer(connector))
    qbo.fail_next("503")
    with pytest.raises(TransientError) as unavailable:
        connector.post_invoice(doc)
    assert unavailable.value.status == 503 and not isinstance(unavailable.value, UncertainOutcome)


def test_a_timeout_after_quickbooks_committed_is_uncertain_and_never_makes_a_second_invoice(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc = invoice_doc(*customer(connector))
    qbo.fail_next("timeout_after_commit")
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    assert [r.committed for r in qbo.requests if r.method == "POST" and r.entity == "invoice"] == [True]

    found = connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)
    [invoice] = qbo.documents("Invoice")
    assert found is not None and found.erp_id == invoice["Id"]
    assert connector.post_invoice(doc).erp_id == invoice["Id"]
    assert len(qbo.documents("Invoice")) == 1 and len(qbo.writes("invoice")) == 1


def test_a_lost_payment_answer_with_requestid_forgotten_still_gives_one_payment(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    """Field reports: requestid alone has let duplicates through. The lookup by number before every
    create is what keeps it single, whatever QuickBooks remembers of the requestid."""
    doc, invoice_id = posted_invoice(connector)
    payment = payment_doc(doc, invoice_id, 2000)
    qbo.fail_next("timeout_after_commit", "forget_requestid")
    with pytest.raises(UncertainOutcome):
        connector.apply_payment(payment)
    assert connector.apply_payment(payment).detail["action"] == "already applied"
    assert len(qbo.find("Payment", PaymentRefNum=doc_number(payment.external_ref))) == 1
    assert len(qbo.writes("payment")) == 1
    assert qbo.get("Invoice", invoice_id)["Balance"] == Decimal("41.50")


def test_when_the_lookup_cannot_see_the_first_create_the_requestid_answers_it(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = invoice_doc(*customer(connector))
    qbo.fail_next("timeout_after_commit")
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    # Inject what a real company cannot be made to do on demand: its query index lags the commit.
    monkeypatch.setattr(connector, "_by_number", lambda entity, external_ref: None)
    result = connector.post_invoice(doc)

    [invoice] = qbo.documents("Invoice")
    assert result.erp_id == invoice["Id"]
    sent = [r for r in qbo.requests if r.method == "POST" and r.entity == "invoice"]
    assert [(r.committed, r.replayed) for r in sent] == [(True, False), (False, True)]


def test_a_duplicate_number_refused_after_a_concurrent_create_adopts_that_document(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    qbo.duplicate_doc_number_check = True
    doc = invoice_doc(*customer(connector))
    first = connector.post_invoice(doc)  # the other attempt, already done
    real = connector._by_number
    lookups: list[str] = []

    def lookup_before_the_race(entity: str, external_ref: str) -> Any:
        lookups.append(entity)
        return None if len(lookups) == 1 else real(entity, external_ref)

    monkeypatch.setattr(connector, "_by_number", lookup_before_the_race)
    changed = invoice_doc(doc.customer_ref, doc.customer_erp_id, external_ref=doc.external_ref, number="INV-0042b")
    assert connector.post_invoice(changed).erp_id == first.erp_id
    assert [r.fault_code for r in qbo.requests if r.entity == "invoice"][-1] == "6140"
    assert len(qbo.documents("Invoice")) == 1


# -- refusals for finance --------------------------------------------------------------------


def test_a_closed_period_is_a_business_refusal_finance_can_act_on(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    qbo.books_closed_through = date.today() - timedelta(days=1)
    doc = invoice_doc(*customer(connector), invoice_date=date.today() - timedelta(days=5))
    with pytest.raises(BusinessRuleError) as refused:
        connector.post_invoice(doc)
    error = refused.value
    assert error.code == "closed_period" and error.params["erp_code"] == "6210"
    assert "books are closed" in error.finance_message and "reopen the period" in error.finance_message
    assert "account period has closed" in error.params["erp_message"]
    assert qbo.documents("Invoice") == []

    qbo.books_closed_through = None  # the accountant reopens the period; finance retries
    result = connector.post_invoice(doc)

    [invoice] = qbo.documents("Invoice")
    assert result.erp_id == invoice["Id"]
    sent = [r for r in qbo.requests if r.method == "POST" and r.entity == "invoice"]
    # QuickBooks answers a requestid it has seen with its first answer, the refusal included: after
    # that replay, one fresh requestid gets the present answer.
    assert [(r.fault_code, r.replayed) for r in sent] == [("6210", False), ("6210", False), ("6210", True), ("", False)]
    assert sent[0].requestid == sent[2].requestid != sent[1].requestid != sent[3].requestid


def test_a_stale_sync_token_is_transient_and_the_retry_reads_the_document_again(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    """5010 is Stale Object Error in Intuit's documentation, not a closed period."""
    doc, invoice_id = posted_invoice(connector)
    void = VoidDocument(
        external_ref=doc.external_ref + VOID_SUFFIX,
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        voided_on=date.today(),
        number=doc.number,
    )
    qbo.fail_next("stale")
    with pytest.raises(TransientError) as stale:
        connector.void_invoice(void)
    assert "5010" in stale.value.detail
    assert connector.void_invoice(void).detail["action"] == "voided"


def test_a_mapped_account_quickbooks_does_not_have_names_the_mapping(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc, invoice_id = posted_invoice(connector)
    with pytest.raises(BusinessRuleError) as unknown:
        connector.apply_payment(payment_doc(doc, invoice_id, 1000, payment_journal="999"))
    assert unknown.value.code == "unknown_payment_journal" and unknown.value.params["value"] == "999"
    assert "payment journal mapping" in unknown.value.finance_message


def test_a_payment_larger_than_what_is_open_is_parked_as_overpayment(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc, invoice_id = posted_invoice(connector)
    with pytest.raises(BusinessRuleError) as parked:
        connector.apply_payment(payment_doc(doc, invoice_id, 7000))
    assert parked.value.code == "overpayment" and parked.value.params["erp_total"] == "61.50"
    assert qbo.documents("Payment") == []


# -- the lifecycle on QuickBooks' books ------------------------------------------------------


def test_invoice_partial_payment_then_the_rest(connector: QuickBooksConnector, qbo: QuickBooksSimulator) -> None:
    doc, invoice_id = posted_invoice(connector)
    customer_id = doc.customer_erp_id
    first = payment_doc(doc, invoice_id, 2000)
    connector.apply_payment(first)

    body = last(qbo, "payment").body
    assert body == {
        "TotalAmt": Decimal("20.00"),
        "CustomerRef": {"value": customer_id},
        "CurrencyRef": {"value": "USD"},
        "TxnDate": date.today().isoformat(),
        "PaymentRefNum": doc_number(first.external_ref),
        "PrivateNote": f"hub:{first.external_ref} payment on invoice {doc.external_ref}",
        "DepositToAccountRef": {"value": CLEARING},
        "Line": [{"Amount": Decimal("20.00"), "LinkedTxn": [{"TxnId": invoice_id, "TxnType": "Invoice"}]}],
    }
    assert qbo.get("Invoice", invoice_id)["Balance"] == qbo.customer_balance(customer_id) == Decimal("41.50")

    second = payment_doc(doc, invoice_id, 4150)
    connector.apply_payment(second)
    assert qbo.get("Invoice", invoice_id)["Balance"] == qbo.customer_balance(customer_id) == Decimal("0")
    assert qbo.account_balance(CLEARING) == Decimal("61.50")
    assert connector.find_document(OPERATION_APPLY_PAYMENT, second.external_ref) is not None
    assert connector.apply_payment(second).detail["action"] == "already applied"
    assert len(qbo.documents("Payment")) == 2


def test_credit_memo_on_a_paid_invoice_then_refunded(connector: QuickBooksConnector, qbo: QuickBooksSimulator) -> None:
    doc, invoice_id = posted_invoice(connector)
    customer_id = doc.customer_erp_id
    connector.apply_payment(payment_doc(doc, invoice_id, 6150))
    credit = credit_doc(doc, invoice_id, 1000)
    memo = connector.post_credit_memo(credit)

    body = last(qbo, "creditmemo").body
    assert body["DocNumber"] == doc_number(credit.external_ref) == memo.erp_number
    assert body["CustomerRef"] == {"value": customer_id}
    assert body["PrivateNote"] == f"hub:{credit.external_ref} billing credit note CN-0007 on invoice {doc.external_ref}"
    assert body["Line"][0]["SalesItemLineDetail"]["ItemRef"] == {"value": "1"}
    assert qbo.customer_balance(customer_id) == Decimal("-10.00")  # billing owes the customer 10
    assert qbo.get("CreditMemo", memo.erp_id)["Balance"] == Decimal("10.00")  # a credit, not applied

    refund = RefundDocument(
        external_ref=credit.external_ref + REFUND_SUFFIX,
        credit_memo_ref=credit.external_ref,
        credit_memo_erp_id=memo.erp_id,
        currency="USD",
        amount_minor=1000,
        refunded_on=date.today(),
        payment_journal=CLEARING,
        number="CN-0007",
    )
    result = connector.refund_credit_memo(refund)

    entry = last(qbo, "journalentry").body
    assert entry["DocNumber"] == doc_number(refund.external_ref) == result.erp_number
    debit, credit_line = entry["Line"]
    assert debit["JournalEntryLineDetail"] == {
        "PostingType": "Debit",
        "AccountRef": {"value": "84"},
        "Entity": {"Type": "Customer", "EntityRef": {"value": customer_id}},
    }
    assert credit_line["JournalEntryLineDetail"] == {"PostingType": "Credit", "AccountRef": {"value": CLEARING}}
    assert debit["Amount"] == credit_line["Amount"] == Decimal("10.00")
    application = last(qbo, "payment").body
    assert application["TotalAmt"] == 0 and [line["LinkedTxn"][0]["TxnType"] for line in application["Line"]] == [
        "JournalEntry",
        "CreditMemo",
    ]
    assert qbo.get("CreditMemo", memo.erp_id)["Balance"] == Decimal("0")
    assert qbo.customer_balance(customer_id) == Decimal("0")
    assert qbo.account_balance(CLEARING) == Decimal("51.50")
    assert connector.find_document(OPERATION_REFUND_CREDIT_MEMO, refund.external_ref).erp_id == result.erp_id  # type: ignore[union-attr]
    assert connector.refund_credit_memo(refund).erp_id == result.erp_id
    assert len(qbo.documents("JournalEntry")) == 1 and len(qbo.documents("Payment")) == 2

    more = RefundDocument(**{**refund.__dict__, "external_ref": ref("cn") + REFUND_SUFFIX})
    with pytest.raises(BusinessRuleError) as overrefund:
        connector.refund_credit_memo(more)
    assert overrefund.value.code == "overrefund" and overrefund.value.params["erp_total"] == "0.00"


def test_a_credit_memo_covering_what_is_open_settles_the_invoice(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 2000))
    credit = credit_doc(doc, invoice_id, 4150)
    assert connector.find_document(OPERATION_POST_CREDIT_MEMO, credit.external_ref) is None
    memo = connector.post_credit_memo(credit)

    assert qbo.get("Invoice", invoice_id)["Balance"] == qbo.get("CreditMemo", memo.erp_id)["Balance"] == 0
    assert qbo.customer_balance(doc.customer_erp_id) == Decimal("0")
    assert connector.find_document(OPERATION_POST_CREDIT_MEMO, credit.external_ref).erp_id == memo.erp_id  # type: ignore[union-attr]
    connector.post_credit_memo(credit)
    assert len(qbo.documents("CreditMemo")) == 1 and len(qbo.documents("Payment")) == 2


def test_void_zeroes_the_invoice_once_and_refuses_an_invoice_with_payments(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc, invoice_id = posted_invoice(connector)
    void = VoidDocument(
        external_ref=doc.external_ref + VOID_SUFFIX,
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        voided_on=date.today(),
        number=doc.number,
    )
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref) is None
    result = connector.void_invoice(void)

    sent = last(qbo, "invoice")
    assert sent.params["operation"] == "void" and set(sent.body) == {"Id", "SyncToken"}
    invoice = qbo.get("Invoice", invoice_id)
    assert invoice["TotalAmt"] == 0 and invoice["PrivateNote"].startswith("Voided")
    assert qbo.customer_balance(doc.customer_erp_id) == 0
    assert result.erp_id == invoice_id and connector.void_invoice(void).detail["action"] == "already voided"
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref).erp_id == invoice_id  # type: ignore[union-attr]
    assert len([r for r in qbo.requests if r.params.get("operation") == "void"]) == 1

    paid, paid_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(paid, paid_id, 1000))
    with pytest.raises(BusinessRuleError) as refused:
        connector.void_invoice(
            VoidDocument(
                external_ref=paid.external_ref + VOID_SUFFIX,
                invoice_ref=paid.external_ref,
                invoice_erp_id=paid_id,
                voided_on=date.today(),
                number="INV-0042",
            )
        )
    assert refused.value.code == "void_after_payment" and "10.00 paid or applied" in refused.value.finance_message
    assert qbo.get("Invoice", paid_id)["TotalAmt"] == Decimal("61.50")


def test_a_credit_memo_is_voided_by_zeroing_it(connector: QuickBooksConnector, qbo: QuickBooksSimulator) -> None:
    doc, invoice_id = posted_invoice(connector)
    credit = credit_doc(doc, invoice_id, 1000)  # partial: stays the customer's credit
    memo = connector.post_credit_memo(credit)
    assert qbo.customer_balance(doc.customer_erp_id) == Decimal("51.50")
    void = VoidDocument(
        external_ref=credit.external_ref + VOID_SUFFIX,
        invoice_ref=credit.external_ref,
        invoice_erp_id=memo.erp_id,
        voided_on=date.today(),
        number=credit.number,
    )

    connector.void_invoice(void)

    voided = qbo.get("CreditMemo", memo.erp_id)
    assert (
        voided["TotalAmt"] == 0
        and voided["PrivateNote"]
        == f"Voided - hub:{credit.external_ref} billing credit note CN-0007 on invoice {doc.external_ref}"
    )
    assert voided["DocNumber"] == memo.erp_number
    assert qbo.customer_balance(doc.customer_erp_id) == Decimal("61.50")
    assert connector.find_document(OPERATION_VOID_CREDIT_MEMO, void.external_ref) is not None


def test_write_off_of_the_rest_after_a_partial_payment(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 2000))
    write_off = WriteOffDocument(
        external_ref=doc.external_ref + WRITE_OFF_SUFFIX,
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        currency="USD",
        amount_minor=4150,
        written_off_on=date.today(),
        write_off_method=BAD_DEBT_ITEM,
        number=doc.number,
        reason="marked uncollectible in billing",
    )
    too_much = WriteOffDocument(**{**write_off.__dict__, "amount_minor": 3000})
    with pytest.raises(LookupError):  # billing counts a payment QuickBooks does not hold yet
        connector.write_off(too_much)

    result = connector.write_off(write_off)

    memo = last(qbo, "creditmemo").body
    assert memo["Line"][0]["SalesItemLineDetail"] == {
        "ItemRef": {"value": BAD_DEBT_ITEM},
        "Qty": 1,
        "UnitPrice": Decimal("41.50"),
        "TaxCodeRef": {"value": "NON"},
    }
    assert qbo.get("Invoice", invoice_id)["Balance"] == 0
    assert qbo.customer_balance(doc.customer_erp_id) == 0
    assert qbo.account_balance(BAD_DEBTS) == Decimal("41.50")
    assert connector.find_document(OPERATION_WRITE_OFF, write_off.external_ref).erp_id == result.erp_id  # type: ignore[union-attr]
    assert connector.write_off(write_off).erp_id == result.erp_id
    assert len(qbo.documents("CreditMemo")) == 1

    other, other_id = posted_invoice(connector)
    with pytest.raises(BusinessRuleError) as unknown:
        connector.write_off(
            WriteOffDocument(
                **{
                    **write_off.__dict__,
                    "external_ref": other.external_ref + WRITE_OFF_SUFFIX,
                    "invoice_erp_id": other_id,
                    "amount_minor": 6150,
                    "write_off_method": "404",
                }
            )
        )
    assert unknown.value.code == "unknown_write_off_method"
    with pytest.raises(BusinessRuleError) as mismatch:
        connector.write_off(
            WriteOffDocument(
                **{
                    **write_off.__dict__,
                    "external_ref": other.external_ref + WRITE_OFF_SUFFIX,
                    "invoice_erp_id": other_id,
                    "amount_minor": 7000,
                }
            )
        )
    assert mismatch.value.code == "write_off_amount_mismatch"


def test_overpayment_kept_on_account_then_applied_as_credit(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    first, first_id = posted_invoice(connector)
    customer_id = first.customer_erp_id
    payment_ref = ref("pi")
    connector.apply_payment(
        payment_doc(first, first_id, 6150, external_ref=f"{payment_ref}:{first.external_ref.split(':')[1]}")
    )
    second = invoice_doc(
        first.customer_ref,
        customer_id,
        lines=(InvoiceLineDocument("Add-on", Decimal(1), 3000, 3000, "79", item="1"),),
        subtotal_minor=3000,
        total_minor=3000,
    )
    second_id = connector.post_invoice(second).erp_id
    application = payment_doc(
        second, second_id, 3000, external_ref=f"{payment_ref}:{second.external_ref.split(':')[1]}"
    )
    with pytest.raises(LookupError):  # the unapplied cash has not reached QuickBooks yet
        connector.apply_credit(application)

    on_account = OnAccountDocument(
        external_ref=f"{payment_ref}:on-account",
        payment_ref=payment_ref,
        customer_ref=first.customer_ref,
        customer_erp_id=customer_id,
        currency="USD",
        amount_minor=3850,
        received_on=date.today(),
        payment_journal=CLEARING,
    )
    received = connector.receive_on_account(on_account)
    body = last(qbo, "payment").body
    assert "Line" not in body and body["TotalAmt"] == Decimal("38.50")
    assert qbo.get("Payment", received.erp_id)["UnappliedAmt"] == Decimal("38.50")
    assert qbo.customer_balance(customer_id) == Decimal("30.00") - Decimal("38.50")
    assert connector.find_document(OPERATION_RECEIVE_ON_ACCOUNT, on_account.external_ref).erp_id == received.erp_id  # type: ignore[union-attr]

    applied = connector.apply_credit(application)

    update = last(qbo, "payment").body
    assert update["sparse"] is True and update["Id"] == received.erp_id
    assert update["Line"] == [{"Amount": Decimal("30.00"), "LinkedTxn": [{"TxnId": second_id, "TxnType": "Invoice"}]}]
    assert f"applied {application.external_ref}" in update["PrivateNote"]
    assert applied.erp_id == received.erp_id
    assert qbo.get("Invoice", second_id)["Balance"] == 0
    assert qbo.get("Payment", received.erp_id)["UnappliedAmt"] == Decimal("8.50")
    assert qbo.customer_balance(customer_id) == Decimal("-8.50")  # the credit left, as billing says
    assert connector.find_document(OPERATION_APPLY_CREDIT, application.external_ref) is not None
    assert connector.apply_credit(application).detail["action"] == "already applied from credit"
    assert len(qbo.writes("payment")) == 3


def _dispute(movement: str, dispute_ref: str) -> DisputeMovementDocument:
    return DisputeMovementDocument(
        external_ref=f"{dispute_ref}:{movement}",
        dispute_ref=dispute_ref,
        payment_ref="stripe-us:pi_disputed",
        movement=movement,
        currency="USD",
        amount_minor=6150,
        moved_on=date.today(),
        payment_journal=CLEARING,
        dispute_account=DISPUTED,
        loss_account=CHARGEBACK_LOSSES if movement == "lost" else "",
    )


def test_dispute_withdrawn_then_lost_and_another_reinstated(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 6150))
    lost_ref, won_ref = ref("dp"), ref("dp")

    withdrawn = connector.move_disputed_funds(_dispute("withdrawn", lost_ref))
    entry = last(qbo, "journalentry").body
    assert [
        (line["JournalEntryLineDetail"]["PostingType"], line["JournalEntryLineDetail"]["AccountRef"]["value"])
        for line in entry["Line"]
    ] == [("Debit", DISPUTED), ("Credit", CLEARING)]
    assert (qbo.account_balance(DISPUTED), qbo.account_balance(CLEARING)) == (Decimal("61.50"), Decimal("0"))
    assert connector.find_document(OPERATION_WITHDRAW_DISPUTED_FUNDS, f"{lost_ref}:withdrawn").erp_id == (  # type: ignore[union-attr]
        withdrawn.erp_id
    )
    connector.move_disputed_funds(_dispute("lost", lost_ref))
    assert qbo.account_balance(DISPUTED) == 0 and qbo.account_balance(CHARGEBACK_LOSSES) == Decimal("61.50")
    assert connector.find_document(OPERATION_LOSE_DISPUTE, f"{lost_ref}:lost") is not None

    connector.move_disputed_funds(_dispute("withdrawn", won_ref))
    connector.move_disputed_funds(_dispute("reinstated", won_ref))
    connector.move_disputed_funds(_dispute("reinstated", won_ref))  # a retry: found, not posted again
    assert qbo.account_balance(DISPUTED) == 0 and qbo.account_balance(CLEARING) == Decimal("0")
    assert qbo.customer_balance(doc.customer_erp_id) == 0  # the invoice stays paid, as in billing
    assert len(qbo.documents("JournalEntry")) == 4


def test_credit_applied_to_an_invoice_whose_id_extends_another_is_applied_to_both(
    connector: QuickBooksConnector, qbo: QuickBooksSimulator
) -> None:
    customer_ref, customer_id = customer(connector)
    stem = ref("in")
    lines = (InvoiceLineDocument("Add-on", Decimal(1), 1000, 1000, "79", item="1"),)
    short = invoice_doc(
        customer_ref, customer_id, external_ref=f"{stem}1", lines=lines, subtotal_minor=1000, total_minor=1000
    )
    long = invoice_doc(
        customer_ref, customer_id, external_ref=f"{stem}10", lines=lines, subtotal_minor=1000, total_minor=1000
    )
    short_id, long_id = connector.post_invoice(short).erp_id, connector.post_invoice(long).erp_id
    payment_ref = ref("pi")
    connector.receive_on_account(
        OnAccountDocument(
            external_ref=f"{payment_ref}:on-account",
            payment_ref=payment_ref,
            customer_ref=customer_ref,
            customer_erp_id=customer_id,
            currency="USD",
            amount_minor=2000,
            received_on=date.today(),
            payment_journal=CLEARING,
        )
    )
    for invoice, erp_id in ((long, long_id), (short, short_id)):  # "...10" first, then its prefix "...1"
        application = payment_doc(
            invoice, erp_id, 1000, external_ref=f"{payment_ref}:{invoice.external_ref.split(':')[1]}"
        )
        assert connector.apply_credit(application).detail["action"] == "applied from credit"

    assert qbo.get("Invoice", short_id)["Balance"] == qbo.get("Invoice", long_id)["Balance"] == 0
    assert qbo.customer_balance(customer_id) == 0
