"""Exception cases: opened and resolved by the posting pipeline's signals, worked by people through
the console. Every human action is audited with who, why, before and after; reposting goes
through the posting pipeline, so its exactly-once guarantees hold for every action here."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from apps.console import catalogue
from apps.console.models import CaseStatus, ExceptionCase
from apps.core import audit
from apps.ingest import services as ingest
from apps.ingest.models import InboxEvent
from apps.ledger.models import Customer, Invoice, PaymentApplication
from apps.posting import services as posting_services
from apps.posting.models import EXCEPTION_STATES, ErrorCategory, Posting, PostingState
from apps.routing.models import Mapping
from apps.sources.models import BillingSource

log = logging.getLogger(__name__)

ActionRefused = posting_services.ActionRefused


@dataclass(frozen=True)
class Root:
    kind: str
    source: str
    source_id: str
    invoice: Invoice | None
    customer: Customer | None


def root_of(posting: Posting) -> Root:
    """The document a person works on: an invoice for invoice and payment postings, else the customer."""
    invoice = posting.invoice
    if invoice is None and posting.payment_application_id:
        invoice = posting.payment_application.invoice  # type: ignore[union-attr]
    if invoice is not None:
        return Root(ExceptionCase.ROOT_INVOICE, invoice.source, invoice.source_id, invoice, invoice.customer)
    customer = posting.customer
    if customer is not None:
        return Root(ExceptionCase.ROOT_CUSTOMER, customer.source, customer.source_id, None, customer)
    return Root(ExceptionCase.ROOT_INVOICE, posting.source, posting.source_id, None, None)


def case_postings(case: ExceptionCase) -> QuerySet[Posting]:
    """Every posting of the case's document on its connection, including those waiting on it."""
    if case.root_kind == ExceptionCase.ROOT_INVOICE and case.invoice_id:
        # An OR across a join cannot use an index (seconds at a million postings, bench/REPORT.md):
        # read the invoice's applications first, so every condition is an indexed lookup.
        applications = PaymentApplication.objects.filter(invoice_id=case.invoice_id).values_list("pk", flat=True)
        documents = Q(invoice_id=case.invoice_id) | Q(payment_application_id__in=list(applications))
    elif case.customer_id:
        documents = Q(customer_id=case.customer_id)
    else:
        documents = Q(source=case.source, source_id=case.source_id)
    rows = list(
        Posting.objects.filter(documents, connection_id=case.connection_id).values_list("pk", "idempotency_key")
    )
    return Posting.objects.filter(
        Q(pk__in=[pk for pk, _ in rows]) | Q(depends_on_key__in=[key for _, key in rows])
    ).select_related("connection", "invoice__customer", "customer", "payment_application__payment")


def _locked_open_case(posting: Posting, root: Root) -> ExceptionCase | None:
    return (
        ExceptionCase.objects.select_for_update()
        .filter(
            connection_id=posting.connection_id,
            root_kind=root.kind,
            source=root.source,
            source_id=root.source_id,
            status=CaseStatus.OPEN,
        )
        .first()
    )


def open_or_update_case(posting: Posting) -> ExceptionCase:
    """Called in the transaction that parked the posting or declared it dead."""
    root = root_of(posting)
    entry = catalogue.entry_for(posting)
    values = {
        "category": entry.category,
        "kind": entry.kind,
        "code": catalogue.catalogue_code(posting) or posting.error_code,
        "message": catalogue.finance_message(posting),
        "technical_detail": posting.technical_detail,
        "owner_group": entry.owner_group,
        "failing_posting": posting,
        "last_failure_at": timezone.now(),
    }
    case = _locked_open_case(posting, root)
    if case is not None:
        for field, value in values.items():
            setattr(case, field, value)
        case.save()
        audit.record("case.updated", case, after={"code": case.code, "posting": posting.pk})
        return case
    legal_entity = root.invoice.legal_entity if root.invoice else root.customer.legal_entity if root.customer else None
    case = ExceptionCase.objects.create(
        connection=posting.connection,
        root_kind=root.kind,
        source=root.source,
        source_id=root.source_id,
        invoice=root.invoice,
        customer=root.customer,
        legal_entity=legal_entity,
        correlation_id=posting.correlation_id,
        **values,
    )
    audit.record("case.opened", case, after={"code": case.code, "kind": case.kind, "posting": posting.pk})
    from apps.console import notifications

    transaction.on_commit(lambda: notifications.case_opened(case.pk))
    return case


def resolve_if_settled(posting: Posting, actor: str) -> ExceptionCase | None:
    case = _locked_open_case(posting, root_of(posting))
    if case is None or case_postings(case).filter(state__in=EXCEPTION_STATES).exists():
        return case
    case.status = CaseStatus.RESOLVED
    case.resolved_at = timezone.now()
    case.resolved_by = actor
    case.resolution = f"{posting.get_operation_display()} {posting.get_state_display().lower()}"
    if posting.erp_number or posting.erp_id:
        case.resolution += f" (ERP {posting.erp_number or posting.erp_id})"
    case.save(update_fields=["status", "resolved_at", "resolved_by", "resolution"])
    audit.record("case.resolved", case, actor=actor, after={"resolution": case.resolution})
    return case


def _open_case(case_id: int) -> ExceptionCase:
    case = ExceptionCase.objects.select_for_update().get(pk=case_id)
    if case.status != CaseStatus.OPEN:
        raise ActionRefused(f"Case {case.pk} is already resolved ({case.resolution}).")
    return case


def _failing(case: ExceptionCase) -> list[Posting]:
    return list(case_postings(case).filter(state__in=EXCEPTION_STATES).order_by("pk"))


def _require_reason(reason: str, action: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ActionRefused(f"A reason is required to {action}.")
    return reason


def retry_case(case_id: int, *, actor: str, reason: str = "retry from the console") -> int:
    with transaction.atomic():
        case = _open_case(case_id)
        failing = _failing(case)
        if not failing:
            raise ActionRefused(f"Case {case.pk} has no parked or dead posting to retry.")
        for posting in failing:
            posting_services.retry_posting(posting.pk, actor=actor, reason=reason)
        audit.record("case.retried", case, actor=actor, reason=reason, after={"postings": [p.pk for p in failing]})
    return len(failing)


def replay_case(case_id: int, *, actor: str, reason: str = "replay from the console") -> int:
    """Normalize the document's stored raw events again, then repost what failed. Replaying changes
    nothing that normalization already holds; a changed document gets a new revision."""
    with transaction.atomic():
        case = _open_case(case_id)
        ids = {case.source_id}
        if case.invoice_id:
            ids.add(case.invoice.customer.source_id)  # type: ignore[union-attr]
        found = Q(object_id__in=ids)
        if case.root_kind == ExceptionCase.ROOT_EVENT:
            found |= Q(event_id=case.source_id)
        events = list(InboxEvent.objects.filter(found, source=case.source).order_by("received_at"))
        for event in events:
            ingest.replay_event(event.pk, actor=actor, reason=reason)
        audit.record("case.replayed", case, actor=actor, reason=reason, after={"inbox_events": [e.pk for e in events]})
        failing = _failing(case)
        for posting in failing:
            posting_services.retry_posting(posting.pk, actor=actor, reason=reason)
    return len(events)


def correct_mapping_and_repost(case_id: int, *, kind: str, key: str, value: str, actor: str, reason: str) -> Mapping:
    """Fix the mapping at fault (with a reason, audited before/after) and repost the case."""
    reason = _require_reason(reason, "correct a mapping")
    if kind not in dict(Mapping.KIND_CHOICES):
        raise ActionRefused(f"'{kind}' is not a mapping kind.")
    key, value = (key or "").strip() or "default", (value or "").strip()
    if not value:
        raise ActionRefused("Give the ERP value the mapping should point to.")
    with transaction.atomic():
        case = _open_case(case_id)
        mapping = Mapping.objects.select_for_update().filter(connection=case.connection, kind=kind, key=key).first()
        before = {"kind": kind, "key": key, "value": mapping.value} if mapping else None
        if mapping is None:
            mapping = Mapping.objects.create(connection=case.connection, kind=kind, key=key, value=value)
        else:
            mapping.value = value
            mapping.save(update_fields=["value"])
        audit.record(
            "mapping.corrected",
            mapping,
            actor=actor,
            reason=reason,
            before=before,
            after={"kind": kind, "key": key, "value": value, "case": case.pk},
            correlation_id=case.correlation_id,
        )
        failing = _failing(case)
        for posting in failing:
            posting_services.retry_posting(posting.pk, actor=actor, reason=f"mapping corrected: {reason}")
        audit.record("case.corrected", case, actor=actor, reason=reason, after={"mapping": mapping.pk})
    return mapping


def link_case(case_id: int, *, erp_id: str, erp_number: str = "", actor: str, reason: str) -> Posting:
    with transaction.atomic():
        case = _open_case(case_id)
        failing = _failing(case)
        if len(failing) != 1:
            raise ActionRefused(
                f"Case {case.pk} has {len(failing)} failing postings; link the document from the posting itself."
            )
        return posting_services.link_posting(
            failing[0].pk, erp_id=erp_id, erp_number=erp_number, actor=actor, reason=reason
        )


def skip_case(case_id: int, *, actor: str, reason: str) -> int:
    reason = _require_reason(reason, "skip a case")
    with transaction.atomic():
        case = _open_case(case_id)
        failing = _failing(case)
        for posting in failing:
            posting_services.skip_posting(posting.pk, actor=actor, reason=reason)
    return len(failing)


def assign_case(case_id: int, *, owner: AbstractBaseUser | None, actor: str, reason: str = "") -> ExceptionCase:
    with transaction.atomic():
        case = _open_case(case_id)
        before = {"owner": case.owner.get_username() if case.owner else None}
        case.owner = owner  # type: ignore[assignment]
        case.save(update_fields=["owner"])
        audit.record(
            "case.assigned",
            case,
            actor=actor,
            reason=reason,
            before=before,
            after={"owner": owner.get_username() if owner else None},
        )
    return case


def assignable_users() -> QuerySet:
    from apps.console.roles import ROLE_NAMES

    return get_user_model().objects.filter(is_active=True, groups__name__in=ROLE_NAMES[:2]).distinct()


def suggested_mapping(case: ExceptionCase) -> dict[str, str]:
    """Prefill of the correction form: the mapping kind and key at fault, and its current value."""
    entry = catalogue.CATALOGUE.get(case.code)
    posting = case.failing_posting
    params = (posting.error_params if posting else {}) or {}
    kind = entry.mapping_kind if entry else ""
    keys = [k.strip() for k in str(params.get("keys", "")).split(",") if k.strip()]
    key = keys[0] if keys else "default"
    if case.code in ("unmapped_revenue_account", "unknown_tax_code", "unknown_payment_journal") and posting:
        current = Mapping.objects.filter(connection=case.connection, kind=kind, value=params.get("value", "")).first()
        if current:
            key = current.key
    current_value = Mapping.objects.filter(connection=case.connection, kind=kind, key=key).values_list(
        "value", flat=True
    )
    return {"kind": kind, "key": key, "value": current_value.first() or ""}


ROUTING_CASE_KIND = "No ERP route"


def _event_case(event: InboxEvent) -> ExceptionCase | None:
    return (
        ExceptionCase.objects.select_for_update()
        .filter(
            connection__isnull=True,
            root_kind=ExceptionCase.ROOT_EVENT,
            source=event.source,
            source_id=event.object_id or event.event_id,
            status=CaseStatus.OPEN,
        )
        .first()
    )


def open_routing_case(event: InboxEvent, message: str) -> ExceptionCase:
    """A billing event whose document no routing rule takes: one case per document, without a
    connection, replayed by itself once a routing rule is saved."""
    values = {
        "category": ErrorCategory.TECHNICAL,
        "kind": ROUTING_CASE_KIND,
        "code": "no_route",
        "message": message,
        "technical_detail": f"Inbox event {event.pk} ({event.event_type}, {event.event_id}) failed: {message}",
        "owner_group": catalogue.ENGINEERS,
        "last_failure_at": timezone.now(),
    }
    case = _event_case(event)
    if case is not None:
        for field, value in values.items():
            setattr(case, field, value)
        case.save()
        return case
    source = BillingSource.objects.select_related("legal_entity").filter(name=event.source).first()
    case = ExceptionCase.objects.create(
        connection=None,
        root_kind=ExceptionCase.ROOT_EVENT,
        source=event.source,
        source_id=event.object_id or event.event_id,
        legal_entity=source.legal_entity if source else None,
        correlation_id=event.correlation_id,
        **values,
    )
    audit.record("case.opened", case, after={"code": case.code, "kind": case.kind, "inbox_event": event.pk})
    from apps.console import notifications

    transaction.on_commit(lambda: notifications.case_opened(case.pk))
    return case


def resolve_event_case(event: InboxEvent, actor: str = audit.SYSTEM) -> ExceptionCase | None:
    case = _event_case(event)
    if case is None:
        return None
    case.status = CaseStatus.RESOLVED
    case.resolved_at = timezone.now()
    case.resolved_by = actor
    case.resolution = "routed and normalized"
    case.save(update_fields=["status", "resolved_at", "resolved_by", "resolution"])
    audit.record("case.resolved", case, actor=actor, after={"resolution": case.resolution, "inbox_event": event.pk})
    return case


def replay_unrouted(reason: str) -> int:
    """After a routing rule changed: replay every event still waiting for a route."""
    replayed = 0
    for case_id in ExceptionCase.objects.filter(
        status=CaseStatus.OPEN, root_kind=ExceptionCase.ROOT_EVENT, code="no_route"
    ).values_list("pk", flat=True):
        replayed += replay_case(case_id, actor=audit.SYSTEM, reason=reason)
    return replayed


def repost_missing_mapping(mapping: Mapping, reason: str) -> int:
    """After a mapping was added: retry the postings parked for want of it on its connection."""
    if not mapping.value:
        return 0
    parked = Posting.objects.filter(
        connection_id=mapping.connection_id, state=PostingState.PARKED, error_code=f"missing_{mapping.kind}_mapping"
    ).values_list("pk", flat=True)
    count = 0
    for posting_id in parked:
        try:
            posting_services.retry_posting(posting_id, actor=audit.SYSTEM, reason=reason)
            count += 1
        except ActionRefused:
            continue  # settled meanwhile
    return count
