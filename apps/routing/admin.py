from django import forms
from django.contrib import admin
from django.http import HttpRequest

from apps.core import audit
from apps.routing.models import ERPConnection, Mapping, RoutingRule, RoutingVersion


class MappingInline(admin.TabularInline):
    model = Mapping
    extra = 0


@admin.register(ERPConnection)
class ERPConnectionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "active", "closed_period_policy")
    list_filter = ("kind", "closed_period_policy")
    inlines = [MappingInline]

    def save_model(self, request: HttpRequest, obj: ERPConnection, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "closed_period_policy" in form.changed_data:
            # A finance decision about what the ERP's books receive: on the record, with who made it.
            audit.record(
                "config.updated",
                obj,
                actor=request.user.get_username(),
                reason="closed-period policy changed in the admin",
                before={"closed_period_policy": form.initial.get("closed_period_policy")},
                after={"closed_period_policy": obj.closed_period_policy},
            )


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    list_display = (
        "priority",
        "name",
        "legal_entity",
        "region",
        "product_line",
        "transaction_type",
        "currency",
        "connection",
        "also",
        "active",
    )
    list_editable = ("active",)
    list_filter = ("connection", "legal_entity", "transaction_type", "active")


@admin.register(RoutingVersion)
class RoutingVersionAdmin(admin.ModelAdmin):
    """Read-only: a version is the rule set as it was when a posting was routed by it."""

    list_display = ("__str__", "created_at", "rule_count")
    readonly_fields = ("digest", "rules", "created_at")

    @admin.display(description="Rules")
    def rule_count(self, version: RoutingVersion) -> int:
        return len(version.rules)

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False


@admin.register(Mapping)
class MappingAdmin(admin.ModelAdmin):
    list_display = ("connection", "kind", "key", "value")
    list_filter = ("connection", "kind")
    search_fields = ("key", "value")
