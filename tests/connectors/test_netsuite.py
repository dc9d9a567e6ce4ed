"""The NetSuite connector against the SuiteTalk REST contract simulator: the request bodies NetSuite
receives for every document, the authentication handshakes, how each failure is classified, that a
repeat or a lost answer never makes a second record, and the customer's receivable in NetSuite
after each step of the receivables lifecycle."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import jwt
import pytest

from apps.connectors.base import (
    OPERATION_APPLY_CREDIT,
    OPERATION_APPLY_PAYMENT,
    OPERATION_ENSURE_CUSTOMER,
    OPERATION_LOSE_DISPUTE,
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
from apps.connectors.netsuite import NetSuiteConnector, external_id, signature_base_string
from apps.connectors.registry import connector_class
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from tests import netsuite_simulator as ns
from tests.netsuite_simulator import NetSuiteSimulator

DIMENSIONS = {"subsidiary": "1", "department": "3", "class": "5", "location": "7"}
SEGMENTS = {"department": {"id": "3"}, "class": {"id": "5"}, "location": {"id": "7"}}
USD = "1"


@pytest.fixture
def sim() -> Iterator[NetSuiteSimulator]:
    simulator = NetSuiteSimulator(hang_seconds=2.0)
    yield simulator
    simulator.stop()


@pytest.fixture
def connector(sim: NetSuiteSimulator) -> Iterator[NetSuiteConnector]:
    netsuite = NetSuiteConnector(sim.settings())
    yield netsuite
    netsuite.close()


def ref(prefix: str) -> str:
    return f"stripe-us:{prefix}_{uuid.uuid4().hex[:10]}"


def sent(sim: NetSuiteSimulator, method: str, record: str) -> list[ns.Recorded]:
    """The writes of ``method`` to ``record`` that NetSuite received."""
    return [r for r in sim.requests if r.method == method and r.path.startswith(f"{ns.RECORD_PREFIX}{record}/")]


def body(request: ns.Recorded) -> dict[str, Any]:
    assert isinstance(request.body, dict)
    return request.body


def customer(connector: NetSuiteConnector, name: str = "ACME Corp") -> tuple[str, str]:
    external_ref = ref("cus")
    result = connector.ensure_customer(
        CustomerDocument(
            external_ref=external_ref,
            name=name,
            email="ap@acme.example",
            tax_id="DE123456789",
            bill_to=Address(line1="1 Main St", city="Springfield", postal_code="12345", state="IL", country="us"),
            dimensions=DIMENSIONS,
            erp_currency=USD,
            correlation_id="corr-cus",
        )
    )
    return external_ref, result.erp_id


def invoice_doc(customer_erp_id: str, **overrides: Any) -> InvoiceDocument:
    values: dict[str, Any] = {
        "external_ref": ref("in"),
        "number": "INV-0042",
        "customer_ref": "stripe-us:cus",
        "customer_erp_id": customer_erp_id,
        "currency": "USD",
        "invoice_date": date.today(),
        "due_date": date.today() + timedelta(days=30),
        "lines": (
            InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, "4000", item="201"),
            InvoiceLineDocument("API calls", Decimal(5), 250, 1250, "4100", tax_code="301", tax_minor=250, item="202"),
        ),
        "subtotal_minor": 6150,
        "tax_minor": 250,
        "total_minor": 6400,
        "dimensions": DIMENSIONS,
        "erp_currency": USD,
        "correlation_id": "corr-in",
    }
    values.update(overrides)
    return InvoiceDocument(**values)


def payment_doc(invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int, **overrides: Any) -> PaymentDocument:
    values: dict[str, Any] = {
        "external_ref": f"{ref('pi')}:{invoice.external_ref.split(':')[1]}",
        "invoice_ref": invoice.external_ref,
        "invoice_erp_id": invoice_erp_id,
        "customer_erp_id": invoice.customer_erp_id,
        "currency": "USD",
        "amount_minor": amount_minor,
        "paid_on": date.today(),
        "payment_journal": "1150",
        "dimensions": DIMENSIONS,
        "erp_currency": USD,
    }
    values.update(overrides)
    return PaymentDocument(**values)


def credit_doc(invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int) -> CreditMemoDocument:
    return CreditMemoDocument(
        external_ref=ref("cn"),
        number="CN-0007",
        invoice_ref=invoice.external_ref,
        invoice_erp_id=invoice_erp_id,
        customer_ref=invoice.customer_ref,
        customer_erp_id=invoice.customer_erp_id,
        currency="USD",
        invoice_date=date.today(),
        lines=(InvoiceLineDocument("API calls credited", Decimal(1), amount_minor, amount_minor, "4100", item="202"),),
        subtotal_minor=amount_minor,
        tax_minor=0,
        total_minor=amount_minor,
        reason="service outage",
        dimensions=DIMENSIONS,
        erp_currency=USD,
    )


def posted_invoice(connector: NetSuiteConnector) -> tuple[InvoiceDocument, str]:
    _, customer_id = customer(connector)
    doc = invoice_doc(customer_id)
    return doc, connector.post_invoice(doc).erp_id


# -- the contract of each record -------------------------------------------------------------


def test_external_ids_hold_only_what_netsuite_allows_and_never_collide() -> None:
    references = ["stripe-us:in_1Nx", "stripe-us:in_1Nx#r2", "stripe-us_Cin:1Nx", "a:b_c", "a_Cb:c", "lago:inv é/1"]
    ids = [external_id(reference) for reference in references]
    assert ids[0] == "stripe-us_Cin__1Nx" and ids[1] == "stripe-us_Cin__1Nx_Hr2"
    assert all(ns._EXTERNAL_ID.match(found) for found in ids)
    assert len(set(ids)) == len(ids)


def test_customer_is_upserted_by_external_id_once_with_subsidiary_currency_and_address(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    external_ref, erp_id = customer(connector)
    [created] = sent(sim, "PUT", "customer")
    assert created.path == f"{ns.RECORD_PREFIX}customer/eid:{external_id(external_ref)}"
    assert body(created) == {
        "companyName": "ACME Corp",
        "isPerson": False,
        "subsidiary": {"id": "1"},
        "currency": {"id": USD},
        "email": "ap@acme.example",
        "vatRegNumber": "DE123456789",
        "addressBook": {
            "items": [
                {
                    "defaultBilling": True,
                    "defaultShipping": True,
                    "addressBookAddress": {
                        "addr1": "1 Main St",
                        "city": "Springfield",
                        "state": "IL",
                        "zip": "12345",
                        "country": {"id": "US"},
                    },
                }
            ]
        },
    }
    assert created.headers["X-NetSuite-PropertyNameValidation"] == "Error"  # a wrong field name is an error
    assert created.headers["X-Correlation-ID"] == "corr-cus"

    renamed = connector.ensure_customer(
        CustomerDocument(external_ref=external_ref, name="ACME Corporation", dimensions=DIMENSIONS, erp_currency=USD)
    )
    again = connector.ensure_customer(
        CustomerDocument(external_ref=external_ref, name="ACME Corporation", dimensions=DIMENSIONS, erp_currency=USD)
    )

    nameless = connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="", dimensions=DIMENSIONS))

    assert renamed.erp_id == again.erp_id == nameless.erp_id == erp_id
    assert again.detail["action"] == nameless.detail["action"] == "unchanged"
    assert body(sent(sim, "PUT", "customer")[1]) == {"companyName": "ACME Corporation"}  # the address is left alone
    assert len(sent(sim, "PUT", "customer")) == 2
    [record] = sim.all("customer")
    assert record["companyName"] == "ACME Corporation" and len(record["addressBook"]["items"]) == 1
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, external_ref).erp_id == erp_id  # type: ignore[union-attr]
    assert connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus")) is None
    assert sim.ignored_fields == []


def test_invoice_lines_carry_items_tax_and_every_dimension_and_post_once(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    _, customer_id = customer(connector)
    doc = invoice_doc(customer_id)
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None

    result = connector.post_invoice(doc)
    again = connector.post_invoice(doc)

    [put] = sent(sim, "PUT", "invoice")
    assert put.query == {"replace": "item"}  # a repeat replaces the lines, never appends them
    assert body(put) == {
        "entity": {"id": customer_id},
        "subsidiary": {"id": "1"},
        "currency": {"id": USD},
        "tranDate": date.today().isoformat(),
        **SEGMENTS,
        "memo": f"INV-0042 ({doc.external_ref})",
        "otherRefNum": "INV-0042",
        "item": {
            "items": [
                {"item": {"id": "201"}, "description": "Pro plan", "quantity": 1, "rate": Decimal("49.00"),
                 "amount": Decimal("49.00"), **SEGMENTS},
                {"item": {"id": "202"}, "description": "API calls", "quantity": 5, "rate": Decimal("2.50"),
                 "amount": Decimal("12.50"), **SEGMENTS, "taxCode": {"id": "301"}},
            ]
        },
        "dueDate": (date.today() + timedelta(days=30)).isoformat(),
    }  # fmt: skip
    assert '"rate": 49.00' in put.text  # amounts are JSON numbers, digit for digit
    invoice = sim.record("invoice", eid=external_id(doc.external_ref))
    assert invoice is not None
    assert (invoice["total"], invoice["taxTotal"], invoice["status"]["id"]) == (
        Decimal("64.00"),
        Decimal("2.50"),
        "open",
    )
    assert (result.erp_id, result.erp_number) == (invoice["id"], invoice["tranId"])
    assert again.erp_id == result.erp_id and again.detail["action"] == "already posted"
    assert sim.customer_balance(customer_id) == Decimal("64.00")
    assert sim.account_balance("4000") == Decimal("-49.00") and sim.account_balance("4100") == Decimal("-12.50")
    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref).erp_id == result.erp_id  # type: ignore[union-attr]


def test_a_total_netsuite_computes_differently_is_parked_then_corrected_in_place_by_the_retry(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    _, customer_id = customer(connector)
    untaxed = (
        InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, "4000", item="201"),
        InvoiceLineDocument("API calls", Decimal(5), 250, 1250, "4100", tax_minor=250, item="202"),  # tax code lost
    )
    doc = invoice_doc(customer_id, lines=untaxed)
    with pytest.raises(BusinessRuleError) as refused:
        connector.post_invoice(doc)
    assert refused.value.code == "amount_mismatch"
    assert refused.value.params == {"erp_total": "61.50", "billing_total": "64.00"}
    assert "Check the tax code and item mappings" in refused.value.finance_message

    fixed = connector.post_invoice(invoice_doc(customer_id, external_ref=doc.external_ref))

    [invoice] = sim.all("invoice")
    assert invoice["id"] == fixed.erp_id and invoice["total"] == Decimal("64.00")
    assert len(invoice["item"]["items"]) == 2  # replaced, not appended
    assert sim.customer_balance(customer_id) == Decimal("64.00")


def test_an_item_or_tax_code_netsuite_does_not_have_names_the_mapping_to_fix(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    _, customer_id = customer(connector)
    lines = (InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, "4000", item="999"),)
    with pytest.raises(BusinessRuleError) as unknown_item:
        connector.post_invoice(
            invoice_doc(customer_id, lines=lines, subtotal_minor=4900, tax_minor=0, total_minor=4900)
        )
    taxed = (
        InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, "4000", tax_code="398", tax_minor=980, item="201"),
    )
    with pytest.raises(BusinessRuleError) as unknown_tax:
        connector.post_invoice(
            invoice_doc(customer_id, lines=taxed, subtotal_minor=4900, tax_minor=980, total_minor=5880)
        )
    with pytest.raises(BusinessRuleError) as unknown_currency:
        connector.post_invoice(invoice_doc(customer_id, erp_currency="77"))

    assert (unknown_item.value.code, unknown_item.value.params["value"]) == ("unknown_item", "999")
    assert "Correct the item mapping" in unknown_item.value.finance_message
    assert (unknown_tax.value.code, unknown_tax.value.params["value"]) == ("unknown_tax_code", "398")
    assert (unknown_currency.value.code, unknown_currency.value.params["value"]) == ("unknown_currency", "77")
    assert sim.all("invoice") == []


def test_a_body_netsuite_cannot_read_is_parked_for_engineers_not_finance(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    """The simulator answers a wrong shape the way NetSuite does (400 INVALID_CONTENT), so a connector
    that sent a read-only field or a bare id instead of a reference would fail these contract tests."""
    _, customer_id = customer(connector)
    invoice = ref("in")
    for wrong in ({"entity": {"id": customer_id}, "total": Decimal("64.00")}, {"entity": customer_id}):
        with pytest.raises(ConfigurationError) as refused:
            connector._upsert("invoice", invoice, wrong)
        assert refused.value.code == "schema_mismatch" and refused.value.status == 400
        assert '"o:errorCode": "INVALID_CONTENT"' in refused.value.body_excerpt
    assert sim.all("invoice") == []


def test_a_closed_period_is_refused_in_words_finance_can_act_on(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    _, customer_id = customer(connector)
    sim.close_periods_through(date.today() - timedelta(days=1))
    with pytest.raises(BusinessRuleError) as refused:
        connector.post_invoice(invoice_doc(customer_id, invoice_date=date.today() - timedelta(days=3)))

    assert refused.value.code == "erp_rejected" and refused.value.status == 400
    message = refused.value.finance_message
    assert message.startswith("NetSuite refused it: The accounting period for ")
    assert "is closed. Choose a date in an open period, or ask an administrator to reopen the period." in message
    assert "period" in refused.value.params["erp_message"]  # the console words it as "Closed period"
    assert sim.all("invoice") == []


# -- authentication ---------------------------------------------------------------------------


def test_client_credentials_token_is_fetched_with_a_signed_assertion_and_reused_until_it_expires(
    sim: NetSuiteSimulator,
) -> None:
    sim.token_ttl = 2  # NetSuite's are 3600 s; the connector renews a little before expiry
    connector = NetSuiteConnector(sim.settings(algorithm="PS256"))
    customer(connector)
    customer(connector)

    [form] = sim.token_requests
    assert form["grant_type"] == "client_credentials"
    assert form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    header = jwt.get_unverified_header(form["client_assertion"])
    claims = jwt.decode(form["client_assertion"], options={"verify_signature": False})
    assert header == {"alg": "PS256", "kid": ns.CERTIFICATE_PS256, "typ": "JWT"}
    assert claims["iss"] == ns.CLIENT_ID and claims["scope"] == ["restlets", "rest_webservices"]
    assert claims["aud"] == f"{sim.url}/services/rest/auth/oauth2/v1/token"
    assert 0 < claims["exp"] - claims["iat"] <= 3600
    assert all(r.status != 401 for r in sim.requests)

    time.sleep(2.1)
    customer(connector)
    assert len(sim.token_requests) == 2  # renewed after expiry, before NetSuite had to refuse it
    assert all(r.status != 401 for r in sim.requests)
    connector.close()


def test_es256_certificates_sign_too_and_a_token_netsuite_forgot_is_renewed_once(sim: NetSuiteSimulator) -> None:
    connector = NetSuiteConnector(sim.settings(algorithm="ES256"))
    customer(connector)
    sim.expire_tokens()  # revoked or expired on NetSuite's side before our clock says so

    customer(connector)

    assert [r.status for r in sim.requests if r.status == 401] == [401]
    assert len(sim.token_requests) == 2
    assert len(sim.all("customer")) == 2
    connector.close()


def test_refused_client_credentials_are_an_authentication_error(sim: NetSuiteSimulator) -> None:
    sim.refuse_tokens = True
    connector = NetSuiteConnector(sim.settings())
    with pytest.raises(AuthenticationError) as refused:
        customer(connector)
    assert refused.value.status == 400 and "invalid_grant" in refused.value.detail
    assert sim.all("customer") == []

    wrong_key = NetSuiteSimulator()
    try:  # a key NetSuite has no certificate for
        impostor = NetSuiteConnector({**sim.settings(), "private_key": wrong_key.private_key()})
        sim.refuse_tokens = False
        with pytest.raises(AuthenticationError):
            customer(impostor)
    finally:
        wrong_key.stop()


def test_token_based_authentication_signs_each_request_with_hmac_sha256_for_the_account_realm(
    sim: NetSuiteSimulator,
) -> None:
    connector = NetSuiteConnector(sim.settings("tba"))
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 6400))

    assert sim.token_requests == []
    authorizations = [r.headers["Authorization"] for r in sim.requests]
    assert all(a.startswith(f'OAuth realm="{ns.ACCOUNT_ID}", ') for a in authorizations)
    assert all('oauth_signature_method="HMAC-SHA256"' in a for a in authorizations)
    assert all(r.status < 400 or r.status == 404 for r in sim.requests)  # every signature checked out
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("0.00")

    forged = NetSuiteConnector({**sim.settings("tba"), "token_secret": "not-the-secret"})
    with pytest.raises(AuthenticationError) as refused:
        customer(forged)
    assert refused.value.status == 401 and "token_rejected" in refused.value.detail


def test_the_signature_base_string_is_rfc_5849s() -> None:
    """RFC 5849 section 3.4.1.1's worked example, with the port and case of the host normalized."""
    oauth = [
        ("oauth_consumer_key", "9djdj82h48djs9d2"),
        ("oauth_token", "kkk9d7dh3k39sjv7"),
        ("oauth_signature_method", "HMAC-SHA1"),
        ("oauth_timestamp", "137131201"),
        ("oauth_nonce", "7d8f3e4a"),
    ]
    form_body = [("c2", ""), ("a3", "2 q")]
    expected = (
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D"
        "%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1"
        "%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
    )
    for url in (
        "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b",
        "http://EXAMPLE.COM:80/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b",
    ):
        assert signature_base_string("POST", url, [*oauth, *form_body]) == expected


def test_settings_the_connector_cannot_work_with_are_configuration_errors(sim: NetSuiteSimulator) -> None:
    assert connector_class("netsuite") is NetSuiteConnector
    assert NetSuiteConnector.required_mappings == frozenset({"currency", "subsidiary", "item"})
    with pytest.raises(ConfigurationError, match="account_id"):
        NetSuiteConnector({"client_id": "x"})
    with pytest.raises(ConfigurationError, match="certificate_id, private_key"):
        NetSuiteConnector({"account_id": "123", "client_id": "x"})
    with pytest.raises(ConfigurationError, match="token_secret"):
        NetSuiteConnector(
            {"account_id": "123", "auth": "tba", "consumer_key": "a", "consumer_secret": "b", "token_id": "c"}
        )
    with pytest.raises(ConfigurationError, match="cannot sign"):
        customer(NetSuiteConnector({**sim.settings(), "private_key": "not a key"}))
    default = NetSuiteConnector(
        {"account_id": "1234567_SB1", "client_id": "x", "certificate_id": "y", "private_key": "z"}
    )
    assert default.api.record_url == "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/record/v1"
    assert default.api.realm == "1234567_SB1"


# -- throttling, failures and lost answers -----------------------------------------------------


def test_the_concurrency_limit_is_transient_with_a_backoff_that_doubles_or_netsuites_retry_after(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    _, customer_id = customer(connector)
    doc = invoice_doc(customer_id)
    waits = []
    sim.fail_next("429", "429", "429:7")
    for _ in range(3):
        with pytest.raises(TransientError) as throttled:
            connector.post_invoice(doc)
        assert throttled.value.status == 429 and "CONCURRENCY_LIMIT_EXCEEDED" in throttled.value.body_excerpt
        waits.append(throttled.value.retry_after)
    assert waits == [1.0, 2.0, 7.0]  # NetSuite sends no Retry-After; when one comes, it wins
    assert sim.all("invoice") == []

    connector.post_invoice(doc)
    sim.fail_next("429")
    with pytest.raises(TransientError) as after_success:
        connector.apply_payment(payment_doc(doc, sim.all("invoice")[0]["id"], 100))
    assert after_success.value.retry_after == 1.0  # a success starts the backoff over


def test_a_5xx_before_netsuite_saved_anything_is_retried_without_a_duplicate(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    _, customer_id = customer(connector)
    doc = invoice_doc(customer_id)
    sim.fail_next("503", "500")
    with pytest.raises(TransientError) as unavailable:
        connector.post_invoice(doc)
    assert unavailable.value.status == 503
    with pytest.raises(UncertainOutcome) as failed:  # a 500 after sending: NetSuite may have saved it
        connector.post_invoice(doc)
    assert failed.value.status == 500

    assert connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None  # it had not
    connector.post_invoice(doc)
    assert len(sim.all("invoice")) == 1


def test_a_timeout_after_netsuite_saved_the_invoice_is_found_and_never_posted_twice(sim: NetSuiteSimulator) -> None:
    connector = NetSuiteConnector(sim.settings(timeout=1))
    _, customer_id = customer(connector)
    doc = invoice_doc(customer_id)
    sim.fail_next("timeout_after_commit")
    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)

    found = connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)
    again = connector.post_invoice(doc)

    [invoice] = sim.all("invoice")
    assert found is not None and found.erp_id == again.erp_id == invoice["id"]
    assert found.erp_number == invoice["tranId"]
    assert [r.committed for r in sent(sim, "PUT", "invoice")] == [True]  # the repeat wrote nothing

    payment = payment_doc(doc, invoice["id"], 6400)
    sim.fail_next("timeout_after_commit")
    with pytest.raises(UncertainOutcome):
        connector.apply_payment(payment)
    assert connector.find_document(OPERATION_APPLY_PAYMENT, payment.external_ref) is not None
    connector.apply_payment(payment)
    assert len(sim.all("customerPayment")) == 1
    assert sim.customer_balance(customer_id) == Decimal("0.00")
    connector.close()


# -- the receivables lifecycle on NetSuite's books -----------------------------------------------


def test_invoice_then_partial_payment_then_the_rest_settles_it(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    first = payment_doc(doc, invoice_id, 2000)
    connector.apply_payment(first)

    [put] = sent(sim, "PUT", "customerPayment")
    assert body(put) == {
        "customer": {"id": doc.customer_erp_id},
        "subsidiary": {"id": "1"},
        "currency": {"id": USD},
        "tranDate": date.today().isoformat(),
        **SEGMENTS,
        "undepFunds": False,
        "account": {"id": "1150"},
        "payment": Decimal("20.00"),
        "autoApply": False,
        "memo": f"Payment {first.external_ref} on {sim.record('invoice', internal_id=invoice_id)['tranId']}",  # type: ignore[index]
        "apply": {"items": [{"doc": {"id": invoice_id}, "apply": True, "amount": Decimal("20.00")}]},
    }
    assert sim.record("invoice", internal_id=invoice_id)["amountRemaining"] == Decimal("44.00")  # type: ignore[index]
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("44.00")

    connector.apply_payment(payment_doc(doc, invoice_id, 4400))
    invoice = sim.record("invoice", internal_id=invoice_id)
    assert invoice is not None and (invoice["amountRemaining"], invoice["status"]["id"]) == (
        Decimal("0.00"),
        "paidInFull",
    )
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    assert sim.account_balance("1150") == Decimal("64.00")

    with pytest.raises(BusinessRuleError) as overpaid:
        connector.apply_payment(payment_doc(doc, invoice_id, 100))
    assert overpaid.value.code == "overpayment" and overpaid.value.params == {
        "erp_total": "0.00",
        "billing_total": "1.00",
    }
    assert len(sim.all("customerPayment")) == 2


def test_paid_invoice_then_credit_note_then_refund_pays_the_customer_back(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 6400))
    credit = credit_doc(doc, invoice_id, 1250)
    memo = connector.post_credit_memo(credit)

    [put] = sent(sim, "PUT", "creditMemo")
    assert put.query == {"replace": "item,apply"}
    sent_memo = body(put)
    assert sent_memo["entity"] == {"id": doc.customer_erp_id} and sent_memo["subsidiary"] == {"id": "1"}
    assert {key: sent_memo[key] for key in SEGMENTS} == SEGMENTS
    assert sent_memo["item"]["items"] == [
        {"item": {"id": "202"}, "description": "API calls credited", "quantity": 1, "rate": Decimal("12.50"),
         "amount": Decimal("12.50"), **SEGMENTS},
    ]  # fmt: skip
    assert sent_memo["apply"] == {"items": []}  # nothing open on the paid invoice: it is the customer's credit
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("-12.50")

    refund = RefundDocument(
        external_ref=f"{credit.external_ref}:refund",
        credit_memo_ref=credit.external_ref,
        credit_memo_erp_id=memo.erp_id,
        currency="USD",
        amount_minor=1250,
        refunded_on=date.today(),
        payment_journal="1160",
        dimensions=DIMENSIONS,
        erp_currency=USD,
    )
    connector.refund_credit_memo(refund)
    connector.refund_credit_memo(refund)

    [refund_put] = sent(sim, "PUT", "customerRefund")
    assert body(refund_put) == {
        "customer": {"id": doc.customer_erp_id},
        "subsidiary": {"id": "1"},
        "currency": {"id": USD},
        "tranDate": date.today().isoformat(),
        **SEGMENTS,
        "account": {"id": "1160"},
        "memo": f"Refund {refund.external_ref} of {memo.erp_number}",
        "apply": {"items": [{"doc": {"id": memo.erp_id}, "apply": True, "amount": Decimal("12.50")}]},
    }
    assert sim.record("creditMemo", internal_id=memo.erp_id)["unapplied"] == Decimal("0.00")  # type: ignore[index]
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    assert sim.account_balance("1160") == Decimal("-12.50")

    twice = RefundDocument(**{**refund.__dict__, "external_ref": f"{refund.external_ref}-2"})
    with pytest.raises(BusinessRuleError) as overrefund:
        connector.refund_credit_memo(twice)
    assert overrefund.value.code == "overrefund" and "leaves 0.00 to pay back" in overrefund.value.finance_message


def test_a_partial_credit_note_lowers_what_the_open_invoice_still_asks(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    credit = credit_doc(doc, invoice_id, 750)
    connector.post_credit_memo(credit)
    connector.post_credit_memo(credit)

    assert len(sim.all("creditMemo")) == 1
    assert sim.record("invoice", internal_id=invoice_id)["amountRemaining"] == Decimal("56.50")  # type: ignore[index]
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("56.50")


def test_void_credits_the_invoice_in_full_by_transforming_it_once(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    void = VoidDocument(
        external_ref=f"{doc.external_ref}:void",
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        customer_erp_id=doc.customer_erp_id,
        voided_on=date.today(),
        number="INV-0042",
        dimensions=DIMENSIONS,
    )
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref) is None
    result = connector.void_invoice(void)
    again = connector.void_invoice(void)

    [transform] = sent(sim, "POST", "invoice")
    assert transform.path == f"{ns.RECORD_PREFIX}invoice/{invoice_id}/!transform/creditMemo"
    assert body(transform)["externalId"] == external_id(void.external_ref)
    [memo] = sim.all("creditMemo")
    assert memo["createdFrom"]["id"] == invoice_id and memo["total"] == Decimal("64.00")
    assert [line["item"]["id"] for line in memo["item"]["items"]] == ["201", "202"]  # the invoice's own lines and tax
    assert result.erp_id == again.erp_id == memo["id"]
    invoice = sim.record("invoice", internal_id=invoice_id)
    assert invoice is not None and invoice["status"]["id"] == "paidInFull"
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    assert connector.find_document(OPERATION_VOID_INVOICE, void.external_ref).erp_id == memo["id"]  # type: ignore[union-attr]

    paid, paid_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(paid, paid_id, 1000))
    with pytest.raises(BusinessRuleError) as refused:
        connector.void_invoice(VoidDocument(external_ref=f"{paid.external_ref}:void", invoice_ref=paid.external_ref,
                                            invoice_erp_id=paid_id, voided_on=date.today()))  # fmt: skip
    assert (
        refused.value.code == "void_after_payment"
        and "already has 10.00 paid or credited" in refused.value.finance_message
    )


def test_a_voided_credit_note_is_reversed_and_the_invoice_is_owed_again(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    credit = credit_doc(doc, invoice_id, 900)
    memo = connector.post_credit_memo(credit)
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("55.00")
    void = VoidDocument(
        external_ref=f"{credit.external_ref}:void",
        invoice_ref=credit.external_ref,
        invoice_erp_id=memo.erp_id,
        customer_erp_id=doc.customer_erp_id,
        voided_on=date.today(),
        number="CN-0007",
        dimensions=DIMENSIONS,
    )
    result = connector.void_invoice(void)
    again = connector.void_invoice(void)

    reversal = sim.record("invoice", eid=external_id(void.external_ref))
    assert reversal is not None and reversal["id"] == result.erp_id == again.erp_id
    assert (reversal["total"], reversal["amountRemaining"]) == (Decimal("9.00"), Decimal("0.00"))
    credit_memo = sim.record("creditMemo", internal_id=memo.erp_id)
    assert credit_memo is not None and credit_memo["apply"]["items"] == [
        {"links": [], "line": 1, "doc": {"id": reversal["id"], "refName": reversal["tranId"], "links": []},
         "apply": True, "amount": Decimal("9.00")}
    ]  # fmt: skip
    assert sim.record("invoice", internal_id=invoice_id)["amountRemaining"] == Decimal("64.00")  # type: ignore[index]
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("64.00")
    assert len(sent(sim, "PATCH", "creditMemo")) == 1
    assert connector.find_document(OPERATION_VOID_CREDIT_MEMO, void.external_ref).erp_id == reversal["id"]  # type: ignore[union-attr]


def test_uncollectible_rest_is_written_off_against_the_bad_debt_item(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    doc, invoice_id = posted_invoice(connector)
    connector.apply_payment(payment_doc(doc, invoice_id, 2000))
    write_off = WriteOffDocument(
        external_ref=f"{doc.external_ref}:write-off",
        invoice_ref=doc.external_ref,
        invoice_erp_id=invoice_id,
        customer_erp_id=doc.customer_erp_id,
        currency="USD",
        amount_minor=4400,
        written_off_on=date.today(),
        write_off_method="299",
        number="INV-0042",
        reason="marked uncollectible in billing",
        dimensions=DIMENSIONS,
        erp_currency=USD,
    )
    too_little = WriteOffDocument(**{**write_off.__dict__, "amount_minor": 4000})
    with pytest.raises(LookupError):  # NetSuite has more open than billing: a payment is on its way
        connector.write_off(too_little)

    result = connector.write_off(write_off)
    connector.write_off(write_off)

    [put] = sent(sim, "PUT", "creditMemo")
    sent_body = body(put)
    assert sent_body["item"]["items"] == [
        {"item": {"id": "299"}, "description": "Bad debt written off on invoice INV-0042", "quantity": 1,
         "rate": Decimal("44.00"), "amount": Decimal("44.00"), **SEGMENTS}
    ]  # fmt: skip
    assert sent_body["apply"] == {"items": [{"doc": {"id": invoice_id}, "apply": True, "amount": Decimal("44.00")}]}
    assert (sent_body["subsidiary"], sent_body["currency"]) == ({"id": "1"}, {"id": USD})
    invoice = sim.record("invoice", internal_id=invoice_id)
    assert invoice is not None and invoice["status"]["id"] == "paidInFull"
    assert sim.account_balance("6800") == Decimal("44.00")
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    assert connector.find_document(OPERATION_WRITE_OFF, write_off.external_ref).erp_id == result.erp_id  # type: ignore[union-attr]

    too_much = WriteOffDocument(**{**write_off.__dict__, "external_ref": f"{doc.external_ref}:write-off-2"})
    with pytest.raises(BusinessRuleError) as mismatch:
        connector.write_off(too_much)
    assert mismatch.value.code == "write_off_amount_mismatch" and mismatch.value.params["erp_total"] == "0.00"


def test_over_payment_is_held_on_account_then_applied_as_credit_to_the_next_invoice(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    first, first_id = posted_invoice(connector)
    payment_ref = ref("pi")
    connector.apply_payment(
        payment_doc(first, first_id, 6400, external_ref=f"{payment_ref}:{first.external_ref.split(':')[1]}")
    )
    second = invoice_doc(
        first.customer_erp_id,
        lines=(InvoiceLineDocument("Pro plan", Decimal(1), 3000, 3000, "4000", item="201"),),
        subtotal_minor=3000,
        tax_minor=0,
        total_minor=3000,
    )
    second_id = connector.post_invoice(second).erp_id
    from_credit = payment_doc(
        second, second_id, 3000, external_ref=f"{payment_ref}:{second.external_ref.split(':')[1]}"
    )
    with pytest.raises(LookupError):  # the unapplied cash has not reached NetSuite yet
        connector.apply_credit(from_credit)

    on_account = OnAccountDocument(
        external_ref=f"{payment_ref}:on-account",
        payment_ref=payment_ref,
        customer_ref=first.customer_ref,
        customer_erp_id=first.customer_erp_id,
        currency="USD",
        amount_minor=3600,
        received_on=date.today(),
        payment_journal="1150",
        dimensions=DIMENSIONS,
        erp_currency=USD,
    )
    connector.receive_on_account(on_account)
    put = sent(sim, "PUT", "customerPayment")[-1]
    assert body(put)["apply"] == {"items": []} and body(put)["autoApply"] is False
    assert sim.customer_balance(first.customer_erp_id) == Decimal("-6.00")  # 30.00 owed, 36.00 of credit
    assert connector.find_document(OPERATION_RECEIVE_ON_ACCOUNT, on_account.external_ref) is not None
    assert connector.find_document(OPERATION_APPLY_CREDIT, from_credit.external_ref) is None

    result = connector.apply_credit(from_credit)
    connector.apply_credit(from_credit)

    cash = sim.record("customerPayment", eid=external_id(on_account.external_ref))
    assert cash is not None and result.erp_id == cash["id"]
    assert (cash["applied"], cash["unapplied"]) == (Decimal("30.00"), Decimal("6.00"))
    assert sim.record("invoice", internal_id=second_id)["status"]["id"] == "paidInFull"  # type: ignore[index]
    assert sim.customer_balance(first.customer_erp_id) == Decimal("-6.00")  # no new cash: the balance stays
    assert len(sim.all("customerPayment")) == 2
    assert connector.find_document(OPERATION_APPLY_CREDIT, from_credit.external_ref).erp_id == cash["id"]  # type: ignore[union-attr]


def _dispute(payment_ref: str, movement: str, dispute_ref: str) -> DisputeMovementDocument:
    return DisputeMovementDocument(
        external_ref=f"{dispute_ref}:{movement}",
        dispute_ref=dispute_ref,
        payment_ref=payment_ref,
        movement=movement,
        currency="USD",
        amount_minor=6400,
        moved_on=date.today(),
        payment_journal="1150",
        dispute_account="1190",
        loss_account="6810" if movement == "lost" else "",
        dimensions=DIMENSIONS,
        erp_currency=USD,
    )


@pytest.mark.parametrize("outcome", ["lost", "reinstated"])
def test_dispute_funds_withdrawn_then_lost_or_reinstated_are_journal_entries_that_leave_the_invoice_paid(
    sim: NetSuiteSimulator, connector: NetSuiteConnector, outcome: str
) -> None:
    doc, invoice_id = posted_invoice(connector)
    payment = payment_doc(doc, invoice_id, 6400)
    connector.apply_payment(payment)
    dispute_ref = ref("dp")
    withdrawn = _dispute(payment.external_ref, "withdrawn", dispute_ref)
    connector.move_disputed_funds(withdrawn)
    connector.move_disputed_funds(withdrawn)

    [put] = sent(sim, "PUT", "journalEntry")
    label = f"Dispute {dispute_ref} on payment {payment.external_ref}: funds withdrawn"
    assert put.query == {"replace": "line"}
    assert body(put) == {
        "subsidiary": {"id": "1"},
        "currency": {"id": USD},
        "tranDate": date.today().isoformat(),
        **SEGMENTS,
        "memo": f"{label} ({withdrawn.external_ref})",
        "line": {
            "items": [
                {"account": {"id": "1190"}, "debit": Decimal("64.00"), "memo": label, **SEGMENTS},
                {"account": {"id": "1150"}, "credit": Decimal("64.00"), "memo": label, **SEGMENTS},
            ]
        },
    }
    assert (sim.account_balance("1150"), sim.account_balance("1190")) == (Decimal("0.00"), Decimal("64.00"))
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("0.00")  # billing keeps the invoice paid

    closed = _dispute(payment.external_ref, outcome, dispute_ref)
    operation = OPERATION_LOSE_DISPUTE if outcome == "lost" else "reinstate_disputed_funds"
    assert connector.find_document(operation, closed.external_ref) is None
    connector.move_disputed_funds(closed)

    assert sim.account_balance("1190") == Decimal("0.00")
    if outcome == "lost":
        assert (sim.account_balance("6810"), sim.account_balance("1150")) == (Decimal("64.00"), Decimal("0.00"))
    else:
        assert (sim.account_balance("6810"), sim.account_balance("1150")) == (Decimal("0"), Decimal("64.00"))
    assert sim.customer_balance(doc.customer_erp_id) == Decimal("0.00")
    assert len(sim.all("journalEntry")) == 2
    assert connector.find_document(OPERATION_WITHDRAW_DISPUTED_FUNDS, withdrawn.external_ref) is not None
    assert connector.find_document(operation, closed.external_ref) is not None


def test_a_dispute_account_netsuite_does_not_have_names_that_mapping(
    sim: NetSuiteSimulator, connector: NetSuiteConnector
) -> None:
    movement = DisputeMovementDocument(
        **{**_dispute("stripe-us:pi_1", "lost", ref("dp")).__dict__, "loss_account": "6999"}
    )
    with pytest.raises(BusinessRuleError) as refused:
        connector.move_disputed_funds(movement)
    assert (refused.value.code, refused.value.params["value"]) == ("unknown_dispute_loss_account", "6999")
    assert "Correct the dispute loss account mapping" in refused.value.finance_message
    assert sim.all("journalEntry") == []
