"""The Dynamics 365 Finance connector against the D365 contract simulator: the bodies D365 receives
have the data entities' documented shape, repeating a call never duplicates a document, every kind
of failure is classified, and after each step of the receivables lifecycle the customer's balance
in D365 is what billing says."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest

from apps.connectors.base import (
    OPERATION_APPLY_PAYMENT,
    OPERATION_ENSURE_CUSTOMER,
    OPERATION_LOSE_DISPUTE,
    OPERATION_POST_INVOICE,
    OPERATION_VOID_INVOICE,
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
from apps.connectors.dynamics365 import Dynamics365Connector, customer_account, natural_key
from apps.console.catalogue import catalogue_code
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from apps.posting.models import Posting
from tests.dynamics365_simulator import CLIENT_ID, Dynamics365Simulator, Recorded

TODAY = date.today()
DIMS = {"company": "usmf", "business_unit": "001", "department": "022"}  # no cost center: an empty segment


@pytest.fixture
def d365() -> Iterator[Dynamics365Simulator]:
    simulator = Dynamics365Simulator(hang_seconds=2.0)
    yield simulator
    simulator.stop()


@pytest.fixture
def connector(d365: Dynamics365Simulator) -> Iterator[Dynamics365Connector]:
    instance = Dynamics365Connector(d365.settings())
    yield instance
    instance.close()


def ref(prefix: str) -> str:
    return f"stripe-us:{prefix}_{uuid.uuid4().hex[:14]}"


def customer_doc(external_ref: str | None = None, name: str = "Globex Ltd", **dims: str) -> CustomerDocument:
    return CustomerDocument(
        external_ref=external_ref or ref("cus"),
        name=name,
        email="ap@globex.example",
        currency="USD",
        tax_id="US123456789",
        bill_to=Address(line1="1 Main St", city="Springfield", postal_code="12345", state="IL", country="US"),
        correlation_id="corr-customer-1",
        dimensions={**DIMS, **dims},
    )


def line(
    amount: int, *, tax: int = 0, tax_code: str = "", account: str = "401100", quantity: int = 1
) -> InvoiceLineDocument:
    return InvoiceLineDocument(
        description="Pro plan (monthly)",
        quantity=Decimal(quantity),
        unit_amount_minor=amount // quantity,
        amount_minor=amount,
        revenue_account=account,
        tax_code=tax_code,
        tax_minor=tax,
        period_start=TODAY,
        period_end=TODAY + timedelta(days=30),
    )


def invoice_doc(
    customer: str, *lines: InvoiceLineDocument, external_ref: str | None = None, on: date = TODAY
) -> InvoiceDocument:
    subtotal = sum(item.amount_minor for item in lines)
    tax = sum(item.tax_minor for item in lines)
    return InvoiceDocument(
        external_ref=external_ref or ref("in"),
        number=f"HUB-{uuid.uuid4().hex[:6].upper()}",
        customer_ref="stripe-us:cus",
        customer_erp_id=customer,
        currency="USD",
        invoice_date=on,
        due_date=on + timedelta(days=14),
        lines=lines,
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=subtotal + tax,
        correlation_id="corr-invoice-1",
        dimensions=dict(DIMS),
    )


def payment_doc(invoice_erp_id: str, customer: str, amount: int, external_ref: str | None = None) -> PaymentDocument:
    return PaymentDocument(
        external_ref=external_ref or f"{ref('pi')}:in_x",
        invoice_ref="stripe-us:in_x",
        invoice_erp_id=invoice_erp_id,
        customer_erp_id=customer,
        currency="USD",
        amount_minor=amount,
        paid_on=TODAY,
        payment_journal="USMF OPER",
        method="card",
        correlation_id="corr-payment-1",
        dimensions=dict(DIMS),
    )


def new_customer(connector: Dynamics365Connector) -> str:
    return connector.ensure_customer(customer_doc()).erp_id


def posted_invoice(connector: Dynamics365Connector, customer: str, *lines: InvoiceLineDocument) -> tuple[str, str]:
    result = connector.post_invoice(invoice_doc(customer, *(lines or (line(10000),))))
    return result.erp_id, result.erp_number


def bodies(d365: Dynamics365Simulator, entity_set: str) -> list[dict[str, Any]]:
    return [record.body for record in d365.writes(entity_set)]


def reads(d365: Dynamics365Simulator) -> list[Recorded]:
    return [r for r in d365.requests if r.method == "GET" and r.path.startswith("/data/")]


# -- the documented shapes ------------------------------------------------------------------


def test_a_customer_is_created_once_in_its_legal_entity_with_the_customers_v3_shape(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    doc = customer_doc()
    first = connector.ensure_customer(doc)
    again = connector.ensure_customer(doc)

    account = customer_account(doc.external_ref)
    assert len(account) <= 20 and account.startswith("HUB")
    assert first.erp_id == again.erp_id == account
    assert (first.detail["action"], again.detail["action"]) == ("created", "unchanged")
    [body] = bodies(d365, "CustomersV3")
    assert body == {
        "dataAreaId": "usmf",
        "CustomerAccount": account,
        "PartyType": "Organization",
        "OrganizationName": "Globex Ltd",
        "CustomerGroupId": "10",
        "SalesCurrencyCode": "USD",
        "PrimaryContactEmail": "ap@globex.example",
        "AddressStreet": "1 Main St",
        "AddressCity": "Springfield",
        "AddressZipCode": "12345",
        "AddressState": "IL",
        "AddressCountryRegionISOCode": "US",
        "TaxExemptNumber": "US123456789",
        "DefaultDimensionDisplayValue": "001--022",
    }
    [held] = d365.customers("usmf")
    assert held["OrganizationName"] == "Globex Ltd"
    # The lookup before the create asks across companies, by the natural key, in the legal entity.
    lookup = reads(d365)[0]
    assert lookup.query["cross-company"] == "true"
    assert lookup.query["$filter"] == f"dataAreaId eq 'usmf' and CustomerAccount eq '{account}'"
    write = d365.writes("CustomersV3")[0]
    assert write.headers["Authorization"].startswith("Bearer ")
    assert "IEEE754Compatible=true" in write.headers["Content-Type"]
    assert write.headers["X-Correlation-ID"] == "corr-customer-1"


def test_a_renamed_customer_is_updated_not_duplicated(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    doc = customer_doc()
    connector.ensure_customer(doc)
    renamed = connector.ensure_customer(customer_doc(doc.external_ref, name="Globex Holdings"))

    assert renamed.detail["action"] == "updated"
    [held] = d365.customers("usmf")
    assert held["OrganizationName"] == "Globex Holdings"
    [patch] = [r for r in d365.requests if r.method == "PATCH"]
    assert patch.path == f"/data/CustomersV3(dataAreaId='usmf',CustomerAccount='{held['CustomerAccount']}')"
    assert patch.body == {"OrganizationName": "Globex Holdings"} and patch.headers["If-Match"] == "*"


def test_an_invoice_goes_in_as_a_free_text_invoice_with_its_lines_and_is_posted(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    doc = invoice_doc(customer, line(4900, tax=980, tax_code="VAT/STD"), line(1250, quantity=5, account="401200"))

    result = connector.post_invoice(doc)

    [header] = d365.invoices(doc.external_ref)
    assert header["IsPosted"] == "Yes" and header["total"] == Decimal("71.30")
    assert (result.erp_id, result.erp_number) == (str(header["InvoiceIdentifier"]), header["InvoiceId"])
    assert result.detail == {"company": "usmf", "state": "posted", "total": "71.30"}
    [header_body] = bodies(d365, "FreeTextInvoiceHeaders")
    assert header_body == {
        "dataAreaId": "usmf",
        "CustomerAccount": customer,
        "InvoiceAccount": customer,
        "CurrencyCode": "USD",
        "InvoiceDate": f"{TODAY.isoformat()}T12:00:00Z",
        "DocumentDate": f"{TODAY.isoformat()}T12:00:00Z",
        "DueDate": f"{(TODAY + timedelta(days=14)).isoformat()}T12:00:00Z",
        "CustomerReference": doc.external_ref,
        "CustomerRequisition": doc.number,
        "DefaultDimensionDisplayValue": "001--022",
    }
    first, second = bodies(d365, "FreeTextInvoiceLines")
    # IEEE754Compatible: decimals and the Int64 parent id travel as strings, never as floats.
    assert first == {
        "dataAreaId": "usmf",
        "ParentRecId": header["InvoiceIdentifier"],
        "LineNumber": "1",
        "Description": "Pro plan (monthly)",
        "InvoiceText": f"Pro plan (monthly) ({TODAY.isoformat()} to {(TODAY + timedelta(days=30)).isoformat()})",
        "MainAccountDisplayValue": "401100",
        "Quantity": "1",
        "UnitPrice": "49.00",
        "DefaultDimensionDisplayValue": "001--022",
        "SalesTaxGroupId": "VAT",
        "SalesTaxItemGroupId": "STD",
    }
    assert (second["LineNumber"], second["Quantity"], second["UnitPrice"], second["MainAccountDisplayValue"]) == (
        "2",
        "5",
        "2.50",
        "401200",
    )
    assert "SalesTaxGroupId" not in second
    [action] = [r for r in d365.requests if "Microsoft.Dynamics.DataEntities" in r.path]
    assert action.method == "POST"
    assert action.path == (
        f"/data/FreeTextInvoiceHeaders(dataAreaId='usmf',InvoiceIdentifier={header['InvoiceIdentifier']})"
        "/Microsoft.Dynamics.DataEntities.PostInvoice"
    )
    assert d365.customer_balance("usmf", customer) == Decimal("71.30")


def test_every_read_asks_across_companies_and_a_second_legal_entity_keeps_its_own_documents(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    external_ref = ref("cus")
    us = connector.ensure_customer(customer_doc(external_ref))
    de = connector.ensure_customer(customer_doc(external_ref, company="demf"))
    doc = invoice_doc(de.erp_id, line(5000))
    german = InvoiceDocument(**{**doc.__dict__, "currency": "EUR", "dimensions": {**DIMS, "company": "demf"}})
    result = connector.post_invoice(german)
    connector.post_invoice(german)

    assert us.erp_id == de.erp_id  # one account number, one customer record per legal entity
    assert [c["dataAreaId"] for c in d365.customers()] == ["usmf", "demf"]
    [header] = d365.invoices(german.external_ref)
    assert header["dataAreaId"] == "demf" and header["CurrencyCode"] == "EUR"
    assert connector.find_document(OPERATION_POST_INVOICE, german.external_ref) == result
    assert all(r.query.get("cross-company") == "true" for r in reads(d365))


def test_dimension_formats_can_differ_per_legal_entity(d365: Dynamics365Simulator) -> None:
    formats = {"usmf": ["department", "cost_center", "business_unit"], "default": ["business_unit"]}
    connector = Dynamics365Connector(d365.settings(dimension_format=formats))
    d365.dimension_format = ("Department", "CostCenter", "BusinessUnit")
    connector.ensure_customer(customer_doc(cost_center="011"))
    [body] = bodies(d365, "CustomersV3")
    assert body["DefaultDimensionDisplayValue"] == "022-011-001"


def test_a_credit_note_is_a_free_text_invoice_with_negative_quantities(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, _ = posted_invoice(connector, customer)
    memo = credit_memo_doc(customer, invoice_id, 2000)

    result = connector.post_credit_memo(memo)

    [header] = d365.invoices(memo.external_ref)
    assert header["total"] == Decimal("-20.00") and result.erp_number.startswith("FTC-")
    [memo_line] = [
        body for body in bodies(d365, "FreeTextInvoiceLines") if body["ParentRecId"] == header["InvoiceIdentifier"]
    ]
    assert (memo_line["Quantity"], memo_line["UnitPrice"]) == ("-1", "20.00")
    assert d365.customer_balance("usmf", customer) == Decimal("80.00")


def credit_memo_doc(customer: str, invoice_id: str, amount: int) -> CreditMemoDocument:
    return CreditMemoDocument(
        external_ref=ref("cn"),
        number=f"CN-{uuid.uuid4().hex[:6]}",
        invoice_ref="stripe-us:in_x",
        invoice_erp_id=invoice_id,
        customer_ref="stripe-us:cus",
        customer_erp_id=customer,
        currency="USD",
        invoice_date=TODAY,
        lines=(line(amount),),
        subtotal_minor=amount,
        tax_minor=0,
        total_minor=amount,
        dimensions=dict(DIMS),
    )


def test_a_payment_is_a_posted_customer_payment_journal_marked_to_the_invoice(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, number = posted_invoice(connector, customer)
    doc = payment_doc(invoice_id, customer, 4000)

    result = connector.apply_payment(doc)
    again = connector.apply_payment(doc)

    [journal] = d365.journals(description=natural_key(doc.external_ref))
    assert journal["IsPosted"] == "Yes" and result.erp_id == again.erp_id == journal["JournalBatchNumber"]
    assert again.detail["action"] == "already posted"
    [header_body] = bodies(d365, "CustomerPaymentJournalHeaders")
    assert header_body == {"dataAreaId": "usmf", "JournalName": "CustPay", "Description": natural_key(doc.external_ref)}
    [line_body] = bodies(d365, "CustomerPaymentJournalLines")
    assert line_body == {
        "dataAreaId": "usmf",
        "JournalBatchNumber": journal["JournalBatchNumber"],
        "LineNumber": "1",
        "AccountType": "Cust",
        "AccountDisplayValue": customer,
        "TransactionDate": f"{TODAY.isoformat()}T12:00:00Z",
        "CurrencyCode": "USD",
        "DebitAmount": "0",
        "CreditAmount": "40.00",
        "TransactionText": "Payment card for stripe-us:in_x",
        "DefaultDimensionsForAccountDisplayValue": "001--022",
        "MarkedInvoice": number,
        "MarkedInvoiceCompany": "usmf",
        "OffsetAccountType": "Bank",
        "OffsetAccountDisplayValue": "USMF OPER",
        "DefaultDimensionsForOffsetAccountDisplayValue": "001--022",
    }
    assert d365.invoice_open("usmf", number) == Decimal("60.00")
    assert d365.bank_balance("usmf", "USMF OPER") == Decimal("40.00")


def test_a_reference_longer_than_the_description_field_is_kept_as_a_stable_digest(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, _ = posted_invoice(connector, customer)
    long_ref = f"stripe-us:pi_{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}:in_{uuid.uuid4().hex}"
    assert len(long_ref) > 60

    first = connector.apply_payment(payment_doc(invoice_id, customer, 1000, external_ref=long_ref))
    second = connector.apply_payment(payment_doc(invoice_id, customer, 1000, external_ref=long_ref))

    [journal] = d365.journals()
    assert len(journal["Description"]) == 60 and journal["Description"] == natural_key(long_ref)
    assert journal["Description"].startswith(long_ref[:27])
    assert first.erp_id == second.erp_id
    assert connector.find_document(OPERATION_APPLY_PAYMENT, long_ref) is not None


# -- authentication -------------------------------------------------------------------------


def test_the_token_is_fetched_with_client_credentials_and_kept_until_it_expires(d365: Dynamics365Simulator) -> None:
    d365.token_lifetime = 3
    connector = Dynamics365Connector(d365.settings())
    connector.ensure_customer(customer_doc())
    connector.ensure_customer(customer_doc())
    assert len(d365.token_requests) == 1
    assert d365.token_requests[0] == {
        "grant_type": "client_credentials",
        "client_id": CLIENT_ID,
        "client_secret": "***",
        "scope": f"{d365.url}/.default",
    }

    time.sleep(3.1)
    connector.ensure_customer(customer_doc())
    assert len(d365.token_requests) == 2
    assert [r.status for r in d365.requests if r.path.startswith("/data/")].count(401) == 0  # renewed before use


def test_a_token_d365_no_longer_accepts_is_replaced_and_the_request_sent_once_more(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    connector.ensure_customer(customer_doc())
    d365.expire_tokens()
    result = connector.ensure_customer(customer_doc())

    assert result.detail["action"] == "created"
    assert len(d365.token_requests) == 2
    assert [r.status for r in d365.requests if r.path.startswith("/data/")].count(401) == 1


def test_refused_client_credentials_raise_an_authentication_error(d365: Dynamics365Simulator) -> None:
    d365.refuse_credentials()
    connector = Dynamics365Connector(d365.settings())
    with pytest.raises(AuthenticationError) as raised:
        connector.ensure_customer(customer_doc())
    assert raised.value.status == 401
    assert "AADSTS7000215" in raised.value.detail
    assert not [r for r in d365.requests if r.path.startswith("/data/")]  # nothing reached D365


# -- throttling, outages, lost answers -------------------------------------------------------


def test_throttling_is_transient_with_the_retry_after_d365_asked_for(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    d365.fail_next("429")
    with pytest.raises(TransientError) as raised:
        connector.ensure_customer(customer_doc())
    assert raised.value.status == 429 and raised.value.retry_after == 7.0
    assert d365.customers() == []


def test_a_503_before_anything_ran_is_transient_and_the_retry_creates_the_document_once(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    doc = invoice_doc(customer, line(10000))
    d365.fail_next("503", on="POST /data/FreeTextInvoiceHeaders")
    with pytest.raises(TransientError) as raised:
        connector.post_invoice(doc)
    assert raised.value.status == 503
    connector.post_invoice(doc)
    assert len(d365.invoices(doc.external_ref)) == 1


def test_a_timeout_after_d365_posted_the_invoice_is_uncertain_and_never_posts_it_twice(
    d365: Dynamics365Simulator,
) -> None:
    connector = Dynamics365Connector(d365.settings(timeout=1))
    customer = new_customer(connector)
    doc = invoice_doc(customer, line(10000))
    d365.fail_next("timeout_after_commit", on="PostInvoice")

    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    found = connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)
    again = connector.post_invoice(doc)

    [header] = d365.invoices(doc.external_ref)
    assert found is not None and found.erp_number == header["InvoiceId"] == again.erp_number
    assert len(d365.writes("FreeTextInvoiceHeaders")) == 1
    assert len([r for r in d365.requests if r.path.endswith("PostInvoice")]) == 1
    assert d365.customer_balance("usmf", customer) == Decimal("100.00")


def test_a_timeout_after_the_header_was_created_leaves_a_draft_that_is_not_reported_and_is_replaced(
    d365: Dynamics365Simulator,
) -> None:
    connector = Dynamics365Connector(d365.settings(timeout=1))
    customer = new_customer(connector)
    doc = invoice_doc(customer, line(10000), line(2500))
    d365.fail_next("timeout_after_commit", on="POST /data/FreeTextInvoiceHeaders")

    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None  # a draft is not done
    result = connector.post_invoice(doc)

    [header] = d365.invoices(doc.external_ref)  # the empty draft was deleted, one invoice remains
    assert header["IsPosted"] == "Yes" and header["total"] == Decimal("125.00")
    assert result.erp_id == str(header["InvoiceIdentifier"])


def test_a_timeout_after_a_payment_journal_was_posted_does_not_pay_twice(d365: Dynamics365Simulator) -> None:
    connector = Dynamics365Connector(d365.settings(timeout=1))
    customer = new_customer(connector)
    invoice_id, _ = posted_invoice(connector, customer)
    doc = payment_doc(invoice_id, customer, 10000)
    d365.fail_next("timeout_after_commit", on="PostJournal")

    with pytest.raises(UncertainOutcome):
        connector.apply_payment(doc)
    assert connector.find_document(OPERATION_APPLY_PAYMENT, doc.external_ref) is not None
    connector.apply_payment(doc)

    assert len(d365.journals()) == 1 and len(d365.writes("CustomerPaymentJournalLines")) == 1
    assert d365.customer_balance("usmf", customer) == Decimal("0.00")


# -- refusals finance acts on, and shapes D365 does not accept -----------------------------------


def test_a_closed_period_is_a_refusal_in_d365s_words_that_finance_sees_as_a_closed_period(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    last_month = TODAY.replace(day=1) - timedelta(days=1)
    d365.close_period("usmf", last_month.replace(day=1), last_month)
    doc = invoice_doc(customer, line(10000), on=last_month)

    with pytest.raises(BusinessRuleError) as raised:
        connector.post_invoice(doc)

    error = raised.value
    assert error.code == "erp_rejected"
    assert f"The accounting date {last_month.isoformat()} is not in an open period" in error.finance_message
    assert error.finance_message.startswith("Dynamics 365 refused it:")
    assert catalogue_code(Posting(error_code=error.code, error_params=error.params)) == "closed_period"
    [header] = d365.invoices(doc.external_ref)
    assert header["IsPosted"] == "No"  # D365 rolled the posting back; the draft waits for the period
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None


def test_an_unknown_main_account_is_refused_with_the_account_named(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    with pytest.raises(BusinessRuleError) as raised:
        connector.post_invoice(invoice_doc(customer, line(10000, account="499999")))
    assert raised.value.code == "erp_rejected"
    assert "'499999' in field 'Main account' is not found" in raised.value.finance_message


def test_a_total_d365_computes_differently_parks_the_draft_and_a_fixed_mapping_replaces_it(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    external_ref = ref("in")
    wrong = invoice_doc(customer, line(10000, tax=2000, tax_code="VAT/ZERO"), external_ref=external_ref)
    with pytest.raises(BusinessRuleError) as raised:
        connector.post_invoice(wrong)
    assert raised.value.code == "amount_mismatch"
    assert raised.value.params == {"erp_total": "100.00", "billing_total": "120.00"}
    assert [h["IsPosted"] for h in d365.invoices(external_ref)] == ["No"]

    fixed = invoice_doc(customer, line(10000, tax=2000, tax_code="VAT/STD"), external_ref=external_ref)
    connector.post_invoice(fixed)
    [header] = d365.invoices(external_ref)
    assert header["IsPosted"] == "Yes" and header["total"] == Decimal("120.00")


def test_a_tax_code_that_is_not_a_d365_tax_pair_is_refused_before_anything_is_posted(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    with pytest.raises(BusinessRuleError) as raised:
        connector.post_invoice(invoice_doc(customer, line(10000, tax=2000, tax_code="VAT20")))
    assert (
        raised.value.code == "unknown_tax_code"
        and "<sales tax group>/<item sales tax group>" in raised.value.finance_message
    )


def test_a_shape_d365s_odata_layer_refuses_is_a_configuration_error_not_a_finance_case(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        connector.odata.create("CustomersV3", {"dataAreaId": "usmf", "CustomerName": "Globex"})
    assert raised.value.code == "schema_mismatch" and raised.value.status == 400
    assert "The property 'CustomerName' does not exist" in raised.value.detail


def test_a_posted_invoice_billing_now_totals_differently_is_never_changed(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    doc = invoice_doc(customer, line(10000))
    connector.post_invoice(doc)
    changed = InvoiceDocument(
        **{**doc.__dict__, "lines": (line(12000),), "subtotal_minor": 12000, "total_minor": 12000}
    )
    with pytest.raises(BusinessRuleError) as raised:
        connector.post_invoice(changed)
    assert raised.value.code == "amount_mismatch"
    assert [h["total"] for h in d365.invoices(doc.external_ref)] == [Decimal("100.00")]


# -- posting left to D365's batch -----------------------------------------------------------


def test_in_batch_mode_the_draft_waits_for_d365s_posting_batch_and_is_reported_once_posted(
    d365: Dynamics365Simulator,
) -> None:
    connector = Dynamics365Connector(d365.settings(posting="batch"))
    customer = new_customer(connector)
    doc = invoice_doc(customer, line(10000))

    with pytest.raises(LookupError):
        connector.post_invoice(doc)
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None
    with pytest.raises(LookupError):
        connector.post_invoice(doc)  # still waiting: the draft is reused, not created again
    assert d365.run_posting_batch() == 1
    result = connector.post_invoice(doc)

    [header] = d365.invoices(doc.external_ref)
    assert result.erp_number == header["InvoiceId"] and header["IsPosted"] == "Yes"
    assert len(d365.writes("FreeTextInvoiceHeaders")) == 1
    assert not [r for r in d365.requests if "Microsoft.Dynamics.DataEntities" in r.path]


# -- the lifecycle on D365's books ---------------------------------------------------------


def test_invoice_then_a_partial_and_a_second_payment_leave_nothing_owed(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, number = posted_invoice(connector, customer, line(10000, tax=2000, tax_code="VAT/STD"))
    assert d365.customer_balance("usmf", customer) == Decimal("120.00")

    connector.apply_payment(payment_doc(invoice_id, customer, 5000))
    assert d365.customer_balance("usmf", customer) == Decimal("70.00") == d365.invoice_open("usmf", number)

    connector.apply_payment(payment_doc(invoice_id, customer, 7000))
    assert d365.customer_balance("usmf", customer) == Decimal("0.00") == d365.invoice_open("usmf", number)

    with pytest.raises(BusinessRuleError) as raised:
        connector.apply_payment(payment_doc(invoice_id, customer, 100))
    assert raised.value.code == "overpayment"
    assert d365.customer_balance("usmf", customer) == Decimal("0.00")


def test_credit_note_then_refund_pays_the_customer_back_once(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, _ = posted_invoice(connector, customer, line(5000))
    connector.apply_payment(payment_doc(invoice_id, customer, 5000))
    memo = credit_memo_doc(customer, invoice_id, 2000)
    credit = connector.post_credit_memo(memo)
    assert d365.customer_balance("usmf", customer) == Decimal("-20.00")  # D365 owes the customer 20

    refund = RefundDocument(
        external_ref=f"{memo.external_ref}:refund",
        credit_memo_ref=memo.external_ref,
        credit_memo_erp_id=credit.erp_id,
        customer_erp_id=customer,
        currency="USD",
        amount_minor=2000,
        refunded_on=TODAY,
        payment_journal="USMF OPER",
        number=memo.number,
        dimensions=dict(DIMS),
    )
    connector.refund_credit_memo(refund)
    connector.refund_credit_memo(refund)

    assert d365.customer_balance("usmf", customer) == Decimal("0.00")
    assert d365.invoice_open("usmf", credit.erp_number) == Decimal("0.00")
    [journal] = d365.journals(description=natural_key(refund.external_ref))
    assert [(ln["DebitAmount"], ln["MarkedInvoice"]) for ln in journal["lines"]] == [
        (Decimal("20.00"), credit.erp_number)
    ]
    with pytest.raises(BusinessRuleError) as raised:
        connector.refund_credit_memo(RefundDocument(**{**refund.__dict__, "external_ref": f"{ref('cn')}:refund"}))
    assert raised.value.code == "overrefund"


def test_void_reverses_the_invoice_once_and_refuses_an_invoice_with_payments(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, number = posted_invoice(connector, customer, line(3000, tax=600, tax_code="VAT/STD"))
    void = VoidDocument(
        external_ref=f"stripe-us:in_void_{uuid.uuid4().hex[:6]}:void",
        invoice_ref="stripe-us:in_void",
        invoice_erp_id=invoice_id,
        customer_erp_id=customer,
        voided_on=TODAY,
        number="HUB-VOID",
        dimensions=dict(DIMS),
    )
    first = connector.void_invoice(void)
    again = connector.void_invoice(void)

    [reversal] = d365.invoices(natural_key(void.external_ref))
    assert reversal["total"] == Decimal("-36.00") and reversal["IsPosted"] == "Yes"
    assert first.erp_id == again.erp_id == str(reversal["InvoiceIdentifier"])
    assert first.detail["reverses"] == number
    assert [(ln["Quantity"], ln["SalesTaxItemGroupId"]) for ln in reversal["lines"]] == [(Decimal("-1"), "STD")]
    assert d365.customer_balance("usmf", customer) == Decimal("0.00")
    found = connector.find_document(OPERATION_VOID_INVOICE, void.external_ref)
    assert found is not None and (found.erp_id, found.detail["action"]) == (again.erp_id, "reversed")

    paid_id, _ = posted_invoice(connector, customer, line(1000))
    connector.apply_payment(payment_doc(paid_id, customer, 500))
    with pytest.raises(BusinessRuleError) as raised:
        connector.void_invoice(VoidDocument(**{**void.__dict__, "external_ref": "x:void", "invoice_erp_id": paid_id}))
    assert raised.value.code == "void_after_payment"
    assert d365.customer_balance("usmf", customer) == Decimal("5.00")


def test_a_void_interrupted_after_its_reversal_was_started_ends_with_one_reversal(d365: Dynamics365Simulator) -> None:
    connector = Dynamics365Connector(d365.settings(timeout=1))
    customer = new_customer(connector)
    invoice_id, _ = posted_invoice(connector, customer, line(3000))
    void = VoidDocument(
        external_ref=f"stripe-us:in_{uuid.uuid4().hex[:6]}:void",
        invoice_ref="stripe-us:in_x",
        invoice_erp_id=invoice_id,
        customer_erp_id=customer,
        voided_on=TODAY,
        dimensions=dict(DIMS),
    )
    d365.fail_next("timeout_after_commit", on="POST /data/FreeTextInvoiceHeaders")
    with pytest.raises(UncertainOutcome):
        connector.void_invoice(void)
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref) is None

    connector.void_invoice(void)

    [reversal] = d365.invoices(void.external_ref)  # the empty draft was replaced
    assert reversal["IsPosted"] == "Yes" and reversal["total"] == Decimal("-30.00")
    assert d365.customer_balance("usmf", customer) == Decimal("0.00")


def test_write_off_moves_what_billing_gave_up_on_to_bad_debts(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, number = posted_invoice(connector, customer, line(10000))
    connector.apply_payment(payment_doc(invoice_id, customer, 3000))

    def write_off(amount: int) -> WriteOffDocument:
        return WriteOffDocument(
            external_ref=f"stripe-us:in_{uuid.uuid4().hex[:6]}:write-off",
            invoice_ref="stripe-us:in_x",
            invoice_erp_id=invoice_id,
            customer_erp_id=customer,
            currency="USD",
            amount_minor=amount,
            written_off_on=TODAY,
            write_off_method="618100",
            number="HUB-WO",
            dimensions=dict(DIMS),
        )

    with pytest.raises(LookupError):
        connector.write_off(write_off(5000))  # D365 has 70 open: a payment posting is on its way
    with pytest.raises(BusinessRuleError) as raised:
        connector.write_off(write_off(9000))
    assert raised.value.code == "write_off_amount_mismatch"
    doc = write_off(7000)
    connector.write_off(doc)
    connector.write_off(doc)

    assert d365.customer_balance("usmf", customer) == Decimal("0.00") == d365.invoice_open("usmf", number)
    assert d365.gl_balance("usmf", "618100") == Decimal("70.00")
    [journal] = d365.journals(description=natural_key(doc.external_ref))
    [written] = journal["lines"]
    assert (written["OffsetAccountType"], written["OffsetAccountDisplayValue"], written["MarkedInvoice"]) == (
        "Ledger",
        "618100",
        number,
    )


def test_an_over_payment_stays_on_account_and_is_later_applied_as_credit(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    first_id, _ = posted_invoice(connector, customer, line(10000))
    payment = ref("pi")
    connector.apply_payment(payment_doc(first_id, customer, 10000, external_ref=f"{payment}:in_1"))
    on_account = OnAccountDocument(
        external_ref=f"{payment}:on-account",
        payment_ref=payment,
        customer_ref="stripe-us:cus",
        customer_erp_id=customer,
        currency="USD",
        amount_minor=5000,
        received_on=TODAY,
        payment_journal="USMF OPER",
        dimensions=dict(DIMS),
    )
    connector.receive_on_account(on_account)
    connector.receive_on_account(on_account)
    assert d365.customer_balance("usmf", customer) == Decimal("-50.00")  # billing: 50 of credit

    second_id, second_number = posted_invoice(connector, customer, line(3000))
    assert d365.customer_balance("usmf", customer) == Decimal("-20.00")
    credit = payment_doc(second_id, customer, 3000, external_ref=f"{payment}:in_2")
    connector.apply_credit(credit)
    connector.apply_credit(credit)

    assert d365.customer_balance("usmf", customer) == Decimal("-20.00")  # billing: 20 of credit left
    assert d365.invoice_open("usmf", second_number) == Decimal("0.00")
    assert d365.bank_balance("usmf", "USMF OPER") == Decimal("150.00")  # no cash moved for the credit
    [journal] = d365.journals(description=natural_key(credit.external_ref))
    assert [(ln["DebitAmount"], ln["CreditAmount"], ln["MarkedInvoice"]) for ln in journal["lines"]] == [
        (Decimal("30.00"), Decimal("0"), None),
        (Decimal("0"), Decimal("30.00"), second_number),
    ]


def test_dispute_withdrawn_then_lost_or_reinstated_moves_cash_never_the_receivable(
    d365: Dynamics365Simulator, connector: Dynamics365Connector
) -> None:
    customer = new_customer(connector)
    invoice_id, _ = posted_invoice(connector, customer, line(10000))
    connector.apply_payment(payment_doc(invoice_id, customer, 10000))

    def movement(dispute: str, kind: str) -> DisputeMovementDocument:
        return DisputeMovementDocument(
            external_ref=f"{dispute}:{kind}",
            dispute_ref=dispute,
            payment_ref="stripe-us:pi_x",
            movement=kind,
            currency="USD",
            amount_minor=10000,
            moved_on=TODAY,
            payment_journal="USMF OPER",
            dispute_account="110190",
            loss_account="618200" if kind == "lost" else "",
            dimensions=dict(DIMS),
        )

    lost = ref("dp")
    connector.move_disputed_funds(movement(lost, "withdrawn"))
    assert d365.bank_balance("usmf", "USMF OPER") == Decimal("0.00")
    assert d365.gl_balance("usmf", "110190") == Decimal("100.00")
    connector.move_disputed_funds(movement(lost, "lost"))
    connector.move_disputed_funds(movement(lost, "lost"))
    assert d365.gl_balance("usmf", "110190") == Decimal("0.00")
    assert d365.gl_balance("usmf", "618200") == Decimal("100.00")
    assert connector.find_document(OPERATION_LOSE_DISPUTE, f"{lost}:lost") is not None

    won = ref("dp")
    connector.move_disputed_funds(movement(won, "withdrawn"))
    connector.move_disputed_funds(movement(won, "reinstated"))
    assert d365.bank_balance("usmf", "USMF OPER") == Decimal("0.00")  # 100 in, 100 lost, back again
    assert d365.gl_balance("usmf", "110190") == Decimal("0.00")
    assert d365.customer_balance("usmf", customer) == Decimal("0.00")  # billing keeps the invoice paid
    withdrawn = next(j for j in d365.journals("LedgerJournalHeaders") if j["Description"] == f"{won}:withdrawn")
    [moved] = withdrawn["lines"]
    assert (moved["AccountType"], moved["AccountDisplayValue"], moved["OffsetAccountType"], moved["DebitAmount"]) == (
        "Ledger",
        "110190",
        "Bank",
        Decimal("100.00"),
    )
    assert moved["DefaultDimensionDisplayValue"] == "001--022"


def test_a_document_without_a_company_is_a_configuration_problem(connector: Dynamics365Connector) -> None:
    doc = customer_doc()
    with pytest.raises(ConfigurationError) as raised:
        connector.ensure_customer(CustomerDocument(**{**doc.__dict__, "dimensions": {}}))
    assert raised.value.code == "missing_company_mapping"
    assert Dynamics365Connector.required_mappings == frozenset({"company"})


def test_find_document_knows_the_customer_by_its_reference(connector: Dynamics365Connector) -> None:
    doc = customer_doc()
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, doc.external_ref) is None
    created = connector.ensure_customer(doc)
    found = connector.find_document(OPERATION_ENSURE_CUSTOMER, doc.external_ref)
    assert found is not None and found.erp_id == created.erp_id
