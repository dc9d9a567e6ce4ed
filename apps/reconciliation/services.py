"""Reconciliation runs: requested (schedule, admin, ``manage.py reconcile``), executed, healed.

``execute_run`` reads the three sides (``sides.py``), compares them (``compare.py``), stores the
totals and the differences, then, when the run heals, acts on each difference:

- a document the ERP lacks and the hub never planned is planned now, through the planner, so its
  postings get their original idempotency keys (planning again finds the same rows: a difference
  is posted once however many runs see it);
- a status the ERP has not followed (voided or paid in billing, open in the ERP) is turned into the
  postings that fix it (the void, the payment, the write-off), by planning the document again;
- a document still being posted is left to the pipeline; one whose posting is parked or dead is
  left to the exception case it already has; one a person decided not to post is left alone;
- everything else (missing in the ledger, duplicates, amounts, currencies, an ERP changed by hand,
  a document the hub posted that the ERP no longer lists) opens an exception case for finance,
  one per document and connection, updated by later runs and resolved by the first run that no
  longer finds the difference.
"""

from __future__ import annotations

import logging
import time as clock
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from celery import current_app
from django.db import IntegrityError, transaction
from django.db.models import Count, Max, Q
from django.utils import timezone

from apps.console import catalogue
from apps.console import services as console
from apps.console.models import CaseStatus, ExceptionCase
from apps.core import audit
from apps.core.money import CurrencyError, normalize_currency
from apps.ledger.models import CreditMemo, Invoice, LegalEntity, PaymentApplication
from apps.posting import planner
from apps.posting.models import EXCEPTION_STATES, ErrorCategory, Operation, Posting, PostingState
from apps.reconciliation import compare, sides
from apps.reconciliation.models import (
    ACTIVE_STATUSES,
    Difference,
    DifferenceKind,
    DocumentType,
    HealAction,
    ReconciliationRun,
    RunStatus,
    RunTotal,
    Side,
    Trigger,
)
from apps.routing.models import ERPConnection
from apps.routing.services import NoRoute
from apps.sources.models import BillingSource

log = logging.getLogger(__name__)

RUN_TASK = "reconciliation.run"
# A queued run whose message was lost, or a running one whose worker died, stops blocking its
# scope after this long.
STALE_AFTER = timedelta(hours=2)
CASE_CODE_PREFIX = "reconciliation_"
IN_PROGRESS = (PostingState.QUEUED, PostingState.WAITING, PostingState.IN_FLIGHT, PostingState.RETRY_SCHEDULED)
BATCH = 2000
SCOPE_COLUMNS = ("connection_id", "legal_entity_id", "currency", "period_start", "period_end")


class RunRefused(ValueError):
    """The run cannot be started; the message says why."""


# -- requesting ------------------------------------------------------------------------------


def request_run(
    *,
    connection: ERPConnection,
    legal_entity: LegalEntity,
    currency: str,
    period_start: date,
    period_end: date,
    trigger: str,
    actor: str,
    heal: bool = True,
) -> ReconciliationRun:
    """A queued run of one scope. Refused while another run of the same scope is queued or running."""
    try:
        currency = normalize_currency(currency)
    except CurrencyError as exc:
        raise RunRefused(str(exc)) from exc
    if period_end < period_start:
        raise RunRefused("The period ends before it starts.")
    scope = {
        "connection": connection,
        "legal_entity": legal_entity,
        "currency": currency,
        "period_start": period_start,
        "period_end": period_end,
    }
    _expire_stale(scope)
    try:
        with transaction.atomic():
            run = ReconciliationRun.objects.create(**scope, trigger=trigger, requested_by=actor, heal=heal)
    except IntegrityError as exc:
        active = ReconciliationRun.objects.filter(**scope, status__in=ACTIVE_STATUSES).first()
        raise RunRefused(
            f"A reconciliation of {active.scope_label if active else 'this scope'} is already "
            f"{active.get_status_display().lower() if active else 'running'} (run {active.pk if active else '?'})."
        ) from exc
    audit.record(
        "reconciliation.requested",
        run,
        actor=actor,
        after={"scope": run.scope_label, "trigger": trigger, "heal": heal},
    )
    return run


def _expire_stale(scope: dict[str, object]) -> None:
    cutoff = timezone.now() - STALE_AFTER
    stale = ReconciliationRun.objects.filter(**scope).filter(
        Q(status=RunStatus.QUEUED, queued_at__lt=cutoff) | Q(status=RunStatus.RUNNING, started_at__lt=cutoff)
    )
    for run in stale:
        ReconciliationRun.objects.filter(pk=run.pk, status=run.status).update(
            status=RunStatus.FAILED, finished_at=timezone.now(), error=f"abandoned while {run.status}"
        )


def send_run(run_id: int) -> bool:
    try:
        current_app.send_task(RUN_TASK, args=[run_id])
    except Exception as exc:  # noqa: BLE001 - any broker failure: the run is marked, not lost silently
        ReconciliationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
            status=RunStatus.FAILED, finished_at=timezone.now(), error=f"could not be queued: {exc}"
        )
        log.warning("reconciliation run not queued: broker unavailable", extra={"run": run_id})
        return False
    return True


def start_run(**scope: object) -> ReconciliationRun:
    """Request a run and hand it to a worker once the request is committed."""
    run = request_run(**scope)  # type: ignore[arg-type]
    transaction.on_commit(lambda: send_run(run.pk))
    return run


def month_of(day: date) -> tuple[date, date]:
    start = day.replace(day=1)
    following = (start + timedelta(days=32)).replace(day=1)
    return start, following - timedelta(days=1)


def scheduled_scopes(today: date) -> list[dict[str, object]]:
    """This month and the last, for every connection, legal entity and currency that has invoices
    planned to an active ERP connection in them."""
    scopes = []
    this_month = month_of(today)
    for period_start, period_end in (month_of(this_month[0] - timedelta(days=1)), this_month):
        combinations = (
            Posting.objects.filter(
                operation=Operation.POST_INVOICE,
                connection__active=True,
                invoice__invoice_date__range=(period_start, period_end),
                invoice__legal_entity__isnull=False,
            )
            .order_by()
            .values_list("connection_id", "invoice__legal_entity_id", "invoice__currency")
            .distinct()
        )
        for connection_id, legal_entity_id, currency in combinations:
            scopes.append(
                {
                    "connection": ERPConnection.objects.get(pk=connection_id),
                    "legal_entity": LegalEntity.objects.get(pk=legal_entity_id),
                    "currency": currency,
                    "period_start": period_start,
                    "period_end": period_end,
                }
            )
    return scopes


def start_scheduled(today: date | None = None) -> list[int]:
    started = []
    for scope in scheduled_scopes(today or timezone.localdate()):
        try:
            run = request_run(**scope, trigger=Trigger.SCHEDULE, actor=audit.SYSTEM)  # type: ignore[arg-type]
        except RunRefused as exc:
            log.info("scheduled reconciliation skipped: %s", exc)
            continue
        started.append(run.pk)
    for run_id in started:
        send_run(run_id)
    return started


# -- executing -------------------------------------------------------------------------------


def execute_run(run_id: int) -> ReconciliationRun:
    """Claim a queued run and carry it out. A run that fails is marked failed with the reason."""
    claimed = ReconciliationRun.objects.filter(pk=run_id, status=RunStatus.QUEUED).update(
        status=RunStatus.RUNNING, started_at=timezone.now()
    )
    run = ReconciliationRun.objects.select_related("connection", "legal_entity").get(pk=run_id)
    if not claimed:
        log.info("reconciliation run not claimable", extra={"run": run_id, "status": run.status})
        return run
    try:
        _carry_out(run)
    except Exception as exc:  # a run records why it failed instead of vanishing
        log.exception("reconciliation run failed", extra={"run": run_id})
        ReconciliationRun.objects.filter(pk=run_id).update(
            status=RunStatus.FAILED, finished_at=timezone.now(), error=f"{type(exc).__name__}: {exc}"[:2000]
        )
    run.refresh_from_db()
    return run


@dataclass
class _Phase:
    timings: dict[str, float]

    def __call__(self, name: str, started: float) -> float:
        now = clock.perf_counter()
        self.timings[name] = round(now - started, 3)
        return now


def _carry_out(run: ReconciliationRun) -> None:
    timings: dict[str, float] = {}
    phase = _Phase(timings)
    started = clock.perf_counter()
    scope = sides.Scope(run.connection, run.legal_entity, run.currency, run.period_start, run.period_end)
    sources = list(BillingSource.objects.filter(legal_entity=run.legal_entity).order_by("name"))
    ledger = sides.load_ledger(scope)
    mark = phase("ledger", started)
    billing = sides.load_billing(scope, sources)
    mark = phase("billing", mark)
    erp = sides.load_erp(scope)
    mark = phase("erp", mark)
    outcome = compare.compare(
        compare.Sides(
            ledger=ledger.documents,
            billing=billing.documents,
            erp=erp.documents,
            superseded=ledger.superseded,
            billing_from_ledger=billing.from_ledger,
            sources=frozenset(source.name for source in sources),
            erp_read=erp.read,
        ),
        period_start=run.period_start,
        period_end=run.period_end,
        currency=run.currency,
        known_in_ledger=sides.known_in_ledger,
    )
    mark = phase("compare", mark)
    differences = _store(run, outcome, billing, erp)
    mark = phase("store", mark)
    if run.heal:
        _heal(run, differences)
        _resolve_agreed_cases(run, differences)
    phase("heal", mark)
    timings["total"] = round(clock.perf_counter() - started, 3)
    replanned = sum(1 for d in differences if d.heal_action == HealAction.REPLANNED)
    cases = sum(1 for d in differences if d.case_id)
    ReconciliationRun.objects.filter(pk=run.pk).update(
        status=RunStatus.COMPLETED,
        finished_at=timezone.now(),
        replanned_count=replanned,
        case_count=cases,
        timings=timings,
    )
    audit.record(
        "reconciliation.completed",
        run,
        after={
            "differences": len(differences),
            "replanned": replanned,
            "cases": cases,
            "documents": outcome.compared,
        },
    )
    log.info(
        "reconciliation run completed",
        extra={"run": run.pk, "differences": len(differences), "documents": outcome.compared, **timings},
    )


def _store(
    run: ReconciliationRun, outcome: compare.Outcome, billing: sides.BillingSide, erp: sides.ErpSide
) -> list[Difference]:
    name = run.connection.name
    rows = []
    for found in outcome.found:
        bill, ledger = found.billing, found.ledger
        first = found.erp[0] if found.erp else None
        rows.append(
            Difference(
                run=run,
                kind=found.kind,
                document_type=found.document_type,
                source=found.source,
                source_id=found.source_id,
                external_ref=found.external_ref,
                document_date=found.document_date,
                currency=found.currency,
                billing_amount_minor=bill.amount_minor if bill else None,
                ledger_amount_minor=ledger.amount_minor if ledger else None,
                erp_amount_minor=first.amount_minor if first else None,
                billing_currency=bill.currency if bill else "",
                erp_currency=first.currency if first else "",
                billing_status=bill.status if bill else "",
                ledger_status=ledger.status if ledger else "",
                erp_status=first.status if first else "",
                erp_documents=[document.as_dict() for document in found.erp],
                description=compare.describe(found, name),
                invoice_id=ledger.invoice_id if ledger else None,
                credit_memo_id=ledger.credit_memo_id if ledger else None,
                payment_application_id=ledger.application_id if ledger else None,
                status_reason=found.status_case,
            )
        )
    notes = [*billing.notes, erp.note]
    with transaction.atomic():
        Difference.objects.bulk_create(rows, batch_size=BATCH)
        RunTotal.objects.bulk_create(
            [
                RunTotal(
                    run=run,
                    side=side,
                    document_type=document_type,
                    count=outcome.totals.get((side, document_type), [0, 0])[0],
                    amount_minor=outcome.totals.get((side, document_type), [0, 0])[1],
                )
                for side in Side.values
                for document_type in DocumentType.values
            ]
        )
        ReconciliationRun.objects.filter(pk=run.pk).update(
            billing_basis=billing.basis,
            erp_read=erp.read,
            notes="\n".join(note for note in notes if note),
            documents_compared=outcome.compared,
            difference_count=len(rows),
        )
    if not rows:
        return []
    return list(Difference.objects.filter(run=run).order_by("pk"))


# -- healing ---------------------------------------------------------------------------------

_DOCUMENT_OPERATION = {
    DocumentType.INVOICE: Operation.POST_INVOICE,
    DocumentType.CREDIT_MEMO: Operation.POST_CREDIT_MEMO,
    DocumentType.PAYMENT: Operation.APPLY_PAYMENT,
    DocumentType.REFUND: Operation.REFUND_CREDIT_MEMO,
    DocumentType.WRITE_OFF: Operation.WRITE_OFF,
}


def _document_postings(run: ReconciliationRun, differences: list[Difference]) -> dict[int, Posting]:
    """Per difference, the posting that carries its document (or, for a void the ERP has not
    followed, the void) to the run's connection: the latest revision where there are several."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for difference in differences:
        for operation, field, value in _posting_lookups(difference):
            wanted.setdefault((operation, field), set()).add(value)
    found: dict[tuple[str, str, int], Posting] = {}
    for (operation, field), values in wanted.items():
        for posting in Posting.objects.filter(
            connection=run.connection, operation=operation, **{f"{field}__in": values}
        ).order_by("revision", "pk"):
            found[(operation, field, getattr(posting, field))] = posting
    result = {}
    for difference in differences:
        for operation, field, value in _posting_lookups(difference):
            posting = found.get((operation, field, value))
            if posting is not None:
                result[difference.pk] = posting
                break
    return result


def _posting_lookups(difference: Difference) -> list[tuple[str, str, int]]:
    voided = difference.kind == DifferenceKind.STATUS_MISMATCH and difference.ledger_status == "void"
    if difference.document_type == DocumentType.PAYMENT and difference.payment_application_id:
        return [(Operation.APPLY_PAYMENT, "payment_application_id", difference.payment_application_id)]
    if difference.document_type in (DocumentType.CREDIT_MEMO, DocumentType.REFUND) and difference.credit_memo_id:
        operation = _DOCUMENT_OPERATION[difference.document_type]
        if voided:
            return [(Operation.VOID_CREDIT_MEMO, "credit_memo_id", difference.credit_memo_id)]
        return [(operation, "credit_memo_id", difference.credit_memo_id)]
    if difference.invoice_id:
        if voided:
            return [(Operation.VOID_INVOICE, "invoice_id", difference.invoice_id)]
        return [(_DOCUMENT_OPERATION[difference.document_type], "invoice_id", difference.invoice_id)]
    return []


def _heal(run: ReconciliationRun, differences: list[Difference]) -> None:
    postings = _document_postings(run, differences)
    replanned_roots: dict[tuple[str, int], list[int]] = {}
    for difference in differences:
        posting = postings.get(difference.pk)
        difference.posting = posting
        action, detail, case = _decide(run, difference, posting, replanned_roots)
        difference.heal_action = action
        difference.heal_detail = detail
        if action == HealAction.CASE_OPENED:
            case = _open_case(run, difference)
        difference.case = case
        Difference.objects.filter(pk=difference.pk).update(
            posting=posting,
            heal_action=action,
            heal_detail=detail,
            healing_postings=difference.healing_postings,
            case=case,
        )


def _decide(
    run: ReconciliationRun,
    difference: Difference,
    posting: Posting | None,
    replanned_roots: dict[tuple[str, int], list[int]],
) -> tuple[str, str, ExceptionCase | None]:
    """What to do about one difference: (heal action, why, the case already holding it)."""
    status_case = difference.status_reason
    healable = difference.kind == DifferenceKind.MISSING_IN_ERP or (
        difference.kind == DifferenceKind.STATUS_MISMATCH
        and status_case in (compare.STATUS_ERP_BEHIND, compare.STATUS_SUPERSEDED_OPEN)
    )
    if not healable:
        return HealAction.CASE_OPENED, _not_safe(difference, posting), None
    if posting is not None and posting.state in EXCEPTION_STATES:
        what = f"Its {posting.get_operation_display().lower()} posting is {posting.state}."
        return HealAction.EXISTING_CASE, what, _case_of(posting)
    if posting is not None and posting.state in IN_PROGRESS:
        return (
            HealAction.IN_PROGRESS,
            f"Its {posting.get_operation_display().lower()} posting is {posting.get_state_display().lower()}.",
            None,
        )
    if posting is not None and posting.state == PostingState.SKIPPED:
        return HealAction.DECIDED, "A person skipped its posting: the hub does not post it.", None
    if difference.kind == DifferenceKind.MISSING_IN_ERP and posting is not None:
        return HealAction.CASE_OPENED, _not_safe(difference, posting), None  # posted, yet the ERP lacks it
    planned = _replan(run, difference, replanned_roots)
    if planned is None:
        return HealAction.CASE_OPENED, "No routing rule takes the document any more: nothing could be planned.", None
    if planned:
        difference.healing_postings = planned
        return (
            HealAction.REPLANNED,
            f"Planned {len(planned)} posting(s) with their original idempotency keys: "
            + ", ".join(f"#{pk}" for pk in planned),
            None,
        )
    related = _related_postings(run, difference)
    if any(p.state in IN_PROGRESS for p in related):
        return HealAction.IN_PROGRESS, "The postings that fix it are on their way.", None
    failing = next((p for p in related if p.state in EXCEPTION_STATES), None)
    if failing is not None:
        return HealAction.EXISTING_CASE, f"Posting #{failing.pk} that fixes it is {failing.state}.", _case_of(failing)
    return HealAction.CASE_OPENED, _not_safe(difference, posting), None


def _replan(
    run: ReconciliationRun, difference: Difference, replanned_roots: dict[tuple[str, int], list[int]]
) -> list[int] | None:
    """Plan the document's root again through the planner: rows that exist are found by their
    keys, missing ones are created with the keys they always had. Returns the new postings on
    the run's connection (None: no route)."""
    root = _root(difference)
    if root is None:
        return []
    if root in replanned_roots:
        return []  # planned for another difference of the same document in this run
    before = Posting.objects.aggregate(top=Max("pk"))["top"] or 0
    kind, pk = root
    try:
        with transaction.atomic():
            if kind == "invoice":
                planned = planner.plan_invoice(Invoice.objects.get(pk=pk))
            elif kind == "payment":
                planned = planner.plan_payment(PaymentApplication.objects.get(pk=pk).payment)
            else:
                planned = planner.plan_credit_memo(CreditMemo.objects.get(pk=pk))
            new = sorted(
                (p for p in planned if p.pk > before and p.connection_id == run.connection_id), key=lambda p: p.pk
            )
            for posting in new:
                audit.record(
                    "posting.replanned",
                    posting,
                    reason=f"reconciliation run {run.pk}: {difference.get_kind_display().lower()}",
                    after={"difference": difference.pk, "idempotency_key": posting.idempotency_key},
                )
    except NoRoute:
        return None
    replanned_roots[root] = [p.pk for p in new]
    return replanned_roots[root]


def _root(difference: Difference) -> tuple[str, int] | None:
    if difference.document_type == DocumentType.PAYMENT and difference.payment_application_id:
        return ("payment", difference.payment_application_id)
    if difference.document_type in (DocumentType.CREDIT_MEMO, DocumentType.REFUND) and difference.credit_memo_id:
        return ("credit_memo", difference.credit_memo_id)
    if difference.invoice_id:
        return ("invoice", difference.invoice_id)
    return None


def _related_postings(run: ReconciliationRun, difference: Difference) -> list[Posting]:
    if not difference.invoice_id:
        return []
    applications = PaymentApplication.objects.filter(invoice_id=difference.invoice_id).values_list("pk", flat=True)
    return list(
        Posting.objects.filter(connection=run.connection).filter(
            Q(invoice_id=difference.invoice_id) | Q(payment_application_id__in=list(applications))
        )
    )


def _case_of(posting: Posting) -> ExceptionCase | None:
    root = console.root_of(posting)
    return ExceptionCase.objects.filter(
        connection_id=posting.connection_id,
        root_kind=root.kind,
        source=root.source,
        source_id=root.source_id,
        status=CaseStatus.OPEN,
    ).first()


_FIXES = {
    DifferenceKind.MISSING_IN_LEDGER: "Replay the billing event (or backfill the document) so the hub's ledger "
    "holds it; the hub then posts what the ERP lacks.",
    DifferenceKind.DUPLICATE_IN_ERP: "Cancel the extra document in the ERP, keeping the one the hub recorded, "
    "then run the reconciliation again.",
    DifferenceKind.CURRENCY_MISMATCH: "Correct the document where its currency is wrong (a credit note and a new "
    "document in the right currency), then run the reconciliation again.",
    DifferenceKind.AMOUNT_MISMATCH: "Issue a credit note in billing, or correct the ERP document, so the amounts "
    "agree; then run the reconciliation again.",
}


def _not_safe(difference: Difference, posting: Posting | None) -> str:
    """Why a person has to act, and what fixes it."""
    if difference.kind in _FIXES:
        return _FIXES[difference.kind]  # type: ignore[index]
    if difference.kind == DifferenceKind.MISSING_IN_ERP and posting is not None and posting.state == "posted":
        return (
            f"The hub recorded it as posted (ERP id {posting.erp_id}, {posting.erp_number or 'no number'}) but the "
            "ERP no longer lists it in the period: check whether it was deleted, re-dated or moved in the ERP, "
            "then correct the ERP or re-enter the document and link it."
        )
    status_case = difference.status_reason
    if status_case == compare.STATUS_LEDGER_BEHIND:
        return "Billing changed the document and the hub never heard of it: replay its billing events."
    if status_case == compare.STATUS_ERP_DIFFERS:
        return (
            "The ERP shows a state billing never had (changed by hand in the ERP?): reverse the change in the ERP, "
            "or record it in billing."
        )
    return (
        "The hub has posted everything billing recorded for it, yet the ERP still shows it open (a payment "
        "unreconciled by hand?): settle it in the ERP."
    )


def _open_case(run: ReconciliationRun, difference: Difference) -> ExceptionCase:
    """One open case per document and connection, updated by later runs."""
    values = {
        "category": ErrorCategory.BUSINESS,
        "kind": f"Reconciliation: {difference.get_kind_display().lower()}",
        "code": f"{CASE_CODE_PREFIX}{difference.kind}",
        "message": f"{difference.description} {difference.heal_detail}",
        "technical_detail": (
            f"Reconciliation run {run.pk} ({run.scope_label}), difference {difference.pk}: "
            f"{difference.get_document_type_display().lower()} {difference.external_ref}; ERP documents "
            f"{difference.erp_documents}."
        ),
        "owner_group": catalogue.FINANCE,
        "last_failure_at": timezone.now(),
        "failing_posting": difference.posting,
    }
    with transaction.atomic():
        case = (
            ExceptionCase.objects.select_for_update()
            .filter(
                connection=run.connection,
                root_kind=ExceptionCase.ROOT_RECONCILIATION,
                source=difference.source,
                source_id=difference.source_id,
                status=CaseStatus.OPEN,
            )
            .first()
        )
        if case is not None:
            for field, value in values.items():
                setattr(case, field, value)
            case.save()
            audit.record("case.updated", case, after={"code": case.code, "reconciliation_run": run.pk})
            return case
        invoice = difference.invoice
        case = ExceptionCase.objects.create(
            connection=run.connection,
            root_kind=ExceptionCase.ROOT_RECONCILIATION,
            source=difference.source,
            source_id=difference.source_id,
            invoice=invoice,
            legal_entity=run.legal_entity,
            correlation_id=invoice.correlation_id if invoice else "",
            **values,
        )
        facts = {"code": case.code, "kind": case.kind, "reconciliation_difference": difference.pk}
        audit.record("case.opened", case, after=facts)
        from apps.console import notifications

        case_id = case.pk
        transaction.on_commit(lambda: notifications.case_opened(case_id))
    return case


def _resolve_agreed_cases(run: ReconciliationRun, differences: list[Difference]) -> None:
    """The reconciliation cases an earlier run of this scope opened whose difference this run no
    longer finds: billing, the ledger and the ERP agree on the document now."""
    still = {(d.source, d.source_id) for d in differences}
    earlier = (
        Difference.objects.filter(
            case__status=CaseStatus.OPEN,
            case__root_kind=ExceptionCase.ROOT_RECONCILIATION,
            run__in=run.same_scope().exclude(pk=run.pk),
        )
        .order_by()
        .values_list("case_id", "source", "source_id")
        .distinct()
    )
    for case_id, source, source_id in earlier:
        if (source, source_id) in still:
            continue
        with transaction.atomic():
            resolved = ExceptionCase.objects.filter(pk=case_id, status=CaseStatus.OPEN).update(
                status=CaseStatus.RESOLVED,
                resolved_at=timezone.now(),
                resolved_by="reconciliation",
                resolution=f"Billing, ledger and ERP agree (reconciliation run {run.pk})",
            )
            if resolved:
                case = ExceptionCase.objects.get(pk=case_id)
                audit.record("case.resolved", case, actor="reconciliation", after={"reconciliation_run": run.pk})


# -- reading runs ----------------------------------------------------------------------------


def open_differences_by_connection() -> dict[str, int]:
    """How many differences the latest completed run of each scope left, per connection."""
    rows = Difference.objects.open().values("run__connection__name").annotate(n=Count("id"))
    return {row["run__connection__name"]: row["n"] for row in rows}


def open_differences_at(moments: list[datetime], connection: ERPConnection | None = None) -> list[int]:
    """How many differences were open at each moment: per scope, the count of its latest run
    completed by then, summed over scopes (the reconciliation backlog over time)."""
    if not moments:
        return []
    runs = ReconciliationRun.objects.filter(status=RunStatus.COMPLETED, finished_at__lte=max(moments))
    if connection is not None:
        runs = runs.filter(connection=connection)
    rows = list(runs.order_by("finished_at").values_list(*SCOPE_COLUMNS, "finished_at", "difference_count"))
    latest: dict[tuple[object, ...], int] = {}
    counts: dict[datetime, int] = {}
    applied = 0
    for moment in sorted(moments):
        while applied < len(rows) and rows[applied][5] <= moment:
            latest[rows[applied][:5]] = rows[applied][6]
            applied += 1
        counts[moment] = sum(latest.values())
    return [counts[moment] for moment in moments]


def trend(run: ReconciliationRun, limit: int = 60) -> dict[str, object]:
    """The differences of every completed run of the run's scope, oldest first, by kind."""
    runs = list(
        run.same_scope()
        .filter(status=RunStatus.COMPLETED)
        .order_by("-finished_at")
        .values_list("pk", "finished_at")[:limit]
    )[::-1]
    counts: dict[tuple[int, str], int] = {}
    for run_id, kind, count in _difference_counts([pk for pk, _ in runs]):
        counts[(run_id, kind)] = count
    return {
        "labels": [finished.strftime("%Y-%m-%d %H:%M") for _, finished in runs],
        "runs": [pk for pk, _ in runs],
        "datasets": [
            {"kind": kind, "label": label, "data": [counts.get((pk, kind), 0) for pk, _ in runs]}
            for kind, label in DifferenceKind.choices
        ],
    }


def _difference_counts(run_ids: Iterable[int]) -> list[tuple[int, str, int]]:
    return list(
        Difference.objects.filter(run_id__in=list(run_ids))
        .values("run_id", "kind")
        .annotate(n=Count("id"))
        .values_list("run_id", "kind", "n")
    )
