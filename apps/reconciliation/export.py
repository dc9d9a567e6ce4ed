"""A run's totals and differences as CSV and as an XLSX workbook (openpyxl) for finance, and the
month-end close report as a workbook for the controller. Amounts are decimals in their currency
(each difference names its currencies when they disagree)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

from openpyxl import Workbook

from apps.core.money import to_decimal
from apps.posting.models import PostingState
from apps.reconciliation import close
from apps.reconciliation.models import Difference, DocumentType, ReconciliationRun, Side

DIFFERENCE_COLUMNS = [
    "run",
    "kind",
    "document_type",
    "source",
    "document",
    "erp_reference",
    "document_date",
    "currency",
    "billing_amount",
    "ledger_amount",
    "erp_amount",
    "billing_currency",
    "erp_currency",
    "billing_status",
    "ledger_status",
    "erp_status",
    "erp_documents",
    "heal_action",
    "heal_detail",
    "case",
    "description",
]
TOTAL_COLUMNS = ["document_type", *(f"{side}_{what}" for side in Side.values for what in ("count", "amount"))]


def _amount(minor: int | None, currency: str) -> Decimal | None:
    if minor is None or not currency:
        return None
    return to_decimal(minor, currency)


def total_rows(run: ReconciliationRun) -> list[list[object]]:
    totals = {(t.side, t.document_type): t for t in run.totals.all()}
    rows: list[list[object]] = []
    for document_type in DocumentType.values:
        row: list[object] = [DocumentType(document_type).label]
        for side in Side.values:
            total = totals.get((side, document_type))
            row += [total.count if total else 0, _amount(total.amount_minor if total else 0, run.currency)]
        rows.append(row)
    return rows


def difference_rows(run: ReconciliationRun) -> Iterator[list[object]]:
    for d in Difference.objects.filter(run=run).order_by("kind", "document_type", "source_id").iterator(2000):
        yield [
            run.pk,
            d.get_kind_display(),
            d.get_document_type_display(),
            d.source,
            d.source_id,
            d.external_ref,
            d.document_date,
            d.currency,
            _amount(d.billing_amount_minor, d.billing_currency or d.currency),
            _amount(d.ledger_amount_minor, d.currency),
            _amount(d.erp_amount_minor, d.erp_currency or d.currency),
            d.billing_currency,
            d.erp_currency,
            d.billing_status,
            d.ledger_status,
            d.erp_status,
            "; ".join(f"{e.get('number') or e.get('erp_id')} ({e.get('status')})" for e in d.erp_documents),
            d.get_heal_action_display() if d.heal_action else "",
            d.heal_detail,
            d.case_id or "",
            d.description,
        ]


def as_csv(run: ReconciliationRun) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(DIFFERENCE_COLUMNS)
    for row in difference_rows(run):
        writer.writerow(["" if value is None else value for value in row])
    return out.getvalue()


def as_xlsx(run: ReconciliationRun) -> bytes:
    book = Workbook(write_only=True)
    summary = book.create_sheet("Totals")
    summary.append(["Reconciliation run", run.pk])
    summary.append(["Scope", run.scope_label])
    summary.append(["Status", run.get_status_display()])
    summary.append(["Finished", run.finished_at.replace(tzinfo=None) if run.finished_at else None])
    summary.append(["Documents compared", run.documents_compared])
    summary.append(["Differences", run.difference_count])
    summary.append([])
    summary.append(TOTAL_COLUMNS)
    for row in total_rows(run):
        summary.append(row)
    sheet = book.create_sheet("Differences")
    sheet.append(DIFFERENCE_COLUMNS)
    for row in difference_rows(run):
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


# -- the month-end close report --------------------------------------------------------------------


def _naive(moment: datetime | None) -> datetime | None:
    """openpyxl writes no time zones: datetimes go out as UTC wall time."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


POSTED_COLUMNS = ["connection", "currency", "document_type", "documents", "amount", "documents_without_amount"]
ACCOUNT_COLUMNS = [
    "connection",
    "currency",
    "mapping_kind",
    "account",
    "document_type",
    "documents",
    "amount",
    "mapping_changed_since_posting",
]
PENDING_COLUMNS = ["connection", "currency", "document_type", "state", "documents", "amount"]
CASE_COLUMNS = [
    "case",
    "opened_at_utc",
    "age_days",
    "age",
    "owner_group",
    "kind",
    "connection",
    "document",
    "message",
]
CLOSE_DIFFERENCE_COLUMNS = [
    "run",
    "connection",
    "period",
    "kind",
    "document_type",
    "document",
    "currency",
    "amount_at_stake",
    "billing_amount",
    "ledger_amount",
    "erp_amount",
    "heal_action",
    "case",
    "description",
]
COVERAGE_COLUMNS = ["connection", "currency", "covering_run", "period", "finished_at_utc", "differences"]
BACKLOG_COLUMNS = [
    "run",
    "connection",
    "currency",
    "period",
    "finished_at_utc",
    "open_differences",
    "healing",
    "held_by_cases",
    "decided_not_to_post",
    "not_acted_on",
]
REDATED_COLUMNS = [
    "posting",
    "connection",
    "document_type",
    "document",
    "currency",
    "amount",
    "billing_date",
    "erp_date",
    "direction",
    "reason",
    "posting_state",
    "erp_number",
    "erp_message",
]


def close_as_xlsx(report: close.CloseReport) -> bytes:
    """The close report as a workbook for the controller: one sheet per section, every row (the
    page lists at most ``close.LISTED`` cases and differences)."""
    entity, start, end = report.legal_entity, report.month_start, report.month_end
    book = Workbook(write_only=True)

    summary = book.create_sheet("Summary")
    for row in (
        ["Month-end close report", f"{entity.code} {entity.name}"],
        ["Month", report.month],
        ["Period", f"{start.isoformat()} to {end.isoformat()}"],
        ["Generated (UTC)", _naive(report.generated_at)],
        ["Documents posted", sum(t.count for t in report.posted)],
        ["Documents not posted yet", sum(t.count for t in report.pending)],
        ["Open exception cases", report.case_count],
        ["Reconciliation differences left in the month", report.difference_count],
        ["Reconciliation backlog (all periods)", report.backlog_count],
        ["Re-dated documents", len(report.redated)],
        [],
        ["How to read it", close.READING_NOTE],
    ):
        summary.append(row)

    posted = book.create_sheet("Posted by type")
    posted.append(POSTED_COLUMNS)
    for total in report.posted:
        posted.append(
            [
                total.connection,
                total.currency,
                total.label,
                total.count,
                _amount(total.amount_minor, total.currency),
                total.amount_unknown,
            ]
        )

    accounts = book.create_sheet("Posted by account")
    accounts.append(ACCOUNT_COLUMNS)
    for account in report.accounts:
        accounts.append(
            [
                account.connection,
                account.currency,
                account.kind_label,
                account.account,
                account.label,
                account.count,
                _amount(account.amount_minor, account.currency),
                _naive(account.mapping_changed_at),
            ]
        )

    pending = book.create_sheet("Not posted yet")
    pending.append(PENDING_COLUMNS)
    for waiting in report.pending:
        pending.append(
            [
                waiting.connection,
                waiting.currency,
                waiting.label,
                waiting.state_label,
                waiting.count,
                _amount(waiting.amount_minor, waiting.currency),
            ]
        )

    aging = book.create_sheet("Case aging")
    aging.append(["owner_group", "kind", *(b.label for b in close.CLOSE_AGE_BUCKETS), "total"])
    for row in report.case_aging:
        aging.append([row.owner_group, row.kind, *(row.buckets[b.key] for b in close.CLOSE_AGE_BUCKETS), row.total])
    totals = report.case_bucket_totals
    aging.append(["All", "", *(totals[b.key] for b in close.CLOSE_AGE_BUCKETS), report.case_count])

    cases = book.create_sheet("Open cases")
    cases.append(CASE_COLUMNS)
    for case in close.open_cases(entity).iterator(2000):
        age = report.generated_at - case.opened_at
        cases.append(
            [
                case.pk,
                _naive(case.opened_at),
                age.days,
                close.close_age_bucket(age).label,
                case.owner_group,
                case.kind,
                case.connection.name if case.connection else "",
                case.external_ref,
                case.message,
            ]
        )

    differences = book.create_sheet("Differences left")
    differences.append(CLOSE_DIFFERENCE_COLUMNS)
    for d in close.differences_left(entity, start, end).iterator(2000):
        differences.append(
            [
                d.run_id,
                d.run.connection.name,
                f"{d.run.period_start.isoformat()} to {d.run.period_end.isoformat()}",
                d.get_kind_display(),
                d.get_document_type_display(),
                d.document_ref,
                d.currency,
                _amount(close.at_stake(d), d.currency),
                _amount(d.billing_amount_minor, d.billing_currency or d.currency),
                _amount(d.ledger_amount_minor, d.currency),
                _amount(d.erp_amount_minor, d.erp_currency or d.currency),
                d.get_heal_action_display() if d.heal_action else "",
                d.case_id or "",
                d.description,
            ]
        )

    coverage = book.create_sheet("Reconciled")
    coverage.append(COVERAGE_COLUMNS)
    for covered in report.coverage:
        run = covered.run
        coverage.append(
            [
                covered.connection,
                covered.currency,
                run.pk if run else "not reconciled",
                f"{run.period_start.isoformat()} to {run.period_end.isoformat()}" if run else "",
                _naive(run.finished_at) if run else None,
                run.difference_count if run else None,
            ]
        )

    backlog = book.create_sheet("Reconciliation backlog")
    backlog.append(BACKLOG_COLUMNS)
    for scope in report.backlog:
        run = scope.run
        backlog.append(
            [
                run.pk,
                run.connection.name,
                run.currency,
                f"{run.period_start.isoformat()} to {run.period_end.isoformat()}",
                _naive(run.finished_at),
                scope.total,
                scope.healing,
                scope.held_by_case,
                scope.decided,
                scope.not_acted_on,
            ]
        )

    redated = book.create_sheet("Re-dated")
    redated.append(REDATED_COLUMNS)
    for moved in report.redated:
        redated.append(
            [
                moved.posting_id,
                moved.connection,
                moved.label,
                moved.reference,
                moved.currency,
                _amount(moved.amount_minor, moved.currency),
                moved.original_date,
                moved.posted_date,
                moved.direction(start, end),
                moved.reason,
                PostingState(moved.state).label,
                moved.erp_number,
                moved.erp_message,
            ]
        )

    out = io.BytesIO()
    book.save(out)
    return out.getvalue()
