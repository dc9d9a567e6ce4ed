from django.contrib import admin

from apps.validation.models import ReferenceEntry, ReferenceRefresh


@admin.register(ReferenceRefresh)
class ReferenceRefreshAdmin(admin.ModelAdmin):
    list_display = ("connection", "refreshed_at", "attempted_at", "entries", "error")
    readonly_fields = ("connection", "refreshed_at", "attempted_at", "entries", "error")


@admin.register(ReferenceEntry)
class ReferenceEntryAdmin(admin.ModelAdmin):
    list_display = ("connection", "kind", "dimension", "code", "name", "active", "refreshed_at")
    list_filter = ("connection", "kind", "dimension", "active")
    search_fields = ("code", "name")
