"""The database aggregates behind the gauges and the control tower, on rows with known times."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.observability import services
from apps.posting.models import Operation, Posting, PostingState
from apps.sources import stripe_samples as se
from tests.conftest import deliver

pytestmark = pytest.mark.usefixtures("configured")


def invoice_posting(client: Client) -> tuple[InboxEvent, Posting]:
    event = se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(1000)]))
    deliver(client, event)
    inbox = InboxEvent.objects.get(event_id=event["id"])
    normalize_event(inbox.pk)
    inbox.refresh_from_db()
    return inbox, Posting.objects.get(operation=Operation.POST_INVOICE, correlation_id=inbox.correlation_id)


def test_event_to_posted_percentiles_start_at_the_webhook_and_interpolate(client: Client) -> None:
    now = timezone.now()
    for seconds in (10, 20, 30, 40):
        inbox, posting = invoice_posting(client)
        Posting.objects.filter(pk=posting.pk).update(
            state=PostingState.POSTED, posted_at=inbox.received_at + timedelta(seconds=seconds)
        )
    # A posting planned later (not while its event was normalized) counts from its own creation.
    _, later = invoice_posting(client)
    Posting.objects.filter(pk=later.pk).update(
        state=PostingState.POSTED,
        created_at=now + timedelta(minutes=5),
        posted_at=now + timedelta(minutes=5, seconds=5),
    )

    found = services.event_to_posted_percentiles(now - timedelta(hours=1), now + timedelta(hours=1))
    entry = found["tryton-local"]
    assert entry["count"] == 5
    # 5, 10, 20, 30, 40: linear interpolation between closest ranks (PostgreSQL's percentile_cont).
    assert entry["p50"] == pytest.approx(20, abs=0.01)
    assert entry["p95"] == pytest.approx(38, abs=0.01)
    assert entry["p99"] == pytest.approx(39.6, abs=0.01)
    assert services._percentile([5, 10, 20, 30, 40], 0.95) == pytest.approx(38)
    assert connection.vendor == "postgresql"  # the figures above came from percentile_cont


def test_success_rate_counts_what_was_decided_in_the_window(client: Client) -> None:
    now = timezone.now()
    outcomes = [PostingState.POSTED, PostingState.POSTED, PostingState.POSTED, PostingState.PARKED]
    for state in outcomes:
        _, posting = invoice_posting(client)
        Posting.objects.filter(pk=posting.pk).update(
            state=state, posted_at=now if state == PostingState.POSTED else None, attempt_count=1
        )
    _, retried = invoice_posting(client)
    Posting.objects.filter(pk=retried.pk).update(state=PostingState.DEAD, attempt_count=8)
    _, old = invoice_posting(client)
    Posting.objects.filter(pk=old.pk).update(state=PostingState.POSTED, posted_at=now - timedelta(days=2))

    rate = services.success_rate(now - timedelta(hours=1), now + timedelta(minutes=1))["tryton-local"]
    assert (rate["posted"], rate["parked"], rate["dead"], rate["first_attempt"]) == (3, 1, 1, 3)
    assert rate["rate"] == pytest.approx(3 / 5)


def test_backlog_counts_each_state_and_the_oldest_age(client: Client) -> None:
    now = timezone.now()
    _, posting = invoice_posting(client)  # its customer queued, the invoice waiting
    Posting.objects.filter(pk=posting.pk).update(created_at=now - timedelta(minutes=10))
    entry = services.backlog(now)["tryton-local"]
    assert entry["queued"] == 1 and entry["waiting"] == 1 and entry["total"] == 2
    assert entry["oldest_seconds"] == pytest.approx(600, abs=1)


def test_reconciliation_differences_stay_zero_until_reconciliation_exists() -> None:
    assert services.reconciliation_differences() == {"tryton-local": 0}
