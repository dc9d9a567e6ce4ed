from django.contrib import admin
from django.http import HttpRequest

from apps.core.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """Read-only for everyone, superusers included: the log is append-only (see apps.core.audit)."""

    list_display = ("at", "actor", "action", "object_type", "object_id", "correlation_id", "reason")
    list_filter = ("action", "object_type", "actor")
    search_fields = ("correlation_id", "object_id", "reason", "actor", "=entry_hash")
    date_hierarchy = "at"
    readonly_fields = [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
