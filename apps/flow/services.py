"""Admission to an ERP connection: may a posting call it now, and if not, until when must it wait?

A posting that may not call its ERP (paused, in a maintenance window, circuit open, no free slot)
waits as RETRY_SCHEDULED with ``retry_at`` and a hold code, without using an attempt. When the
hold ends (resume, window over, circuit closed) ``release_holds`` makes those postings due again,
oldest first; children still wait for their parents as always.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.core import audit, config_cache
from apps.flow.limiter import ConcurrencyLimiter, WindowLimiter
from apps.flow.models import DEFAULT_BUDGETS, FALLBACK_BUDGET, CircuitState, ConnectionFlow, MaintenanceWindow
from apps.routing.models import ERPConnection

log = logging.getLogger(__name__)

HOLD_PAUSED = "held_paused"
HOLD_MAINTENANCE = "held_maintenance"
HOLD_CIRCUIT = "held_circuit_open"
HOLD_BUSY = "held_busy"
HOLD_CODES = (HOLD_PAUSED, HOLD_MAINTENANCE, HOLD_CIRCUIT, HOLD_BUSY)
# Holds that end for the whole connection at once: released by release_holds, never re-sent one by one.
CONNECTION_HOLDS = (HOLD_PAUSED, HOLD_MAINTENANCE, HOLD_CIRCUIT)
PAUSED_RECHECK = timedelta(hours=1)  # a paused connection is released by resume; this is a safety net
LEASE_SECONDS = 330  # longer than the task's hard time limit: a killed worker's slot comes back


@dataclass(frozen=True)
class Hold:
    code: str
    reason: str
    until: datetime


def flow_for(connection: ERPConnection) -> ConnectionFlow:
    flow = ConnectionFlow.objects.filter(connection=connection).first()
    if flow is None:
        requests, period, concurrency = DEFAULT_BUDGETS.get(connection.kind, FALLBACK_BUDGET)
        flow, _ = ConnectionFlow.objects.get_or_create(
            connection=connection,
            defaults={"max_requests": requests, "period_seconds": period, "max_concurrency": concurrency},
        )
    return flow


def admission(
    connection: ERPConnection, now: datetime | None = None, budget: ConnectionFlow | None = None
) -> Hold | None:
    """Why the connection cannot be called now, or None. ``budget``: its flow row, if just read."""
    now = now or timezone.now()
    flow = budget or flow_for(connection)
    if flow.paused:
        return Hold(
            HOLD_PAUSED,
            f"Postings to {connection.name} are paused by {flow.paused_by or 'an operator'}: {flow.paused_reason}",
            now + PAUSED_RECHECK,
        )
    window = _maintenance_window(connection, now)
    if window is not None:
        return Hold(
            HOLD_MAINTENANCE,
            f"{connection.name} is in a maintenance window until {window.ends_at:%Y-%m-%d %H:%M} UTC: {window.reason}",
            window.ends_at,
        )
    if flow.circuit_state == CircuitState.OPEN:
        # When the probe is due, one caller wins it (compare-and-set); the others keep waiting.
        if (
            flow.next_probe_at
            and flow.next_probe_at <= now
            and ConnectionFlow.objects.filter(pk=flow.pk, circuit_state=CircuitState.OPEN).update(
                circuit_state=CircuitState.HALF_OPEN, next_probe_at=now + timedelta(seconds=flow.probe_after_seconds)
            )
        ):
            log.info("circuit half-open: probing", extra={"connection": connection.name})
            return None
        return Hold(HOLD_CIRCUIT, _circuit_words(connection, flow), flow.next_probe_at or now + timedelta(seconds=60))
    if flow.circuit_state == CircuitState.HALF_OPEN:
        if flow.next_probe_at and flow.next_probe_at <= now:
            # The probe never reported back (its worker died): let another one try.
            ConnectionFlow.objects.filter(pk=flow.pk, circuit_state=CircuitState.HALF_OPEN).update(
                next_probe_at=now + timedelta(seconds=flow.probe_after_seconds)
            )
            return None
        return Hold(HOLD_CIRCUIT, _circuit_words(connection, flow), flow.next_probe_at or now)
    return None


def _maintenance_window(connection: ERPConnection, now: datetime) -> MaintenanceWindow | None:
    """The window in force now, from the connection's windows not yet over (read once per
    configuration generation: every posting asks)."""
    ahead = config_cache.cached(
        ("maintenance_windows", connection.pk),
        lambda: list(MaintenanceWindow.objects.filter(connection_id=connection.pk, ends_at__gt=timezone.now())),
    )
    return next((w for w in ahead if w.starts_at <= now < w.ends_at), None)


def claim_probe(connection: ERPConnection, probe_at: datetime) -> bool:
    """True for the one caller that should send a held posting to be the probe at ``probe_at``."""
    return bool(
        ConnectionFlow.objects.filter(connection=connection)
        .exclude(probe_sent_for=probe_at)
        .update(probe_sent_for=probe_at)
    )


def _circuit_words(connection: ERPConnection, flow: ConnectionFlow) -> str:
    return (
        f"The hub stopped calling {connection.name} after repeated failures ({flow.circuit_reason}); "
        f"it tries again at {flow.next_probe_at:%H:%M:%S} UTC."
        if flow.next_probe_at
        else f"The hub stopped calling {connection.name}: {flow.circuit_reason}"
    )


def busy_hold(connection: ERPConnection, budget: ConnectionFlow | None = None) -> Hold:
    return Hold(
        HOLD_BUSY,
        f"All {(budget or flow_for(connection)).max_concurrency} call slots of {connection.name} are in use.",
        timezone.now() + timedelta(seconds=random.uniform(0.2, 1.5)),
    )


def slots(connection: ERPConnection, budget: ConnectionFlow | None = None) -> ConcurrencyLimiter:
    """``budget``: the connection's flow row when the caller has just read it (saves a query)."""
    return ConcurrencyLimiter(connection.name, (budget or flow_for(connection)).max_concurrency, LEASE_SECONDS)


def window(connection: ERPConnection, budget: ConnectionFlow | None = None) -> WindowLimiter:
    flow = budget or flow_for(connection)
    return WindowLimiter(connection.name, flow.max_requests, flow.period_seconds)


def record_success(connection: ERPConnection, budget: ConnectionFlow | None = None) -> None:
    """``budget``: the flow row the caller read before its call, when it has one (saves a query: a
    circuit that was closed without failures then needs nothing, and one opened since by another
    worker's failure is closed by its own probe)."""
    flow = budget or flow_for(connection)
    if flow.circuit_state == CircuitState.CLOSED and flow.consecutive_failures == 0:
        return
    with transaction.atomic():
        was = flow.circuit_state
        ConnectionFlow.objects.filter(pk=flow.pk).update(
            circuit_state=CircuitState.CLOSED, consecutive_failures=0, next_probe_at=None, circuit_reason=""
        )
        if was != CircuitState.CLOSED:
            audit.record("flow.circuit_closed", flow, reason=f"{connection.name} answered again")
            release_holds(connection, (HOLD_CIRCUIT,))


def record_failure(connection: ERPConnection, detail: str, *, authentication: bool = False) -> bool:
    """Count a failure; open the circuit on a run of them, on any authentication failure, or when
    the half-open probe fails. Returns True when the circuit is (now) open."""
    flow = flow_for(connection)
    now = timezone.now()
    with transaction.atomic():
        ConnectionFlow.objects.filter(pk=flow.pk).update(consecutive_failures=F("consecutive_failures") + 1)
        flow.refresh_from_db()
        should_open = (
            authentication
            or flow.circuit_state == CircuitState.HALF_OPEN
            or flow.consecutive_failures >= flow.failure_threshold
        )
        if not should_open:
            return False
        if flow.circuit_state == CircuitState.OPEN:
            return True
        reason = ("authentication refused: " if authentication else f"{flow.consecutive_failures} failures: ") + detail[
            :300
        ]
        ConnectionFlow.objects.filter(pk=flow.pk).update(
            circuit_state=CircuitState.OPEN,
            circuit_opened_at=now,
            circuit_reason=reason,
            next_probe_at=now + timedelta(seconds=flow.probe_after_seconds),
        )
        audit.record("flow.circuit_opened", flow, reason=reason)
    log.warning("circuit opened", extra={"connection": connection.name, "reason": reason})
    return True


def pause(connection: ERPConnection, *, actor: str, reason: str) -> ConnectionFlow:
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("A reason is required to pause a connection.")
    flow = flow_for(connection)
    with transaction.atomic():
        ConnectionFlow.objects.filter(pk=flow.pk).update(
            paused=True, paused_reason=reason, paused_by=actor, paused_at=timezone.now()
        )
        audit.record("flow.paused", flow, actor=actor, reason=reason)
    flow.refresh_from_db()
    return flow


def resume(connection: ERPConnection, *, actor: str, reason: str = "") -> int:
    flow = flow_for(connection)
    with transaction.atomic():
        ConnectionFlow.objects.filter(pk=flow.pk).update(paused=False, paused_reason="", paused_by="", paused_at=None)
        audit.record("flow.resumed", flow, actor=actor, reason=reason)
        return release_holds(connection, (HOLD_PAUSED,))


def close_circuit(connection: ERPConnection, *, actor: str, reason: str) -> int:
    """An engineer fixed the cause (new credentials): call the ERP again now."""
    flow = flow_for(connection)
    with transaction.atomic():
        ConnectionFlow.objects.filter(pk=flow.pk).update(
            circuit_state=CircuitState.CLOSED, consecutive_failures=0, next_probe_at=None, circuit_reason=""
        )
        audit.record("flow.circuit_closed", flow, actor=actor, reason=reason)
        return release_holds(connection, (HOLD_CIRCUIT,))


def window_facts(window: MaintenanceWindow) -> dict[str, object]:
    return {
        "connection": window.connection.name,
        "starts_at": window.starts_at,
        "ends_at": window.ends_at,
        "reason": window.reason,
        "created_by": window.created_by,
    }


def window_planned(window: MaintenanceWindow, *, actor: str) -> None:
    """Audit a window just saved (from the admin or the API)."""
    audit.record(
        "flow.maintenance_window_created", window, actor=actor, reason=window.reason, after=window_facts(window)
    )


def cancel_window(window: MaintenanceWindow, *, actor: str, reason: str = "") -> int:
    """Delete a window (cancelled, or ended early); the postings it held become due again."""
    with transaction.atomic():
        audit.record("flow.maintenance_window_deleted", window, actor=actor, reason=reason, before=window_facts(window))
        connection = window.connection
        window.delete()
        return release_holds(connection, (HOLD_MAINTENANCE,))


def _still_holding(connection: ERPConnection, now: datetime, flow: ConnectionFlow | None = None) -> set[str]:
    flow = flow or flow_for(connection)
    holding = set()
    if flow.paused:
        holding.add(HOLD_PAUSED)
    if _maintenance_window(connection, now) is not None:
        holding.add(HOLD_MAINTENANCE)
    if flow.circuit_state != CircuitState.CLOSED:
        holding.add(HOLD_CIRCUIT)
    return holding


def release_holds(connection: ERPConnection, codes: tuple[str, ...] = HOLD_CODES) -> int:
    """Make postings held for reasons that have ended due now, oldest first: the first batch is
    sent at once, the sweeper sends the rest (their hold code is cleared, so it sees them)."""
    from apps.posting import dispatch
    from apps.posting.models import Posting, PostingState

    now = timezone.now()
    if _still_holding(connection, now):
        return 0  # whatever else holds the connection would hold them again at once
    held = Posting.objects.filter(connection=connection, state=PostingState.RETRY_SCHEDULED, error_code__in=codes)
    ids = list(held.order_by("created_at", "pk").values_list("pk", flat=True))
    Posting.objects.filter(pk__in=ids).update(retry_at=now, enqueued_at=None, error_code="", error_category="")
    for posting_id in ids[:500]:
        transaction.on_commit(lambda pid=posting_id: dispatch.send_execute(pid))
    if ids:
        log.info("held postings released", extra={"connection": connection.name, "count": len(ids)})
    return len(ids)


def sweep_holds(now: datetime | None = None) -> int:
    """Release holds whose cause ended without anyone saying so (a maintenance window's end, a
    circuit closed by a worker that died before releasing), and send each open circuit whose
    probe is overdue the oldest posting it holds, as its probe."""
    from apps.posting import dispatch
    from apps.posting.models import Posting, PostingState

    now = now or timezone.now()
    released = 0
    held = Posting.objects.filter(state=PostingState.RETRY_SCHEDULED, error_code__in=CONNECTION_HOLDS)
    connection_ids = held.values_list("connection_id", flat=True).distinct()
    for connection in ERPConnection.objects.filter(pk__in=list(connection_ids)):
        with transaction.atomic():
            released += release_holds(connection, CONNECTION_HOLDS)
        flow = flow_for(connection)
        # The probe's own message was sent when the first posting was held; this is the backstop
        # for one lost with a killed worker: overdue by a whole probe period.
        overdue = now - timedelta(seconds=flow.probe_after_seconds)
        probe_due = flow.next_probe_at is None or flow.next_probe_at <= overdue
        if _still_holding(connection, now, flow) == {HOLD_CIRCUIT} and probe_due:
            probe = (
                held.filter(connection=connection, error_code=HOLD_CIRCUIT)
                .order_by("created_at", "pk")
                .values_list("pk", "correlation_id")
                .first()
            )
            if probe is not None:
                dispatch.send_execute(probe[0], correlation_id=probe[1])
    return released
