"""The Tryton connector against a real Tryton server: what lands in the ERP, that repeating a call
never duplicates it, and how each kind of failure is classified. Faults a healthy server does not
produce (throttling, a lost answer) come from a real HTTP proxy in front of the same server."""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from apps.connectors.base import (
    OPERATION_APPLY_PAYMENT,
    OPERATION_ENSURE_CUSTOMER,
    OPERATION_POST_CREDIT_MEMO,
    OPERATION_POST_INVOICE,
    OPERATION_REFUND_CREDIT_MEMO,
    OPERATION_VOID_INVOICE,
    OPERATION_WRITE_OFF,
    VOID_SUFFIX,
    WRITE_OFF_SUFFIX,
)
from apps.connectors.documents import (
    Address,
    CreditMemoDocument,
    CustomerDocument,
    InvoiceDocument,
    InvoiceLineDocument,
    PaymentDocument,
    RefundDocument,
    VoidDocument,
    WriteOffDocument,
)
from apps.connectors.tryton import TrytonConnector
from apps.core.errors import AuthenticationError, BusinessRuleError, TransientError, UncertainOutcome
from tests.fault_proxy import FaultProxy
from tests.tryton_plugin import connector_settings

pytestmark = pytest.mark.tryton


def ref(prefix: str) -> str:
    return f"test:{prefix}_{uuid.uuid4().hex[:12]}"


def customer(connector: TrytonConnector, name: str = "Globex Ltd") -> tuple[str, str]:
    external_ref = ref("cus")
    result = connector.ensure_customer(
        CustomerDocument(
            external_ref=external_ref,
            name=name,
            email="ap@globex.example",
            bill_to=Address(line1="1 Main St", city="Springfield", postal_code="12345", country="US"),
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


def payment_doc(
    invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int, journal: str = "Card"
) -> PaymentDocument:
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


def test_customer_is_created_once_and_renamed_in_place(tryton_connector: TrytonConnector, tryton: Any) -> None:
    external_ref, erp_id = customer(tryton_connector)
    again = tryton_connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="Globex Corporation"))

    assert again.erp_id == erp_id
    assert tryton.parties(external_ref) == [{"id": int(erp_id), "name": "Globex Corporation", "code": external_ref}]
    assert tryton_connector.find_document(OPERATION_ENSURE_CUSTOMER, external_ref).erp_id == erp_id  # type: ignore[union-attr]
    assert tryton_connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus")) is None


def test_a_customer_created_by_a_concurrent_posting_between_lookup_and_create_is_adopted(
    tryton_connector: TrytonConnector, tryton: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    external_ref, erp_id = customer(tryton_connector)  # the other posting, already done
    # Inject the race a single caller cannot produce on its own: this call's lookup ran before the
    # other posting's create committed (the real-server path of the same call is the test above).
    real_find = tryton_connector._find_party
    lookups: list[str] = []

    def find_after_the_race(code: str) -> Any:
        lookups.append(code)
        return None if len(lookups) == 1 else real_find(code)

    monkeypatch.setattr(tryton_connector, "_find_party", find_after_the_race)
    doc = CustomerDocument(external_ref=external_ref, name="Globex Ltd", bill_to=Address(country="US"))
    result = tryton_connector.ensure_customer(doc)
    assert result.erp_id == erp_id and len(lookups) == 2  # Tryton refused the duplicate; we adopted the party
    assert len(tryton.parties(external_ref)) == 1


def test_invoice_is_posted_with_billing_amounts_accounts_and_tax(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    assert tryton_connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None

    result = tryton_connector.post_invoice(doc)

    [invoice] = tryton.invoices(doc.external_ref)
    assert (invoice["state"], invoice["total_amount"], invoice["tax_amount"]) == (
        "posted",
        Decimal("64.00"),
        Decimal("2.50"),
    )
    assert result.erp_id == str(invoice["id"]) and result.erp_number == invoice["number"]
    assert invoice["number"].startswith(f"INV/{date.today().year}/")
    lines = sorted(
        (line["description"], line["amount"], line["account_code"]) for line in tryton.invoice_lines(invoice["id"])
    )
    assert lines == [("API calls", Decimal("12.50"), "4100"), ("Pro plan", Decimal("49.00"), "4000")]


def test_posting_the_same_invoice_again_returns_the_posted_one(tryton_connector: TrytonConnector, tryton: Any) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    first = tryton_connector.post_invoice(doc)
    second = tryton_connector.post_invoice(doc)

    assert second.erp_id == first.erp_id and second.erp_number == first.erp_number
    assert len(tryton.invoices(doc.external_ref)) == 1
    assert tryton_connector.find_document(OPERATION_POST_INVOICE, doc.external_ref).erp_id == first.erp_id  # type: ignore[union-attr]


def test_a_draft_left_by_a_failed_post_is_reused_not_duplicated(tryton_connector: TrytonConnector, tryton: Any) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    draft_id = tryton_connector._create_invoice(doc)  # what a post that failed after creating leaves behind
    assert tryton_connector.find_document(OPERATION_POST_INVOICE, doc.external_ref) is None  # a draft is not done

    result = tryton_connector.post_invoice(doc)

    assert result.erp_id == str(draft_id)
    assert [(i["id"], i["state"]) for i in tryton.invoices(doc.external_ref)] == [(draft_id, "posted")]


def test_a_stale_draft_with_another_total_is_replaced(tryton_connector: TrytonConnector, tryton: Any) -> None:
    customer_ref, customer_id = customer(tryton_connector)
    doc = invoice_doc(customer_ref, customer_id)
    stale = invoice_doc(
        customer_ref,
        customer_id,
        external_ref=doc.external_ref,
        lines=(InvoiceLineDocument("Pro plan", Decimal(1), 1000, 1000, "4000"),),
        subtotal_minor=1000,
        tax_minor=0,
        total_minor=1000,
    )
    tryton_connector._create_invoice(stale)

    tryton_connector.post_invoice(doc)

    [invoice] = tryton.invoices(doc.external_ref)
    assert (invoice["state"], invoice["total_amount"]) == ("posted", Decimal("64.00"))


def test_unmapped_revenue_account_is_refused_in_finance_words(tryton_connector: TrytonConnector, tryton: Any) -> None:
    doc = invoice_doc(*customer(tryton_connector), lines=(InvoiceLineDocument("Pro", Decimal(1), 6400, 6400, "4999"),))

    with pytest.raises(BusinessRuleError) as raised:
        tryton_connector.post_invoice(doc)

    assert raised.value.code == "unmapped_revenue_account"
    assert "'4999' does not exist" in raised.value.finance_message
    assert tryton.invoices(doc.external_ref) == []


def test_an_account_that_is_not_revenue_is_refused(tryton_connector: TrytonConnector) -> None:
    doc = invoice_doc(*customer(tryton_connector), lines=(InvoiceLineDocument("Pro", Decimal(1), 6400, 6400, "1150"),))
    with pytest.raises(BusinessRuleError) as raised:
        tryton_connector.post_invoice(doc)
    assert raised.value.code == "unmapped_revenue_account"
    assert "'1150' in Tryton is not a revenue account" in raised.value.finance_message


def test_unknown_tax_and_unknown_currency_are_refused(tryton_connector: TrytonConnector) -> None:
    customer_ref, customer_id = customer(tryton_connector)
    untaxed = (InvoiceLineDocument("Pro", Decimal(1), 6400, 6400, "4000", tax_code="GST7", tax_minor=448),)
    with pytest.raises(BusinessRuleError) as tax:
        tryton_connector.post_invoice(invoice_doc(customer_ref, customer_id, lines=untaxed))
    assert tax.value.code == "unknown_tax_code" and "GST7" in tax.value.finance_message

    with pytest.raises(BusinessRuleError) as currency:
        tryton_connector.post_invoice(invoice_doc(customer_ref, customer_id, currency="CHF"))
    assert currency.value.code == "unknown_currency" and "CHF" in currency.value.finance_message


def test_billing_total_that_tryton_cannot_reproduce_is_not_posted(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    # Billing says 10.00 tax on a 49.00 line; Tryton's VAT20 gives 9.80.
    lines = (InvoiceLineDocument("Pro", Decimal(1), 4900, 4900, "4000", tax_code="VAT20", tax_minor=1000),)
    doc = invoice_doc(*customer(tryton_connector), lines=lines, subtotal_minor=4900, tax_minor=1000, total_minor=5900)

    with pytest.raises(BusinessRuleError) as raised:
        tryton_connector.post_invoice(doc)

    assert raised.value.code == "amount_mismatch" and "58.80" in raised.value.finance_message
    assert [i["state"] for i in tryton.invoices(doc.external_ref)] == ["draft"]


def test_tryton_user_error_reaches_finance_in_trytons_words(tryton_connector: TrytonConnector, tryton: Any) -> None:
    # No fiscal year covers 1999: Tryton itself refuses to post.
    doc = invoice_doc(*customer(tryton_connector), invoice_date=date(1999, 6, 30), due_date=None)
    with pytest.raises(BusinessRuleError) as raised:
        tryton_connector.post_invoice(doc)
    assert raised.value.code == "erp_rejected"
    assert raised.value.finance_message.startswith("Tryton refused it: ")
    assert "UserError" in raised.value.technical_detail()
    assert [i["state"] for i in tryton.invoices(doc.external_ref)] != ["posted"]


def test_partial_payments_settle_the_invoice_and_are_applied_once(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    first = payment_doc(doc, invoice_id, 4000)
    second = payment_doc(doc, invoice_id, 2400, journal="Bank")
    assert tryton_connector.find_document(OPERATION_APPLY_PAYMENT, first.external_ref) is None

    applied = tryton_connector.apply_payment(first)
    assert tryton_connector.apply_payment(first).erp_id == applied.erp_id  # repeated: nothing new
    [partly] = tryton.invoices(doc.external_ref)
    assert (partly["state"], partly["amount_to_pay"]) == ("posted", Decimal("24.00"))

    tryton_connector.apply_payment(second)

    [paid] = tryton.invoices(doc.external_ref)
    assert (paid["state"], paid["amount_to_pay"]) == ("paid", Decimal("0"))
    descriptions = sorted(line["move."]["description"] for line in tryton.payment_lines(int(invoice_id)))
    assert descriptions == sorted([first.external_ref, second.external_ref])
    assert tryton_connector.find_document(OPERATION_APPLY_PAYMENT, first.external_ref).erp_id == applied.erp_id  # type: ignore[union-attr]


def void_doc(invoice: InvoiceDocument, invoice_erp_id: str) -> VoidDocument:
    return VoidDocument(
        external_ref=invoice.external_ref + VOID_SUFFIX,
        invoice_ref=invoice.external_ref,
        invoice_erp_id=invoice_erp_id,
        voided_on=date.today(),
        number=invoice.number,
    )


def write_off_doc(invoice: InvoiceDocument, invoice_erp_id: str, amount_minor: int, method: str = "Bad debt") -> Any:
    return WriteOffDocument(
        external_ref=invoice.external_ref + WRITE_OFF_SUFFIX,
        invoice_ref=invoice.external_ref,
        invoice_erp_id=invoice_erp_id,
        currency=invoice.currency,
        amount_minor=amount_minor,
        written_off_on=date.today(),
        write_off_method=method,
        number=invoice.number,
    )


def test_a_void_cancels_the_posted_invoice_with_one_credit_note_and_clears_the_receivable(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    customer_ref, customer_erp_id = customer(tryton_connector)
    doc = invoice_doc(customer_ref, customer_erp_id)
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    assert tryton.receivable(customer_ref) == Decimal("64.00")
    void = void_doc(doc, invoice_id)
    assert tryton_connector.find_document(OPERATION_VOID_INVOICE, void.external_ref) is None

    result = tryton_connector.void_invoice(void)
    again = tryton_connector.void_invoice(void)  # a retry: nothing new

    assert result.erp_id == again.erp_id == invoice_id
    [invoice] = tryton.invoices(doc.external_ref)
    assert invoice["state"] == "cancelled"
    # Tryton does not cancel a posted customer invoice outright: it credits it with refund.
    [credit_note] = tryton.credit_notes(customer_ref)
    assert Decimal(credit_note["total_amount"]) == Decimal("-64.00")
    assert tryton.receivable(customer_ref) == Decimal("0")
    assert tryton_connector.find_document(OPERATION_VOID_INVOICE, void.external_ref).erp_id == invoice_id  # type: ignore[union-attr]


def test_a_partly_paid_invoice_is_not_voided(tryton_connector: TrytonConnector, tryton: Any) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    tryton_connector.apply_payment(payment_doc(doc, invoice_id, 1000))
    with pytest.raises(BusinessRuleError) as refused:
        tryton_connector.void_invoice(void_doc(doc, invoice_id))
    assert refused.value.code == "void_after_payment"
    assert "already has payments" in refused.value.finance_message
    [invoice] = tryton.invoices(doc.external_ref)
    assert invoice["state"] == "posted"


def test_the_rest_of_a_partly_paid_invoice_is_written_off_once_to_bad_debts(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    customer_ref, customer_erp_id = customer(tryton_connector)
    doc = invoice_doc(customer_ref, customer_erp_id)
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    tryton_connector.apply_payment(payment_doc(doc, invoice_id, 1400))
    bad_debts_before = tryton.account_balance("6800")
    write_off = write_off_doc(doc, invoice_id, 5000)
    assert tryton_connector.find_document(OPERATION_WRITE_OFF, write_off.external_ref) is None

    result = tryton_connector.write_off(write_off)
    again = tryton_connector.write_off(write_off)

    assert again.erp_id == result.erp_id
    assert tryton_connector.find_document(OPERATION_WRITE_OFF, write_off.external_ref).erp_id == result.erp_id  # type: ignore[union-attr]
    [invoice] = tryton.invoices(doc.external_ref)
    assert (invoice["state"], invoice["amount_to_pay"]) == ("paid", Decimal("0"))
    assert tryton.account_balance("6800") - bad_debts_before == Decimal("50.00")
    assert tryton.receivable(customer_ref) == Decimal("0")


def test_a_write_off_of_another_amount_than_the_erp_has_open_is_refused(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    with pytest.raises(BusinessRuleError) as refused:
        tryton_connector.write_off(write_off_doc(doc, invoice_id, 7000))  # more than the 64.00 open
    assert refused.value.code == "write_off_amount_mismatch"
    with pytest.raises(LookupError):  # less: billing counts a payment the ERP does not hold yet
        tryton_connector.write_off(write_off_doc(doc, invoice_id, 1000))
    with pytest.raises(BusinessRuleError) as unknown:
        tryton_connector.write_off(write_off_doc(doc, invoice_id, 6400, method="No such method"))
    assert unknown.value.code == "unknown_write_off_method"
    [invoice] = tryton.invoices(doc.external_ref)
    assert (invoice["state"], invoice["amount_to_pay"]) == ("posted", Decimal("64.00"))


def credit_doc(invoice: InvoiceDocument, invoice_erp_id: str, *lines: InvoiceLineDocument) -> CreditMemoDocument:
    subtotal = sum(line.amount_minor for line in lines)
    tax = sum(line.tax_minor for line in lines)
    return CreditMemoDocument(
        external_ref=ref("cn"),
        number="INV-0042-CN-01",
        invoice_ref=invoice.external_ref,
        invoice_erp_id=invoice_erp_id,
        customer_ref=invoice.customer_ref,
        customer_erp_id=invoice.customer_erp_id,
        currency=invoice.currency,
        invoice_date=date.today(),
        lines=lines,
        subtotal_minor=subtotal,
        tax_minor=tax,
        total_minor=subtotal + tax,
    )


def test_a_credit_note_is_posted_once_as_negative_lines_and_lowers_the_receivable(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    credit = credit_doc(
        doc, invoice_id, InvoiceLineDocument("API calls", Decimal(1), 500, 500, "4100", tax_code="VAT20", tax_minor=100)
    )
    assert tryton_connector.find_document(OPERATION_POST_CREDIT_MEMO, credit.external_ref) is None

    first = tryton_connector.post_credit_memo(credit)
    again = tryton_connector.post_credit_memo(credit)  # a retry finds it posted

    assert first.erp_id == again.erp_id
    [note] = tryton.invoices(credit.external_ref)
    assert (note["state"], note["total_amount"], note["tax_amount"]) == ("posted", Decimal("-6.00"), Decimal("-1.00"))
    assert tryton.receivable(doc.customer_ref) == Decimal("58.00")  # 64.00 less 6.00
    [invoice] = tryton.invoices(doc.external_ref)
    assert (invoice["state"], invoice["amount_to_pay"]) == ("posted", Decimal("64.00"))  # partial: still open
    assert tryton_connector.find_document(OPERATION_POST_CREDIT_MEMO, credit.external_ref).erp_id == first.erp_id  # type: ignore[union-attr]


def test_a_refund_pays_the_credit_note_out_once_and_never_more_than_it_owes(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    tryton_connector.apply_payment(payment_doc(doc, invoice_id, 6400))
    credit = credit_doc(doc, invoice_id, InvoiceLineDocument("Pro plan", Decimal(1), 4900, 4900, "4000"))
    credit_id = tryton_connector.post_credit_memo(credit).erp_id
    assert tryton.receivable(doc.customer_ref) == Decimal("-49.00")  # the hub's customer is owed 49.00

    def refund(amount_minor: int, suffix: str) -> RefundDocument:
        return RefundDocument(
            external_ref=credit.external_ref + suffix,
            credit_memo_ref=credit.external_ref,
            credit_memo_erp_id=credit_id,
            currency="USD",
            amount_minor=amount_minor,
            refunded_on=date.today(),
            payment_journal="Card",
        )

    with pytest.raises(BusinessRuleError) as refused:
        tryton_connector.refund_credit_memo(refund(5000, ":too-much"))
    assert refused.value.code == "overrefund"
    paid_back = refund(4900, ":refund")
    first = tryton_connector.refund_credit_memo(paid_back)
    assert tryton_connector.refund_credit_memo(paid_back).erp_id == first.erp_id  # a retry: nothing new
    assert tryton_connector.find_document(OPERATION_REFUND_CREDIT_MEMO, paid_back.external_ref).erp_id == first.erp_id  # type: ignore[union-attr]
    [note] = tryton.invoices(credit.external_ref)
    assert note["state"] == "paid" and tryton.receivable(doc.customer_ref) == Decimal("0")


def test_a_payment_larger_than_what_is_due_is_refused(tryton_connector: TrytonConnector, tryton: Any) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    with pytest.raises(BusinessRuleError) as raised:
        tryton_connector.apply_payment(payment_doc(doc, invoice_id, 9900))
    assert raised.value.code == "overpayment" and "64.00 left to pay" in raised.value.finance_message
    assert tryton.payment_lines(int(invoice_id)) == []


def test_unknown_payment_method_is_refused(tryton_connector: TrytonConnector) -> None:
    doc = invoice_doc(*customer(tryton_connector))
    invoice_id = tryton_connector.post_invoice(doc).erp_id
    with pytest.raises(BusinessRuleError) as raised:
        tryton_connector.apply_payment(payment_doc(doc, invoice_id, 6400, journal="Crypto"))
    assert raised.value.code == "unknown_payment_journal" and "'Crypto'" in raised.value.finance_message


# -- failure classification ----------------------------------------------------------------


@pytest.fixture
def proxy(tryton_server: Any) -> Any:
    fault_proxy = FaultProxy(tryton_server.url)
    yield fault_proxy
    fault_proxy.stop()


def proxied(tryton_server: Any, proxy: FaultProxy, **overrides: Any) -> TrytonConnector:
    return TrytonConnector(connector_settings(tryton_server, url=proxy.url, **overrides))


def test_a_lost_answer_to_a_post_is_uncertain_and_the_lookup_finds_the_invoice(
    tryton_server: Any, proxy: FaultProxy, tryton: Any
) -> None:
    connector = proxied(tryton_server, proxy, timeout=2)
    doc = invoice_doc(*customer(connector))
    proxy.inject("model.account.invoice.post", hold_seconds=4)

    with pytest.raises(UncertainOutcome):
        connector.post_invoice(doc)

    found = connector.find_document(OPERATION_POST_INVOICE, doc.external_ref)
    [invoice] = tryton.invoices(doc.external_ref)
    assert invoice["state"] == "posted" and found is not None and found.erp_id == str(invoice["id"])


def test_a_lost_answer_to_a_read_is_only_transient(tryton_server: Any, proxy: FaultProxy) -> None:
    connector = proxied(tryton_server, proxy, timeout=2)
    customer(connector)  # signed in
    proxy.inject("model.party.party.search_read", hold_seconds=4)
    with pytest.raises(TransientError):
        connector.find_document(OPERATION_ENSURE_CUSTOMER, ref("cus"))


@pytest.mark.parametrize("status", [429, 503])
def test_throttling_and_lock_contention_are_transient_and_honour_retry_after(
    tryton_server: Any, proxy: FaultProxy, tryton: Any, status: int
) -> None:
    connector = proxied(tryton_server, proxy)
    doc = invoice_doc(*customer(connector))
    proxy.inject("model.account.invoice.post", status=status, retry_after="7")

    with pytest.raises(TransientError) as raised:
        connector.post_invoice(doc)

    assert raised.value.status == status and raised.value.retry_after == 7.0
    assert [i["state"] for i in tryton.invoices(doc.external_ref)] == ["draft"]
    assert connector.post_invoice(doc).erp_id == str(tryton.invoices(doc.external_ref)[0]["id"])  # next try posts it


def test_an_erp_that_is_down_is_transient(tryton_server: Any) -> None:
    from apps.connectors.tryton_server import free_port

    connector = TrytonConnector(connector_settings(tryton_server, url=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(TransientError, match="connection failed"):
        connector.ensure_customer(CustomerDocument(external_ref=ref("cus"), name="Nobody"))


def test_wrong_password_is_an_authentication_error(tryton_server: Any) -> None:
    connector = TrytonConnector(connector_settings(tryton_server, password="not-the-password"))
    with pytest.raises(AuthenticationError) as raised:
        connector.ensure_customer(CustomerDocument(external_ref=ref("cus"), name="Nobody"))
    assert "sign in" in raised.value.finance_message


def test_an_expired_session_signs_in_again_without_losing_the_call(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    external_ref, _ = customer(tryton_connector)
    # Tryton forgets the session (expiry, restart with another session store): the next call gets 401.
    tryton_connector.rpc._auth = tryton_connector.rpc._auth[:-6] + "AAAAAA"  # type: ignore[index]

    result = tryton_connector.ensure_customer(CustomerDocument(external_ref=external_ref, name="Globex Renamed"))

    assert tryton.parties(external_ref)[0]["name"] == "Globex Renamed" and result.detail["action"] == "updated"
