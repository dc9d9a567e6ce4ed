from typing import Any

from django import forms
from django.contrib import admin
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.core import audit
from apps.routing.models import ERPConnection, Mapping, RoutingRule, RoutingVersion


def _shown(name: str, value: Any) -> str:
    return "(changed)" if name == "settings" else str(value)


def _record(request: HttpRequest, obj: models.Model, before: models.Model | None, names: list[str]) -> None:
    """Configuration changed in the admin, on the record with who made it (the config file's own
    changes are audited by ``hub_config``). Only fields whose value changed are named; connection
    settings are named, never copied (they hold secrets' references and URLs)."""
    actor = request.user.get_username()
    if before is None:
        audit.record("config.created", obj, actor=actor, reason="added in the admin", after={"is": str(obj)})
        return
    changed = [name for name in names if getattr(before, name, None) != getattr(obj, name, None)]
    if changed:
        audit.record(
            "config.updated",
            obj,
            actor=actor,
            reason=f"changed in the admin: {', '.join(changed)}",
            before={name: _shown(name, getattr(before, name)) for name in changed},
            after={name: _shown(name, getattr(obj, name)) for name in changed},
        )


def _stored(obj: models.Model) -> models.Model | None:
    return type(obj).objects.filter(pk=obj.pk).first() if obj.pk else None


class AuditedAdmin(admin.ModelAdmin):
    def save_model(self, request: HttpRequest, obj: Any, form: forms.ModelForm, change: bool) -> None:
        before = _stored(obj) if change else None
        super().save_model(request, obj, form, change)
        _record(request, obj, before, list(form.fields))

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        audit.record("config.removed", obj, actor=request.user.get_username(), before={"was": str(obj)})
        super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        for obj in queryset:
            audit.record("config.removed", obj, actor=request.user.get_username(), before={"was": str(obj)})
        super().delete_queryset(request, queryset)

    def save_formset(self, request: HttpRequest, form: forms.ModelForm, formset: Any, change: bool) -> None:
        actor = request.user.get_username()
        earlier = {f.instance.pk: _stored(f.instance) for f in formset.forms if f.instance.pk}
        for removed in formset.deleted_forms:
            if removed.instance.pk:
                audit.record("config.removed", removed.instance, actor=actor, before={"was": str(removed.instance)})
        super().save_formset(request, form, formset, change)
        for inline in formset.forms:
            if inline in formset.deleted_forms or inline.instance.pk is None or not inline.has_changed():
                continue
            _record(request, inline.instance, earlier.get(inline.instance.pk), list(inline.fields))


class MappingInline(admin.TabularInline):
    model = Mapping
    extra = 0


@admin.register(ERPConnection)
class ERPConnectionAdmin(AuditedAdmin):
    list_display = ("name", "kind", "active", "closed_period_policy")
    list_filter = ("kind", "closed_period_policy")
    inlines = [MappingInline]


@admin.register(RoutingRule)
class RoutingRuleAdmin(AuditedAdmin):
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
class MappingAdmin(AuditedAdmin):
    list_display = ("connection", "kind", "key", "value")
    list_filter = ("connection", "kind")
    search_fields = ("key", "value")
