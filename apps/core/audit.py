"""One function to write an audit event; callers name the action in the finance domain."""

from __future__ import annotations

from typing import Any

from django.db import models

from apps.core.correlation import get_correlation_id
from apps.core.models import AuditEvent

SYSTEM = "system"


def record(
    action: str,
    obj: models.Model,
    *,
    actor: str = SYSTEM,
    reason: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    correlation_id: str = "",
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor=actor,
        action=action,
        object_type=obj._meta.label_lower,
        object_id=str(obj.pk),
        correlation_id=correlation_id or getattr(obj, "correlation_id", "") or get_correlation_id(),
        reason=reason,
        before=before,
        after=after,
    )
