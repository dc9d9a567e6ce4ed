"""The outbox: one Posting per document × ERP connection × operation × revision.

The row exists before any task is enqueued, so a lost Celery message costs latency (a sweeper
re-enqueues it), never a posting. ``idempotency_key`` is unique: planning the same work twice
finds the existing row instead of creating a second one.
"""

from __future__ import annotations

import hashlib

from django.db import models
from django.utils import timezone

from apps.ledger.models import CreditMemo, Customer, Dispute, Invoice, Payment, PaymentApplication
from apps.routing.models import ERPConnection, RoutingVersion


def idempotency_key(connection: str, operation: str, source: str, source_id: str, revision: int) -> str:
    raw = "\x1f".join([connection, operation, source, source_id, str(revision)])
    return hashlib.sha256(raw.encode()).hexdigest()


class PostingState(models.TextChoices):
    QUEUED = "queued", "Queued"
    WAITING = "waiting", "Waiting for parent"
    IN_FLIGHT = "in_flight", "In flight"
    RETRY_SCHEDULED = "retry_scheduled", "Retry scheduled"
    POSTED = "posted", "Posted"
    PARKED = "parked", "Parked (needs action)"
    DEAD = "dead", "Dead (retries spent)"
    SKIPPED = "skipped", "Skipped"


CLAIMABLE_STATES = (PostingState.QUEUED, PostingState.RETRY_SCHEDULED)
EXCEPTION_STATES = (PostingState.PARKED, PostingState.DEAD)


class Operation(models.TextChoices):
    ENSURE_CUSTOMER = "ensure_customer", "Ensure customer"
    POST_INVOICE = "post_invoice", "Post invoice"
    APPLY_PAYMENT = "apply_payment", "Apply payment"
    VOID_INVOICE = "void_invoice", "Void invoice"
    WRITE_OFF = "write_off", "Write off invoice"
    POST_CREDIT_MEMO = "post_credit_memo", "Post credit memo"
    REFUND_CREDIT_MEMO = "refund_credit_memo", "Refund credit memo"
    VOID_CREDIT_MEMO = "void_credit_memo", "Void credit memo"
    WITHDRAW_DISPUTED_FUNDS = "withdraw_disputed_funds", "Withdraw disputed funds"
    REINSTATE_DISPUTED_FUNDS = "reinstate_disputed_funds", "Reinstate disputed funds"
    LOSE_DISPUTE = "lose_dispute", "Record lost dispute"
    RECEIVE_ON_ACCOUNT = "receive_on_account", "Receive unapplied cash"
    APPLY_CREDIT = "apply_credit", "Apply customer credit"
    WRITE_BACK = "write_back", "Write back to billing"


class ErrorCategory(models.TextChoices):
    NONE = "", "—"
    BUSINESS = "business", "Business (finance)"
    TECHNICAL = "technical", "Technical (engineers)"


class Posting(models.Model):
    idempotency_key = models.CharField(max_length=64, unique=True)
    connection = models.ForeignKey(ERPConnection, on_delete=models.PROTECT, related_name="postings")
    routing_version = models.ForeignKey(
        RoutingVersion,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="The version of the routing rules that sent this document to its connection.",
    )
    operation = models.CharField(max_length=32, choices=Operation.choices)
    source = models.CharField(max_length=64)
    source_id = models.CharField(max_length=512, help_text="The billing document this posting carries.")
    revision = models.PositiveIntegerField(default=1)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT)
    payment_application = models.ForeignKey(PaymentApplication, null=True, blank=True, on_delete=models.PROTECT)
    credit_memo = models.ForeignKey(CreditMemo, null=True, blank=True, on_delete=models.PROTECT)
    dispute = models.ForeignKey(Dispute, null=True, blank=True, on_delete=models.PROTECT)
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT)
    depends_on_key = models.CharField(max_length=64, blank=True, db_index=True)

    state = models.CharField(max_length=16, choices=PostingState.choices, default=PostingState.QUEUED, db_index=True)
    attempt_count = models.PositiveIntegerField(default=0)
    attempt_budget_start = models.PositiveIntegerField(
        default=0, help_text="attempt_count when a person last retried: the cap counts attempts since then."
    )
    retry_at = models.DateTimeField(null=True, blank=True, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    claim_token = models.CharField(max_length=64, blank=True)
    slot_lease = models.CharField(
        max_length=64, blank=True, help_text="The connection concurrency slot the running claim holds."
    )
    verify_before_retry = models.BooleanField(
        default=False, help_text="The last call may have reached the ERP: look it up before sending again."
    )
    posted_at = models.DateTimeField(null=True, blank=True)
    erp_id = models.CharField(max_length=128, blank=True)
    erp_number = models.CharField(max_length=128, blank=True)

    error_category = models.CharField(max_length=16, choices=ErrorCategory.choices, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True)
    finance_message = models.TextField(blank=True)
    technical_detail = models.TextField(blank=True)
    error_params = models.JSONField(
        default=dict, blank=True, help_text="Named facts of the error (an account code...) for the message catalogue."
    )

    correlation_id = models.CharField(max_length=100, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["state", "retry_at"]),
            models.Index(fields=["connection", "state"]),
            models.Index(fields=["source", "source_id"]),
        ]

    def __str__(self) -> str:
        return f"{self.get_operation_display()} {self.source_id} → {self.connection}"

    @property
    def external_ref(self) -> str:
        return f"{self.source}:{self.source_id}"

    @property
    def age(self) -> timezone.timedelta:
        return timezone.now() - self.created_at


class PostingAttempt(models.Model):
    """One call to the ERP. Written before the call (outcome 'started'), completed after it:
    a row left 'started' is the trace of a worker that died mid-call."""

    class Outcome(models.TextChoices):
        STARTED = "started", "Started"
        POSTED = "posted", "Posted"
        FOUND = "found", "Found in ERP by lookup"
        TRANSIENT = "transient", "Transient failure"
        UNCERTAIN = "uncertain", "Uncertain (may have reached the ERP)"
        BUSINESS = "business", "Refused by the ERP (business rule)"
        CONFIGURATION = "configuration", "Configuration or authentication"
        ERROR = "error", "Unexpected error"
        ABANDONED = "abandoned", "Abandoned (worker lost)"

    posting = models.ForeignKey(Posting, on_delete=models.PROTECT, related_name="attempts")
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.STARTED)
    worker = models.CharField(max_length=200, blank=True)
    erp_id = models.CharField(max_length=128, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    detail = models.TextField(blank=True)
    correlation_id = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["posting", "number"]
        constraints = [models.UniqueConstraint(fields=["posting", "number"], name="attempt_number_once")]

    def __str__(self) -> str:
        return f"#{self.number} {self.outcome}"


class RedateReason(models.TextChoices):
    CLOSED_PERIOD = "closed_period", "Period closed in the ERP"
    INVOICE_DATE_ORDER = "invoice_date_out_of_sequence", "A later invoice is already numbered in the ERP"


class RedatedPosting(models.Model):
    """A document the ERP would not take on billing's date, posted on the first day it accepts by
    the connection's closed-period policy (``redate``). Written when the hub decides, before it
    sends the re-dated document, so a document whose answer was lost is still known as re-dated;
    the posting's state says whether it reached the ERP. One per posting: a later attempt sends
    the same date again, and moves it only when the ERP refuses that date too."""

    posting = models.OneToOneField(Posting, on_delete=models.PROTECT, related_name="redated")
    original_date = models.DateField(help_text="The document's date in billing.")
    posted_date = models.DateField(db_index=True, help_text="The date the hub gave the document in the ERP.")
    reason = models.CharField(max_length=32, choices=RedateReason.choices)
    erp_message = models.TextField(blank=True, help_text="What the ERP said when it refused billing's date.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-posted_date", "-id"]
        verbose_name = "re-dated posting"

    def __str__(self) -> str:
        return f"{self.posting}: {self.original_date} → {self.posted_date}"
