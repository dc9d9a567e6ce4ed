from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.ledger.models import Customer, Invoice, LegalEntity
from apps.posting.models import ErrorCategory, Posting
from apps.routing.models import ERPConnection


class PostingException(Posting):
    """Parked and dead postings: the raw exception queue engineers work from."""

    class Meta:
        proxy = True
        verbose_name = "exception posting"
        verbose_name_plural = "exception postings (parked and dead)"


class DeadLetter(Posting):
    """Postings whose retries are spent: the dead-letter queue."""

    class Meta:
        proxy = True
        verbose_name = "dead letter"
        verbose_name_plural = "dead-letter queue"


class CaseStatus(models.TextChoices):
    OPEN = "open", "Open"
    RESOLVED = "resolved", "Resolved"


class ExceptionCase(models.Model):
    """One document that needs a person on one ERP connection: the invoice and the payment waiting
    on it are one case. Opened when a posting is parked or dies, resolved when none of the
    document's postings needs anyone any more."""

    ROOT_INVOICE = "invoice"
    ROOT_CUSTOMER = "customer"
    ROOT_EVENT = "event"  # a billing event no routing rule takes: no connection yet
    ROOT_RECONCILIATION = "reconciliation"  # a document billing, the ledger and the ERP disagree on
    ROOT_CHOICES = [
        (ROOT_INVOICE, "Invoice"),
        (ROOT_CUSTOMER, "Customer"),
        (ROOT_EVENT, "Billing event"),
        (ROOT_RECONCILIATION, "Reconciliation difference"),
    ]

    connection = models.ForeignKey(ERPConnection, null=True, blank=True, on_delete=models.PROTECT, related_name="cases")
    root_kind = models.CharField(max_length=16, choices=ROOT_CHOICES)
    source = models.CharField(max_length=64)
    source_id = models.CharField(max_length=512)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT)
    legal_entity = models.ForeignKey(LegalEntity, null=True, blank=True, on_delete=models.PROTECT)

    status = models.CharField(max_length=16, choices=CaseStatus.choices, default=CaseStatus.OPEN)
    category = models.CharField(max_length=16, choices=ErrorCategory.choices)
    kind = models.CharField(max_length=64, help_text="The kind of problem, in finance's words.")
    code = models.CharField(max_length=64, help_text="The catalogue entry.")
    message = models.TextField(help_text="What is wrong and what fixes it, from the message catalogue.")
    technical_detail = models.TextField(blank=True)
    owner_group = models.CharField(max_length=64)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="exception_cases"
    )
    failing_posting = models.ForeignKey(Posting, null=True, on_delete=models.SET_NULL, related_name="+")
    correlation_id = models.CharField(max_length=100, blank=True)

    opened_at = models.DateTimeField(default=timezone.now)
    last_failure_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True)
    resolution = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["opened_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "root_kind", "source", "source_id"],
                condition=Q(status="open"),
                name="one_open_case_per_document",
            )
        ]
        indexes = [
            models.Index(fields=["status", "category", "opened_at"]),
            models.Index(fields=["status", "opened_at"]),
            models.Index(fields=["status", "owner"]),
            models.Index(fields=["status", "connection"]),
            models.Index(fields=["status", "legal_entity"]),
            models.Index(fields=["source", "source_id"]),
        ]
        permissions = [
            ("retry_case", "Can retry a case's postings"),
            ("replay_case", "Can replay a case from its raw events"),
            ("correct_case", "Can correct a mapping and repost"),
            ("link_case", "Can link a case to an existing ERP document"),
            ("skip_case", "Can skip a case's postings"),
            ("assign_case", "Can assign cases"),
        ]

    def __str__(self) -> str:
        return f"Case {self.pk}: {self.kind} ({self.source_id})"

    @property
    def age(self) -> timezone.timedelta:
        return (self.resolved_at or timezone.now()) - self.opened_at

    @property
    def external_ref(self) -> str:
        return f"{self.source}:{self.source_id}"


class ControlTower(ERPConnection):
    """The control tower page (``/admin/console/controltower/``): KPIs per ERP connection against
    their SLA. A proxy so the page has its own view permission and its own entry in the admin index."""

    class Meta:
        proxy = True
        verbose_name = "control tower"
        verbose_name_plural = "control tower"


# The thresholds a connection is held to until someone sets its own.
DEFAULT_MIN_SUCCESS_RATE_PERCENT = Decimal("95.00")
DEFAULT_MAX_P95_LATENCY_SECONDS = 300
DEFAULT_MAX_BACKLOG = 1000
DEFAULT_MAX_OPEN_CASE_AGE_HOURS = 24


class ConnectionSLA(models.Model):
    """What finance expects of one ERP connection; the control tower shows a breach of any of them."""

    connection = models.OneToOneField(ERPConnection, on_delete=models.CASCADE, related_name="sla")
    min_success_rate_percent = models.DecimalField(
        max_digits=5,
        decimal_places=2,
        default=DEFAULT_MIN_SUCCESS_RATE_PERCENT,
        validators=[MinValueValidator(Decimal("0")), MaxValueValidator(Decimal("100"))],
        help_text="Posted ÷ (posted + parked + dead) over the window, at least this.",
    )
    max_p95_latency_seconds = models.PositiveIntegerField(
        default=DEFAULT_MAX_P95_LATENCY_SECONDS,
        help_text="95% of documents posted within this many seconds of their billing event.",
    )
    max_backlog = models.PositiveIntegerField(
        default=DEFAULT_MAX_BACKLOG, help_text="Postings not yet posted, parked, dead or skipped, at most this."
    )
    max_open_case_age_hours = models.PositiveIntegerField(
        default=DEFAULT_MAX_OPEN_CASE_AGE_HOURS, help_text="No exception case open longer than this."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "connection SLA"
        verbose_name_plural = "connection SLAs"

    def __str__(self) -> str:
        return f"SLA of {self.connection}"

    @classmethod
    def for_connection(cls, connection: ERPConnection) -> ConnectionSLA:
        """The connection's own thresholds, or the defaults (unsaved) when none are set."""
        sla = cls.objects.filter(connection=connection).first()
        return sla or cls(connection=connection)

    def facts(self) -> dict[str, object]:
        return {
            "min_success_rate_percent": str(self.min_success_rate_percent),
            "max_p95_latency_seconds": self.max_p95_latency_seconds,
            "max_backlog": self.max_backlog,
            "max_open_case_age_hours": self.max_open_case_age_hours,
        }
