"""The finance exception console: cases in finance's words, with the technical detail beside them,
and the actions that fix them. Every action checks the user's permission on the server (not only
by hiding a button) and goes through ``apps.console.services``, which audits it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.timesince import timesince

from apps.console import control_tower, services, timeline
from apps.console.models import (
    CaseStatus,
    ConnectionSLA,
    ControlTower,
    DeadLetter,
    ExceptionCase,
    PostingException,
)
from apps.core import audit
from apps.posting.admin import PostingAdminBase, exception_states, retry_postings
from apps.posting.models import PostingState
from apps.routing.models import ERPConnection, Mapping

# -- list filters -----------------------------------------------------------------------------


class StatusFilter(admin.SimpleListFilter):
    """Open cases unless asked otherwise: the queue is what needs work."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("open", "Open"), ("resolved", "Resolved"), ("all", "All")]

    def choices(self, changelist: Any) -> Any:
        value = self.value() or "open"
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[ExceptionCase]) -> QuerySet[ExceptionCase]:
        value = self.value() or "open"
        return queryset if value == "all" else queryset.filter(status=value)


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("lt1", "under 1 day"), ("1to3", "1-3 days"), ("gt3", "over 3 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ExceptionCase]) -> QuerySet[ExceptionCase]:
        now = timezone.now()
        if self.value() == "lt1":
            return queryset.filter(opened_at__gt=now - timedelta(days=1))
        if self.value() == "1to3":
            return queryset.filter(opened_at__lte=now - timedelta(days=1), opened_at__gt=now - timedelta(days=3))
        if self.value() == "gt3":
            return queryset.filter(opened_at__lte=now - timedelta(days=3))
        return queryset


class OwnerFilter(admin.SimpleListFilter):
    title = "owner"
    parameter_name = "owner"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        people = [(str(u.pk), u.get_username()) for u in services.assignable_users().order_by("username")[:50]]
        return [("me", "Assigned to me"), ("none", "Unassigned"), *people]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ExceptionCase]) -> QuerySet[ExceptionCase]:
        value = self.value()
        if value == "me":
            return queryset.filter(owner=request.user)
        if value == "none":
            return queryset.filter(owner__isnull=True)
        if value:
            return queryset.filter(owner_id=value)
        return queryset


# -- forms -------------------------------------------------------------------------------------


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 80}), required=True)


class CorrectMappingForm(ReasonForm):
    kind = forms.ChoiceField(choices=Mapping.KIND_CHOICES, label="Mapping")
    key = forms.CharField(
        max_length=255,
        help_text="Billing value: a price or product id, a revenue category, a payment method; or default.",
    )
    value = forms.CharField(max_length=255, label="ERP value", help_text="The account code, tax or journal in the ERP.")
    field_order = ["kind", "key", "value", "reason"]


class LinkForm(ReasonForm):
    erp_id = forms.CharField(max_length=128, label="ERP document id")
    erp_number = forms.CharField(max_length=128, label="ERP document number", required=False)
    field_order = ["erp_id", "erp_number", "reason"]


class AssignForm(forms.Form):
    owner = forms.ModelChoiceField(queryset=get_user_model().objects.none(), required=False, label="Assign to")
    reason = forms.CharField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["owner"].queryset = services.assignable_users().order_by("username")  # type: ignore[attr-defined]


# -- bulk actions ------------------------------------------------------------------------------


def _run_bulk(
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet[ExceptionCase],
    action: Callable[[int], object],
    done: str,
) -> None:
    ok, refused = 0, []
    for case_id in queryset.order_by("pk").values_list("pk", flat=True):
        try:
            action(case_id)
            ok += 1
        except services.ActionRefused as exc:
            refused.append(str(exc))
    if ok:
        modeladmin.message_user(request, f"{ok} case(s) {done}.", messages.SUCCESS)
    for reason in refused[:10]:
        modeladmin.message_user(request, reason, messages.WARNING)


@admin.action(description="Retry selected cases now", permissions=["retry"])
def retry_cases(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[ExceptionCase]) -> None:
    actor = request.user.get_username()
    _run_bulk(modeladmin, request, queryset, lambda pk: services.retry_case(pk, actor=actor), "queued for retry")


@admin.action(description="Replay selected cases from their raw events", permissions=["replay"])
def replay_cases(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[ExceptionCase]) -> None:
    actor = request.user.get_username()
    _run_bulk(modeladmin, request, queryset, lambda pk: services.replay_case(pk, actor=actor), "replayed")


def _form_action(
    template_title: str, form_class: type[forms.Form], run: Callable[[int, dict[str, Any], str], object], done: str
) -> Callable[..., HttpResponse | None]:
    def action(
        modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[ExceptionCase]
    ) -> HttpResponse | None:
        form = form_class(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            actor = request.user.get_username()
            _run_bulk(modeladmin, request, queryset, lambda pk: run(pk, form.cleaned_data, actor), done)
            return None
        return TemplateResponse(
            request,
            "admin/console/exceptioncase/bulk_form.html",
            {
                **modeladmin.admin_site.each_context(request),
                "title": template_title,
                "form": form,
                "cases": queryset,
                "action": request.POST.get("action"),
                "opts": modeladmin.model._meta,
            },
        )

    return action


assign_cases = admin.action(description="Assign selected cases", permissions=["assign"])(
    _form_action(
        "Assign cases",
        AssignForm,
        lambda pk, data, actor: services.assign_case(pk, owner=data["owner"], actor=actor, reason=data["reason"]),
        "assigned",
    )
)
assign_cases.__name__ = "assign_cases"  # the admin knows an action by its function name
skip_cases = admin.action(description="Skip selected cases (with a reason)", permissions=["skip"])(
    _form_action(
        "Skip cases: these documents will not be posted by the hub",
        ReasonForm,
        lambda pk, data, actor: services.skip_case(pk, actor=actor, reason=data["reason"]),
        "skipped",
    )
)
skip_cases.__name__ = "skip_cases"


class CasePermissions:
    """``has_<action>_permission`` for admin actions and the case views, from the roles' permissions."""

    def _can(self, request: HttpRequest, codename: str) -> bool:
        return bool(request.user.is_active and request.user.has_perm(f"console.{codename}"))

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self._can(request, "retry_case")

    def has_replay_permission(self, request: HttpRequest) -> bool:
        return self._can(request, "replay_case")

    def has_correct_permission(self, request: HttpRequest) -> bool:
        return self._can(request, "correct_case")

    def has_link_permission(self, request: HttpRequest) -> bool:
        return self._can(request, "link_case")

    def has_skip_permission(self, request: HttpRequest) -> bool:
        return self._can(request, "skip_case")

    def has_assign_permission(self, request: HttpRequest) -> bool:
        return self._can(request, "assign_case")


@admin.register(ExceptionCase)
class ExceptionCaseAdmin(CasePermissions, admin.ModelAdmin):
    list_display = (
        "id",
        "age",
        "kind",
        "message_summary",
        "document",
        "connection",
        "legal_entity",
        "owner",
        "status",
        "timeline_link",
    )
    list_display_links = ("id", "message_summary")
    list_filter = (StatusFilter, "category", "kind", "connection", "legal_entity", AgeFilter, OwnerFilter)
    search_fields = ("source_id", "invoice__number", "customer__name", "correlation_id")
    list_select_related = ("connection", "legal_entity", "owner", "invoice", "customer")
    show_full_result_count = False
    ordering = ("opened_at",)
    actions = [retry_cases, replay_cases, assign_cases, skip_cases]
    change_form_template = "admin/console/exceptioncase/change_form.html"
    change_list_template = "admin/console/exceptioncase/change_list.html"
    readonly_fields = [f.name for f in ExceptionCase._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description="age", ordering="opened_at")
    def age(self, case: ExceptionCase) -> str:
        return timesince(case.opened_at, case.resolved_at or timezone.now())

    @admin.display(description="what is wrong")
    def message_summary(self, case: ExceptionCase) -> str:
        return case.message if len(case.message) <= 220 else case.message[:217] + "…"

    @admin.display(description="document")
    def document(self, case: ExceptionCase) -> str:
        if case.invoice_id:
            url = reverse("admin:ledger_invoice_change", args=[case.invoice_id])
            return format_html('<a href="{}">{}</a>', url, case.invoice.number or case.source_id)  # type: ignore[union-attr]
        if case.customer_id:
            url = reverse("admin:ledger_customer_change", args=[case.customer_id])
            return format_html('<a href="{}">{}</a>', url, case.customer.name or case.source_id)  # type: ignore[union-attr]
        return case.source_id

    @admin.display(description="timeline")
    def timeline_link(self, case: ExceptionCase) -> str:
        url = reverse("admin:console_timeline") + "?" + urlencode({"q": case.source_id})
        return format_html('<a href="{}">timeline</a>', url)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        counts = (
            ExceptionCase.objects.filter(status=CaseStatus.OPEN)
            .values("category", "kind")
            .annotate(n=Count("id"))
            .order_by("category", "-n")
        )
        return super().changelist_view(request, {**(extra_context or {}), "open_counts": list(counts)})

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("timeline/", view(self.timeline_view), name="console_timeline"),
            path("<int:case_id>/retry/", view(self.retry_view), name="console_case_retry"),
            path("<int:case_id>/replay/", view(self.replay_view), name="console_case_replay"),
            path("<int:case_id>/correct/", view(self.correct_view), name="console_case_correct"),
            path("<int:case_id>/link/", view(self.link_view), name="console_case_link"),
            path("<int:case_id>/skip/", view(self.skip_view), name="console_case_skip"),
            path("<int:case_id>/assign/", view(self.assign_view), name="console_case_assign"),
            *super().get_urls(),
        ]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        case = get_object_or_404(ExceptionCase.objects.select_related("connection", "owner"), pk=object_id)
        extra = {
            **(extra_context or {}),
            "case": case,
            "postings": services.case_postings(case).order_by("created_at"),
            "can": {
                name: getattr(self, f"has_{name}_permission")(request)
                for name in ("retry", "replay", "correct", "link", "skip", "assign")
            },
            "is_open": case.status == CaseStatus.OPEN,
            "show_save": False,
            "show_save_and_continue": False,
        }
        return super().change_view(request, object_id, form_url, extra)

    def _case_action(
        self,
        request: HttpRequest,
        case_id: int,
        permission: str,
        title: str,
        form_class: type[forms.Form] | None,
        run: Callable[[ExceptionCase, dict[str, Any], str], str],
        initial: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if not getattr(self, f"has_{permission}_permission")(request):
            raise PermissionDenied
        case = get_object_or_404(ExceptionCase.objects.select_related("connection"), pk=case_id)
        back = reverse("admin:console_exceptioncase_change", args=[case.pk])
        form = None
        if form_class is not None:
            form = form_class(request.POST or None, initial=initial)
        if request.method == "POST" and (form is None or form.is_valid()):
            try:
                done = run(case, form.cleaned_data if form else {}, request.user.get_username())
                self.message_user(request, done, messages.SUCCESS)
            except services.ActionRefused as exc:
                self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(back)
        return TemplateResponse(
            request,
            "admin/console/exceptioncase/action_form.html",
            {
                **self.admin_site.each_context(request),
                "title": title,
                "case": case,
                "form": form,
                "back": back,
                "opts": self.model._meta,
            },
        )

    def retry_view(self, request: HttpRequest, case_id: int) -> HttpResponse:
        return self._case_action(
            request,
            case_id,
            "retry",
            "Retry this case now",
            None,
            lambda case, data, actor: f"{services.retry_case(case.pk, actor=actor)} posting(s) queued for retry.",
        )

    def replay_view(self, request: HttpRequest, case_id: int) -> HttpResponse:
        return self._case_action(
            request,
            case_id,
            "replay",
            "Replay this case from its raw events",
            None,
            lambda case, data, actor: f"{services.replay_case(case.pk, actor=actor)} raw event(s) replayed.",
        )

    def correct_view(self, request: HttpRequest, case_id: int) -> HttpResponse:
        case = get_object_or_404(ExceptionCase, pk=case_id)

        def run(case: ExceptionCase, data: dict[str, Any], actor: str) -> str:
            mapping = services.correct_mapping_and_repost(
                case.pk, kind=data["kind"], key=data["key"], value=data["value"], actor=actor, reason=data["reason"]
            )
            return f"Mapping {mapping.get_kind_display().lower()} '{mapping.key}' → '{mapping.value}' saved; reposting."

        return self._case_action(
            request,
            case_id,
            "correct",
            "Correct the mapping and repost",
            CorrectMappingForm,
            run,
            initial=services.suggested_mapping(case),
        )

    def link_view(self, request: HttpRequest, case_id: int) -> HttpResponse:
        def run(case: ExceptionCase, data: dict[str, Any], actor: str) -> str:
            posting = services.link_case(
                case.pk, erp_id=data["erp_id"], erp_number=data["erp_number"], actor=actor, reason=data["reason"]
            )
            return f"Linked to ERP document {posting.erp_number or posting.erp_id}."

        return self._case_action(request, case_id, "link", "Link to a document that exists in the ERP", LinkForm, run)

    def skip_view(self, request: HttpRequest, case_id: int) -> HttpResponse:
        return self._case_action(
            request,
            case_id,
            "skip",
            "Skip: the hub will not post this document",
            ReasonForm,
            lambda case, data, actor: (
                f"{services.skip_case(case.pk, actor=actor, reason=data['reason'])} posting(s) skipped."
            ),
        )

    def assign_view(self, request: HttpRequest, case_id: int) -> HttpResponse:
        def run(case: ExceptionCase, data: dict[str, Any], actor: str) -> str:
            services.assign_case(case.pk, owner=data["owner"], actor=actor, reason=data["reason"])
            return f"Assigned to {data['owner'].get_username() if data['owner'] else 'nobody'}."

        return self._case_action(request, case_id, "assign", "Assign this case", AssignForm, run)

    def timeline_view(self, request: HttpRequest) -> HttpResponse:
        if not any(
            request.user.has_perm(p)
            for p in ("console.view_exceptioncase", "posting.view_posting", "ingest.view_inboxevent")
        ):
            raise PermissionDenied
        query = request.GET.get("q", "")
        return TemplateResponse(
            request,
            "admin/console/timeline.html",
            {
                **self.admin_site.each_context(request),
                "title": "Timeline",
                "timeline": timeline.build(query),
                "query": query,
                "opts": self.model._meta,
            },
        )


# -- postings in exception and the dead-letter queue --------------------------------------------


@admin.action(description="Retry selected postings now", permissions=["retry"])
def retry_selected(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    retry_postings(modeladmin, request, queryset)


@admin.register(PostingException)
class PostingExceptionAdmin(CasePermissions, PostingAdminBase):
    """Parked and dead postings one by one, for integration engineers."""

    list_display = (
        "id",
        "age",
        "error_category",
        "finance_message",
        "source_document",
        "operation",
        "connection",
        "state",
        "correlation_timeline",
    )
    list_display_links = ("id", "finance_message")
    list_filter = ("error_category", "state", "error_code", "operation", "connection", "source")
    ordering = ("created_at",)
    actions = [retry_selected]
    show_full_result_count = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[PostingException]:
        return super().get_queryset(request).filter(state__in=exception_states())

    @admin.display(description="age", ordering="created_at")
    def age(self, obj: PostingException) -> str:
        return timesince(obj.created_at, timezone.now())


@admin.register(DeadLetter)
class DeadLetterAdmin(CasePermissions, PostingAdminBase):
    """Postings whose retries are spent. Replaying is safe to run twice: a replay re-queues only a
    posting that is still dead, and the pipeline's claim and ERP lookup keep it to one document."""

    list_display = ("id", "age", "finance_message", "source_document", "operation", "connection", "attempt_count")
    list_filter = ("connection", "operation", "error_code")
    ordering = ("updated_at",)
    show_full_result_count = False

    @admin.action(description="Replay selected dead letters", permissions=["retry"])
    def replay_dead_letters(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        retry_selected(self, request, queryset)

    actions = ["replay_dead_letters"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeadLetter]:
        return super().get_queryset(request).filter(state=PostingState.DEAD)

    @admin.display(description="dead for", ordering="updated_at")
    def age(self, obj: DeadLetter) -> str:
        return timesince(obj.updated_at, timezone.now())


# -- the control tower and the SLAs it holds connections to -----------------------------------


@admin.register(ControlTower)
class ControlTowerAdmin(admin.ModelAdmin):
    """One page, no rows: KPIs per ERP connection as charts, against each connection's SLA."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        return [path("", self.admin_site.admin_view(self.changelist_view), name="console_controltower_changelist")]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        window = request.GET.get("window", control_tower.DEFAULT_WINDOW)
        if window not in control_tower.WINDOWS:
            window = control_tower.DEFAULT_WINDOW
        connections = list(ERPConnection.objects.order_by("name"))
        selected = next((c for c in connections if c.name == request.GET.get("connection")), None)
        tower = control_tower.build(window, selected)
        return TemplateResponse(
            request,
            "admin/console/control_tower.html",
            {
                **self.admin_site.each_context(request),
                "title": "Control tower",
                "tower": tower,
                "window": window,
                "windows": [(w.key, w.title) for w in control_tower.WINDOWS.values()],
                "connections": connections,
                "selected": selected,
                "age_buckets": control_tower.AGE_BUCKETS,
                "can_edit_sla": request.user.has_perm("console.change_connectionsla"),
                "opts": self.model._meta,
                **(extra_context or {}),
            },
        )


@admin.register(ConnectionSLA)
class ConnectionSLAAdmin(admin.ModelAdmin):
    """The thresholds the control tower holds each connection to (defaults where none is set)."""

    list_display = (
        "connection",
        "min_success_rate_percent",
        "max_p95_latency_seconds",
        "max_backlog",
        "max_open_case_age_hours",
        "updated_at",
    )
    fields = (
        "connection",
        "min_success_rate_percent",
        "max_p95_latency_seconds",
        "max_backlog",
        "max_open_case_age_hours",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: ConnectionSLA | None = None) -> tuple[str, ...]:
        return ("connection",) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: ConnectionSLA, form: forms.ModelForm, change: bool) -> None:
        before = ConnectionSLA.objects.get(pk=obj.pk).facts() if change else None
        super().save_model(request, obj, form, change)
        audit.record(
            "console.sla_changed" if change else "console.sla_set",
            obj,
            actor=request.user.get_username(),
            reason=f"SLA of {obj.connection}",
            before=before,
            after=obj.facts(),
        )

    def delete_model(self, request: HttpRequest, obj: ConnectionSLA) -> None:
        audit.record(
            "console.sla_removed",
            obj,
            actor=request.user.get_username(),
            reason=f"SLA of {obj.connection}: back to the defaults",
            before=obj.facts(),
        )
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[ConnectionSLA]) -> None:
        for sla in queryset.select_related("connection"):
            self.delete_model(request, sla)


# The admin index adds an Operations box: the control tower, Flower (HUB_FLOWER_URL) and readiness.
admin.site.index_template = "console/admin_index.html"
