"""The chaos suite: a seeded month-end burst of Stripe events, duplicated, concurrent, out of order,
some forged; an ERP that fails in every way a real one does; a worker SIGKILLed mid-run and
Redis restarted. At the end the ERP's own records must show every accepted document exactly
once, totals equal to billing's to the cent, and every permanent failure as an open case.

The fault run posts to a Tryton-compatible simulator (tests/erp_simulator.py) through the real
Tryton connector; the success path runs the same stream, smaller, against the real Tryton."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest

from apps.connectors.tryton_server import free_port
from apps.console.models import CaseStatus, ExceptionCase
from apps.core.money import to_decimal
from apps.flow import services as flow
from apps.flow.models import ConnectionFlow
from apps.ingest.models import InboxEvent, InboxStatus
from apps.ledger.models import Invoice
from apps.posting.models import Posting, PostingAttempt, PostingState
from apps.routing.models import ERPConnection
from tests.chaos import generator
from tests.chaos.harness import Process, RedisServer, deliver_all, listening
from tests.conftest import SECRET, SOURCE, WorkerProcess, process_env, wait_for
from tests.erp_simulator import ErpSimulator, FaultRates

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

SEED = int(os.environ.get("HUB_CHAOS_SEED", "20261124"))
FINAL_INBOX = (InboxStatus.PROCESSED, InboxStatus.IGNORED)
BUSY = (PostingState.QUEUED, PostingState.IN_FLIGHT, PostingState.RETRY_SCHEDULED)


def drained() -> bool:
    if InboxEvent.objects.filter(status=InboxStatus.RECEIVED).exists():
        return False
    if Posting.objects.filter(state__in=BUSY).exists():
        return False
    for posting in Posting.objects.filter(state=PostingState.WAITING):
        # Settled when the chain above it ends at a posting a person must act on (a payment
        # waiting for an invoice that waits for a parked customer).
        key, state = posting.depends_on_key, PostingState.WAITING
        while state == PostingState.WAITING:
            row = Posting.objects.filter(idempotency_key=key).values_list("state", "depends_on_key").first()
            if row is None:
                return False
            state, key = row
        if state not in (PostingState.PARKED, PostingState.DEAD, PostingState.SKIPPED):
            return False
    return True


class Run:
    """Starts the hub's processes on a Redis of their own and takes them down afterwards."""

    def __init__(
        self, hub: Any, tmp_path: Any, workers: int = 2, worker_args: list[str] | None = None, **env: str
    ) -> None:
        self.worker_args = worker_args or []
        self.redis = RedisServer(tmp_path)
        queue = f"chaos-{os.getpid()}-{time.monotonic_ns()}"
        self.env = process_env(
            hub,
            CELERY_BROKER_URL=self.redis.url,
            HUB_TEST_QUEUE=queue,
            HUB_FLOW_NAMESPACE=queue,
            HUB_SWEEP_SECONDS="2",
            HUB_INBOX_STALE_SECONDS="5",
            HUB_IN_FLIGHT_STALE_SECONDS="20",
            HUB_POSTING_MAX_ATTEMPTS="20",
            HUB_BACKOFF_BASE="0.2",
            HUB_BACKOFF_MAX="3",
            # Long-lived processes keep their database connection (Celery closes obsolete ones around
            # each task): a new PostgreSQL session per task cost more CPU than the task itself.
            DATABASE_CONN_MAX_AGE="60",
            **env,
        )
        self.tmp_path = tmp_path
        self.port = free_port()
        # gunicorn, as deployed: threads that live as long as the process, so each keeps its
        # connection, and HTTP keep-alive for the senders.
        self.web = Process(
            [
                "-m",
                "gunicorn",
                "integration_hub.wsgi",
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--worker-class",
                "gthread",
                "--threads",
                "4",
            ],
            self.env,
            tmp_path / "web.log",
        )
        self.beat = Process(
            ["-m", "celery", "-A", "integration_hub", "beat", "-l", "info", "-s", str(tmp_path / "beat")],
            self.env,
            tmp_path / "beat.log",
        )
        self.workers = [self.start_worker(n) for n in range(workers)]
        self.killed = 0
        wait_for(lambda: listening(self.port), timeout=30, what="the chaos web process")

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/{SOURCE}/"

    def start_worker(self, n: int) -> WorkerProcess:
        return WorkerProcess(self.tmp_path / f"worker-{n}-{time.monotonic_ns()}.log", self.env, self.worker_args)

    def kill_a_worker(self) -> None:
        self.workers[0].kill()
        self.killed += 1
        self.workers[0] = self.start_worker(len(self.workers) + self.killed)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.beat.stop()
        self.web.stop()
        self.redis.stop()


def configure(erp_url: str, *, password: str, timeout: float, **budget: Any) -> None:
    connection = ERPConnection.objects.get(name="tryton-local")
    connection.settings = {**connection.settings, "url": erp_url, "password": password, "timeout": timeout}
    if "database" in budget:
        connection.settings["database"] = budget.pop("database")
    connection.save()
    ConnectionFlow.objects.filter(pk=flow.flow_for(connection).pk).update(**budget)


def report(
    plan: generator.Plan, log: Any, erp_documents: int, started: float, delivered: float, capsys: Any
) -> dict[str, Any]:
    postings = Posting.objects.count()
    executions = PostingAttempt.objects.count()
    counts = {
        "seed": plan.seed,
        "events": plan.unique_events,
        "deliveries": sum(d.concurrent for d in plan.deliveries),
        "duplicate deliveries": plan.duplicate_deliveries,
        "refused (stale or tampered)": sum(n for status, n in log.statuses.items() if status == 400),
        "sender retries after 5xx": log.sender_retries,
        "postings": postings,
        "executions": executions,
        "duplicate executions": max(executions - postings, 0),
        "ERP documents": erp_documents,
        "open cases": ExceptionCase.objects.filter(status=CaseStatus.OPEN).count(),
        "delivery seconds": round(delivered - started, 1),
        "drain seconds": round(time.monotonic() - delivered, 1),
    }
    with capsys.disabled():  # CI's log shows the counts of every run, passing or not
        print("\nchaos run: " + ", ".join(f"{key}={value}" for key, value in counts.items()))
    return counts


def check_ledger_and_inbox(plan: generator.Plan, log: Any) -> set[str]:
    """Returns the invoices billing holds (accepted at least once)."""
    assert log.refused_wrongly == [], log.refused_wrongly[:10]  # every genuine delivery answered 2xx
    assert log.accepted_wrongly == [], log.accepted_wrongly[:10]  # no stale or forged one accepted
    accepted = InboxEvent.objects.filter(event_id__in=log.accepted_event_ids)
    assert accepted.count() == len(log.accepted_event_ids)
    not_final = list(accepted.exclude(status__in=FINAL_INBOX).values_list("event_id", "status", "error")[:10])
    assert not_final == []
    invoices = {i.source_id: i for i in Invoice.objects.filter(source_id__in=list(plan.invoices))}
    for source_id, invoice in invoices.items():
        truth = plan.invoices[source_id]
        assert invoice.total_minor == truth.total, source_id  # tampered bodies never landed
    return set(invoices)


def expected_totals(plan: generator.Plan, billed: set[str], failed: set[str]) -> dict[tuple[str, str], Decimal]:
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for source_id in billed - failed:
        truth = plan.invoices[source_id]
        totals[(f"{SOURCE}:{truth.customer}", truth.currency)] += to_decimal(truth.total, truth.currency)
    return dict(totals)


def test_chaos_burst_against_a_failing_erp_loses_and_duplicates_nothing(hub: Any, tmp_path: Any, capsys: Any) -> None:
    sim = ErpSimulator(
        seed=SEED,
        faults=FaultRates(
            server_error=0.05,
            throttle=0.02,
            timeout_after_commit=0.03,
            timeout_before_commit=0.01,
            validation_error=0.01,
        ),
        hang_seconds=2.5,
    )
    configure(
        sim.url,
        password=sim.password,
        timeout=1.0,
        max_requests=5000,
        period_seconds=1,
        max_concurrency=8,
        failure_threshold=30,
        probe_after_seconds=1,
    )
    plan = generator.build(SEED, base_time=int(time.time()))
    run = Run(hub, tmp_path)
    try:
        started = time.monotonic()
        log = deliver_all(
            run.webhook_url,
            plan.deliveries,
            SECRET,
            threads=8,
            at_fraction={0.4: run.kill_a_worker, 0.7: run.redis.restart},
        )
        delivered = time.monotonic()
        wait_for(drained, timeout=900, interval=2, what="the hub to drain after the burst")
        sim.faults = FaultRates()
    finally:
        run.stop()
        sim.stop()

    counts = report(plan, log, len(sim.invoices) + len(sim.parties), started, delivered, capsys)
    billed = check_ledger_and_inbox(plan, log)
    failed = {reference.split(":", 1)[1] for reference in sim.permanently_failed_references()}
    assert sim.duplicate_invoices() == {}
    assert sim.duplicate_payments() == {}
    references = {invoice["reference"] for invoice in sim.invoices.values()}
    assert {r.split(":", 1)[1] for r in references} <= billed  # nothing in the ERP without a source event
    assert sim.posted_total_by_party_and_currency() == expected_totals(plan, billed, failed)
    open_cases = ExceptionCase.objects.filter(status=CaseStatus.OPEN)
    assert {case.source_id for case in open_cases} == failed  # every permanent failure, and only those
    assert all(case.message and case.kind for case in open_cases)
    assert run.killed == 1 and run.redis.restarts == 1
    assert counts["events"] >= 2000 and len(plan.customers) == 200


def test_chaos_stream_on_the_real_tryton_posts_everything_once(
    hub: Any, tmp_path: Any, tryton: Any, capsys: Any
) -> None:
    plan = generator.build(SEED + 1, customers=12, invoices=30, base_time=int(time.time()))
    configure(
        hub.url,
        password=hub.password,
        timeout=60,
        max_requests=50,
        period_seconds=1,
        max_concurrency=2,
        failure_threshold=50,  # Tryton answers 503 when two posts contend for its sequence: busy, not down
        probe_after_seconds=2,
    )
    run = Run(hub, tmp_path, workers=1)
    try:
        started = time.monotonic()
        log = deliver_all(run.webhook_url, plan.deliveries, SECRET, threads=6, at_fraction={0.5: run.kill_a_worker})
        delivered = time.monotonic()
        wait_for(drained, timeout=600, interval=2, what="the hub to drain into Tryton")
    finally:
        run.stop()

    in_tryton = sum(len(tryton.invoices(f"{SOURCE}:{source_id}")) for source_id in plan.invoices)
    report(plan, log, in_tryton, started, delivered, capsys)
    billed = check_ledger_and_inbox(plan, log)
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    documents = 0
    for source_id in billed:
        invoices = tryton.invoices(f"{SOURCE}:{source_id}")
        assert len(invoices) == 1, source_id  # exactly once
        [invoice] = invoices
        truth = plan.invoices[source_id]
        assert invoice["state"] == ("paid" if truth.paid else "posted"), source_id
        if truth.paid:
            assert len(tryton.payment_lines(invoice["id"])) == 1, source_id
        totals[(f"{SOURCE}:{truth.customer}", truth.currency)] += invoice["total_amount"]
        documents += 1
    assert dict(totals) == expected_totals(plan, billed, set())
    for customer in {plan.invoices[s].customer for s in billed}:
        assert len(tryton.parties(f"{SOURCE}:{customer}")) == 1
    assert not ExceptionCase.objects.filter(status=CaseStatus.OPEN).exists()
    assert documents == len(billed)
