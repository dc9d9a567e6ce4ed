"""A run's totals and differences as CSV and as an XLSX workbook (openpyxl) for finance. Amounts are
decimals in the run's currency (each difference names its currencies when they disagree)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from decimal import Decimal

from openpyxl import Workbook

from apps.core.money import to_decimal
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
