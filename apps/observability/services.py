"""Aggregates of the hub's database in finance terms, for ``/metrics`` (read at scrape time) and
for the control tower: backlog per ERP connection, exception aging, circuit state, posting success
rate and event-to-posted latency percentiles.

Each function is one or two aggregate queries over indexed columns, cheap enough to run on every
scrape. Durations are in seconds.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db import connection as db
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Min,
    OuterRef,
    Q,
    Subquery,
)
from django.db.models.functions import Coalesce, Extract
from django.utils import timezone

from apps.console.models import CaseStatus, ExceptionCase
from apps.flow.models import CircuitState, ConnectionFlow
from apps.ingest.models import InboxEvent
from apps.observability.models import SyntheticResult, SyntheticRun
from apps.posting.models import Posting, PostingState
from apps.reconciliation.services import open_differences_by_connection
from apps.routing.models import ERPConnection

# What the hub still has to do on its own: every state that is neither done nor waiting for a person.
BACKLOG_STATES = (PostingState.QUEUED, PostingState.WAITING, PostingState.IN_FLIGHT, PostingState.RETRY_SCHEDULED)
# Open exception cases by how long they have been open (label, from, to), in seconds.
CASE_AGE_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("under_1h", 0, 3600),
    ("1h_to_1d", 3600, 86400),
    ("1d_to_3d", 86400, 3 * 86400),
    ("over_3d", 3 * 86400, None),
)
CASE_CATEGORIES = ("business", "technical")
PERCENTILES = (0.5, 0.95, 0.99)


def connection_names() -> list[str]:
    """The active ERP connections: every gauge names each of them, so a connection with nothing
    waiting shows 0 instead of disappearing."""
    return list(ERPConnection.objects.filter(active=True).order_by("name").values_list("name", flat=True))


def backlog(now: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per connection: postings in each backlog state, their total, and the age of the oldest one."""
    now = now or timezone.now()
    result: dict[str, dict[str, Any]] = {
        name: {**{state: 0 for state in BACKLOG_STATES}, "total": 0, "oldest_seconds": 0.0}
        for name in connection_names()
    }
    rows = (
        Posting.objects.filter(state__in=BACKLOG_STATES)
        .values("connection__name", "state")
        .annotate(n=Count("id"), oldest=Min("created_at"))
    )
    for row in rows:
        entry = result.setdefault(
            row["connection__name"],
            {**{state: 0 for state in BACKLOG_STATES}, "total": 0, "oldest_seconds": 0.0},
        )
        entry[row["state"]] = row["n"]
        entry["total"] += row["n"]
        entry["oldest_seconds"] = max(entry["oldest_seconds"], (now - row["oldest"]).total_seconds())
    return result


def open_cases_by_age(now: datetime | None = None) -> dict[str, dict[str, int]]:
    """Open exception cases per category (business: finance, technical: engineers) and age bucket."""
    now = now or timezone.now()
    counts = {}
    for label, low, high in CASE_AGE_BUCKETS:
        condition = Q(opened_at__lte=now - timedelta(seconds=low))
        if high is not None:
            condition &= Q(opened_at__gt=now - timedelta(seconds=high))
        counts[label] = Count("id", filter=condition)
    result = {category: {label: 0 for label, _, _ in CASE_AGE_BUCKETS} for category in CASE_CATEGORIES}
    for row in ExceptionCase.objects.filter(status=CaseStatus.OPEN).values("category").annotate(**counts):
        result[row["category"] or "technical"] = {label: row[label] for label, _, _ in CASE_AGE_BUCKETS}
    return result


def circuit_states() -> dict[str, dict[str, Any]]:
    """Per active connection: its circuit (closed, open, half_open), whether a person paused it, and
    when the next probe is due. A connection that never called its ERP has no flow row: closed."""
    result = {
        name: {"state": CircuitState.CLOSED.value, "paused": False, "next_probe_at": None, "opened_at": None}
        for name in connection_names()
    }
    rows = ConnectionFlow.objects.filter(connection__active=True).values(
        "connection__name", "circuit_state", "paused", "next_probe_at", "circuit_opened_at"
    )
    for row in rows:
        result[row["connection__name"]] = {
            "state": row["circuit_state"],
            "paused": row["paused"],
            "next_probe_at": row["next_probe_at"],
            "opened_at": row["circuit_opened_at"] if row["circuit_state"] != CircuitState.CLOSED else None,
        }
    return result


def reconciliation_differences() -> dict[str, int]:
    """Documents billing, the ledger and the ERP disagree on, per connection: the differences the
    latest completed reconciliation run of each scope left open (0 where none was run)."""
    found = open_differences_by_connection()
    return {name: found.get(name, 0) for name in connection_names()}


def success_rate(since: datetime, until: datetime | None = None) -> dict[str, dict[str, Any]]:
    """Per connection, the postings whose outcome was decided in [since, until): posted (by
    ``posted_at``), parked or dead (by ``updated_at``); how many were posted at the first attempt;
    and ``rate`` = posted / decided (None when nothing was decided)."""
    until = until or timezone.now()
    posted = Q(state=PostingState.POSTED, posted_at__gte=since, posted_at__lt=until)
    failed = Q(state__in=(PostingState.PARKED, PostingState.DEAD), updated_at__gte=since, updated_at__lt=until)
    rows = (
        Posting.objects.filter(posted | failed)
        .values("connection__name")
        .annotate(
            posted=Count("id", filter=Q(state=PostingState.POSTED)),
            first_attempt=Count("id", filter=Q(state=PostingState.POSTED, attempt_count__lte=1)),
            parked=Count("id", filter=Q(state=PostingState.PARKED)),
            dead=Count("id", filter=Q(state=PostingState.DEAD)),
        )
    )
    result = {
        name: {"posted": 0, "first_attempt": 0, "parked": 0, "dead": 0, "rate": None} for name in connection_names()
    }
    for row in rows:
        decided = row["posted"] + row["parked"] + row["dead"]
        result[row["connection__name"]] = {
            "posted": row["posted"],
            "first_attempt": row["first_attempt"],
            "parked": row["parked"],
            "dead": row["dead"],
            "rate": row["posted"] / decided if decided else None,
        }
    return result


class _PercentileCont(Aggregate):  # PostgreSQL only
    function = "percentile_cont"
    template = "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, fraction: float) -> None:
        super().__init__(expression, fraction=float(fraction))


def _event_received() -> Coalesce:
    """When the billing event that planned the posting arrived (see ``metrics.event_received_at``)."""
    received = (
        InboxEvent.objects.filter(
            correlation_id=OuterRef("correlation_id"),
            received_at__lte=OuterRef("created_at"),
            processed_at__gte=OuterRef("created_at"),
        )
        .order_by("-received_at")
        .values("received_at")[:1]
    )
    return Coalesce(Subquery(received), F("created_at"))


def event_to_posted_percentiles(
    since: datetime, until: datetime | None = None, percentiles: tuple[float, ...] = PERCENTILES
) -> dict[str, dict[str, Any]]:
    """Per connection, over the postings posted in [since, until): their count and the percentiles
    of the time from the billing event that planned each one to the ERP holding it, as
    ``{"count": n, "p50": s, "p95": s, "p99": s}`` (None without postings)."""
    until = until or timezone.now()
    names = {f"p{round(p * 100):d}": p for p in percentiles}
    result: dict[str, dict[str, Any]] = {
        name: {"count": 0, **{key: None for key in names}} for name in connection_names()
    }
    postings = Posting.objects.filter(
        state=PostingState.POSTED, posted_at__gte=since, posted_at__lt=until, posted_at__isnull=False
    ).annotate(
        latency=ExpressionWrapper(F("posted_at") - _event_received(), output_field=DurationField()),
    )
    if db.vendor == "postgresql":
        seconds = Extract("latency", "epoch")
        rows = postings.values("connection__name").annotate(
            count=Count("id"), **{key: _PercentileCont(seconds, p) for key, p in names.items()}
        )
        for row in rows:
            result[row["connection__name"]] = {"count": row["count"], **{key: row[key] for key in names}}
        return result
    samples: dict[str, list[float]] = defaultdict(list)
    for name, latency in postings.values_list("connection__name", "latency"):
        samples[name].append(latency.total_seconds() if isinstance(latency, timedelta) else float(latency) / 1e6)
    for name, values in samples.items():
        result[name] = {"count": len(values), **{key: _percentile(sorted(values), p) for key, p in names.items()}}
    return result


def _percentile(ordered: list[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks, as PostgreSQL's percentile_cont."""
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def synthetic_status() -> dict[str, dict[str, Any]]:
    """Per sandbox connection: the last finished synthetic run (result, latency, when it finished)
    and when one last succeeded."""
    result: dict[str, dict[str, Any]] = {}
    finished = SyntheticRun.objects.exclude(result=SyntheticResult.RUNNING)
    for name in finished.values_list("connection", flat=True).distinct():
        last = finished.filter(connection=name).order_by("-finished_at", "-id").first()
        success = (
            finished.filter(connection=name, result=SyntheticResult.POSTED)
            .order_by("-finished_at")
            .values_list("finished_at", flat=True)
            .first()
        )
        assert last is not None
        result[name] = {
            "result": last.result,
            "latency_seconds": last.latency_seconds,
            "finished_at": last.finished_at,
            "last_success_at": success,
        }
    return result
