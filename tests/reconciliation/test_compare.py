"""The comparison's rules, one at a time, on documents as the three sides hold them."""

from __future__ import annotations

from datetime import date, timedelta

from apps.reconciliation.compare import ErpRecord, Key, Outcome, Record, Sides, compare, describe
from apps.reconciliation.models import DifferenceKind, DocumentType, Side, StatusReason

START, END = date(2026, 3, 1), date(2026, 3, 31)
SOURCE = "stripe-eu"
INVOICE, PAYMENT = DocumentType.INVOICE, DocumentType.PAYMENT


def ledger(
    source_id: str,
    amount: int = 10000,
    *,
    on: date = date(2026, 3, 10),
    status: str = "open",
    document_type: str = INVOICE,
    currency: str = "EUR",
    erp_ref: str = "",
    invoice: str = "",
    expect: bool = True,
) -> Record:
    return Record(
        document_type,
        SOURCE,
        source_id,
        currency,
        amount,
        status,
        on,
        erp_ref=erp_ref or f"{SOURCE}:{source_id}",
        invoice_source_id=invoice or source_id,
        expect_in_erp=expect,
    )


def erp(
    reference: str,
    amount: int = 10000,
    *,
    on: date = date(2026, 3, 10),
    status: str = "open",
    document_type: str = INVOICE,
    currency: str = "EUR",
    erp_id: str = "1",
) -> ErpRecord:
    return ErpRecord(document_type, f"{SOURCE}:{reference}", erp_id, f"INV/{erp_id}", currency, amount, status, on)


def run(
    records: list[Record],
    documents: list[ErpRecord],
    *,
    billing: list[Record] | None = None,
    known: set[Key] | None = None,
    superseded: list[Record] | None = None,
    erp_read: bool = True,
) -> list[tuple[str, str, str]]:
    outcome = _outcome(records, documents, billing=billing, known=known, superseded=superseded, erp_read=erp_read)
    return sorted((f.kind, f.document_type, f.source_id) for f in outcome.found)


def _outcome(
    records: list[Record],
    documents: list[ErpRecord],
    *,
    billing: list[Record] | None = None,
    known: set[Key] | None = None,
    superseded: list[Record] | None = None,
    erp_read: bool = True,
) -> Outcome:
    grouped: dict[tuple[str, str], list[ErpRecord]] = {}
    for document in documents:
        grouped.setdefault((document.document_type, document.external_ref), []).append(document)
    return compare(
        Sides(
            ledger={r.key: r for r in records},
            billing={b.key: b for b in billing or []},
            erp=grouped,
            superseded={(s.document_type, s.erp_ref): s for s in superseded or []},
            billing_from_ledger=frozenset() if billing is not None else frozenset({SOURCE}),
            sources=frozenset({SOURCE}),
            erp_read=erp_read,
        ),
        period_start=START,
        period_end=END,
        currency="EUR",
        known_in_ledger=lambda keys: keys & (known or set()),
    )


def test_documents_that_agree_give_no_difference_and_equal_totals() -> None:
    records = [ledger("in_1"), ledger("in_2", 500, status="paid")]
    outcome = _outcome(records, [erp("in_1"), erp("in_2", 500, status="paid")])
    assert outcome.found == []
    for side in Side.values:
        assert outcome.totals[(side, INVOICE)] == [2, 10500]


def test_a_document_dated_a_few_days_apart_on_two_sides_is_matched_not_missing() -> None:
    at_month_end = ledger("in_1", on=END)
    booked_next_day = erp("in_1", on=END + timedelta(days=1))
    last_month = ledger("in_2", on=START - timedelta(days=1))  # another period's run compares it
    booked_this_month = erp("in_2", on=START)
    assert run([at_month_end, last_month], [booked_next_day, booked_this_month]) == []
    outcome = _outcome([at_month_end, last_month], [booked_next_day, booked_this_month])
    assert outcome.compared == 1


def test_an_erp_document_the_ledger_holds_for_another_run_is_not_missing_in_the_ledger() -> None:
    elsewhere = erp("in_usd")  # the ledger has it in USD: the USD run reports it
    unknown = erp("in_9", 700, erp_id="9")
    other_source = ErpRecord(INVOICE, "legacy:in_7", "7", "INV/7", "EUR", 100, "open", date(2026, 3, 2))
    next_month = erp("in_8", on=END + timedelta(days=2), erp_id="8")
    found = run([], [elsewhere, unknown, other_source, next_month], known={(INVOICE, SOURCE, "in_usd")})
    assert found == [(DifferenceKind.MISSING_IN_LEDGER, INVOICE, "in_9")]


def test_billing_and_the_erp_holding_what_the_ledger_lacks_is_one_difference() -> None:
    billed = ledger("in_5", 4200)
    outcome = _outcome([], [erp("in_5", 4200)], billing=[billed])
    [found] = outcome.found
    assert (found.kind, found.billing.amount_minor, found.erp[0].amount_minor) == (
        DifferenceKind.MISSING_IN_LEDGER,
        4200,
        4200,
    )
    assert describe(found, "tryton-local") == (
        "Invoice in_5 is in billing (42.00 EUR) and tryton-local as INV/1 (42.00 EUR) but the hub's ledger never "
        "received it."
    )


def test_a_cancelled_copy_is_no_duplicate_but_two_standing_documents_are() -> None:
    copies = [erp("in_1", erp_id="1"), erp("in_1", status="void", erp_id="2")]
    assert run([ledger("in_1")], copies) == []
    standing = [erp("in_1", erp_id="1"), erp("in_1", status="paid", erp_id="2")]
    assert run([ledger("in_1")], standing) == [(DifferenceKind.DUPLICATE_IN_ERP, INVOICE, "in_1")]


def test_each_document_gets_the_first_kind_that_applies() -> None:
    found = run(
        [
            ledger("in_cur"),
            ledger("in_amt"),
            ledger("in_st", status="void"),
            ledger("in_both", 900, status="paid"),
        ],
        [
            erp("in_cur", currency="USD"),
            erp("in_amt", 9999),
            erp("in_st"),
            erp("in_both", 800),  # a wrong amount and still open: reported as the amount
        ],
    )
    assert found == [
        (DifferenceKind.AMOUNT_MISMATCH, INVOICE, "in_amt"),
        (DifferenceKind.AMOUNT_MISMATCH, INVOICE, "in_both"),
        (DifferenceKind.CURRENCY_MISMATCH, INVOICE, "in_cur"),
        (DifferenceKind.STATUS_MISMATCH, INVOICE, "in_st"),
    ]


def test_status_reasons_tell_the_erp_behind_from_a_hand_change_and_from_a_ledger_behind_billing() -> None:
    outcome = _outcome(
        [ledger("in_void", status="void"), ledger("in_hand"), ledger("in_late")],
        [erp("in_void"), erp("in_hand", status="void"), erp("in_late")],
        billing=[ledger("in_void", status="void"), ledger("in_hand"), ledger("in_late", status="paid")],
    )
    reasons = {f.source_id: f.status_case for f in outcome.found}
    assert reasons == {
        "in_void": StatusReason.ERP_BEHIND,
        "in_hand": StatusReason.ERP_DIFFERS,
        "in_late": StatusReason.LEDGER_BEHIND,
    }


def test_an_invoice_open_in_the_erp_because_its_payment_is_missing_is_reported_once_on_the_payment() -> None:
    paid = ledger("in_1", status="paid")
    payment = ledger("pi_1:in_1", document_type=PAYMENT, invoice="in_1")
    assert run([paid, payment], [erp("in_1")]) == [(DifferenceKind.MISSING_IN_ERP, PAYMENT, "pi_1:in_1")]
    # Once the payment is there, the invoice still open in the ERP is the difference.
    posted = erp("pi_1:in_1", document_type=PAYMENT, status="posted")
    assert run([paid, payment], [erp("in_1"), posted]) == [(DifferenceKind.STATUS_MISMATCH, INVOICE, "in_1")]


def test_an_amended_invoice_expects_its_earlier_version_cancelled_in_the_erp() -> None:
    current = ledger("in_1", 12000, erp_ref=f"{SOURCE}:in_1#r2")
    earlier = ledger("in_1", None, status="void", erp_ref=f"{SOURCE}:in_1")  # type: ignore[arg-type]
    cancelled = [erp("in_1#r2", 12000), erp("in_1", status="void", erp_id="2")]
    assert run([current], cancelled, superseded=[earlier]) == []
    still_open = [erp("in_1#r2", 12000), erp("in_1", erp_id="2")]
    outcome = _outcome([current], still_open, superseded=[earlier])
    [found] = outcome.found
    assert (found.kind, found.status_case, found.external_ref) == (
        DifferenceKind.STATUS_MISMATCH,
        StatusReason.SUPERSEDED_OPEN,
        f"{SOURCE}:in_1",
    )


def test_a_void_never_posted_is_not_expected_in_the_erp() -> None:
    assert run([ledger("in_1", status="void", expect=False)], []) == []


def test_a_document_in_another_currency_is_counted_without_adding_its_amount() -> None:
    outcome = _outcome([ledger("in_1", 3000)], [erp("in_1", 3000, currency="USD")])
    assert outcome.totals[(Side.ERP, INVOICE)] == [1, 0]
    assert outcome.totals[(Side.LEDGER, INVOICE)] == [1, 3000]


def test_without_the_erp_only_billing_and_the_ledger_are_compared() -> None:
    billing = [ledger("in_1", 100), ledger("in_2", 999)]
    assert run([ledger("in_1", 100), ledger("in_2", 200)], [], billing=billing, erp_read=False) == [
        (DifferenceKind.AMOUNT_MISMATCH, INVOICE, "in_2")
    ]
