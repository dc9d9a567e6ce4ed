"""What a source adapter hands the ledger: plain data, one class per canonical record.

``source_version`` orders updates of one record (newer wins). ``snapshot`` marks customer data
copied from an invoice rather than read from the customer object: it only fills blanks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal


@dataclass(frozen=True)
class CustomerData:
    source_id: str
    source_version: int
    name: str
    email: str = ""
    currency: str = ""
    tax_id: str = ""
    tax_id_type: str = ""
    payment_terms_days: int | None = None
    bill_to: dict[str, str] = field(default_factory=dict)
    sold_to: dict[str, str] = field(default_factory=dict)
    snapshot: bool = False


@dataclass(frozen=True)
class ProductData:
    source_id: str
    name: str
    kind: str = "product"


@dataclass(frozen=True)
class InvoiceLineData:
    description: str
    quantity: Decimal
    unit_amount_minor: int
    amount_minor: int
    tax_minor: int = 0
    source_line_id: str = ""
    product_source_id: str = ""
    product_name: str = ""
    price_id: str = ""
    period_start: date | None = None
    period_end: date | None = None
    product_line: str = ""  # where billing says it (Stripe: the product's metadata), for routing
    revenue_category: str = ""


@dataclass(frozen=True)
class InvoiceData:
    source_id: str
    source_version: int
    number: str
    customer: CustomerData
    status: str
    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    amount_paid_minor: int
    invoice_date: date
    due_date: date | None
    lines: tuple[InvoiceLineData, ...]
    period_start: date | None = None
    period_end: date | None = None
    status_date: date | None = None  # when billing voided it, marked it uncollectible or saw it paid


@dataclass(frozen=True)
class PaymentApplicationData:
    invoice_source_id: str
    amount_minor: int
    # Settled from credit billing already holds for the customer (prepaid credits bought earlier, a
    # credit note's credit), not from new cash: posted as ``apply_credit``.
    from_credit: bool = False


@dataclass(frozen=True)
class PaymentData:
    source_id: str
    source_version: int
    customer_source_id: str
    currency: str
    amount_minor: int
    method: str
    settled_at: datetime
    applications: tuple[PaymentApplicationData, ...] = ()
    # Whether what the applications leave over is customer credit (posted as unapplied cash). False
    # where the source may name the invoice later (a Stripe payment not linked to an invoice yet).
    unapplied_is_credit: bool = True


@dataclass(frozen=True)
class CreditMemoLineData:
    description: str
    quantity: Decimal
    unit_amount_minor: int
    amount_minor: int  # positive: what is credited, excluding tax
    tax_minor: int = 0
    source_line_id: str = ""
    invoice_line_source_id: str = ""


@dataclass(frozen=True)
class CreditMemoData:
    source_id: str
    source_version: int
    number: str
    customer_source_id: str
    invoice_source_id: str
    status: str  # issued | void
    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    memo_date: date
    lines: tuple[CreditMemoLineData, ...]
    reason: str = ""
    refunded_minor: int = 0
    status_date: date | None = None


@dataclass(frozen=True)
class DisputeData:
    """A chargeback on a payment. ``status``: inquiry (no money moved), open (the funds were
    withdrawn while it runs), won (they came back) or lost (they stay with the cardholder)."""

    source_id: str
    source_version: int
    payment_source_id: str
    currency: str
    amount_minor: int
    status: str
    opened_on: date
    reason: str = ""
    closed_on: date | None = None


@dataclass(frozen=True)
class SubscriptionData:
    """A subscription's state as billing reports it; the ledger turns changes into status events."""

    source_id: str
    source_version: int
    customer_source_id: str
    status: str  # the engine's own word: active, trialing, past_due, canceled, ...
    price_ids: tuple[str, ...]
    period_start: date | None
    period_end: date | None
    cancel_at_period_end: bool = False
    ended: bool = False


LedgerCommand = CustomerData | InvoiceData | PaymentData | CreditMemoData | DisputeData | SubscriptionData
