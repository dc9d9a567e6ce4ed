from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.flow import services
from apps.flow.models import CircuitState, ConnectionFlow, MaintenanceWindow
from apps.posting.models import Posting, PostingState


@admin.register(ConnectionFlow)
class ConnectionFlowAdmin(admin.ModelAdmin):
    """Each ERP connection's health: its budget, whether it is paused, its circuit and why, and
    how many postings wait for it."""

    list_display = (
        "connection",
        "budget",
        "max_concurrency",
        "paused",
        "circuit_state",
        "circuit_reason",
        "next_probe_at",
        "held_postings",
    )
    readonly_fields = (
        "connection",
        "circuit_state",
        "consecutive_failures",
        "circuit_opened_at",
        "circuit_reason",
        "next_probe_at",
        "paused",
        "paused_reason",
        "paused_by",
        "paused_at",
    )
    fields = (
        "connection",
        ("max_requests", "period_seconds", "max_concurrency"),
        ("failure_threshold", "probe_after_seconds"),
        *readonly_fields[1:],
    )
    actions = ["pause_selected", "resume_selected", "close_circuit_selected"]

    @admin.display(description="budget")
    def budget(self, flow: ConnectionFlow) -> str:
        return f"{flow.max_requests} per {flow.period_seconds}s"

    @admin.display(description="postings waiting")
    def held_postings(self, flow: ConnectionFlow) -> int:
        return Posting.objects.filter(
            connection=flow.connection, state=PostingState.RETRY_SCHEDULED, error_code__in=services.HOLD_CODES
        ).count()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.action(description="Pause postings to the selected connections", permissions=["change"])
    def pause_selected(self, request: HttpRequest, queryset: QuerySet[ConnectionFlow]) -> None:
        reason = request.POST.get("reason", "").strip() or "paused from the console"
        for flow in queryset.select_related("connection"):
            services.pause(flow.connection, actor=request.user.get_username(), reason=reason)
        self.message_user(request, f"{queryset.count()} connection(s) paused.", messages.SUCCESS)

    @admin.action(description="Resume postings to the selected connections", permissions=["change"])
    def resume_selected(self, request: HttpRequest, queryset: QuerySet[ConnectionFlow]) -> None:
        released = sum(
            services.resume(flow.connection, actor=request.user.get_username(), reason="resumed from the console")
            for flow in queryset.select_related("connection")
        )
        self.message_user(request, f"Resumed; {released} waiting posting(s) released.", messages.SUCCESS)

    @admin.action(description="Close the circuit (the cause is fixed): call the ERP again", permissions=["change"])
    def close_circuit_selected(self, request: HttpRequest, queryset: QuerySet[ConnectionFlow]) -> None:
        released = 0
        for flow in queryset.select_related("connection").exclude(circuit_state=CircuitState.CLOSED):
            released += services.close_circuit(
                flow.connection, actor=request.user.get_username(), reason="closed from the console"
            )
        self.message_user(request, f"Circuit closed; {released} waiting posting(s) released.", messages.SUCCESS)


class MaintenanceWindowForm(forms.ModelForm):
    class Meta:
        model = MaintenanceWindow
        fields = ("connection", "starts_at", "ends_at", "reason")


@admin.register(MaintenanceWindow)
class MaintenanceWindowAdmin(admin.ModelAdmin):
    form = MaintenanceWindowForm
    list_display = ("connection", "starts_at", "ends_at", "reason", "created_by")
    list_filter = ("connection",)

    def save_model(self, request: HttpRequest, obj: MaintenanceWindow, form: forms.ModelForm, change: bool) -> None:
        obj.created_by = obj.created_by or request.user.get_username()
        super().save_model(request, obj, form, change)
        services.window_planned(obj, actor=request.user.get_username())

    def delete_model(self, request: HttpRequest, obj: MaintenanceWindow) -> None:
        services.cancel_window(obj, actor=request.user.get_username(), reason="deleted in the admin")

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[MaintenanceWindow]) -> None:
        for window in queryset.select_related("connection"):
            self.delete_model(request, window)
