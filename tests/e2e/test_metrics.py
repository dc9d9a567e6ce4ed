"""/metrics after a scripted run through real processes: gunicorn with two workers takes the
webhooks, a Celery worker with two pool processes posts them to the real Tryton, and both write to
one PROMETHEUS_MULTIPROC_DIR. Every scrape, whichever gunicorn worker answers it, adds up what every
process counted, plus the gauges read from the database. The synthetic transaction runs through the
same worker to a sandbox connection."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from celery import current_app
from prometheus_client.parser import text_string_to_metric_families

from apps.flow import services as flow
from apps.observability.models import SyntheticResult, SyntheticRun
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.conftest import ROOT, SECRET, SOURCE, WorkerProcess, process_env, wait_for
from tests.fault_proxy import FaultProxy
from tests.observability.conftest import SANDBOX, SYNTHETIC_SECRET_ENV, SYNTHETIC_SOURCE, budget, create_sandbox

pytestmark = [pytest.mark.e2e]

TOKEN = "scrape-token-for-tests"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """gunicorn and a Celery worker on a queue of their own, sharing one multiprocess directory."""

    def __init__(self, tryton: Any, tmp_path: Path) -> None:
        self.queue = f"{os.environ['HUB_TEST_QUEUE']}-metrics-{uuid.uuid4().hex[:6]}"
        self.metrics_dir = tmp_path / "prometheus"
        self.metrics_dir.mkdir()
        env = process_env(
            tryton,
            HUB_TEST_QUEUE=self.queue,
            PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir),
            HUB_METRICS_TOKEN=TOKEN,
            HUB_SYNTHETIC_SOURCE=SYNTHETIC_SOURCE,
            HUB_SYNTHETIC_CONNECTION=SANDBOX,
            **{SYNTHETIC_SECRET_ENV: "synthetic-e2e-secret"},
        )
        self.worker_metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
        env["HUB_WORKER_METRICS_PORT"] = self.worker_metrics_url.rsplit(":", 1)[1].removesuffix("/metrics")
        self.url = f"http://127.0.0.1:{free_port()}"
        self.web_log = (tmp_path / "gunicorn.log").open("w")
        self.web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:apps.observability.gunicorn_conf",
                "integration_hub.wsgi",
                "--bind",
                self.url.removeprefix("http://"),
                "--workers",
                "2",
            ],
            cwd=ROOT,
            env=env,
            stdout=self.web_log,
            stderr=subprocess.STDOUT,
        )
        self.worker = WorkerProcess(tmp_path / "worker.log", env)
        wait_for(self._web_answers, timeout=60, what="gunicorn to answer")

    def _web_answers(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def deliver(self, event: dict[str, Any], *, secret: str = SECRET) -> requests.Response:
        body = json.dumps(event).encode()
        return requests.post(
            f"{self.url}/webhooks/{SOURCE}/",
            data=body,
            timeout=30,
            headers={"Content-Type": "application/json", "Stripe-Signature": se.sign(body, secret)},
        )

    def scrape(self) -> Samples:
        response = requests.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
        assert response.status_code == 200, response.text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
        }

    def stop(self) -> None:
        self.worker.stop()
        self.web.terminate()
        self.web.wait(timeout=30)
        self.web_log.close()


@pytest.fixture
def stack(hub: Any, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(hub, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def proxy(hub: Any) -> Iterator[FaultProxy]:
    recording = FaultProxy(hub.url)
    connection = ERPConnection.objects.get(name="tryton-local")
    connection.settings = {**connection.settings, "url": recording.url}
    connection.save()
    yield recording
    recording.stop()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def states(source_ids: list[str]) -> dict[str, str]:
    return dict(Posting.objects.filter(source_id__in=source_ids).values_list("source_id", "state"))


def test_metrics_after_a_scripted_run_through_gunicorn_and_the_worker(
    stack: Stack, proxy: FaultProxy, hub: Any
) -> None:
    create_sandbox(hub.url, hub.database)  # the synthetic invoice's own route, straight to Tryton
    Mapping.objects.create(
        connection=ERPConnection.objects.get(name="tryton-local"),
        kind="revenue_account",
        key="price_broken",
        value="4999",  # no such account in Tryton: an invoice with this price parks
    )
    budget(max_requests=4, period_seconds=1)  # fewer than one posting needs: the hub waits for its budget
    proxy.inject("common.db.login", status=503)  # the first sign-in meets a busy Tryton: one retry

    posts = se.invoice(se.uid("cus"), [se.line(4900)])
    event = se.event("invoice.finalized", posts)
    assert stack.deliver(event).status_code == 200
    assert stack.deliver(event).json()["duplicate"] is True
    assert (
        stack.deliver(
            se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(100)])), secret="whsec_wrong"
        ).status_code
        == 400
    )
    wait_for(
        lambda: set(states([posts["id"], posts["customer"]]).values()) == {PostingState.POSTED},
        timeout=120,
        what="the first invoice posted",
    )

    parks = se.invoice(se.uid("cus"), [se.line(2500, price="price_broken")])
    assert stack.deliver(se.event("invoice.finalized", parks)).status_code == 200
    wait_for(
        lambda: states([parks["id"]]) == {parks["id"]: PostingState.PARKED},
        timeout=120,
        what="the second invoice parked",
    )

    current_app.send_task("observability.run_synthetic", queue=stack.queue)
    run = wait_for(
        lambda: SyntheticRun.objects.exclude(result=SyntheticResult.RUNNING).first(),
        timeout=120,
        what="the synthetic transaction",
    )
    assert run.result == SyntheticResult.POSTED, run.detail

    flow.pause(ERPConnection.objects.get(name="tryton-local"), actor="ops", reason="year-end close")
    waits = se.invoice(se.uid("cus"), [se.line(1000)])
    assert stack.deliver(se.event("invoice.finalized", waits)).status_code == 200
    wait_for(
        lambda: states([waits["customer"]]) == {waits["customer"]: PostingState.RETRY_SCHEDULED},
        timeout=60,
        what="the third customer held by the pause",
    )

    scrapes = [stack.scrape() for _ in range(6)]
    samples = scrapes[0]
    local = {"connection": "tryton-local"}
    # Counters from every process, the same whichever gunicorn worker answers.
    for other in scrapes[1:]:
        for name in ("hub_events_received_total", "hub_posting_outcomes_total", "hub_event_to_posted_seconds_count"):
            assert {k: v for k, v in other.items() if k[0] == name} == {
                k: v for k, v in samples.items() if k[0] == name
            }
    pids = {path.stem.rsplit("_", 1)[-1] for path in stack.metrics_dir.glob("*.db")}
    assert len(pids) >= 3  # gunicorn workers and pool processes wrote their own files

    assert value(samples, "hub_events_received_total", source=SOURCE, outcome="stored") == 3
    assert value(samples, "hub_events_received_total", source=SOURCE, outcome="duplicate") == 1
    assert value(samples, "hub_events_received_total", source=SOURCE, outcome="bad_signature") == 1
    assert value(samples, "hub_events_received_total", source=SYNTHETIC_SOURCE, outcome="stored") == 1
    assert value(samples, "hub_ingest_seconds_count", source=SOURCE) == 4
    assert value(samples, "hub_events_normalized_total", source=SOURCE, outcome="processed") == 3
    assert value(samples, "hub_normalize_lag_seconds_count", source=SOURCE) == 3

    outcome = "hub_posting_outcomes_total"
    assert value(samples, outcome, operation=Operation.ENSURE_CUSTOMER, outcome="posted", **local) == 2
    assert value(samples, outcome, operation=Operation.POST_INVOICE, outcome="posted", **local) == 1
    assert value(samples, outcome, operation=Operation.POST_INVOICE, outcome="parked", **local) == 1
    assert value(samples, outcome, operation=Operation.ENSURE_CUSTOMER, outcome="held_paused", **local) == 1
    assert value(samples, "hub_posting_retries_total", reason="transient", **local) == 1
    assert value(samples, "hub_event_to_posted_seconds_count", **local) == 3
    assert value(samples, "hub_event_to_posted_seconds_sum", **local) > 0
    assert value(samples, "hub_event_to_posted_seconds_count", connection=SANDBOX) == 2
    assert value(samples, "hub_rate_limit_waits_total", limit="requests", **local) > 0
    assert value(samples, "hub_rate_limit_wait_seconds_total", **local) > 0

    assert value(samples, "hub_open_cases", category="business", age="under_1h") == 1
    assert value(samples, "hub_open_cases", category="technical", age="under_1h") == 0
    assert value(samples, "hub_posting_backlog", state="retry_scheduled", **local) == 1
    assert value(samples, "hub_posting_backlog", state="waiting", **local) == 1
    assert value(samples, "hub_posting_backlog", state="queued", **local) == 0
    assert value(samples, "hub_posting_backlog_oldest_seconds", **local) > 0
    assert value(samples, "hub_connection_paused", **local) == 1
    assert value(samples, "hub_circuit_state", state="closed", **local) == 1
    assert value(samples, "hub_circuit_state", state="open", **local) == 0
    assert value(samples, "hub_reconciliation_differences", **local) == 0
    assert value(samples, "hub_metrics_database_up") == 1

    assert value(samples, "hub_synthetic_runs_total", connection=SANDBOX, result="posted") == 1
    assert value(samples, "hub_synthetic_seconds_count", connection=SANDBOX) == 1
    assert value(samples, "hub_synthetic_last_latency_seconds", connection=SANDBOX) == pytest.approx(
        run.latency_seconds
    )
    assert value(samples, "hub_synthetic_last_result", connection=SANDBOX, result="posted") == 1
    assert value(samples, "hub_synthetic_last_success_timestamp_seconds", connection=SANDBOX) == pytest.approx(
        run.finished_at.timestamp()
    )

    # The worker's own port shows what its pool processes counted (for a worker on another host).
    from_worker = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(requests.get(stack.worker_metrics_url, timeout=10).text)
        for sample in family.samples
    }
    assert value(from_worker, outcome, operation=Operation.POST_INVOICE, outcome="posted", **local) == 1
    assert value(from_worker, "hub_posting_retries_total", reason="transient", **local) == 1

    # Protected by its token; health needs none. A paused connection is not a failure.
    assert requests.get(f"{stack.url}/metrics", timeout=10).status_code == 401
    ready = requests.get(f"{stack.url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["connections"]["tryton-local"]["paused"] is True
