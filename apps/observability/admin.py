from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from apps.observability.models import SyntheticRun


@admin.register(SyntheticRun)
class SyntheticRunAdmin(admin.ModelAdmin):
    list_display = ("started_at", "connection", "result", "latency_seconds", "document_id", "correlation_id")
    list_filter = ("result", "connection")
    search_fields = ("document_id", "correlation_id")
    readonly_fields = [field.name for field in SyntheticRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
