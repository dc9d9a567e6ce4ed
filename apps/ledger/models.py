"""The canonical ledger: what billing said, in one shape for every engine and every ERP.

Identity: ``(source, source_id)`` is unique and never changes once written. ``source_version`` is
the billing engine's own ordering stamp (for Stripe, the event's ``created``): an older version
never overwrites a newer one, which makes normalization safe under out-of-order delivery.
``revision`` counts amendments that change what the ERP must hold; it is part of the posting
idempotency key.
"""

from __future__ import annotations

from typing import Any

from django.db import models

from apps.core.config_cache import ConfigQuerySet
from apps.core.money import Money, exponent_for


class LegalEntity(models.Model):
    code = models.CharField(max_length=32, unique=True, help_text="Short code finance uses, e.g. US01.")
    name = models.CharField(max_length=200)
    country = models.CharField(max_length=2, blank=True)
    base_currency = models.CharField(max_length=3)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "legal entities"
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


def totals_reconcile(document: Any, lines: list[Any]) -> bool:
    """The lines add up to the subtotal and the tax, and those to the total (invoice or credit)."""
    return bool(
        sum(line.amount_minor for line in lines) == document.subtotal_minor
        and sum(line.tax_minor for line in lines) == document.tax_minor
        and document.subtotal_minor + document.tax_minor == document.total_minor
    )


class SourceRecord(models.Model):
    source = models.CharField(max_length=64, help_text="Name of the configured billing source.")
    source_id = models.CharField(max_length=255, help_text="The billing engine's own id. Immutable.")
    source_version = models.BigIntegerField(default=0)
    revision = models.PositiveIntegerField(default=1)
    correlation_id = models.CharField(max_length=100, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def external_ref(self) -> str:
        """The reference the hub writes into every ERP to find this document again."""
        return f"{self.source}:{self.source_id}"


class Customer(SourceRecord):
    legal_entity = models.ForeignKey(LegalEntity, null=True, blank=True, on_delete=models.PROTECT)
    name = models.CharField(max_length=255)
    email = models.EmailField(blank=True)
    currency = models.CharField(max_length=3, blank=True)
    tax_id = models.CharField(max_length=64, blank=True)
    tax_id_type = models.CharField(max_length=32, blank=True)
    payment_terms_days = models.PositiveIntegerField(null=True, blank=True)
    bill_to = models.JSONField(default=dict, blank=True)
    sold_to = models.JSONField(default=dict, blank=True)
    # Which fields came from the customer object itself (authoritative) rather than from the
    # snapshot an invoice carries; snapshot values only fill blanks.
    authoritative = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="customer_source_identity")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.source_id})"


class Product(SourceRecord):
    KIND_PRODUCT = "product"
    KIND_PLAN = "plan"
    kind = models.CharField(max_length=16, choices=[(KIND_PRODUCT, "Product"), (KIND_PLAN, "Plan")])
    name = models.CharField(max_length=255)
    product_line = models.CharField(max_length=64, blank=True)
    revenue_category = models.CharField(
        max_length=64,
        blank=True,
        help_text="Hub-wide revenue category; mappings per ERP turn it into an account.",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="product_source_identity")]

    def __str__(self) -> str:
        return self.name or self.source_id


class Invoice(SourceRecord):
    STATUS_OPEN = "open"
    STATUS_PAID = "paid"
    STATUS_VOID = "void"
    STATUS_UNCOLLECTIBLE = "uncollectible"
    STATUS_CHOICES = [
        (STATUS_OPEN, "Open"),
        (STATUS_PAID, "Paid"),
        (STATUS_VOID, "Void"),
        (STATUS_UNCOLLECTIBLE, "Uncollectible"),
    ]
    number = models.CharField(max_length=64, blank=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="invoices")
    legal_entity = models.ForeignKey(LegalEntity, null=True, blank=True, on_delete=models.PROTECT)
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=STATUS_OPEN)
    status_date = models.DateField(
        null=True, blank=True, help_text="When billing last changed the status (voided, marked uncollectible, paid)."
    )
    currency = models.CharField(max_length=3)
    currency_exponent = models.PositiveSmallIntegerField()
    subtotal_minor = models.BigIntegerField()
    tax_minor = models.BigIntegerField(default=0)
    total_minor = models.BigIntegerField()
    amount_paid_minor = models.BigIntegerField(default=0)
    invoice_date = models.DateField()
    due_date = models.DateField(null=True, blank=True)
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "source_id"], name="invoice_source_identity"),
            models.CheckConstraint(condition=models.Q(currency_exponent__lte=4), name="invoice_exponent_sane"),
        ]
        ordering = ["-invoice_date", "-id"]

    def __str__(self) -> str:
        return self.number or self.source_id

    @property
    def total(self) -> Money:
        return Money(self.total_minor, self.currency)

    def totals_reconcile(self) -> bool:
        return totals_reconcile(self, list(self.lines.all()))

    def save(self, *args: object, **kwargs: object) -> None:
        self.currency_exponent = exponent_for(self.currency)
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class InvoiceLine(models.Model):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    source_line_id = models.CharField(max_length=255, blank=True)
    description = models.CharField(max_length=500)
    product = models.ForeignKey(Product, null=True, blank=True, on_delete=models.PROTECT)
    price_id = models.CharField(max_length=255, blank=True)
    quantity = models.DecimalField(max_digits=20, decimal_places=6)
    unit_amount_minor = models.BigIntegerField()
    amount_minor = models.BigIntegerField(help_text="Excluding tax.")
    tax_minor = models.BigIntegerField(default=0)
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True)
    revenue_category = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["invoice", "position"]
        constraints = [models.UniqueConstraint(fields=["invoice", "position"], name="invoice_line_position")]

    def __str__(self) -> str:
        return self.description


class Payment(SourceRecord):
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="payments")
    # Billing's id of the customer, kept so a payment normalized before its customer (events of one
    # customer are normalized in parallel) is linked, and its credit posted, when the customer arrives.
    customer_source_id = models.CharField(max_length=255, blank=True, db_index=True)
    currency = models.CharField(max_length=3)
    amount_minor = models.BigIntegerField()
    method = models.CharField(max_length=32, blank=True, help_text="card, bank_transfer, ...")
    settled_at = models.DateTimeField()
    on_account_minor = models.BigIntegerField(
        default=0, help_text="What was not applied to an invoice when it was received: customer credit."
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="payment_source_identity")]
        ordering = ["-settled_at"]

    def __str__(self) -> str:
        return f"{self.source_id} {Money(self.amount_minor, self.currency)}"


class PaymentApplication(models.Model):
    """The part of a payment applied to one invoice. The invoice may not have reached the ledger
    yet (payment events can arrive first): ``invoice_source_id`` is kept and linked later."""

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="applications")
    invoice_source_id = models.CharField(max_length=255)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="payments")
    amount_minor = models.BigIntegerField()
    from_credit = models.BooleanField(
        default=False, help_text="Applied later from the customer credit the payment left, not as new cash."
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["payment", "invoice_source_id"], name="payment_application_once")
        ]

    @property
    def external_ref(self) -> str:
        return f"{self.payment.external_ref}:{self.invoice_source_id}"

    def __str__(self) -> str:
        return f"{self.payment.source_id} → {self.invoice_source_id}"


class CreditMemo(SourceRecord):
    """A credit note billing issued against an invoice: it reduces what the customer owes. The
    invoice may reach the ledger after it (``invoice_source_id`` is kept and linked later)."""

    STATUS_ISSUED = "issued"
    STATUS_VOID = "void"
    STATUS_CHOICES = [(STATUS_ISSUED, "Issued"), (STATUS_VOID, "Void")]

    number = models.CharField(max_length=64, blank=True)
    customer = models.ForeignKey(Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="credit_memos")
    invoice_source_id = models.CharField(max_length=255)
    invoice = models.ForeignKey(Invoice, null=True, blank=True, on_delete=models.PROTECT, related_name="credit_memos")
    status = models.CharField(max_length=16, choices=STATUS_CHOICES, default=STATUS_ISSUED)
    status_date = models.DateField(null=True, blank=True)
    currency = models.CharField(max_length=3)
    subtotal_minor = models.BigIntegerField()
    tax_minor = models.BigIntegerField(default=0)
    total_minor = models.BigIntegerField()
    memo_date = models.DateField()
    reason = models.CharField(max_length=200, blank=True, help_text="Billing's reason and memo, for people.")
    refunded_minor = models.BigIntegerField(default=0, help_text="The part billing paid back to the customer.")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="credit_memo_source_identity")]
        ordering = ["-memo_date", "-id"]

    def __str__(self) -> str:
        return self.number or self.source_id

    def totals_reconcile(self) -> bool:
        return totals_reconcile(self, list(self.lines.all()))


class CreditMemoLine(models.Model):
    credit_memo = models.ForeignKey(CreditMemo, on_delete=models.CASCADE, related_name="lines")
    position = models.PositiveIntegerField()
    source_line_id = models.CharField(max_length=255, blank=True)
    description = models.CharField(max_length=500)
    quantity = models.DecimalField(max_digits=20, decimal_places=6)
    unit_amount_minor = models.BigIntegerField()
    amount_minor = models.BigIntegerField(help_text="Excluding tax, positive: the amount credited.")
    tax_minor = models.BigIntegerField(default=0)
    invoice_line_source_id = models.CharField(
        max_length=255, blank=True, help_text="The invoice line it credits; its product gives the revenue account."
    )

    class Meta:
        ordering = ["credit_memo", "position"]
        constraints = [models.UniqueConstraint(fields=["credit_memo", "position"], name="credit_memo_line_position")]


class Dispute(SourceRecord):
    """A chargeback: the cardholder's bank takes the payment's money back while the dispute runs
    (funds withdrawn), returns it if the merchant wins, and keeps it if the merchant loses. The
    invoice stays paid in billing throughout, so the ERP moves the money through a disputed-funds
    account and never reopens the receivable."""

    STATUS_INQUIRY = "inquiry"
    STATUS_OPEN = "open"
    STATUS_WON = "won"
    STATUS_LOST = "lost"
    STATUS_CHOICES = [
        (STATUS_INQUIRY, "Inquiry (no funds withdrawn)"),
        (STATUS_OPEN, "Open (funds withdrawn)"),
        (STATUS_WON, "Won (funds reinstated)"),
        (STATUS_LOST, "Lost"),
    ]
    FUNDS_WITHDRAWN = (STATUS_OPEN, STATUS_WON, STATUS_LOST)

    legal_entity = models.ForeignKey(LegalEntity, null=True, blank=True, on_delete=models.PROTECT)
    payment_source_id = models.CharField(max_length=255, help_text="The disputed payment's id in billing.")
    payment = models.ForeignKey(Payment, null=True, blank=True, on_delete=models.PROTECT, related_name="disputes")
    currency = models.CharField(max_length=3)
    amount_minor = models.BigIntegerField(help_text="The disputed amount, withdrawn while the dispute runs.")
    status = models.CharField(max_length=16, choices=STATUS_CHOICES)
    reason = models.CharField(max_length=200, blank=True)
    opened_on = models.DateField()
    closed_on = models.DateField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="dispute_source_identity")]
        ordering = ["-opened_on", "-id"]

    def __str__(self) -> str:
        return f"{self.source_id} {Money(self.amount_minor, self.currency)} {self.status}"

    @property
    def funds_withdrawn(self) -> bool:
        return self.status in self.FUNDS_WITHDRAWN


class Subscription(SourceRecord):
    """A subscription's latest state. It is not posted to an ERP: its changes are kept as status
    events (started, renewed, changed, cancellation scheduled, canceled) for finance to read beside
    the invoices they explain."""

    customer = models.ForeignKey(
        Customer, null=True, blank=True, on_delete=models.PROTECT, related_name="subscriptions"
    )
    customer_source_id = models.CharField(max_length=255)
    status = models.CharField(max_length=32)
    price_ids = models.JSONField(default=list, blank=True)
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True)
    cancel_at_period_end = models.BooleanField(default=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["source", "source_id"], name="subscription_source_identity")]

    def __str__(self) -> str:
        return f"{self.source_id} {self.status}"


class SubscriptionEvent(models.Model):
    KIND_STARTED = "started"
    KIND_RENEWED = "renewed"
    KIND_CHANGED = "changed"
    KIND_STATUS = "status_changed"
    KIND_CANCEL_SCHEDULED = "cancellation_scheduled"
    KIND_CANCELED = "canceled"
    KIND_CHOICES = [
        (KIND_STARTED, "Started"),
        (KIND_RENEWED, "Renewed"),
        (KIND_CHANGED, "Plan changed"),
        (KIND_STATUS, "Status changed"),
        (KIND_CANCEL_SCHEDULED, "Cancellation scheduled"),
        (KIND_CANCELED, "Canceled"),
    ]

    subscription = models.ForeignKey(Subscription, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32, choices=KIND_CHOICES)
    status = models.CharField(max_length=32)
    price_ids = models.JSONField(default=list, blank=True)
    period_start = models.DateField(null=True, blank=True)
    period_end = models.DateField(null=True, blank=True)
    source_version = models.BigIntegerField()
    correlation_id = models.CharField(max_length=100, blank=True)
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subscription", "source_version", "id"]

    def __str__(self) -> str:
        return f"{self.subscription.source_id} {self.get_kind_display()}"
