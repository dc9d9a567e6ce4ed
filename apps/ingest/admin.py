from __future__ import annotations

import contextvars

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from apps.ingest import services
from apps.ingest.models import InboxEvent
from apps.ingest.redaction import readable_body

SENSITIVE_PERMISSION = "ingest.view_sensitive_payload"
# Set per request (the admin instance is shared between threads): may this reader see it all?
_sensitive_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar("sensitive_allowed", default=False)


@admin.action(description="Replay selected events (normalize again)", permissions=["change"])
def replay_selected(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[InboxEvent]) -> None:
    count = 0
    for event in queryset.order_by("pk"):
        services.replay_event(event.pk, actor=request.user.get_username(), reason="replay from the console")
        count += 1
    modeladmin.message_user(request, f"{count} event(s) queued for replay.", messages.SUCCESS)


@admin.register(InboxEvent)
class InboxEventAdmin(admin.ModelAdmin):
    list_display = ("id", "received_at", "source", "event_type", "event_id", "status", "delivery_count", "error")
    list_filter = ("status", "source", "event_type")
    search_fields = ("event_id", "object_id", "correlation_id")
    date_hierarchy = "received_at"
    actions = [replay_selected]
    show_full_result_count = False

    def get_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in InboxEvent._meta.fields if field.name not in ("body", "headers")] + ["payload"]

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return self.get_fields(request, obj)

    def payload(self, obj: InboxEvent) -> str:
        allowed = _sensitive_allowed.get()
        return format_html(
            "<pre style='white-space: pre-wrap'>{}</pre>", readable_body(obj.body, sensitive_allowed=allowed)
        )

    payload.short_description = "raw payload"  # type: ignore[attr-defined]

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict | None = None):  # type: ignore[no-untyped-def]
        # The raw body is shown only through ``payload``, masked for readers without the permission.
        token = _sensitive_allowed.set(request.user.has_perm(SENSITIVE_PERMISSION))
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render"):
                response.render()
            return response
        finally:
            _sensitive_allowed.reset(token)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
