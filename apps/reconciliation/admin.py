"""The reconciliation console: runs (started from here, the schedule or ``manage.py reconcile``), a
page per run with the three sides' totals side by side, the differences by class with their
documents, CSV and XLSX exports, and the trend of the scope's differences run after run; and the
month-end close report of a legal entity (``close/``), as a page and as XLSX."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from apps.core.money import to_decimal
from apps.ledger.models import LegalEntity
from apps.posting.models import PostingState
from apps.reconciliation import close, export, services
from apps.reconciliation.models import (
    Difference,
    DifferenceKind,
    DocumentType,
    ReconciliationRun,
    Side,
    Trigger,
)
from apps.routing.models import ERPConnection

SHOWN_PER_KIND = 200
WRITEBACK_KINDS = ("stripe", "chargebee", "lago", "recurly")


class StartRunForm(forms.Form):
    connection = forms.ModelChoiceField(
        queryset=ERPConnection.objects.filter(active=True).exclude(kind__in=WRITEBACK_KINDS).order_by("name")
    )
    legal_entity = forms.ModelChoiceField(queryset=LegalEntity.objects.order_by("code"))
    currency = forms.CharField(max_length=3, help_text="ISO 4217, e.g. USD.")
    period_start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    period_end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), help_text="Included.")
    heal = forms.BooleanField(
        required=False,
        initial=True,
        help_text="Re-plan what is safe to post again (original idempotency keys) and open cases for the rest.",
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("period_start") and data.get("period_end") and data["period_end"] < data["period_start"]:
            raise forms.ValidationError("The period ends before it starts.")
        return data


def _last_month() -> str:
    return f"{services.month_of(date.today())[0] - timedelta(days=1):%Y-%m}"


class CloseReportForm(forms.Form):
    legal_entity = forms.ModelChoiceField(queryset=LegalEntity.objects.order_by("code"), to_field_name="code")
    month = forms.CharField(
        max_length=7, widget=forms.TextInput(attrs={"type": "month"}), help_text="YYYY-MM, e.g. 2026-10."
    )

    def clean_month(self) -> str:
        month = self.cleaned_data["month"].strip()
        try:
            close.month_bounds(month)
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from exc
        return month


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "connection",
        "legal_entity",
        "currency",
        "period",
        "status",
        "difference_count",
        "replanned_count",
        "case_count",
        "documents_compared",
        "trigger",
        "finished_at",
    )
    list_filter = ("status", "connection", "legal_entity", "currency", "trigger")
    date_hierarchy = "queued_at"
    list_select_related = ("connection", "legal_entity")

    @admin.display(description="period")
    def period(self, run: ReconciliationRun) -> str:
        return f"{run.period_start.isoformat()} to {run.period_end.isoformat()}"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def can_start(self, request: HttpRequest) -> bool:
        return request.user.has_perm("reconciliation.run_reconciliation")

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("start/", view(self.start_view), name="reconciliation_start"),
            path("<int:run_id>/export.csv", view(self.csv_view), name="reconciliation_export_csv"),
            path("<int:run_id>/export.xlsx", view(self.xlsx_view), name="reconciliation_export_xlsx"),
            path("<int:run_id>/again/", view(self.again_view), name="reconciliation_again"),
            path("close/", view(self.close_view), name="reconciliation_close"),
            path("close/export.xlsx", view(self.close_xlsx_view), name="reconciliation_close_xlsx"),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "can_start": self.can_start(request)})

    def _run(self, request: HttpRequest, run_id: int | str) -> ReconciliationRun:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return get_object_or_404(ReconciliationRun.objects.select_related("connection", "legal_entity"), pk=run_id)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        run = self._run(request, object_id)
        kind = request.GET.get("kind", "")
        trend = services.trend(run)
        trend["urls"] = [reverse("admin:reconciliation_reconciliationrun_change", args=[pk]) for pk in trend["runs"]]
        return TemplateResponse(
            request,
            "admin/reconciliation/run.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Reconciliation {run.pk}",
                "run": run,
                "totals": _totals_table(run),
                "groups": _groups(run, kind),
                "kind": kind,
                "kinds": DifferenceKind.choices,
                "trend": trend,
                "can_start": self.can_start(request),
                "close_url": reverse("admin:reconciliation_close")
                + "?"
                + urlencode({"legal_entity": run.legal_entity.code, "month": f"{run.period_start:%Y-%m}"}),
                "opts": self.model._meta,
                "has_view_permission": True,
            },
        )

    def csv_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        run = self._run(request, run_id)
        response = HttpResponse(export.as_csv(run), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="reconciliation-{run.pk}.csv"'
        return response

    def xlsx_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        run = self._run(request, run_id)
        response = HttpResponse(
            export.as_xlsx(run), content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        response["Content-Disposition"] = f'attachment; filename="reconciliation-{run.pk}.xlsx"'
        return response

    def _close_form(self, request: HttpRequest) -> CloseReportForm:
        if not self.has_view_permission(request):
            raise PermissionDenied
        if "legal_entity" in request.GET or "month" in request.GET:
            return CloseReportForm(request.GET)
        entities = LegalEntity.objects.order_by("code")
        return CloseReportForm(
            initial={"legal_entity": entities[0].code if entities.count() == 1 else None, "month": _last_month()}
        )

    def close_view(self, request: HttpRequest) -> HttpResponse:
        """The month-end close report of one legal entity (every role may read it)."""
        form = self._close_form(request)
        report = None
        if form.is_bound and form.is_valid():
            report = close.build(form.cleaned_data["legal_entity"], form.cleaned_data["month"])
        return TemplateResponse(
            request,
            "admin/reconciliation/close.html",
            {
                **self.admin_site.each_context(request),
                "title": "Month-end close report",
                "form": form,
                "report": report,
                "page": _close_page(report) if report else None,
                "query": urlencode(request.GET),
                "reading_note": close.READING_NOTE,
                "opts": self.model._meta,
            },
        )

    def close_xlsx_view(self, request: HttpRequest) -> HttpResponse:
        form = self._close_form(request)
        if not (form.is_bound and form.is_valid()):
            return HttpResponseRedirect(reverse("admin:reconciliation_close"))
        report = close.build(form.cleaned_data["legal_entity"], form.cleaned_data["month"])
        response = HttpResponse(
            export.close_as_xlsx(report),
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        )
        filename = f"close-{report.legal_entity.code}-{report.month}.xlsx"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    def start_view(self, request: HttpRequest) -> HttpResponse:
        if not self.can_start(request):
            raise PermissionDenied
        start, end = services.month_of(date.today())
        form = StartRunForm(
            request.POST or None, initial={"period_start": start, "period_end": end, "heal": True, "currency": "USD"}
        )
        if request.method == "POST" and form.is_valid():
            return self._start(request, **form.cleaned_data)
        return TemplateResponse(
            request,
            "admin/reconciliation/start.html",
            {
                **self.admin_site.each_context(request),
                "title": "Start a reconciliation",
                "form": form,
                "opts": self.model._meta,
            },
        )

    def again_view(self, request: HttpRequest, run_id: int) -> HttpResponse:
        if request.method != "POST" or not self.can_start(request):
            raise PermissionDenied
        run = self._run(request, run_id)
        return self._start(
            request,
            connection=run.connection,
            legal_entity=run.legal_entity,
            currency=run.currency,
            period_start=run.period_start,
            period_end=run.period_end,
            heal=run.heal,
        )

    def _start(self, request: HttpRequest, **scope: Any) -> HttpResponse:
        try:
            run = services.start_run(**scope, trigger=Trigger.ADMIN, actor=request.user.get_username())
        except services.RunRefused as exc:
            messages.error(request, str(exc))
            return HttpResponseRedirect(reverse("admin:reconciliation_reconciliationrun_changelist"))
        messages.success(request, f"Reconciliation {run.pk} of {run.scope_label} is queued; this page shows it.")
        return HttpResponseRedirect(reverse("admin:reconciliation_reconciliationrun_change", args=[run.pk]))


def _money(minor: int | None, currency: str) -> str:
    if minor is None or not currency:
        return "—"
    return f"{to_decimal(minor, currency):,}"


def _close_page(report: close.CloseReport) -> dict[str, Any]:
    """The report's figures as the page shows them: amounts formatted in their currency, links."""
    start, end = report.month_start, report.month_end
    return {
        "posted": [{"t": t, "amount": _money(t.amount_minor, t.currency)} for t in report.posted],
        "accounts": [{"a": a, "amount": _money(a.amount_minor, a.currency)} for a in report.accounts],
        "pending": [{"t": t, "amount": _money(t.amount_minor, t.currency)} for t in report.pending],
        "redated": [
            {
                "r": r,
                "amount": _money(r.amount_minor, r.currency),
                "direction": r.direction(start, end),
                "state": PostingState(r.state).label,
                "url": reverse("admin:posting_posting_change", args=[r.posting_id]),
            }
            for r in report.redated
        ],
        "aging": [
            {"row": row, "cells": [row.buckets[b.key] for b in close.CLOSE_AGE_BUCKETS]} for row in report.case_aging
        ],
        "aging_totals": [report.case_bucket_totals[b.key] for b in close.CLOSE_AGE_BUCKETS],
        "cases": [
            {
                "case": case,
                "age": close.close_age_bucket(report.generated_at - case.opened_at).label,
                "url": reverse("admin:console_exceptioncase_change", args=[case.pk]),
            }
            for case in report.cases
        ],
        "differences": [{"d": d, "amount": _money(d.amount_minor, d.currency)} for d in report.differences],
        "difference_rows": [
            {
                "d": d,
                "amount": _money(close.at_stake(d), d.currency),
                "url": reverse("admin:reconciliation_reconciliationrun_change", args=[d.run_id])
                + f"?kind={d.kind}#difference-{d.pk}",
            }
            for d in report.difference_rows
        ],
        "coverage": [
            {
                "c": c,
                "url": reverse("admin:reconciliation_reconciliationrun_change", args=[c.run.pk]) if c.run else "",
            }
            for c in report.coverage
        ],
        "backlog": [
            {"s": s, "url": reverse("admin:reconciliation_reconciliationrun_change", args=[s.run.pk])}
            for s in report.backlog
        ],
    }


def _totals_table(run: ReconciliationRun) -> list[dict[str, Any]]:
    totals = {(t.side, t.document_type): t for t in run.totals.all()}
    rows = []
    for document_type, label in DocumentType.choices:
        cells = []
        for side in Side.values:
            total = totals.get((side, document_type))
            cells.append((total.count, total.amount_minor) if total else (0, 0))
        compared = cells if run.erp_read else cells[:2]
        rows.append(
            {
                "type": document_type,
                "label": label,
                "cells": [{"count": count, "amount": _money(amount, run.currency)} for count, amount in cells],
                "disagree": len(set(compared)) > 1,
            }
        )
    return rows


def _groups(run: ReconciliationRun, only: str) -> list[dict[str, Any]]:
    counts: dict[str, int] = defaultdict(int)
    for kind in run.differences.values_list("kind", flat=True):
        counts[kind] += 1
    groups = []
    for kind, label in DifferenceKind.choices:
        if not counts[kind] or (only and only != kind):
            continue
        rows = (
            run.differences.filter(kind=kind)
            .select_related("invoice", "credit_memo", "payment_application__payment", "posting", "case")
            .order_by("document_type", "source_id")[:SHOWN_PER_KIND]
        )
        groups.append({"kind": kind, "label": label, "count": counts[kind], "rows": [_row(d) for d in rows]})
    return groups


def _row(d: Difference) -> dict[str, Any]:
    links: list[tuple[str, str]] = []
    if d.invoice_id:
        links.append(("Invoice", reverse("admin:ledger_invoice_change", args=[d.invoice_id])))
    if d.credit_memo_id:
        links.append(("Credit memo", reverse("admin:ledger_creditmemo_change", args=[d.credit_memo_id])))
    if d.payment_application_id:
        payment = d.payment_application.payment_id  # type: ignore[union-attr]
        links.append(("Payment", reverse("admin:ledger_payment_change", args=[payment])))
    if d.posting_id:
        links.append((f"Posting #{d.posting_id}", reverse("admin:posting_posting_change", args=[d.posting_id])))
    for posting_id in d.healing_postings:
        links.append((f"Planned #{posting_id}", reverse("admin:posting_posting_change", args=[posting_id])))
    if d.case_id:
        links.append((f"Case {d.case_id}", reverse("admin:console_exceptioncase_change", args=[d.case_id])))
    query = d.invoice.source_id if d.invoice_id else d.source_id.split(":")[0]  # type: ignore[union-attr]
    links.append(("Timeline", reverse("admin:console_timeline") + "?" + urlencode({"q": query})))
    return {
        "d": d,
        "billing": _money(d.billing_amount_minor, d.billing_currency or d.currency),
        "ledger": _money(d.ledger_amount_minor, d.currency),
        "erp": _money(d.erp_amount_minor, d.erp_currency or d.currency),
        "erp_documents": [
            {**e, "amount": _money(e.get("amount_minor"), str(e.get("currency") or d.currency))}
            for e in d.erp_documents
        ],
        "links": links,
    }


class OpenFilter(admin.SimpleListFilter):
    title = "found by"
    parameter_name = "found"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("latest", "The latest run of each scope (open)"), ("all", "Any run")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Difference]) -> QuerySet[Difference]:
        if self.value() == "all":
            return queryset
        return queryset.open()  # type: ignore[attr-defined,no-any-return]

    def choices(self, changelist: Any) -> Any:
        for choice in super().choices(changelist):
            if choice["display"] == "All":
                continue
            if self.value() is None and choice["query_string"].endswith("found=latest"):
                choice["selected"] = True
            yield choice


@admin.register(Difference)
class DifferenceAdmin(admin.ModelAdmin):
    """Every difference still open (found by the latest run of its scope), across runs."""

    list_display = ("document", "kind", "document_type", "amounts", "heal_action", "case_link", "run_link")
    list_filter = (OpenFilter, "kind", "document_type", "heal_action", "run__connection", "run__legal_entity")
    search_fields = ("source_id", "external_ref", "description")
    list_select_related = ("run", "case")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="document")
    def document(self, d: Difference) -> str:
        return format_html("{}<br><small>{}</small>", d.source_id, d.description)

    @admin.display(description="billing / ledger / ERP")
    def amounts(self, d: Difference) -> str:
        return " / ".join(
            (
                _money(d.billing_amount_minor, d.billing_currency or d.currency),
                _money(d.ledger_amount_minor, d.currency),
                _money(d.erp_amount_minor, d.erp_currency or d.currency),
            )
        )

    @admin.display(description="case")
    def case_link(self, d: Difference) -> str:
        if not d.case_id:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', reverse("admin:console_exceptioncase_change", args=[d.case_id]), d.case_id
        )

    @admin.display(description="run")
    def run_link(self, d: Difference) -> str:
        url = reverse("admin:reconciliation_reconciliationrun_change", args=[d.run_id])
        return format_html('<a href="{}#{}">{}</a>', url, d.kind, d.run_id)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        difference = get_object_or_404(Difference, pk=object_id)
        url = reverse("admin:reconciliation_reconciliationrun_change", args=[difference.run_id])
        return HttpResponseRedirect(f"{url}?{urlencode({'kind': difference.kind})}#difference-{difference.pk}")
