"""Flow control against the real Tryton, seen from the ERP's side: a recording proxy in front of
Tryton counts every request the hub sends, and when."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.core.models import AuditEvent
from apps.flow import services as flow
from apps.flow.models import CircuitState, ConnectionFlow, MaintenanceWindow
from apps.posting.models import Operation, Posting, PostingState
from apps.posting.services import sweep_postings
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, WorkerProcess, deliver, process_env, wait_for
from tests.e2e.test_stripe_to_tryton import new_invoice
from tests.fault_proxy import FaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


@pytest.fixture
def proxy(hub: Any) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(hub.url)
    connection = ERPConnection.objects.get(name="tryton-local")
    connection.settings = {**connection.settings, "url": fault_proxy.url}
    connection.save()
    yield fault_proxy
    fault_proxy.stop()


def budget(**values: Any) -> ConnectionFlow:
    connection = ERPConnection.objects.get(name="tryton-local")
    row = flow.flow_for(connection)
    ConnectionFlow.objects.filter(pk=row.pk).update(**values)
    row.refresh_from_db()
    return row


def all_posted(invoice_ids: list[str]) -> bool:
    postings = Posting.objects.filter(source_id__in=invoice_ids, operation=Operation.POST_INVOICE)
    return postings.count() == len(invoice_ids) and all(p.state == PostingState.POSTED for p in postings)


def test_four_workers_never_exceed_the_budget_or_the_concurrency_cap(
    client: Client, proxy: FaultProxy, hub: Any, tryton: Any, tmp_path: Any
) -> None:
    budget(max_requests=5, period_seconds=1, max_concurrency=2)
    # A second worker process with two children: four processes take postings at once.
    extra = WorkerProcess(tmp_path / "extra-worker.log", process_env(hub))
    try:
        invoices = [new_invoice() for _ in range(5)]
        for obj in invoices:
            assert deliver(client, se.event("invoice.finalized", obj)).status_code == 200
        ids = [obj["id"] for obj in invoices]
        wait_for(lambda: all_posted(ids), timeout=180, what="five invoices posted under the budget")
    finally:
        extra.stop()

    assert len(proxy.arrivals) >= 25  # the hub really had more to send than one second's budget
    assert proxy.max_in_any_window(1.0) <= 5
    assert proxy.max_in_flight <= 2
    for obj in invoices:
        assert [i["state"] for i in tryton.invoices(f"{SOURCE}:{obj['id']}")] == ["posted"]


def test_authentication_failure_opens_the_circuit_postings_wait_then_post_once_fixed(
    client: Client, proxy: FaultProxy, tryton: Any
) -> None:
    connection = ERPConnection.objects.get(name="tryton-local")
    budget(probe_after_seconds=2)
    proxy.inject("common.db.login", status=403, times=10_000)  # the ERP refuses the hub's credentials

    first, second = new_invoice(), new_invoice()
    deliver(client, se.event("invoice.finalized", first))
    row = wait_for(
        lambda: (
            ConnectionFlow.objects.filter(connection=connection, circuit_state=CircuitState.OPEN).first()
            or ConnectionFlow.objects.filter(connection=connection, circuit_state=CircuitState.HALF_OPEN).first()
        ),
        what="the circuit to open",
    )
    assert "authentication refused" in row.circuit_reason
    deliver(client, se.event("invoice.finalized", second))
    wait_for(
        lambda: Posting.objects.filter(
            source_id=second["customer"], state=PostingState.RETRY_SCHEDULED, error_code=flow.HOLD_CIRCUIT
        ).exists(),
        what="the second customer to wait for the circuit",
    )
    held = Posting.objects.get(source_id=second["customer"])
    assert held.attempt_count == 0  # it never called the ERP
    assert "stopped calling tryton-local" in held.technical_detail
    assert tryton.parties(f"{SOURCE}:{first['customer']}") == []

    proxy.faults.clear()  # an engineer renews the credentials; the next probe succeeds
    wait_for(lambda: all_posted([first["id"], second["id"]]), timeout=120, what="both invoices after the fix")
    for obj in (first, second):
        assert [i["state"] for i in tryton.invoices(f"{SOURCE}:{obj['id']}")] == ["posted"]
    for posting in Posting.objects.filter(source_id__in=[first["customer"], second["customer"]]):
        assert posting.attempt_count - posting.attempt_budget_start <= 1  # waiting burnt no retries
    assert ConnectionFlow.objects.get(connection=connection).circuit_state == CircuitState.CLOSED
    assert AuditEvent.objects.filter(action="flow.circuit_opened").exists()
    assert AuditEvent.objects.filter(action="flow.circuit_closed").exists()


def test_a_maintenance_window_holds_the_backlog_which_posts_when_it_ends(
    client: Client, proxy: FaultProxy, tryton: Any
) -> None:
    connection = ERPConnection.objects.get(name="tryton-local")
    budget(max_concurrency=1)
    now = timezone.now()
    window = MaintenanceWindow.objects.create(
        connection=connection,
        starts_at=now - timedelta(seconds=1),
        ends_at=now + timedelta(minutes=5),
        reason="upgrade",
    )
    invoices = [new_invoice() for _ in range(4)]
    for obj in invoices:
        deliver(client, se.event("invoice.finalized", obj))
    customers = [obj["customer"] for obj in invoices]
    wait_for(
        lambda: Posting.objects.filter(source_id__in=customers, error_code=flow.HOLD_MAINTENANCE).count() == 4,
        what="the backlog to wait for the window",
    )
    assert proxy.arrivals == []  # nothing was sent during the window
    held = Posting.objects.filter(source_id__in=customers)
    assert {p.retry_at for p in held} == {window.ends_at} and {p.attempt_count for p in held} == {0}

    # Travel five minutes ahead: the window is over; the sweeper (beat) releases the backlog.
    MaintenanceWindow.objects.filter(pk=window.pk).update(
        starts_at=now - timedelta(minutes=6), ends_at=timezone.now() - timedelta(seconds=1)
    )
    assert sweep_postings()["unheld"] == 4
    ids = [obj["id"] for obj in invoices]
    wait_for(lambda: all_posted(ids), timeout=180, what="the backlog to post")
    for obj in invoices:
        customer = Posting.objects.get(source_id=obj["customer"])
        invoice = Posting.objects.get(source_id=obj["id"], operation=Operation.POST_INVOICE)
        assert customer.posted_at <= invoice.posted_at  # parents before children
        assert [i["state"] for i in tryton.invoices(f"{SOURCE}:{obj['id']}")] == ["posted"]
