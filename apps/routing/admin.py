from django.contrib import admin

from apps.routing.models import ERPConnection, Mapping, RoutingRule


class MappingInline(admin.TabularInline):
    model = Mapping
    extra = 0


@admin.register(ERPConnection)
class ERPConnectionAdmin(admin.ModelAdmin):
    list_display = ("name", "kind", "active")
    inlines = [MappingInline]


@admin.register(RoutingRule)
class RoutingRuleAdmin(admin.ModelAdmin):
    list_display = ("priority", "legal_entity", "connection")


@admin.register(Mapping)
class MappingAdmin(admin.ModelAdmin):
    list_display = ("connection", "kind", "key", "value")
    list_filter = ("connection", "kind")
    search_fields = ("key", "value")
