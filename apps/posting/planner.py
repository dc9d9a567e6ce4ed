"""Plan the postings a canonical change needs: one row per document × connection × operation ×
revision, with the parent each one waits for. Planning twice finds the rows planned before."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Prefetch, QuerySet, prefetch_related_objects

from apps.connectors.base import DISPUTE_MOVEMENTS, ON_ACCOUNT_SUFFIX, REFUND_SUFFIX, VOID_SUFFIX, WRITE_OFF_SUFFIX
from apps.core import audit, config_cache
from apps.ledger.models import CreditMemo, Customer, Dispute, Invoice, InvoiceLine, Payment, PaymentApplication
from apps.posting import dispatch, signals
from apps.posting.models import ErrorCategory, Operation, Posting, PostingState, idempotency_key
from apps.routing.models import ERPConnection, RoutingRule, RoutingVersion
from apps.routing.services import Route, RouteFacts, routes
from apps.sources.models import BillingSource

log = logging.getLogger(__name__)


def _region(customer: Customer | None, legal_entity: object) -> str:
    country = str((customer.bill_to or {}).get("country") or "") if customer is not None else ""
    return (country or getattr(legal_entity, "country", "") or "").upper()


def _with_lines(invoice: Invoice) -> None:
    """Read the invoice's lines with their products once; later ``invoice.lines.all()`` reuse them
    (Django skips a lookup already prefetched)."""
    prefetch_related_objects([invoice], Prefetch("lines", queryset=InvoiceLine.objects.select_related("product")))


def invoice_facts(invoice: Invoice) -> RouteFacts:
    """An invoice's product line is that of its largest line with a product."""
    _with_lines(invoice)
    lines = sorted(
        (line for line in invoice.lines.all() if line.product is not None),
        key=lambda line: -abs(line.amount_minor),
    )
    return RouteFacts(
        transaction_type=RoutingRule.TYPE_INVOICE,
        legal_entity=invoice.legal_entity,
        region=_region(invoice.customer, invoice.legal_entity),
        product_line=next((line.product.product_line for line in lines if line.product.product_line), ""),
        currency=invoice.currency,
        document=f"invoice {invoice.number or invoice.source_id}",
    )


def invoice_route(invoice: Invoice) -> Route:
    """Where the invoice and everything that follows it (payments, credit notes, refunds, write-off,
    void, amendments) go: the ERPs its first version was planned to, so a later rule change never
    splits a document's story across ERPs; else the rules as they stand."""
    planned = (
        Posting.objects.filter(invoice=invoice, operation=Operation.POST_INVOICE)
        .exclude(state=PostingState.SKIPPED)
        .order_by("connection_id")
        .values_list("connection_id", "routing_version_id")
        .distinct()
    )
    if planned:
        connection_ids = [connection_id for connection_id, _ in planned]
        version_id = next((version for _, version in planned if version), None)
        return Route(
            connections=tuple(ERPConnection.objects.filter(pk__in=connection_ids).order_by("pk")),
            version=RoutingVersion.objects.filter(pk=version_id).first() if version_id else None,
        )
    return routes(invoice_facts(invoice))


def _plan(
    *,
    connection: ERPConnection,
    operation: str,
    source: str,
    source_id: str,
    revision: int,
    depends_on_key: str = "",
    correlation_id: str = "",
    park: tuple[str, str, str] | None = None,
    routing_version: RoutingVersion | None = None,
    **document: object,
) -> Posting:
    key = idempotency_key(connection.name, operation, source, source_id, revision)
    defaults: dict[str, object] = {
        "routing_version": routing_version,
        "connection": connection,
        "operation": operation,
        "source": source,
        "source_id": source_id,
        "revision": revision,
        "depends_on_key": depends_on_key,
        "correlation_id": correlation_id,
        **document,
    }
    if park is not None:
        code, message, detail = park
        defaults.update(
            state=PostingState.PARKED,
            error_category=ErrorCategory.BUSINESS,
            error_code=code,
            finance_message=message,
            technical_detail=detail,
        )
    elif (
        depends_on_key
        and not Posting.objects.filter(idempotency_key=depends_on_key, state=PostingState.POSTED).exists()
    ):
        # Planned waiting: no message is sent for it until its parent is posted and releases it.
        defaults["state"] = PostingState.WAITING
    posting, created = Posting.objects.get_or_create(idempotency_key=key, defaults=defaults)
    if created:
        audit.record("posting.planned", posting, after={"state": posting.state, "operation": operation})
        if posting.state == PostingState.QUEUED:
            dispatch.enqueue_on_commit(posting)
        elif posting.state == PostingState.WAITING:
            # The parent may be posted by another worker before this row is committed; its release
            # would not have seen the row. Look again once committed (the sweeper is the backstop).
            transaction.on_commit(lambda: _release_if_parent_posted(depends_on_key))
        else:
            audit.record("posting.parked", posting, after={"code": posting.error_code}, reason=posting.finance_message)
            signals.needs_attention.send(sender=Posting, posting=posting)
    return posting


def _release_if_parent_posted(parent_key: str) -> None:
    from apps.posting.executor import release_waiting

    if Posting.objects.filter(idempotency_key=parent_key, state=PostingState.POSTED).exists():
        with transaction.atomic():
            release_waiting(parent_key)


def plan_customer(customer: Customer, connection: ERPConnection, version: RoutingVersion | None = None) -> Posting:
    return _plan(
        routing_version=version,
        connection=connection,
        operation=Operation.ENSURE_CUSTOMER,
        source=customer.source,
        source_id=customer.source_id,
        revision=customer.revision,
        correlation_id=customer.correlation_id,
        customer=customer,
    )


def replan_customer_update(customer: Customer) -> list[Posting]:
    """A changed customer is sent again only to the ERPs that already hold it."""
    connection_ids = (
        Posting.objects.filter(customer=customer, operation=Operation.ENSURE_CUSTOMER)
        .values_list("connection_id", flat=True)
        .distinct()
    )
    return [plan_customer(customer, connection) for connection in ERPConnection.objects.filter(pk__in=connection_ids)]


def _invoice_problem(invoice: Invoice) -> tuple[str, str, str] | None:
    if not invoice.totals_reconcile():
        lines = list(invoice.lines.all())
        return (
            "amount_mismatch",
            f"Invoice {invoice.number or invoice.source_id} does not add up: its lines come to "
            f"{sum(line.amount_minor for line in lines)} plus tax {invoice.tax_minor} "
            f"but its total is {invoice.total_minor} (minor units of {invoice.currency}). "
            "Correct the invoice in billing, or skip it with a reason.",
            f"subtotal_minor={invoice.subtotal_minor} tax_minor={invoice.tax_minor} total_minor={invoice.total_minor} "
            f"line amounts={[line.amount_minor for line in lines]} line taxes={[line.tax_minor for line in lines]}",
        )
    return None


def version_source_id(source_id: str, revision: int) -> str:
    """The id an invoice version is posted under: the billing id for the first, then ``#r<n>``,
    so each version is its own ERP document and the ERP never holds two under one reference."""
    return source_id if revision == 1 else f"{source_id}#r{revision}"


def invoice_posting_key(invoice: Invoice, connection: ERPConnection) -> str:
    return idempotency_key(
        connection.name,
        Operation.POST_INVOICE,
        invoice.source,
        version_source_id(invoice.source_id, invoice.revision),
        invoice.revision,
    )


def _plan_invoice_version(
    invoice: Invoice, connection: ERPConnection, customer_posting: Posting, version: RoutingVersion | None
) -> list[Posting]:
    """The invoice's current version. An amended invoice (a new revision after an earlier one was
    planned) replaces the earlier version: that one is voided in the ERP first (the connector's
    own rule for posted documents), then the new version is posted under its own reference. An
    earlier version that never reached the ERP (parked or dead) is skipped as superseded."""
    earlier = Posting.objects.filter(
        invoice=invoice, connection=connection, operation=Operation.POST_INVOICE, revision__lt=invoice.revision
    )
    planned = _plan_voids(
        earlier,
        Operation.VOID_INVOICE,
        invoice,
        "invoice",
        moot_reason=f"Superseded by revision {invoice.revision} of the invoice in billing, which is posted instead.",
        connections=[connection],
        invoice=invoice,
    )
    depends_on = planned[0].idempotency_key if planned else customer_posting.idempotency_key
    planned.append(
        _plan(
            connection=connection,
            operation=Operation.POST_INVOICE,
            source=invoice.source,
            source_id=version_source_id(invoice.source_id, invoice.revision),
            revision=invoice.revision,
            depends_on_key=depends_on,
            correlation_id=invoice.correlation_id,
            park=_invoice_problem(invoice),
            routing_version=version,
            invoice=invoice,
        )
    )
    return planned


def plan_invoice(invoice: Invoice) -> list[Posting]:
    """Plans the invoice in every ERP its route names. Raises ``NoRoute`` when no rule takes it."""
    if invoice.status == Invoice.STATUS_VOID:
        return plan_void(invoice)
    _with_lines(invoice)  # routing (product line) and the totals check both read them
    route = invoice_route(invoice)
    planned: list[Posting] = []
    with transaction.atomic(savepoint=False):
        for connection in route.connections:
            planned.extend(_plan_invoice_in(invoice, connection, route.version))
    return planned


def _plan_invoice_in(invoice: Invoice, connection: ERPConnection, version: RoutingVersion | None) -> list[Posting]:
    customer_posting = plan_customer(invoice.customer, connection, version)
    planned = [customer_posting, *_plan_invoice_version(invoice, connection, customer_posting, version)]
    for application in invoice.payments.select_related("payment"):
        planned.append(_plan_application(application, invoice, connection, version))
    for memo in invoice.credit_memos.filter(status=CreditMemo.STATUS_ISSUED):
        planned.extend(_plan_credit_memo(memo, invoice, connection, version))
    if invoice.status == Invoice.STATUS_UNCOLLECTIBLE and invoice.total_minor > invoice.amount_paid_minor:
        planned.append(
            _plan(
                routing_version=version,
                connection=connection,
                operation=Operation.WRITE_OFF,
                source=invoice.source,
                source_id=f"{invoice.source_id}{WRITE_OFF_SUFFIX}",
                revision=1,
                depends_on_key=invoice_posting_key(invoice, connection),
                correlation_id=invoice.correlation_id,
                invoice=invoice,
            )
        )
    return planned


def plan_void(invoice: Invoice) -> list[Posting]:
    """A voided invoice is cancelled in every ERP its posting went to. One that never reached an
    ERP is not posted at all: a posting still parked or dead for it is skipped, as moot."""
    postings = Posting.objects.filter(invoice=invoice, operation=Operation.POST_INVOICE)
    return _plan_voids(postings, Operation.VOID_INVOICE, invoice, "invoice", invoice=invoice)


def _plan_voids(
    document_postings: QuerySet[Posting],
    operation: str,
    record: Invoice | CreditMemo,
    word: str,
    *,
    moot_reason: str = "",
    connections: list[ERPConnection] | None = None,
    **document: object,
) -> list[Posting]:
    """Void the latest version of the document in each ERP that has it; one that never reached an
    ERP (parked or dead) is skipped with ``moot_reason`` instead."""
    from apps.posting.services import skip_posting

    planned = []
    with transaction.atomic(savepoint=False):
        postings = document_postings.exclude(state=PostingState.SKIPPED)
        for connection in connections or ERPConnection.objects.filter(pk__in=postings.values("connection_id")):
            latest = postings.filter(connection=connection).order_by("-revision").first()
            if latest is None:
                continue
            if latest.state in (PostingState.PARKED, PostingState.DEAD):
                skip_posting(
                    latest.pk,
                    actor=audit.SYSTEM,
                    reason=moot_reason
                    or f"Billing voided the {word} before it reached the ERP: there is nothing to post.",
                )
                continue
            planned.append(
                _plan(
                    routing_version=latest.routing_version,
                    connection=connection,
                    operation=operation,
                    source=record.source,
                    source_id=f"{latest.source_id}{VOID_SUFFIX}",  # the voided version's own reference
                    revision=1,
                    depends_on_key=latest.idempotency_key,
                    correlation_id=record.correlation_id,
                    **document,
                )
            )
    return planned


def _plan_application(
    application: PaymentApplication, invoice: Invoice, connection: ERPConnection, version: RoutingVersion | None
) -> Posting:
    payment = application.payment
    return _plan(
        routing_version=version,
        connection=connection,
        operation=Operation.APPLY_CREDIT if application.from_credit else Operation.APPLY_PAYMENT,
        source=payment.source,
        source_id=f"{payment.source_id}:{application.invoice_source_id}",
        revision=payment.revision,
        depends_on_key=invoice_posting_key(invoice, connection),
        correlation_id=payment.correlation_id,
        payment_application=application,
    )


def _plan_on_account(payment: Payment) -> list[Posting]:
    """The unapplied part of a payment, as credit on the customer's account, after the customer.
    A payment whose customer the ledger does not know is not posted as credit until a later event
    for the payment finds the customer."""
    customer = payment.customer
    if customer is None:
        log.info("unapplied cash waits for its customer", extra={"payment": payment.source_id})
        return []
    route = routes(
        RouteFacts(
            transaction_type=RoutingRule.TYPE_PAYMENT,
            legal_entity=customer.legal_entity,
            region=_region(customer, customer.legal_entity),
            currency=payment.currency,
            document=f"unapplied payment {payment.source_id}",
        )
    )
    planned = []
    for connection in route.connections:
        parent = plan_customer(customer, connection, route.version)
        planned.append(
            _plan(
                routing_version=route.version,
                connection=connection,
                operation=Operation.RECEIVE_ON_ACCOUNT,
                source=payment.source,
                source_id=f"{payment.source_id}{ON_ACCOUNT_SUFFIX}",
                revision=1,
                depends_on_key=parent.idempotency_key,
                correlation_id=payment.correlation_id,
                payment=payment,
            )
        )
    return planned


def plan_payment(payment: Payment) -> list[Posting]:
    """Applications whose invoice is not in the ledger yet are planned when the invoice arrives.
    What no application took when the cash arrived is posted as customer credit; applications
    billing adds later (``from_credit``) settle invoices from that credit."""
    planned = []
    with transaction.atomic(savepoint=False):
        if payment.on_account_minor > 0:
            planned.extend(_plan_on_account(payment))
        for application in payment.applications.select_related("invoice__legal_entity"):
            if application.invoice is None:
                log.info(
                    "payment application waits for its invoice",
                    extra={"payment": payment.source_id, "invoice": application.invoice_source_id},
                )
                continue
            route = invoice_route(application.invoice)
            for connection in route.connections:
                planned.append(_plan_application(application, application.invoice, connection, route.version))
    return planned


def _credit_memo_problem(memo: CreditMemo) -> tuple[str, str, str] | None:
    if memo.totals_reconcile():
        return None
    lines = list(memo.lines.all())
    return (
        "amount_mismatch",
        f"Credit note {memo.number or memo.source_id} does not add up: its lines come to "
        f"{sum(line.amount_minor for line in lines)} plus tax {memo.tax_minor} but its total is "
        f"{memo.total_minor} (minor units of {memo.currency}). Correct it in billing, or skip it with a reason.",
        f"subtotal_minor={memo.subtotal_minor} tax_minor={memo.tax_minor} total_minor={memo.total_minor}",
    )


def _plan_credit_memo(
    memo: CreditMemo, invoice: Invoice, connection: ERPConnection, version: RoutingVersion | None
) -> list[Posting]:
    """The credit note after its invoice, and the refund paid on it (if any) after the note."""
    credit = _plan(
        routing_version=version,
        connection=connection,
        operation=Operation.POST_CREDIT_MEMO,
        source=memo.source,
        source_id=memo.source_id,
        revision=memo.revision,
        depends_on_key=invoice_posting_key(invoice, connection),
        correlation_id=memo.correlation_id,
        park=_credit_memo_problem(memo),
        credit_memo=memo,
        invoice=invoice,
    )
    if memo.refunded_minor <= 0:
        return [credit]
    refund = _plan(
        routing_version=version,
        connection=connection,
        operation=Operation.REFUND_CREDIT_MEMO,
        source=memo.source,
        source_id=f"{memo.source_id}{REFUND_SUFFIX}",
        revision=1,
        depends_on_key=credit.idempotency_key,
        correlation_id=memo.correlation_id,
        credit_memo=memo,
        invoice=invoice,
    )
    return [credit, refund]


def plan_credit_memo(memo: CreditMemo) -> list[Posting]:
    """Posted to the ERP of the invoice it credits, after that invoice. One whose invoice is not in
    the ledger yet is planned when the invoice arrives. A voided one is cancelled where it was
    posted, and not posted where it was not."""
    if memo.status == CreditMemo.STATUS_VOID:
        postings = Posting.objects.filter(credit_memo=memo, operation=Operation.POST_CREDIT_MEMO)
        return _plan_voids(
            postings, Operation.VOID_CREDIT_MEMO, memo, "credit note", credit_memo=memo, invoice=memo.invoice
        )
    if memo.invoice is None:
        return []
    route = invoice_route(memo.invoice)
    with transaction.atomic(savepoint=False):
        return [
            posting
            for connection in route.connections
            for posting in _plan_credit_memo(memo, memo.invoice, connection, route.version)
        ]


def _plan_dispute_movement(
    dispute: Dispute,
    connection: ERPConnection,
    operation: str,
    version: RoutingVersion | None,
    depends_on_key: str = "",
) -> Posting:
    return _plan(
        routing_version=version,
        connection=connection,
        operation=operation,
        source=dispute.source,
        source_id=f"{dispute.source_id}:{DISPUTE_MOVEMENTS[operation]}",
        revision=1,
        depends_on_key=depends_on_key,
        correlation_id=dispute.correlation_id,
        dispute=dispute,
    )


def plan_dispute(dispute: Dispute) -> list[Posting]:
    """The funds withdrawn when the chargeback opened; then, once decided, reinstated (won) or
    moved to dispute losses (lost), after the withdrawal. An inquiry moves no money: nothing."""
    if not dispute.funds_withdrawn:
        return []
    customer = dispute.payment.customer if dispute.payment is not None else None
    route = routes(
        RouteFacts(
            transaction_type=RoutingRule.TYPE_DISPUTE,
            legal_entity=dispute.legal_entity,
            region=_region(customer, dispute.legal_entity),
            currency=dispute.currency,
            document=f"dispute {dispute.source_id}",
        )
    )
    planned = []
    with transaction.atomic(savepoint=False):
        for connection in route.connections:
            withdrawn = _plan_dispute_movement(dispute, connection, Operation.WITHDRAW_DISPUTED_FUNDS, route.version)
            planned.append(withdrawn)
            if dispute.status == Dispute.STATUS_OPEN:
                continue
            decided = (
                Operation.REINSTATE_DISPUTED_FUNDS if dispute.status == Dispute.STATUS_WON else Operation.LOSE_DISPUTE
            )
            planned.append(
                _plan_dispute_movement(dispute, connection, decided, route.version, withdrawn.idempotency_key)
            )
    return planned


# What the billing engine is told after each kind of posting reaches the ERP.
WRITEBACK_STATUS = {
    Operation.POST_INVOICE: "posted",
    Operation.APPLY_PAYMENT: "payment applied",
    Operation.APPLY_CREDIT: "credit applied",
}


def _writeback_connection(source_name: str) -> ERPConnection | None:
    """The source's writeback connection (read once per configuration generation: every posting asks)."""

    def load() -> tuple[ERPConnection | None]:
        source = BillingSource.objects.select_related("writeback_connection").filter(name=source_name).first()
        return (source.writeback_connection if source else None,)

    return config_cache.cached(("writeback_connection", source_name), load)[0]


def plan_writeback(parent: Posting) -> Posting | None:
    """Once ``parent`` is posted, tell its billing source what the ERP did, when the source has a
    writeback connection: a posting of its own after the parent."""
    if parent.operation not in WRITEBACK_STATUS:
        return None
    target = _writeback_connection(parent.source)
    if target is None or not target.active:
        return None
    invoice = parent.invoice or (parent.payment_application.invoice if parent.payment_application else None)
    if invoice is None:
        return None
    return _plan(
        connection=target,
        operation=Operation.WRITE_BACK,
        source=parent.source,
        source_id=f"{invoice.source_id}:writeback:{parent.idempotency_key[:16]}",
        revision=1,
        depends_on_key=parent.idempotency_key,
        correlation_id=parent.correlation_id,
        invoice=invoice,
    )
