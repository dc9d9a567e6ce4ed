"""The reconciliation backlog over time: at each moment, the differences the latest run of each
scope had left, summed over scopes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from apps.ledger.models import LegalEntity
from apps.reconciliation import services
from apps.reconciliation.models import ReconciliationRun, RunStatus, Trigger
from apps.routing.models import ERPConnection

T0 = datetime(2026, 11, 2, 3, 0, tzinfo=UTC)


def finished(connection: ERPConnection, period: tuple[date, date], at: datetime, differences: int) -> None:
    ReconciliationRun.objects.create(
        connection=connection,
        legal_entity=LegalEntity.objects.get(code="US01"),
        currency="USD",
        period_start=period[0],
        period_end=period[1],
        trigger=Trigger.SCHEDULE,
        requested_by="system",
        status=RunStatus.COMPLETED,
        finished_at=at,
        difference_count=differences,
    )


@pytest.mark.usefixtures("configured")
def test_each_scope_counts_its_latest_run_by_then() -> None:
    tryton = ERPConnection.objects.get(name="tryton-local")
    other = ERPConnection.objects.create(name="tryton-eu", kind="tryton", settings={})
    october, november = services.month_of(date(2026, 10, 5)), services.month_of(date(2026, 11, 5))
    finished(tryton, october, T0, 12)
    finished(tryton, november, T0 + timedelta(minutes=5), 4)
    finished(tryton, october, T0 + timedelta(days=1), 3)  # the next day: October nearly closed
    finished(other, november, T0 + timedelta(days=1, hours=1), 7)
    ReconciliationRun.objects.create(  # a failed run changes nothing
        connection=tryton,
        legal_entity=LegalEntity.objects.get(code="US01"),
        currency="USD",
        period_start=october[0],
        period_end=october[1],
        trigger=Trigger.ADMIN,
        requested_by="x",
        status=RunStatus.FAILED,
        finished_at=T0 + timedelta(days=2),
    )

    moments = [T0 + timedelta(hours=hours) for hours in (-1, 1, 26, 72)]
    assert services.open_differences_at(moments) == [0, 16, 14, 14]
    assert services.open_differences_at(moments, connection=tryton) == [0, 16, 7, 7]
