"""The month-end close report: a seeded October of two legal entities posting to two ERP connections
(Tryton for US01, with a NetSuite group ledger beside it; NetSuite for DE01), with every kind of
document, an amended invoice, documents re-dated into and out of the month, open cases of every age,
and reconciliation runs that left differences. Every figure of the report is checked against the
seeded amounts; each account attribution against the document the hub's own builders send; and the
page and the XLSX a controller downloads carry the same figures."""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection as db_connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from apps.console import hub_config
from apps.console.catalogue import AUDITORS, ENGINEERS, FINANCE
from apps.console.models import CaseStatus, ExceptionCase
from apps.ledger.models import (
    CreditMemo,
    CreditMemoLine,
    Customer,
    Dispute,
    Invoice,
    InvoiceLine,
    LegalEntity,
    Payment,
    PaymentApplication,
    Product,
)
from apps.posting import documents, redating
from apps.posting.models import Operation, Posting, PostingState, RedatedPosting, RedateReason, idempotency_key
from apps.reconciliation import close, export
from apps.reconciliation.close import CloseType
from apps.reconciliation.models import (
    Difference,
    DifferenceKind,
    DocumentType,
    HealAction,
    ReconciliationRun,
    RunStatus,
    Trigger,
)
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.console.conftest import as_user, user_in
from tests.erp_simulator import ErpSimulator
from tests.reconciliation.conftest import Books, invoice

SOURCE = "stripe-close"
OCTOBER = "2026-10"
IN_OCTOBER = datetime(2026, 10, 28, 9, 0, tzinfo=UTC)  # when the month's documents reached the ERPs

TRYTON_MAPPINGS = {
    "revenue_account": {"default": "4000", "prod_usage_api_calls": "4100"},
    "tax_code": {"default": "VAT20"},
    "payment_journal": {"default": "Card", "us_bank_account": "Bank"},
    "write_off_method": {"default": "Bad debt"},
    "dispute_account": {"default": "1190"},
    "dispute_loss_account": {"default": "6810"},
}
NETSUITE_MAPPINGS = {
    "item": {"default": "SUBS"},
    "tax_code": {"default": "VAT-DE"},
    "payment_journal": {"default": "Undeposited Funds"},
    "subsidiary": {"default": "1"},
    "currency": {"USD": "1", "EUR": "4"},
}


@dataclass
class Month:
    """What was seeded, and what each figure of the report must therefore be."""

    us: LegalEntity
    de: LegalEntity
    tryton: ERPConnection
    netsuite: ERPConnection
    postings: dict[str, Posting] = field(default_factory=dict)


class Seeder:
    def __init__(self) -> None:
        self.us = LegalEntity.objects.create(code="US01", name="Hub Demo Company", country="US", base_currency="USD")
        self.de = LegalEntity.objects.create(code="DE01", name="Hub Demo GmbH", country="DE", base_currency="EUR")
        self.tryton = ERPConnection.objects.create(name="tryton-local", kind="tryton", settings={})
        self.netsuite = ERPConnection.objects.create(name="netsuite-group", kind="netsuite", settings={})
        for connection, kinds in ((self.tryton, TRYTON_MAPPINGS), (self.netsuite, NETSUITE_MAPPINGS)):
            for kind, values in kinds.items():
                for key, value in values.items():
                    Mapping.objects.create(connection=connection, kind=kind, key=key, value=value)
        self.pro = Product.objects.create(source=SOURCE, source_id="prod_pro", kind="product", name="Pro plan")
        self.usage = Product.objects.create(
            source=SOURCE, source_id="prod_usage_api_calls", kind="product", name="API calls"
        )
        self.customers: dict[int, Customer] = {}
        self.month = Month(self.us, self.de, self.tryton, self.netsuite)

    def customer(self, entity: LegalEntity) -> Customer:
        if entity.pk not in self.customers:
            customer = Customer.objects.create(
                source=SOURCE, source_id=f"cus_{entity.code}", legal_entity=entity, name=f"Customer of {entity.code}"
            )
            self.customers[entity.pk] = customer
            for connection in (self.tryton, self.netsuite):
                self.post(Operation.ENSURE_CUSTOMER, connection, customer.source_id, customer=customer)
        return self.customers[entity.pk]

    def post(
        self,
        operation: str,
        connection: ERPConnection,
        source_id: str,
        *,
        name: str = "",
        state: str = PostingState.POSTED,
        revision: int = 1,
        posted_at: datetime = IN_OCTOBER,
        depends_on: Posting | None = None,
        **records: Any,
    ) -> Posting:
        posting = Posting.objects.create(
            idempotency_key=idempotency_key(connection.name, operation, SOURCE, source_id, revision),
            connection=connection,
            operation=operation,
            source=SOURCE,
            source_id=source_id,
            revision=revision,
            state=state,
            posted_at=posted_at if state == PostingState.POSTED else None,
            erp_id=f"erp-{operation}-{source_id}" if state == PostingState.POSTED else "",
            erp_number=f"N-{source_id}" if state == PostingState.POSTED else "",
            depends_on_key=depends_on.idempotency_key if depends_on else "",
            **records,
        )
        if name:
            self.month.postings[name] = posting
        return posting

    def invoice(
        self,
        source_id: str,
        entity: LegalEntity,
        on: date,
        lines: list[tuple[int, int, Product | None]],
        *,
        currency: str = "USD",
        status: str = Invoice.STATUS_OPEN,
        status_date: date | None = None,
        paid: int = 0,
        revision: int = 1,
    ) -> Invoice:
        subtotal, tax = sum(amount for amount, _, _ in lines), sum(t for _, t, _ in lines)
        invoice = Invoice.objects.create(
            source=SOURCE,
            source_id=source_id,
            number=source_id.upper(),
            customer=self.customer(entity),
            legal_entity=entity,
            currency=currency,
            subtotal_minor=subtotal,
            tax_minor=tax,
            total_minor=subtotal + tax,
            amount_paid_minor=paid,
            invoice_date=on,
            status=status,
            status_date=status_date,
            revision=revision,
        )
        for position, (amount, line_tax, product) in enumerate(lines, start=1):
            InvoiceLine.objects.create(
                invoice=invoice,
                position=position,
                source_line_id=f"{source_id}_l{position}",
                description=product.name if product else "Setup",
                product=product,
                price_id="",
                quantity=Decimal(1),
                unit_amount_minor=amount,
                amount_minor=amount,
                tax_minor=line_tax,
            )
        return invoice

    def payment(
        self, source_id: str, entity: LegalEntity, amount: int, method: str, on: datetime, *, on_account: int = 0
    ) -> Payment:
        return Payment.objects.create(
            source=SOURCE,
            source_id=source_id,
            customer=self.customer(entity),
            currency="EUR" if entity.code == "DE01" else "USD",
            amount_minor=amount,
            method=method,
            settled_at=on,
            on_account_minor=on_account,
        )


def seed() -> Month:
    s = Seeder()
    us, de, tryton, netsuite = s.us, s.de, s.tryton, s.netsuite
    p = s.post

    # US01 invoices in October, posted to Tryton.
    a = s.invoice("in_a", us, date(2026, 10, 2), [(10000, 2000, s.pro), (5000, 1000, s.usage)], paid=10000)
    b = s.invoice("in_b", us, date(2026, 10, 5), [(30000, 0, None)], status=Invoice.STATUS_PAID, paid=30000)
    c = s.invoice(
        "in_c",
        us,
        date(2026, 10, 6),
        [(12000, 0, s.pro)],
        status=Invoice.STATUS_UNCOLLECTIBLE,
        status_date=date(2026, 10, 26),
        paid=2000,
    )
    d = s.invoice(
        "in_d", us, date(2026, 10, 3), [(7000, 0, s.pro)], status=Invoice.STATUS_VOID, status_date=date(2026, 10, 20)
    )
    f = s.invoice("in_f", us, date(2026, 10, 7), [(9900, 0, s.pro)], revision=2)  # amended: 8800 → 9900
    post_a = p(Operation.POST_INVOICE, tryton, "in_a", invoice=a, name="invoice A")
    post_b = p(Operation.POST_INVOICE, tryton, "in_b", invoice=b, name="invoice B")
    p(Operation.POST_INVOICE, netsuite, "in_b", invoice=b, name="invoice B (group ledger)")  # fan-out
    post_c = p(Operation.POST_INVOICE, tryton, "in_c", invoice=c, name="invoice C")
    post_d = p(Operation.POST_INVOICE, tryton, "in_d", invoice=d, name="invoice D")
    p(Operation.VOID_INVOICE, tryton, "in_d:void", invoice=d, depends_on=post_d, name="void D")
    post_f1 = p(Operation.POST_INVOICE, tryton, "in_f", invoice=f, name="invoice F r1")
    p(Operation.VOID_INVOICE, tryton, "in_f:void", invoice=f, depends_on=post_f1, name="void F r1")
    p(Operation.POST_INVOICE, tryton, "in_f#r2", invoice=f, revision=2, name="invoice F r2")
    p(Operation.WRITE_OFF, tryton, "in_c:write-off", invoice=c, depends_on=post_c, name="write-off C")

    # Payments: card on B, bank on A, unapplied cash later applied to A from the credit.
    p1 = s.payment("py_1", us, 30000, "card", datetime(2026, 10, 10, 15, tzinfo=UTC))
    p2 = s.payment("py_2", us, 8000, "us_bank_account", datetime(2026, 10, 31, 23, 30, tzinfo=UTC))
    p3 = s.payment("py_3", us, 5000, "card", datetime(2026, 10, 15, tzinfo=UTC), on_account=5000)
    app1 = PaymentApplication.objects.create(payment=p1, invoice_source_id="in_b", invoice=b, amount_minor=30000)
    app2 = PaymentApplication.objects.create(payment=p2, invoice_source_id="in_a", invoice=a, amount_minor=8000)
    app3 = PaymentApplication.objects.create(
        payment=p3, invoice_source_id="in_a", invoice=a, amount_minor=2000, from_credit=True
    )
    p(Operation.APPLY_PAYMENT, tryton, "py_1:in_b", payment_application=app1, depends_on=post_b, name="payment 1")
    p(Operation.APPLY_PAYMENT, tryton, "py_2:in_a", payment_application=app2, depends_on=post_a, name="payment 2")
    p(Operation.RECEIVE_ON_ACCOUNT, tryton, "py_3:on-account", payment=p3, name="credit received 3")
    p(Operation.APPLY_CREDIT, tryton, "py_3:in_a", payment_application=app3, depends_on=post_a, name="credit applied 3")

    # A credit note on A's usage line (2500 + 500 tax), refunded to the card.
    memo = CreditMemo.objects.create(
        source=SOURCE,
        source_id="cn_1",
        number="CN-1",
        customer=a.customer,
        invoice_source_id="in_a",
        invoice=a,
        currency="USD",
        subtotal_minor=2500,
        tax_minor=500,
        total_minor=3000,
        memo_date=date(2026, 10, 12),
        status_date=date(2026, 10, 13),
        refunded_minor=3000,
    )
    CreditMemoLine.objects.create(
        credit_memo=memo,
        position=1,
        description="API calls",
        quantity=Decimal(1),
        unit_amount_minor=2500,
        amount_minor=2500,
        tax_minor=500,
        invoice_line_source_id="in_a_l2",
    )
    post_memo = p(Operation.POST_CREDIT_MEMO, tryton, "cn_1", credit_memo=memo, depends_on=post_a, name="credit memo")
    p(Operation.REFUND_CREDIT_MEMO, tryton, "cn_1:refund", credit_memo=memo, depends_on=post_memo, name="refund")

    # Disputes: one lost, one won, both opened in October.
    lost = Dispute.objects.create(
        source=SOURCE,
        source_id="dp_lost",
        legal_entity=us,
        payment_source_id="py_1",
        payment=p1,
        currency="USD",
        amount_minor=6000,
        status=Dispute.STATUS_LOST,
        opened_on=date(2026, 10, 12),
        closed_on=date(2026, 10, 25),
    )
    won = Dispute.objects.create(
        source=SOURCE,
        source_id="dp_won",
        legal_entity=us,
        payment_source_id="py_1",
        payment=p1,
        currency="USD",
        amount_minor=1500,
        status=Dispute.STATUS_WON,
        opened_on=date(2026, 10, 5),
        closed_on=date(2026, 10, 18),
    )
    p(Operation.WITHDRAW_DISPUTED_FUNDS, tryton, "dp_lost:withdrawn", dispute=lost, name="withdrawn lost")
    p(Operation.LOSE_DISPUTE, tryton, "dp_lost:lost", dispute=lost, name="lost")
    p(Operation.WITHDRAW_DISPUTED_FUNDS, tryton, "dp_won:withdrawn", dispute=won, name="withdrawn won")
    p(Operation.REINSTATE_DISPUTED_FUNDS, tryton, "dp_won:reinstated", dispute=won, name="reinstated")

    # Re-dated by the closed-period policy: September's G into October, October's H out to November.
    g = s.invoice("in_g", us, date(2026, 9, 28), [(4400, 0, s.pro)])
    post_g = p(Operation.POST_INVOICE, tryton, "in_g", invoice=g, name="invoice G (re-dated in)")
    RedatedPosting.objects.create(
        posting=post_g,
        original_date=date(2026, 9, 28),
        posted_date=date(2026, 10, 1),
        reason=RedateReason.CLOSED_PERIOD,
        erp_message="The period September 2026 is closed.",
    )
    h = s.invoice("in_h", us, date(2026, 10, 31), [(1234, 0, s.pro)])
    post_h = p(
        Operation.POST_INVOICE,
        tryton,
        "in_h",
        invoice=h,
        posted_at=datetime(2026, 11, 3, tzinfo=UTC),
        name="invoice H (re-dated out)",
    )
    RedatedPosting.objects.create(
        posting=post_h,
        original_date=date(2026, 10, 31),
        posted_date=date(2026, 11, 2),
        reason=RedateReason.CLOSED_PERIOD,
        erp_message="The period October 2026 is closed.",
    )

    # Not posted yet: an invoice parked for finance, a payment still queued.
    i = s.invoice("in_i", us, date(2026, 10, 22), [(2500, 0, s.pro)])
    p(Operation.POST_INVOICE, tryton, "in_i", invoice=i, state=PostingState.PARKED, name="invoice I (parked)")
    p4 = s.payment("py_4", us, 1800, "card", datetime(2026, 10, 29, tzinfo=UTC))
    app4 = PaymentApplication.objects.create(payment=p4, invoice_source_id="in_c", invoice=c, amount_minor=1800)
    p(Operation.APPLY_PAYMENT, tryton, "py_4:in_c", payment_application=app4, state=PostingState.QUEUED)
    # Skipped by a person: never posted, never counted.
    skipped = s.invoice("in_skipped", us, date(2026, 10, 9), [(99900, 0, s.pro)])
    p(Operation.POST_INVOICE, tryton, "in_skipped", invoice=skipped, state=PostingState.SKIPPED)

    # Other months: not October's.
    j = s.invoice("in_j", us, date(2026, 9, 15), [(5555, 0, s.pro)])
    p(Operation.POST_INVOICE, tryton, "in_j", invoice=j)
    k = s.invoice("in_k", us, date(2026, 11, 3), [(6666, 0, s.pro)])
    p(Operation.POST_INVOICE, tryton, "in_k", invoice=k)

    # DE01, in euros, on NetSuite: its own report, never US01's.
    de_invoice = s.invoice("in_de", de, date(2026, 10, 8), [(50000, 9500, s.pro)], currency="EUR", paid=59500)
    post_de = p(Operation.POST_INVOICE, netsuite, "in_de", invoice=de_invoice, name="invoice DE")
    de_payment = s.payment("py_de", de, 59500, "card", datetime(2026, 10, 9, tzinfo=UTC))
    de_app = PaymentApplication.objects.create(
        payment=de_payment, invoice_source_id="in_de", invoice=de_invoice, amount_minor=59500
    )
    p(
        Operation.APPLY_PAYMENT,
        netsuite,
        "py_de:in_de",
        payment_application=de_app,
        depends_on=post_de,
        name="payment DE",
    )
    return s.month


# -- the expected figures, from the seed above -----------------------------------------------------

US_TRYTON_POSTED = {
    # document type: (documents, amount in cents, documents without amount)
    CloseType.INVOICE: (7, 18000 + 30000 + 12000 + 7000 + 9900 + 4400, 1),  # A B C D F(r2) G, F(r1) unknown
    CloseType.INVOICE_VOID: (2, 7000, 1),  # D; F(r1) unknown
    CloseType.CREDIT_MEMO: (1, 3000, 0),
    CloseType.PAYMENT: (2, 30000 + 8000, 0),
    CloseType.REFUND: (1, 3000, 0),
    CloseType.WRITE_OFF: (1, 10000, 0),
    CloseType.CREDIT_RECEIVED: (1, 5000, 0),
    CloseType.CREDIT_APPLIED: (1, 2000, 0),
    CloseType.DISPUTE_WITHDRAWN: (2, 6000 + 1500, 0),
    CloseType.DISPUTE_REINSTATED: (1, 1500, 0),
    CloseType.DISPUTE_LOST: (1, 6000, 0),
}
US_TRYTON_ACCOUNTS = {
    # (mapping kind, account, document type): (documents, amount)
    ("revenue_account", "4000", CloseType.INVOICE): (6, 10000 + 30000 + 12000 + 7000 + 9900 + 4400),
    ("revenue_account", "4100", CloseType.INVOICE): (1, 5000),
    ("tax_code", "VAT20", CloseType.INVOICE): (1, 3000),
    ("revenue_account", "4000", CloseType.INVOICE_VOID): (1, 7000),
    ("revenue_account", "4100", CloseType.CREDIT_MEMO): (1, 2500),
    ("tax_code", "VAT20", CloseType.CREDIT_MEMO): (1, 500),
    ("payment_journal", "Card", CloseType.PAYMENT): (1, 30000),
    ("payment_journal", "Bank", CloseType.PAYMENT): (1, 8000),
    ("payment_journal", "Card", CloseType.REFUND): (1, 3000),
    ("payment_journal", "Card", CloseType.CREDIT_RECEIVED): (1, 5000),
    ("receivable", "Receivable", CloseType.CREDIT_APPLIED): (1, 2000),
    ("write_off_method", "Bad debt", CloseType.WRITE_OFF): (1, 10000),
    ("dispute_account", "1190", CloseType.DISPUTE_WITHDRAWN): (2, 7500),
    ("dispute_account", "1190", CloseType.DISPUTE_REINSTATED): (1, 1500),
    ("dispute_loss_account", "6810", CloseType.DISPUTE_LOST): (1, 6000),
}


def _posted(report: close.CloseReport, connection: str, currency: str) -> dict[str, tuple[int, int, int]]:
    return {
        t.document_type: (t.count, t.amount_minor, t.amount_unknown)
        for t in report.posted
        if (t.connection, t.currency) == (connection, currency)
    }


def _accounts(report: close.CloseReport, connection: str) -> dict[tuple[str, str, str], tuple[int, int]]:
    return {
        (a.kind, a.account, a.document_type): (a.count, a.amount_minor)
        for a in report.accounts
        if a.connection == connection
    }


@pytest.fixture
def month(db: None) -> Month:
    return seed()


def test_posted_totals_by_type_and_account_equal_the_seeded_postings(month: Month) -> None:
    report = close.build(month.us, OCTOBER)

    assert _posted(report, "tryton-local", "USD") == US_TRYTON_POSTED
    # The NetSuite group ledger got invoice B only; it books revenue on the item, not an account.
    assert _posted(report, "netsuite-group", "USD") == {CloseType.INVOICE: (1, 30000, 0)}
    assert _accounts(report, "netsuite-group") == {("item", "SUBS", CloseType.INVOICE): (1, 30000)}
    assert _accounts(report, "tryton-local") == US_TRYTON_ACCOUNTS
    # Per document type, the accounts add up to the documents' amounts: nothing lost, nothing twice.
    by_type: dict[tuple[str, str, str], int] = defaultdict(int)
    for account in report.accounts:
        by_type[(account.connection, account.currency, account.document_type)] += account.amount_minor
    assert by_type == {(t.connection, t.currency, t.document_type): t.amount_minor for t in report.posted}
    # DE01's euros are in DE01's report only.
    assert {t.currency for t in report.posted} == {"USD"}
    de_report = close.build(month.de, OCTOBER)
    assert _posted(de_report, "netsuite-group", "EUR") == {
        CloseType.INVOICE: (1, 59500, 0),
        CloseType.PAYMENT: (1, 59500, 0),
    }
    assert _accounts(de_report, "netsuite-group") == {
        ("item", "SUBS", CloseType.INVOICE): (1, 50000),
        ("tax_code", "VAT-DE", CloseType.INVOICE): (1, 9500),
        ("payment_journal", "Undeposited Funds", CloseType.PAYMENT): (1, 59500),
    }


def test_a_posting_counts_in_the_month_of_its_erp_date(month: Month) -> None:
    report = close.build(month.us, OCTOBER)
    counted = {t.document_type: t.count for t in report.posted if t.connection == "tryton-local"}
    # A payment settled 31 October 23:30 UTC is October's; September's J and November's K are not;
    # G (billing's 28 September) is October's, H (billing's 31 October) is November's.
    assert counted[CloseType.INVOICE] == 7 and counted[CloseType.PAYMENT] == 2
    november = close.build(month.us, "2026-11")
    assert _posted(november, "tryton-local", "USD") == {CloseType.INVOICE: (2, 1234 + 6666, 0)}
    september = close.build(month.us, "2026-09")
    assert _posted(september, "tryton-local", "USD") == {CloseType.INVOICE: (1, 5555, 0)}

    # Dated in October, not posted yet: the parked invoice and the queued payment; the skipped one never.
    assert {(t.document_type, t.state): (t.count, t.amount_minor) for t in report.pending} == {
        (CloseType.INVOICE, PostingState.PARKED): (1, 2500),
        (CloseType.PAYMENT, PostingState.QUEUED): (1, 1800),
    }


def test_every_re_dated_document_is_listed_in_both_months(month: Month) -> None:
    october = close.build(month.us, OCTOBER)
    rows = {r.reference: r for r in october.redated}
    assert set(rows) == {f"{SOURCE}:in_g", f"{SOURCE}:in_h"}
    g, h = rows[f"{SOURCE}:in_g"], rows[f"{SOURCE}:in_h"]
    assert (g.original_date, g.posted_date, g.amount_minor, g.state) == (
        date(2026, 9, 28),
        date(2026, 10, 1),
        4400,
        PostingState.POSTED,
    )
    assert g.direction(october.month_start, october.month_end) == "into this month"
    assert h.direction(october.month_start, october.month_end) == "out to 2026-11"
    assert (h.amount_minor, h.erp_number, h.erp_message) == (1234, "N-in_h", "The period October 2026 is closed.")
    assert [r.reference for r in close.build(month.us, "2026-09").redated] == [f"{SOURCE}:in_g"]
    assert [r.reference for r in close.build(month.us, "2026-11").redated] == [f"{SOURCE}:in_h"]
    assert close.build(month.de, OCTOBER).redated == []


# The operation → (the posting's record, the builder the executor sends the ERP) for the documents
# that carry accounts.
BUILDERS = {
    Operation.POST_INVOICE: ("invoice", documents.invoice_document),
    Operation.POST_CREDIT_MEMO: ("credit_memo", documents.credit_memo_document),
    Operation.APPLY_PAYMENT: ("payment_application", documents.payment_document),
    Operation.REFUND_CREDIT_MEMO: ("credit_memo", documents.refund_document),
    Operation.WRITE_OFF: ("invoice", documents.write_off_document),
    Operation.RECEIVE_ON_ACCOUNT: ("payment", documents.on_account_document),
    Operation.WITHDRAW_DISPUTED_FUNDS: ("dispute", documents.dispute_document),
    Operation.REINSTATE_DISPUTED_FUNDS: ("dispute", documents.dispute_document),
    Operation.LOSE_DISPUTE: ("dispute", documents.dispute_document),
}


def _document_accounts(operation: str, document: Any) -> list[tuple[str, int]]:
    if operation in (Operation.POST_INVOICE, Operation.POST_CREDIT_MEMO):
        found = []
        for line in document.lines:
            found.append((line.revenue_account or line.item, line.amount_minor))
            if line.tax_minor:
                found.append((line.tax_code, line.tax_minor))
        return found
    if operation == Operation.WRITE_OFF:
        return [(document.write_off_method, document.amount_minor)]
    if operation == Operation.WITHDRAW_DISPUTED_FUNDS or operation == Operation.REINSTATE_DISPUTED_FUNDS:
        return [(document.dispute_account, document.amount_minor)]
    if operation == Operation.LOSE_DISPUTE:
        return [(document.loss_account, document.amount_minor)]
    return [(document.payment_journal, document.amount_minor)]


def test_dates_and_accounts_are_those_of_the_documents_the_hub_sends(month: Month) -> None:
    """The report re-derives dates and accounts set-based; the executor's own document builders are
    the truth it must agree with, document by document."""
    report = close.build(month.us, OCTOBER)
    expected: dict[tuple[str, str, str], int] = defaultdict(int)
    checked = 0
    postings = Posting.objects.filter(
        close.of_entity(month.us), state=PostingState.POSTED, operation__in=list(BUILDERS)
    )
    for posting in postings.select_related("redated", "invoice"):
        record_field, build = BUILDERS[posting.operation]
        if posting.operation == Operation.POST_INVOICE and posting.revision != posting.invoice.revision:  # type: ignore[union-attr]
            continue  # the superseded version: the builders only build the newest one
        document = build(posting, getattr(posting, record_field))
        billing_date = getattr(document, redating.DATE_FIELDS[posting.operation])
        redated = getattr(posting, "redated", None)
        assert close.erp_date(posting) == (redated.posted_date if redated else billing_date), posting
        if not (date(2026, 10, 1) <= close.erp_date(posting) <= date(2026, 10, 31)):
            continue
        type_ = CloseType(close.TYPE_OF[posting.operation])
        for account, amount in _document_accounts(posting.operation, document):
            expected[(posting.connection.name, account, type_)] += amount
        checked += 1
    assert checked >= 14
    found: dict[tuple[str, str, str], int] = defaultdict(int)
    for a in report.accounts:
        if a.document_type in (CloseType.INVOICE_VOID, CloseType.CREDIT_APPLIED):
            continue  # voids and credit transfers carry no account in the document
        found[(a.connection, a.account, a.document_type)] += a.amount_minor
    assert dict(found) == dict(expected)


def test_a_mapping_changed_since_posting_is_flagged_on_its_rows(month: Month) -> None:
    """Finance moves bank payments to a new journal through the configuration file (audited): the
    October payment already posted to "Bank" now shows under "Bank 2", flagged with the day."""
    before = close.build(month.us, OCTOBER)
    assert all(a.mapping_changed_at is None for a in before.accounts)
    wanted: dict[str, dict[str, str]] = defaultdict(dict)
    for m in Mapping.objects.filter(connection=month.tryton):
        wanted[m.kind][m.key] = m.value
    wanted["payment_journal"]["us_bank_account"] = "Bank 2"
    hub_config.apply({"mappings": {"tryton-local": dict(wanted)}})

    after = close.build(month.us, OCTOBER)
    flagged = {(a.kind, a.account, a.document_type) for a in after.accounts if a.mapping_changed_at}
    assert flagged == {
        ("payment_journal", "Bank 2", CloseType.PAYMENT),
        ("payment_journal", "Card", CloseType.PAYMENT),
        ("payment_journal", "Card", CloseType.REFUND),
        ("payment_journal", "Card", CloseType.CREDIT_RECEIVED),
    }  # every row resolved through the connection's payment journals
    assert _accounts(after, "tryton-local")[("payment_journal", "Bank 2", CloseType.PAYMENT)] == (1, 8000)
    assert ("revenue_account", "4000", CloseType.INVOICE) not in flagged


def _case(entity: LegalEntity, connection: ERPConnection | None, age: timedelta, kind: str, n: int) -> ExceptionCase:
    return ExceptionCase.objects.create(
        connection=connection,
        root_kind=ExceptionCase.ROOT_INVOICE,
        source=SOURCE,
        source_id=f"case_{entity.code}_{n}",
        legal_entity=entity,
        category="business",
        kind=kind,
        code="x",
        message="m",
        owner_group=FINANCE,
        opened_at=timezone.now() - age,
    )


def _run(month: Month, start: date, end: date, differences: list[tuple[str, int, str]], **extra: Any) -> Any:
    run = ReconciliationRun.objects.create(
        connection=extra.pop("connection", month.tryton),
        legal_entity=extra.pop("legal_entity", month.us),
        currency="USD",
        period_start=start,
        period_end=end,
        trigger=Trigger.SCHEDULE,
        requested_by="system",
        status=RunStatus.COMPLETED,
        finished_at=extra.pop("finished_at"),
        difference_count=len(differences),
    )
    for n, (kind, amount, heal) in enumerate(differences):
        Difference.objects.create(
            run=run,
            kind=kind,
            document_type=DocumentType.INVOICE,
            source=SOURCE,
            source_id=f"in_diff_{run.pk}_{n}",
            external_ref=f"{SOURCE}:in_diff_{run.pk}_{n}",
            currency="USD",
            ledger_amount_minor=amount if kind != DifferenceKind.MISSING_IN_LEDGER else None,
            billing_amount_minor=amount,
            erp_amount_minor=None if kind == DifferenceKind.MISSING_IN_ERP else amount + 100,
            description="d",
            heal_action=heal,
        )
    return run


def seed_cases_and_runs(month: Month) -> dict[str, Any]:
    now = timezone.now()
    for n, (age, kind) in enumerate(
        [
            (timedelta(hours=2), "Missing mapping"),
            (timedelta(hours=30), "Missing mapping"),
            (timedelta(days=3), "Closed period"),
            (timedelta(days=10), "Closed period"),
            (timedelta(days=45), "Amount mismatch"),
        ]
    ):
        _case(month.us, month.tryton, age, kind, n)
    resolved = _case(month.us, month.tryton, timedelta(days=50), "Amount mismatch", 99)
    ExceptionCase.objects.filter(pk=resolved.pk).update(status=CaseStatus.RESOLVED, resolved_at=now)
    _case(month.de, month.netsuite, timedelta(days=2), "Closed period", 7)

    october = (date(2026, 10, 1), date(2026, 10, 31))
    # An earlier run of October's scope: replaced by the later one, its differences are not left.
    _run(month, *october, [(DifferenceKind.AMOUNT_MISMATCH, 999, "")], finished_at=now - timedelta(days=5))
    latest = _run(
        month,
        *october,
        [
            (DifferenceKind.MISSING_IN_ERP, 4550, HealAction.REPLANNED),
            (DifferenceKind.MISSING_IN_ERP, 1000, HealAction.IN_PROGRESS),
            (DifferenceKind.AMOUNT_MISMATCH, 2000, HealAction.CASE_OPENED),
        ],
        finished_at=now - timedelta(days=1),
    )
    september = _run(
        month,
        date(2026, 9, 1),
        date(2026, 9, 30),
        [(DifferenceKind.DUPLICATE_IN_ERP, 700, HealAction.CASE_OPENED), (DifferenceKind.STATUS_MISMATCH, 300, "")],
        finished_at=now - timedelta(days=20),
    )
    _run(  # DE01's: not US01's
        month,
        *october,
        [(DifferenceKind.MISSING_IN_ERP, 12345, HealAction.REPLANNED)],
        connection=month.netsuite,
        legal_entity=month.de,
        finished_at=now - timedelta(days=1),
    )
    return {"october": latest, "september": september, "now": now}


def test_open_cases_aging_differences_left_and_backlog(month: Month) -> None:
    seeded = seed_cases_and_runs(month)
    report = close.build(month.us, OCTOBER, now=seeded["now"])

    assert report.case_count == 5
    assert report.case_bucket_totals == {"under_1d": 1, "1d_7d": 2, "7d_30d": 1, "over_30d": 1}
    assert {(r.kind, tuple(r.buckets.values())) for r in report.case_aging} == {
        ("Missing mapping", (1, 1, 0, 0)),
        ("Closed period", (0, 1, 1, 0)),
        ("Amount mismatch", (0, 0, 0, 1)),
    }
    assert [c.source_id for c in report.cases] == [f"case_US01_{n}" for n in (4, 3, 2, 1, 0)]  # oldest first

    assert report.difference_count == 3
    assert {(d.connection, d.kind): (d.count, d.amount_minor) for d in report.differences} == {
        ("tryton-local", DifferenceKind.MISSING_IN_ERP): (2, 4550 + 1000),
        ("tryton-local", DifferenceKind.AMOUNT_MISMATCH): (1, 2000),
    }
    coverage = {(c.connection, c.currency): c.run for c in report.coverage}
    assert coverage == {("tryton-local", "USD"): seeded["october"], ("netsuite-group", "USD"): None}

    assert report.backlog_count == 5
    assert [(s.run, s.total, s.healing, s.held_by_case, s.decided, s.not_acted_on) for s in report.backlog] == [
        (seeded["september"], 2, 0, 1, 0, 1),
        (seeded["october"], 3, 2, 1, 0, 0),
    ]


def _cells(sheet: Any) -> list[tuple[Any, ...]]:
    return list(sheet.iter_rows(min_row=2, values_only=True))


def _dec(value: Any) -> Decimal:
    """A number read back from the workbook (openpyxl reads numbers as int or float)."""
    return Decimal(str(value))


def test_the_page_renders_for_finance_and_the_xlsx_holds_the_same_figures(month: Month) -> None:
    seeded = seed_cases_and_runs(month)
    report = close.build(month.us, OCTOBER)
    finance = as_user(user_in(FINANCE, "fiona.finance"))

    index = finance.get(reverse("admin:index")).content.decode()
    assert f'id="link-close-report" href="{reverse("admin:reconciliation_close")}"' in index
    run_page = finance.get(reverse("admin:reconciliation_reconciliationrun_change", args=[seeded["october"].pk]))
    assert f"{reverse('admin:reconciliation_close')}?legal_entity=US01&amp;month=2026-10" in run_page.content.decode()

    form = finance.get(reverse("admin:reconciliation_close"))
    last_month = f"{date.today().replace(day=1) - timedelta(days=1):%Y-%m}"
    assert form.status_code == 200 and f'value="{last_month}"' in form.content.decode()  # last month by default
    response = finance.get(reverse("admin:reconciliation_close"), {"legal_entity": "US01", "month": OCTOBER})
    assert response.status_code == 200
    page = response.content.decode()
    assert "US01 Hub Demo Company · 2026-10" in page
    assert (
        '<tr data-connection="tryton-local" data-currency="USD" data-type="invoice">\n'
        "          <td>tryton-local</td><td>USD</td><td>Invoices</td>\n"
        '          <td class="num">7</td><td class="num">813.00</td><td class="num">1</td>'
    ) in page
    assert '<td class="num">2</td><td class="num">75.00</td>' in page  # disputes withdrawn: 2, 75.00
    assert 'data-kind="revenue_account" data-account="4100" data-type="credit_memo"' in page
    assert "out to 2026-11" in page and "into this month" in page
    assert '<h2 id="cases-title">Open exception cases (5)</h2>' in page
    assert '<h2 id="differences-title">Reconciliation differences left in the month (3)</h2>' in page
    assert "No completed run covers the whole month" in page  # the NetSuite group ledger
    assert '<h2 id="backlog-title">Reconciliation backlog, all periods (5)</h2>' in page

    download = finance.get(reverse("admin:reconciliation_close_xlsx"), {"legal_entity": "US01", "month": OCTOBER})
    assert download["Content-Disposition"] == 'attachment; filename="close-US01-2026-10.xlsx"'
    book = load_workbook(io.BytesIO(download.content))
    assert book.sheetnames == [
        "Summary",
        "Posted by type",
        "Posted by account",
        "Not posted yet",
        "Case aging",
        "Open cases",
        "Differences left",
        "Reconciled",
        "Reconciliation backlog",
        "Re-dated",
    ]
    posted = {(r[0], r[1], r[2]): (r[3], _dec(r[4]), r[5]) for r in _cells(book["Posted by type"])}
    assert posted == {
        (t.connection, t.currency, t.label): (t.count, Decimal(t.amount_minor) / 100, t.amount_unknown)
        for t in report.posted
    }
    assert posted[("tryton-local", "USD", "Invoices")] == (7, Decimal("813"), 1)
    accounts = {(r[0], r[2], r[3], r[4]): (r[5], _dec(r[6])) for r in _cells(book["Posted by account"])}
    assert accounts == {
        (a.connection, a.kind_label, a.account, a.label): (a.count, Decimal(a.amount_minor) / 100)
        for a in report.accounts
    }
    assert accounts[("tryton-local", "Write-off method (bad debt account)", "Bad debt", "Write-offs (bad debt)")] == (
        1,
        Decimal(100),
    )
    assert _cells(book["Case aging"])[-1] == ("All", None, 1, 2, 1, 1, 5)  # under 1 day … over 30 days, total
    assert len(_cells(book["Open cases"])) == 5
    differences = _cells(book["Differences left"])
    assert sorted(_dec(r[7]) for r in differences) == [Decimal(10), Decimal(20), Decimal("45.5")]
    assert {r[0]: r[5:] for r in _cells(book["Reconciliation backlog"])} == {
        seeded["september"].pk: (2, 0, 1, 0, 1),
        seeded["october"].pk: (3, 2, 1, 0, 0),
    }
    redated = {r[3]: (r[6], r[7], r[8]) for r in _cells(book["Re-dated"])}
    assert redated == {
        f"{SOURCE}:in_g": (datetime(2026, 9, 28), datetime(2026, 10, 1), "into this month"),
        f"{SOURCE}:in_h": (datetime(2026, 10, 31), datetime(2026, 11, 2), "out to 2026-11"),
    }
    assert export.close_as_xlsx(report)  # the service's own export, as the view serves it


def test_every_role_reads_the_report_and_nobody_else(month: Month) -> None:
    url = reverse("admin:reconciliation_close")
    query = {"legal_entity": "US01", "month": OCTOBER}
    for role, name in ((FINANCE, "fiona"), (ENGINEERS, "eve"), (AUDITORS, "alice")):
        client = as_user(user_in(role, name))
        assert client.get(url, query).status_code == 200, role
        assert client.get(reverse("admin:reconciliation_close_xlsx"), query).status_code == 200, role
    stranger = get_user_model().objects.create_user("sam", "sam@example.com", "pw", is_staff=True)
    assert as_user(stranger).get(url, query).status_code == 403
    assert Client().get(url, query).status_code == 302  # to the login page


def test_a_month_that_is_not_one_is_refused_with_a_reason(month: Month) -> None:
    finance = as_user(user_in(FINANCE, "fiona"))
    page = finance.get(reverse("admin:reconciliation_close"), {"legal_entity": "US01", "month": "2026-13"})
    assert page.status_code == 200 and "is not a month (YYYY-MM)" in page.content.decode()
    assert "report-title" not in page.content.decode()
    with pytest.raises(ValueError):
        close.month_bounds("October")


def test_through_the_pipeline_the_report_equals_what_the_erp_booked(sim_books: Books, erp_sim: ErpSimulator) -> None:
    """Billing's webhooks posted by the executor into the Tryton contract simulator: this month's
    report counts exactly the invoices and payments the ERP's books hold, with the same revenue per
    account."""
    plan = se.line(10000, tax=2000)
    usage = se.line(5000, tax=1000, description="API calls", product="prod_usage_api_calls", price="price_api")
    first = se.invoice(se.uid("cus"), [plan, usage])
    second = invoice(30000)
    sim_books.webhook("invoice.finalized", first)
    sim_books.webhook("invoice.finalized", second)
    sim_books.webhook("invoice.paid", se.paid(first))
    sim_books.drain()
    assert not Posting.objects.filter(source=sim_books.name).exclude(state=PostingState.POSTED).exists()

    report = close.build(sim_books.legal_entity, f"{date.today():%Y-%m}")
    books = erp_sim.snapshot()
    references = {sim_books.ref(first["id"]), sim_books.ref(second["id"])}
    held = [i for i in books["invoices"].values() if i["reference"] in references and not i["deleted"]]
    assert len(held) == 2
    posted = _posted(report, "tryton-local", "USD")
    assert posted[CloseType.INVOICE] == (2, int(sum(i["total"] for i in held) * 100), 0) == (2, 48000, 0)
    paid = [p for p in books["payments"].values() if p["reference"] in references]
    assert posted[CloseType.PAYMENT] == (1, int(sum(p["amount"] for p in paid) * 100), 0) == (1, 18000, 0)

    # Revenue per account as the ERP booked each invoice line, and the tax on top.
    booked: dict[str, int] = defaultdict(int)
    lines = erp_sim._db["account.invoice.line"]  # the simulator's books, read as an accountant would
    accounts = erp_sim._db["account.account"]
    for held_invoice in held:
        for line in (line for line in lines.values() if line["invoice"] == held_invoice["id"]):
            booked[accounts[line["account"]]["code"]] += int(Decimal(line["amount"]) * 100)
    found = _accounts(report, "tryton-local")
    assert (
        {account: amount for (kind, account, type_), (_, amount) in found.items() if kind == "revenue_account"}
        == dict(booked)
        == {"4000": 40000, "4100": 5000}
    )
    assert found[("tax_code", "VAT20", CloseType.INVOICE)] == (1, 3000)
    assert found[("payment_journal", "Card", CloseType.PAYMENT)] == (1, 18000)


def test_a_bigger_month_costs_no_more_queries(month: Month) -> None:
    """The month is read set-based: ten times the invoices and payments, the same number of queries."""
    with CaptureQueriesContext(db_connection) as seeded:
        close.build(month.us, OCTOBER)
    customer = Customer.objects.get(source_id="cus_US01")
    post_customer = Posting.objects.get(operation=Operation.ENSURE_CUSTOMER, customer=customer, connection=month.tryton)
    for n in range(40):
        extra = Invoice.objects.create(
            source=SOURCE,
            source_id=f"in_more_{n}",
            customer=customer,
            legal_entity=month.us,
            currency="USD",
            subtotal_minor=100,
            total_minor=100,
            invoice_date=date(2026, 10, 14),
        )
        InvoiceLine.objects.create(
            invoice=extra,
            position=1,
            description="Pro plan",
            quantity=Decimal(1),
            unit_amount_minor=100,
            amount_minor=100,
            price_id=f"price_{n % 3}",
        )
        key = idempotency_key("tryton-local", Operation.POST_INVOICE, SOURCE, extra.source_id, 1)
        Posting.objects.create(
            idempotency_key=key,
            connection=month.tryton,
            operation=Operation.POST_INVOICE,
            source=SOURCE,
            source_id=extra.source_id,
            invoice=extra,
            state=PostingState.POSTED,
            posted_at=IN_OCTOBER,
            depends_on_key=post_customer.idempotency_key,
        )
    with CaptureQueriesContext(db_connection) as bigger:
        report = close.build(month.us, OCTOBER)
    assert _posted(report, "tryton-local", "USD")[CloseType.INVOICE] == (47, 81300 + 4000, 1)
    # Three more price ids resolve three more key chains (once each, for the revenue account).
    assert len(bigger.captured_queries) == len(seeded.captured_queries) + 3
