"""Upserts into the canonical ledger: idempotent, and safe under out-of-order delivery.

Each function locks the record it changes (``select_for_update`` inside the caller's
transaction), so two events about one invoice normalized at once apply one after the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from apps.core import audit
from apps.core.locks import lock_identity
from apps.core.money import normalize_currency
from apps.ledger.commands import (
    CreditMemoData,
    CustomerData,
    DisputeData,
    InvoiceData,
    PaymentData,
    SubscriptionData,
)
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
    Product,
    Subscription,
    SubscriptionEvent,
)

# A later status wins over an earlier one stamped in the same second (Stripe's ``created`` has
# one-second resolution, and invoice.finalized and invoice.paid often share it).
_STATUS_RANK = {Invoice.STATUS_OPEN: 0, Invoice.STATUS_PAID: 1, Invoice.STATUS_UNCOLLECTIBLE: 1, Invoice.STATUS_VOID: 2}

_CUSTOMER_FIELDS = ("name", "email", "currency", "tax_id", "tax_id_type", "payment_terms_days", "bill_to", "sold_to")
# Fields that change what the ERP holds for the customer: a change makes a new revision.
_CUSTOMER_ERP_FIELDS = ("name", "email", "tax_id", "bill_to")


class UnsupportedChange(ValueError):
    """Billing changed a record in a way the hub does not post; the message says what to do."""


@dataclass(frozen=True)
class Upserted:
    record: Customer | Invoice | Payment | CreditMemo | Dispute | Subscription
    created: bool
    changed: bool
    stale: bool = False  # the incoming data was older than what the ledger holds


def _snapshot(obj: object, fields: tuple[str, ...]) -> dict[str, object]:
    return {name: getattr(obj, name) for name in fields}


def upsert_customer(
    source: str, data: CustomerData, *, legal_entity: LegalEntity | None, correlation_id: str = ""
) -> Upserted:
    with transaction.atomic(savepoint=False):
        # A lock for a non-key update: rows created elsewhere that refer to the customer check that
        # reference at commit (FOR KEY SHARE), after auditing, and must not wait for this lock.
        customer, created = Customer.objects.select_for_update(no_key=True).get_or_create(
            source=source,
            source_id=data.source_id,
            defaults={
                "name": data.name or data.email or data.source_id,
                "source_version": data.source_version,
                "legal_entity": legal_entity,
                "correlation_id": correlation_id,
                "authoritative": not data.snapshot,
                **{f: getattr(data, f) for f in _CUSTOMER_FIELDS if f != "name"},
                "currency": normalize_currency(data.currency) if data.currency else "",
            },
        )
        if created:
            audit.record("customer.created", customer, after=_snapshot(customer, _CUSTOMER_FIELDS))
            return Upserted(customer, created=True, changed=True)

        before = _snapshot(customer, _CUSTOMER_FIELDS)
        bookkeeping = (customer.source_version, customer.authoritative, customer.legal_entity_id)
        if data.snapshot:
            # Invoice snapshots only fill what the customer object has not told us.
            for name in _CUSTOMER_FIELDS:
                value = getattr(data, name)
                if value and not getattr(customer, name):
                    setattr(customer, name, value)
        elif data.source_version < customer.source_version and customer.authoritative:
            return Upserted(customer, created=False, changed=False, stale=True)
        else:
            for name in _CUSTOMER_FIELDS:
                value = getattr(data, name)
                if name == "currency" and value:
                    value = normalize_currency(value)
                setattr(customer, name, value if value is not None else getattr(customer, name))
            customer.name = data.name or customer.name
            customer.source_version = max(customer.source_version, data.source_version)
            customer.authoritative = True
        if customer.legal_entity_id is None and legal_entity is not None:
            customer.legal_entity = legal_entity
        after = _snapshot(customer, _CUSTOMER_FIELDS)
        if after == before:
            # Most invoice events repeat a customer snapshot the ledger already holds: no write.
            if (customer.source_version, customer.authoritative, customer.legal_entity_id) != bookkeeping:
                customer.save(update_fields=["source_version", "authoritative", "legal_entity", "updated_at"])
            return Upserted(customer, created=False, changed=False)
        if any(before[f] != after[f] for f in _CUSTOMER_ERP_FIELDS):
            customer.revision += 1
        customer.save()
        audit.record("customer.updated", customer, before=before, after=after)
        return Upserted(customer, created=False, changed=True)


def _product_for(
    source: str, source_id: str, name: str, product_line: str = "", revenue_category: str = ""
) -> Product | None:
    """The product, created on first sight. Product line and revenue category follow billing when
    it says them; when it does not, what finance set in the admin is kept."""
    if not source_id:
        return None
    product, _ = Product.objects.get_or_create(
        source=source,
        source_id=source_id,
        defaults={
            "name": name or source_id,
            "kind": Product.KIND_PRODUCT,
            "product_line": product_line,
            "revenue_category": revenue_category,
        },
    )
    said = {"product_line": product_line, "revenue_category": revenue_category}
    changed = [key for key, value in said.items() if value and getattr(product, key) != value]
    if changed:
        for key in changed:
            setattr(product, key, said[key])
        product.save(update_fields=changed)
    return product


def _financial_content(invoice: Invoice) -> tuple[object, ...]:
    return (
        invoice.currency,
        invoice.subtotal_minor,
        invoice.tax_minor,
        invoice.total_minor,
        tuple(
            (line.description, line.quantity, line.unit_amount_minor, line.amount_minor, line.tax_minor, line.price_id)
            for line in invoice.lines.all()
        ),
    )


def _incoming_financial_content(data: InvoiceData) -> tuple[object, ...]:
    return (
        normalize_currency(data.currency),
        data.subtotal_minor,
        data.tax_minor,
        data.total_minor,
        tuple(
            (
                line.description[:500],
                line.quantity,
                line.unit_amount_minor,
                line.amount_minor,
                line.tax_minor,
                line.price_id,
            )
            for line in data.lines
        ),
    )


def _replace_lines(source: str, invoice: Invoice, data: InvoiceData) -> None:
    invoice.lines.all().delete()
    InvoiceLine.objects.bulk_create(
        InvoiceLine(
            invoice=invoice,
            position=index,
            source_line_id=line.source_line_id,
            description=line.description[:500],
            product=_product_for(
                source, line.product_source_id, line.product_name, line.product_line, line.revenue_category
            ),
            price_id=line.price_id,
            quantity=line.quantity,
            unit_amount_minor=line.unit_amount_minor,
            amount_minor=line.amount_minor,
            tax_minor=line.tax_minor,
            period_start=line.period_start,
            period_end=line.period_end,
        )
        for index, line in enumerate(data.lines, start=1)
    )


def upsert_invoice(
    source: str, data: InvoiceData, *, legal_entity: LegalEntity | None, correlation_id: str = ""
) -> Upserted:
    with transaction.atomic(savepoint=False):
        # A payment of this invoice normalized at the same time links itself to the invoice, or the
        # invoice links the payment; the lock makes sure one of them sees the other.
        lock_identity("invoice", source, data.source_id)
        customer = upsert_customer(source, data.customer, legal_entity=legal_entity, correlation_id=correlation_id)
        invoice, created = Invoice.objects.select_for_update().get_or_create(
            source=source,
            source_id=data.source_id,
            defaults={
                "number": data.number,
                "customer": customer.record,
                "legal_entity": legal_entity or customer.record.legal_entity,  # type: ignore[union-attr]
                "status": data.status,
                "status_date": data.status_date,
                "currency": normalize_currency(data.currency),
                "subtotal_minor": data.subtotal_minor,
                "tax_minor": data.tax_minor,
                "total_minor": data.total_minor,
                "amount_paid_minor": data.amount_paid_minor,
                "invoice_date": data.invoice_date,
                "due_date": data.due_date,
                "period_start": data.period_start,
                "period_end": data.period_end,
                "source_version": data.source_version,
                "correlation_id": correlation_id,
            },
        )
        if created:
            _replace_lines(source, invoice, data)
            PaymentApplication.objects.filter(
                payment__source=source, invoice_source_id=data.source_id, invoice__isnull=True
            ).update(invoice=invoice)
            CreditMemo.objects.filter(source=source, invoice_source_id=data.source_id, invoice__isnull=True).update(
                invoice=invoice
            )
            audit.record(
                "invoice.created", invoice, after={"status": invoice.status, "total_minor": invoice.total_minor}
            )
            return Upserted(invoice, created=True, changed=True)

        if data.source_version < invoice.source_version or (
            data.source_version == invoice.source_version
            and _STATUS_RANK.get(data.status, 0) < _STATUS_RANK.get(invoice.status, 0)
        ):
            return Upserted(invoice, created=False, changed=False, stale=True)

        before = {
            "status": invoice.status,
            "amount_paid_minor": invoice.amount_paid_minor,
            "revision": invoice.revision,
        }
        if _incoming_financial_content(data) != _financial_content(invoice):
            invoice.revision += 1
            invoice.currency = normalize_currency(data.currency)
            invoice.subtotal_minor = data.subtotal_minor
            invoice.tax_minor = data.tax_minor
            invoice.total_minor = data.total_minor
            _replace_lines(source, invoice, data)
        if data.status != invoice.status:
            invoice.status_date = data.status_date
        invoice.status = data.status
        invoice.amount_paid_minor = data.amount_paid_minor
        invoice.number = data.number or invoice.number
        invoice.due_date = data.due_date or invoice.due_date
        invoice.source_version = data.source_version
        invoice.save()
        after = {"status": invoice.status, "amount_paid_minor": invoice.amount_paid_minor, "revision": invoice.revision}
        changed = before != after
        if changed:
            audit.record("invoice.updated", invoice, before=before, after=after)
        return Upserted(invoice, created=False, changed=changed)


def link_waiting_payments(customer: Customer) -> list[Payment]:
    """Payments normalized before their customer existed: linked to it now, so their credit can
    be posted. Returns the payments linked."""
    waiting = list(
        Payment.objects.select_for_update().filter(
            source=customer.source, customer_source_id=customer.source_id, customer__isnull=True
        )
    )
    for payment in waiting:
        payment.customer = customer
        payment.save(update_fields=["customer", "updated_at"])
    return waiting


def upsert_payment(source: str, data: PaymentData, *, correlation_id: str = "") -> Upserted:
    with transaction.atomic(savepoint=False):
        for invoice_source_id in sorted({application.invoice_source_id for application in data.applications}):
            lock_identity("invoice", source, invoice_source_id)
        customer = Customer.objects.filter(source=source, source_id=data.customer_source_id).first()
        payment, created = Payment.objects.select_for_update().get_or_create(
            source=source,
            source_id=data.source_id,
            defaults={
                "customer": customer,
                "customer_source_id": data.customer_source_id,
                "currency": normalize_currency(data.currency),
                "amount_minor": data.amount_minor,
                "method": data.method,
                "settled_at": data.settled_at,
                "source_version": data.source_version,
                "correlation_id": correlation_id,
            },
        )
        changed = created
        if not created and payment.customer_id is None and customer is not None:
            payment.customer = customer
            payment.save(update_fields=["customer", "updated_at"])
        if created and data.unapplied_is_credit:
            # Cash not applied when it arrived stays with the customer as credit; applications added
            # later draw on that credit instead of bringing new cash.
            payment.on_account_minor = max(data.amount_minor - sum(a.amount_minor for a in data.applications), 0)
            if payment.on_account_minor:
                payment.save(update_fields=["on_account_minor"])
        for application in data.applications:
            _, made = PaymentApplication.objects.get_or_create(
                payment=payment,
                invoice_source_id=application.invoice_source_id,
                defaults={
                    "amount_minor": application.amount_minor,
                    "invoice": Invoice.objects.filter(source=source, source_id=application.invoice_source_id).first(),
                    "from_credit": application.from_credit or (not created and payment.on_account_minor > 0),
                },
            )
            changed = changed or made
        if created:
            audit.record(
                "payment.created", payment, after={"amount_minor": payment.amount_minor, "currency": payment.currency}
            )
            Dispute.objects.filter(source=source, payment_source_id=data.source_id, payment=None).update(
                payment=payment
            )
        return Upserted(payment, created=created, changed=changed)


_MEMO_STATUS_RANK = {CreditMemo.STATUS_ISSUED: 0, CreditMemo.STATUS_VOID: 1}


def upsert_credit_memo(source: str, data: CreditMemoData, *, correlation_id: str = "") -> Upserted:
    """A credit note's amounts are fixed once issued (billing cannot edit them); later events only
    move its status (issued → void)."""
    with transaction.atomic(savepoint=False):
        lock_identity("invoice", source, data.invoice_source_id)  # see upsert_invoice
        memo, created = CreditMemo.objects.select_for_update().get_or_create(
            source=source,
            source_id=data.source_id,
            defaults={
                "number": data.number,
                "customer": Customer.objects.filter(source=source, source_id=data.customer_source_id).first(),
                "invoice_source_id": data.invoice_source_id,
                "invoice": Invoice.objects.filter(source=source, source_id=data.invoice_source_id).first(),
                "status": data.status,
                "status_date": data.status_date,
                "currency": normalize_currency(data.currency),
                "subtotal_minor": data.subtotal_minor,
                "tax_minor": data.tax_minor,
                "total_minor": data.total_minor,
                "memo_date": data.memo_date,
                "reason": data.reason[:200],
                "refunded_minor": data.refunded_minor,
                "source_version": data.source_version,
                "correlation_id": correlation_id,
            },
        )
        if created:
            CreditMemoLine.objects.bulk_create(
                CreditMemoLine(
                    credit_memo=memo,
                    position=index,
                    source_line_id=line.source_line_id,
                    description=line.description[:500],
                    quantity=line.quantity,
                    unit_amount_minor=line.unit_amount_minor,
                    amount_minor=line.amount_minor,
                    tax_minor=line.tax_minor,
                    invoice_line_source_id=line.invoice_line_source_id,
                )
                for index, line in enumerate(data.lines, start=1)
            )
            audit.record(
                "credit_memo.created", memo, after={"total_minor": memo.total_minor, "invoice": memo.invoice_source_id}
            )
            return Upserted(memo, created=True, changed=True)
        if data.source_version < memo.source_version or _MEMO_STATUS_RANK.get(data.status, 0) < _MEMO_STATUS_RANK.get(
            memo.status, 0
        ):
            return Upserted(memo, created=False, changed=False, stale=True)
        changed = data.status != memo.status
        if changed:
            before = {"status": memo.status}
            memo.status, memo.status_date = data.status, data.status_date
            audit.record("credit_memo.updated", memo, before=before, after={"status": memo.status})
        if data.refunded_minor > memo.refunded_minor:
            if memo.refunded_minor:
                raise UnsupportedChange(
                    f"Credit note {memo.number or memo.source_id} was refunded again in billing (now "
                    f"{data.refunded_minor} minor units of {memo.currency} in all, {memo.refunded_minor} before). The "
                    "hub posts one refund per credit note: record the further refund in the ERP by hand."
                )
            # Refunded after it was issued (Chargebee: refund_due, then refunded): the refund is planned now.
            audit.record(
                "credit_memo.refunded",
                memo,
                before={"refunded_minor": 0},
                after={"refunded_minor": data.refunded_minor},
            )
            memo.refunded_minor = data.refunded_minor
            changed = True
        memo.source_version = data.source_version
        memo.save()
        return Upserted(memo, created=False, changed=changed)


_DISPUTE_STATUS_RANK = {
    Dispute.STATUS_INQUIRY: 0,
    Dispute.STATUS_OPEN: 1,
    Dispute.STATUS_WON: 2,
    Dispute.STATUS_LOST: 2,
}


def upsert_dispute(
    source: str, data: DisputeData, *, legal_entity: LegalEntity | None = None, correlation_id: str = ""
) -> Upserted:
    """A dispute only moves forward: inquiry, open (funds withdrawn), then won or lost for good."""
    with transaction.atomic(savepoint=False):
        payment = Payment.objects.filter(source=source, source_id=data.payment_source_id).first()
        dispute, created = Dispute.objects.select_for_update().get_or_create(
            source=source,
            source_id=data.source_id,
            defaults={
                "legal_entity": legal_entity,
                "payment_source_id": data.payment_source_id,
                "payment": payment,
                "currency": normalize_currency(data.currency),
                "amount_minor": data.amount_minor,
                "status": data.status,
                "reason": data.reason[:200],
                "opened_on": data.opened_on,
                "closed_on": data.closed_on,
                "source_version": data.source_version,
                "correlation_id": correlation_id,
            },
        )
        if created:
            audit.record(
                "dispute.opened", dispute, after={"status": dispute.status, "amount_minor": dispute.amount_minor}
            )
            return Upserted(dispute, created=True, changed=True)
        rank, held = _DISPUTE_STATUS_RANK.get(data.status, 0), _DISPUTE_STATUS_RANK.get(dispute.status, 0)
        if data.source_version < dispute.source_version or rank < held or (rank == held == 2):
            return Upserted(dispute, created=False, changed=False, stale=data.status != dispute.status)
        before = {"status": dispute.status}
        changed = data.status != dispute.status
        dispute.status = data.status
        dispute.closed_on = data.closed_on or dispute.closed_on
        dispute.source_version = data.source_version
        dispute.payment = dispute.payment or payment
        dispute.save()
        if changed:
            audit.record("dispute.updated", dispute, before=before, after={"status": dispute.status})
        return Upserted(dispute, created=False, changed=changed)


def _subscription_changes(held: Subscription | None, data: SubscriptionData) -> list[str]:
    """The status events between what the ledger holds and what billing now reports."""
    if data.ended or data.status == "canceled":
        return [SubscriptionEvent.KIND_CANCELED] if held is None or held.status != "canceled" else []
    if held is None:
        return [SubscriptionEvent.KIND_STARTED]
    kinds = []
    if data.period_start and held.period_start and data.period_start > held.period_start:
        kinds.append(SubscriptionEvent.KIND_RENEWED)
    if sorted(data.price_ids) != sorted(held.price_ids):
        kinds.append(SubscriptionEvent.KIND_CHANGED)
    if data.status != held.status:
        kinds.append(SubscriptionEvent.KIND_STATUS)
    if data.cancel_at_period_end and not held.cancel_at_period_end:
        kinds.append(SubscriptionEvent.KIND_CANCEL_SCHEDULED)
    return kinds


def upsert_subscription(source: str, data: SubscriptionData, *, correlation_id: str = "") -> Upserted:
    """Keep the latest state and append one status event per change; an older report changes nothing."""
    with transaction.atomic(savepoint=False):
        held = Subscription.objects.select_for_update().filter(source=source, source_id=data.source_id).first()
        if held is not None and data.source_version <= held.source_version:
            return Upserted(held, created=False, changed=False, stale=data.source_version < held.source_version)
        kinds = _subscription_changes(held, data)
        subscription = held or Subscription(source=source, source_id=data.source_id, correlation_id=correlation_id)
        subscription.customer = Customer.objects.filter(source=source, source_id=data.customer_source_id).first()
        subscription.customer_source_id = data.customer_source_id
        subscription.status = "canceled" if data.ended else data.status
        subscription.price_ids = list(data.price_ids)
        subscription.period_start, subscription.period_end = data.period_start, data.period_end
        subscription.cancel_at_period_end = data.cancel_at_period_end
        subscription.source_version = data.source_version
        subscription.save()
        SubscriptionEvent.objects.bulk_create(
            SubscriptionEvent(
                subscription=subscription,
                kind=kind,
                status=subscription.status,
                price_ids=list(data.price_ids),
                period_start=data.period_start,
                period_end=data.period_end,
                source_version=data.source_version,
                correlation_id=correlation_id,
            )
            for kind in kinds
        )
        if kinds:
            audit.record("subscription.changed", subscription, after={"events": kinds, "status": subscription.status})
        return Upserted(subscription, created=held is None, changed=bool(kinds))
