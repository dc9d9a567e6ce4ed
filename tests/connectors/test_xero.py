"""Contract tests of ``XeroConnector`` against the Xero contract simulator (tests/xero_simulator.py):
what the connector sends has Xero's documented shape, Xero's answers map onto the hub's error
taxonomy, nothing is posted twice, and Xero's books say what billing says after each step."""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from apps.connectors.base import (
    OPERATION_APPLY_CREDIT,
    OPERATION_APPLY_PAYMENT,
    OPERATION_LOSE_DISPUTE,
    OPERATION_POST_CREDIT_MEMO,
    OPERATION_POST_INVOICE,
    OPERATION_RECEIVE_ON_ACCOUNT,
    OPERATION_VOID_CREDIT_MEMO,
    OPERATION_VOID_INVOICE,
    OPERATION_WITHDRAW_DISPUTED_FUNDS,
    OPERATION_WRITE_OFF,
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
from apps.connectors.xero import XeroConnector
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    Throttled,
    TransientError,
    UncertainOutcome,
)
from tests.xero_simulator import API_PREFIX, TOKEN_PATH, XeroSimulator

DAY = datetime.date(2026, 3, 2)
SOURCE = "stripe-us"


@pytest.fixture
def xero() -> Iterator[XeroSimulator]:
    simulator = XeroSimulator(hang_seconds=2.0)
    yield simulator
    simulator.stop()


@pytest.fixture
def connector(xero: XeroSimulator) -> Iterator[XeroConnector]:
    connector = XeroConnector(xero.settings(timeout=1))
    yield connector
    connector.close()


_counter = iter(range(1, 10_000))


def uid(prefix: str) -> str:
    return f"{prefix}_{next(_counter):04d}"


def customer(connector: XeroConnector, name: str = "ACME Corp", **kwargs: Any) -> str:
    doc = CustomerDocument(external_ref=f"{SOURCE}:{uid('cus')}", name=name, email="ap@acme.example", **kwargs)
    return connector.ensure_customer(doc).erp_id


def lines(*amounts: tuple[str, int, str], tax_code: str = "", tax: int = 0) -> tuple[InvoiceLineDocument, ...]:
    return tuple(
        InvoiceLineDocument(
            description=description,
            quantity=Decimal(1),
            unit_amount_minor=amount,
            amount_minor=amount,
            revenue_account=account,
            tax_code=tax_code,
            tax_minor=tax,
        )
        for description, amount, account in amounts
    )


def invoice_doc(contact: str, *, total: int | None = None, ref: str = "", **kwargs: Any) -> InvoiceDocument:
    invoice_lines = kwargs.pop("lines", None) or lines(("Pro plan (monthly)", 4900, "200"), ("API calls", 1250, "210"))
    subtotal = sum(line.amount_minor for line in invoice_lines)
    tax = sum(line.tax_minor for line in invoice_lines)
    return InvoiceDocument(
        external_ref=ref or f"{SOURCE}:{uid('in')}",
        number=kwargs.pop("number", "ACME-0001"),
        customer_ref=f"{SOURCE}:cus",
        customer_erp_id=contact,
        currency=kwargs.pop("currency", "USD"),
        invoice_date=kwargs.pop("invoice_date", DAY),
        due_date=kwargs.pop("due_date", DAY + datetime.timedelta(days=30)),
        lines=invoice_lines,
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=subtotal + tax if total is None else total,
        correlation_id=kwargs.pop("correlation_id", "corr-xero-1"),
        **kwargs,
    )


def post_invoice(connector: XeroConnector, contact: str, **kwargs: Any) -> tuple[InvoiceDocument, str]:
    doc = invoice_doc(contact, **kwargs)
    return doc, connector.post_invoice(doc).erp_id


def pay(
    connector: XeroConnector, doc: InvoiceDocument, invoice_id: str, amount: int, account: str = "091"
) -> tuple[str, str]:
    payment_ref = f"{SOURCE}:{uid('pi')}"
    invoice_source_id = doc.external_ref.split(":", 1)[1]
    payment = PaymentDocument(
        external_ref=f"{payment_ref}:{invoice_source_id}",
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        customer_erp_id=doc.customer_erp_id,
        currency="USD",
        amount_minor=amount,
        paid_on=DAY,
        payment_journal=account,
    )
    return payment_ref, connector.apply_payment(payment).erp_id


def credit_doc(invoice: InvoiceDocument, invoice_id: str, amount: int, **kwargs: Any) -> CreditMemoDocument:
    credit_lines = lines(("API calls credited", amount, "210"))
    return CreditMemoDocument(
        external_ref=kwargs.pop("ref", f"{SOURCE}:{uid('cn')}"),
        number="CN-1",
        invoice_ref=invoice.external_ref,
        invoice_erp_id=invoice_id,
        customer_ref=invoice.customer_ref,
        customer_erp_id=invoice.customer_erp_id,
        currency="USD",
        invoice_date=DAY,
        lines=credit_lines,
        subtotal_minor=amount,
        tax_minor=0,
        total_minor=amount,
        **kwargs,
    )


def invoice_in(xero: XeroSimulator, invoice_id: str) -> dict[str, Any]:
    return xero.invoices[invoice_id]


# -- shapes --------------------------------------------------------------------------------------


def test_a_customer_is_a_contact_carrying_the_hub_reference_and_is_created_once(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    doc = CustomerDocument(
        external_ref=f"{SOURCE}:cus_shape",
        name="Globex Ltd",
        email="billing@globex.example",
        tax_id="GB123456789",
        payment_terms_days=14,
        bill_to=Address(line1="1 High Street", city="London", postal_code="N1 9GU", country="GB"),
    )
    created = connector.ensure_customer(doc)
    again = connector.ensure_customer(doc)

    [put] = xero.writes("Contacts")
    assert put.method == "PUT"
    assert put.body == {
        "Contacts": [
            {
                "Name": "Globex Ltd",
                "ContactNumber": f"{SOURCE}:cus_shape",
                "EmailAddress": "billing@globex.example",
                "TaxNumber": "GB123456789",
                "Addresses": [
                    {
                        "AddressType": "POBOX",
                        "AddressLine1": "1 High Street",
                        "City": "London",
                        "PostalCode": "N1 9GU",
                        "Country": "GB",
                    }
                ],
                "PaymentTerms": {"Sales": {"Day": 14, "Type": "DAYSAFTERBILLDATE"}},
            }
        ]
    }
    assert created.erp_id == again.erp_id and again.detail["action"] == "unchanged"
    assert xero.contact_by_number(f"{SOURCE}:cus_shape")["ContactID"] == created.erp_id
    assert len(xero.contacts) == 1

    renamed = connector.ensure_customer(CustomerDocument(external_ref=f"{SOURCE}:cus_shape", name="Globex Group"))
    assert renamed.detail["action"] == "updated"
    assert xero.contacts[created.erp_id]["Name"] == "Globex Group"
    assert xero.writes("Contacts")[-1].body == {"Contacts": [{"ContactID": created.erp_id, "Name": "Globex Group"}]}


def test_two_billing_customers_with_one_name_become_two_contacts_told_apart_by_billing_id(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    first = connector.ensure_customer(CustomerDocument(external_ref=f"{SOURCE}:cus_a", name="John Smith"))
    second = connector.ensure_customer(CustomerDocument(external_ref=f"{SOURCE}:cus_b", name="John Smith"))

    assert first.erp_id != second.erp_id
    assert xero.contacts[first.erp_id]["Name"] == "John Smith"
    assert xero.contacts[second.erp_id]["Name"] == "John Smith (cus_b)"
    # The second one is found again by its reference, not created a third time.
    assert connector.ensure_customer(CustomerDocument(external_ref=f"{SOURCE}:cus_b", name="John Smith")).erp_id == (
        second.erp_id
    )
    assert len(xero.contacts) == 2


def test_an_invoice_is_drafted_with_billing_amounts_checked_then_approved(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    taxed = (
        InvoiceLineDocument("Pro plan (monthly)", Decimal(1), 4900, 4900, "200", "OUTPUT2", 980, item="PRO"),
        InvoiceLineDocument("API calls", Decimal("2.5"), 500, 1250, "210", "OUTPUT2", 250),
    )
    xero.items.add("PRO")
    doc = invoice_doc(contact, lines=taxed)
    result = connector.post_invoice(doc)

    draft, approve = xero.writes("Invoices")
    assert (draft.method, draft.path) == ("PUT", "Invoices")
    assert draft.body == {
        "Invoices": [
            {
                "Type": "ACCREC",
                "Contact": {"ContactID": contact},
                "Date": "2026-03-02",
                "LineAmountTypes": "Exclusive",
                "LineItems": [
                    {
                        "Description": "Pro plan (monthly)",
                        "Quantity": 1,
                        "UnitAmount": Decimal("49.00"),
                        "LineAmount": Decimal("49.00"),
                        "AccountCode": "200",
                        "TaxType": "OUTPUT2",
                        "TaxAmount": Decimal("9.80"),
                        "ItemCode": "PRO",
                    },
                    {
                        "Description": "API calls",
                        "Quantity": Decimal("2.5"),
                        "UnitAmount": Decimal("5.00"),
                        "LineAmount": Decimal("12.50"),
                        "AccountCode": "210",
                        "TaxType": "OUTPUT2",
                        "TaxAmount": Decimal("2.50"),
                    },
                ],
                "Reference": doc.external_ref,
                "CurrencyCode": "USD",
                "Status": "DRAFT",
                "DueDate": "2026-04-01",
            }
        ]
    }
    assert (approve.method, approve.path) == ("POST", f"Invoices/{result.erp_id}")
    assert approve.body == {"Invoices": [{"InvoiceID": result.erp_id, "Status": "AUTHORISED"}]}
    assert draft.idempotency_key and approve.idempotency_key and draft.idempotency_key != approve.idempotency_key
    assert all(len(r.idempotency_key) <= 128 for r in xero.writes())
    assert {r.correlation_id for r in xero.writes("Invoices")} == {"corr-xero-1"}

    held = invoice_in(xero, result.erp_id)
    assert (held["Status"], held["Total"], held["TotalTax"]) == ("AUTHORISED", Decimal("73.80"), Decimal("12.30"))
    assert result.erp_number == held["InvoiceNumber"] and result.detail["total"] == "73.80"
    assert xero.receivable(contact) == Decimal("73.80")
    assert xero.account_balance("820") == Decimal("-12.30")  # the tax Xero owes, as billing charged it

    writes = len(xero.writes())
    assert connector.post_invoice(doc).erp_id == result.erp_id  # posted again: found, not sent
    assert len(xero.writes()) == writes
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref).erp_id == result.erp_id


def test_dimensions_become_tracking_options_on_each_line(xero: XeroSimulator) -> None:
    xero.tracking_categories["Region"] = {"EMEA"}
    connector = XeroConnector(xero.settings(tracking_categories={"region": "Region"}))
    contact = customer(connector)
    result = connector.post_invoice(invoice_doc(contact, dimensions={"region": "EMEA", "department": "Sales"}))

    [draft, _] = xero.writes("Invoices")
    assert [line["Tracking"] for line in draft.body["Invoices"][0]["LineItems"]] == [
        [{"Name": "Region", "Option": "EMEA"}],
        [{"Name": "Region", "Option": "EMEA"}],
    ]
    assert invoice_in(xero, result.erp_id)["Status"] == "AUTHORISED"


def test_the_simulator_refuses_a_body_of_the_wrong_shape_with_xeros_validation_error(xero: XeroSimulator) -> None:
    """What makes the shape assertions above mean something: Xero's 400 for a malformed body."""
    token = requests.post(
        xero.url + TOKEN_PATH, data={"grant_type": "client_credentials"}, auth=(xero.client_id, xero.client_secret)
    ).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}", "xero-tenant-id": xero.tenant_id}
    body = {"Invoices": [{"Type": "ACCREC", "LineItems": [{"Description": "x", "UnitAmount": "12.50"}]}]}
    answer = requests.put(xero.url + API_PREFIX + "/Invoices", json=body, headers=headers)

    assert answer.status_code == 400
    error = answer.json()
    assert (error["ErrorNumber"], error["Type"], error["Message"]) == (
        10,
        "ValidationException",
        "A validation exception occurred",
    )
    assert error["Elements"][0]["ValidationErrors"] == [{"Message": "Invoice.LineItems[0].UnitAmount must be a number"}]
    assert xero.invoices == {}


# -- refusals ------------------------------------------------------------------------------------


def test_an_unknown_revenue_account_or_tax_rate_is_refused_before_anything_is_written(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    before = len(xero.writes())
    with pytest.raises(BusinessRuleError) as account:
        connector.post_invoice(invoice_doc(contact, lines=lines(("Plan", 4900, "4999"))))
    with pytest.raises(BusinessRuleError) as not_revenue:
        connector.post_invoice(invoice_doc(contact, lines=lines(("Plan", 4900, "400"))))
    with pytest.raises(BusinessRuleError) as tax:
        connector.post_invoice(invoice_doc(contact, lines=lines(("Plan", 4900, "200"), tax_code="VAT99", tax=100)))

    assert (account.value.code, account.value.params) == ("unmapped_revenue_account", {"value": "4999"})
    assert "The account '4999' does not exist in Xero" in account.value.finance_message
    assert "is not a revenue account" in not_revenue.value.finance_message
    assert (tax.value.code, tax.value.params) == ("unknown_tax_code", {"value": "VAT99"})
    assert len(xero.writes()) == before


def test_a_locked_period_is_a_business_refusal_finance_can_act_on_and_the_retry_posts_once(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    xero.lock_date = datetime.date(2026, 3, 31)
    doc = invoice_doc(contact)
    with pytest.raises(BusinessRuleError) as refused:
        connector.post_invoice(doc)

    assert refused.value.code == "closed_period"
    assert refused.value.status == 400
    message = refused.value.finance_message
    assert "The document date cannot be before the period lock date of 31 March 2026." in message
    assert "Ask the accountant to move the lock date" in message
    assert refused.value.params["erp_message"].startswith("The document date cannot be before the period lock date")
    [draft] = xero.by_reference(xero.invoices, doc.external_ref)
    assert draft["Status"] == "DRAFT" and xero.receivable(contact) == 0  # nothing reached the books

    xero.lock_date = datetime.date(2026, 2, 28)  # the accountant moved the lock date
    result = connector.post_invoice(doc)
    assert [i["Status"] for i in xero.by_reference(xero.invoices, doc.external_ref)] == ["AUTHORISED"]
    assert result.erp_id == draft["InvoiceID"]  # the same draft, approved
    assert xero.receivable(contact) == Decimal("61.50")


def test_a_total_xero_does_not_agree_with_is_never_approved(xero: XeroSimulator, connector: XeroConnector) -> None:
    contact = customer(connector)
    doc = invoice_doc(contact, total=6200)  # billing's total says 62.00; its lines add up to 61.50
    with pytest.raises(BusinessRuleError) as refused:
        connector.post_invoice(doc)

    assert refused.value.code == "amount_mismatch"
    assert refused.value.params == {"erp_total": "61.50", "billing_total": "62.00"}
    assert "Xero computes 61.50 USD" in refused.value.finance_message
    assert [i["Status"] for i in xero.by_reference(xero.invoices, doc.external_ref)] == ["DRAFT"]
    assert xero.receivable(contact) == 0


# -- authentication ------------------------------------------------------------------------------


def test_the_access_token_is_fetched_once_kept_until_it_expires_and_fetched_again(xero: XeroSimulator) -> None:
    xero.token_lifetime = 3  # renewed a little before: 10% of the lifetime
    connector = XeroConnector(xero.settings())
    contact = customer(connector)
    connector.find_document(OPERATION_POST_INVOICE, "stripe-us:in_nothing")
    assert xero.token_requests == 1  # three requests, one token

    time.sleep(3)
    connector.find_document(OPERATION_POST_INVOICE, "stripe-us:in_nothing")
    assert xero.token_requests == 2  # renewed before use, without a 401
    assert all(r.status != 401 for r in xero.requests)

    xero.token_lifetime = 1800
    xero.expire_tokens()  # Xero revoked or expired it early: a 401, a new token, the same request again
    result = connector.post_invoice(invoice_doc(contact))
    assert xero.token_requests == 3
    assert [r.status for r in xero.requests if r.status == 401] == [401]
    assert invoice_in(xero, result.erp_id)["Status"] == "AUTHORISED"


def test_refused_credentials_raise_an_authentication_error_and_nothing_is_sent(xero: XeroSimulator) -> None:
    xero.refuse_credentials()
    connector = XeroConnector(xero.settings())
    with pytest.raises(AuthenticationError) as refused:
        customer(connector)
    assert refused.value.status == 400 and "invalid_client" in refused.value.body_excerpt
    assert xero.requests == []


def test_an_organisation_the_app_is_not_connected_to_is_an_authentication_error(xero: XeroSimulator) -> None:
    connector = XeroConnector(xero.settings(tenant_id="00000000-0000-0000-0000-000000000000"))
    with pytest.raises(AuthenticationError) as refused:
        customer(connector)
    assert refused.value.status == 403 and "AuthenticationUnsuccessful" in refused.value.body_excerpt


# -- throttling ----------------------------------------------------------------------------------


def test_a_429_is_transient_with_xeros_retry_after_and_the_connector_waits_it_out(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    xero.fail_next("429")
    with pytest.raises(TransientError) as throttled:
        connector.post_invoice(invoice_doc(contact))
    assert throttled.value.status == 429 and throttled.value.retry_after == 2.0

    sent = len(xero.requests)
    with pytest.raises(Throttled) as waiting:  # inside Xero's Retry-After: nothing is sent
        connector.post_invoice(invoice_doc(contact))
    assert 0 < waiting.value.retry_after <= 2.0
    assert len(xero.requests) == sent

    time.sleep(2.1)
    result = connector.post_invoice(invoice_doc(contact))
    assert invoice_in(xero, result.erp_id)["Status"] == "AUTHORISED"


def test_a_spent_minute_reported_in_the_headers_holds_the_next_call_without_sending_it(xero: XeroSimulator) -> None:
    xero.minute_limit = 3
    connector = XeroConnector(xero.settings())
    customer(connector)  # GET, PUT, and the token: X-MinLimit-Remaining is now 1
    with pytest.raises(Throttled) as held:
        customer(connector)  # GET (remaining 0), then the PUT waits
    assert connector.api.remaining["minute"] == 0
    assert 55 < held.value.retry_after <= 60
    assert [r.status for r in xero.requests] == [200, 200, 200]  # Xero never had to answer 429


# -- exactly once through faults -----------------------------------------------------------------


def test_a_5xx_is_uncertain_and_the_resend_after_the_lookup_uses_a_fresh_key(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc = invoice_doc(contact)
    xero.fail_next("500")
    with pytest.raises(UncertainOutcome) as uncertain:
        connector.post_invoice(doc)
    assert uncertain.value.status == 500

    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None
    result = connector.post_invoice(doc)

    failed, created, _ = xero.writes("Invoices")
    assert (failed.status, created.status) == (500, 200)
    # Xero keeps a 5xx under its key: the same key would have answered 500 again.
    assert failed.idempotency_key != created.idempotency_key and failed.body == created.body
    assert [i["InvoiceID"] for i in xero.by_reference(xero.invoices, doc.external_ref)] == [result.erp_id]


def test_a_timeout_after_xero_approved_the_invoice_is_uncertain_then_found_and_never_duplicated(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc = invoice_doc(contact)
    xero.fail_next("none", "timeout_after_commit")  # the draft goes through; the approval's answer is lost
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)

    found = connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)
    assert found is not None
    [held] = xero.by_reference(xero.invoices, doc.external_ref)
    assert (found.erp_id, held["Status"]) == (held["InvoiceID"], "AUTHORISED")
    writes = len(xero.writes())
    assert connector.post_invoice(doc).erp_id == found.erp_id  # a repeated call sends nothing
    assert len(xero.writes()) == writes
    assert xero.receivable(contact) == Decimal("61.50")


def test_a_payment_whose_answer_was_lost_is_found_and_recorded_once(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    xero.fail_next("timeout_after_commit")
    payment = PaymentDocument(
        external_ref=f"{SOURCE}:pi_lost:{doc.external_ref.split(':')[1]}",
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        customer_erp_id=contact,
        currency="USD",
        amount_minor=2000,
        paid_on=DAY,
        payment_journal="091",
    )
    with pytest.raises(UncertainOutcome):
        connector.apply_payment(payment)
    found = connector.find_document(OPERATION_APPLY_PAYMENT, payment.external_ref)
    assert found is not None
    assert connector.apply_payment(payment).detail["action"] == "already applied"
    assert [p["PaymentID"] for p in xero.by_reference(xero.payments, payment.external_ref)] == [found.erp_id]
    assert xero.receivable(contact) == Decimal("41.50")


# -- the lifecycle on Xero's books ---------------------------------------------------------------


def test_invoice_then_partial_then_final_payment_settles_it(xero: XeroSimulator, connector: XeroConnector) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    assert xero.receivable(contact) == Decimal("61.50")

    pay(connector, doc, invoice_id, 2000)
    held = invoice_in(xero, invoice_id)
    assert (held["Status"], held["AmountDue"]) == ("AUTHORISED", Decimal("41.50"))
    assert xero.receivable(contact) == Decimal("41.50")
    payment = xero.writes("Payments")[-1]
    assert payment.body == {
        "Payments": [
            {
                "Invoice": {"InvoiceID": invoice_id},
                "Account": {"Code": "091"},
                "Date": "2026-03-02",
                "Amount": Decimal("20.00"),
                "Reference": payment.body["Payments"][0]["Reference"],
            }
        ]
    }

    pay(connector, doc, invoice_id, 4150)
    held = invoice_in(xero, invoice_id)
    assert (held["Status"], held["AmountDue"], held["AmountPaid"]) == ("PAID", Decimal("0"), Decimal("61.50"))
    assert xero.receivable(contact) == Decimal("0")
    assert xero.account_balance("091") == Decimal("61.50")
    assert xero.account_balance("200") + xero.account_balance("210") == Decimal("-61.50")

    with pytest.raises(BusinessRuleError) as over:
        pay(connector, doc, invoice_id, 100)
    assert over.value.code == "overpayment" and "does not fit" in over.value.finance_message


def test_a_partial_credit_note_is_allocated_to_its_open_invoice(xero: XeroSimulator, connector: XeroConnector) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    memo = credit_doc(doc, invoice_id, 750)
    result = connector.post_credit_memo(memo)

    draft, approve, allocate = xero.writes("CreditNotes")
    assert draft.body["CreditNotes"][0]["Type"] == "ACCRECCREDIT"
    assert draft.body["CreditNotes"][0]["LineItems"][0]["LineAmount"] == Decimal("7.50")
    assert "DueDate" not in draft.body["CreditNotes"][0]
    assert approve.body == {"CreditNotes": [{"CreditNoteID": result.erp_id, "Status": "AUTHORISED"}]}
    assert (allocate.method, allocate.path) == ("PUT", f"CreditNotes/{result.erp_id}/Allocations")
    assert allocate.body == {
        "Allocations": [{"Invoice": {"InvoiceID": invoice_id}, "Amount": Decimal("7.50"), "Date": "2026-03-02"}]
    }
    assert invoice_in(xero, invoice_id)["AmountDue"] == Decimal("54.00")
    assert xero.credit_notes[result.erp_id]["Status"] == "PAID"  # all of it allocated
    assert xero.receivable(contact) == Decimal("54.00")
    assert connector.find_document(OPERATION_POST_CREDIT_MEMO, memo.external_ref).erp_id == result.erp_id

    writes = len(xero.writes())
    connector.post_credit_memo(memo)  # again: found, already allocated
    assert len(xero.writes()) == writes


def test_a_paid_invoice_credited_then_refunded_pays_the_customer_back(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    pay(connector, doc, invoice_id, 6150)
    memo = credit_doc(doc, invoice_id, 1250)
    credit = connector.post_credit_memo(memo)
    assert xero.credit_notes[credit.erp_id]["RemainingCredit"] == Decimal("12.50")  # nothing due to allocate to
    assert xero.receivable(contact) == Decimal("-12.50")  # the customer's credit

    refund = RefundDocument(
        external_ref=f"{memo.external_ref}:refund",
        credit_memo_ref=memo.external_ref,
        credit_memo_erp_id=credit.erp_id,
        currency="USD",
        amount_minor=1250,
        refunded_on=DAY,
        payment_journal="091",
    )
    refunded = connector.refund_credit_memo(refund)
    assert xero.writes("Payments")[-1].body["Payments"][0]["CreditNote"] == {"CreditNoteID": credit.erp_id}
    assert xero.credit_notes[credit.erp_id]["Status"] == "PAID"
    assert xero.receivable(contact) == Decimal("0")
    assert xero.account_balance("091") == Decimal("49.00")  # 61.50 in, 12.50 back out
    assert connector.refund_credit_memo(refund).erp_id == refunded.erp_id  # found again, not repeated

    more = RefundDocument(**{**refund.__dict__, "external_ref": f"{memo.external_ref}:refund2"})
    with pytest.raises(BusinessRuleError) as over:
        connector.refund_credit_memo(more)
    assert over.value.code == "overrefund"


def test_void_cancels_an_unpaid_invoice_once_and_refuses_one_with_payments(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    void = VoidDocument(
        external_ref=f"{doc.external_ref}:void", invoice_ref=doc.external_ref, invoice_erp_id=invoice_id, voided_on=DAY
    )
    result = connector.void_invoice(void)

    assert xero.writes()[-1].body == {"Invoices": [{"InvoiceID": invoice_id, "Status": "VOIDED"}]}
    assert (result.erp_id, invoice_in(xero, invoice_id)["Status"]) == (invoice_id, "VOIDED")
    assert xero.receivable(contact) == Decimal("0")
    writes = len(xero.writes())
    connector.void_invoice(void)  # delivered twice: still one void
    assert len(xero.writes()) == writes
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref).erp_id == invoice_id

    paid, paid_id = post_invoice(connector, contact)
    pay(connector, paid, paid_id, 1000)
    with pytest.raises(BusinessRuleError) as refused:
        connector.void_invoice(
            VoidDocument(
                external_ref=f"{paid.external_ref}:void",
                invoice_ref=paid.external_ref,
                invoice_erp_id=paid_id,
                voided_on=DAY,
            )
        )
    assert refused.value.code == "void_after_payment"
    assert "Refund the payment in billing" in refused.value.finance_message
    assert invoice_in(xero, paid_id)["Status"] == "AUTHORISED"


def test_a_voided_credit_note_gives_the_invoice_its_amount_due_back(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    memo = credit_doc(doc, invoice_id, 900)
    credit = connector.post_credit_memo(memo)
    assert xero.receivable(contact) == Decimal("52.50")

    void = VoidDocument(
        external_ref=f"{memo.external_ref}:void",
        invoice_ref=memo.external_ref,
        invoice_erp_id=credit.erp_id,
        voided_on=DAY,
    )
    result = connector.void_invoice(void)

    deleted = [r for r in xero.requests if r.method == "DELETE"]
    assert [r.path.rsplit("/", 1)[0] for r in deleted] == [f"CreditNotes/{credit.erp_id}/Allocations"]
    assert (result.erp_id, xero.credit_notes[credit.erp_id]["Status"]) == (credit.erp_id, "VOIDED")
    assert invoice_in(xero, invoice_id)["AmountDue"] == Decimal("61.50")
    assert xero.receivable(contact) == Decimal("61.50")
    assert connector.find_document(OPERATION_VOID_CREDIT_MEMO, void.external_ref).erp_id == credit.erp_id


def test_a_write_off_is_a_credit_note_to_bad_debts_allocated_to_the_invoice(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    pay(connector, doc, invoice_id, 2000)
    write_off = WriteOffDocument(
        external_ref=f"{doc.external_ref}:write-off",
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        currency="USD",
        amount_minor=6150,  # billing still counts the payment as unpaid: Xero has less due
        written_off_on=DAY,
        write_off_method="684",
    )
    with pytest.raises(BusinessRuleError) as mismatch:
        connector.write_off(write_off)
    assert mismatch.value.code == "write_off_amount_mismatch"
    with pytest.raises(LookupError):  # billing counts a payment Xero does not hold yet: wait for it
        connector.write_off(WriteOffDocument(**{**write_off.__dict__, "amount_minor": 1000}))

    result = connector.write_off(WriteOffDocument(**{**write_off.__dict__, "amount_minor": 4150}))

    credit_put = xero.writes("CreditNotes")[0]
    assert credit_put.body == {
        "CreditNotes": [
            {
                "Type": "ACCRECCREDIT",
                "Contact": {"ContactID": contact},
                "Date": "2026-03-02",
                "LineAmountTypes": "NoTax",
                "LineItems": [
                    {
                        "Description": f"Bad debt written off: invoice {invoice_in(xero, invoice_id)['InvoiceNumber']} "
                        f"({doc.external_ref})",
                        "Quantity": 1,
                        "UnitAmount": Decimal("41.50"),
                        "LineAmount": Decimal("41.50"),
                        "AccountCode": "684",
                    }
                ],
                "Reference": write_off.external_ref,
                "CurrencyCode": "USD",
                "Status": "AUTHORISED",
            }
        ]
    }
    assert invoice_in(xero, invoice_id)["Status"] == "PAID"
    assert xero.credit_notes[result.erp_id]["Status"] == "PAID"
    assert xero.account_balance("684") == Decimal("41.50")
    assert xero.receivable(contact) == Decimal("0")
    assert connector.find_document(OPERATION_WRITE_OFF, write_off.external_ref).erp_id == result.erp_id


def test_overpaid_cash_sits_on_account_then_is_applied_to_the_next_invoice_as_credit(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    first, first_id = post_invoice(connector, contact)
    payment_ref = f"{SOURCE}:pi_over"
    connector.apply_payment(
        PaymentDocument(
            external_ref=f"{payment_ref}:{first.external_ref.split(':')[1]}",
            invoice_ref=first.external_ref,
            invoice_erp_id=first_id,
            customer_erp_id=contact,
            currency="USD",
            amount_minor=6150,
            paid_on=DAY,
            payment_journal="091",
        )
    )
    on_account = OnAccountDocument(
        external_ref=f"{payment_ref}:on-account",
        payment_ref=payment_ref,
        customer_ref=first.customer_ref,
        customer_erp_id=contact,
        currency="USD",
        amount_minor=3850,  # 100.00 paid, 61.50 taken by the invoice
        received_on=DAY,
        payment_journal="091",
    )
    received = connector.receive_on_account(on_account)

    [bank] = xero.writes("BankTransactions")
    assert bank.body == {
        "BankTransactions": [
            {
                "Type": "RECEIVE-OVERPAYMENT",
                "Contact": {"ContactID": contact},
                "BankAccount": {"Code": "091"},
                "Date": "2026-03-02",
                "Reference": on_account.external_ref,
                "CurrencyCode": "USD",
                "LineAmountTypes": "NoTax",
                "LineItems": [
                    {"Description": f"Unapplied cash from payment {payment_ref}", "LineAmount": Decimal("38.50")}
                ],
            }
        ]
    }
    assert xero.overpayments[received.erp_id]["RemainingCredit"] == Decimal("38.50")
    assert xero.receivable(contact) == Decimal("-38.50")  # billing: the customer has 38.50 of credit
    assert connector.find_document(OPERATION_RECEIVE_ON_ACCOUNT, on_account.external_ref).erp_id == received.erp_id

    second, second_id = post_invoice(connector, contact, lines=lines(("Add-on", 3000, "200")))
    assert xero.receivable(contact) == Decimal("-8.50")
    application = PaymentDocument(
        external_ref=f"{payment_ref}:{second.external_ref.split(':')[1]}",
        invoice_ref=second.external_ref,
        invoice_erp_id=second_id,
        customer_erp_id=contact,
        currency="USD",
        amount_minor=3000,
        paid_on=DAY,
        payment_journal="091",
    )
    applied = connector.apply_credit(application)

    allocation = xero.writes("Overpayments")[-1]
    assert (allocation.method, allocation.path) == ("PUT", f"Overpayments/{received.erp_id}/Allocations")
    assert allocation.body == {
        "Allocations": [{"Invoice": {"InvoiceID": second_id}, "Amount": Decimal("30.00"), "Date": "2026-03-02"}]
    }
    assert invoice_in(xero, second_id)["Status"] == "PAID"
    assert xero.overpayments[received.erp_id]["RemainingCredit"] == Decimal("8.50")
    assert xero.receivable(contact) == Decimal("-8.50")  # no cash moved: still 8.50 of credit
    assert xero.account_balance("091") == Decimal("100.00")

    writes = len(xero.writes())
    assert connector.apply_credit(application).detail["action"] == "already applied"
    assert len(xero.writes()) == writes
    assert connector.find_document(OPERATION_APPLY_CREDIT, application.external_ref).erp_id == applied.erp_id


def test_credit_applied_before_the_cash_reached_xero_waits_for_it(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    contact = customer(connector)
    doc, invoice_id = post_invoice(connector, contact)
    application = PaymentDocument(
        external_ref=f"{SOURCE}:pi_early:{doc.external_ref.split(':')[1]}",
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        customer_erp_id=contact,
        currency="USD",
        amount_minor=1000,
        paid_on=DAY,
        payment_journal="091",
    )
    with pytest.raises(LookupError):
        connector.apply_credit(application)
    assert invoice_in(xero, invoice_id)["AmountDue"] == Decimal("61.50")


def dispute(movement: str, account: str, dispute_id: str = "dp_1", **kwargs: Any) -> DisputeMovementDocument:
    return DisputeMovementDocument(
        external_ref=f"{SOURCE}:{dispute_id}:{movement}",
        dispute_ref=f"{SOURCE}:{dispute_id}",
        payment_ref=f"{SOURCE}:pi_disputed",
        movement=movement,
        currency=kwargs.pop("currency", "USD"),
        amount_minor=6150,
        moved_on=DAY,
        payment_journal=account,
        dispute_account="1190",
        loss_account="6810" if movement == "lost" else "",
        **kwargs,
    )


def test_a_dispute_withdrawn_from_a_clearing_account_then_won_is_two_journals_that_cancel_out(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    withdrawn = connector.move_disputed_funds(dispute("withdrawn", "1150"))
    [journal] = xero.writes("ManualJournals")
    label = f"Dispute {SOURCE}:dp_1 on payment {SOURCE}:pi_disputed: funds withdrawn"
    assert journal.body == {
        "ManualJournals": [
            {
                "Narration": f"{SOURCE}:dp_1:withdrawn",
                "Date": "2026-03-02",
                "Status": "POSTED",
                "LineAmountTypes": "NoTax",
                "JournalLines": [
                    {"LineAmount": Decimal("61.50"), "AccountCode": "1190", "Description": label},
                    {"LineAmount": Decimal("-61.50"), "AccountCode": "1150", "Description": label},
                ],
            }
        ]
    }
    assert (xero.account_balance("1190"), xero.account_balance("1150")) == (Decimal("61.50"), Decimal("-61.50"))
    assert connector.move_disputed_funds(dispute("withdrawn", "1150")).erp_id == withdrawn.erp_id  # not twice
    assert len(xero.writes("ManualJournals")) == 1

    connector.move_disputed_funds(dispute("reinstated", "1150"))
    assert (xero.account_balance("1190"), xero.account_balance("1150")) == (Decimal("0"), Decimal("0"))


def test_a_dispute_withdrawn_from_a_bank_account_then_lost_ends_as_a_dispute_loss(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    withdrawn = connector.move_disputed_funds(dispute("withdrawn", "091", "dp_2"))
    [spend] = xero.writes("BankTransactions")
    transaction = spend.body["BankTransactions"][0]
    assert (transaction["Type"], transaction["BankAccount"], transaction["Reference"]) == (
        "SPEND",
        {"Code": "091"},
        f"{SOURCE}:dp_2:withdrawn",
    )
    assert transaction["LineItems"][0]["AccountCode"] == "1190"
    processor = xero.contacts[transaction["Contact"]["ContactID"]]
    assert processor["Name"] == "Card processor"
    assert (xero.account_balance("091"), xero.account_balance("1190")) == (Decimal("-61.50"), Decimal("61.50"))
    assert connector.find_document(OPERATION_WITHDRAW_DISPUTED_FUNDS, f"{SOURCE}:dp_2:withdrawn").erp_id == (
        withdrawn.erp_id
    )

    lost = connector.move_disputed_funds(dispute("lost", "091", "dp_2"))
    lines_sent = xero.writes("ManualJournals")[-1].body["ManualJournals"][0]["JournalLines"]
    assert [(line["AccountCode"], line["LineAmount"]) for line in lines_sent] == [
        ("6810", Decimal("61.50")),
        ("1190", Decimal("-61.50")),
    ]
    assert (xero.account_balance("1190"), xero.account_balance("6810")) == (Decimal("0"), Decimal("61.50"))
    assert connector.find_document(OPERATION_LOSE_DISPUTE, f"{SOURCE}:dp_2:lost").erp_id == lost.erp_id


def test_a_dispute_in_another_currency_than_the_organisations_is_for_finance(
    xero: XeroSimulator, connector: XeroConnector
) -> None:
    with pytest.raises(BusinessRuleError) as refused:
        connector.move_disputed_funds(dispute("withdrawn", "1150", "dp_3", currency="EUR"))
    assert refused.value.code == "dispute_in_foreign_currency"
    assert xero.writes() == []
