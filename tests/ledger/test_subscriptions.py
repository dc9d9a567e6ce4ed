"""Subscription changes and renewals become status events in the ledger, in billing's order."""

from __future__ import annotations

from datetime import date

import pytest

from apps.ledger import services as ledger
from apps.ledger.models import Subscription, SubscriptionEvent
from apps.sources import stripe_samples as se
from apps.sources.stripe import parse_event

pytestmark = pytest.mark.usefixtures("configured")

DAY = 86400
START = 1_764_547_200  # 2025-12-01


def record(event_type: str, obj: dict[str, object], created: int) -> None:
    [command] = parse_event(se.event(event_type, obj, created=created))
    ledger.upsert_subscription("stripe-us", command)  # type: ignore[arg-type]


def kinds(subscription_id: str) -> list[str]:
    return list(
        SubscriptionEvent.objects.filter(subscription__source_id=subscription_id).values_list("kind", flat=True)
    )


def test_start_renewal_plan_change_and_cancellation_are_told_apart() -> None:
    sub = se.subscription("cus_1", ["price_pro_monthly"], period_start=START)
    record("customer.subscription.created", sub, START)
    renewed = se.subscription("cus_1", ["price_pro_monthly"], period_start=START + 31 * DAY, subscription_id=sub["id"])
    record("customer.subscription.updated", renewed, START + 31 * DAY)
    upgraded = se.subscription(
        "cus_1",
        ["price_team_monthly"],
        period_start=START + 31 * DAY,
        subscription_id=sub["id"],
        cancel_at_period_end=True,
    )
    record("customer.subscription.updated", upgraded, START + 40 * DAY)
    record("customer.subscription.deleted", {**upgraded, "status": "canceled"}, START + 62 * DAY)

    assert kinds(sub["id"]) == ["started", "renewed", "changed", "cancellation_scheduled", "canceled"]
    held = Subscription.objects.get(source_id=sub["id"])
    assert (held.status, held.price_ids, held.period_start) == ("canceled", ["price_team_monthly"], date(2026, 1, 1))


def test_a_late_update_changes_nothing() -> None:
    sub = se.subscription("cus_1", ["price_pro_monthly"], period_start=START)
    record("customer.subscription.created", sub, START)
    record("customer.subscription.updated", {**sub, "status": "past_due"}, START + 5 * DAY)
    record("customer.subscription.updated", {**sub, "status": "active"}, START + 2 * DAY)  # older than the last

    assert kinds(sub["id"]) == ["started", "status_changed"]
    assert Subscription.objects.get(source_id=sub["id"]).status == "past_due"
