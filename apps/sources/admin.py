from django.contrib import admin

from apps.sources.models import BillingSource


@admin.register(BillingSource)
class BillingSourceAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "legal_entity", "active")
