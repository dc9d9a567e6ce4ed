"""A dispute only moves forward in the ledger, whatever order Stripe's events arrive in."""

from __future__ import annotations

from datetime import date

import pytest

from apps.ledger import services as ledger
from apps.ledger.commands import DisputeData
from apps.ledger.models import Dispute

pytestmark = pytest.mark.usefixtures("configured")


def data(status: str, version: int) -> DisputeData:
    return DisputeData(
        source_id="dp_1",
        source_version=version,
        payment_source_id="pi_1",
        currency="usd",
        amount_minor=6150,
        status=status,
        opened_on=date(2026, 11, 2),
        closed_on=date(2026, 11, 20) if status in ("won", "lost") else None,
    )


def test_a_decided_dispute_is_not_reopened_by_a_late_update() -> None:
    assert ledger.upsert_dispute("stripe-us", data("open", 10)).created
    assert ledger.upsert_dispute("stripe-us", data("won", 20)).changed
    late = ledger.upsert_dispute("stripe-us", data("open", 15))
    other = ledger.upsert_dispute("stripe-us", data("lost", 30))

    assert (late.changed, late.stale, other.changed) == (False, True, False)
    dispute = Dispute.objects.get(source_id="dp_1")
    assert (dispute.status, dispute.closed_on, dispute.currency) == ("won", date(2026, 11, 20), "USD")


def test_an_inquiry_that_escalates_withdraws_the_funds() -> None:
    ledger.upsert_dispute("stripe-us", data("inquiry", 10))
    assert not Dispute.objects.get(source_id="dp_1").funds_withdrawn
    assert ledger.upsert_dispute("stripe-us", data("open", 11)).changed
    assert Dispute.objects.get(source_id="dp_1").funds_withdrawn
