"""An open circuit holds postings without a message each: one probe at a time, then all released."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.flow import services as flow
from apps.flow.models import CircuitState, ConnectionFlow
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor, services
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.conftest import deliver

pytestmark = pytest.mark.usefixtures("configured")


def customers(client: Client, count: int) -> list[Posting]:
    ids = []
    for _ in range(count):
        obj = se.invoice(se.uid("cus"), [se.line(1000)])
        event = se.event("invoice.finalized", obj)
        deliver(client, event)
        normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
        ids.append(obj["customer"])
    return list(Posting.objects.filter(source_id__in=ids, operation=Operation.ENSURE_CUSTOMER).order_by("pk"))


def test_an_open_circuit_holds_without_messages_probes_with_the_oldest_then_releases_all(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    connection = ERPConnection.objects.get(name="tryton-local")
    held = customers(client, 3)
    flow.record_failure(connection, "HTTP 503 from the ERP", authentication=True)
    flow_row = ConnectionFlow.objects.get(connection=connection)
    assert flow_row.circuit_state == CircuitState.OPEN

    for posting in held:
        assert executor.execute_posting(posting.pk) == "skipped"
    for posting in Posting.objects.filter(pk__in=[p.pk for p in held]):
        assert posting.state == PostingState.RETRY_SCHEDULED and posting.error_code == flow.HOLD_CIRCUIT
        assert posting.attempt_count == 0  # no attempt used
    # One message in all, for the first posting held, timed for the probe; none for the others.
    assert [p.pk for p in Posting.objects.filter(pk__in=[p.pk for p in held], enqueued_at__isnull=False)] == [
        held[0].pk
    ]

    # The sweepers send nothing more, even for holds past their retry time, until the probe is
    # overdue by a whole probe period (its message was lost): then the oldest held posting again.
    Posting.objects.filter(pk__in=[p.pk for p in held]).update(
        retry_at=timezone.now() - timedelta(hours=1), enqueued_at=None
    )
    ConnectionFlow.objects.filter(pk=flow_row.pk).update(next_probe_at=timezone.now() - timedelta(seconds=1))
    assert services.sweep_postings()["requeued"] == 0
    assert not Posting.objects.filter(pk__in=[p.pk for p in held], enqueued_at__isnull=False).exists()

    overdue = timezone.now() - timedelta(seconds=flow_row.probe_after_seconds + 1)
    ConnectionFlow.objects.filter(pk=flow_row.pk).update(next_probe_at=overdue)
    services.sweep_postings()
    sent = list(Posting.objects.filter(pk__in=[p.pk for p in held], enqueued_at__isnull=False))
    assert [p.pk for p in sent] == [held[0].pk]

    # The ERP answers again: the circuit closes and every held posting is due and sent, oldest first.
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        flow.record_success(connection)
    assert len(callbacks) == 3
    for posting in Posting.objects.filter(pk__in=[p.pk for p in held]):
        assert posting.error_code == "" and posting.enqueued_at is not None
        assert posting.retry_at <= timezone.now()
