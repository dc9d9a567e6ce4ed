"""Actions people take on postings from the console, and the sweepers that recover lost work.
Every action is audited with who, why, before and after."""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from apps.core import audit
from apps.core.broker import resend_patience
from apps.posting import dispatch, signals
from apps.posting.executor import release_waiting
from apps.posting.models import EXCEPTION_STATES, Posting, PostingAttempt, PostingState
from apps.posting.planner import plan_writeback

log = logging.getLogger(__name__)

SWEEP_BATCH = 500


class ActionRefused(ValueError):
    """The action does not apply to the posting in its current state; the message says why."""


def _state_snapshot(posting: Posting) -> dict[str, object]:
    return {
        "state": posting.state,
        "error_code": posting.error_code,
        "finance_message": posting.finance_message,
        "attempt_count": posting.attempt_count,
    }


def retry_posting(posting_id: int, *, actor: str, reason: str = "") -> Posting:
    """Send a parked or dead posting again, with a fresh attempt budget. Its idempotency key and
    the connector's lookup-before-create keep the retry from duplicating an ERP document."""
    with transaction.atomic():
        posting = Posting.objects.select_for_update().get(pk=posting_id)
        if posting.state not in EXCEPTION_STATES:
            raise ActionRefused(
                f"Posting {posting.pk} is {posting.get_state_display().lower()}; "
                "only parked or dead postings can be retried."
            )
        before = _state_snapshot(posting)
        posting.state = PostingState.QUEUED
        posting.retry_at = None
        posting.attempt_budget_start = posting.attempt_count
        # A dead posting may have died uncertain: keep verify_before_retry as it is.
        posting.save(update_fields=["state", "retry_at", "attempt_budget_start", "updated_at"])
        audit.record(
            "posting.retried", posting, actor=actor, reason=reason, before=before, after=_state_snapshot(posting)
        )
        dispatch.enqueue_on_commit(posting)
    return posting


def _require_reason(reason: str, action: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ActionRefused(f"A reason is required to {action}.")
    return reason


def _exception_posting(posting_id: int, action: str) -> Posting:
    posting = Posting.objects.select_for_update().get(pk=posting_id)
    if posting.state not in EXCEPTION_STATES:
        raise ActionRefused(
            f"Posting {posting.pk} is {posting.get_state_display().lower()}; "
            f"only parked or dead postings can be {action}."
        )
    return posting


def skip_posting(posting_id: int, *, actor: str, reason: str) -> Posting:
    """Decide that this document will not be posted by the hub. Postings waiting on it (a
    payment waiting for a skipped invoice) are skipped with it: they could never post."""
    reason = _require_reason(reason, "skip a posting")
    with transaction.atomic():
        posting = _exception_posting(posting_id, "skipped")
        skipped = [posting]
        children = list(
            Posting.objects.select_for_update().filter(
                depends_on_key=posting.idempotency_key, state=PostingState.WAITING
            )
        )
        for target in skipped + children:
            before = _state_snapshot(target)
            target.state = PostingState.SKIPPED
            target.save(update_fields=["state", "updated_at"])
            audit.record(
                "posting.skipped", target, actor=actor, reason=reason, before=before, after=_state_snapshot(target)
            )
            signals.settled.send(sender=Posting, posting=target, actor=actor)
    return posting


def link_posting(posting_id: int, *, erp_id: str, erp_number: str = "", actor: str, reason: str) -> Posting:
    """The document already exists in the ERP (entered by hand): record its id instead of posting
    a duplicate. Postings waiting on it are released."""
    reason = _require_reason(reason, "link a posting to an ERP document")
    erp_id = (erp_id or "").strip()
    if not erp_id:
        raise ActionRefused("Give the id of the document that already exists in the ERP.")
    with transaction.atomic():
        posting = _exception_posting(posting_id, "linked")
        before = {**_state_snapshot(posting), "erp_id": posting.erp_id}
        posting.state = PostingState.POSTED
        posting.erp_id = erp_id
        posting.erp_number = (erp_number or "").strip()
        posting.posted_at = timezone.now()
        posting.save(update_fields=["state", "erp_id", "erp_number", "posted_at", "updated_at"])
        audit.record(
            "posting.linked",
            posting,
            actor=actor,
            reason=reason,
            before=before,
            after={**_state_snapshot(posting), "erp_id": erp_id, "erp_number": posting.erp_number},
        )
        release_waiting(posting.idempotency_key)
        plan_writeback(posting)
        signals.settled.send(sender=Posting, posting=posting, actor=actor)
    return posting


_NOT_STARTED = (PostingState.QUEUED, PostingState.WAITING)


def _not_started(posting_id: int, action: str) -> Posting:
    posting = Posting.objects.select_for_update().get(pk=posting_id)
    if posting.state not in _NOT_STARTED:
        raise ActionRefused(
            f"Posting {posting.pk} is {posting.get_state_display().lower()}; only a posting not yet sent can be "
            f"{action}."
        )
    return posting


def adopt_existing(posting_id: int, *, erp_id: str, erp_number: str, actor: str, reason: str) -> Posting:
    """The ERP already holds this document (a backfill found what an earlier integration posted):
    record it as posted, with the ERP's id, instead of sending it."""
    reason = _require_reason(reason, "adopt an ERP document")
    with transaction.atomic():
        posting = _not_started(posting_id, "adopted")
        before = _state_snapshot(posting)
        posting.state, posting.erp_id, posting.erp_number = PostingState.POSTED, erp_id, erp_number
        posting.posted_at = timezone.now()
        posting.save(update_fields=["state", "erp_id", "erp_number", "posted_at", "updated_at"])
        audit.record(
            "posting.adopted",
            posting,
            actor=actor,
            reason=reason,
            before=before,
            after={**_state_snapshot(posting), "erp_id": erp_id, "erp_number": erp_number},
        )
        release_waiting(posting.idempotency_key)
        plan_writeback(posting)
        signals.settled.send(sender=Posting, posting=posting, actor=actor)
    return posting


def skip_not_started(posting_id: int, *, actor: str, reason: str) -> Posting:
    """Decide, before it is sent, that the hub will not post this document."""
    reason = _require_reason(reason, "skip a posting")
    with transaction.atomic():
        posting = _not_started(posting_id, "skipped")
        before = _state_snapshot(posting)
        posting.state = PostingState.SKIPPED
        posting.save(update_fields=["state", "updated_at"])
        audit.record(
            "posting.skipped", posting, actor=actor, reason=reason, before=before, after=_state_snapshot(posting)
        )
        signals.settled.send(sender=Posting, posting=posting, actor=actor)
    return posting


def sweep_postings(now: timezone.datetime | None = None) -> dict[str, int]:
    """Re-enqueue what the broker may have lost, recover rows orphaned in flight, release
    waiting children whose parents are posted. Safe to run anywhere, any number of times."""
    now = now or timezone.now()
    hub = settings.HUB
    counts = {"requeued": 0, "recovered": 0, "released": 0}
    from apps.flow.services import CONNECTION_HOLDS, sweep_holds

    counts["unheld"] = sweep_holds()  # maintenance windows that ended

    patience = timedelta(seconds=resend_patience(hub["INBOX_STALE_SECONDS"], queue=settings.HUB_POSTING_QUEUE))
    due = (
        Posting.objects.filter(
            Q(state=PostingState.QUEUED, enqueued_at__isnull=True, created_at__lt=now - timedelta(seconds=5))
            | Q(state=PostingState.QUEUED, enqueued_at__lt=now - patience)
            | Q(state=PostingState.RETRY_SCHEDULED, retry_at__lte=now, enqueued_at__isnull=True)
            | Q(state=PostingState.RETRY_SCHEDULED, retry_at__lte=now - patience, enqueued_at__lt=now - patience)
        )
        .exclude(state=PostingState.RETRY_SCHEDULED, error_code__in=CONNECTION_HOLDS)  # released by sweep_holds
        .order_by("pk")
        .values_list("pk", "correlation_id")[:SWEEP_BATCH]
    )
    for posting_id, correlation_id in due:
        if dispatch.send_execute(posting_id, correlation_id=correlation_id):
            counts["requeued"] += 1

    stale_flight = now - timedelta(seconds=hub["IN_FLIGHT_STALE_SECONDS"])
    with transaction.atomic():
        orphans = list(
            Posting.objects.select_for_update(skip_locked=True)
            .filter(state=PostingState.IN_FLIGHT, claimed_at__lt=stale_flight)
            .order_by("pk")[:SWEEP_BATCH]
        )
        for posting in orphans:
            if posting.slot_lease:
                # The dead worker's concurrency slot: give it back now rather than when its lease
                # runs out (minutes), or a connection with a small cap stalls for that long.
                from apps.flow.services import slots

                slots(posting.connection).release(posting.slot_lease)
            PostingAttempt.objects.filter(posting=posting, outcome=PostingAttempt.Outcome.STARTED).update(
                outcome=PostingAttempt.Outcome.ABANDONED,
                finished_at=now,
                detail="worker lost mid-call; verify before retry",
            )
            Posting.objects.filter(pk=posting.pk, state=PostingState.IN_FLIGHT, claim_token=posting.claim_token).update(
                state=PostingState.RETRY_SCHEDULED,
                retry_at=now,
                verify_before_retry=True,
                claim_token="",
                slot_lease="",
                updated_at=now,
            )
            audit.record(
                "posting.recovered", posting, reason="in flight past the stale limit; the worker is presumed lost"
            )
            dispatch.enqueue_on_commit(posting)
            counts["recovered"] += 1

    waiting_parents = (
        Posting.objects.filter(state=PostingState.WAITING)
        .values_list("depends_on_key", flat=True)
        .distinct()[:SWEEP_BATCH]
    )
    posted_parents = Posting.objects.filter(idempotency_key__in=list(waiting_parents), state=PostingState.POSTED)
    for key in posted_parents.values_list("idempotency_key", flat=True):
        with transaction.atomic():
            counts["released"] += len(release_waiting(key))
    if any(counts.values()):
        log.info("posting sweep", extra=counts)
    return counts
