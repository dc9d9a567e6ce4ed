"""The SAP S/4HANA Cloud connector against the contract simulator (tests/sap_simulator.py): the
requests SAP receives have the documented shape and values, every hub document lands in SAP's
books as the right journal entry, repeating a call never duplicates anything, and each kind of
failure is classified the way the posting executor needs."""

from __future__ import annotations

import datetime
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

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
from apps.connectors.sap_s4hana import (
    JournalEntry,
    JournalLine,
    S4HanaConnector,
    build_journal_entry_request,
    message_uuid,
    reference_key,
)
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from tests.sap_simulator import (
    JOURNAL_ENTRY_POST_PATH,
    PASSWORD,
    SESSION_COOKIE,
    SFIN,
    SOAP_ACTION,
    SOAP_ENV,
    USERNAME,
    SapSimulator,
)

TODAY = datetime.date.today()
COMPANY = {"company": "1710"}
BANK, DISPUTED, BAD_DEBT, LOSSES = "11001000", "11009000", "65000000", "65100000"
SUBSCRIPTIONS, USAGE, OUTPUT_TAX = "41000000", "41000100", "22000000"


@pytest.fixture
def sap() -> Iterator[SapSimulator]:
    simulator = SapSimulator(hang_seconds=2.5)
    yield simulator
    simulator.stop()


@pytest.fixture
def connector(sap: SapSimulator) -> Iterator[S4HanaConnector]:
    connector = S4HanaConnector(sap.settings())
    yield connector
    connector.close()


def ref(prefix: str) -> str:
    return f"test:{prefix}_{uuid.uuid4().hex[:12]}"


def customer_doc(external_ref: str, name: str = "Globex Ltd", **overrides: Any) -> CustomerDocument:
    values: dict[str, Any] = {
        "external_ref": external_ref,
        "name": name,
        "email": "ap@globex.example",
        "bill_to": Address(line1="1 Main St", city="Springfield", postal_code="12345", state="IL", country="US"),
        "dimensions": COMPANY,
        "correlation_id": "corr-customer",
    }
    return CustomerDocument(**{**values, **overrides})


def customer(connector: S4HanaConnector) -> tuple[str, str]:
    external_ref = ref("cus")
    return external_ref, connector.ensure_customer(customer_doc(external_ref)).erp_id


def invoice_doc(customer_ref: str, customer_erp_id: str, **overrides: Any) -> InvoiceDocument:
    lines = overrides.pop(
        "lines",
        (
            InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, SUBSCRIPTIONS),
            InvoiceLineDocument("API calls", Decimal(5), 250, 1250, USAGE, tax_code="O1", tax_minor=250),
        ),
    )
    values: dict[str, Any] = {
        "external_ref": ref("in"),
        "number": "INV-0042",
        "customer_ref": customer_ref,
        "customer_erp_id": customer_erp_id,
        "currency": "USD",
        "invoice_date": TODAY,
        "due_date": TODAY + datetime.timedelta(days=30),
        "lines": lines,
        "subtotal_minor": 6150,
        "tax_minor": 250,
        "total_minor": 6400,
        "dimensions": COMPANY,
        "correlation_id": "corr-invoice",
    }
    return InvoiceDocument(**{**values, **overrides})


def payment_doc(invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int, **overrides: Any) -> PaymentDocument:
    values: dict[str, Any] = {
        "external_ref": f"test:{uuid.uuid4().hex[:10]}:{invoice.external_ref.split(':')[1]}",
        "invoice_ref": invoice.external_ref,
        "invoice_erp_id": invoice_erp_id,
        "customer_erp_id": invoice.customer_erp_id,
        "currency": "USD",
        "amount_minor": amount_minor,
        "paid_on": TODAY,
        "payment_journal": BANK,
        "method": "card",
        "dimensions": COMPANY,
    }
    return PaymentDocument(**{**values, **overrides})


def posted_invoice(connector: S4HanaConnector, **overrides: Any) -> tuple[InvoiceDocument, str]:
    customer_ref, customer_erp_id = customer(connector)
    doc = invoice_doc(customer_ref, customer_erp_id, **overrides)
    return doc, connector.post_invoice(doc).erp_id


def journal(record: Any) -> ET.Element:
    """The JournalEntry element of a SOAP request the simulator received."""
    element = record.xml().find(f"{{{SOAP_ENV}}}Body/{{{SFIN}}}JournalEntryBulkCreateRequest")
    assert element is not None
    found = element.find("JournalEntryCreateRequest/JournalEntry")
    assert found is not None
    return found


def amounts(element: ET.Element, tag: str) -> list[tuple[str, ...]]:
    return [
        tuple(
            item.findtext(name) or ""
            for name in ("GLAccount", "Debtor", "AmountInTransactionCurrency", "DebitCreditCode", "AssignmentReference")
            if item.find(name) is not None
        )
        for item in element.findall(tag)
    ]


# -- customers ------------------------------------------------------------------------------------


def test_a_customer_becomes_a_business_partner_with_the_customer_role_in_its_company_code(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    external_ref = ref("cus")
    result = connector.ensure_customer(customer_doc(external_ref))

    [create] = sap.odata_writes("A_BusinessPartner")
    body = create.json()
    assert body["BusinessPartnerCategory"] == "2"
    assert body["OrganizationBPName1"] == "Globex Ltd"
    assert body["BusinessPartnerIDByExtSystem"] == reference_key(external_ref, 20)
    assert {role["BusinessPartnerRole"] for role in body["to_BusinessPartnerRole"]["results"]} == {"FLCU00", "FLCU01"}
    assert body["to_Customer"]["to_CustomerCompany"]["results"] == [{"CompanyCode": "1710"}]
    [address] = body["to_BusinessPartnerAddress"]["results"]
    assert (address["Country"], address["Region"], address["CityName"], address["PostalCode"]) == (
        "US",
        "IL",
        "Springfield",
        "12345",
    )
    assert address["StreetName"] == "1 Main St"
    assert address["to_EmailAddress"]["results"] == [{"EmailAddress": "ap@globex.example"}]
    # SAP's CSRF handshake: a GET asking for a token, then the write with that token and the session cookie.
    fetches = [r for r in sap.requests if r.headers.get("x-csrf-token") == "Fetch"]
    assert len(fetches) == 1 and fetches[0].method == "GET"
    assert create.status == 201 and create.headers["x-csrf-token"] not in ("", "Fetch")
    assert f"{SESSION_COOKIE}=" in create.headers["cookie"]
    assert create.headers["x-correlation-id"] == "corr-customer"

    [partner] = sap.partners_with_reference(reference_key(external_ref, 20))
    assert result.erp_id == partner["Customer"] and result.erp_number == partner["BusinessPartner"]
    assert set(partner["companies"]) == {"1710"}
    assert result.detail["action"] == "created"


def test_ensuring_a_customer_again_finds_it_renames_it_and_extends_it_to_another_company_code(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    external_ref = ref("cus")
    first = connector.ensure_customer(customer_doc(external_ref))
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, external_ref) is not None

    again = connector.ensure_customer(customer_doc(external_ref))
    assert (again.erp_id, again.detail["action"]) == (first.erp_id, "unchanged")
    assert len(sap.odata_writes()) == 1

    renamed = connector.ensure_customer(customer_doc(external_ref, name="Globex Holdings Ltd"))
    [patch] = [r for r in sap.odata_writes() if r.method == "PATCH"]
    assert patch.path.endswith(f"A_BusinessPartner('{first.erp_number}')")
    assert patch.headers["if-match"].startswith('W/"datetimeoffset')
    assert patch.json() == {"OrganizationBPName1": "Globex Holdings Ltd", "OrganizationBPName2": ""}
    assert renamed.detail["action"] == "updated"
    assert sap.partners[first.erp_number]["OrganizationBPName1"] == "Globex Holdings Ltd"

    # The same customer billed by a second legal entity: extended to that entity's company code.
    connector.ensure_customer(customer_doc(external_ref, name="Globex Holdings Ltd", dimensions={"company": "1010"}))
    [extend] = sap.odata_writes("A_CustomerCompany")
    assert extend.json() == {"Customer": first.erp_id, "CompanyCode": "1010"}
    assert set(sap.partners[first.erp_number]["companies"]) == {"1710", "1010"}
    assert len(sap.partners_with_reference(reference_key(external_ref, 20))) == 1


def test_a_refused_csrf_token_is_fetched_once_more_and_the_write_goes_through(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    external_ref = ref("cus")
    connector.ensure_customer(customer_doc(external_ref))
    sap.expire_sessions()  # SAP dropped the session the token belonged to

    connector.ensure_customer(customer_doc(external_ref, name="Globex Renamed"))

    patches = [r for r in sap.requests if r.method == "PATCH"]
    assert [r.status for r in patches] == [403, 204]
    assert len([r for r in sap.requests if r.headers.get("x-csrf-token") == "Fetch"]) == 2
    assert patches[0].headers["x-csrf-token"] != patches[1].headers["x-csrf-token"]


def test_a_customer_timed_out_after_commit_is_found_and_never_created_twice(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    external_ref = ref("cus")
    sap.fail_next("timeout_after_commit", on="odata_write")
    with pytest.raises(UncertainOutcome):
        connector.ensure_customer(customer_doc(external_ref))

    found = connector.find_document(OPERATION_ENSURE_CUSTOMER, external_ref)
    assert found is not None
    assert connector.ensure_customer(customer_doc(external_ref)).erp_id == found.erp_id
    assert len(sap.partners_with_reference(reference_key(external_ref, 20))) == 1


def test_a_company_code_sap_does_not_have_is_refused_in_sap_words(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    with pytest.raises(BusinessRuleError) as refused:
        connector.ensure_customer(customer_doc(ref("cus"), dimensions={"company": "9999"}))
    assert refused.value.code == "erp_rejected"
    assert "Company code 9999 does not exist" in refused.value.finance_message
    assert refused.value.status == 400
    assert not sap.partners


# -- invoices -------------------------------------------------------------------------------------


def test_an_invoice_is_a_customer_journal_entry_with_revenue_and_tax_items(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    customer_ref, customer_erp_id = customer(connector)
    doc = invoice_doc(customer_ref, customer_erp_id)
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None

    result = connector.post_invoice(doc)

    [post] = sap.soap_posts()
    assert post.headers["soapaction"].strip('"') == SOAP_ACTION
    assert post.headers["content-type"].startswith("text/xml")
    assert post.headers["x-correlation-id"] == "corr-invoice"
    request = post.xml().find(f"{{{SOAP_ENV}}}Body/{{{SFIN}}}JournalEntryBulkCreateRequest")
    assert request is not None
    assert request.findtext("JournalEntryCreateRequest/MessageHeader/UUID") == message_uuid(doc.external_ref)
    entry = journal(post)
    assert entry.findtext("AccountingDocumentType") == "DR"
    assert entry.findtext("CompanyCode") == "1710"
    assert entry.findtext("DocumentReferenceID") == reference_key(doc.external_ref)
    assert entry.findtext("DocumentHeaderText") == "Invoice INV-0042"
    assert entry.findtext("PostingDate") == entry.findtext("DocumentDate") == TODAY.isoformat()
    group = reference_key(doc.external_ref, 18)
    assert amounts(entry, "DebtorItem") == [(customer_erp_id, "64.00", "S", group)]
    assert entry.findtext("DebtorItem/CashDiscountTerms/NetPaymentDays") == "P30D"
    assert amounts(entry, "Item") == [(SUBSCRIPTIONS, "-49.00", "H"), (USAGE, "-12.50", "H")]
    assert [item.findtext("Tax/TaxCode") for item in entry.findall("Item")] == [None, "O1"]
    [tax] = entry.findall("ProductTaxItem")
    assert (tax.findtext("TaxCode"), tax.findtext("AmountInTransactionCurrency")) == ("O1", "-2.50")
    assert tax.findtext("TaxBaseAmountInTransCrcy") == "-12.50"
    assert tax.find("AmountInTransactionCurrency").get("currencyCode") == "USD"  # type: ignore[union-attr]

    posted = sap.entry(result.erp_id)
    assert (posted.document_type, posted.company_code, result.erp_number) == ("DR", "1710", posted.document)
    assert sap.customer_balance(customer_erp_id) == Decimal("64.00")
    assert sap.account_balance(SUBSCRIPTIONS) == Decimal("-49.00")
    assert sap.account_balance(OUTPUT_TAX) == Decimal("-2.50")
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref).erp_id == result.erp_id  # type: ignore[union-attr]

    again = connector.post_invoice(doc)
    assert again.erp_id == result.erp_id and len(sap.soap_posts()) == 1


def test_a_posted_invoice_billing_now_totals_differently_is_an_amount_mismatch(connector: S4HanaConnector) -> None:
    doc, _ = posted_invoice(connector)
    changed = InvoiceDocument(**{**doc.__dict__, "total_minor": 7000, "subtotal_minor": 6750})
    with pytest.raises(BusinessRuleError) as mismatch:
        connector.post_invoice(changed)
    assert mismatch.value.code == "amount_mismatch"
    assert mismatch.value.params == {"erp_total": "64.00", "billing_total": "70.00"}


def test_the_company_code_is_the_legal_entity_mapping_and_without_it_nothing_is_sent(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    assert S4HanaConnector.required_mappings == frozenset({"company"})
    customer_ref = ref("cus")
    erp_id = connector.ensure_customer(customer_doc(customer_ref, dimensions={"company": "1010"})).erp_id
    euro = invoice_doc(customer_ref, erp_id, currency="EUR", dimensions={"company": "1010"})
    result = connector.post_invoice(euro)
    assert result.erp_id.startswith("1010/") and sap.entry(result.erp_id).currency == "EUR"

    with pytest.raises(BusinessRuleError) as missing:
        connector.post_invoice(invoice_doc(customer_ref, erp_id, dimensions={}))
    assert missing.value.code == "missing_company_mapping"
    assert len(sap.soap_posts()) == 1


def test_every_request_takes_a_slot_in_the_connection_budget_first(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    slots: list[float] = []
    connector.pacer = lambda: slots.append(time.monotonic())
    posted_invoice(connector)
    assert len(slots) == len(sap.requests) > 4


# -- authentication, throttling, lost answers -----------------------------------------------------


def test_an_oauth_token_is_fetched_once_cached_and_renewed_after_it_expires() -> None:
    sap = SapSimulator(token_lifetime=2)
    connector = S4HanaConnector(sap.settings(auth="oauth"))
    try:
        connector.find_document(OPERATION_POST_INVOICE, ref("in"))
        connector.find_document(OPERATION_POST_INVOICE, ref("in"))
        assert sap.tokens_issued == 1
        token_request = next(r for r in sap.requests if r.path == "/oauth/token")
        assert token_request.body == b"grant_type=client_credentials"
        assert token_request.headers["authorization"].startswith("Basic ")
        assert all(r.headers["authorization"].startswith("Bearer ") for r in sap.requests if r.path != "/oauth/token")

        time.sleep(1.2)  # renewed before SAP's expiry (2 s here), never used stale
        connector.find_document(OPERATION_POST_INVOICE, ref("in"))
        assert sap.tokens_issued == 2
        assert all(r.status == 200 for r in sap.requests)
    finally:
        connector.close()
        sap.stop()


def test_a_token_sap_no_longer_accepts_is_renewed_once(sap: SapSimulator) -> None:
    connector = S4HanaConnector(sap.settings(auth="oauth"))
    connector.find_document(OPERATION_POST_INVOICE, ref("in"))
    sap.expire_tokens()

    assert connector.find_document(OPERATION_POST_INVOICE, ref("in")) is None
    assert sap.tokens_issued == 2
    assert [r.status for r in sap.requests if r.path != "/oauth/token"] == [200, 401, 200]
    connector.close()


def test_refused_client_credentials_are_an_authentication_error(sap: SapSimulator) -> None:
    sap.refuse_credentials()
    connector = S4HanaConnector(sap.settings(auth="oauth"))
    with pytest.raises(AuthenticationError) as refused:
        connector.find_document(OPERATION_POST_INVOICE, ref("in"))
    assert refused.value.status == 401 and "invalid_client" in refused.value.body_excerpt
    connector.close()


def test_a_refused_communication_user_is_an_authentication_error(sap: SapSimulator) -> None:
    connector = S4HanaConnector(sap.settings(password="wrong"))
    with pytest.raises(AuthenticationError):
        connector.ensure_customer(customer_doc(ref("cus")))
    assert not sap.partners
    connector.close()


def test_throttling_is_transient_with_sap_retry_after(sap: SapSimulator, connector: S4HanaConnector) -> None:
    sap.fail_next("429", on="odata_read")
    with pytest.raises(TransientError) as throttled:
        connector.find_document(OPERATION_POST_INVOICE, ref("in"))
    assert (throttled.value.status, throttled.value.retry_after) == (429, 7)


def test_sap_unavailable_before_posting_is_transient_and_the_retry_posts_once(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    customer_ref, customer_erp_id = customer(connector)
    doc = invoice_doc(customer_ref, customer_erp_id)
    sap.fail_next("503", on="soap")
    with pytest.raises(TransientError) as unavailable:
        connector.post_invoice(doc)
    assert unavailable.value.status == 503 and not sap.entries

    connector.post_invoice(doc)
    assert len(sap.entries_with_reference(reference_key(doc.external_ref))) == 1


def test_a_soap_server_fault_is_uncertain_and_the_lookup_decides(sap: SapSimulator, connector: S4HanaConnector) -> None:
    customer_ref, customer_erp_id = customer(connector)
    doc = invoice_doc(customer_ref, customer_erp_id)
    sap.fail_next("server_error", on="soap")
    with pytest.raises(UncertainOutcome) as fault:
        connector.post_invoice(doc)
    assert fault.value.status == 500 and "Web service processing error" in fault.value.body_excerpt

    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None
    connector.post_invoice(doc)
    assert len(sap.entries_with_reference(reference_key(doc.external_ref))) == 1


def test_a_timeout_after_sap_posted_is_uncertain_found_by_reference_and_never_posted_twice(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    customer_ref, customer_erp_id = customer(connector)
    doc = invoice_doc(customer_ref, customer_erp_id)
    sap.fail_next("timeout_after_commit", on="soap")
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)
    [committed] = sap.soap_posts()
    assert committed.committed

    found = connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)
    assert found is not None
    assert connector.post_invoice(doc).erp_id == found.erp_id
    assert len(sap.entries_with_reference(reference_key(doc.external_ref))) == 1
    assert sap.customer_balance(customer_erp_id) == Decimal("64.00")


def test_a_repeated_message_is_answered_with_the_first_confirmation_and_posts_nothing(
    sap: SapSimulator,
) -> None:
    reference = ref("je")
    entry = JournalEntry(
        reference,
        "SA",
        "1710",
        "USD",
        TODAY,
        "Retry",
        [JournalLine("gl", Decimal("10.00"), DISPUTED), JournalLine("gl", Decimal("-10.00"), BANK)],
    )
    first = build_journal_entry_request(entry, "HUB", datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    second = build_journal_entry_request(entry, "HUB", datetime.datetime.now(datetime.UTC))
    assert first != second  # a fresh CreationDateTime, the same message UUIDs
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": SOAP_ACTION}
    answers = [
        requests.post(f"{sap.url}{JOURNAL_ENTRY_POST_PATH}", data=body, headers=headers, auth=(USERNAME, PASSWORD))
        for body in (first, second)
    ]
    documents = [ET.fromstring(a.content).findtext(".//AccountingDocument") for a in answers]
    assert documents[0] == documents[1] != "0000000000"
    assert len(sap.entries_with_reference(reference_key(reference))) == 1


# -- refusals ------------------------------------------------------------------------------------


def test_a_closed_period_is_refused_with_a_message_finance_can_act_on(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    customer_ref, customer_erp_id = customer(connector)
    sap.close_period("1710", TODAY.year, TODAY.month)
    with pytest.raises(BusinessRuleError) as refused:
        connector.post_invoice(invoice_doc(customer_ref, customer_erp_id))
    error = refused.value
    assert error.code == "closed_period"
    assert f"Posting period {TODAY.month:03d} {TODAY.year} is not open" in error.finance_message
    assert "open the posting period in SAP, then retry" in error.finance_message
    assert "Error in document" not in error.params["erp_message"]
    assert not sap.entries


def test_accounts_and_tax_codes_sap_does_not_know_name_the_mapping_to_fix(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    customer_ref, customer_erp_id = customer(connector)
    unknown_account = (InvoiceLineDocument("Pro plan", Decimal(1), 6400, 6400, "49999999"),)
    with pytest.raises(BusinessRuleError) as account:
        connector.post_invoice(invoice_doc(customer_ref, customer_erp_id, lines=unknown_account, tax_minor=0))
    assert (account.value.code, account.value.params["value"]) == ("unmapped_revenue_account", "49999999")
    assert "G/L account 49999999 is not defined" in account.value.finance_message

    unknown_tax = (
        InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, SUBSCRIPTIONS),
        InvoiceLineDocument("API calls", Decimal(5), 250, 1250, USAGE, tax_code="Z9", tax_minor=250),
    )
    with pytest.raises(BusinessRuleError) as tax:
        connector.post_invoice(invoice_doc(customer_ref, customer_erp_id, lines=unknown_tax))
    assert (tax.value.code, tax.value.params["value"]) == ("unknown_tax_code", "Z9")

    sent = len(sap.soap_posts())
    not_sap = (InvoiceLineDocument("API calls", Decimal(5), 250, 1250, USAGE, tax_code="VAT20", tax_minor=250),)
    with pytest.raises(BusinessRuleError) as shape:
        connector.post_invoice(
            invoice_doc(customer_ref, customer_erp_id, lines=not_sap, subtotal_minor=1250, total_minor=1500)
        )
    assert (shape.value.code, shape.value.params["value"]) == ("unknown_tax_code", "VAT20")
    assert len(sap.soap_posts()) == sent and not sap.entries  # refused before sending


def test_a_request_sap_cannot_deserialize_is_a_soap_client_fault_for_engineers(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    customer_ref, customer_erp_id = customer(connector)
    with pytest.raises(ConfigurationError) as fault:
        connector.post_invoice(invoice_doc(customer_ref, customer_erp_id, erp_currency="DOLLAR"))
    assert fault.value.status == 500 and "currencyCode" in fault.value.detail
    assert not sap.entries


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda body: body.replace(b"<CreatedByUser>", b"<CreatedByUsr>").replace(
                b"</CreatedByUser>", b"</CreatedByUsr>"
            ),
            b"CreatedByUser",
        ),
        (lambda body: body.replace(b"<CompanyCode>1710</CompanyCode>", b""), b"CompanyCode"),
        (lambda body: body.replace(b"HUB", b"HUB" * 8, 1), b"longer than 16"),
        (
            lambda body: body.replace(b"<DebitCreditCode>S</DebitCreditCode>", b"<DebitCreditCode>D</DebitCreditCode>"),
            b"debit_credit",
        ),
    ],
)
def test_the_simulator_refuses_a_body_that_breaks_the_wsdl(sap: SapSimulator, change: Any, message: bytes) -> None:
    entry = JournalEntry(
        ref("je"),
        "SA",
        "1710",
        "USD",
        TODAY,
        "Shape",
        [JournalLine("gl", Decimal("10.00"), DISPUTED), JournalLine("gl", Decimal("-10.00"), BANK)],
    )
    body = change(build_journal_entry_request(entry, "HUB", datetime.datetime.now(datetime.UTC)))
    answer = requests.post(
        f"{sap.url}{JOURNAL_ENTRY_POST_PATH}",
        data=body,
        headers={"Content-Type": "text/xml", "SOAPAction": SOAP_ACTION},
        auth=(USERNAME, PASSWORD),
    )
    assert answer.status_code == 500 and b"soap-env:Client" in answer.content and message in answer.content
    assert not sap.entries


# -- the receivables lifecycle on SAP's books -----------------------------------------------------


def test_invoice_then_partial_payment_then_the_rest_settles_the_open_item(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    group = reference_key(doc.external_ref, 18)
    first = payment_doc(doc, invoice_id, 2000)
    assert connector.find_document(OPERATION_APPLY_PAYMENT, first.external_ref) is None

    applied = connector.apply_payment(first)
    entry = journal(sap.soap_posts()[-1])
    assert entry.findtext("AccountingDocumentType") == "DZ"
    assert amounts(entry, "Item") == [(BANK, "20.00", "S")]
    assert amounts(entry, "DebtorItem") == [(doc.customer_erp_id, "-20.00", "H", group)]
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("44.00") == sap.open_item(group)
    assert connector.find_document(OPERATION_APPLY_PAYMENT, first.external_ref).erp_id == applied.erp_id  # type: ignore[union-attr]

    connector.apply_payment(payment_doc(doc, invoice_id, 4400))
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("0.00") == sap.open_item(group)
    assert sap.account_balance(BANK) == Decimal("64.00")

    with pytest.raises(BusinessRuleError) as over:
        connector.apply_payment(payment_doc(doc, invoice_id, 100))
    assert over.value.code == "overpayment" and over.value.params == {"erp_total": "0.00", "billing_total": "1.00"}
    assert connector.apply_payment(first).erp_id == applied.erp_id  # a retry finds the first one
    assert len([e for e in sap.entries if e.document_type == "DZ"]) == 2


def credit_note(doc: InvoiceDocument, invoice_id: str, **overrides: Any) -> CreditMemoDocument:
    values: dict[str, Any] = {
        "external_ref": ref("cn"),
        "number": "CN-0007",
        "invoice_ref": doc.external_ref,
        "invoice_erp_id": invoice_id,
        "customer_ref": doc.customer_ref,
        "customer_erp_id": doc.customer_erp_id,
        "currency": "USD",
        "invoice_date": TODAY,
        "lines": (InvoiceLineDocument("API calls", Decimal(5), 250, 1250, USAGE, tax_code="O1", tax_minor=250),),
        "subtotal_minor": 1250,
        "tax_minor": 250,
        "total_minor": 1500,
        "dimensions": COMPANY,
    }
    return CreditMemoDocument(**{**values, **overrides})


def test_paid_invoice_then_credit_note_then_refund_pays_the_customer_back(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 6400))
    memo = credit_note(doc, invoice_id)

    posted = connector.post_credit_memo(memo)
    entry = journal(sap.soap_posts()[-1])
    group = reference_key(doc.external_ref, 18)
    assert entry.findtext("AccountingDocumentType") == "DG"
    assert amounts(entry, "DebtorItem") == [(doc.customer_erp_id, "-15.00", "H", group)]
    assert amounts(entry, "Item") == [(USAGE, "12.50", "S")]
    assert (
        entry.findtext("ProductTaxItem/AmountInTransactionCurrency"),
        entry.findtext("ProductTaxItem/TaxBaseAmountInTransCrcy"),
    ) == ("2.50", "12.50")
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("-15.00")  # billing owes the customer 15.00
    assert sap.account_balance(USAGE) == Decimal("0.00") == sap.account_balance(OUTPUT_TAX)
    assert connector.find_document(OPERATION_POST_CREDIT_MEMO, memo.external_ref).erp_id == posted.erp_id  # type: ignore[union-attr]

    refund = RefundDocument(
        external_ref=memo.external_ref + REFUND_SUFFIX,
        credit_memo_ref=memo.external_ref,
        credit_memo_erp_id=posted.erp_id,
        customer_erp_id=doc.customer_erp_id,
        currency="USD",
        amount_minor=1500,
        refunded_on=TODAY,
        payment_journal=BANK,
        number="CN-0007",
    )
    refunded = connector.refund_credit_memo(refund)
    assert amounts(journal(sap.soap_posts()[-1]), "Item") == [(BANK, "-15.00", "H")]
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    assert sap.account_balance(BANK) == Decimal("49.00")
    assert connector.find_document(OPERATION_REFUND_CREDIT_MEMO, refund.external_ref).erp_id == refunded.erp_id  # type: ignore[union-attr]

    again = RefundDocument(**{**refund.__dict__, "external_ref": ref("cn") + REFUND_SUFFIX, "amount_minor": 100})
    with pytest.raises(BusinessRuleError) as over:
        connector.refund_credit_memo(again)
    assert over.value.code == "overrefund"


def test_a_voided_invoice_is_reversed_and_the_receivable_is_back_to_zero(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    void = VoidDocument(
        external_ref=doc.external_ref + VOID_SUFFIX,
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        voided_on=TODAY,
        number="INV-0042",
        customer_erp_id=doc.customer_erp_id,
    )
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref) is None

    reversed_ = connector.void_invoice(void)
    entry = journal(sap.soap_posts()[-1])
    assert entry.findtext("AccountingDocumentType") == "DR"
    assert entry.findtext("DocumentReferenceID") == reference_key(void.external_ref)
    assert amounts(entry, "DebtorItem") == [(doc.customer_erp_id, "-64.00", "H", reference_key(doc.external_ref, 18))]
    assert sorted(amounts(entry, "Item")) == [(SUBSCRIPTIONS, "49.00", "S"), (USAGE, "12.50", "S")]
    assert entry.findtext("ProductTaxItem/TaxBaseAmountInTransCrcy") == "12.50"
    assert reversed_.detail["reverses"] == invoice_id
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    for account in (SUBSCRIPTIONS, USAGE, OUTPUT_TAX):
        assert sap.account_balance(account) == Decimal("0.00")

    assert connector.void_invoice(void).erp_id == reversed_.erp_id  # delivered twice: reversed once
    assert len(sap.entries_with_reference(reference_key(void.external_ref))) == 1
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref).erp_id == reversed_.erp_id  # type: ignore[union-attr]


def test_an_invoice_with_a_payment_is_not_reversed(sap: SapSimulator, connector: S4HanaConnector) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 1000))
    void = VoidDocument(
        external_ref=doc.external_ref + VOID_SUFFIX,
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        voided_on=TODAY,
    )
    with pytest.raises(BusinessRuleError) as refused:
        connector.void_invoice(void)
    assert refused.value.code == "void_after_payment"
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("54.00")


def test_a_voided_credit_note_is_reversed_and_the_invoice_is_owed_again(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    memo = credit_note(doc, invoice_id)
    memo_id = connector.post_credit_memo(memo).erp_id
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("49.00")

    void = VoidDocument(
        external_ref=memo.external_ref + VOID_SUFFIX,
        invoice_ref=memo.external_ref,
        invoice_erp_id=memo_id,
        voided_on=TODAY,
    )
    voided = connector.void_invoice(void)
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("64.00")
    assert sap.open_item(reference_key(doc.external_ref, 18)) == Decimal("64.00")
    assert connector.find_document(OPERATION_VOID_CREDIT_MEMO, void.external_ref).erp_id == voided.erp_id  # type: ignore[union-attr]


def test_partly_paid_invoice_written_off_moves_the_rest_to_bad_debt(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 2000))

    def write_off(amount_minor: int) -> WriteOffDocument:
        return WriteOffDocument(
            external_ref=doc.external_ref + WRITE_OFF_SUFFIX,
            invoice_ref=doc.external_ref,
            invoice_erp_id=invoice_id,
            currency="USD",
            amount_minor=amount_minor,
            written_off_on=TODAY,
            write_off_method=BAD_DEBT,
            number="INV-0042",
            customer_erp_id=doc.customer_erp_id,
            dimensions={**COMPANY, "cost_center": "17101301"},
        )

    with pytest.raises(LookupError):
        connector.write_off(write_off(3000))  # SAP has 44.00 open: a payment is still on its way
    with pytest.raises(BusinessRuleError) as mismatch:
        connector.write_off(write_off(5000))
    assert mismatch.value.code == "write_off_amount_mismatch"

    written = connector.write_off(write_off(4400))
    entry = journal(sap.soap_posts()[-1])
    assert entry.findtext("AccountingDocumentType") == "DA"
    assert amounts(entry, "Item") == [(BAD_DEBT, "44.00", "S")]
    assert entry.findtext("Item/AccountAssignment/CostCenter") == "17101301"
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    assert sap.account_balance(BAD_DEBT) == Decimal("44.00")
    assert connector.find_document(OPERATION_WRITE_OFF, doc.external_ref + WRITE_OFF_SUFFIX).erp_id == written.erp_id  # type: ignore[union-attr]


def test_overpayment_kept_on_account_then_applied_as_credit_to_the_next_invoice(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    payment_ref = f"test:pi_{uuid.uuid4().hex[:10]}"
    connector.apply_payment(
        payment_doc(doc, invoice_id, 6400, external_ref=f"{payment_ref}:{doc.external_ref.split(':')[1]}")
    )
    on_account = OnAccountDocument(
        external_ref=payment_ref + ":on-account",
        payment_ref=payment_ref,
        customer_ref=doc.customer_ref,
        customer_erp_id=doc.customer_erp_id,
        currency="USD",
        amount_minor=3600,
        received_on=TODAY,
        payment_journal=BANK,
        dimensions=COMPANY,
    )
    received = connector.receive_on_account(on_account)
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("-36.00")  # billing: the customer has 36.00 credit
    assert connector.find_document(OPERATION_RECEIVE_ON_ACCOUNT, on_account.external_ref).erp_id == received.erp_id  # type: ignore[union-attr]

    lines = (InvoiceLineDocument("Pro plan", Decimal(1), 3000, 3000, SUBSCRIPTIONS),)
    second = invoice_doc(
        doc.customer_ref, doc.customer_erp_id, lines=lines, subtotal_minor=3000, tax_minor=0, total_minor=3000
    )
    second_id = connector.post_invoice(second).erp_id
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("-6.00")

    credit = payment_doc(second, second_id, 3000, external_ref=f"{payment_ref}:{second.external_ref.split(':')[1]}")
    applied = connector.apply_credit(credit)
    entry = journal(sap.soap_posts()[-1])
    assert entry.findtext("AccountingDocumentType") == "DA" and entry.find("Item") is None  # no cash moves
    assert amounts(entry, "DebtorItem") == [
        (doc.customer_erp_id, "30.00", "S", reference_key(on_account.external_ref, 18)),
        (doc.customer_erp_id, "-30.00", "H", reference_key(second.external_ref, 18)),
    ]
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("-6.00")
    assert sap.open_item(reference_key(second.external_ref, 18)) == Decimal("0.00")
    assert sap.open_item(reference_key(on_account.external_ref, 18)) == Decimal("-6.00")
    assert connector.find_document(OPERATION_APPLY_CREDIT, credit.external_ref).erp_id == applied.erp_id  # type: ignore[union-attr]
    assert sap.account_balance(BANK) == Decimal("100.00")


def dispute(movement: str, dispute_ref: str, **overrides: Any) -> DisputeMovementDocument:
    values: dict[str, Any] = {
        "external_ref": f"{dispute_ref}:{movement}",
        "dispute_ref": dispute_ref,
        "payment_ref": "test:pi_disputed",
        "movement": movement,
        "currency": "USD",
        "amount_minor": 6400,
        "moved_on": TODAY,
        "payment_journal": BANK,
        "dispute_account": DISPUTED,
        "loss_account": LOSSES if movement == "lost" else "",
        "dimensions": COMPANY,
    }
    return DisputeMovementDocument(**{**values, **overrides})


def test_dispute_withdrawn_then_lost_moves_the_money_to_chargeback_losses(
    sap: SapSimulator, connector: S4HanaConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 6400))
    dispute_ref = ref("dp")

    withdrawn = connector.move_disputed_funds(dispute("withdrawn", dispute_ref))
    entry = journal(sap.soap_posts()[-1])
    assert entry.findtext("AccountingDocumentType") == "SA" and entry.find("DebtorItem") is None
    assert amounts(entry, "Item") == [(DISPUTED, "64.00", "S"), (BANK, "-64.00", "H")]
    assert (sap.account_balance(BANK), sap.account_balance(DISPUTED)) == (Decimal("0.00"), Decimal("64.00"))
    assert (
        connector.find_document(OPERATION_WITHDRAW_DISPUTED_FUNDS, withdrawn_ref := f"{dispute_ref}:withdrawn")
        is not None
    )
    assert connector.move_disputed_funds(dispute("withdrawn", dispute_ref)).erp_id == withdrawn.erp_id
    assert len(sap.entries_with_reference(reference_key(withdrawn_ref))) == 1

    lost = connector.move_disputed_funds(dispute("lost", dispute_ref))
    assert (sap.account_balance(DISPUTED), sap.account_balance(LOSSES)) == (Decimal("0.00"), Decimal("64.00"))
    assert sap.customer_balance(doc.customer_erp_id) == Decimal("0.00")  # the invoice stays paid
    assert connector.find_document(OPERATION_LOSE_DISPUTE, f"{dispute_ref}:lost").erp_id == lost.erp_id  # type: ignore[union-attr]


def test_dispute_withdrawn_then_won_reinstates_the_funds(sap: SapSimulator, connector: S4HanaConnector) -> None:
    dispute_ref = ref("dp")
    connector.move_disputed_funds(dispute("withdrawn", dispute_ref))
    connector.move_disputed_funds(dispute("reinstated", dispute_ref))
    assert sap.account_balance(DISPUTED) == Decimal("0.00") == sap.account_balance(BANK)
    assert [e.document_type for e in sap.entries] == ["SA", "SA"]
