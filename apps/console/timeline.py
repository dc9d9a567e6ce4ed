"""One transaction, followed from the webhook to the ERP: the raw events, normalization, every
posting attempt with its outcome and duration, the ERP documents, and every human action in
between. Found by a correlation id, a billing id (in_..., cus_..., pi_...), an invoice number or
an ERP document id or number."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q

from apps.console.models import ExceptionCase
from apps.core.models import AuditEvent
from apps.ingest.models import InboxEvent
from apps.ledger.models import Customer, Invoice, Payment
from apps.posting.models import Posting, PostingAttempt

EXCERPT = 600


@dataclass
class Entry:
    at: datetime
    stage: str  # webhook, normalization, posting, attempt, erp, human, case
    title: str
    detail: str = ""
    actor: str = ""
    correlation_id: str = ""
    link: tuple[str, str] | None = None  # (admin url name, object id)


@dataclass
class Timeline:
    query: str
    title: str = ""
    correlation_ids: set[str] = field(default_factory=set)
    entries: list[Entry] = field(default_factory=list)
    invoices: list[Invoice] = field(default_factory=list)
    postings: list[Posting] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.entries)


def _documents(query: str) -> tuple[list[Invoice], list[Customer], list[Payment], set[str]]:
    correlation_ids: set[str] = set()
    invoices = list(Invoice.objects.filter(Q(source_id=query) | Q(number=query) | Q(correlation_id=query))[:20])
    customers = list(Customer.objects.filter(Q(source_id=query) | Q(correlation_id=query))[:20])
    payments = list(Payment.objects.filter(Q(source_id=query) | Q(correlation_id=query))[:20])
    postings = Posting.objects.filter(
        Q(erp_id=query) | Q(erp_number=query) | Q(correlation_id=query) | Q(idempotency_key=query)
    ).select_related("invoice", "customer", "payment_application__invoice", "payment_application__payment")[:50]
    for posting in postings:
        if posting.invoice:
            invoices.append(posting.invoice)
        if posting.customer:
            customers.append(posting.customer)
        if posting.payment_application:
            payments.append(posting.payment_application.payment)
            if posting.payment_application.invoice:
                invoices.append(posting.payment_application.invoice)
    for event in InboxEvent.objects.filter(Q(correlation_id=query) | Q(event_id=query)).only("object_id")[:20]:
        if event.object_id:
            invoices += list(Invoice.objects.filter(source_id=event.object_id))
            customers += list(Customer.objects.filter(source_id=event.object_id))
            payments += list(Payment.objects.filter(source_id=event.object_id))
    # An invoice's story includes its payments; a payment's includes the invoices it pays.
    for payment in list(payments):
        invoices += [a.invoice for a in payment.applications.select_related("invoice") if a.invoice]
    for invoice in list(invoices):
        payments += [a.payment for a in invoice.payments.select_related("payment")]
    if query:
        correlation_ids.add(query)
    return _unique(invoices), _unique(customers), _unique(payments), correlation_ids


def _unique(rows: list) -> list:  # type: ignore[type-arg]
    seen, out = set(), []
    for row in rows:
        if row.pk not in seen:
            seen.add(row.pk)
            out.append(row)
    return out


def build(query: str) -> Timeline:
    query = (query or "").strip()
    timeline = Timeline(query)
    if not query:
        return timeline
    invoices, customers, payments, correlation_ids = _documents(query)
    timeline.invoices = invoices
    postings = list(
        Posting.objects.filter(
            Q(invoice__in=invoices)
            | Q(payment_application__payment__in=payments)
            | Q(customer__in=[i.customer_id for i in invoices] + [c.pk for c in customers])
            | Q(correlation_id=query)
        )
        .select_related("connection")
        .order_by("created_at")
    )
    timeline.postings = postings
    correlation_ids |= {r.correlation_id for r in [*invoices, *customers, *payments, *postings] if r.correlation_id}
    object_ids = {r.source_id for r in [*invoices, *customers, *payments]}
    events = list(
        InboxEvent.objects.filter(Q(object_id__in=object_ids) | Q(correlation_id__in=correlation_ids)).order_by(
            "received_at"
        )[:200]
    )
    correlation_ids |= {e.correlation_id for e in events}
    timeline.correlation_ids = {c for c in correlation_ids if c and c != query} | (
        {query} if any(e.correlation_id == query for e in events) else set()
    )
    cases = list(ExceptionCase.objects.filter(Q(invoice__in=invoices) | Q(customer__in=customers)))

    entries = timeline.entries
    for event in events:
        entries.append(
            Entry(
                event.received_at,
                "webhook",
                f"Received {event.event_type} ({event.event_id}), delivered {event.delivery_count}×",
                f"Status: {event.get_status_display()}" + (f". {event.error}" if event.error else ""),
                correlation_id=event.correlation_id,
                link=("admin:ingest_inboxevent_change", str(event.pk)),
            )
        )
    attempts = PostingAttempt.objects.filter(posting__in=postings).select_related("posting").order_by("started_at")
    for attempt in attempts:
        duration = (
            f"{(attempt.finished_at - attempt.started_at).total_seconds():.2f} s" if attempt.finished_at else "running"
        )
        entries.append(
            Entry(
                attempt.started_at,
                "attempt",
                f"{attempt.posting.get_operation_display()} on {attempt.posting.connection.name}, attempt "
                f"{attempt.number}: {attempt.get_outcome_display()} ({duration})",
                (attempt.detail or (f"ERP id {attempt.erp_id}" if attempt.erp_id else ""))[:EXCERPT],
                actor=attempt.worker,
                correlation_id=attempt.correlation_id,
                link=("admin:posting_posting_change", str(attempt.posting_id)),
            )
        )
    for posting in postings:
        if posting.posted_at and posting.erp_id:
            entries.append(
                Entry(
                    posting.posted_at,
                    "erp",
                    f"In {posting.connection.name}: {posting.get_operation_display().lower()} → ERP document "
                    f"{posting.erp_number or posting.erp_id} (id {posting.erp_id})",
                    correlation_id=posting.correlation_id,
                    link=("admin:posting_posting_change", str(posting.pk)),
                )
            )
    audited = Q(correlation_id__in=correlation_ids)
    for label, rows in (
        ("ledger.invoice", invoices),
        ("ledger.customer", customers),
        ("ledger.payment", payments),
        ("posting.posting", postings),
        ("console.exceptioncase", cases),
        ("ingest.inboxevent", events),
    ):
        if rows:
            audited |= Q(object_type=label, object_id__in=[str(r.pk) for r in rows])
    for event in AuditEvent.objects.filter(audited).order_by("at", "id")[:500]:
        human = event.actor not in ("system", "hub_config")
        stage = "human" if human else _stage(event.action)
        entries.append(
            Entry(
                event.at,
                stage,
                f"{event.action} {event.object_type}#{event.object_id}",
                (event.reason or _change(event.before, event.after))[:EXCERPT],
                actor=event.actor,
                correlation_id=event.correlation_id,
            )
        )
    entries.sort(key=lambda e: e.at)
    if invoices:
        timeline.title = ", ".join(f"Invoice {i.number or i.source_id} ({i.source_id})" for i in invoices[:3])
    elif customers:
        timeline.title = ", ".join(f"Customer {c.name} ({c.source_id})" for c in customers[:3])
    else:
        timeline.title = f"Correlation id {query}"
    return timeline


def _stage(action: str) -> str:
    prefix = action.split(".", 1)[0]
    return {
        "ledger": "normalization",
        "invoice": "normalization",
        "customer": "normalization",
        "payment": "normalization",
        "inbox": "webhook",
        "posting": "posting",
        "case": "case",
        "mapping": "human",
    }.get(prefix, prefix)


def _change(before: object, after: object) -> str:
    if before is None and after is None:
        return ""
    if before is None:
        return f"{after}"
    return f"{before} → {after}"
