"""Acceptance: billing (Stripe's API, the contract simulator), the canonical ledger and the real Tryton
seeded with one known difference of every class, two of them made by editing Tryton by hand; the
run finds exactly those, with their amounts; auto-heal posts each healable one once, and the next
run finds only what needs a person, in the same cases."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from apps.connectors.documents import InvoiceDocument, InvoiceLineDocument
from apps.connectors.registry import get_connector
from apps.console.models import CaseStatus, ExceptionCase
from apps.posting import executor
from apps.posting import services as posting_services
from apps.posting.models import Operation, Posting, PostingState
from apps.reconciliation.models import (
    Difference,
    DifferenceKind,
    DocumentType,
    HealAction,
    ReconciliationRun,
    RunStatus,
    Side,
    StatusReason,
)
from apps.sources import stripe_samples as se
from tests.reconciliation.conftest import Books, TrytonDesk, copy, invoice

pytestmark = pytest.mark.tryton

K = DifferenceKind


def found(run: ReconciliationRun) -> dict[tuple[str, str, str], Difference]:
    return {(d.kind, d.document_type, d.source_id): d for d in run.differences.all()}


def totals(run: ReconciliationRun) -> dict[tuple[str, str], tuple[int, int]]:
    return {(t.side, t.document_type): (t.count, t.amount_minor) for t in run.totals.all()}


def finalized(books: Books, amount: int) -> dict[str, Any]:
    obj = books.bill(invoice(amount))
    books.webhook("invoice.finalized", obj)
    return obj


def paid(books: Books, obj: dict[str, Any]) -> tuple[dict[str, Any], str]:
    settled = books.bill(se.paid(obj))
    books.webhook("invoice.paid", settled)
    return settled, settled["payments"]["data"][0]["payment"]["payment_intent"]


def entered_by_hand(books: Books, obj: dict[str, Any], amount: int, currency: str) -> Posting:
    """Finance keyed the invoice into Tryton themselves (another amount, another currency) and the
    hub's posting was recorded as that document."""
    customer = Posting.objects.get(source=books.name, source_id=obj["customer"], operation=Operation.ENSURE_CUSTOMER)
    assert executor.execute_posting(customer.pk) == PostingState.POSTED
    connector = get_connector("tryton", books.connection.resolved_settings())
    result = connector.post_invoice(
        InvoiceDocument(
            external_ref=books.ref(obj["id"]),
            number=obj["number"],
            customer_ref=books.ref(obj["customer"]),
            customer_erp_id=Posting.objects.get(pk=customer.pk).erp_id,
            currency=currency,
            invoice_date=date.today(),
            due_date=None,
            lines=(InvoiceLineDocument("Pro plan (keyed by hand)", Decimal(1), amount, amount, "4000"),),
            subtotal_minor=amount,
            tax_minor=0,
            total_minor=amount,
        )
    )
    posting = Posting.objects.get(source=books.name, source_id=obj["id"], operation=Operation.POST_INVOICE)
    return posting_services.adopt_existing(
        posting.pk, erp_id=result.erp_id, erp_number=result.erp_number, actor="finance", reason="keyed by hand"
    )


def test_a_run_finds_exactly_the_seeded_differences_heals_the_safe_ones_and_keeps_cases_for_the_rest(
    books: Books, desk: TrytonDesk
) -> None:
    desk.ensure_rates({"USD": Decimal(1), "EUR": Decimal("0.9")})

    # Documents the three sides agree on: open, paid, credited and refunded, written off.
    finalized(books, 10000)
    paid(books, finalized(books, 12000))
    credited, _ = paid(books, finalized(books, 15000))
    memo = books.bill(se.credit_note(credited, [(0, 2000)], refunded=2000))
    books.webhook("credit_note.created", memo)
    written_off = finalized(books, 9000)
    books.webhook("invoice.marked_uncollectible", books.bill(se.uncollectible(written_off)))

    # Missing in the ERP: the invoice's plan was lost, and a payment's.
    lost_invoice = finalized(books, 4100)
    Posting.objects.filter(source_id=lost_invoice["id"], operation=Operation.POST_INVOICE).delete()
    unpaid_in_erp, payment_id = paid(books, finalized(books, 5200))
    Posting.objects.filter(source_id=f"{payment_id}:{unpaid_in_erp['id']}").delete()
    # Paid in billing, open in Tryton: the accountant unreconciled its payment by hand.
    unreconciled, _ = paid(books, finalized(books, 2500))
    # Duplicate in Tryton: the accountant entered it a second time under the same reference.
    duplicated = finalized(books, 8500)
    # Amount and currency: keyed into Tryton by hand with another amount, in another currency.
    keyed_wrong_amount = finalized(books, 9600)
    keyed_in_euros = finalized(books, 3000)
    # Voided in billing; the void never reached the ERP.
    voided = finalized(books, 6300)
    # Missing in the ledger: billing has it, its webhook never arrived.
    never_arrived = books.bill(invoice(7400))

    entered_by_hand(books, keyed_wrong_amount, 9100, "USD")
    entered_by_hand(books, keyed_in_euros, 3000, "EUR")
    books.drain()
    books.webhook("invoice.voided", books.bill(se.voided(voided)))
    Posting.objects.filter(source_id=f"{voided['id']}:void").delete()
    [original] = books.tryton.invoices(books.ref(duplicated["id"]))
    desk.duplicate(original["id"], books.ref(duplicated["id"]))
    [settled] = books.tryton.invoices(books.ref(unreconciled["id"]))
    assert settled["state"] == "paid"
    desk.unreconcile(settled["id"])
    assert books.tryton.invoices(books.ref(unreconciled["id"]))[0]["state"] == "posted"

    run = books.run()

    assert run.status == RunStatus.COMPLETED, run.error
    assert run.erp_read and run.billing_basis == {books.name: "api"}
    payment = f"{payment_id}:{unpaid_in_erp['id']}"
    differences = found(run)
    assert set(differences) == {
        (K.MISSING_IN_ERP, DocumentType.INVOICE, lost_invoice["id"]),
        (K.MISSING_IN_ERP, DocumentType.PAYMENT, payment),
        (K.STATUS_MISMATCH, DocumentType.INVOICE, voided["id"]),
        (K.STATUS_MISMATCH, DocumentType.INVOICE, unreconciled["id"]),
        (K.MISSING_IN_LEDGER, DocumentType.INVOICE, never_arrived["id"]),
        (K.DUPLICATE_IN_ERP, DocumentType.INVOICE, duplicated["id"]),
        (K.AMOUNT_MISMATCH, DocumentType.INVOICE, keyed_wrong_amount["id"]),
        (K.CURRENCY_MISMATCH, DocumentType.INVOICE, keyed_in_euros["id"]),
    }
    amounts = {
        key[2]: (d.billing_amount_minor, d.ledger_amount_minor, d.erp_amount_minor) for key, d in differences.items()
    }
    assert amounts == {
        lost_invoice["id"]: (4100, 4100, None),
        payment: (5200, 5200, None),
        voided["id"]: (6300, 6300, 6300),
        unreconciled["id"]: (2500, 2500, 2500),
        never_arrived["id"]: (7400, None, None),
        duplicated["id"]: (8500, 8500, 8500),
        keyed_wrong_amount["id"]: (9600, 9600, 9100),
        keyed_in_euros["id"]: (3000, 3000, 3000),
    }
    void = differences[(K.STATUS_MISMATCH, DocumentType.INVOICE, voided["id"])]
    assert (void.billing_status, void.erp_status, void.status_reason) == ("void", "open", StatusReason.ERP_BEHIND)
    assert "voided in billing, open in tryton-local" in void.description
    unsettled = differences[(K.STATUS_MISMATCH, DocumentType.INVOICE, unreconciled["id"])]
    assert (unsettled.billing_status, unsettled.erp_status) == ("paid", "open")
    assert "paid in billing, open in tryton-local" in unsettled.description
    duplicate = differences[(K.DUPLICATE_IN_ERP, DocumentType.INVOICE, duplicated["id"])]
    assert [d["amount_minor"] for d in duplicate.erp_documents] == [8500, 8500]
    euros = differences[(K.CURRENCY_MISMATCH, DocumentType.INVOICE, keyed_in_euros["id"])]
    assert (euros.currency, euros.billing_currency, euros.erp_currency) == ("USD", "USD", "EUR")

    # Each side's totals, side by side (the EUR document counts, its amount is not added to USD).
    sides = totals(run)
    ledger_invoices = [10000, 12000, 15000, 9000, 4100, 5200, 2500, 8500, 9600, 3000, 6300]
    assert sides[(Side.LEDGER, DocumentType.INVOICE)] == (11, sum(ledger_invoices))
    assert sides[(Side.BILLING, DocumentType.INVOICE)] == (12, sum(ledger_invoices) + 7400)
    erp_invoices = [10000, 12000, 15000, 9000, 5200, 2500, 8500, 8500, 9100, 6300]
    assert sides[(Side.ERP, DocumentType.INVOICE)] == (11, sum(erp_invoices))
    assert sides[(Side.LEDGER, DocumentType.PAYMENT)] == (4, 12000 + 15000 + 5200 + 2500)
    assert sides[(Side.ERP, DocumentType.PAYMENT)] == (3, 12000 + 15000 + 2500)
    for document_type, amount in ((DocumentType.CREDIT_MEMO, 2000), (DocumentType.REFUND, 2000)):
        for side in Side.values:
            assert sides[(side, document_type)] == (1, amount)
    assert sides[(Side.ERP, DocumentType.WRITE_OFF)] == sides[(Side.BILLING, DocumentType.WRITE_OFF)] == (1, 9000)

    # The safe ones were planned again, with the keys they always had; the rest are cases.
    actions = {key[2]: d.heal_action for key, d in differences.items()}
    healed = {lost_invoice["id"], payment, voided["id"]}
    assert {k for k, action in actions.items() if action == HealAction.REPLANNED} == healed
    assert {k for k, action in actions.items() if action == HealAction.CASE_OPENED} == set(actions) - healed
    replanned = Posting.objects.filter(pk__in=[pk for d in differences.values() for pk in d.healing_postings])
    assert sorted((p.operation, p.state) for p in replanned) == [
        (Operation.APPLY_PAYMENT, PostingState.QUEUED),
        (Operation.POST_INVOICE, PostingState.QUEUED),
        (Operation.VOID_INVOICE, PostingState.QUEUED),
    ]
    cases = {d.source_id: d.case for d in differences.values() if d.case}
    assert {c.code for c in cases.values()} == {
        "reconciliation_missing_in_ledger",
        "reconciliation_duplicate_in_erp",
        "reconciliation_amount_mismatch",
        "reconciliation_currency_mismatch",
        "reconciliation_status_mismatch",
    }
    assert all(c.root_kind == ExceptionCase.ROOT_RECONCILIATION and c.status == CaseStatus.OPEN for c in cases.values())
    wrong_amount = cases[keyed_wrong_amount["id"]].message
    assert "billing says 96.00 USD, the ledger 96.00 USD, tryton-local 91.00 USD" in wrong_amount

    books.drain()
    assert len(books.tryton.invoices(books.ref(lost_invoice["id"]))) == 1
    assert len(books.tryton.moves(books.ref(payment))) == 1
    assert books.tryton.invoices(books.ref(unpaid_in_erp["id"]))[0]["state"] == "paid"
    assert books.tryton.invoices(books.ref(voided["id"]))[0]["state"] == "cancelled"

    again = books.run()

    assert set(found(again)) == {
        (K.STATUS_MISMATCH, DocumentType.INVOICE, unreconciled["id"]),
        (K.MISSING_IN_LEDGER, DocumentType.INVOICE, never_arrived["id"]),
        (K.DUPLICATE_IN_ERP, DocumentType.INVOICE, duplicated["id"]),
        (K.AMOUNT_MISMATCH, DocumentType.INVOICE, keyed_wrong_amount["id"]),
        (K.CURRENCY_MISMATCH, DocumentType.INVOICE, keyed_in_euros["id"]),
    }
    assert not again.replanned_count
    assert {d.source_id: d.case_id for d in again.differences.all()} == {k: c.pk for k, c in cases.items()}
    assert Posting.objects.filter(source=books.name, state=PostingState.QUEUED).count() == 0

    # Finance cancels the duplicate in Tryton: the next run finds the invoice agreed and closes its case.
    copies = books.tryton.invoices(books.ref(duplicated["id"]))
    desk.credit_with_refund(max(c["id"] for c in copies))
    third = books.run()
    assert (K.DUPLICATE_IN_ERP, DocumentType.INVOICE, duplicated["id"]) not in found(third)
    closed = ExceptionCase.objects.get(pk=cases[duplicated["id"]].pk)
    assert closed.status == CaseStatus.RESOLVED and f"run {third.pk}" in closed.resolution
    assert ExceptionCase.objects.get(pk=cases[keyed_in_euros["id"]].pk).status == CaseStatus.OPEN


def test_auto_heal_posts_each_healable_difference_once_and_a_second_run_finds_nothing(books: Books) -> None:
    lost_invoice = finalized(books, 4400)
    Posting.objects.filter(source_id=lost_invoice["id"], operation=Operation.POST_INVOICE).delete()
    unpaid_in_erp, payment_id = paid(books, finalized(books, 5500))
    payment = f"{payment_id}:{unpaid_in_erp['id']}"
    Posting.objects.filter(source_id=payment).delete()
    credited = finalized(books, 7000)
    memo = books.bill(se.credit_note(credited, [(0, 1500)]))
    books.webhook("credit_note.created", memo)
    Posting.objects.filter(source_id=memo["id"]).delete()
    written_off = finalized(books, 3300)
    books.webhook("invoice.marked_uncollectible", books.bill(se.uncollectible(written_off)))
    Posting.objects.filter(source_id=f"{written_off['id']}:write-off").delete()
    voided = finalized(books, 2600)
    books.drain()
    books.webhook("invoice.voided", books.bill(se.voided(copy(voided))))
    Posting.objects.filter(source_id=f"{voided['id']}:void").delete()

    first = books.run()
    expected = {
        (K.MISSING_IN_ERP, DocumentType.INVOICE, lost_invoice["id"]),
        (K.MISSING_IN_ERP, DocumentType.PAYMENT, payment),
        (K.MISSING_IN_ERP, DocumentType.CREDIT_MEMO, memo["id"]),
        (K.MISSING_IN_ERP, DocumentType.WRITE_OFF, f"{written_off['id']}:write-off"),
        (K.STATUS_MISMATCH, DocumentType.INVOICE, voided["id"]),
    }
    assert set(found(first)) == expected
    assert first.replanned_count == 5 and first.case_count == 0
    planned = [pk for d in first.differences.all() for pk in d.healing_postings]
    assert len(planned) == len(set(planned)) == 5

    # Asked again before the worker got to them: nothing is planned twice.
    meanwhile = books.run()
    assert set(found(meanwhile)) == expected
    assert {d.heal_action for d in meanwhile.differences.all()} == {HealAction.IN_PROGRESS}
    assert (
        Posting.objects.filter(source=books.name).count()
        == Posting.objects.filter(source=books.name).values("idempotency_key").distinct().count()
    )

    books.drain()
    assert Posting.objects.filter(pk__in=planned, state=PostingState.POSTED).count() == 5
    assert len(books.tryton.invoices(books.ref(lost_invoice["id"]))) == 1
    assert len(books.tryton.moves(books.ref(payment))) == 1
    assert len(books.tryton.invoices(books.ref(memo["id"]))) == 1
    assert len(books.tryton.moves(books.ref(f"{written_off['id']}:write-off"))) == 1
    assert books.tryton.invoices(books.ref(voided["id"]))[0]["state"] == "cancelled"

    last = books.run()
    assert last.status == RunStatus.COMPLETED and last.difference_count == 0
    assert last.documents_compared == 8  # five invoices, a payment, a credit note and a write-off
