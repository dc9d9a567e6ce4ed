"""How fast, how wide and whether at all the hub may call each ERP connection: a request budget
(at most N requests in any window of P seconds, and at most C at once), a circuit breaker, a
manual pause, and maintenance windows."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from apps.core.config_cache import ConfigQuerySet
from apps.routing.models import ERPConnection

# Defaults per ERP kind from the vendors' published limits (requests, period in seconds, concurrency).
DEFAULT_BUDGETS: dict[str, tuple[int, int, int]] = {
    "tryton": (20, 1, 4),  # self-hosted; concurrent posts contend on the invoice sequence
    "netsuite": (100, 60, 5),  # account concurrency limit 5 (standard tier); SuiteTalk REST governance
    "dynamics365": (6000, 300, 52),  # service protection: 6,000 requests per 5 min, 52 concurrent per user
    "quickbooks": (500, 60, 10),  # 500 requests per minute, 10 concurrent per realm
    "xero": (60, 60, 5),  # 60 calls per minute, 5 concurrent per tenant
    "sap_s4hana": (50, 1, 8),  # OData: no fixed public limit; a conservative default
    "stripe": (25, 1, 5),  # writeback: Stripe allows 100 operations/s live and 25/s in test mode
    # writeback: Lago Cloud allows 50 requests/s per organization, shared with its other clients; one
    # at a time, since an update replaces an invoice's whole metadata list (read, then write)
    "lago": (20, 1, 1),
    # writeback: a sandbox site allows 400 requests a minute; one at a time, as a PUT replaces the notes whole
    "recurly": (400, 60, 1),
    "chargebee": (150, 60, 5),  # writeback: 150 requests per minute on test sites and Starter live sites
}
FALLBACK_BUDGET = (10, 1, 2)


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed (calling the ERP)"
    OPEN = "open", "Open (not calling the ERP)"
    HALF_OPEN = "half_open", "Half-open (one probe at a time)"


class ConnectionFlow(models.Model):
    connection = models.OneToOneField(ERPConnection, on_delete=models.CASCADE, related_name="flow")
    max_requests = models.PositiveIntegerField(help_text="At most this many requests...")
    period_seconds = models.PositiveIntegerField(help_text="...in any window of this many seconds.")
    max_concurrency = models.PositiveIntegerField(help_text="At most this many calls in flight at once.")

    paused = models.BooleanField(default=False)
    paused_reason = models.TextField(blank=True)
    paused_by = models.CharField(max_length=150, blank=True)
    paused_at = models.DateTimeField(null=True, blank=True)

    circuit_state = models.CharField(max_length=16, choices=CircuitState.choices, default=CircuitState.CLOSED)
    consecutive_failures = models.PositiveIntegerField(default=0)
    failure_threshold = models.PositiveIntegerField(
        default=5, help_text="Consecutive failures (ERP unreachable or erroring) that open the circuit."
    )
    probe_after_seconds = models.PositiveIntegerField(default=60, help_text="How long the circuit stays open.")
    circuit_opened_at = models.DateTimeField(null=True, blank=True)
    circuit_reason = models.TextField(blank=True)
    next_probe_at = models.DateTimeField(null=True, blank=True)
    # The probe time a held posting has already been sent for: one message per probe, not one per hold.
    probe_sent_for = models.DateTimeField(null=True, blank=True, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "ERP connection flow"

    def __str__(self) -> str:
        return f"{self.connection.name}: {self.max_requests}/{self.period_seconds}s, {self.max_concurrency} at once"


class MaintenanceWindow(models.Model):
    connection = models.ForeignKey(ERPConnection, on_delete=models.CASCADE, related_name="maintenance_windows")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["starts_at"]
        indexes = [models.Index(fields=["connection", "ends_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="window_ends_after_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.connection.name} {self.starts_at:%Y-%m-%d %H:%M} → {self.ends_at:%H:%M} ({self.reason})"
