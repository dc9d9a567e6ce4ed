"""What the flow API reads and writes: each ERP connection's flow state, the reasons given for
changing it, and maintenance windows. Validation messages are written for the person calling the
API, and the API puts the first of them in ``detail``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from rest_framework import serializers

from apps.flow.models import ConnectionFlow, MaintenanceWindow


class MaintenanceWindowSerializer(serializers.ModelSerializer):
    connection = serializers.SlugRelatedField(slug_field="name", read_only=True)
    reason = serializers.CharField(
        max_length=200,
        error_messages={
            "required": "A reason is required for a maintenance window.",
            "blank": "A reason is required for a maintenance window.",
            "null": "A reason is required for a maintenance window.",
        },
    )
    active = serializers.SerializerMethodField(help_text="True while the window is in force.")

    class Meta:
        model = MaintenanceWindow
        fields = ("id", "connection", "starts_at", "ends_at", "reason", "active", "created_by", "created_at")
        read_only_fields = ("id", "connection", "active", "created_by", "created_at")
        extra_kwargs = {
            "starts_at": {"error_messages": {"required": "starts_at is required (ISO 8601, e.g. 2030-01-31T22:00Z)."}},
            "ends_at": {"error_messages": {"required": "ends_at is required (ISO 8601, e.g. 2030-01-31T23:00Z)."}},
        }

    def get_active(self, window: MaintenanceWindow) -> bool:
        now = self.context.get("now") or timezone.now()
        return window.starts_at <= now < window.ends_at

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        starts_at: datetime = attrs["starts_at"]
        ends_at: datetime = attrs["ends_at"]
        if ends_at <= starts_at:
            raise serializers.ValidationError(
                {"ends_at": f"ends_at ({ends_at.isoformat()}) must be after starts_at ({starts_at.isoformat()})."}
            )
        if ends_at <= timezone.now():
            raise serializers.ValidationError(
                {"ends_at": f"ends_at ({ends_at.isoformat()}) is in the past: a maintenance window must end later."}
            )
        return attrs


class ReasonSerializer(serializers.Serializer):
    """The body of pause, resume and close-circuit. With a ``required_message`` the reason is
    required and that message says so; without one it is optional."""

    reason = serializers.CharField(required=False, allow_blank=True, allow_null=True, max_length=2000, default="")

    def __init__(self, *args: Any, required_message: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.required_message = required_message

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["reason"] = (attrs.get("reason") or "").strip()
        if self.required_message and not attrs["reason"]:
            raise serializers.ValidationError({"reason": self.required_message})
        return attrs


class ConnectionFlowSerializer(serializers.ModelSerializer):
    """One ERP connection's flow state. The view passes in the context, per connection id, the
    current and upcoming maintenance windows (``windows``) and the postings held for it (``held``)."""

    name = serializers.CharField(source="connection.name")
    kind = serializers.CharField(source="connection.kind")
    active = serializers.BooleanField(source="connection.active")
    budget = serializers.SerializerMethodField()
    in_maintenance = serializers.SerializerMethodField()
    maintenance_windows = serializers.SerializerMethodField(help_text="Current and upcoming windows.")
    held_postings = serializers.SerializerMethodField(
        help_text="Postings waiting for this connection (paused, maintenance, circuit open, busy)."
    )
    held_postings_by_code = serializers.SerializerMethodField()

    class Meta:
        model = ConnectionFlow
        fields = (
            "name",
            "kind",
            "active",
            "budget",
            "paused",
            "paused_reason",
            "paused_by",
            "paused_at",
            "circuit_state",
            "circuit_reason",
            "circuit_opened_at",
            "next_probe_at",
            "consecutive_failures",
            "failure_threshold",
            "in_maintenance",
            "maintenance_windows",
            "held_postings",
            "held_postings_by_code",
            "updated_at",
        )
        read_only_fields = fields

    def get_budget(self, flow: ConnectionFlow) -> dict[str, int]:
        return {
            "max_requests": flow.max_requests,
            "period_seconds": flow.period_seconds,
            "max_concurrency": flow.max_concurrency,
        }

    def _windows(self, flow: ConnectionFlow) -> list[MaintenanceWindow]:
        return self.context.get("windows", {}).get(flow.connection_id, [])

    def get_in_maintenance(self, flow: ConnectionFlow) -> bool:
        now = self.context.get("now") or timezone.now()
        return any(window.starts_at <= now < window.ends_at for window in self._windows(flow))

    def get_maintenance_windows(self, flow: ConnectionFlow) -> list[dict[str, Any]]:
        return MaintenanceWindowSerializer(self._windows(flow), many=True, context=self.context).data

    def get_held_postings(self, flow: ConnectionFlow) -> int:
        return sum(self.get_held_postings_by_code(flow).values())

    def get_held_postings_by_code(self, flow: ConnectionFlow) -> dict[str, int]:
        return self.context.get("held", {}).get(flow.connection_id, {})
