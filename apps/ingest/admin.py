from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.ingest import services
from apps.ingest.models import InboxEvent


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
    search_fields = ("event_id", "correlation_id")
    date_hierarchy = "received_at"
    actions = [replay_selected]
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [field.name for field in InboxEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
