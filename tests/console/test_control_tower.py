"""The control tower's figures from seeded rows with known answers: success rate, event-to-posted
latency percentiles (in PostgreSQL and in Python, the same numbers), backlog rebuilt over time,
exception aging, SLA breaches in words, and the page as each role sees it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from apps.console import control_tower as tower
from apps.console.models import ConnectionSLA
from apps.core.models import AuditEvent
from apps.posting.models import PostingState
from apps.routing.models import ERPConnection
from tests.console.conftest import as_user
from tests.console.control_tower_data import Seed, sla
from tests.console.control_tower_data import connection as erp_connection

# Mid-bucket on purpose: the day window's last bucket is 10:00-11:00 and holds "now".
NOW = datetime(2026, 11, 20, 10, 2, 30, tzinfo=UTC)
TOWER = "/admin/console/controltower/"


def at(hh: int, mm: int, ss: float = 0, *, days_before: int = 0) -> datetime:
    return datetime(2026, 11, 20, hh, mm, tzinfo=UTC) - timedelta(days=days_before) + timedelta(seconds=ss)


def seed(now: datetime) -> dict[str, ERPConnection]:
    """erp-a healthy (its own SLA, 80% minimum), erp-b breaching every threshold, erp-c idle with the
    defaults. Times are given relative to ``now`` so the page tests can seed around the real clock."""
    shift = now - NOW

    def t(moment: datetime) -> datetime:
        return moment + shift

    a, b, c = erp_connection("erp-a"), erp_connection("erp-b"), erp_connection("erp-c")
    sla(a, min_success="80", max_p95=300, max_backlog=10, max_case_hours=24)
    sla(b, min_success="90", max_p95=300, max_backlog=3, max_case_hours=24)
    rows = Seed()

    # erp-a, 10:00-11:00: three posted (10, 20, 30 s after their events), one parked.
    # The first event's correlation id was sent again by the caller at 09:40 on another event; that
    # one was processed before the posting existed, so it is not the posting's event.
    rows.event("cid-a1", t(at(9, 40)), t(at(9, 40, 1)))
    rows.event("cid-a1", t(at(10, 0)), t(at(10, 0, 1)))
    rows.posting(a, "posted", created_at=t(at(10, 0, 0.5)), posted_at=t(at(10, 0, 10)), correlation_id="cid-a1")
    rows.event("cid-a2", t(at(10, 0, 20)), t(at(10, 0, 21)))
    rows.posting(a, "posted", created_at=t(at(10, 0, 20.5)), posted_at=t(at(10, 0, 40)), correlation_id="cid-a2")
    rows.event("cid-a3", t(at(10, 1)), t(at(10, 1, 1)))
    rows.posting(a, "posted", created_at=t(at(10, 1, 0.5)), posted_at=t(at(10, 1, 30)), correlation_id="cid-a3")
    rows.posting(a, PostingState.PARKED, created_at=t(at(10, 0, 30)), updated_at=t(at(10, 1)))

    # erp-a, 09:00-10:00: four posted, 60, 120, 180 and 240 s.
    rows.event("cid-a4", t(at(9, 0)), t(at(9, 0, 5)))
    rows.posting(a, "posted", created_at=t(at(9, 0, 2)), posted_at=t(at(9, 1)), correlation_id="cid-a4")
    rows.event("cid-a5", t(at(9, 20)), t(at(9, 20, 1)))
    rows.posting(a, "posted", created_at=t(at(9, 20, 0.5)), posted_at=t(at(9, 22)), correlation_id="cid-a5")
    # No correlation id: counted from the posting's creation.
    rows.posting(a, "posted", created_at=t(at(9, 30)), posted_at=t(at(9, 33)))
    # A later posting about a document that keeps its first event's correlation id (a void, say):
    # counted from its creation, not from the event five days before.
    rows.event("cid-a-old", t(at(9, 10, days_before=5)), t(at(9, 10, 1, days_before=5)))
    rows.posting(a, "posted", created_at=t(at(9, 10)), posted_at=t(at(9, 14)), correlation_id="cid-a-old")
    # Two days ago: outside the day, inside the month.
    rows.posting(a, "posted", created_at=t(at(10, 1, 30, days_before=2)), posted_at=t(at(10, 2, 30, days_before=2)))

    # erp-b: one posted 600 s after its event, two dead and one parked; a backlog of five.
    rows.event("cid-b1", t(at(9, 50)), t(at(9, 50, 1)))
    rows.posting(b, "posted", created_at=t(at(9, 50, 0.5)), posted_at=t(at(10, 0)), correlation_id="cid-b1")
    for state in (PostingState.DEAD, PostingState.DEAD, PostingState.PARKED):
        rows.posting(b, state, created_at=t(at(9, 50)), updated_at=t(at(10, 1)))
    for _ in range(3):
        rows.posting(b, PostingState.QUEUED, created_at=t(at(8, 30)))
    rows.posting(b, PostingState.IN_FLIGHT, created_at=t(at(10, 1)))
    rows.posting(b, PostingState.QUEUED, created_at=t(at(10, 0, days_before=2)))
    # Left the backlog at 16:30 yesterday (bucket 5 of the day).
    rows.posting(
        b, PostingState.SKIPPED, created_at=t(at(9, 0, days_before=2)), updated_at=t(at(16, 30, days_before=1))
    )

    # Exception cases.
    rows.case(a, opened_at=t(NOW - timedelta(hours=2)))
    rows.case(b, opened_at=t(NOW - timedelta(days=3)))
    rows.case(b, opened_at=t(at(9, 30)), resolved_at=t(at(10, 1)))
    rows.case(a, opened_at=t(NOW - timedelta(days=10)), resolved_at=t(NOW - timedelta(hours=12)))
    rows.save()
    return {"a": a, "b": b, "c": c}


@pytest.fixture
def seeded(db: None) -> dict[str, ERPConnection]:
    return seed(NOW)


def test_buckets_are_aligned_on_utc_and_the_last_holds_now() -> None:
    day = tower.buckets("day", NOW)
    assert (day.start, day.end) == (at(11, 0, days_before=1), at(11, 0))
    assert day.labels()[0] == "11:00" and day.labels()[-1] == "10:00" and day.count == 24
    hour = tower.buckets("hour", NOW)
    assert (hour.start, hour.end, hour.count) == (at(9, 5), at(10, 5), 12)
    assert hour.labels()[-1] == "10:00"
    month = tower.buckets("month", NOW)
    assert (month.start, month.end, month.count) == (at(0, 0, days_before=29), at(0, 0) + timedelta(days=1), 30)
    assert month.labels()[-1] == "20 Nov"


def test_success_rate_per_bucket_is_posted_over_posted_parked_and_dead(seeded: dict[str, ERPConnection]) -> None:
    a, b, c = seeded["a"].pk, seeded["b"].pk, seeded["c"].pk
    day = tower.outcomes_by_connection(tower.buckets("day", NOW))
    assert day[a].posted[22:] == [4, 3] and day[a].failed[22:] == [0, 1]
    assert day[a].rates()[22:] == [Decimal("100.00"), Decimal("75.00")]
    assert day[a].rates()[:22] == [None] * 22  # nothing happened: a gap, not 0%
    assert day[a].overall_rate == Decimal("87.50")
    assert day[b].rates()[23] == Decimal("25.00") and day[b].overall_rate == Decimal("25.00")
    assert c not in day

    month = tower.outcomes_by_connection(tower.buckets("month", NOW))
    assert month[a].posted[27] == 1 and month[a].posted[29] == 7 and month[a].overall_rate == Decimal("88.89")

    hour = tower.outcomes_by_connection(tower.buckets("hour", NOW))
    # 09:14, 09:22 and 09:33 fall in the 5-minute buckets 1, 3 and 5 after 09:05.
    assert hour[a].posted == [0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0, 3] and hour[a].failed == [0] * 11 + [1]


# percentile_cont is PostgreSQL's; the Python way runs everywhere (the SQLite demo).
IN_DATABASE = [True, False] if connection.vendor == "postgresql" else [False]


@pytest.mark.parametrize("in_database", IN_DATABASE, ids=["percentile_cont", "python"][-len(IN_DATABASE) :])
def test_latency_counts_from_the_event_that_planned_the_posting(
    seeded: dict[str, ERPConnection], in_database: bool
) -> None:
    a = seeded["a"].pk
    stats = tower.latency_stats(tower.buckets("day", NOW), in_database=in_database)
    series = stats.series(a)
    assert series.count[22:] == [4, 3] and sum(series.count) == 7
    # [60, 120, 180, 240] and [10, 20, 30], interpolated like percentile_cont.
    assert (series.p50[22], series.p95[22], series.p99[22]) == (150.0, 231.0, 238.2)
    assert (series.p50[23], series.p95[23], series.p99[23]) == (20.0, 29.0, 29.8)
    assert series.p95[:22] == [None] * 22
    assert series.overall == tower.Percentiles(7, 60.0, 222.0, 236.4)

    assert stats.by_connection[seeded["b"].pk] == tower.Percentiles(1, 600.0, 600.0, 600.0)
    assert stats.by_connection[a] == series.overall
    assert seeded["c"].pk not in stats.by_connection

    everyone = stats.series()
    assert everyone.count[23] == 4 and everyone.p50[23] == 25.0  # [10, 20, 30, 600]
    assert everyone.overall == tower.Percentiles(8, 90.0, 474.0, 574.8)  # [10, 20, 30, 60, 120, 180, 240, 600]
    assert not stats.sampled


def test_backlog_is_rebuilt_at_the_end_of_each_bucket_and_ends_at_the_live_count(
    seeded: dict[str, ERPConnection],
) -> None:
    a, b = seeded["a"].pk, seeded["b"].pk
    backlog = tower.backlog_by_connection(tower.buckets("day", NOW))
    # Two from before the window (one skipped at 16:30, bucket 5), three queued at 08:30, four more
    # at 09:50, of which all four leave after 10:00, and one in flight since 10:01.
    assert backlog[b] == [2] * 5 + [1] * 16 + [4, 8, 5]
    assert backlog[a] == [0] * 24
    assert tower.current_backlog() == {b: 5}


def test_exception_aging_counts_open_cases_by_age_at_each_bucket_end(seeded: dict[str, ERPConnection]) -> None:
    aging = tower.exception_aging(tower.buckets("day", NOW))
    assert aging.series == {
        "under_1h": [0] * 21 + [1, 1, 0],
        "1h_24h": [0] * 22 + [1, 1],
        "1d_7d": [1] * 24,
        "over_7d": [1] * 11 + [0] * 13,
    }
    only_a = tower.exception_aging(tower.buckets("day", NOW), [seeded["a"].pk])
    assert only_a.series["1d_7d"] == [0] * 24 and only_a.series["1h_24h"][23] == 1
    assert tower.reconciliation_backlog(tower.buckets("month", NOW)) == [0] * 30


def test_sla_breaches_are_named_in_words_per_connection(seeded: dict[str, ERPConnection]) -> None:
    report = {h.connection.name: h for h in tower.connection_health(tower.buckets("day", NOW))}
    assert report["erp-a"].breaches == [] and report["erp-a"].success_rate == Decimal("87.50")
    assert report["erp-a"].latency.p95 == 222.0 and report["erp-a"].oldest_case_age == timedelta(hours=2)
    assert [breach.sentence for breach in report["erp-b"].breaches] == [
        "erp-b: 25.00% of postings succeeded in the last day (1 posted, 3 parked or dead), "
        "below the SLA minimum of 90.00%.",
        "erp-b: 95% of documents were posted within 10 min of their billing event in the last day; "
        "the SLA allows 5 min.",
        "erp-b: 5 postings wait to be posted; the SLA allows at most 3.",
        "erp-b: the oldest open exception case has been open 3 days; the SLA allows 24 hours.",
    ]
    idle = report["erp-c"]
    assert idle.sla_is_default and idle.sla.min_success_rate_percent == Decimal("95.00")
    assert (idle.success_rate, idle.latency.count, idle.backlog, idle.breaches) == (None, 0, 0, [])

    page = tower.build("day", seeded["b"], now=NOW)
    assert [d["label"] for d in page["charts"]["success"]] == ["erp-b"]
    assert page["charts"]["success"][0]["breaches"][23] is True
    assert page["charts"]["backlog"][0]["breaches"] == [False] * 21 + [True, True, True]
    assert page["charts"]["latency"]["threshold"] == 300 and page["charts"]["latency"]["breaches"][23] is True


# -- the page, as each role sees it -------------------------------------------------------------


@pytest.fixture
def seeded_now(db: None) -> dict[str, ERPConnection]:
    from django.utils import timezone

    return seed(timezone.now())


def test_finance_sees_the_tower_with_the_breaches_highlighted(seeded_now: Any, finance: Any) -> None:
    client = as_user(finance)
    index = client.get("/admin/").content.decode()
    assert f'href="{TOWER}"' in index
    assert f'href="{TOWER}"' in client.get("/admin/console/exceptioncase/").content.decode()

    page = client.get(TOWER).content.decode()
    assert 'id="sla-breaches"' in page
    assert "erp-b: 25.00% of postings succeeded in the last day" in page
    assert "erp-a:" not in page.split('id="sla-breaches"')[1].split("</ul>")[0]
    row_b = page.split('<tr data-connection="erp-b">')[1].split("</tr>")[0]
    assert row_b.count('class="breach"') == 4
    row_a = page.split('<tr data-connection="erp-a">')[1].split("</tr>")[0]
    assert 'class="breach"' not in row_a and "87.50%" in row_a
    assert "/static/console/vendor/chart.umd.js" in page and 'id="control-tower-data"' in page
    assert "cdn" not in page.lower()
    assert tower.RECONCILIATION_NOTE in page.replace("&#x27;", "'")

    hour = client.get(TOWER, {"window": "hour", "connection": "erp-a"}).content.decode()
    assert 'id="sla-ok"' in hour and "last hour" in hour


def test_auditors_read_the_tower_and_users_without_a_role_are_refused(seeded_now: Any, auditor: Any) -> None:
    assert as_user(auditor).get(TOWER).status_code == 200
    outsider = get_user_model().objects.create_user("no.role", "x@example.com", "pw", is_staff=True)
    assert as_user(outsider).get(TOWER).status_code == 403


def test_finance_sets_a_connection_sla_and_the_change_is_audited(seeded_now: Any, finance: Any) -> None:
    client = as_user(finance)
    idle = seeded_now["c"]
    response = client.post(
        "/admin/console/connectionsla/add/",
        {
            "connection": idle.pk,
            "min_success_rate_percent": "99.5",
            "max_p95_latency_seconds": "120",
            "max_backlog": "50",
            "max_open_case_age_hours": "8",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    saved = ConnectionSLA.objects.get(connection=idle)
    assert saved.min_success_rate_percent == Decimal("99.50") and saved.max_open_case_age_hours == 8
    entry = AuditEvent.objects.get(action="console.sla_set", object_id=str(saved.pk))
    assert entry.actor == finance.username and entry.after["max_backlog"] == 50

    assert client.post(f"/admin/console/connectionsla/{saved.pk}/delete/", {"post": "yes"}).status_code == 403


def test_the_page_works_on_a_client_without_a_selected_window(seeded_now: Any, admin_client: Client) -> None:
    response = admin_client.get(TOWER, {"window": "fortnight", "connection": "nope"})
    assert response.status_code == 200 and response.context["window"] == "day"
    assert response.context["selected"] is None


def test_the_reconciliation_backlog_is_the_latest_runs_open_differences(seeded: dict[str, ERPConnection]) -> None:
    from apps.ledger.models import LegalEntity
    from apps.reconciliation.models import ReconciliationRun, RunStatus

    entity = LegalEntity.objects.create(code="US01", name="Hub Demo Inc.", country="US", base_currency="USD")

    def run(connection: ERPConnection, finished: datetime, differences: int, currency: str = "USD") -> None:
        ReconciliationRun.objects.create(
            connection=connection,
            legal_entity=entity,
            currency=currency,
            period_start=datetime(2026, 11, 1).date(),
            period_end=datetime(2026, 11, 30).date(),
            trigger="scheduled",
            requested_by="system",
            status=RunStatus.COMPLETED,
            finished_at=finished,
            difference_count=differences,
        )

    run(seeded["a"], at(2, 30), 5)  # 02:30: five differences
    run(seeded["a"], at(6, 30), 2)  # 06:30: the same scope again, three of them gone
    run(seeded["b"], at(4, 30), 4, currency="EUR")  # another scope
    day = tower.buckets("day", NOW)
    series = tower.reconciliation_backlog(day)
    by_hour = dict(zip(day.labels(), series, strict=True))
    assert (by_hour["01:00"], by_hour["02:00"], by_hour["04:00"], by_hour["06:00"], by_hour["10:00"]) == (0, 5, 9, 6, 6)
    only_a = dict(zip(day.labels(), tower.reconciliation_backlog(day, seeded["a"]), strict=True))
    assert (only_a["04:00"], only_a["10:00"]) == (5, 2)
