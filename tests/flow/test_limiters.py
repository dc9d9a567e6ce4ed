"""The Redis limiters on the real Redis, and that a posting run always gives its slot back."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from django.test import Client

from apps.flow import services as flow
from apps.flow.limiter import ConcurrencyLimiter, WindowLimiter
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.conftest import deliver
from tests.fault_proxy import most_in_any_window


def name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_concurrency_slots_are_capped_released_and_expire() -> None:
    limiter = ConcurrencyLimiter(name(), capacity=2, lease_seconds=0.3)
    first, second = limiter.try_acquire(), limiter.try_acquire()
    assert first and second and limiter.try_acquire() is None
    limiter.release(first)
    third = limiter.try_acquire()
    assert third is not None and limiter.in_use() == 2
    time.sleep(0.35)  # a killed worker's lease runs out by itself
    assert limiter.in_use() == 0 and limiter.try_acquire() is not None


def test_the_request_budget_spaces_requests_evenly_and_says_how_long_to_wait() -> None:
    limiter = WindowLimiter(name(), limit=4, period_seconds=0.4)  # one request every 0.105 s
    assert limiter.try_acquire() == 0.0
    wait = limiter.try_acquire()  # the next send time is taken by nobody yet, but not due
    assert 0.05 < wait <= 0.106
    assert limiter.acquire(max_wait=0.01) > 0  # would have to wait longer than allowed: refused
    started = time.monotonic()
    assert limiter.acquire(max_wait=1.0) == 0.0  # sleeps until its send time, then goes
    assert limiter.acquire(max_wait=1.0) == 0.0
    assert time.monotonic() - started >= 0.15  # two send times, each 0.105 s after the last


def test_many_senders_never_put_more_than_the_budget_in_any_window() -> None:
    limiter = WindowLimiter(name(), limit=20, period_seconds=0.5)
    sent: list[float] = []
    lock = threading.Lock()

    def sender() -> None:
        until = time.monotonic() + 1.6
        while time.monotonic() < until:
            if limiter.acquire(max_wait=0.3) == 0.0:
                with lock:
                    sent.append(time.monotonic())

    threads = [threading.Thread(target=sender) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most_in_any_window(sent, 0.5) <= 20
    assert len(sent) >= 55  # 1.6 s at 20 per 0.52 s: the budget is used, not just respected


@pytest.mark.usefixtures("configured")
def test_a_posting_run_gives_its_slot_back_even_when_the_erp_fails(client: Client) -> None:
    obj = se.invoice(se.uid("cus"), [se.line(4900)])
    event = se.event("invoice.finalized", obj)
    deliver(client, event)
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    customer_posting = Posting.objects.get(source_id=obj["customer"], operation=Operation.ENSURE_CUSTOMER)
    connection = ERPConnection.objects.get(name="tryton-local")

    assert executor.execute_posting(customer_posting.pk) == PostingState.RETRY_SCHEDULED  # nothing listens there
    assert flow.slots(connection).in_use() == 0
    customer_posting.refresh_from_db()
    assert customer_posting.attempt_count == 1 and customer_posting.error_code == "transient"


@pytest.mark.usefixtures("configured")
def test_with_every_slot_taken_a_posting_is_held_without_an_attempt(client: Client) -> None:
    obj = se.invoice(se.uid("cus"), [se.line(4900)])
    event = se.event("invoice.finalized", obj)
    deliver(client, event)
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    posting = Posting.objects.get(source_id=obj["customer"], operation=Operation.ENSURE_CUSTOMER)
    connection = ERPConnection.objects.get(name="tryton-local")
    slots = flow.slots(connection)
    leases = [slots.try_acquire() for _ in range(flow.flow_for(connection).max_concurrency)]
    try:
        assert executor.execute_posting(posting.pk) == "skipped"
    finally:
        for lease in leases:
            slots.release(lease)  # type: ignore[arg-type]
    posting.refresh_from_db()
    assert (posting.state, posting.error_code, posting.attempt_count) == (
        PostingState.RETRY_SCHEDULED,
        flow.HOLD_BUSY,
        0,
    )
