"""Reconciliation runs and the differences they find.

A **run** compares, for one ERP connection, one legal entity, one currency and one period
(``period_start`` to ``period_end``, both included), three records of the same documents:

- **billing**: what the billing engine says, read through its API where the source's adapter can
  list documents (Stripe, with the source's ``api`` settings), else the canonical ledger stands for
  billing (``ReconciliationRun.billing_basis`` says which, per source);
- **ledger**: the hub's canonical ledger, limited to the documents routed to the run's connection;
- **erp**: what the ERP's books hold under the hub's references, read through the connector's
  ``ledger_documents`` (``erp_read`` is false, and ``notes`` says why, when the connector cannot).

Each side's counts and amounts per document type are ``RunTotal`` rows. Every document on which
the sides disagree is one ``Difference`` row, of exactly one ``DifferenceKind`` (the first that
applies, in the order of the choices), linked to its ledger records, the posting that carries it,
and the exception case that holds it when a person has to act.

**Open differences** are those of the latest completed run of each scope
(``Difference.objects.open()``): a run replaces what earlier runs of the same scope found. The
trend of a scope is the difference count of its runs over time.

Amounts are integer minor units of the run's currency (``currency`` on a difference says which
currency each amount is in when the sides disagree about it).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Exists, OuterRef, Q, QuerySet

from apps.console.models import ExceptionCase
from apps.ledger.models import CreditMemo, Invoice, LegalEntity, PaymentApplication
from apps.posting.models import Posting
from apps.routing.models import ERPConnection


class DocumentType(models.TextChoices):
    INVOICE = "invoice", "Invoice"
    CREDIT_MEMO = "credit_memo", "Credit memo"
    PAYMENT = "payment", "Payment"
    REFUND = "refund", "Refund"
    WRITE_OFF = "write_off", "Write-off"


class Side(models.TextChoices):
    BILLING = "billing", "Billing"
    LEDGER = "ledger", "Canonical ledger"
    ERP = "erp", "ERP"


class DifferenceKind(models.TextChoices):
    """In the order a document is checked: a document gets the first kind that applies."""

    MISSING_IN_LEDGER = "missing_in_ledger", "Missing in ledger"
    MISSING_IN_ERP = "missing_in_erp", "Missing in ERP"
    DUPLICATE_IN_ERP = "duplicate_in_erp", "Duplicate in ERP"
    CURRENCY_MISMATCH = "currency_mismatch", "Currency mismatch"
    AMOUNT_MISMATCH = "amount_mismatch", "Amount mismatch"
    STATUS_MISMATCH = "status_mismatch", "Status mismatch"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class Trigger(models.TextChoices):
    SCHEDULE = "schedule", "Schedule (celery beat)"
    ADMIN = "admin", "On demand (admin)"
    COMMAND = "command", "On demand (manage.py reconcile)"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)
SCOPE_FIELDS = ("connection", "legal_entity", "currency", "period_start", "period_end")


class RunQuerySet(QuerySet["ReconciliationRun"]):
    def latest_completed(self) -> RunQuerySet:
        """The last completed run of each scope: the one whose differences are open now."""
        newer = ReconciliationRun.objects.filter(
            status=RunStatus.COMPLETED,
            finished_at__gt=OuterRef("finished_at"),
            **{field: OuterRef(field) for field in SCOPE_FIELDS},
        )
        return self.filter(status=RunStatus.COMPLETED).exclude(Exists(newer))


class ReconciliationRun(models.Model):
    connection = models.ForeignKey(ERPConnection, on_delete=models.PROTECT, related_name="reconciliation_runs")
    legal_entity = models.ForeignKey(LegalEntity, on_delete=models.PROTECT, related_name="reconciliation_runs")
    currency = models.CharField(max_length=3, help_text="ISO 4217; every amount of the run is in its minor units.")
    period_start = models.DateField()
    period_end = models.DateField(help_text="Included.")
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    requested_by = models.CharField(max_length=150, help_text="Who asked for it (a username, or 'system').")
    heal = models.BooleanField(
        default=True, help_text="Re-plan what is safe to post again, and open cases for the rest."
    )

    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    queued_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True, db_index=True)
    error = models.TextField(blank=True, help_text="Why a failed run failed.")

    billing_basis = models.JSONField(
        default=dict,
        blank=True,
        help_text='Per billing source of the legal entity: "api" (read from the engine) or "ledger" (the '
        "canonical ledger stands for billing: the source has no query API).",
    )
    erp_read = models.BooleanField(default=False, help_text="The ERP side was read through the connector.")
    notes = models.TextField(blank=True, help_text="What each side was read from, and what could not be read.")
    documents_compared = models.PositiveIntegerField(default=0)
    difference_count = models.PositiveIntegerField(default=0)
    replanned_count = models.PositiveIntegerField(default=0, help_text="Differences healed by planning postings.")
    case_count = models.PositiveIntegerField(default=0, help_text="Differences held by an exception case.")
    timings = models.JSONField(default=dict, blank=True, help_text="Seconds spent per phase.")

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-queued_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=list(SCOPE_FIELDS),
                condition=Q(status__in=ACTIVE_STATUSES),
                name="one_active_reconciliation_per_scope",
            ),
            models.CheckConstraint(condition=Q(period_end__gte=models.F("period_start")), name="recon_period_order"),
        ]
        indexes = [models.Index(fields=[*SCOPE_FIELDS, "status", "finished_at"], name="recon_run_scope")]
        permissions = [("run_reconciliation", "Can start a reconciliation run")]

    def __str__(self) -> str:
        return f"Reconciliation {self.pk}: {self.scope_label}"

    @property
    def scope_label(self) -> str:
        return (
            f"{self.connection.name} · {self.legal_entity.code} · {self.currency} · "
            f"{self.period_start.isoformat()} to {self.period_end.isoformat()}"
        )

    def same_scope(self) -> QuerySet[ReconciliationRun]:
        return ReconciliationRun.objects.filter(**{field: getattr(self, field) for field in SCOPE_FIELDS})


class RunTotal(models.Model):
    """What one side holds for the run's scope: how many documents of a type, and their amount."""

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="totals")
    side = models.CharField(max_length=16, choices=Side.choices)
    document_type = models.CharField(max_length=16, choices=DocumentType.choices)
    count = models.PositiveIntegerField(default=0)
    amount_minor = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["run", "document_type", "side"]
        constraints = [
            models.UniqueConstraint(fields=["run", "side", "document_type"], name="one_total_per_side_and_type")
        ]

    def __str__(self) -> str:
        return f"{self.side} {self.document_type}: {self.count} / {self.amount_minor}"


class StatusReason(models.TextChoices):
    """Why a status differs, for a status mismatch: the heal depends on it."""

    NONE = "", "—"
    ERP_BEHIND = "erp_behind", "Billing voided or settled it; the ERP still shows it open"
    ERP_DIFFERS = "erp_differs", "The ERP shows a state billing never had"
    LEDGER_BEHIND = "ledger_behind", "Billing changed it; the hub's ledger never heard of it"
    SUPERSEDED_OPEN = "superseded_open", "An amended invoice's earlier version is still open in the ERP"


class HealAction(models.TextChoices):
    NONE = "", "—"
    REPLANNED = "replanned", "Postings planned with their original keys"
    IN_PROGRESS = "in_progress", "Already being posted"
    EXISTING_CASE = "existing_case", "Held by the document's open exception case"
    CASE_OPENED = "case_opened", "Exception case opened for finance"
    DECIDED = "decided", "A person decided not to post it"


class DifferenceQuerySet(QuerySet["Difference"]):
    def open(self) -> DifferenceQuerySet:
        """The differences of the latest completed run of each scope."""
        return self.filter(run__in=ReconciliationRun.objects.latest_completed())


class Difference(models.Model):
    """One document on which billing, the ledger and the ERP disagree, as one run found it.

    ``source_id`` names the document in billing: an invoice or credit note by its id, a payment
    application ``<payment>:<invoice>``, a refund ``<credit note>:refund``, a write-off
    ``<invoice>:write-off``; ``external_ref`` is the reference the ERP holds (or should hold) it
    under, which for an amended invoice carries its version (``<invoice>#r2``)."""

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="differences")
    kind = models.CharField(max_length=32, choices=DifferenceKind.choices)
    document_type = models.CharField(max_length=16, choices=DocumentType.choices)
    source = models.CharField(max_length=64)
    source_id = models.CharField(max_length=512)
    external_ref = models.CharField(max_length=600)
    document_date = models.DateField(null=True, blank=True)
    currency = models.CharField(max_length=3, help_text="The ledger's currency (else billing's, else the ERP's).")

    billing_amount_minor = models.BigIntegerField(null=True, blank=True)
    ledger_amount_minor = models.BigIntegerField(null=True, blank=True)
    erp_amount_minor = models.BigIntegerField(null=True, blank=True, help_text="Of the first ERP document.")
    billing_currency = models.CharField(max_length=3, blank=True)
    erp_currency = models.CharField(max_length=3, blank=True)
    billing_status = models.CharField(max_length=16, blank=True)
    ledger_status = models.CharField(max_length=16, blank=True)
    erp_status = models.CharField(max_length=16, blank=True)
    status_reason = models.CharField(max_length=16, choices=StatusReason.choices, blank=True, default="")
    erp_documents = models.JSONField(
        default=list, blank=True, help_text="Every ERP document under the reference: id, number, amount, status, date."
    )
    description = models.TextField(help_text="What disagrees, in finance's words.")

    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    credit_memo = models.ForeignKey(CreditMemo, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    payment_application = models.ForeignKey(
        PaymentApplication, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    posting = models.ForeignKey(
        Posting,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The posting that carries the document to the run's connection, where there is one.",
    )

    heal_action = models.CharField(max_length=16, choices=HealAction.choices, blank=True, default="")
    heal_detail = models.TextField(blank=True)
    healing_postings = models.JSONField(default=list, blank=True, help_text="Ids of the postings the heal planned.")
    case = models.ForeignKey(ExceptionCase, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects = DifferenceQuerySet.as_manager()

    class Meta:
        ordering = ["run", "kind", "document_type", "source_id"]
        indexes = [
            models.Index(fields=["run", "kind"], name="recon_diff_run_kind"),
            models.Index(fields=["source", "source_id"], name="recon_diff_document"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.get_document_type_display().lower()} {self.source_id}"

    @property
    def document_ref(self) -> str:
        return f"{self.source}:{self.source_id}"
