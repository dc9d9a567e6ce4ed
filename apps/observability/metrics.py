"""The hub's Prometheus counters and histograms, and the one-line calls that feed them.

This module is a leaf: ingest and the posting executor import it, so it imports nothing of
theirs at module level. Gauges that describe the database (open cases, backlog, circuit state)
are not kept here: ``collectors.DatabaseCollector`` reads them at scrape time.

Multi-process: with ``PROMETHEUS_MULTIPROC_DIR`` set before the process starts, every gunicorn
worker and Celery pool process writes its values to files in that directory and ``/metrics``
adds them up (prometheus_client's multiprocess mode). Without it (the demo, the tests) each
process keeps its own values in memory.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from apps.posting.models import Posting


# Outcomes of an incoming event at the door.
STORED = "stored"
DUPLICATE = "duplicate"
BAD_SIGNATURE = "bad_signature"
INVALID = "invalid"
TOO_LARGE = "too_large"
NO_SUCH_SOURCE = "unknown_source"
UNAVAILABLE = "unavailable"
# The source label of an event refused before its source was known: a name taken from the URL
# would let anyone create label values.
UNKNOWN_SOURCE = "-"

# The hub's own limits a posting can wait for.
REQUEST_BUDGET = "requests"
CONCURRENCY = "concurrency"

_SECONDS_FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_SECONDS_SLOW = (0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 4 * 3600, 24 * 3600)

EVENTS_RECEIVED = Counter(
    "hub_events_received",
    "Billing events that reached the hub, by source and what the hub answered.",
    ["source", "outcome"],
)
INGEST_SECONDS = Histogram(
    "hub_ingest_seconds",
    "Time from a webhook's arrival to the hub's answer, for events stored or already stored.",
    ["source"],
    buckets=_SECONDS_FAST,
)
EVENTS_NORMALIZED = Counter(
    "hub_events_normalized", "Stored events turned into ledger changes, by source and result.", ["source", "outcome"]
)
NORMALIZE_LAG_SECONDS = Histogram(
    "hub_normalize_lag_seconds",
    "Time from an event's arrival to the end of its normalization (queue wait included).",
    ["source"],
    buckets=_SECONDS_SLOW,
)
EVENT_TO_POSTED_SECONDS = Histogram(
    "hub_event_to_posted_seconds",
    "Time from the billing event that planned a posting to the ERP holding the document, per ERP connection.",
    ["connection"],
    buckets=_SECONDS_SLOW,
)
POSTING_OUTCOMES = Counter(
    "hub_posting_outcomes",
    "Posting runs by where they ended: posted, found (already in the ERP), parked, dead, held_*.",
    ["connection", "operation", "outcome"],
)
POSTING_RETRIES = Counter(
    "hub_posting_retries",
    "Retries scheduled after an attempt, by the attempt's outcome (transient, uncertain, error, throttled).",
    ["connection", "reason"],
)
RATE_LIMIT_WAITS = Counter(
    "hub_rate_limit_waits",
    "Times a posting waited for the connection's request budget or a free call slot.",
    ["connection", "limit"],
)
RATE_LIMIT_WAIT_SECONDS = Counter(
    "hub_rate_limit_wait_seconds",
    "Seconds spent waiting for the connection's request budget before calling the ERP.",
    ["connection"],
)
SYNTHETIC_SECONDS = Histogram(
    "hub_synthetic_seconds",
    "Latency of the synthetic transaction, from the marked event stored to the sandbox ERP holding it.",
    ["connection"],
    buckets=_SECONDS_SLOW,
)
SYNTHETIC_RUNS = Counter(
    "hub_synthetic_runs",
    "Synthetic transactions finished, by result (posted, failed, timed_out).",
    ["connection", "result"],
)

# Shorter than this, a limiter call was its own round trip to Redis, not a wait.
_WAIT_FLOOR_SECONDS = 0.005


def event_received(source: str, outcome: str) -> None:
    EVENTS_RECEIVED.labels(source, outcome).inc()


def ingest_latency(source: str, seconds: float) -> None:
    INGEST_SECONDS.labels(source).observe(seconds)


def event_normalized(source: str, outcome: str, received_at: datetime | None, processed_at: datetime | None) -> None:
    EVENTS_NORMALIZED.labels(source, outcome).inc()
    if received_at and processed_at:
        NORMALIZE_LAG_SECONDS.labels(source).observe(max((processed_at - received_at).total_seconds(), 0.0))


def posting_finished(posting: Posting, outcome: str) -> None:
    """A run ended: ``outcome`` is posted or found (then the event-to-posted latency is observed),
    parked or dead."""
    connection = posting.connection.name
    POSTING_OUTCOMES.labels(connection, posting.operation, outcome).inc()
    if posting.posted_at is not None:
        started = event_received_at(posting)
        EVENT_TO_POSTED_SECONDS.labels(connection).observe(max((posting.posted_at - started).total_seconds(), 0.0))


def posting_retried(posting: Posting, reason: str) -> None:
    POSTING_RETRIES.labels(posting.connection.name, reason).inc()


def posting_held(posting: Posting, code: str) -> None:
    """Held without an attempt: paused, maintenance, circuit open, or no free call slot."""
    POSTING_OUTCOMES.labels(posting.connection.name, posting.operation, code).inc()
    from apps.flow.services import HOLD_BUSY

    if code == HOLD_BUSY:
        RATE_LIMIT_WAITS.labels(posting.connection.name, CONCURRENCY).inc()


def rate_limit_wait(connection: str, limit: str, seconds: float, *, gave_up: bool = False) -> None:
    """``gave_up``: the budget stayed spent past the longest wait; the posting was rescheduled."""
    if seconds >= _WAIT_FLOOR_SECONDS or gave_up:
        RATE_LIMIT_WAITS.labels(connection, limit).inc()
        RATE_LIMIT_WAIT_SECONDS.labels(connection).inc(seconds)


def synthetic_finished(connection: str, result: str, seconds: float | None) -> None:
    SYNTHETIC_RUNS.labels(connection, result).inc()
    if seconds is not None:
        SYNTHETIC_SECONDS.labels(connection).observe(seconds)


def event_received_at(posting: Posting) -> datetime:
    """When the hub received the billing event that planned ``posting``.

    That is the inbox event its correlation id names, when the posting was planned while that
    event was normalized (created before the event's normalization ended). A posting planned later
    (a child released after its parent, a writeback, a document changed by a later event) is
    measured from when it was planned: a lower bound, never an inflated figure."""
    from apps.ingest.models import InboxEvent

    if posting.correlation_id:
        received = (
            InboxEvent.objects.filter(
                correlation_id=posting.correlation_id,
                received_at__lte=posting.created_at,
                processed_at__gte=posting.created_at,
            )
            .order_by("-received_at")
            .values_list("received_at", flat=True)
            .first()
        )
        if received is not None:
            return received
    return posting.created_at
