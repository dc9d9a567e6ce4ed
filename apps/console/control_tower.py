"""The control tower's figures: integration KPIs in finance's terms, per ERP connection, over the
last hour (5-minute buckets), day (hourly) or month (daily), held against each connection's SLA.

Everything is read from the rows the pipeline already keeps; nothing is sampled into a metrics
store. A posting counts in its current state, at the moment it reached it:

- success rate: posted ÷ (posted + parked + dead). Posted at ``posted_at``; parked and dead at
  ``updated_at``. A posting parked, then fixed and posted, counts once, as posted.
- event-to-posted latency: ``posted_at`` minus the ``received_at`` of the billing event whose
  normalization planned the posting: the inbox event with the posting's correlation id that was
  received before the posting was created and processed after (a posting is planned inside its
  event's normalization). A posting planned by anything else (a person's repost, a routing rule
  added later, a later event about a document that keeps its first correlation id) counts from its
  own ``created_at``. p50/p95/p99 use linear interpolation (PostgreSQL's ``percentile_cont``),
  computed in the database on PostgreSQL and in Python over the latest ``LATENCY_SAMPLE`` postings
  of the window elsewhere (the SQLite demo).
- backlog: postings queued, waiting for a parent, in flight or scheduled for a retry. Parked and
  dead postings are not backlog: they are exception cases. The backlog at the end of each bucket
  is rebuilt from each posting's creation and the moment it left the backlog.
- exception aging: the cases open at the end of each bucket, by age.
- reconciliation backlog: the open differences of each scope's latest completed reconciliation run.

Buckets are aligned on UTC (5 minutes, the hour, midnight) and the last one holds "now".
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection as db_connection
from django.db.models import (
    Case,
    Count,
    DateTimeField,
    F,
    FloatField,
    Func,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Coalesce, Floor
from django.utils import timezone

from apps.console.models import CaseStatus, ConnectionSLA, ExceptionCase
from apps.ingest.models import InboxEvent
from apps.posting.models import Posting, PostingState
from apps.routing.models import ERPConnection

BACKLOG_STATES = (
    PostingState.QUEUED,
    PostingState.WAITING,
    PostingState.IN_FLIGHT,
    PostingState.RETRY_SCHEDULED,
)
FAILED_STATES = (PostingState.PARKED, PostingState.DEAD)
LEFT_BACKLOG_STATES = (PostingState.PARKED, PostingState.DEAD, PostingState.SKIPPED)
PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
# Where percentiles are computed in Python: at most this many postings per window (the latest).
LATENCY_SAMPLE = 50_000
# Exception cases read to rebuild the aging chart; a month with more is shown truncated.
CASE_LIMIT = 100_000
RECONCILIATION_NOTE = (
    "Open reconciliation differences: at each moment, the differences found by the latest completed "
    "reconciliation run of every scope (connection, legal entity, currency, period). Runs are daily and "
    "on demand; a difference is gone once a later run of its scope no longer finds it."
)


@dataclass(frozen=True)
class Window:
    key: str
    title: str
    step: timedelta
    count: int
    label_format: str


WINDOWS: dict[str, Window] = {
    "hour": Window("hour", "last hour", timedelta(minutes=5), 12, "%H:%M"),
    "day": Window("day", "last day", timedelta(hours=1), 24, "%H:%M"),
    "month": Window("month", "last month", timedelta(days=1), 30, "%d %b"),
}
DEFAULT_WINDOW = "day"


@dataclass(frozen=True)
class AgeBucket:
    key: str
    label: str
    below: timedelta | None  # upper bound (exclusive); None: no bound


AGE_BUCKETS = (
    AgeBucket("under_1h", "under 1 hour", timedelta(hours=1)),
    AgeBucket("1h_24h", "1–24 hours", timedelta(hours=24)),
    AgeBucket("1d_7d", "1–7 days", timedelta(days=7)),
    AgeBucket("over_7d", "over 7 days", None),
)


@dataclass(frozen=True)
class Buckets:
    """The window cut into equal buckets; the last one holds ``now``."""

    window: Window
    start: datetime
    end: datetime
    now: datetime

    @property
    def step_seconds(self) -> int:
        return int(self.window.step.total_seconds())

    @property
    def count(self) -> int:
        return self.window.count

    def starts(self) -> list[datetime]:
        return [self.start + i * self.window.step for i in range(self.count)]

    def labels(self) -> list[str]:
        return [moment.strftime(self.window.label_format) for moment in self.starts()]

    def index(self, moment: datetime) -> int | None:
        if not self.start <= moment < self.end:
            return None
        return int((moment - self.start).total_seconds() // self.step_seconds)

    def moment(self, index: int) -> datetime:
        """When bucket ``index`` is looked at for a snapshot (backlog, open cases): its end, or now."""
        return min(self.start + (index + 1) * self.window.step, self.now)


def buckets(window: str, now: datetime | None = None) -> Buckets:
    spec = WINDOWS[window]
    now = now or timezone.now()
    step = int(spec.step.total_seconds())
    end = datetime.fromtimestamp((math.floor(now.timestamp() / step) + 1) * step, UTC)
    return Buckets(spec, end - spec.count * spec.step, end, now)


# -- SQL helpers that work on PostgreSQL and SQLite ------------------------------------------------


class EpochSeconds(Func):
    """Seconds since 1970-01-01 UTC of a datetime, as a float."""

    output_field = FloatField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(
            compiler, connection, template="CAST(EXTRACT(EPOCH FROM %(expressions)s) AS DOUBLE PRECISION)", **extra
        )

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Django stores SQLite datetimes as UTC text, which julianday() reads. SQLite keeps times to
        # the millisecond; rounding there removes julianday's float error (10:00:00 would otherwise
        # read as 09:59:59.99999 and fall in the bucket before).
        return super().as_sql(
            compiler, connection, template="ROUND((julianday(%(expressions)s) - 2440587.5) * 86400.0, 3)", **extra
        )


def _bucket(field_name: str, b: Buckets) -> Floor:
    return Floor(
        (EpochSeconds(F(field_name)) - Value(b.start.timestamp(), output_field=FloatField()))
        / Value(float(b.step_seconds), output_field=FloatField())
    )


def _in_window(field_name: str, b: Buckets) -> Q:
    return Q(**{f"{field_name}__gte": b.start, f"{field_name}__lt": b.end})


def _count_by_connection_and_bucket(queryset: QuerySet[Any], field_name: str, b: Buckets) -> dict[int, list[int]]:
    counts: dict[int, list[int]] = defaultdict(lambda: [0] * b.count)
    rows = (
        queryset.filter(_in_window(field_name, b))
        .annotate(bucket=_bucket(field_name, b))
        .values("connection_id", "bucket")
        .annotate(n=Count("id"))
        .order_by()  # Meta.ordering would join the GROUP BY
    )
    for row in rows:
        index = int(row["bucket"])
        if 0 <= index < b.count:
            counts[row["connection_id"]][index] += row["n"]
    return counts


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """``percentile_cont`` over an ascending list: linear interpolation between closest ranks."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- success rate -------------------------------------------------------------------------------


@dataclass
class Outcomes:
    posted: list[int]
    failed: list[int]  # parked + dead

    def rate(self, index: int) -> Decimal | None:
        return _rate(self.posted[index], self.failed[index])

    def rates(self) -> list[Decimal | None]:
        return [self.rate(i) for i in range(len(self.posted))]

    @property
    def total_posted(self) -> int:
        return sum(self.posted)

    @property
    def total_failed(self) -> int:
        return sum(self.failed)

    @property
    def overall_rate(self) -> Decimal | None:
        return _rate(self.total_posted, self.total_failed)


def _rate(posted: int, failed: int) -> Decimal | None:
    if posted + failed == 0:
        return None
    return (Decimal(posted * 100) / Decimal(posted + failed)).quantize(Decimal("0.01"))


def outcomes_by_connection(b: Buckets) -> dict[int, Outcomes]:
    posted = _count_by_connection_and_bucket(Posting.objects.filter(state=PostingState.POSTED), "posted_at", b)
    failed = _count_by_connection_and_bucket(Posting.objects.filter(state__in=FAILED_STATES), "updated_at", b)
    return {
        connection_id: Outcomes(posted.get(connection_id, [0] * b.count), failed.get(connection_id, [0] * b.count))
        for connection_id in set(posted) | set(failed)
    }


# -- event-to-posted latency --------------------------------------------------------------------


@dataclass(frozen=True)
class Percentiles:
    count: int
    p50: float | None
    p95: float | None
    p99: float | None


NO_LATENCY = Percentiles(0, None, None, None)


@dataclass
class LatencySeries:
    p50: list[float | None]
    p95: list[float | None]
    p99: list[float | None]
    count: list[int]
    overall: Percentiles


@dataclass
class LatencyStats:
    """Percentiles over the window: overall, per bucket, per connection, per connection and bucket."""

    buckets: Buckets
    overall: Percentiles
    by_bucket: dict[int, Percentiles]
    by_connection: dict[int, Percentiles]
    by_connection_bucket: dict[tuple[int, int], Percentiles]
    sampled: bool = False

    def series(self, connection_id: int | None = None) -> LatencySeries:
        """All connections together, or one."""
        if connection_id is None:
            found, overall = self.by_bucket, self.overall
        else:
            found = {i: p for (c, i), p in self.by_connection_bucket.items() if c == connection_id}
            overall = self.by_connection.get(connection_id, NO_LATENCY)
        points = [found.get(i, NO_LATENCY) for i in range(self.buckets.count)]
        return LatencySeries(
            p50=[p.p50 for p in points],
            p95=[p.p95 for p in points],
            p99=[p.p99 for p in points],
            count=[p.count for p in points],
            overall=overall,
        )


def _planning_event_received_at() -> Subquery:
    return Subquery(
        InboxEvent.objects.filter(
            correlation_id=OuterRef("correlation_id"),
            received_at__lte=OuterRef("created_at"),
            processed_at__gte=OuterRef("created_at"),
        )
        .exclude(correlation_id="")
        .order_by("-received_at")
        .values("received_at")[:1],
        output_field=DateTimeField(),
    )


def posted_with_latency(b: Buckets) -> QuerySet[Posting]:
    """Postings posted in the window, each with ``latency`` in seconds from its billing event."""
    return (
        Posting.objects.filter(_in_window("posted_at", b), state=PostingState.POSTED)
        .annotate(event_at=Coalesce(_planning_event_received_at(), F("created_at"), output_field=DateTimeField()))
        .annotate(latency=EpochSeconds(F("posted_at")) - EpochSeconds(F("event_at")))
    )


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def _from_values(values: list[float]) -> Percentiles:
    if not values:
        return NO_LATENCY
    ordered = sorted(values)
    return Percentiles(len(ordered), *(_seconds(percentile(ordered, fraction)) for _, fraction in PERCENTILES))


def _stats_in_database(b: Buckets) -> LatencyStats:
    """One scan: each posting's latency is computed once, then ``percentile_cont`` over the grouping
    sets (connection and bucket, bucket, connection, everything)."""
    inner = (
        posted_with_latency(b)
        .annotate(bucket=_bucket("posted_at", b))
        .values_list("connection_id", "bucket", "latency")
        .order_by()
    )
    inner_sql, params = inner.query.sql_with_params()
    fractions = ", ".join(repr(fraction) for _, fraction in PERCENTILES)
    sql = (
        "SELECT connection_id, bucket, GROUPING(connection_id), GROUPING(bucket), COUNT(*), "
        f"PERCENTILE_CONT(ARRAY[{fractions}]) WITHIN GROUP (ORDER BY latency) "
        f"FROM ({inner_sql}) AS posted "
        "GROUP BY GROUPING SETS ((connection_id, bucket), (bucket), (connection_id), ())"
    )
    stats = LatencyStats(b, NO_LATENCY, {}, {}, {})
    with db_connection.cursor() as cursor:
        cursor.execute(sql, params)
        for connection_id, bucket, no_connection, no_bucket, count, found in cursor.fetchall():
            if not count:
                continue
            percentiles = Percentiles(count, *(_seconds(value) for value in found))
            if no_connection and no_bucket:
                stats.overall = percentiles
            elif no_connection:
                stats.by_bucket[int(bucket)] = percentiles
            elif no_bucket:
                stats.by_connection[connection_id] = percentiles
            else:
                stats.by_connection_bucket[(connection_id, int(bucket))] = percentiles
    return stats


def _stats_in_python(b: Buckets) -> LatencyStats:
    rows = list(
        posted_with_latency(b)
        .order_by("-posted_at")
        .values_list("connection_id", "posted_at", "latency")[:LATENCY_SAMPLE]
    )
    everything: list[float] = []
    by_bucket: dict[int, list[float]] = defaultdict(list)
    by_connection: dict[int, list[float]] = defaultdict(list)
    by_connection_bucket: dict[tuple[int, int], list[float]] = defaultdict(list)
    for connection_id, posted_at, latency in rows:
        seconds = float(latency)
        index = b.index(posted_at)
        everything.append(seconds)
        by_connection[connection_id].append(seconds)
        if index is not None:
            by_bucket[index].append(seconds)
            by_connection_bucket[(connection_id, index)].append(seconds)
    return LatencyStats(
        b,
        _from_values(everything),
        {key: _from_values(values) for key, values in by_bucket.items()},
        {key: _from_values(values) for key, values in by_connection.items()},
        {key: _from_values(values) for key, values in by_connection_bucket.items()},
        sampled=len(rows) == LATENCY_SAMPLE,
    )


def latency_stats(b: Buckets, *, in_database: bool | None = None) -> LatencyStats:
    """Event-to-posted latency percentiles. ``in_database``: ``percentile_cont`` in PostgreSQL (the
    default there) or Python over the latest ``LATENCY_SAMPLE`` postings (the default elsewhere)."""
    use_database = db_connection.vendor == "postgresql" if in_database is None else in_database
    return _stats_in_database(b) if use_database else _stats_in_python(b)


# -- backlog ------------------------------------------------------------------------------------


def _with_left_at(queryset: QuerySet[Posting]) -> QuerySet[Posting]:
    """When the posting left the backlog: posted, parked, dead or skipped (none while it is in it)."""
    return queryset.annotate(
        left_at=Case(
            When(state=PostingState.POSTED, then=Coalesce(F("posted_at"), F("updated_at"))),
            When(state__in=LEFT_BACKLOG_STATES, then=F("updated_at")),
            default=None,
            output_field=DateTimeField(),
        )
    )


def backlog_by_connection(b: Buckets) -> dict[int, list[int]]:
    """Postings in the backlog at the end of each bucket (now, for the last one), per connection."""
    postings = _with_left_at(Posting.objects.all())
    before = (
        postings.filter(created_at__lt=b.start)
        .filter(Q(state__in=BACKLOG_STATES) | Q(left_at__gte=b.start))
        .values("connection_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    start = {row["connection_id"]: row["n"] for row in before}
    arrived = _count_by_connection_and_bucket(postings, "created_at", b)
    left = _count_by_connection_and_bucket(postings.filter(left_at__isnull=False), "left_at", b)
    result: dict[int, list[int]] = {}
    for connection_id in set(start) | set(arrived) | set(left):
        level = start.get(connection_id, 0)
        series = []
        for index in range(b.count):
            level += arrived.get(connection_id, [0] * b.count)[index] - left.get(connection_id, [0] * b.count)[index]
            series.append(level)
        result[connection_id] = series
    return result


def current_backlog() -> dict[int, int]:
    rows = Posting.objects.filter(state__in=BACKLOG_STATES).values("connection_id").annotate(n=Count("id")).order_by()
    return {row["connection_id"]: row["n"] for row in rows}


# -- exception aging ----------------------------------------------------------------------------


def age_bucket(age: timedelta) -> AgeBucket:
    for bucket in AGE_BUCKETS:
        if bucket.below is None or age < bucket.below:
            return bucket
    raise AssertionError("the last age bucket has no bound")


@dataclass
class Aging:
    series: dict[str, list[int]]  # age bucket key → open cases at the end of each bucket
    truncated: bool = False


def exception_aging(b: Buckets, connection_ids: Iterable[int] | None = None) -> Aging:
    cases = ExceptionCase.objects.filter(opened_at__lt=b.end).filter(
        Q(resolved_at__isnull=True) | Q(resolved_at__gt=b.start)
    )
    if connection_ids is not None:
        cases = cases.filter(connection_id__in=list(connection_ids))
    rows = list(cases.order_by("-opened_at").values_list("opened_at", "resolved_at")[:CASE_LIMIT])
    series = {bucket.key: [0] * b.count for bucket in AGE_BUCKETS}
    moments = [b.moment(i) for i in range(b.count)]
    for opened_at, resolved_at in rows:
        for index, moment in enumerate(moments):
            if opened_at <= moment and (resolved_at is None or resolved_at > moment):
                series[age_bucket(moment - opened_at).key][index] += 1
    return Aging(series, truncated=len(rows) == CASE_LIMIT)


def open_cases_by_connection() -> dict[int | None, tuple[int, datetime]]:
    """Per connection: how many cases are open, and when the oldest was opened."""
    rows = (
        ExceptionCase.objects.filter(status=CaseStatus.OPEN)
        .values("connection_id")
        .annotate(n=Count("id"), oldest=Min("opened_at"))
        .order_by()
    )
    return {row["connection_id"]: (row["n"], row["oldest"]) for row in rows}


def reconciliation_backlog(b: Buckets, connection: ERPConnection | None = None) -> list[int]:
    from apps.reconciliation.services import open_differences_at

    return open_differences_at([b.moment(i) for i in range(b.count)], connection)


# -- SLA ----------------------------------------------------------------------------------------


def duration_words(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if seconds < 2 * 86400:
        hours, rest = divmod(round(seconds / 60), 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(round(seconds / 3600), 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


@dataclass(frozen=True)
class Breach:
    connection: str
    measure: str  # success_rate, latency_p95, backlog, case_age
    sentence: str


@dataclass
class ConnectionHealth:
    connection: ERPConnection
    sla: ConnectionSLA
    posted: int
    failed: int
    success_rate: Decimal | None
    latency: Percentiles
    backlog: int
    open_cases: int
    oldest_case_age: timedelta | None
    breaches: list[Breach] = field(default_factory=list)

    @property
    def sla_is_default(self) -> bool:
        return self.sla.pk is None

    def breached(self, measure: str) -> bool:
        return any(breach.measure == measure for breach in self.breaches)

    @property
    def breached_success_rate(self) -> bool:
        return self.breached("success_rate")

    @property
    def breached_latency_p95(self) -> bool:
        return self.breached("latency_p95")

    @property
    def breached_backlog(self) -> bool:
        return self.breached("backlog")

    @property
    def breached_case_age(self) -> bool:
        return self.breached("case_age")

    @property
    def latency_p95_words(self) -> str:
        return "—" if self.latency.p95 is None else duration_words(self.latency.p95)

    @property
    def oldest_case_age_words(self) -> str:
        return "—" if self.oldest_case_age is None else duration_words(self.oldest_case_age.total_seconds())


def breaches_of(health: ConnectionHealth, window: Window) -> list[Breach]:
    sla, name, found = health.sla, health.connection.name, []
    if health.success_rate is not None and health.success_rate < sla.min_success_rate_percent:
        found.append(
            Breach(
                name,
                "success_rate",
                f"{name}: {health.success_rate}% of postings succeeded in the {window.title} "
                f"({health.posted} posted, {health.failed} parked or dead), below the SLA minimum of "
                f"{sla.min_success_rate_percent}%.",
            )
        )
    if health.latency.p95 is not None and health.latency.p95 > sla.max_p95_latency_seconds:
        found.append(
            Breach(
                name,
                "latency_p95",
                f"{name}: 95% of documents were posted within {duration_words(health.latency.p95)} of their "
                f"billing event in the {window.title}; the SLA allows "
                f"{duration_words(sla.max_p95_latency_seconds)}.",
            )
        )
    if health.backlog > sla.max_backlog:
        found.append(
            Breach(
                name,
                "backlog",
                f"{name}: {health.backlog} postings wait to be posted; the SLA allows at most {sla.max_backlog}.",
            )
        )
    if health.oldest_case_age is not None and health.oldest_case_age > timedelta(hours=sla.max_open_case_age_hours):
        found.append(
            Breach(
                name,
                "case_age",
                f"{name}: the oldest open exception case has been open "
                f"{duration_words(health.oldest_case_age.total_seconds())}; the SLA allows "
                f"{sla.max_open_case_age_hours} hours.",
            )
        )
    return found


def connection_health(
    b: Buckets,
    *,
    in_database: bool | None = None,
    outcomes: dict[int, Outcomes] | None = None,
    latencies: LatencyStats | None = None,
) -> list[ConnectionHealth]:
    """Each connection's figures over the window (backlog and open cases: now) and its breaches."""
    connections = list(ERPConnection.objects.order_by("name"))
    slas = {sla.connection_id: sla for sla in ConnectionSLA.objects.all()}
    outcomes = outcomes_by_connection(b) if outcomes is None else outcomes
    latencies = latency_stats(b, in_database=in_database) if latencies is None else latencies
    backlog = current_backlog()
    cases = open_cases_by_connection()
    report = []
    for connection in connections:
        counted = outcomes.get(connection.pk)
        open_count, oldest = cases.get(connection.pk, (0, None))
        health = ConnectionHealth(
            connection=connection,
            sla=slas.get(connection.pk) or ConnectionSLA(connection=connection),
            posted=counted.total_posted if counted else 0,
            failed=counted.total_failed if counted else 0,
            success_rate=counted.overall_rate if counted else None,
            latency=latencies.by_connection.get(connection.pk, NO_LATENCY),
            backlog=backlog.get(connection.pk, 0),
            open_cases=open_count,
            oldest_case_age=(b.now - oldest) if oldest else None,
        )
        health.breaches = breaches_of(health, b.window)
        report.append(health)
    return report


# -- the page -----------------------------------------------------------------------------------


def _number(value: Decimal | float | None) -> float | None:
    return None if value is None else float(value)


def build(
    window: str = DEFAULT_WINDOW,
    connection: ERPConnection | None = None,
    *,
    now: datetime | None = None,
    in_database: bool | None = None,
) -> dict[str, Any]:
    """Everything the page shows: the SLA table, the breaches in words and the charts' data."""
    b = buckets(window if window in WINDOWS else DEFAULT_WINDOW, now)
    outcomes = outcomes_by_connection(b)
    stats = latency_stats(b, in_database=in_database)
    health = connection_health(b, outcomes=outcomes, latencies=stats)
    shown = [h for h in health if connection is None or h.connection.pk == connection.pk]
    selected_ids = None if connection is None else [connection.pk]
    backlog = backlog_by_connection(b)
    lat = stats.series(None if connection is None else connection.pk)
    aging = exception_aging(b, selected_ids)

    def success_dataset(h: ConnectionHealth) -> dict[str, Any]:
        counted = outcomes.get(h.connection.pk, Outcomes([0] * b.count, [0] * b.count))
        rates = counted.rates()
        minimum = h.sla.min_success_rate_percent
        return {
            "label": h.connection.name,
            "data": [_number(rate) for rate in rates],
            "breaches": [rate is not None and rate < minimum for rate in rates],
            "threshold": float(minimum),
        }

    def backlog_dataset(h: ConnectionHealth) -> dict[str, Any]:
        series = backlog.get(h.connection.pk, [0] * b.count)
        return {
            "label": h.connection.name,
            "data": series,
            "breaches": [level > h.sla.max_backlog for level in series],
            "threshold": h.sla.max_backlog,
        }

    single = shown[0] if connection is not None and shown else None
    p95_limit = single.sla.max_p95_latency_seconds if single else None
    charts = {
        "window": b.window.key,
        "labels": b.labels(),
        "success": [success_dataset(h) for h in shown],
        "latency": {
            "p50": lat.p50,
            "p95": lat.p95,
            "p99": lat.p99,
            "count": lat.count,
            "threshold": p95_limit,
            "breaches": [p95_limit is not None and p is not None and p > p95_limit for p in lat.p95],
        },
        "backlog": [backlog_dataset(h) for h in shown],
        "aging": [{"key": a.key, "label": a.label, "data": aging.series[a.key]} for a in AGE_BUCKETS],
        "reconciliation": reconciliation_backlog(b, connection),
    }
    return {
        "buckets": b,
        "health": shown,
        "breaches": [breach for h in shown for breach in h.breaches],
        "charts": charts,
        "latency_overall": lat.overall,
        "latency_sampled": stats.sampled,
        "aging_truncated": aging.truncated,
        "reconciliation_note": RECONCILIATION_NOTE,
    }
