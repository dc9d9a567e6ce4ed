"""The month-end close report of one legal entity: what the hub posted into the month, per document
type and per account; what it has not posted yet; the exception cases still open and their age; the
reconciliation differences the month still has, and the entity's whole reconciliation backlog; and
every document the closed-period policy re-dated into or out of the month.

**Which month a posting belongs to.** The month of the date the ERP files its document under, not
the day the hub sent it: the date ``posting/documents.py`` gives the document (an invoice's date; a
payment's settlement, never before its invoice; a credit note's date, never before its invoice; a
refund's, void's or write-off's status date, never before the document; a dispute's opening or
closing day; for the void of an amended version, the day it was posted), or, for a document the
closed-period policy re-dated, the date it was re-dated to (``RedatedPosting.posted_date``). A
document dated in a closed month and re-dated into the next one counts in the next one, as the ERP
holds it, and is listed in the re-dated section of both months.

**Amounts** are read from the canonical ledger at report time, in each document's currency (never
added across currencies): an invoice's or credit note's total, an application's amount, a refund's
refunded amount, a write-off's unpaid rest, the unapplied part of a payment, a dispute's amount.
The ledger keeps only an amended invoice's newest version, so an earlier version that was posted
(and then voided) is counted without an amount (``amount_unknown``), and so is its void.

**Accounts** are the connection's mappings resolved now, the way ``posting/documents.py`` resolved
them for the document: each invoice or credit-note line to its revenue account (price, product,
revenue category, then default; a credit line by the invoice line it credits) and its tax to its tax
code, so the lines add up to the document's total; a payment, unapplied cash and a refund to their
payment journal; a write-off to the write-off method; a dispute's withdrawal and reinstatement to
the disputed-funds account, a lost dispute to the dispute-loss account; credit applied to an invoice
moves inside the customer's receivable and has no mapped account. Where the connector books revenue
on the item's income account (no revenue account mapping), the line is shown under its item. When a
mapping of the row's kind on its connection changed after some of the row's documents were posted
(an audited change: ``hub_config`` or a console correction; edits in the connection's admin inline
are not audited and cannot be seen), the row is flagged with the moment of the latest change: it
shows today's mapping, not necessarily the account those documents went to.

**Open cases** are the entity's exception cases open when the report is made, aged from when they
were opened. **Differences left** are the open differences (those of the latest completed run of
each scope) of the runs whose period overlaps the month; **coverage** says, per connection and
currency the month posted to, which completed run covered the whole month. The **reconciliation
backlog** is every open difference of the entity, whatever its period, by scope and by what the hub
is doing about it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from django.db.models import Count, Q, QuerySet, TextChoices
from django.utils import timezone

from apps.console.control_tower import AgeBucket
from apps.console.models import CaseStatus, ExceptionCase
from apps.core.models import AuditEvent
from apps.ledger.models import CreditMemo, CreditMemoLine, Invoice, InvoiceLine, LegalEntity
from apps.posting.documents import mapping_kinds
from apps.posting.models import Operation, Posting, PostingState, RedatedPosting
from apps.reconciliation.models import Difference, HealAction, ReconciliationRun, RunStatus
from apps.routing.models import ERPConnection, Mapping
from apps.routing.services import MissingMapping, resolve_mapping


class CloseType(TextChoices):
    INVOICE = "invoice", "Invoices"
    INVOICE_VOID = "invoice_void", "Invoice voids"
    CREDIT_MEMO = "credit_memo", "Credit memos"
    CREDIT_MEMO_VOID = "credit_memo_void", "Credit memo voids"
    PAYMENT = "payment", "Payments"
    REFUND = "refund", "Refunds"
    WRITE_OFF = "write_off", "Write-offs (bad debt)"
    CREDIT_RECEIVED = "credit_received", "Customer credit received (unapplied cash)"
    CREDIT_APPLIED = "credit_applied", "Customer credit applied"
    DISPUTE_WITHDRAWN = "dispute_withdrawn", "Disputes: funds withdrawn"
    DISPUTE_REINSTATED = "dispute_reinstated", "Disputes won: funds reinstated"
    DISPUTE_LOST = "dispute_lost", "Disputes lost"


TYPE_OF: dict[str, CloseType] = {
    Operation.POST_INVOICE: CloseType.INVOICE,
    Operation.VOID_INVOICE: CloseType.INVOICE_VOID,
    Operation.POST_CREDIT_MEMO: CloseType.CREDIT_MEMO,
    Operation.VOID_CREDIT_MEMO: CloseType.CREDIT_MEMO_VOID,
    Operation.APPLY_PAYMENT: CloseType.PAYMENT,
    Operation.REFUND_CREDIT_MEMO: CloseType.REFUND,
    Operation.WRITE_OFF: CloseType.WRITE_OFF,
    Operation.RECEIVE_ON_ACCOUNT: CloseType.CREDIT_RECEIVED,
    Operation.APPLY_CREDIT: CloseType.CREDIT_APPLIED,
    Operation.WITHDRAW_DISPUTED_FUNDS: CloseType.DISPUTE_WITHDRAWN,
    Operation.REINSTATE_DISPUTED_FUNDS: CloseType.DISPUTE_REINSTATED,
    Operation.LOSE_DISPUTE: CloseType.DISPUTE_LOST,
}
INVOICE_OPERATIONS = (Operation.POST_INVOICE, Operation.VOID_INVOICE, Operation.WRITE_OFF)
MEMO_OPERATIONS = (Operation.POST_CREDIT_MEMO, Operation.REFUND_CREDIT_MEMO, Operation.VOID_CREDIT_MEMO)
APPLICATION_OPERATIONS = (Operation.APPLY_PAYMENT, Operation.APPLY_CREDIT)
DISPUTE_OPERATIONS = (
    Operation.WITHDRAW_DISPUTED_FUNDS,
    Operation.REINSTATE_DISPUTED_FUNDS,
    Operation.LOSE_DISPUTE,
)

RECEIVABLE = "receivable"
ACCOUNT_KINDS: dict[str, str] = {
    **dict(Mapping.KIND_CHOICES),
    Mapping.KIND_ITEM: "Item (revenue on the ERP item's income account)",
    RECEIVABLE: "Customer receivable (no mapped account)",
}
UNMAPPED = "(no mapping today)"

CLOSE_AGE_BUCKETS = (
    AgeBucket("under_1d", "under 1 day", timedelta(days=1)),
    AgeBucket("1d_7d", "1–7 days", timedelta(days=7)),
    AgeBucket("7d_30d", "7–30 days", timedelta(days=30)),
    AgeBucket("over_30d", "over 30 days", None),
)
READING_NOTE = (
    "A document counts in the month its ERP date falls in: billing's date as the hub sent it, or the date the "
    "closed-period policy re-dated it to. Amounts come from the canonical ledger, per currency; an amended "
    "invoice's earlier version (and its void) is counted without an amount, since the ledger keeps only the newest "
    "version. Accounts are the connection's mappings as they resolve today; a row whose mapping changed after its "
    "documents were posted says when. Open cases and the reconciliation backlog are as at the time of the report."
)
LISTED = 500  # cases and differences listed on the page (the XLSX holds them all)
HEALING = (HealAction.REPLANNED, HealAction.IN_PROGRESS)
HELD_BY_CASE = (HealAction.CASE_OPENED, HealAction.EXISTING_CASE)


# -- the report ------------------------------------------------------------------------------------


@dataclass
class TypeTotal:
    connection: str
    currency: str
    document_type: str
    count: int = 0
    amount_minor: int = 0
    amount_unknown: int = 0  # documents whose amount the ledger no longer holds (amended versions)

    @property
    def label(self) -> str:
        return CloseType(self.document_type).label


@dataclass
class AccountTotal:
    connection: str
    currency: str
    kind: str
    account: str
    document_type: str
    documents: set[int] = field(default_factory=set)
    amount_minor: int = 0
    first_posted_at: datetime | None = None
    mapping_changed_at: datetime | None = None  # an audited change of this kind's mappings since then

    @property
    def count(self) -> int:
        return len(self.documents)

    @property
    def kind_label(self) -> str:
        return ACCOUNT_KINDS.get(self.kind, self.kind)

    @property
    def label(self) -> str:
        return CloseType(self.document_type).label


@dataclass
class PendingTotal:
    connection: str
    currency: str
    document_type: str
    state: str
    count: int = 0
    amount_minor: int = 0

    @property
    def label(self) -> str:
        return CloseType(self.document_type).label

    @property
    def state_label(self) -> str:
        return PostingState(self.state).label


@dataclass
class Redated:
    posting_id: int
    connection: str
    document_type: str
    reference: str
    currency: str
    amount_minor: int | None
    original_date: date
    posted_date: date
    reason: str
    erp_message: str
    state: str
    erp_number: str

    @property
    def label(self) -> str:
        return CloseType(self.document_type).label

    def direction(self, start: date, end: date) -> str:
        if start <= self.posted_date <= end:
            return "into this month" if not start <= self.original_date <= end else "within this month"
        return f"out to {self.posted_date:%Y-%m}"


@dataclass
class CaseAging:
    owner_group: str
    kind: str
    buckets: dict[str, int]
    oldest_opened_at: datetime

    @property
    def total(self) -> int:
        return sum(self.buckets.values())


@dataclass
class DifferenceTotal:
    connection: str
    currency: str
    kind: str
    kind_label: str
    count: int = 0
    amount_minor: int = 0  # the ledger's amount, else billing's, else the ERP's


@dataclass
class Coverage:
    connection: str
    currency: str
    run: ReconciliationRun | None  # the latest completed run whose period holds the whole month


@dataclass
class BacklogScope:
    run: ReconciliationRun
    total: int = 0
    healing: int = 0
    held_by_case: int = 0
    decided: int = 0
    not_acted_on: int = 0


@dataclass
class CloseReport:
    legal_entity: LegalEntity
    month_start: date
    month_end: date
    generated_at: datetime
    posted: list[TypeTotal]
    accounts: list[AccountTotal]
    pending: list[PendingTotal]
    redated: list[Redated]
    case_aging: list[CaseAging]
    cases: list[ExceptionCase]
    case_count: int
    differences: list[DifferenceTotal]
    difference_rows: list[Difference]
    difference_count: int
    coverage: list[Coverage]
    backlog: list[BacklogScope]

    @property
    def month(self) -> str:
        return f"{self.month_start:%Y-%m}"

    @property
    def age_buckets(self) -> tuple[AgeBucket, ...]:
        return CLOSE_AGE_BUCKETS

    @property
    def case_bucket_totals(self) -> dict[str, int]:
        totals = dict.fromkeys((b.key for b in CLOSE_AGE_BUCKETS), 0)
        for row in self.case_aging:
            for key, count in row.buckets.items():
                totals[key] += count
        return totals

    @property
    def backlog_count(self) -> int:
        return sum(scope.total for scope in self.backlog)

    def posted_total(self, connection: str, currency: str, document_type: str) -> TypeTotal | None:
        return next(
            (
                t
                for t in self.posted
                if (t.connection, t.currency, t.document_type) == (connection, currency, document_type)
            ),
            None,
        )


def month_bounds(month: str) -> tuple[date, date]:
    """``YYYY-MM`` to its first and last day; ValueError when it is not a month."""
    try:
        year, number = (int(part) for part in month.split("-"))
        start = date(year, number, 1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"'{month}' is not a month (YYYY-MM)") from exc
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following - timedelta(days=1)


def build(legal_entity: LegalEntity, month: str, *, now: datetime | None = None) -> CloseReport:
    start, end = month_bounds(month)
    now = now or timezone.now()
    documents = _DocumentsOfMonth(legal_entity, start, end, now)
    documents.load()
    case_aging, cases, case_count = _open_cases(legal_entity, now)
    difference_totals, difference_rows, difference_count = _differences_left(legal_entity, start, end)
    return CloseReport(
        legal_entity=legal_entity,
        month_start=start,
        month_end=end,
        generated_at=now,
        posted=documents.posted_totals(),
        accounts=documents.account_totals(),
        pending=documents.pending_totals(),
        redated=documents.redated,
        case_aging=case_aging,
        cases=cases,
        case_count=case_count,
        differences=difference_totals,
        difference_rows=difference_rows,
        difference_count=difference_count,
        coverage=_coverage(legal_entity, start, end, documents.scopes()),
        backlog=_backlog(legal_entity),
    )


# -- the month's postings --------------------------------------------------------------------------


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _utc_date(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def of_entity(legal_entity: LegalEntity) -> Q:
    """The postings of the entity's documents, each reached through its own record."""
    return (
        Q(operation__in=INVOICE_OPERATIONS, invoice__legal_entity=legal_entity)
        | Q(operation__in=MEMO_OPERATIONS, credit_memo__invoice__legal_entity=legal_entity)
        | Q(operation__in=APPLICATION_OPERATIONS, payment_application__invoice__legal_entity=legal_entity)
        | Q(operation=Operation.RECEIVE_ON_ACCOUNT, payment__customer__legal_entity=legal_entity)
        | Q(operation__in=DISPUTE_OPERATIONS, dispute__legal_entity=legal_entity)
    )


def _may_be_dated_in(start: date, end: date) -> Q:
    """A wide net in SQL for the postings whose document may be dated in the month; the exact
    date is decided in Python (``_billing_date``), as the posting's document dates it."""
    s0, e1 = _start_of(start), _start_of(end + timedelta(days=1))
    in_month = (start, end)

    def status_changed(record: str) -> Q:
        return Q(**{f"{record}__status_date__gte": start}) | Q(
            **{f"{record}__status_date__isnull": True, f"{record}__updated_at__gte": s0}
        )

    return (
        Q(redated__posted_date__range=in_month)
        | Q(redated__original_date__range=in_month)
        | Q(operation=Operation.POST_INVOICE, invoice__invoice_date__range=in_month)
        | (
            Q(operation=Operation.VOID_INVOICE, invoice__invoice_date__lte=end)
            & (
                status_changed("invoice")
                | Q(invoice__invoice_date__gte=start)
                | Q(posted_at__gte=s0)
                | Q(posted_at__isnull=True)
            )
        )
        | (
            Q(operation=Operation.WRITE_OFF, invoice__invoice_date__lte=end)
            & (status_changed("invoice") | Q(invoice__invoice_date__gte=start))
        )
        | (
            Q(
                operation=Operation.POST_CREDIT_MEMO,
                credit_memo__memo_date__lte=end,
                credit_memo__invoice__invoice_date__lte=end,
            )
            & (Q(credit_memo__memo_date__gte=start) | Q(credit_memo__invoice__invoice_date__gte=start))
        )
        | (
            Q(operation=Operation.REFUND_CREDIT_MEMO)
            & (
                Q(credit_memo__status_date__range=in_month)
                | Q(credit_memo__status_date__isnull=True, credit_memo__memo_date__range=in_month)
            )
        )
        | (
            Q(operation=Operation.VOID_CREDIT_MEMO, credit_memo__memo_date__lte=end)
            & (status_changed("credit_memo") | Q(credit_memo__memo_date__gte=start))
        )
        | (
            Q(
                operation__in=APPLICATION_OPERATIONS,
                payment_application__payment__settled_at__lt=e1,
                payment_application__invoice__invoice_date__lte=end,
            )
            & (
                Q(payment_application__payment__settled_at__gte=s0)
                | Q(payment_application__invoice__invoice_date__gte=start)
            )
        )
        | Q(operation=Operation.RECEIVE_ON_ACCOUNT, payment__settled_at__gte=s0, payment__settled_at__lt=e1)
        | Q(operation=Operation.WITHDRAW_DISPUTED_FUNDS, dispute__opened_on__range=in_month)
        | (
            Q(operation__in=(Operation.REINSTATE_DISPUTED_FUNDS, Operation.LOSE_DISPUTE))
            & (
                Q(dispute__closed_on__range=in_month)
                | Q(dispute__closed_on__isnull=True, dispute__updated_at__gte=s0, dispute__updated_at__lt=e1)
            )
        )
    )


def _status_date(record: Invoice | CreditMemo) -> date:
    """As ``posting/documents.py`` dates a void or write-off: billing's status change, never
    before the document's own date."""
    own = record.invoice_date if isinstance(record, Invoice) else record.memo_date
    return max(record.status_date or _utc_date(record.updated_at), own)


def _billing_date(posting: Posting, now: datetime) -> date:
    """The date ``posting/documents.py`` gives the posting's document (before any re-dating)."""
    operation = posting.operation
    if operation == Operation.POST_INVOICE:
        return posting.invoice.invoice_date  # type: ignore[union-attr]
    if operation == Operation.VOID_INVOICE:
        invoice = posting.invoice
        assert invoice is not None
        if invoice.status != Invoice.STATUS_VOID:  # an amended version: voided the day it is sent
            return max(timezone.localdate(posting.posted_at or now), invoice.invoice_date)
        return _status_date(invoice)
    if operation == Operation.WRITE_OFF:
        return _status_date(posting.invoice)  # type: ignore[arg-type]
    if operation == Operation.POST_CREDIT_MEMO:
        memo = posting.credit_memo
        assert memo is not None and memo.invoice is not None
        return max(memo.memo_date, memo.invoice.invoice_date)
    if operation == Operation.REFUND_CREDIT_MEMO:
        memo = posting.credit_memo
        assert memo is not None
        return memo.status_date or memo.memo_date
    if operation == Operation.VOID_CREDIT_MEMO:
        return _status_date(posting.credit_memo)  # type: ignore[arg-type]
    if operation in APPLICATION_OPERATIONS:
        application = posting.payment_application
        assert application is not None and application.invoice is not None
        return max(_utc_date(application.payment.settled_at), application.invoice.invoice_date)
    if operation == Operation.RECEIVE_ON_ACCOUNT:
        return _utc_date(posting.payment.settled_at)  # type: ignore[union-attr]
    dispute = posting.dispute
    assert dispute is not None
    if operation == Operation.WITHDRAW_DISPUTED_FUNDS:
        return dispute.opened_on
    return dispute.closed_on or _utc_date(dispute.updated_at)


def erp_date(posting: Posting, now: datetime | None = None) -> date:
    """The date the ERP files the posting's document under: the re-dated day, else billing's."""
    redated = getattr(posting, "redated", None)
    if redated is not None:
        return redated.posted_date  # type: ignore[no-any-return]
    return _billing_date(posting, now or timezone.now())


def _currency(posting: Posting) -> str:
    operation = posting.operation
    if operation in INVOICE_OPERATIONS:
        return posting.invoice.currency  # type: ignore[union-attr]
    if operation in MEMO_OPERATIONS:
        return posting.credit_memo.currency  # type: ignore[union-attr]
    if operation in APPLICATION_OPERATIONS:
        return posting.payment_application.payment.currency  # type: ignore[union-attr]
    if operation == Operation.RECEIVE_ON_ACCOUNT:
        return posting.payment.currency  # type: ignore[union-attr]
    return posting.dispute.currency  # type: ignore[union-attr]


class _Accounts:
    """The connection's mappings resolved as ``posting/documents.py`` resolves them, once per key chain."""

    def __init__(self) -> None:
        self._resolved: dict[tuple[int, str, tuple[str, ...]], str] = {}
        self._item_revenue: dict[str, bool] = {}

    def resolve(self, connection: ERPConnection, kind: str, keys: Iterable[str]) -> str:
        chain = tuple(keys)
        cache_key = (connection.pk, kind, chain)
        if cache_key not in self._resolved:
            try:
                self._resolved[cache_key] = resolve_mapping(connection, kind, list(chain)) or UNMAPPED
            except MissingMapping:
                self._resolved[cache_key] = UNMAPPED
        return self._resolved[cache_key]

    def books_revenue_on_items(self, connection: ERPConnection) -> bool:
        if connection.kind not in self._item_revenue:
            unused = mapping_kinds(connection, "unused_mappings")
            self._item_revenue[connection.kind] = Mapping.KIND_REVENUE_ACCOUNT in unused
        return self._item_revenue[connection.kind]

    def revenue(self, connection: ERPConnection, keys: list[str]) -> tuple[str, str]:
        """(mapping kind, account) a line's revenue is booked to."""
        account = self.resolve(connection, Mapping.KIND_REVENUE_ACCOUNT, keys)
        if account == UNMAPPED and self.books_revenue_on_items(connection):
            return Mapping.KIND_ITEM, self.resolve(connection, Mapping.KIND_ITEM, keys)
        return Mapping.KIND_REVENUE_ACCOUNT, account


def _line_keys(line: InvoiceLine | None) -> list[str]:
    """The key chain of a line's revenue account and tax code: price, product, revenue category."""
    if line is None:
        return ["", "", ""]
    product = line.product
    return [line.price_id, product.source_id if product else "", product.revenue_category if product else ""]


Split = list[tuple[str, str, int]]  # (mapping kind, account, amount in minor units)


@dataclass
class _Lines:
    invoice: dict[int, list[InvoiceLine]] = field(default_factory=lambda: defaultdict(list))
    memo: dict[int, list[CreditMemoLine]] = field(default_factory=lambda: defaultdict(list))
    credited: dict[tuple[int, str], InvoiceLine] = field(default_factory=dict)  # (invoice, billing line id)


class _DocumentsOfMonth:
    def __init__(self, legal_entity: LegalEntity, start: date, end: date, now: datetime) -> None:
        self.legal_entity = legal_entity
        self.start, self.end, self.now = start, end, now
        self.accounts = _Accounts()
        self._posted: dict[tuple[str, str, str], TypeTotal] = {}
        self._accounts: dict[tuple[str, str, str, str, str], AccountTotal] = {}
        self._pending: dict[tuple[str, str, str, str], PendingTotal] = {}
        self._connections: dict[str, ERPConnection] = {}
        self._write_off_keys: dict[int, str] = {}
        self.redated: list[Redated] = []

    def _postings(self) -> Iterable[Posting]:
        return (
            Posting.objects.filter(operation__in=list(TYPE_OF))
            .exclude(state=PostingState.SKIPPED)
            .filter(of_entity(self.legal_entity))
            .filter(_may_be_dated_in(self.start, self.end))
            .select_related(
                "invoice",
                "credit_memo__invoice",
                "payment_application__payment",
                "payment_application__invoice",
                "payment__customer",
                "dispute",
                "redated",
            )
            .order_by("pk")
            .iterator(chunk_size=2000)
        )

    def load(self) -> None:
        # One instance per connection rather than one per posting row: the month can hold many.
        connections = {c.pk: c for c in ERPConnection.objects.all()}
        in_month: list[Posting] = []
        for posting in self._postings():
            posting.connection = connections[posting.connection_id]
            redated = getattr(posting, "redated", None)
            on = erp_date(posting, self.now)
            dated_here = self.start <= on <= self.end
            if redated is not None and (dated_here or self.start <= redated.original_date <= self.end):
                self.redated.append(self._redated_row(posting, redated))
            if dated_here:
                in_month.append(posting)
        lines = self._lines(in_month)
        versions = self._voided_versions(in_month)
        self._write_off_keys.update(self._customer_entities(in_month))
        for posting in in_month:
            self._connections[posting.connection.name] = posting.connection
            amount, split = self._amount_and_split(posting, lines, versions)
            document_type = TYPE_OF[posting.operation]
            currency = _currency(posting)
            if posting.state != PostingState.POSTED:
                pending = self._pending.setdefault(
                    (posting.connection.name, currency, document_type, posting.state),
                    PendingTotal(posting.connection.name, currency, document_type, posting.state),
                )
                pending.count += 1
                pending.amount_minor += amount or 0
                continue
            total = self._posted.setdefault(
                (posting.connection.name, currency, document_type),
                TypeTotal(posting.connection.name, currency, document_type),
            )
            total.count += 1
            if amount is None:
                total.amount_unknown += 1
            else:
                total.amount_minor += amount
            for kind, account, part in split:
                row = self._accounts.setdefault(
                    (posting.connection.name, currency, kind, account, document_type),
                    AccountTotal(posting.connection.name, currency, kind, account, document_type),
                )
                row.documents.add(posting.pk)
                row.amount_minor += part
                if posting.posted_at and (row.first_posted_at is None or posting.posted_at < row.first_posted_at):
                    row.first_posted_at = posting.posted_at
        self._flag_mapping_changes()
        self.redated.sort(key=lambda r: (r.posted_date, r.connection, r.reference))

    def _lines(self, postings: list[Posting]) -> _Lines:
        """The lines of the month's invoices and credit notes, and the invoice lines credit lines credit."""
        invoice_ids = {
            p.invoice_id for p in postings if p.operation in (Operation.POST_INVOICE, Operation.VOID_INVOICE)
        }
        memos = {
            p.credit_memo_id: p.credit_memo.invoice_id  # type: ignore[union-attr]
            for p in postings
            if p.operation in (Operation.POST_CREDIT_MEMO, Operation.VOID_CREDIT_MEMO)
        }
        found = _Lines()
        for line in (
            InvoiceLine.objects.filter(invoice_id__in=invoice_ids | set(memos.values()))
            .select_related("product")
            .order_by("invoice_id", "position")
        ):
            if line.invoice_id in invoice_ids:
                found.invoice[line.invoice_id].append(line)
            if line.source_line_id:
                found.credited.setdefault((line.invoice_id, line.source_line_id), line)
        for memo_line in CreditMemoLine.objects.filter(credit_memo_id__in=list(memos)).order_by(
            "credit_memo_id", "position"
        ):
            found.memo[memo_line.credit_memo_id].append(memo_line)
        return found

    @staticmethod
    def _customer_entities(postings: list[Posting]) -> dict[int, str]:
        """Per written-off invoice, its customer's legal entity code: what keys the write-off method."""
        ids = [p.invoice_id for p in postings if p.operation == Operation.WRITE_OFF]
        rows = Invoice.objects.filter(pk__in=ids).values_list("pk", "customer__legal_entity__code")
        return {pk: code or "" for pk, code in rows}

    def _voided_versions(self, postings: list[Posting]) -> dict[str, int]:
        """The revision each invoice void cancels (its parent posting's)."""
        keys = {p.depends_on_key for p in postings if p.operation == Operation.VOID_INVOICE}
        return dict(Posting.objects.filter(idempotency_key__in=keys).values_list("idempotency_key", "revision"))

    def _amount_and_split(self, posting: Posting, lines: _Lines, versions: dict[str, int]) -> tuple[int | None, Split]:
        connection, operation = posting.connection, posting.operation
        if operation in (Operation.POST_INVOICE, Operation.VOID_INVOICE):
            invoice = posting.invoice
            assert invoice is not None
            revision = posting.revision if operation == Operation.POST_INVOICE else versions.get(posting.depends_on_key)
            if revision != invoice.revision:
                return None, []  # an earlier version: the ledger holds only the newest one's amounts
            split = self._invoice_split(connection, [(line, line) for line in lines.invoice[invoice.pk]])
            return invoice.total_minor, split
        if operation in (Operation.POST_CREDIT_MEMO, Operation.VOID_CREDIT_MEMO):
            memo = posting.credit_memo
            assert memo is not None
            # A credited line keeps the revenue account and tax of the invoice line it credits; a
            # custom credit (goodwill) takes the defaults.
            pairs = [
                (line, lines.credited.get((memo.invoice_id, line.invoice_line_source_id)))  # type: ignore[arg-type]
                for line in lines.memo[memo.pk]
            ]
            return memo.total_minor, self._invoice_split(connection, pairs)
        if operation in APPLICATION_OPERATIONS:
            application = posting.payment_application
            assert application is not None
            if operation == Operation.APPLY_CREDIT:
                return application.amount_minor, [(RECEIVABLE, "Receivable", application.amount_minor)]
            journal = self.accounts.resolve(connection, Mapping.KIND_PAYMENT_JOURNAL, [application.payment.method])
            return application.amount_minor, [(Mapping.KIND_PAYMENT_JOURNAL, journal, application.amount_minor)]
        if operation == Operation.RECEIVE_ON_ACCOUNT:
            payment = posting.payment
            assert payment is not None
            journal = self.accounts.resolve(connection, Mapping.KIND_PAYMENT_JOURNAL, [payment.method])
            return payment.on_account_minor, [(Mapping.KIND_PAYMENT_JOURNAL, journal, payment.on_account_minor)]
        if operation == Operation.REFUND_CREDIT_MEMO:
            memo = posting.credit_memo
            assert memo is not None
            journal = self.accounts.resolve(connection, Mapping.KIND_PAYMENT_JOURNAL, ["refund"])
            return memo.refunded_minor, [(Mapping.KIND_PAYMENT_JOURNAL, journal, memo.refunded_minor)]
        if operation == Operation.WRITE_OFF:
            invoice = posting.invoice
            assert invoice is not None
            unpaid = invoice.total_minor - invoice.amount_paid_minor
            keys = [self._write_off_keys.get(invoice.pk, "")]
            method = self.accounts.resolve(connection, Mapping.KIND_WRITE_OFF_METHOD, keys)
            return unpaid, [(Mapping.KIND_WRITE_OFF_METHOD, method, unpaid)]
        dispute = posting.dispute
        assert dispute is not None
        kind = (
            Mapping.KIND_DISPUTE_LOSS_ACCOUNT if operation == Operation.LOSE_DISPUTE else Mapping.KIND_DISPUTE_ACCOUNT
        )
        account = self.accounts.resolve(connection, kind, [self.legal_entity.code])
        return dispute.amount_minor, [(kind, account, dispute.amount_minor)]

    def _invoice_split(
        self, connection: ERPConnection, pairs: list[tuple[InvoiceLine | CreditMemoLine, InvoiceLine | None]]
    ) -> Split:
        """Each line's amount to its revenue account and its tax to its tax code; ``pairs`` gives,
        per line, the invoice line whose price and product choose them (None: the defaults)."""
        split: Split = []
        for line, priced_by in pairs:
            keys = _line_keys(priced_by)
            kind, account = self.accounts.revenue(connection, keys)
            split.append((kind, account, line.amount_minor))
            if line.tax_minor:
                split.append(
                    (
                        Mapping.KIND_TAX_CODE,
                        self.accounts.resolve(connection, Mapping.KIND_TAX_CODE, keys),
                        line.tax_minor,
                    )
                )
        return split

    def _redated_row(self, posting: Posting, redated: RedatedPosting) -> Redated:
        self._write_off_keys.update(self._customer_entities([posting]))
        lines = self._lines([posting])
        amount, _ = self._amount_and_split(posting, lines, self._voided_versions([posting]))
        return Redated(
            posting_id=posting.pk,
            connection=posting.connection.name,
            document_type=TYPE_OF[posting.operation],
            reference=posting.external_ref,
            currency=_currency(posting),
            amount_minor=amount,
            original_date=redated.original_date,
            posted_date=redated.posted_date,
            reason=redated.get_reason_display(),
            erp_message=redated.erp_message,
            state=posting.state,
            erp_number=posting.erp_number or posting.erp_id,
        )

    def _flag_mapping_changes(self) -> None:
        """Mark the account rows whose mappings changed (an audited change) after some of their
        documents were posted."""
        firsts = [row.first_posted_at for row in self._accounts.values() if row.first_posted_at]
        if not firsts:
            return
        changes = _mapping_changes(since=min(firsts), connections=list(self._connections.values()))
        for row in self._accounts.values():
            kinds = [row.kind]
            if row.kind == Mapping.KIND_ITEM:  # booked on the item because no revenue account is mapped
                kinds.append(Mapping.KIND_REVENUE_ACCOUNT)
            moments = [changes[(row.connection, kind)] for kind in kinds if (row.connection, kind) in changes]
            if row.first_posted_at and moments and max(moments) > row.first_posted_at:
                row.mapping_changed_at = max(moments)

    def posted_totals(self) -> list[TypeTotal]:
        order = {value: index for index, value in enumerate(CloseType.values)}
        return sorted(self._posted.values(), key=lambda t: (t.connection, t.currency, order[t.document_type]))

    def account_totals(self) -> list[AccountTotal]:
        kinds = {value: index for index, value in enumerate(ACCOUNT_KINDS)}
        order = {value: index for index, value in enumerate(CloseType.values)}
        return sorted(
            self._accounts.values(),
            key=lambda a: (a.connection, a.currency, kinds.get(a.kind, 99), a.account, order[a.document_type]),
        )

    def pending_totals(self) -> list[PendingTotal]:
        order = {value: index for index, value in enumerate(CloseType.values)}
        return sorted(self._pending.values(), key=lambda t: (t.connection, t.currency, order[t.document_type], t.state))

    def scopes(self) -> set[tuple[str, str]]:
        return {(t.connection, t.currency) for t in self._posted.values()} | {
            (t.connection, t.currency) for t in self._pending.values()
        }


def _mapping_changes(*, since: datetime, connections: list[ERPConnection]) -> dict[tuple[str, str], datetime]:
    """The latest audited change since ``since`` of each (connection name, mapping kind)."""
    names = {c.pk: c.name for c in connections}
    events = list(
        AuditEvent.objects.filter(object_type="routing.mapping", at__gt=since).values_list("object_id", "at", "before")
    )
    if not events:
        return {}
    ids = {int(object_id) for object_id, _, _ in events if object_id.isdigit()}
    mappings = {
        str(pk): (names.get(connection_id), kind)
        for pk, connection_id, kind in Mapping.objects.filter(pk__in=ids).values_list("pk", "connection_id", "kind")
    }
    latest: dict[tuple[str, str], datetime] = {}
    for object_id, at, before in events:
        name, kind = mappings.get(object_id, (None, ""))
        if name is None and isinstance(before, dict) and isinstance(before.get("mapping"), str):
            # A removed mapping: its row is gone; the audit entry names it "<connection> <kind> <key> → …".
            text = before["mapping"]
            for candidate in names.values():
                for known in ACCOUNT_KINDS:
                    if text.startswith(f"{candidate} {known} "):
                        name, kind = candidate, known
        if name is None:
            continue
        if at > latest.get((name, kind), since):
            latest[(name, kind)] = at
    return latest


# -- cases, differences, coverage, backlog ---------------------------------------------------------


def close_age_bucket(age: timedelta) -> AgeBucket:
    for bucket in CLOSE_AGE_BUCKETS:
        if bucket.below is None or age < bucket.below:
            return bucket
    raise AssertionError("the last age bucket has no bound")


def open_cases(legal_entity: LegalEntity) -> QuerySet[ExceptionCase]:
    """The entity's open cases, oldest first."""
    return (
        ExceptionCase.objects.filter(status=CaseStatus.OPEN, legal_entity=legal_entity)
        .select_related("connection")
        .order_by("opened_at", "id")
    )


def _open_cases(legal_entity: LegalEntity, now: datetime) -> tuple[list[CaseAging], list[ExceptionCase], int]:
    cases = open_cases(legal_entity)
    rows: dict[tuple[str, str], CaseAging] = {}
    count = 0
    for owner_group, kind, opened_at in cases.order_by().values_list("owner_group", "kind", "opened_at"):
        count += 1
        row = rows.setdefault(
            (owner_group, kind),
            CaseAging(owner_group, kind, dict.fromkeys((b.key for b in CLOSE_AGE_BUCKETS), 0), opened_at),
        )
        row.buckets[close_age_bucket(now - opened_at).key] += 1
        row.oldest_opened_at = min(row.oldest_opened_at, opened_at)
    listed = list(cases[:LISTED])
    return sorted(rows.values(), key=lambda r: (r.owner_group, r.oldest_opened_at)), listed, count


def at_stake(difference: Difference) -> int:
    for amount in (difference.ledger_amount_minor, difference.billing_amount_minor, difference.erp_amount_minor):
        if amount is not None:
            return amount
    return 0


def differences_left(legal_entity: LegalEntity, start: date, end: date) -> QuerySet[Difference]:
    """The open differences of the runs whose period overlaps the month."""
    return (
        Difference.objects.open()
        .filter(run__legal_entity=legal_entity, run__period_start__lte=end, run__period_end__gte=start)
        .select_related("run__connection", "case")
        .order_by("run__connection__name", "currency", "kind", "document_type", "source_id")
    )


def _differences_left(
    legal_entity: LegalEntity, start: date, end: date
) -> tuple[list[DifferenceTotal], list[Difference], int]:
    totals: dict[tuple[str, str, str], DifferenceTotal] = {}
    rows: list[Difference] = []
    count = 0
    for difference in differences_left(legal_entity, start, end).iterator(2000):
        count += 1
        key = (difference.run.connection.name, difference.currency, difference.kind)
        total = totals.setdefault(key, DifferenceTotal(*key, difference.get_kind_display()))
        total.count += 1
        total.amount_minor += at_stake(difference)
        if len(rows) < LISTED:
            rows.append(difference)
    return list(totals.values()), rows, count


def _coverage(legal_entity: LegalEntity, start: date, end: date, scopes: set[tuple[str, str]]) -> list[Coverage]:
    runs = (
        ReconciliationRun.objects.filter(
            legal_entity=legal_entity, status=RunStatus.COMPLETED, period_start__lte=start, period_end__gte=end
        )
        .select_related("connection")
        .order_by("-finished_at")
    )
    latest: dict[tuple[str, str], ReconciliationRun] = {}
    for run in runs:
        latest.setdefault((run.connection.name, run.currency), run)
    return [Coverage(name, currency, latest.get((name, currency))) for name, currency in sorted(scopes | set(latest))]


def _backlog(legal_entity: LegalEntity) -> list[BacklogScope]:
    scopes: dict[int, BacklogScope] = {}
    runs = {
        run.pk: run
        for run in ReconciliationRun.objects.latest_completed()
        .filter(legal_entity=legal_entity, difference_count__gt=0)
        .select_related("connection")
    }
    counts = (
        Difference.objects.filter(run_id__in=list(runs))
        .order_by()
        .values_list("run_id", "heal_action")
        .annotate(n=Count("id"))
    )
    for run_id, action, n in counts:
        scope = scopes.setdefault(run_id, BacklogScope(runs[run_id]))
        scope.total += n
        if action in HEALING:
            scope.healing += n
        elif action in HELD_BY_CASE:
            scope.held_by_case += n
        elif action == HealAction.DECIDED:
            scope.decided += n
        else:
            scope.not_acted_on += n
    return sorted(
        scopes.values(),
        key=lambda s: (s.run.period_start, s.run.connection.name, s.run.currency),
    )
