from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from apps.posting import services
from apps.posting.models import EXCEPTION_STATES, Posting, PostingAttempt, PostingState, RedatedPosting


class PostingAttemptInline(admin.TabularInline):
    model = PostingAttempt
    extra = 0
    can_delete = False
    fields = ("number", "started_at", "finished_at", "outcome", "erp_id", "error_code", "worker", "detail")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class RedatedPostingInline(admin.TabularInline):
    model = RedatedPosting
    extra = 0
    can_delete = False
    verbose_name = verbose_name_plural = "re-dated by the closed-period policy"
    fields = ("original_date", "posted_date", "reason", "erp_message", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


def source_document_link(posting: Posting) -> str:
    for field, label in (
        ("invoice", "invoice"),
        ("customer", "customer"),
        ("payment_application", "paymentapplication"),
    ):
        obj = getattr(posting, field)
        if obj is not None:
            if label == "paymentapplication":
                url = reverse("admin:ledger_payment_change", args=[obj.payment_id])
            else:
                url = reverse(f"admin:ledger_{label}_change", args=[obj.pk])
            return format_html('<a href="{}">{}</a>', url, posting.source_id)
    return posting.source_id


def timeline_link(posting: Posting) -> str:
    if not posting.correlation_id:
        return "—"
    url = reverse("admin:core_auditevent_changelist") + f"?correlation_id={posting.correlation_id}"
    return format_html('<a href="{}">{}</a>', url, posting.correlation_id)


def retry_postings(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Posting]) -> None:
    """The body of every "retry selected postings" action; each admin guards it with its permission."""
    retried, refused = 0, []
    selected = list(queryset.order_by("pk"))
    if not selected:
        # Between the page and the click, someone else retried them: they left this list.
        modeladmin.message_user(
            request,
            "Nothing was retried: the selected postings are no longer parked or dead (already retried?).",
            messages.WARNING,
        )
        return
    for posting in selected:
        try:
            services.retry_posting(posting.pk, actor=request.user.get_username(), reason="retry from the console")
            retried += 1
        except services.ActionRefused as exc:
            refused.append(str(exc))
    if retried:
        modeladmin.message_user(request, f"{retried} posting(s) queued for retry.", messages.SUCCESS)
    for reason in refused[:10]:
        modeladmin.message_user(request, reason, messages.WARNING)


@admin.action(description="Retry selected parked or dead postings now", permissions=["change"])
def retry_selected(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Posting]) -> None:
    retry_postings(modeladmin, request, queryset)


class PostingAdminBase(admin.ModelAdmin):
    list_select_related = ("connection", "invoice", "customer", "payment_application")
    list_filter = ("state", "error_category", "operation", "connection", "source")
    search_fields = ("source_id", "correlation_id", "erp_id", "erp_number", "idempotency_key", "error_code")
    actions = [retry_selected]
    inlines = [RedatedPostingInline, PostingAttemptInline]
    readonly_fields = (
        "idempotency_key",
        "connection",
        "operation",
        "source",
        "source_document",
        "revision",
        "depends_on_key",
        "state",
        "attempt_count",
        "attempt_budget_start",
        "retry_at",
        "enqueued_at",
        "claimed_at",
        "verify_before_retry",
        "posted_at",
        "erp_id",
        "erp_number",
        "error_category",
        "error_code",
        "finance_message",
        "technical_detail",
        "correlation_timeline",
        "created_at",
        "updated_at",
    )
    fieldsets = (
        ("What needs attention", {"fields": ("state", "finance_message", "error_category", "error_code")}),
        (
            "Document",
            {
                "fields": (
                    "operation",
                    "source",
                    "source_document",
                    "revision",
                    "connection",
                    "erp_id",
                    "erp_number",
                    "posted_at",
                )
            },
        ),
        (
            "Technical detail (integration engineers)",
            {
                "classes": ("collapse",),
                "fields": (
                    "technical_detail",
                    "idempotency_key",
                    "depends_on_key",
                    "attempt_count",
                    "attempt_budget_start",
                    "retry_at",
                    "enqueued_at",
                    "claimed_at",
                    "verify_before_retry",
                    "correlation_timeline",
                    "created_at",
                    "updated_at",
                ),
            },
        ),
    )

    @admin.display(description="source document")
    def source_document(self, obj: Posting) -> str:
        return source_document_link(obj)

    @admin.display(description="correlation id (timeline)")
    def correlation_timeline(self, obj: Posting) -> str:
        return timeline_link(obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Posting)
class PostingAdmin(PostingAdminBase):
    list_display = (
        "id",
        "operation",
        "source_document",
        "connection",
        "state",
        "erp_number",
        "erp_id",
        "attempt_count",
        "updated_at",
    )


def exception_states() -> tuple[str, ...]:
    return tuple(str(state) for state in EXCEPTION_STATES)


class RedatedFilter(admin.SimpleListFilter):
    title = "reached the ERP"
    parameter_name = "posted"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("yes", "Posted re-dated"), ("no", "Not posted yet")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[RedatedPosting]) -> QuerySet[RedatedPosting]:
        if self.value() == "yes":
            return queryset.filter(posting__state=PostingState.POSTED)
        if self.value() == "no":
            return queryset.exclude(posting__state=PostingState.POSTED)
        return queryset


@admin.register(RedatedPosting)
class RedatedPostingAdmin(admin.ModelAdmin):
    """Every document the hub posted on another date than billing's, for the month-end close."""

    list_display = (
        "posting_link",
        "connection",
        "original_date",
        "posted_date",
        "reason",
        "state",
        "erp_number",
    )
    list_filter = (RedatedFilter, "reason", "posting__connection", "posting__operation")
    list_select_related = ("posting__connection",)
    search_fields = ("posting__source_id", "posting__erp_number", "posting__erp_id")
    date_hierarchy = "posted_date"
    readonly_fields = ("posting", "original_date", "posted_date", "reason", "erp_message", "created_at", "updated_at")

    @admin.display(description="posting")
    def posting_link(self, obj: RedatedPosting) -> str:
        url = reverse("admin:posting_posting_change", args=[obj.posting_id])
        return format_html('<a href="{}">{}</a>', url, obj.posting)

    @admin.display(description="connection")
    def connection(self, obj: RedatedPosting) -> str:
        return obj.posting.connection.name

    @admin.display(description="posting state")
    def state(self, obj: RedatedPosting) -> str:
        return obj.posting.get_state_display()

    @admin.display(description="ERP number")
    def erp_number(self, obj: RedatedPosting) -> str:
        return obj.posting.erp_number or obj.posting.erp_id

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
