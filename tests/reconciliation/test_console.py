"""The reconciliation console, the command, the schedule and the metrics gauge, on books kept in the
Tryton contract simulator: a finance user starts a run, reads its totals side by side and its
differences by class, drills down to the documents, exports CSV and XLSX, and sees the trend."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from openpyxl import load_workbook

from apps.console.catalogue import AUDITORS, FINANCE
from apps.ledger.models import Invoice
from apps.observability import services as observability
from apps.posting.models import Operation, Posting
from apps.reconciliation import services, tasks
from apps.reconciliation.models import DifferenceKind, HealAction, ReconciliationRun, RunStatus, Side, Trigger
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.console.conftest import as_user, user_in
from tests.reconciliation.conftest import Books, invoice


def seeded(books: Books) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Three invoices in the ERP (one paid) and one whose plan was lost: missing in the ERP."""
    posted = [invoice(amount) for amount in (10000, 20000, 30000)]
    for obj in posted:
        books.webhook("invoice.finalized", obj)
    books.webhook("invoice.paid", se.paid(posted[1]))
    lost = invoice(4550)
    books.webhook("invoice.finalized", lost)
    Posting.objects.filter(source_id=lost["id"], operation=Operation.POST_INVOICE).delete()
    books.drain()
    return posted, lost


def run_page(client: Client, run: ReconciliationRun, **query: str) -> str:
    url = reverse("admin:reconciliation_reconciliationrun_change", args=[run.pk])
    response = client.get(url, query)
    assert response.status_code == 200
    return response.content.decode()


def test_a_finance_user_starts_a_run_and_reads_totals_differences_and_their_documents(sim_books: Books) -> None:
    _, lost = seeded(sim_books)
    finance = as_user(user_in(FINANCE, "fiona.finance"))
    listing = finance.get(reverse("admin:reconciliation_reconciliationrun_changelist"))
    assert "Start a reconciliation" in listing.content.decode()

    start, end = services.month_of(date.today())
    response = finance.post(
        reverse("admin:reconciliation_start"),
        {
            "connection": sim_books.connection.pk,
            "legal_entity": sim_books.legal_entity.pk,
            "currency": "usd",
            "period_start": start.isoformat(),
            "period_end": end.isoformat(),
            "heal": "",
        },
    )
    run = ReconciliationRun.objects.get()
    assert response.status_code == 302 and response["Location"].endswith(f"/{run.pk}/change/")
    assert (run.status, run.trigger, run.requested_by, run.currency, run.heal) == (
        RunStatus.QUEUED,
        Trigger.ADMIN,
        "fiona.finance",
        "USD",
        False,
    )
    # Asked again while it waits for a worker: refused, with the run that holds the scope.
    again = finance.post(reverse("admin:reconciliation_again", args=[run.pk]), follow=True)
    assert f"already queued (run {run.pk})" in again.content.decode()

    run = services.execute_run(run.pk)  # what the worker does with the message
    assert run.status == RunStatus.COMPLETED, run.error
    page = run_page(finance, run)
    assert "Totals side by side" in page
    # Stripe without API settings: billing is read from the ledger, and the run says so.
    assert "Billing source stripe-us (Stripe): the hub cannot list its documents through its API" in page
    assert '<tr class="disagree" data-type="invoice">' in page
    assert '<td class="num">4</td><td class="num">645.50</td>' in page  # billing and ledger: 4 invoices
    assert '<td class="num">3</td><td class="num">600.00</td>' in page  # the ERP: 3
    assert f'data-document="{lost["id"]}"' in page and '<h3 id="missing_in_erp">Missing in ERP (1)</h3>' in page
    assert reverse("admin:ledger_invoice_change", args=[Invoice.objects.get(source_id=lost["id"]).pk]) in page
    assert reverse("admin:console_timeline") + f"?q={lost['id']}" in page
    assert '<h3 id="duplicate_in_erp">' not in page  # only the classes found

    auditor = as_user(user_in(AUDITORS, "alice.auditor"))
    assert auditor.get(reverse("admin:reconciliation_start")).status_code == 403
    assert "Run this scope again" not in run_page(auditor, run)
    assert (
        "Start a reconciliation"
        not in auditor.get(reverse("admin:reconciliation_reconciliationrun_changelist")).content.decode()
    )


def test_exports_hold_every_difference_with_amounts_in_the_currency(sim_books: Books) -> None:
    _, lost = seeded(sim_books)
    run = sim_books.run(heal=False)
    finance = as_user(user_in(FINANCE, "fiona.finance"))

    response = finance.get(reverse("admin:reconciliation_export_csv", args=[run.pk]))
    assert response["Content-Disposition"] == f'attachment; filename="reconciliation-{run.pk}.csv"'
    [row] = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert (row["kind"], row["document_type"], row["document"]) == ("Missing in ERP", "Invoice", lost["id"])
    assert (row["billing_amount"], row["ledger_amount"], row["erp_amount"]) == ("45.50", "45.50", "")

    response = finance.get(reverse("admin:reconciliation_export_xlsx", args=[run.pk]))
    book = load_workbook(io.BytesIO(response.content))
    assert book.sheetnames == ["Totals", "Differences"]
    totals = {row[0]: row for row in book["Totals"].iter_rows(min_row=9, values_only=True)}
    assert totals["Invoice"][1:] == (4, Decimal("645.50"), 4, Decimal("645.50"), 3, Decimal("600.00"))
    assert totals["Payment"][1:] == (1, Decimal("200.00"), 1, Decimal("200.00"), 1, Decimal("200.00"))
    header, *rows = book["Differences"].iter_rows(values_only=True)
    [difference] = [dict(zip(header, r, strict=True)) for r in rows]
    assert (difference["document"], difference["ledger_amount"]) == (lost["id"], Decimal("45.50"))


def test_the_trend_shows_each_run_of_the_scope_by_class(sim_books: Books) -> None:
    _, lost = seeded(sim_books)
    first = sim_books.run(heal=False)
    wrong = invoice(1200)
    sim_books.webhook("invoice.finalized", wrong)
    sim_books.drain()
    erp_id = int(Posting.objects.get(source_id=wrong["id"], operation=Operation.POST_INVOICE).erp_id)
    assert sim_books.simulator is not None
    sim_books.simulator._db["account.invoice"][erp_id]["total_amount"] = Decimal("11.00")  # edited in the ERP
    second = sim_books.run(heal=False)

    assert {(d.kind, d.source_id) for d in second.differences.all()} == {
        (DifferenceKind.MISSING_IN_ERP, lost["id"]),
        (DifferenceKind.AMOUNT_MISMATCH, wrong["id"]),
    }
    trend = services.trend(second)
    assert trend["runs"] == [first.pk, second.pk]
    by_kind = {d["kind"]: d["data"] for d in trend["datasets"]}
    assert by_kind[DifferenceKind.MISSING_IN_ERP] == [1, 1] and by_kind[DifferenceKind.AMOUNT_MISMATCH] == [0, 1]
    page = run_page(as_user(user_in(FINANCE, "fiona.finance")), second)
    assert 'id="reconciliation-trend"' in page and "chart.umd.js" in page and "reconciliation/trend.js" in page
    only = run_page(as_user(user_in(AUDITORS, "alice.auditor")), second, kind=DifferenceKind.AMOUNT_MISMATCH)
    assert f'data-document="{wrong["id"]}"' in only and f'data-document="{lost["id"]}"' not in only


def test_the_command_prints_totals_and_differences_and_exits_1_when_it_found_some(
    sim_books: Books, capsys: pytest.CaptureFixture[str]
) -> None:
    _, lost = seeded(sim_books)
    out = io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command(
            "reconcile",
            "--connection=tryton-local",
            "--legal-entity=US01",
            "--currency=USD",
            "--no-heal",
            stdout=out,
        )
    assert exited.value.code == 1
    text = out.getvalue()
    assert "Invoice" in text and "645.50" in text and "600.00" in text
    assert "Missing in ERP: Invoice" in text and lost["id"] in text
    run = ReconciliationRun.objects.get()
    assert (run.trigger, run.heal, run.difference_count) == (Trigger.COMMAND, False, 1)


def test_the_schedule_runs_every_scope_with_invoices_this_month_and_the_gauge_counts_what_is_open(
    sim_books: Books,
) -> None:
    seeded(sim_books)
    entry = settings.CELERY_BEAT_SCHEDULE["reconcile-daily"]
    assert entry["task"] == "reconciliation.run_scheduled"
    assert observability.reconciliation_differences()["tryton-local"] == 0

    started = tasks.run_scheduled()  # what beat sends once a day
    [run] = ReconciliationRun.objects.filter(pk__in=started)
    assert (run.connection.name, run.legal_entity.code, run.currency, run.trigger) == (
        "tryton-local",
        "US01",
        "USD",
        Trigger.SCHEDULE,
    )
    assert services.scheduled_scopes(date.today()) == [
        {
            "connection": sim_books.connection,
            "legal_entity": sim_books.legal_entity,
            "currency": "USD",
            "period_start": run.period_start,
            "period_end": run.period_end,
        }
    ]
    assert services.start_scheduled() == []  # the same scope is already queued
    assert tasks.run_reconciliation(run.pk) == RunStatus.COMPLETED  # what the worker does with its message
    assert observability.reconciliation_differences() == {"tryton-local": 1}


def test_a_connection_whose_connector_cannot_list_the_erp_compares_billing_with_the_ledger_only(
    sim_books: Books,
) -> None:
    seeded(sim_books)
    xero = ERPConnection.objects.create(
        name="xero-us", kind="xero", settings={"client_id": "id", "client_secret": "secret"}
    )
    Posting.objects.filter(source="stripe-us").update(connection=xero)
    start, end = services.month_of(date.today())
    requested = services.request_run(
        connection=xero,
        legal_entity=sim_books.legal_entity,
        currency="USD",
        period_start=start,
        period_end=end,
        trigger=Trigger.COMMAND,
        actor="test",
    )
    run = services.execute_run(requested.pk)
    assert run.status == RunStatus.COMPLETED and not run.erp_read
    assert "The Xero connector cannot list what the ERP holds yet" in run.notes
    assert run.difference_count == 0
    totals = {(t.side, t.document_type): t.count for t in run.totals.all()}
    assert totals[(Side.LEDGER, "invoice")] == 3 and totals[(Side.ERP, "invoice")] == 0


def test_a_document_the_hub_posted_that_the_erp_no_longer_lists_is_a_case_not_a_second_posting(
    sim_books: Books,
) -> None:
    obj = invoice(7700)
    sim_books.webhook("invoice.finalized", obj)
    sim_books.drain()
    posting = Posting.objects.get(source_id=obj["id"], operation=Operation.POST_INVOICE)
    assert sim_books.simulator is not None
    sim_books.simulator._remove("account.invoice", int(posting.erp_id))  # gone from the ERP's books
    before = Posting.objects.count()

    run = sim_books.run()

    [difference] = run.differences.all()
    assert (difference.kind, difference.posting_id, difference.heal_action) == (
        DifferenceKind.MISSING_IN_ERP,
        posting.pk,
        HealAction.CASE_OPENED,
    )
    assert Posting.objects.count() == before  # nothing planned twice
    case = difference.case
    assert case is not None and case.code == "reconciliation_missing_in_erp"
    assert f"The hub recorded it as posted (ERP id {posting.erp_id}" in case.message
    assert case.invoice is not None and case.invoice.source_id == obj["id"]
    finance = as_user(user_in(FINANCE, "fiona.finance"))
    page = finance.get(reverse("admin:console_exceptioncase_change", args=[case.pk])).content.decode()
    assert "Reconciliation: missing in erp" in page and "The hub recorded it as posted" in page
    open_list = finance.get(reverse("admin:reconciliation_difference_changelist")).content.decode()
    assert obj["id"] in open_list and "77.00" in open_list
    drill = finance.get(reverse("admin:reconciliation_difference_change", args=[difference.pk]))
    assert drill.status_code == 302 and f"#difference-{difference.pk}" in drill["Location"]
