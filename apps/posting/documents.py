"""Turn ledger rows into the plain documents a connector takes. Missing mappings and missing
parents surface here, as the same errors a connector would raise, so the executor has one path."""

from __future__ import annotations

from datetime import date, datetime

from django.utils import timezone

from apps.connectors.base import DISPUTE_MOVEMENTS
from apps.connectors.documents import (
    DIMENSIONS,
    Address,
    CreditMemoDocument,
    CustomerDocument,
    DisputeMovementDocument,
    InvoiceDocument,
    InvoiceLineDocument,
    OnAccountDocument,
    PaymentDocument,
    RefundDocument,
    VoidDocument,
    WritebackDocument,
    WriteOffDocument,
)
from apps.connectors.registry import connector_class
from apps.core.errors import BusinessRuleError, ConfigurationError
from apps.ledger.models import (
    CreditMemo,
    CreditMemoLine,
    Customer,
    Dispute,
    Invoice,
    InvoiceLine,
    LegalEntity,
    Payment,
    PaymentApplication,
)
from apps.posting.models import Operation, Posting, PostingState
from apps.posting.planner import WRITEBACK_STATUS
from apps.routing.models import ERPConnection, Mapping
from apps.routing.services import MissingMapping, mappings_of, resolve_mapping

_MAPPING_WORDS = {
    Mapping.KIND_REVENUE_ACCOUNT: "revenue account",
    Mapping.KIND_TAX_CODE: "tax code",
    Mapping.KIND_PAYMENT_JOURNAL: "payment journal",
    Mapping.KIND_WRITE_OFF_METHOD: "write-off method",
    Mapping.KIND_DISPUTE_ACCOUNT: "disputed funds account",
    Mapping.KIND_DISPUTE_LOSS_ACCOUNT: "dispute loss account",
    Mapping.KIND_ITEM: "item",
    Mapping.KIND_CURRENCY: "currency",
    **{name: f"{name.replace('_', ' ')} dimension" for name in DIMENSIONS},
}


def _address(data: dict[str, str]) -> Address:
    return Address(**{key: str(data.get(key) or "") for key in Address.__dataclass_fields__})


def mapping_kinds(connection: ERPConnection, which: str) -> frozenset[str]:
    """The connector's ``required_mappings`` or ``unused_mappings`` (none for an unknown kind)."""
    try:
        return getattr(connector_class(connection.kind), which)  # type: ignore[no-any-return]
    except ConfigurationError:
        return frozenset()


def _required(connection: ERPConnection) -> frozenset[str]:
    return mapping_kinds(connection, "required_mappings")


def _optional(connection: ERPConnection, kind: str, keys: list[str], what: str) -> str:
    """A mapping the connection may leave out, unless its connector cannot post without it."""
    if kind in _required(connection):
        return _mapped(connection, kind, keys, what)
    try:
        return resolve_mapping(connection, kind, keys)
    except MissingMapping:
        return ""


def _entity_keys(legal_entity: LegalEntity | None) -> list[str]:
    return [legal_entity.code, legal_entity.country] if legal_entity else []


def dimensions(connection: ERPConnection, legal_entity: LegalEntity | None) -> dict[str, str]:
    """The document's accounting dimensions: per dimension, the mapping for the legal entity, else
    its region (country), else ``default``; a dimension the connector requires and nothing maps
    parks the document as a missing-mapping case."""
    keys = _entity_keys(legal_entity)
    candidates = [key for key in keys if key] + [Mapping.DEFAULT_KEY]
    found: dict[str, dict[str, str]] = {}
    for (kind, key), value in mappings_of(connection).items():
        if kind in DIMENSIONS and key in candidates:
            found.setdefault(kind, {})[key] = value
    resolved: dict[str, str] = {}
    what = f"legal entity {legal_entity.code}" if legal_entity else "documents without a legal entity"
    for name in DIMENSIONS:
        value = next((found[name][key] for key in candidates if key in found.get(name, {})), None)
        if value is None and name in _required(connection):
            value = _mapped(connection, name, keys, what)  # raises the missing-mapping case
        if value:
            resolved[name] = value
    return resolved


def erp_currency(connection: ERPConnection, currency: str) -> str:
    return _optional(connection, Mapping.KIND_CURRENCY, [currency.upper()], f"currency {currency.upper()}")


def customer_document(customer: Customer, connection: ERPConnection | None = None) -> CustomerDocument:
    extra = (
        {
            "dimensions": dimensions(connection, customer.legal_entity),
            "erp_currency": erp_currency(connection, customer.currency) if customer.currency else "",
        }
        if connection is not None
        else {}
    )
    return CustomerDocument(
        **extra,  # type: ignore[arg-type]
        external_ref=customer.external_ref,
        name=customer.name,
        email=customer.email,
        currency=customer.currency,
        tax_id=customer.tax_id,
        legal_entity=customer.legal_entity.code if customer.legal_entity else "",
        payment_terms_days=customer.payment_terms_days,
        bill_to=_address(customer.bill_to),
        sold_to=_address(customer.sold_to or customer.bill_to),
        correlation_id=customer.correlation_id,
    )


def _erp_id_of_parent(connection: ERPConnection, operation: str, **document: object) -> str:
    parent = (
        Posting.objects.filter(connection=connection, operation=operation, state=PostingState.POSTED, **document)
        .order_by("-posted_at")
        .first()
    )
    if parent is None:
        raise LookupError(f"no posted {operation} for {document}")
    return parent.erp_id


def _mapped(connection: ERPConnection, kind: str, keys: list[str], what: str) -> str:
    try:
        return resolve_mapping(connection, kind, keys)
    except MissingMapping as exc:
        word = _MAPPING_WORDS[kind]
        raise BusinessRuleError(
            f"missing_{kind}_mapping",
            f"No {word} is mapped for {what} on ERP connection '{connection.name}'. "
            f"Add a {word} mapping (for one of: {', '.join(exc.keys) or 'default'}) and retry.",
            str(exc),
            params={"mapping_kind": word, "keys": ", ".join(exc.keys) or "default", "item": what},
        ) from exc


def _line_document(
    connection: ERPConnection, line: InvoiceLine | CreditMemoLine, priced_by: InvoiceLine | None, label: str = "line"
) -> InvoiceLineDocument:
    """``priced_by``: the invoice line whose price and product choose the revenue account and tax
    (the line itself, or the invoice line a credit line credits; None for a custom credit)."""
    product = priced_by.product if priced_by else None
    keys = [priced_by.price_id if priced_by else "", product.source_id if product else ""]
    keys.append(product.revenue_category if product else "")
    what = f"'{product.name}' ({product.source_id})" if product else f"{label} '{line.description}'"
    quantity, unit = line.quantity, line.unit_amount_minor
    description = line.description
    if quantity * unit != line.amount_minor:
        # Tiered, volume or prorated prices: billing's amount is the truth; carry it as one unit so
        # the ERP total equals billing's, and keep the real quantity readable.
        description = f"{description} (quantity {quantity.normalize()})"
        quantity, unit = type(quantity)(1), line.amount_minor
    return InvoiceLineDocument(
        description=description,
        quantity=quantity,
        unit_amount_minor=unit,
        amount_minor=line.amount_minor,
        revenue_account=(
            _optional(connection, Mapping.KIND_REVENUE_ACCOUNT, keys, what)
            if Mapping.KIND_REVENUE_ACCOUNT in mapping_kinds(connection, "unused_mappings")
            else _mapped(connection, Mapping.KIND_REVENUE_ACCOUNT, keys, what)
        ),
        tax_code=_mapped(connection, Mapping.KIND_TAX_CODE, keys, what) if line.tax_minor else "",
        tax_minor=line.tax_minor,
        period_start=getattr(line, "period_start", None),
        period_end=getattr(line, "period_end", None),
        item=_optional(connection, Mapping.KIND_ITEM, keys, what),
    )


def invoice_document(posting: Posting, invoice: Invoice) -> InvoiceDocument:
    customer_erp_id = _erp_id_of_parent(posting.connection, Operation.ENSURE_CUSTOMER, customer=invoice.customer)
    return InvoiceDocument(
        external_ref=posting.external_ref,  # the version's reference: the billing id, then <id>#r<n>
        number=invoice.number,
        customer_ref=invoice.customer.external_ref,
        customer_erp_id=customer_erp_id,
        currency=invoice.currency,
        invoice_date=invoice.invoice_date,
        due_date=invoice.due_date,
        lines=tuple(_line_document(posting.connection, line, line) for line in invoice.lines.select_related("product")),
        subtotal_minor=invoice.subtotal_minor,
        tax_minor=invoice.tax_minor,
        total_minor=invoice.total_minor,
        legal_entity=invoice.legal_entity.code if invoice.legal_entity else "",
        correlation_id=invoice.correlation_id,
        dimensions=dimensions(posting.connection, invoice.legal_entity),
        erp_currency=erp_currency(posting.connection, invoice.currency),
    )


def payment_document(posting: Posting, application: PaymentApplication) -> PaymentDocument:
    invoice = application.invoice
    assert invoice is not None  # planned only once linked
    payment = application.payment
    paid_on = payment.settled_at.date() if isinstance(payment.settled_at, datetime) else payment.settled_at
    return PaymentDocument(
        external_ref=application.external_ref,
        invoice_ref=invoice.external_ref,
        invoice_erp_id=_erp_id_of_parent(posting.connection, Operation.POST_INVOICE, invoice=invoice),
        customer_erp_id=_erp_id_of_parent(posting.connection, Operation.ENSURE_CUSTOMER, customer=invoice.customer),
        currency=payment.currency,
        amount_minor=application.amount_minor,
        paid_on=max(paid_on, invoice.invoice_date),
        payment_journal=_mapped(
            posting.connection, Mapping.KIND_PAYMENT_JOURNAL, [payment.method], f"payment method '{payment.method}'"
        ),
        method=payment.method,
        correlation_id=payment.correlation_id,
        dimensions=dimensions(posting.connection, invoice.legal_entity),
        erp_currency=erp_currency(posting.connection, payment.currency),
    )


def _status_date(record: Invoice | CreditMemo) -> date:
    """The day billing changed the document's status, never before the document's own date."""
    own = record.invoice_date if isinstance(record, Invoice) else record.memo_date
    return max(record.status_date or record.updated_at.date(), own)


def void_document(posting: Posting, invoice: Invoice) -> VoidDocument:
    """Voids the version its parent posted (the one billing voided, or one an amendment replaces)."""
    parent = Posting.objects.filter(idempotency_key=posting.depends_on_key, state=PostingState.POSTED).first()
    if parent is None:
        raise LookupError(f"the invoice posting {posting.depends_on_key} is not posted")
    amended = invoice.status != Invoice.STATUS_VOID
    return VoidDocument(
        external_ref=posting.external_ref,
        invoice_ref=parent.external_ref,
        invoice_erp_id=parent.erp_id,
        voided_on=max(timezone.localdate(), invoice.invoice_date) if amended else _status_date(invoice),
        why="amended" if amended else "voided",
        number=invoice.number,
        correlation_id=posting.correlation_id,
        customer_erp_id=_erp_id_of_parent(posting.connection, Operation.ENSURE_CUSTOMER, customer=invoice.customer),
        dimensions=dimensions(posting.connection, invoice.legal_entity),
    )


def write_off_document(posting: Posting, invoice: Invoice) -> WriteOffDocument:
    customer = invoice.customer
    return WriteOffDocument(
        external_ref=posting.external_ref,
        invoice_ref=invoice.external_ref,
        invoice_erp_id=_erp_id_of_parent(posting.connection, Operation.POST_INVOICE, invoice=invoice),
        currency=invoice.currency,
        amount_minor=invoice.total_minor - invoice.amount_paid_minor,
        written_off_on=_status_date(invoice),
        write_off_method=_mapped(
            posting.connection,
            Mapping.KIND_WRITE_OFF_METHOD,
            [customer.legal_entity.code if customer.legal_entity else ""],
            "bad debts",
        ),
        number=invoice.number,
        reason="marked uncollectible in billing",
        correlation_id=posting.correlation_id,
        customer_erp_id=_erp_id_of_parent(posting.connection, Operation.ENSURE_CUSTOMER, customer=customer),
        dimensions=dimensions(posting.connection, invoice.legal_entity),
        erp_currency=erp_currency(posting.connection, invoice.currency),
    )


def _credit_line_document(connection: ERPConnection, line: CreditMemoLine, invoice: Invoice) -> InvoiceLineDocument:
    """A credited invoice line keeps the revenue account and tax of the line it credits; a custom
    credit (a goodwill amount) takes the connection's defaults."""
    credited = (
        invoice.lines.select_related("product").filter(source_line_id=line.invoice_line_source_id).first()
        if line.invoice_line_source_id
        else None
    )
    return _line_document(connection, line, credited, label="credit line")


def credit_memo_document(posting: Posting, memo: CreditMemo) -> CreditMemoDocument:
    invoice = memo.invoice
    assert invoice is not None  # planned only once linked
    return CreditMemoDocument(
        external_ref=memo.external_ref,
        number=memo.number,
        invoice_ref=invoice.external_ref,
        invoice_erp_id=_erp_id_of_parent(posting.connection, Operation.POST_INVOICE, invoice=invoice),
        customer_ref=invoice.customer.external_ref,
        customer_erp_id=_erp_id_of_parent(posting.connection, Operation.ENSURE_CUSTOMER, customer=invoice.customer),
        currency=memo.currency,
        invoice_date=max(memo.memo_date, invoice.invoice_date),
        lines=tuple(_credit_line_document(posting.connection, line, invoice) for line in memo.lines.all()),
        subtotal_minor=memo.subtotal_minor,
        tax_minor=memo.tax_minor,
        total_minor=memo.total_minor,
        reason=memo.reason,
        legal_entity=invoice.legal_entity.code if invoice.legal_entity else "",
        correlation_id=memo.correlation_id,
        dimensions=dimensions(posting.connection, invoice.legal_entity),
        erp_currency=erp_currency(posting.connection, memo.currency),
    )


def _customer_erp_id(posting: Posting, customer: Customer | None) -> str:
    if customer is None:
        return ""
    return _erp_id_of_parent(posting.connection, Operation.ENSURE_CUSTOMER, customer=customer)


def refund_document(posting: Posting, memo: CreditMemo) -> RefundDocument:
    invoice = memo.invoice
    return RefundDocument(
        customer_erp_id=_customer_erp_id(posting, invoice.customer if invoice else None),
        dimensions=dimensions(posting.connection, invoice.legal_entity if invoice else None),
        erp_currency=erp_currency(posting.connection, memo.currency),
        external_ref=posting.external_ref,
        credit_memo_ref=memo.external_ref,
        credit_memo_erp_id=_erp_id_of_parent(posting.connection, Operation.POST_CREDIT_MEMO, credit_memo=memo),
        currency=memo.currency,
        amount_minor=memo.refunded_minor,
        refunded_on=memo.status_date or memo.memo_date,
        payment_journal=_mapped(posting.connection, Mapping.KIND_PAYMENT_JOURNAL, ["refund"], "refunds"),
        number=memo.number,
        correlation_id=posting.correlation_id,
    )


def void_credit_memo_document(posting: Posting, memo: CreditMemo) -> VoidDocument:
    """A credit note is voided the way an invoice is: the connector cancels the ERP document."""
    invoice = memo.invoice
    return VoidDocument(
        customer_erp_id=_customer_erp_id(posting, invoice.customer if invoice else None),
        dimensions=dimensions(posting.connection, invoice.legal_entity if invoice else None),
        external_ref=posting.external_ref,
        invoice_ref=memo.external_ref,
        invoice_erp_id=_erp_id_of_parent(posting.connection, Operation.POST_CREDIT_MEMO, credit_memo=memo),
        voided_on=_status_date(memo),
        number=memo.number,
        correlation_id=posting.correlation_id,
    )


def dispute_document(posting: Posting, dispute: Dispute) -> DisputeMovementDocument:
    movement = DISPUTE_MOVEMENTS[posting.operation]
    entity = [dispute.legal_entity.code if dispute.legal_entity else ""]
    # A chargeback is on a card payment; the payment's own method, when the ledger has it.
    method = dispute.payment.method if dispute.payment is not None and dispute.payment.method else "card"
    moved_on = dispute.opened_on if movement == "withdrawn" else (dispute.closed_on or dispute.updated_at.date())
    return DisputeMovementDocument(
        dimensions=dimensions(posting.connection, dispute.legal_entity),
        erp_currency=erp_currency(posting.connection, dispute.currency),
        external_ref=posting.external_ref,
        dispute_ref=dispute.external_ref,
        payment_ref=f"{dispute.source}:{dispute.payment_source_id}",
        movement=movement,
        currency=dispute.currency,
        amount_minor=dispute.amount_minor,
        moved_on=moved_on,
        payment_journal=_mapped(
            posting.connection, Mapping.KIND_PAYMENT_JOURNAL, [method], f"payment method '{method}'"
        ),
        dispute_account=_mapped(posting.connection, Mapping.KIND_DISPUTE_ACCOUNT, entity, "disputed funds"),
        loss_account=(
            _mapped(posting.connection, Mapping.KIND_DISPUTE_LOSS_ACCOUNT, entity, "lost disputes")
            if movement == "lost"
            else ""
        ),
        reason=dispute.reason,
        correlation_id=posting.correlation_id,
    )


def _received_on(payment: Payment) -> date:
    return payment.settled_at.date() if isinstance(payment.settled_at, datetime) else payment.settled_at


def on_account_document(posting: Posting, payment: Payment) -> OnAccountDocument:
    customer = payment.customer
    assert customer is not None  # planned only with a customer
    return OnAccountDocument(
        dimensions=dimensions(posting.connection, customer.legal_entity),
        erp_currency=erp_currency(posting.connection, payment.currency),
        external_ref=posting.external_ref,
        payment_ref=payment.external_ref,
        customer_ref=customer.external_ref,
        customer_erp_id=_erp_id_of_parent(posting.connection, Operation.ENSURE_CUSTOMER, customer=customer),
        currency=payment.currency,
        amount_minor=payment.on_account_minor,
        received_on=_received_on(payment),
        payment_journal=_mapped(
            posting.connection, Mapping.KIND_PAYMENT_JOURNAL, [payment.method], f"payment method '{payment.method}'"
        ),
        correlation_id=posting.correlation_id,
    )


def writeback_document(posting: Posting, invoice: Invoice) -> WritebackDocument:
    """Metadata keys are named after the ERP connection, so several ERPs never overwrite each
    other; Stripe allows 40 characters per key."""
    parent = Posting.objects.select_related("connection").get(idempotency_key=posting.depends_on_key)
    prefix = parent.connection.name[:24]
    metadata = {f"{prefix}_erp_status": WRITEBACK_STATUS[parent.operation], "hub_writeback": posting.external_ref}
    if parent.operation == Operation.POST_INVOICE:
        metadata.update({f"{prefix}_erp_id": parent.erp_id, f"{prefix}_erp_number": parent.erp_number})
    else:
        metadata[f"{prefix}_erp_payment_id"] = parent.erp_id
    return WritebackDocument(
        external_ref=posting.external_ref,
        billing_id=invoice.source_id,
        metadata=metadata,
        idempotency_key=posting.idempotency_key,
        correlation_id=posting.correlation_id,
    )
