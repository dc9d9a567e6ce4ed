"""Plain canonical documents handed to connectors. Connectors never touch the ORM: the posting
executor turns rows into these frozen dataclasses and connector results back into state."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal

# Accounting dimensions a document can carry, resolved from the connection's mappings (keyed by
# legal entity, then region, then ``default``). ``company`` is the ERP's own entity for the legal
# entity: NetSuite's subsidiary id, Dynamics 365's dataAreaId, SAP's company code, ...
DIMENSIONS = (
    "company",
    "subsidiary",
    "department",
    "class",
    "location",
    "cost_center",
    "business_unit",
    "region",
    "project",
)


@dataclass(frozen=True)
class Address:
    line1: str = ""
    line2: str = ""
    city: str = ""
    postal_code: str = ""
    state: str = ""
    country: str = ""  # ISO 3166-1 alpha-2


@dataclass(frozen=True)
class CustomerDocument:
    external_ref: str  # stable, unique per hub: "<source>:<source_id>"
    name: str
    email: str = ""
    currency: str = ""
    tax_id: str = ""
    legal_entity: str = ""
    payment_terms_days: int | None = None
    bill_to: Address = field(default_factory=Address)
    sold_to: Address = field(default_factory=Address)
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""  # the ERP's identifier of ``currency`` where it has its own (NetSuite)


@dataclass(frozen=True)
class InvoiceLineDocument:
    description: str
    quantity: Decimal
    unit_amount_minor: int  # excluding tax
    amount_minor: int  # excluding tax, = quantity * unit amount (rounded by the billing engine)
    revenue_account: str  # the ERP's account identifier, from the connection's mapping
    tax_code: str = ""  # the ERP's tax identifier, from the mapping; "" for no tax
    tax_minor: int = 0
    period_start: date | None = None
    period_end: date | None = None
    item: str = ""  # the ERP's item / product identifier, from the mapping, where the ERP wants one


@dataclass(frozen=True)
class InvoiceDocument:
    external_ref: str  # "<source>:<source_id>", used by the connector to find the invoice again
    number: str  # the billing engine's invoice number, for people
    customer_ref: str
    customer_erp_id: str  # from the posted ensure-customer posting
    currency: str
    invoice_date: date
    due_date: date | None
    lines: tuple[InvoiceLineDocument, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    legal_entity: str = ""
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""
    # Billing's date, when the ERP's period for it is closed and the hub re-dated the document
    # (its own date field holds the new date); the connector writes it into the memo.
    original_date: date | None = None


@dataclass(frozen=True)
class PaymentDocument:
    external_ref: str  # "<source>:<payment source_id>:<invoice source_id>": one per application
    invoice_ref: str
    invoice_erp_id: str  # from the posted invoice posting
    customer_erp_id: str
    currency: str
    amount_minor: int
    paid_on: date
    payment_journal: str  # the ERP's payment method / journal identifier, from the mapping
    method: str = ""
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""
    original_date: date | None = None  # billing's date, when re-dated (see InvoiceDocument)


@dataclass(frozen=True)
class OnAccountDocument:
    """Cash received and not applied to any invoice: it stays on the customer's account as credit
    (a credit on the receivable, without an invoice) until billing applies it."""

    external_ref: str  # "<source>:<payment source_id>:on-account"
    payment_ref: str
    customer_ref: str
    customer_erp_id: str
    currency: str
    amount_minor: int
    received_on: date
    payment_journal: str
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""
    original_date: date | None = None  # billing's date, when re-dated (see InvoiceDocument)


@dataclass(frozen=True)
class CreditMemoDocument:
    """A credit note against a posted invoice. Lines carry positive amounts (what is credited);
    the connector records them the way its ERP records a credit note."""

    external_ref: str  # "<source>:<credit note source_id>"
    number: str
    invoice_ref: str
    invoice_erp_id: str  # from the posted invoice posting
    customer_ref: str
    customer_erp_id: str
    currency: str
    invoice_date: date  # the credit note's date (named like InvoiceDocument's: the ERP sees a document date)
    lines: tuple[InvoiceLineDocument, ...]
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    reason: str = ""
    due_date: date | None = None
    legal_entity: str = ""
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""
    original_date: date | None = None  # billing's date, when re-dated (see InvoiceDocument)


@dataclass(frozen=True)
class RefundDocument:
    """Money paid back to the customer for a credit note (Stripe's refund on a credit note)."""

    external_ref: str  # "<source>:<credit note source_id>:refund"
    credit_memo_ref: str
    credit_memo_erp_id: str  # from the posted credit memo posting
    customer_erp_id: str = field(default="", kw_only=True)  # the customer in the ERP, where documents name it
    currency: str
    amount_minor: int  # positive: what went back to the customer
    refunded_on: date
    payment_journal: str  # the ERP's payment method / journal the money left from, from the mapping
    number: str = ""
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""
    original_date: date | None = None  # billing's date, when re-dated (see InvoiceDocument)


@dataclass(frozen=True)
class VoidDocument:
    """Billing voided a finalized invoice, or amended it (the new version replaces this one): the
    ERP cancels it the way its rules allow for a posted document (cancel, or a credit note that
    cancels it)."""

    external_ref: str  # "<source>:<invoice version's source_id>:void"
    invoice_ref: str
    invoice_erp_id: str  # from the posted invoice posting
    customer_erp_id: str = field(default="", kw_only=True)  # the customer in the ERP, where documents name it
    voided_on: date
    number: str = ""  # the billing engine's invoice number, for people
    correlation_id: str = ""
    why: str = "voided"  # what billing did, for the messages: "voided" or "amended"
    dimensions: dict[str, str] = field(default_factory=dict)
    original_date: date | None = None  # billing's date, when re-dated (see InvoiceDocument)


@dataclass(frozen=True)
class WriteOffDocument:
    """Billing gave up on what is left of an invoice (bad debt): the ERP moves that amount from the
    customer's receivable to the bad-debt account and closes the invoice."""

    external_ref: str  # "<source>:<invoice source_id>:write-off"
    invoice_ref: str
    invoice_erp_id: str
    customer_erp_id: str = field(default="", kw_only=True)  # the customer in the ERP, where documents name it
    currency: str
    amount_minor: int  # what billing writes off: the invoice total less what was paid
    written_off_on: date
    write_off_method: str  # the ERP's write-off method / bad-debt account, from the mapping
    number: str = ""
    reason: str = ""
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""
    original_date: date | None = None  # billing's date, when re-dated (see InvoiceDocument)


@dataclass(frozen=True)
class DisputeMovementDocument:
    """Money a chargeback moves, as one journal entry. The invoice stays paid, so the receivable is
    never touched: ``withdrawn`` moves the amount from the account the payment was received in to
    the disputed-funds account; ``reinstated`` moves it back (dispute won); ``lost`` moves it from
    the disputed-funds account to the dispute-loss expense account."""

    external_ref: str  # "<source>:<dispute id>:<movement>"
    dispute_ref: str
    payment_ref: str
    movement: str  # withdrawn | reinstated | lost
    currency: str
    amount_minor: int
    moved_on: date
    payment_journal: str  # the ERP payment method the disputed payment came in through
    dispute_account: str
    loss_account: str = ""  # only for ``lost``
    reason: str = ""
    correlation_id: str = ""
    dimensions: dict[str, str] = field(default_factory=dict)
    erp_currency: str = ""
    original_date: date | None = None  # billing's date, when re-dated (see InvoiceDocument)


@dataclass(frozen=True)
class WritebackDocument:
    """What the billing engine is told about one of its invoices once the ERP confirmed a posting."""

    external_ref: str  # "<source>:<invoice id>:writeback:<parent posting>"
    billing_id: str  # the invoice's id in the billing engine
    metadata: dict[str, str]
    idempotency_key: str
    correlation_id: str = ""


@dataclass(frozen=True)
class PostResult:
    """What the ERP holds for a posted document: its id, a number people can search for, and
    whatever else is worth showing beside the posting."""

    erp_id: str
    erp_number: str = ""
    detail: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ReferenceItem:
    """One entry of what the ERP holds that billing may check before finalizing an invoice: a
    customer account, a tax code, or a value of one accounting dimension (department, account,
    payment journal, ...). Read by ``ERPConnector.reference_data`` into the validation cache."""

    kind: str  # customer | tax_code | dimension
    code: str  # the identifier billing and the mappings use: a customer's external ref, a tax code, ...
    name: str = ""
    dimension: str = ""  # for kind ``dimension``: which one
    active: bool = True
