"""The outbox state machine without an ERP behind it: claiming, waiting, recovery, retry policy."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.flow import services as flow
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor, services
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState
from apps.sources import stripe_samples as se
from tests.conftest import deliver

pytestmark = pytest.mark.usefixtures("configured")


@pytest.fixture
def planned(client: Client) -> dict[str, Posting]:
    event = se.event("invoice.paid", se.paid(se.invoice(se.uid("cus"), [se.line(1000)])))
    deliver(client, event)
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    return {p.operation: p for p in Posting.objects.all()}


def test_a_posting_is_claimed_by_one_worker_only(planned: dict[str, Posting]) -> None:
    customer = planned[Operation.ENSURE_CUSTOMER]
    first = executor.claim(customer.pk)
    assert first is not None
    assert executor.claim(customer.pk) is None  # a second worker finds it in flight: does nothing
    customer.refresh_from_db()
    assert customer.state == PostingState.IN_FLIGHT and customer.attempt_count == 1
    assert first.attempt.outcome == PostingAttempt.Outcome.STARTED  # written before the ERP call


def test_a_child_whose_parent_is_not_posted_waits_without_using_an_attempt(planned: dict[str, Posting]) -> None:
    invoice = planned[Operation.POST_INVOICE]
    assert executor.claim(invoice.pk) is None
    invoice.refresh_from_db()
    assert invoice.state == PostingState.WAITING and invoice.attempt_count == 0
    assert not invoice.attempts.exists()


def test_a_child_is_sent_only_once_its_parent_is_posted(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    customer_id = se.uid("cus")
    first = se.event("invoice.finalized", se.invoice(customer_id, [se.line(1000)]))
    deliver(client, first)
    with django_capture_on_commit_callbacks(execute=True):
        normalize_event(InboxEvent.objects.get(event_id=first["id"]).pk)
    waiting = Posting.objects.get(operation=Operation.POST_INVOICE, source_id=first["data"]["object"]["id"])
    assert waiting.state == PostingState.WAITING and waiting.enqueued_at is None  # no message for it yet

    Posting.objects.filter(operation=Operation.ENSURE_CUSTOMER).update(state=PostingState.POSTED, erp_id="7")
    second = se.event("invoice.finalized", se.invoice(customer_id, [se.line(2000)]))
    deliver(client, second)
    with django_capture_on_commit_callbacks(execute=True):
        normalize_event(InboxEvent.objects.get(event_id=second["id"]).pk)
    later = Posting.objects.get(operation=Operation.POST_INVOICE, source_id=second["data"]["object"]["id"])
    assert later.state == PostingState.QUEUED and later.enqueued_at is not None


def test_a_child_planned_while_its_parent_is_being_posted_is_not_left_waiting(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    event = se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(1000)]))
    deliver(client, event)
    with django_capture_on_commit_callbacks(execute=True):
        normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
        # Another worker posts the customer before this transaction commits: its release of
        # waiting children cannot see the invoice's row yet.
        Posting.objects.filter(operation=Operation.ENSURE_CUSTOMER).update(state=PostingState.POSTED, erp_id="7")
    invoice = Posting.objects.get(operation=Operation.POST_INVOICE, source_id=event["data"]["object"]["id"])
    assert invoice.state == PostingState.QUEUED and invoice.enqueued_at is not None


def test_posting_a_parent_releases_its_waiting_children(planned: dict[str, Posting]) -> None:
    customer, invoice = planned[Operation.ENSURE_CUSTOMER], planned[Operation.POST_INVOICE]
    executor.claim(invoice.pk)
    Posting.objects.filter(pk=customer.pk).update(state=PostingState.POSTED, erp_id="7")
    assert executor.release_waiting(customer.idempotency_key) == [invoice.pk]
    invoice.refresh_from_db()
    assert invoice.state == PostingState.QUEUED


def test_the_sweeper_releases_a_child_whose_release_was_lost(planned: dict[str, Posting]) -> None:
    customer, invoice = planned[Operation.ENSURE_CUSTOMER], planned[Operation.POST_INVOICE]
    executor.claim(invoice.pk)
    Posting.objects.filter(pk=customer.pk).update(state=PostingState.POSTED, erp_id="7")
    assert services.sweep_postings()["released"] == 1
    assert Posting.objects.get(pk=invoice.pk).state == PostingState.QUEUED


def test_the_sweeper_recovers_a_posting_orphaned_in_flight_and_marks_it_for_lookup(
    planned: dict[str, Posting],
) -> None:
    customer = planned[Operation.ENSURE_CUSTOMER]
    slots = flow.slots(customer.connection)
    in_use = slots.in_use()
    lease = slots.try_acquire()  # the slot the worker took before its claim
    assert lease is not None
    claimed = executor.claim(customer.pk, lease=lease)
    assert claimed is not None
    Posting.objects.filter(pk=customer.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    assert services.sweep_postings()["recovered"] == 1
    customer.refresh_from_db()
    assert customer.state == PostingState.RETRY_SCHEDULED and customer.verify_before_retry
    assert slots.in_use() == in_use  # the dead worker's slot is back at once, not when its lease expires
    assert PostingAttempt.objects.get(pk=claimed.attempt.pk).outcome == PostingAttempt.Outcome.ABANDONED
    # The presumed-dead worker comes back: its claim is gone, it cannot record a result.
    assert executor._transition(claimed, state=PostingState.POSTED) is False


def test_backoff_grows_is_capped_and_honours_retry_after(settings: object) -> None:
    settings.HUB = {**settings.HUB, "POSTING_BACKOFF_BASE_SECONDS": 2, "POSTING_BACKOFF_MAX_SECONDS": 60}  # type: ignore[attr-defined]
    assert 1 <= executor.backoff_seconds(1) <= 2
    assert 8 <= executor.backoff_seconds(4) <= 16
    assert 30 <= executor.backoff_seconds(20) <= 60
    assert executor.backoff_seconds(1, retry_after=45) == 45


def test_only_parked_or_dead_postings_can_be_retried(planned: dict[str, Posting]) -> None:
    with pytest.raises(services.ActionRefused, match="only parked or dead postings can be retried"):
        services.retry_posting(planned[Operation.ENSURE_CUSTOMER].pk, actor="finance", reason="")


def test_celery_is_configured_for_at_least_once_delivery() -> None:
    from integration_hub.celery import app

    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_time_limit < conf.broker_transport_options["visibility_timeout"]


def test_the_sweeper_resends_only_what_the_queue_no_longer_holds(planned: dict[str, Posting], settings: Any) -> None:
    """The queue is first in, first out: a row sent after the oldest waiting message is still in
    it, however long ago; a row sent well before it had its message taken, and is still not done."""
    import json

    import redis
    from celery import current_app

    from apps.core.broker import SENT_AT_HEADER

    customer = planned[Operation.ENSURE_CUSTOMER]
    queue = f"sweep-test-{customer.pk}-{timezone.now().timestamp()}"
    client = redis.Redis.from_url(current_app.conf.broker_url)
    settings.HUB_POSTING_QUEUE = queue  # a posting queue no worker reads, for this test only
    try:
        for _ in range(50):
            current_app.send_task("posting.execute", args=[0], queue=queue, routing_key=queue)
        assert client.llen(queue) == 50
        # The oldest waiting message was sent 30 minutes ago (a long backlog).
        head = json.loads(client.lindex(queue, -1))
        assert SENT_AT_HEADER in head["headers"]  # every message says when it was sent
        head["headers"][SENT_AT_HEADER] = timezone.now().timestamp() - 1800
        client.lset(queue, -1, json.dumps(head))

        Posting.objects.filter(pk=customer.pk).update(enqueued_at=timezone.now() - timedelta(minutes=20))
        assert services.sweep_postings()["requeued"] == 0  # sent after the head: still waiting in line

        Posting.objects.filter(pk=customer.pk).update(enqueued_at=timezone.now() - timedelta(minutes=40))
        assert services.sweep_postings()["requeued"] == 1  # sent before the head: its message was lost
        assert Posting.objects.get(pk=customer.pk).enqueued_at > timezone.now() - timedelta(seconds=5)

        # Messages without the stamp (sent by an older release): the plain rule, ten times the stale limit.
        client.delete(queue)
        client.rpush(queue, *[b"a message still waiting"] * 50)
        Posting.objects.filter(pk=customer.pk).update(enqueued_at=timezone.now() - timedelta(seconds=120))
        assert services.sweep_postings()["requeued"] == 0

        client.delete(queue)
        assert services.sweep_postings()["requeued"] == 1  # the queue is empty and it is still queued: lost
    finally:
        client.delete(queue)
