"""The comparison itself: three sides in, differences and totals out. No database and no I/O, so
it is the part the benchmark measures and the unit tests pin down.

Documents are matched by name. Billing and the ledger name a document the same way
(``source``, ``source_id`` and its type); the ledger also knows the reference the ERP holds it
under (``erp_ref``, which for an amended invoice carries its version). Work is done with
dictionaries, once per document: a run of 100,000 documents is a few hundred thousand lookups.

Which documents a run covers: every ledger document dated in the period; and every billing or ERP
document dated in the period that the ledger does not hold at all (``known_in_ledger`` says which
of those the ledger holds under another legal entity, currency, connection or date: they belong to
another run). Ledger documents just outside the period are still loaded, so that a billing or ERP
document they account for (its date differs by a day) is not reported missing.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date

from apps.core.money import to_decimal
from apps.reconciliation.models import DifferenceKind, DocumentType, Side, StatusReason

Key = tuple[str, str, str]  # (document type, source, source_id): billing's and the ledger's name
ErpKey = tuple[str, str]  # (document type, reference in the ERP)

# What the ERP should show for a ledger status.
EXPECTED_ERP_STATUS: dict[str, dict[str, tuple[str, ...]]] = {
    DocumentType.INVOICE: {"open": ("open",), "paid": ("paid",), "void": ("void",), "uncollectible": ("paid",)},
    DocumentType.CREDIT_MEMO: {"issued": ("open", "paid"), "void": ("void",)},
}
_VERSION = re.compile(r"#r\d+$")

STATUS_ERP_BEHIND = StatusReason.ERP_BEHIND
STATUS_ERP_DIFFERS = StatusReason.ERP_DIFFERS
STATUS_LEDGER_BEHIND = StatusReason.LEDGER_BEHIND
STATUS_SUPERSEDED_OPEN = StatusReason.SUPERSEDED_OPEN


@dataclass(slots=True)
class Record:
    """One document as billing or the ledger holds it."""

    document_type: str
    source: str
    source_id: str
    currency: str
    amount_minor: int | None
    status: str
    document_date: date
    number: str = ""
    erp_ref: str = ""  # ledger: the reference the ERP holds it under
    invoice_source_id: str = ""  # the invoice it belongs to (itself for an invoice)
    expect_in_erp: bool = True  # ledger: a void never posted is not expected in the ERP
    invoice_id: int | None = None
    credit_memo_id: int | None = None
    application_id: int | None = None

    @property
    def key(self) -> Key:
        return (self.document_type, self.source, self.source_id)


@dataclass(slots=True)
class ErpRecord:
    document_type: str
    external_ref: str
    erp_id: str
    number: str
    currency: str
    amount_minor: int
    status: str
    document_date: date

    def as_dict(self) -> dict[str, object]:
        return {
            "erp_id": self.erp_id,
            "number": self.number,
            "currency": self.currency,
            "amount_minor": self.amount_minor,
            "status": self.status,
            "date": self.document_date.isoformat(),
        }


@dataclass(slots=True)
class Found:
    kind: str
    document_type: str
    source: str
    source_id: str
    external_ref: str
    billing: Record | None
    ledger: Record | None
    erp: list[ErpRecord]
    status_case: str = ""

    @property
    def currency(self) -> str:
        for side in (self.ledger, self.billing):
            if side is not None:
                return side.currency
        return self.erp[0].currency if self.erp else ""

    @property
    def document_date(self) -> date | None:
        for side in (self.ledger, self.billing):
            if side is not None:
                return side.document_date
        return self.erp[0].document_date if self.erp else None

    @property
    def invoice_source_id(self) -> str:
        for side in (self.ledger, self.billing):
            if side is not None:
                return side.invoice_source_id
        return ""


@dataclass
class Outcome:
    found: list[Found] = field(default_factory=list)
    # (side, document type) -> [count, amount in minor units]
    totals: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    compared: int = 0


@dataclass
class Sides:
    """What the three sides hold, as the loaders read them."""

    ledger: dict[Key, Record]
    billing: dict[Key, Record]
    erp: dict[ErpKey, list[ErpRecord]]
    # Earlier versions of amended invoices, by the reference the ERP holds them under: the ERP
    # should show them cancelled.
    superseded: dict[ErpKey, Record] = field(default_factory=dict)
    billing_from_ledger: frozenset[str] = frozenset()  # sources whose billing record is the ledger
    sources: frozenset[str] = frozenset()  # the legal entity's billing sources
    erp_read: bool = True  # False: the ERP could not be listed, compare billing with the ledger only


def erp_key_to_key(document_type: str, external_ref: str) -> Key:
    source, _, source_id = external_ref.partition(":")
    if document_type == DocumentType.INVOICE:
        source_id = _VERSION.sub("", source_id)
    return (document_type, source, source_id)


def compare(
    sides: Sides,
    *,
    period_start: date,
    period_end: date,
    currency: str,
    known_in_ledger: Callable[[set[Key]], set[Key]],
) -> Outcome:
    outcome = Outcome()
    totals = outcome.totals
    billing, erp = dict(sides.billing), dict(sides.erp)

    def count(side: str, document_type: str, amount: int | None, in_currency: str) -> None:
        """A document in another currency is counted; its amount is not added to the run's."""
        entry = totals[(side, document_type)]
        entry[0] += 1
        entry[1] += (amount or 0) if in_currency == currency else 0

    for key, ledger in sides.ledger.items():
        from_ledger = ledger.source in sides.billing_from_ledger
        bill = ledger if from_ledger else billing.pop(key, None)
        documents = erp.pop((ledger.document_type, ledger.erp_ref), [])
        if not period_start <= ledger.document_date <= period_end:
            continue  # it accounts for its billing and ERP documents; another period's run compares it
        outcome.compared += 1
        count(Side.LEDGER, ledger.document_type, ledger.amount_minor, ledger.currency)
        if bill is not None:
            count(Side.BILLING, ledger.document_type, bill.amount_minor, bill.currency)
        for document in documents:
            count(Side.ERP, document.document_type, document.amount_minor, document.currency)
        kind, status_case = classify(ledger, None if from_ledger else bill, documents, erp_read=sides.erp_read)
        if kind:
            outcome.found.append(
                Found(
                    kind,
                    ledger.document_type,
                    ledger.source,
                    ledger.source_id,
                    ledger.erp_ref,
                    bill,
                    ledger,
                    documents,
                    status_case,
                )
            )

    for erp_key, version in sides.superseded.items():
        documents = erp.pop(erp_key, [])
        if not period_start <= version.document_date <= period_end:
            continue
        if any(document.status != "void" for document in documents):
            outcome.found.append(
                Found(
                    DifferenceKind.STATUS_MISMATCH,
                    version.document_type,
                    version.source,
                    version.source_id,
                    version.erp_ref,
                    None,
                    version,
                    documents,
                    STATUS_SUPERSEDED_OPEN,
                )
            )

    _orphans(outcome, sides, billing, erp, period_start, period_end, currency, known_in_ledger, count)
    _explained_statuses_dropped(outcome)
    return outcome


def classify(
    ledger: Record, bill: Record | None, documents: list[ErpRecord], *, erp_read: bool = True
) -> tuple[str, str]:
    """The first kind of difference that applies to one document the ledger holds, and for a
    status difference, why. ``bill`` is None when billing is the ledger itself."""
    expected = erp_read and (ledger.expect_in_erp or bool(documents))
    if expected and not documents:
        return DifferenceKind.MISSING_IN_ERP, ""
    # A copy cancelled in the ERP is no duplicate: what counts is what stands in the books.
    standing = [document for document in documents if document.status != "void"]
    if len(standing) > 1:
        return DifferenceKind.DUPLICATE_IN_ERP, ""
    erp = standing[0] if standing else (documents[0] if documents else None)
    if (bill is not None and bill.currency != ledger.currency) or (erp is not None and erp.currency != ledger.currency):
        return DifferenceKind.CURRENCY_MISMATCH, ""
    if bill is not None and bill.amount_minor != ledger.amount_minor:
        return DifferenceKind.AMOUNT_MISMATCH, ""
    if erp is not None and ledger.amount_minor is not None and erp.amount_minor != ledger.amount_minor:
        return DifferenceKind.AMOUNT_MISMATCH, ""
    expectations = EXPECTED_ERP_STATUS.get(ledger.document_type)
    if expectations is None:
        return "", ""
    if bill is not None and bill.status != ledger.status:
        return DifferenceKind.STATUS_MISMATCH, STATUS_LEDGER_BEHIND
    if erp is not None and erp.status not in expectations.get(ledger.status, (erp.status,)):
        behind = ledger.status != "open" and erp.status == "open"
        return DifferenceKind.STATUS_MISMATCH, STATUS_ERP_BEHIND if behind else STATUS_ERP_DIFFERS
    return "", ""


def _orphans(
    outcome: Outcome,
    sides: Sides,
    billing: dict[Key, Record],
    erp: dict[ErpKey, list[ErpRecord]],
    period_start: date,
    period_end: date,
    currency: str,
    known_in_ledger: Callable[[set[Key]], set[Key]],
    count: Callable[[str, str, int | None, str], None],
) -> None:
    """Billing and ERP documents dated in the period that no ledger document of the run accounts
    for: missing in the ledger, unless the ledger holds them for another run."""
    candidates: dict[Key, tuple[Record | None, list[ErpRecord]]] = {}
    for key, bill in billing.items():
        if bill.currency == currency and period_start <= bill.document_date <= period_end:
            candidates[key] = (bill, [])
    for (document_type, reference), documents in erp.items():
        if document_type not in DocumentType.values or reference.partition(":")[0] not in sides.sources:
            continue
        dated = [d for d in documents if period_start <= d.document_date <= period_end and d.currency == currency]
        if not dated:
            continue
        key = erp_key_to_key(document_type, reference)
        bill, before = candidates.get(key, (None, []))
        candidates[key] = (bill, before + dated)
    if not candidates:
        return
    known = known_in_ledger(set(candidates))
    for key in sorted(set(candidates) - known):
        bill, documents = candidates[key]
        document_type, source, source_id = key
        if bill is not None:
            count(Side.BILLING, document_type, bill.amount_minor, bill.currency)
        for document in documents:
            count(Side.ERP, document_type, document.amount_minor, document.currency)
        reference = documents[0].external_ref if documents else f"{source}:{source_id}"
        outcome.found.append(
            Found(DifferenceKind.MISSING_IN_LEDGER, document_type, source, source_id, reference, bill, None, documents)
        )


def _explained_statuses_dropped(outcome: Outcome) -> None:
    """An invoice whose status differs only because one of its own documents (a payment, credit
    note, refund or write-off) is missing or different is reported once, on that document."""
    explained = {
        (found.source, found.invoice_source_id)
        for found in outcome.found
        if found.document_type != DocumentType.INVOICE and found.invoice_source_id
    }
    outcome.found = [
        found
        for found in outcome.found
        if not (
            found.kind == DifferenceKind.STATUS_MISMATCH
            and found.document_type == DocumentType.INVOICE
            and found.status_case in (STATUS_ERP_BEHIND, STATUS_ERP_DIFFERS)
            and (found.source, found.source_id) in explained
        )
    ]


# -- finance wording -------------------------------------------------------------------------

_STATUS_WORDS = {
    "open": "open",
    "paid": "paid",
    "void": "voided",
    "uncollectible": "written off as uncollectible",
    "issued": "issued",
    "posted": "posted",
}


def money(amount: int | None, currency: str) -> str:
    if amount is None:
        return "—"
    try:
        return f"{to_decimal(amount, currency)} {currency}"
    except (TypeError, ValueError):
        return f"{amount} (minor units) {currency}"


def describe(found: Found, connection: str) -> str:
    """One sentence for finance: what disagrees, with the amounts each side holds."""
    what = _document_words(found)
    bill, ledger, erp = found.billing, found.ledger, found.erp
    currency = found.currency
    if found.kind == DifferenceKind.MISSING_IN_LEDGER:
        held = []
        if bill is not None:
            held.append(f"billing ({money(bill.amount_minor, bill.currency)})")
        if erp:
            held.append(f"{connection} as {_erp_names(erp)} ({money(erp[0].amount_minor, erp[0].currency)})")
        return f"{what} is in {' and '.join(held)} but the hub's ledger never received it."
    if found.kind == DifferenceKind.MISSING_IN_ERP:
        amount = money(ledger.amount_minor if ledger else None, currency)
        return f"{what} for {amount} is in billing and the ledger but not in {connection}."
    if found.kind == DifferenceKind.DUPLICATE_IN_ERP:
        each = ", ".join(f"{d.number or d.erp_id} ({money(d.amount_minor, d.currency)})" for d in erp)
        held = f"{connection} holds {len(erp)} documents under {found.external_ref}"
        return f"{held} for {what}: {each}; billing has one."
    if found.kind == DifferenceKind.CURRENCY_MISMATCH:
        parts = [f"the ledger says {ledger.currency if ledger else currency}"]
        if bill is not None:
            parts.insert(0, f"billing says {bill.currency}")
        if erp:
            parts.append(f"{connection} holds it in {erp[0].currency}")
        return f"{what}: {', '.join(parts)}."
    if found.kind == DifferenceKind.AMOUNT_MISMATCH:
        parts = []
        if bill is not None:
            parts.append(f"billing says {money(bill.amount_minor, bill.currency)}")
        if ledger is not None:
            parts.append(f"the ledger {money(ledger.amount_minor, ledger.currency)}")
        if erp:
            parts.append(f"{connection} {money(erp[0].amount_minor, erp[0].currency)}")
        return f"{what}: {', '.join(parts)}."
    erp_status = _STATUS_WORDS.get(erp[0].status, erp[0].status) if erp else "absent"
    if found.status_case == STATUS_LEDGER_BEHIND and bill is not None and ledger is not None:
        return (
            f"{what} is {_STATUS_WORDS.get(bill.status, bill.status)} in billing but "
            f"{_STATUS_WORDS.get(ledger.status, ledger.status)} in the hub's ledger (and {erp_status} in "
            f"{connection}): a billing event never reached the hub."
        )
    if found.status_case == STATUS_SUPERSEDED_OPEN:
        return (
            f"{what} was amended in billing; the version {connection} holds as {_erp_names(erp)} should be "
            f"cancelled but is {erp_status}."
        )
    billing_status = ledger.status if ledger else (bill.status if bill else "")
    return f"{what} is {_STATUS_WORDS.get(billing_status, billing_status)} in billing, {erp_status} in {connection}."


def _document_words(found: Found) -> str:
    record = found.ledger or found.billing
    number = f" {record.number}" if record is not None and record.number else ""
    label = DocumentType(found.document_type).label
    if found.document_type == DocumentType.PAYMENT:
        payment, _, invoice = found.source_id.rpartition(":")
        return f"Payment {payment} on invoice {invoice}"
    return f"{label}{number} ({found.source_id})" if number else f"{label} {found.source_id}"


def _erp_names(documents: Iterable[ErpRecord]) -> str:
    return ", ".join(d.number or f"id {d.erp_id}" for d in documents)
