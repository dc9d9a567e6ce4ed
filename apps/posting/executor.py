"""Run one posting: claim it, call its connector, record the attempt, decide what comes next.

This is the one place that turns rows into connector documents and connector outcomes into
posting state. Every state change is a compare-and-set on (state, claim_token), so a worker that
lost its claim (a sweeper recovered the row after it was presumed dead) cannot overwrite what
the new owner wrote.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.connectors.base import ERPConnector
from apps.connectors.documents import PostResult
from apps.connectors.registry import get_connector
from apps.core import audit, config_cache
from apps.core.correlation import correlation_scope
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    ConnectorError,
    Throttled,
    TransientError,
    UncertainOutcome,
)
from apps.core.secrets import MissingSecret
from apps.flow import services as flow
from apps.flow.models import ConnectionFlow
from apps.observability import metrics
from apps.posting import dispatch, redating, signals
from apps.posting.documents import (
    credit_memo_document,
    customer_document,
    dispute_document,
    invoice_document,
    on_account_document,
    payment_document,
    refund_document,
    void_credit_memo_document,
    void_document,
    write_off_document,
    writeback_document,
)
from apps.posting.models import (
    CLAIMABLE_STATES,
    ErrorCategory,
    Operation,
    Posting,
    PostingAttempt,
    PostingState,
)
from apps.posting.planner import plan_writeback
from apps.routing.models import ERPConnection
from apps.routing.tokens import DatabaseTokenStore

log = logging.getLogger(__name__)
PACE_MAX_WAIT_SECONDS = 5.0
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class Claim:
    posting: Posting
    attempt: PostingAttempt
    token: str


def _hub(name: str) -> float:
    return settings.HUB[name]  # type: ignore[no-any-return]


def _fields(posting: Posting, **extra: object) -> dict[str, object]:
    """What every executor log line says about its posting (JSON keys / console key=value)."""
    return {
        "posting_id": posting.pk,
        "connection": posting.connection.name,
        "source": posting.source,
        "operation": posting.operation,
        **extra,
    }


def backoff_seconds(attempt_count: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, never sooner than the ERP's Retry-After."""
    ceiling = min(_hub("POSTING_BACKOFF_MAX_SECONDS"), _hub("POSTING_BACKOFF_BASE_SECONDS") * 2 ** (attempt_count - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    return max(delay, retry_after or 0.0)


def parent_state(posting: Posting) -> str | None:
    if not posting.depends_on_key:
        return None
    return Posting.objects.filter(idempotency_key=posting.depends_on_key).values_list("state", flat=True).first() or ""


def claim(
    posting_id: int, row: Posting | None = None, budget: ConnectionFlow | None = None, lease: str = ""
) -> Claim | None:
    """Take the row if it is ours to run now; otherwise say why not and return None.

    ``row`` and ``budget``: the posting and its connection's flow row when the caller has just
    read them (saves reading them again). ``lease``: the concurrency slot the run holds, kept on
    the row so the sweeper can give it back if this worker dies mid-call."""
    now = timezone.now()
    posting = row if row is not None else Posting.objects.select_related("connection").filter(pk=posting_id).first()
    if posting is None:
        log.warning("posting does not exist", extra={"posting_id": posting_id})
        return None
    if posting.state not in CLAIMABLE_STATES:
        log.info("posting not claimable, nothing to do", extra=_fields(posting, state=posting.state))
        return None
    if posting.state == PostingState.RETRY_SCHEDULED and posting.retry_at and posting.retry_at > now:
        log.info("retry not due yet", extra=_fields(posting, retry_at=posting.retry_at))
        return None
    if parent_state(posting) not in (None, PostingState.POSTED):
        _wait_for_parent(posting)
        return None
    hold = flow.admission(posting.connection, now, budget)
    if hold is not None:
        _hold(posting, hold)
        return None

    token = uuid.uuid4().hex
    with transaction.atomic():
        taken = {
            "state": PostingState.IN_FLIGHT,
            "claim_token": token,
            "claimed_at": now,
            "attempt_count": posting.attempt_count + 1,
            "updated_at": now,
            "slot_lease": lease,
        }
        # Compare-and-set on what we read: a row changed since (by anyone) is not ours to run.
        won = Posting.objects.filter(pk=posting_id, state=posting.state, attempt_count=posting.attempt_count).update(
            **taken
        )
        if not won:
            log.info("another worker claimed the posting first", extra=_fields(posting))
            return None
        for field, value in taken.items():
            setattr(posting, field, value)
        # Written before the outside call: if this worker dies mid-call the trace stays.
        attempt = PostingAttempt.objects.create(
            posting=posting,
            number=posting.attempt_count,
            worker=WORKER_NAME,
            correlation_id=posting.correlation_id,
        )
    return Claim(posting, attempt, token)


def _hold(posting: Posting, hold: flow.Hold) -> None:
    """Wait for the connection (paused, maintenance, circuit open, no free slot) without an attempt."""
    moved = Posting.objects.filter(pk=posting.pk, state__in=CLAIMABLE_STATES).update(
        state=PostingState.RETRY_SCHEDULED,
        retry_at=hold.until,
        enqueued_at=None,
        error_category=ErrorCategory.TECHNICAL,
        error_code=hold.code,
        technical_detail=hold.reason,
        updated_at=timezone.now(),
    )
    if not moved:
        return
    metrics.posting_held(posting, hold.code)
    # A connection-level hold (paused, maintenance, circuit open) sends no message per posting: the
    # service that ends it releases every held posting oldest first. An open circuit gets one
    # message, at its probe time; the sweeper sends another if that one is lost. A countdown per
    # held posting would flood the queue at every probe time.
    if hold.code in flow.CONNECTION_HOLDS and not (
        hold.code == flow.HOLD_CIRCUIT and flow.claim_probe(posting.connection, hold.until)
    ):
        log.info("posting held", extra=_fields(posting, outcome=hold.code, until=hold.until.isoformat()))
        return
    delay = (hold.until - timezone.now()).total_seconds()
    if delay <= _hub("MAX_COUNTDOWN_SECONDS"):
        dispatch.send_execute(posting.pk, correlation_id=posting.correlation_id, countdown=max(delay, 0))
    log.info("posting held", extra=_fields(posting, outcome=hold.code, until=hold.until.isoformat()))


def _wait_for_parent(posting: Posting) -> None:
    moved = Posting.objects.filter(pk=posting.pk, state__in=CLAIMABLE_STATES).update(
        state=PostingState.WAITING, updated_at=timezone.now()
    )
    if moved:
        log.info("posting waits for its parent", extra=_fields(posting, outcome=PostingState.WAITING))
        # The parent may have been posted between our read and our write: re-check so the child
        # is never left waiting on a parent that will not release it again.
        if parent_state(posting) == PostingState.POSTED:
            release_waiting(posting.depends_on_key)


def release_waiting(parent_key: str) -> list[int]:
    ids = list(
        Posting.objects.filter(depends_on_key=parent_key, state=PostingState.WAITING).values_list("pk", flat=True)
    )
    released = []
    for posting_id in ids:
        if Posting.objects.filter(pk=posting_id, state=PostingState.WAITING).update(
            state=PostingState.QUEUED, updated_at=timezone.now()
        ):
            released.append(posting_id)
            transaction.on_commit(lambda pid=posting_id: dispatch.send_execute(pid))
    return released


# Operation → (the posting's record the document is built from, the builder, the connector method).
_OPERATIONS: dict[str, tuple[str, Callable[[Posting, Any], Any], str]] = {
    Operation.ENSURE_CUSTOMER: ("customer", lambda p, c: customer_document(c, p.connection), "ensure_customer"),
    Operation.POST_INVOICE: ("invoice", invoice_document, "post_invoice"),
    Operation.APPLY_PAYMENT: ("payment_application", payment_document, "apply_payment"),
    Operation.POST_CREDIT_MEMO: ("credit_memo", credit_memo_document, "post_credit_memo"),
    Operation.REFUND_CREDIT_MEMO: ("credit_memo", refund_document, "refund_credit_memo"),
    Operation.VOID_CREDIT_MEMO: ("credit_memo", void_credit_memo_document, "void_invoice"),
    Operation.VOID_INVOICE: ("invoice", void_document, "void_invoice"),
    Operation.WRITE_OFF: ("invoice", write_off_document, "write_off"),
    Operation.WITHDRAW_DISPUTED_FUNDS: ("dispute", dispute_document, "move_disputed_funds"),
    Operation.REINSTATE_DISPUTED_FUNDS: ("dispute", dispute_document, "move_disputed_funds"),
    Operation.LOSE_DISPUTE: ("dispute", dispute_document, "move_disputed_funds"),
    Operation.RECEIVE_ON_ACCOUNT: ("payment", on_account_document, "receive_on_account"),
    Operation.APPLY_CREDIT: ("payment_application", payment_document, "apply_credit"),
    Operation.WRITE_BACK: ("invoice", writeback_document, "write_back"),
}


def _call(connector: ERPConnector, posting: Posting) -> PostResult:
    if posting.operation not in _OPERATIONS:
        raise ConfigurationError(f"unknown operation {posting.operation}")
    record_field, build, method = _OPERATIONS[posting.operation]
    record = getattr(posting, record_field)
    if record is None:
        raise ConfigurationError(f"posting {posting.pk} ({posting.operation}) has no {record_field}")
    return redating.send(connector, posting, build(posting, record), getattr(connector, method))


def _connector_for(posting: Posting) -> ERPConnector:
    try:
        resolved = posting.connection.resolved_settings()
    except MissingSecret as exc:
        raise ConfigurationError(str(exc)) from exc
    connector = get_connector(posting.connection.kind, resolved)
    connector.token_store = DatabaseTokenStore(posting.connection_id)
    return connector


def execute_posting(posting_id: int) -> str:
    """Returns the state the posting ended in (or 'skipped' when there was nothing to do).

    The run holds one of its connection's concurrency slots from before the claim to the end, so
    a slow ERP occupies at most its cap of worker processes; with no slot free the posting is
    held for a moment and sent again, without using an attempt. Configuration is read under one
    configuration generation for the whole run (apps/core/config_cache.py)."""
    with config_cache.pinned():
        return _execute_posting(posting_id)


def _execute_posting(posting_id: int) -> str:
    row = (
        Posting.objects.select_related(
            "connection",
            "customer",
            "invoice__customer",
            "invoice__legal_entity",
            "payment_application__payment",
            "credit_memo",
            "dispute__payment",
            "dispute__legal_entity",
            "payment__customer__legal_entity",
        )
        .filter(pk=posting_id)
        .first()
    )
    if row is None:
        log.warning("posting does not exist", extra={"posting_id": posting_id})
        return "skipped"
    budget = flow.flow_for(row.connection)  # read once for the whole run
    slots = flow.slots(row.connection, budget)
    lease = slots.try_acquire()
    if lease is None:
        due = row.state == PostingState.QUEUED or (
            row.state == PostingState.RETRY_SCHEDULED and (row.retry_at is None or row.retry_at <= timezone.now())
        )
        if due:
            _hold(row, flow.busy_hold(row.connection, budget))
        return "skipped"
    try:
        claimed = claim(posting_id, row, budget, lease)
        if claimed is None:
            return "skipped"
        with correlation_scope(row.correlation_id):
            return _run(claimed, budget)
    finally:
        slots.release(lease)


def _pacer(connection: ERPConnection, budget: ConnectionFlow) -> Callable[[], None]:
    """Called before every request to the ERP: take a slot in the connection's request budget."""
    limiter = flow.window(connection, budget)

    def pace() -> None:
        started = time.monotonic()
        wait = limiter.acquire(max_wait=PACE_MAX_WAIT_SECONDS)
        metrics.rate_limit_wait(connection.name, metrics.REQUEST_BUDGET, time.monotonic() - started, gave_up=bool(wait))
        if wait:
            raise Throttled(f"the request budget of {connection.name} is spent for {wait:.1f}s", retry_after=wait)

    return pace


def _run(claimed: Claim, budget: ConnectionFlow) -> str:
    posting = claimed.posting
    connection = posting.connection
    try:
        connector = _connector_for(posting)
        connector.pacer = _pacer(connection, budget)
        if posting.verify_before_retry:
            try:
                found = connector.find_document(posting.operation, posting.external_ref)
            except NotImplementedError:
                # This ERP cannot be searched by our reference: a person checks, the hub never guesses.
                return _park(
                    claimed,
                    ConnectorError(f"{connection.kind} cannot look up {posting.operation} by external reference"),
                    ErrorCategory.TECHNICAL,
                    "cannot_verify",
                    "The ERP may or may not hold this document (its last call got no answer) and it cannot be "
                    "searched by the hub's reference. Check the ERP: link the document if it is there, retry if not.",
                )
            if found is not None:
                flow.record_success(connection, budget)
                return _posted(claimed, found, PostingAttempt.Outcome.FOUND)
        result = _call(connector, posting)
    except Throttled as exc:
        return _retry(claimed, exc, PostingAttempt.Outcome.TRANSIENT, retry_after=exc.retry_after, free=True)
    except UncertainOutcome as exc:
        flow.record_failure(connection, exc.technical_detail())
        return _retry(claimed, exc, PostingAttempt.Outcome.UNCERTAIN, verify=True)
    except TransientError as exc:
        if exc.status != 429:  # throttling is the ERP working as designed, not failing
            flow.record_failure(connection, exc.technical_detail())
        return _retry(claimed, exc, PostingAttempt.Outcome.TRANSIENT, retry_after=exc.retry_after)
    except BusinessRuleError as exc:
        flow.record_success(connection)
        return _park(claimed, exc, ErrorCategory.BUSINESS, exc.code, exc.finance_message)
    except AuthenticationError as exc:
        flow.record_failure(connection, exc.technical_detail(), authentication=True)
        return _held_by_circuit(claimed, exc)
    except ConfigurationError as exc:
        return _park(claimed, exc, ErrorCategory.TECHNICAL, exc.code, exc.finance_message)
    except LookupError as exc:
        # The parent's ERP id is missing although the parent was posted when we claimed: a
        # manual change in between. Not a business problem; retry later.
        return _retry(claimed, ConnectorError(str(exc)), PostingAttempt.Outcome.ERROR)
    except Exception as exc:
        log.exception("unexpected error while posting", extra=_fields(posting))
        return _retry(
            claimed, ConnectorError(f"{type(exc).__name__}: {exc}"), PostingAttempt.Outcome.ERROR, verify=True
        )
    flow.record_success(connection, budget)
    return _posted(claimed, result, PostingAttempt.Outcome.POSTED)


def _held_by_circuit(claimed: Claim, exc: ConnectorError) -> str:
    """Credentials were refused: the circuit is open; this posting waits with the others instead
    of being parked one by one, and the attempt it used does not count against its cap."""
    posting = claimed.posting
    hold = flow.admission(posting.connection) or flow.Hold(
        flow.HOLD_CIRCUIT, exc.technical_detail(), timezone.now() + timedelta(seconds=60)
    )
    with transaction.atomic():
        _finish_attempt(
            claimed, PostingAttempt.Outcome.CONFIGURATION, code="authentication", detail=exc.technical_detail()
        )
        _transition(
            claimed,
            state=PostingState.RETRY_SCHEDULED,
            retry_at=hold.until,
            enqueued_at=None,
            attempt_budget_start=posting.attempt_budget_start + 1,
            error_category=ErrorCategory.TECHNICAL,
            error_code=flow.HOLD_CIRCUIT,
            technical_detail=f"{hold.reason}\n{exc.technical_detail()}",
        )
        if flow.claim_probe(posting.connection, hold.until):
            delay = max((hold.until - timezone.now()).total_seconds(), 0)
            dispatch.enqueue_on_commit(posting, countdown=min(delay, _hub("MAX_COUNTDOWN_SECONDS")))
    metrics.posting_held(posting, flow.HOLD_CIRCUIT)
    log.info("posting held", extra=_fields(posting, outcome=flow.HOLD_CIRCUIT, until=hold.until.isoformat()))
    return PostingState.RETRY_SCHEDULED


def _finish_attempt(claimed: Claim, outcome: str, *, erp_id: str = "", code: str = "", detail: str = "") -> None:
    PostingAttempt.objects.filter(pk=claimed.attempt.pk).update(
        outcome=outcome, finished_at=timezone.now(), erp_id=erp_id, error_code=code, detail=detail[:10000]
    )


def _transition(claimed: Claim, **fields: object) -> bool:
    """Compare-and-set from IN_FLIGHT under our claim token."""
    fields.setdefault("updated_at", timezone.now())
    return bool(
        Posting.objects.filter(pk=claimed.posting.pk, state=PostingState.IN_FLIGHT, claim_token=claimed.token).update(
            **fields
        )
    )


def _posted(claimed: Claim, result: PostResult, outcome: str) -> str:
    posting = claimed.posting
    now = timezone.now()
    done = {
        "state": PostingState.POSTED,
        "erp_id": result.erp_id,
        "erp_number": result.erp_number,
        "posted_at": now,
        "verify_before_retry": False,
        "error_category": "",
        "error_code": "",
        "finance_message": "",
        "technical_detail": "",
        "error_params": {},
        "updated_at": now,
    }
    with transaction.atomic():
        _finish_attempt(claimed, outcome, erp_id=result.erp_id, detail=str(result.detail or ""))
        if not _transition(claimed, **done):
            log.warning("claim lost before recording the posting", extra=_fields(posting, outcome="lost_claim"))
            return "lost_claim"
        for field, value in done.items():  # what the row now holds, without reading it back
            setattr(posting, field, value)
        audit.record("posting.posted", posting, after={"erp_id": result.erp_id, "erp_number": result.erp_number})
        release_waiting(posting.idempotency_key)
        plan_writeback(posting)
        signals.settled.send(sender=Posting, posting=posting, actor=audit.SYSTEM)
    metrics.posting_finished(posting, outcome)
    log.info("posted", extra=_fields(posting, outcome=outcome, erp_id=result.erp_id))
    return PostingState.POSTED


def _retry(
    claimed: Claim,
    exc: ConnectorError,
    outcome: str,
    *,
    verify: bool = False,
    retry_after: float | None = None,
    free: bool = False,
) -> str:
    """``free``: nothing reached the ERP (the hub's own budget said wait); the attempt is not counted."""
    posting = claimed.posting
    detail = exc.technical_detail()
    max_attempts = int(_hub("POSTING_MAX_ATTEMPTS"))
    budget_start = posting.attempt_budget_start + (1 if free else 0)
    with transaction.atomic():
        _finish_attempt(claimed, outcome, code="throttled" if free else outcome, detail=detail)
        if posting.attempt_count - budget_start >= max_attempts:
            state = PostingState.DEAD
            moved = _transition(
                claimed,
                state=state,
                verify_before_retry=verify or posting.verify_before_retry,
                error_category=ErrorCategory.TECHNICAL,
                error_code="retries_exhausted",
                finance_message=(
                    f"The ERP could not be reached or did not confirm after {posting.attempt_count} attempts. "
                    "An integration engineer must check the connection; the posting can then be retried."
                ),
                technical_detail=detail,
                error_params={"last_outcome": outcome},
            )
            if moved:
                audit.record("posting.dead", posting, reason=detail[:500])
                posting.refresh_from_db()
                signals.needs_attention.send(sender=Posting, posting=posting)
            metrics.posting_finished(posting, PostingState.DEAD)
            log.info("dead", extra=_fields(posting, outcome=PostingState.DEAD, last_outcome=outcome))
            return state
        delay = backoff_seconds(posting.attempt_count, retry_after)
        retry_at = timezone.now() + timedelta(seconds=delay)
        moved = _transition(
            claimed,
            state=PostingState.RETRY_SCHEDULED,
            attempt_budget_start=budget_start,
            retry_at=retry_at,
            verify_before_retry=verify or posting.verify_before_retry,
            error_category=ErrorCategory.TECHNICAL,
            error_code=outcome,
            technical_detail=detail,
        )
        if moved and delay <= _hub("MAX_COUNTDOWN_SECONDS"):
            dispatch.enqueue_on_commit(posting, countdown=delay)
    metrics.posting_retried(posting, "throttled" if free else outcome)
    log.info("retry scheduled", extra=_fields(posting, outcome=outcome, retry_in_seconds=round(delay, 1)))
    return PostingState.RETRY_SCHEDULED


def _park(claimed: Claim, exc: ConnectorError, category: str, code: str, finance_message: str) -> str:
    posting = claimed.posting
    detail = exc.technical_detail()
    with transaction.atomic():
        _finish_attempt(
            claimed,
            PostingAttempt.Outcome.BUSINESS
            if category == ErrorCategory.BUSINESS
            else PostingAttempt.Outcome.CONFIGURATION,
            code=code,
            detail=detail,
        )
        if _transition(
            claimed,
            state=PostingState.PARKED,
            error_category=category,
            error_code=code,
            finance_message=finance_message,
            technical_detail=detail,
            error_params=dict(getattr(exc, "params", {}) or {}),
        ):
            audit.record("posting.parked", posting, after={"code": code}, reason=finance_message)
            posting.refresh_from_db()
            signals.needs_attention.send(sender=Posting, posting=posting)
    metrics.posting_finished(posting, PostingState.PARKED)
    log.info("parked", extra=_fields(posting, outcome=PostingState.PARKED, error_code=code, category=category))
    return PostingState.PARKED
