"""Reading the three sides of a reconciliation: the canonical ledger (set-based queries, one per
document type), billing (the engine's API where the source can be listed, else the ledger), and
the ERP (the connector's ``ledger_documents``).

The ledger side holds only documents routed to the run's connection: a document whose own posting
exists on another connection only belongs to that connection's run; one with no posting at all
follows its invoice (its invoice's posting, else the routing rules as they stand).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import stripe
from django.db.models import F, Q

from apps.connectors import base as connector_base
from apps.connectors.registry import get_connector
from apps.core import secrets
from apps.core.errors import ConnectorError
from apps.core.money import CurrencyError, exponent_for, to_minor
from apps.ledger.models import CreditMemo, Invoice, LegalEntity, PaymentApplication
from apps.posting.models import Operation, Posting, PostingState, RedatedPosting
from apps.posting.planner import invoice_facts, version_source_id
from apps.reconciliation.compare import ErpKey, ErpRecord, Key, Record
from apps.reconciliation.models import DocumentType
from apps.routing.models import ERPConnection
from apps.routing.services import MissingMapping, NoRoute, resolve_mapping, routes
from apps.sources.base import InvalidPayload
from apps.sources.models import BillingSource
from apps.sources.stripe import credit_memo_from_object, invoice_from_object, payment_from_paid_invoice

log = logging.getLogger(__name__)

# Documents dated this many days either side of the period are read too, so a document whose date
# differs by a few days between two sides (a prepayment booked on the invoice date, a payment
# settled at midnight UTC) is matched rather than reported missing.
MARGIN_DAYS = 7
# Stripe lists by creation time; an invoice is dated when it is finalized, which can be later.
STRIPE_LOOKBACK_DAYS = 45

BASIS_API = "api"
BASIS_LEDGER = "ledger"

_ERP_TYPES = {
    connector_base.ERP_INVOICE: DocumentType.INVOICE,
    connector_base.ERP_CREDIT_MEMO: DocumentType.CREDIT_MEMO,
    connector_base.ERP_PAYMENT: DocumentType.PAYMENT,
    connector_base.ERP_REFUND: DocumentType.REFUND,
    connector_base.ERP_WRITE_OFF: DocumentType.WRITE_OFF,
}


@dataclass
class Scope:
    connection: ERPConnection
    legal_entity: LegalEntity
    currency: str
    period_start: date
    period_end: date

    @property
    def window(self) -> tuple[date, date]:
        margin = timedelta(days=MARGIN_DAYS)
        return self.period_start - margin, self.period_end + margin


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


@dataclass
class LedgerSide:
    documents: dict[Key, Record] = field(default_factory=dict)
    superseded: dict[ErpKey, Record] = field(default_factory=dict)


class _Routing:
    """Whether documents belong to the run's connection, decided from their own postings, else
    their invoice's, else the routing rules (asked once per invoice that was never planned)."""

    def __init__(self, connection: ERPConnection) -> None:
        self.connection_id = connection.pk
        self._invoices: dict[int, bool] = {}

    def own(self, rows: Iterable[tuple[int, int]]) -> dict[int, set[int]]:
        """(document id, connection id) of the documents' own postings, by document."""
        found: dict[int, set[int]] = defaultdict(set)
        for document_id, connection_id in rows:
            found[document_id].add(connection_id)
        return found

    def decide(self, own: dict[int, set[int]], document_id: int) -> bool | None:
        """True or False from the document's own postings; None: it has none, ask its invoice."""
        connections = own.get(document_id)
        if connections is None:
            return None
        return self.connection_id in connections

    def learn_invoices(self, planned: dict[int, set[int]]) -> None:
        for invoice_id, connections in planned.items():
            self._invoices[invoice_id] = self.connection_id in connections

    def invoices_here(self, invoice_ids: Iterable[int]) -> set[int]:
        unknown = {i for i in invoice_ids if i not in self._invoices}
        if unknown:
            planned = self.own(
                Posting.objects.filter(operation=Operation.POST_INVOICE, invoice_id__in=unknown).values_list(
                    "invoice_id", "connection_id"
                )
            )
            self.learn_invoices(planned)
            for invoice in (
                Invoice.objects.filter(pk__in=unknown - set(planned))
                .select_related("customer", "legal_entity")
                .prefetch_related("lines__product")
            ):
                try:
                    route = routes(invoice_facts(invoice))
                except NoRoute:
                    self._invoices[invoice.pk] = False
                    continue
                self._invoices[invoice.pk] = any(c.pk == self.connection_id for c in route.connections)
        return {i for i in invoice_ids if self._invoices.get(i)}


def load_ledger(scope: Scope) -> LedgerSide:
    side = LedgerSide()
    routing = _Routing(scope.connection)
    _ledger_invoices(scope, side, routing)
    _ledger_payments(scope, side, routing)
    _ledger_credit_memos(scope, side, routing)
    _ledger_refunds(scope, side, routing)
    _ledger_write_offs(scope, side, routing)
    return side


def _keep(records: list[tuple[Record, bool | None]], routing: _Routing) -> list[Record]:
    """The records of the run's connection: decided by their own postings, else by their invoice."""
    ask = {record.invoice_id for record, here in records if here is None and record.invoice_id}
    invoices = routing.invoices_here(ask) if ask else set()
    return [
        record
        for record, here in records
        if here or (here is None and record.invoice_id is not None and record.invoice_id in invoices)
    ]


def _ledger_invoices(scope: Scope, side: LedgerSide, routing: _Routing) -> None:
    start, end = scope.window
    invoices = Invoice.objects.filter(
        legal_entity=scope.legal_entity, currency=scope.currency, invoice_date__range=(start, end)
    )
    planned: dict[int, set[int]] = defaultdict(set)
    posted: dict[int, dict[int, str]] = defaultdict(dict)  # invoice -> revision -> posted version's id
    for invoice_id, connection_id, state, revision, source_id in Posting.objects.filter(
        operation=Operation.POST_INVOICE, invoice_id__in=invoices.values("id")
    ).values_list("invoice_id", "connection_id", "state", "revision", "source_id"):
        planned[invoice_id].add(connection_id)
        if connection_id == routing.connection_id and state == PostingState.POSTED:
            posted[invoice_id][revision] = source_id
    routing.learn_invoices(planned)
    rows = invoices.values_list(
        "id", "source", "source_id", "revision", "status", "total_minor", "number", "invoice_date"
    )
    unplanned = [row[0] for row in rows if row[0] not in planned]
    here = routing.invoices_here(unplanned) if unplanned else set()
    for invoice_id, source, source_id, revision, status, total, number, invoice_date in rows:
        if not (routing.connection_id in planned.get(invoice_id, ()) or invoice_id in here):
            continue
        versions = posted.get(invoice_id, {})
        erp_version = source_id if revision == 1 else version_source_id(source_id, revision)
        current = revision
        if status == Invoice.STATUS_VOID and versions:
            current = max(versions)  # the void cancels the latest version the ERP holds
            erp_version = versions[current]
        side.documents[(DocumentType.INVOICE, source, source_id)] = Record(
            DocumentType.INVOICE,
            source,
            source_id,
            scope.currency,
            total,
            status,
            invoice_date,
            number=number,
            erp_ref=f"{source}:{erp_version}",
            invoice_source_id=source_id,
            expect_in_erp=status != Invoice.STATUS_VOID or bool(versions),
            invoice_id=invoice_id,
        )
        for version, version_id in versions.items():
            if version < current:
                reference = f"{source}:{version_id}"
                side.superseded[(DocumentType.INVOICE, reference)] = Record(
                    DocumentType.INVOICE,
                    source,
                    source_id,
                    scope.currency,
                    None,
                    Invoice.STATUS_VOID,
                    invoice_date,
                    number=number,
                    erp_ref=reference,
                    invoice_source_id=source_id,
                    invoice_id=invoice_id,
                )


def _ledger_payments(scope: Scope, side: LedgerSide, routing: _Routing) -> None:
    start, end = scope.window
    applications = (
        PaymentApplication.objects.filter(
            invoice__legal_entity=scope.legal_entity,
            payment__currency=scope.currency,
            from_credit=False,
            invoice__isnull=False,
            payment__settled_at__lt=_start_of(end + timedelta(days=1)),
            invoice__invoice_date__lte=end,
        )
        # Dated the later of settlement and invoice date, as the posting dates it.
        .filter(Q(payment__settled_at__gte=_start_of(start)) | Q(invoice__invoice_date__gte=start))
    )
    own = routing.own(
        Posting.objects.filter(
            operation=Operation.APPLY_PAYMENT, payment_application_id__in=applications.values("id")
        ).values_list("payment_application_id", "connection_id")
    )
    records = []
    for (
        application_id,
        source,
        payment_id,
        invoice_source_id,
        amount,
        settled_at,
        invoice_date,
        invoice_id,
    ) in applications.values_list(
        "id",
        "payment__source",
        "payment__source_id",
        "invoice_source_id",
        "amount_minor",
        "payment__settled_at",
        "invoice__invoice_date",
        "invoice_id",
    ):
        on = max(settled_at.astimezone(UTC).date(), invoice_date)
        if not start <= on <= end:
            continue
        source_id = f"{payment_id}:{invoice_source_id}"
        record = Record(
            DocumentType.PAYMENT,
            source,
            source_id,
            scope.currency,
            amount,
            "",
            on,
            erp_ref=f"{source}:{source_id}",
            invoice_source_id=invoice_source_id,
            invoice_id=invoice_id,
            application_id=application_id,
        )
        records.append((record, routing.decide(own, application_id)))
    for record in _keep(records, routing):
        side.documents[record.key] = record


def _ledger_credit_memos(scope: Scope, side: LedgerSide, routing: _Routing) -> None:
    start, end = scope.window
    memos = CreditMemo.objects.filter(
        invoice__legal_entity=scope.legal_entity,
        currency=scope.currency,
        invoice__isnull=False,
        memo_date__range=(start, end),
    )
    own: dict[int, set[int]] = defaultdict(set)
    posted: set[int] = set()
    for memo_id, connection_id, state in Posting.objects.filter(
        operation=Operation.POST_CREDIT_MEMO, credit_memo_id__in=memos.values("id")
    ).values_list("credit_memo_id", "connection_id", "state"):
        own[memo_id].add(connection_id)
        if connection_id == routing.connection_id and state == PostingState.POSTED:
            posted.add(memo_id)
    records = []
    for (
        memo_id,
        source,
        source_id,
        status,
        total,
        number,
        memo_date,
        invoice_id,
        invoice_source_id,
    ) in memos.values_list(
        "id",
        "source",
        "source_id",
        "status",
        "total_minor",
        "number",
        "memo_date",
        "invoice_id",
        "invoice__source_id",
    ):
        record = Record(
            DocumentType.CREDIT_MEMO,
            source,
            source_id,
            scope.currency,
            total,
            status,
            memo_date,
            number=number,
            erp_ref=f"{source}:{source_id}",
            invoice_source_id=invoice_source_id,
            expect_in_erp=status != CreditMemo.STATUS_VOID or memo_id in posted,
            invoice_id=invoice_id,
            credit_memo_id=memo_id,
        )
        records.append((record, routing.decide(own, memo_id)))
    for record in _keep(records, routing):
        side.documents[record.key] = record


def _ledger_refunds(scope: Scope, side: LedgerSide, routing: _Routing) -> None:
    start, end = scope.window
    memos = CreditMemo.objects.filter(
        invoice__legal_entity=scope.legal_entity,
        currency=scope.currency,
        invoice__isnull=False,
        status=CreditMemo.STATUS_ISSUED,
        refunded_minor__gt=0,
    ).filter(Q(status_date__range=(start, end)) | Q(status_date__isnull=True, memo_date__range=(start, end)))
    own = routing.own(
        Posting.objects.filter(
            operation=Operation.REFUND_CREDIT_MEMO, credit_memo_id__in=memos.values("id")
        ).values_list("credit_memo_id", "connection_id")
    )
    records = []
    for (
        memo_id,
        source,
        memo_source_id,
        refunded,
        status_date,
        memo_date,
        invoice_id,
        invoice_source_id,
    ) in memos.values_list(
        "id",
        "source",
        "source_id",
        "refunded_minor",
        "status_date",
        "memo_date",
        "invoice_id",
        "invoice__source_id",
    ):
        source_id = f"{memo_source_id}{connector_base.REFUND_SUFFIX}"
        record = Record(
            DocumentType.REFUND,
            source,
            source_id,
            scope.currency,
            refunded,
            "",
            status_date or memo_date,
            erp_ref=f"{source}:{source_id}",
            invoice_source_id=invoice_source_id,
            invoice_id=invoice_id,
            credit_memo_id=memo_id,
        )
        records.append((record, routing.decide(own, memo_id)))
    for record in _keep(records, routing):
        side.documents[record.key] = record


def _ledger_write_offs(scope: Scope, side: LedgerSide, routing: _Routing) -> None:
    start, end = scope.window
    invoices = (
        Invoice.objects.filter(
            legal_entity=scope.legal_entity,
            currency=scope.currency,
            status=Invoice.STATUS_UNCOLLECTIBLE,
            total_minor__gt=F("amount_paid_minor"),
            invoice_date__lte=end,
        )
        # Dated as the posting dates it: the later of the status change and the invoice date.
        .filter(
            Q(status_date__gte=start)
            | Q(status_date__isnull=True, updated_at__gte=_start_of(start))
            | Q(invoice_date__gte=start)
        )
    )
    own = routing.own(
        Posting.objects.filter(operation=Operation.WRITE_OFF, invoice_id__in=invoices.values("id")).values_list(
            "invoice_id", "connection_id"
        )
    )
    records = []
    for (
        invoice_id,
        source,
        invoice_source_id,
        total,
        paid,
        status_date,
        updated_at,
        invoice_date,
        number,
    ) in invoices.values_list(
        "id",
        "source",
        "source_id",
        "total_minor",
        "amount_paid_minor",
        "status_date",
        "updated_at",
        "invoice_date",
        "number",
    ):
        on = max(status_date or updated_at.astimezone(UTC).date(), invoice_date)
        if not start <= on <= end:
            continue
        source_id = f"{invoice_source_id}{connector_base.WRITE_OFF_SUFFIX}"
        record = Record(
            DocumentType.WRITE_OFF,
            source,
            source_id,
            scope.currency,
            total - paid,
            "",
            on,
            number=number,
            erp_ref=f"{source}:{source_id}",
            invoice_source_id=invoice_source_id,
            invoice_id=invoice_id,
        )
        records.append((record, routing.decide(own, invoice_id)))
    for record in _keep(records, routing):
        side.documents[record.key] = record


def known_in_ledger(keys: set[Key]) -> set[Key]:
    """Which of these documents the ledger holds at all (any legal entity, currency or date)."""
    wanted: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for document_type, source, source_id in keys:
        wanted[document_type][source].add(source_id)
    known: set[Key] = set()
    for source, ids in wanted[DocumentType.INVOICE].items():
        for found in Invoice.objects.filter(source=source, source_id__in=ids).values_list("source_id", flat=True):
            known.add((DocumentType.INVOICE, source, found))
    for source, ids in wanted[DocumentType.CREDIT_MEMO].items():
        for found in CreditMemo.objects.filter(source=source, source_id__in=ids).values_list("source_id", flat=True):
            known.add((DocumentType.CREDIT_MEMO, source, found))
    for source, ids in wanted[DocumentType.REFUND].items():
        memo_ids = {i.removesuffix(connector_base.REFUND_SUFFIX) for i in ids}
        for found in CreditMemo.objects.filter(source=source, source_id__in=memo_ids).values_list(
            "source_id", flat=True
        ):
            known.add((DocumentType.REFUND, source, f"{found}{connector_base.REFUND_SUFFIX}"))
    for source, ids in wanted[DocumentType.WRITE_OFF].items():
        invoice_ids = {i.removesuffix(connector_base.WRITE_OFF_SUFFIX) for i in ids}
        for found in Invoice.objects.filter(source=source, source_id__in=invoice_ids).values_list(
            "source_id", flat=True
        ):
            known.add((DocumentType.WRITE_OFF, source, f"{found}{connector_base.WRITE_OFF_SUFFIX}"))
    for source, ids in wanted[DocumentType.PAYMENT].items():
        pairs = {tuple(i.rsplit(":", 1)) for i in ids if ":" in i}
        payment_ids = {payment for payment, _ in pairs}
        for payment, invoice in PaymentApplication.objects.filter(
            payment__source=source, payment__source_id__in=payment_ids
        ).values_list("payment__source_id", "invoice_source_id"):
            if (payment, invoice) in pairs:
                known.add((DocumentType.PAYMENT, source, f"{payment}:{invoice}"))
    return known


# -- billing ---------------------------------------------------------------------------------


@dataclass
class BillingSide:
    documents: dict[Key, Record] = field(default_factory=dict)
    basis: dict[str, str] = field(default_factory=dict)  # source name -> BASIS_API | BASIS_LEDGER
    notes: list[str] = field(default_factory=list)

    @property
    def from_ledger(self) -> frozenset[str]:
        return frozenset(name for name, basis in self.basis.items() if basis == BASIS_LEDGER)


def load_billing(scope: Scope, sources: list[BillingSource]) -> BillingSide:
    side = BillingSide()
    for source in sources:
        try:
            settings = secrets.resolve(source.api_settings or {})
        except secrets.MissingSecret as exc:
            settings = {}
            side.notes.append(f"Billing source {source.name}: its API settings cannot be resolved ({exc}).")
        if source.kind == BillingSource.KIND_STRIPE and settings.get("api_key"):
            try:
                side.documents.update(stripe_documents(source.name, settings, scope))
            except (stripe.StripeError, InvalidPayload) as exc:
                side.basis[source.name] = BASIS_LEDGER
                side.notes.append(
                    f"Billing source {source.name}: Stripe's API could not be read ({exc}); the canonical ledger "
                    "stands for billing in this run."
                )
                continue
            side.basis[source.name] = BASIS_API
            side.notes.append(f"Billing source {source.name}: read through Stripe's API (official SDK).")
        else:
            side.basis[source.name] = BASIS_LEDGER
            side.notes.append(
                f"Billing source {source.name} ({source.get_kind_display()}): the hub cannot list its documents "
                "through its API, so the canonical ledger stands for billing."
            )
    return side


def stripe_documents(source: str, settings: dict[str, Any], scope: Scope) -> dict[Key, Record]:
    """Invoices (with what was paid and written off on them) and credit notes (with their refunds)
    created in the window, read with the official SDK and interpreted by the Stripe adapter's own
    parsing, so billing is read exactly as normalization reads it."""
    start, end = scope.window
    base = settings.get("base_url")
    client = stripe.StripeClient(str(settings["api_key"]), base_addresses={"api": str(base)} if base else None)
    created = {
        "gte": int(_start_of(start - timedelta(days=STRIPE_LOOKBACK_DAYS)).timestamp()),
        "lte": int(_start_of(end + timedelta(days=1)).timestamp()),
    }
    documents: dict[Key, Record] = {}

    def add(record: Record) -> None:
        documents[record.key] = record

    for listed in client.v1.invoices.list({"created": created, "limit": 100}).auto_paging_iter():
        obj = listed.to_dict()
        try:
            invoice = invoice_from_object(obj, 0)
        except InvalidPayload:
            continue  # a draft: not a document yet
        add(
            Record(
                DocumentType.INVOICE,
                source,
                invoice.source_id,
                invoice.currency,
                invoice.total_minor,
                invoice.status,
                invoice.invoice_date,
                number=invoice.number,
                invoice_source_id=invoice.source_id,
            )
        )
        payment = payment_from_paid_invoice(obj, 0)
        if payment is not None:
            on = max(payment.settled_at.astimezone(UTC).date(), invoice.invoice_date)
            for application in payment.applications:
                add(
                    Record(
                        DocumentType.PAYMENT,
                        source,
                        f"{payment.source_id}:{application.invoice_source_id}",
                        payment.currency,
                        application.amount_minor,
                        "",
                        on,
                        invoice_source_id=invoice.source_id,
                    )
                )
        if invoice.status == Invoice.STATUS_UNCOLLECTIBLE and invoice.total_minor > invoice.amount_paid_minor:
            add(
                Record(
                    DocumentType.WRITE_OFF,
                    source,
                    f"{invoice.source_id}{connector_base.WRITE_OFF_SUFFIX}",
                    invoice.currency,
                    invoice.total_minor - invoice.amount_paid_minor,
                    "",
                    max(invoice.status_date or invoice.invoice_date, invoice.invoice_date),
                    number=invoice.number,
                    invoice_source_id=invoice.source_id,
                )
            )
    for listed in client.v1.credit_notes.list({"created": created, "limit": 100}).auto_paging_iter():
        try:
            memo = credit_memo_from_object(listed.to_dict(), 0)
        except InvalidPayload:
            continue
        add(
            Record(
                DocumentType.CREDIT_MEMO,
                source,
                memo.source_id,
                memo.currency,
                memo.total_minor,
                memo.status,
                memo.memo_date,
                number=memo.number,
                invoice_source_id=memo.invoice_source_id,
            )
        )
        if memo.refunded_minor > 0 and memo.status == CreditMemo.STATUS_ISSUED:
            add(
                Record(
                    DocumentType.REFUND,
                    source,
                    f"{memo.source_id}{connector_base.REFUND_SUFFIX}",
                    memo.currency,
                    memo.refunded_minor,
                    "",
                    memo.status_date or memo.memo_date,
                    invoice_source_id=memo.invoice_source_id,
                )
            )
    return documents


# -- the ERP ---------------------------------------------------------------------------------


@dataclass
class ErpSide:
    documents: dict[ErpKey, list[ErpRecord]] = field(default_factory=dict)
    read: bool = False
    note: str = ""


def erp_company(connection: ERPConnection, legal_entity: LegalEntity) -> str:
    """The ERP's own id of the legal entity (the ``company`` dimension mapping), or "" for the
    connection's default company."""
    try:
        return resolve_mapping(connection, "company", [legal_entity.code, legal_entity.country])
    except MissingMapping:
        return ""


def _redated_until(scope: Scope, end: date) -> date:
    """Documents of the period the closed-period policy re-dated later than the margin: the ERP is
    read up to the latest of them, so a re-dated document is found, not reported missing."""
    latest = (
        RedatedPosting.objects.filter(
            posting__connection=scope.connection,
            original_date__gte=scope.period_start,
            original_date__lte=scope.period_end,
        )
        .order_by("-posted_date")
        .values_list("posted_date", flat=True)
        .first()
    )
    return max(end, latest) if latest else end


def load_erp(scope: Scope) -> ErpSide:
    connection = scope.connection
    start, end = scope.window
    end = _redated_until(scope, end)
    try:
        connector = get_connector(connection.kind, connection.resolved_settings())
        listed = connector.ledger_documents(start, end, erp_company(connection, scope.legal_entity))
    except NotImplementedError:
        return ErpSide(
            note=f"The {connection.get_kind_display()} connector cannot list what the ERP holds yet "
            "(ledger_documents): only billing and the ledger were compared."
        )
    except (ConnectorError, secrets.MissingSecret) as exc:
        return ErpSide(note=f"{connection.name} could not be read ({exc}): only billing and the ledger were compared.")
    return ErpSide(documents=erp_records(listed), read=True, note=f"ERP: {connection.name} read through its connector.")


def erp_records(listed: Iterable[connector_base.ErpDocument]) -> dict[ErpKey, list[ErpRecord]]:
    documents: dict[ErpKey, list[ErpRecord]] = defaultdict(list)
    for document in listed:
        document_type = _ERP_TYPES.get(document.kind)
        if document_type is None:
            continue
        documents[(document_type, document.external_ref)].append(
            ErpRecord(
                document_type,
                document.external_ref,
                document.erp_id,
                document.number,
                document.currency,
                _minor(document.amount, document.currency),
                document.status,
                document.document_date,
            )
        )
    return dict(documents)


def _minor(amount: Decimal, currency: str) -> int:
    try:
        return to_minor(amount, currency)
    except CurrencyError:
        # Finer than the currency allows (or an unknown code): rounded, and the comparison shows it.
        exponent = exponent_for(currency) if len(currency) == 3 else 2
        return int((Decimal(amount) * (Decimal(10) ** exponent)).to_integral_value(ROUND_HALF_UP))
