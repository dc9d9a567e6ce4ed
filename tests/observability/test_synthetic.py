"""The synthetic transaction, run in this process against the in-memory Tryton: a marked test
invoice through ingest, normalization, planning and the executor to the sandbox connection only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.observability import services, synthetic
from apps.observability.models import SyntheticResult, SyntheticRun
from apps.posting import executor
from apps.posting.models import Operation, Posting
from apps.routing.models import ERPConnection, RoutingRule
from tests.erp_simulator import ErpSimulator
from tests.observability.conftest import SANDBOX, SYNTHETIC_SOURCE, create_sandbox

pytestmark = pytest.mark.usefixtures("synthetic_settings")


@pytest.fixture
def sandbox(erp: ErpSimulator) -> ERPConnection:
    return create_sandbox(erp.url, erp.database)


def run_through(run: SyntheticRun) -> dict[str, Posting]:
    """What the worker does with the stored event: normalize it, then post what was planned."""
    inbox = InboxEvent.objects.get(source=SYNTHETIC_SOURCE, event_id=run.document_id)
    normalize_event(inbox.pk)
    postings = {p.operation: p for p in Posting.objects.filter(correlation_id=run.correlation_id)}
    for operation in (Operation.ENSURE_CUSTOMER, Operation.POST_INVOICE):
        executor.execute_posting(postings[operation].pk)
    return postings


def test_a_synthetic_invoice_reaches_the_sandbox_and_its_latency_is_recorded(
    sandbox: ERPConnection, erp: ErpSimulator
) -> None:
    before = REGISTRY.get_sample_value("hub_synthetic_seconds_count", {"connection": SANDBOX}) or 0
    run = synthetic.start_run()
    assert run is not None and run.result == SyntheticResult.RUNNING
    assert synthetic.start_run() is None  # one at a time

    postings = run_through(run)
    assert {p.connection.name for p in postings.values()} == {SANDBOX}
    run.refresh_from_db()
    assert run.result == SyntheticResult.POSTED
    assert run.latency_seconds is not None and 0 < run.latency_seconds < 60
    assert run.finished_at == Posting.objects.get(pk=postings[Operation.POST_INVOICE].pk).posted_at
    [invoice] = erp.invoices_for(f"{SYNTHETIC_SOURCE}:{run.document_id}")
    assert (invoice["state"], invoice["total"], invoice["party"]) == (
        "posted",
        1,
        f"{SYNTHETIC_SOURCE}:hub-synthetic-check",
    )
    assert erp.parties[invoice["party"]]["name"] == synthetic.CUSTOMER_NAME  # marked, for whoever reads the ERP
    assert REGISTRY.get_sample_value("hub_synthetic_seconds_count", {"connection": SANDBOX}) == before + 1
    status = services.synthetic_status()[SANDBOX]
    assert status["result"] == SyntheticResult.POSTED and status["last_success_at"] == run.finished_at


def test_a_rule_that_would_also_send_it_to_a_real_erp_stops_the_run(sandbox: ERPConnection) -> None:
    entity = RoutingRule.objects.get(connection=sandbox).legal_entity
    RoutingRule.objects.create(
        priority=0, legal_entity=entity, connection=ERPConnection.objects.get(name="tryton-local"), also=True
    )
    run = synthetic.start_run()
    assert run is not None and run.result == SyntheticResult.FAILED
    assert "tryton-local" in run.detail and "nothing was sent" in run.detail
    assert not InboxEvent.objects.filter(source=SYNTHETIC_SOURCE).exists()


def test_a_parked_synthetic_invoice_fails_the_run(sandbox: ERPConnection) -> None:
    sandbox.mappings.filter(kind="revenue_account").update(value="4999")  # not an account in the ERP
    run = synthetic.start_run()
    assert run is not None
    run_through(run)
    run.refresh_from_db()
    assert run.result == SyntheticResult.FAILED and "parked" in run.detail
    assert run.latency_seconds is None


def test_a_run_that_never_posts_times_out_and_the_next_one_starts(sandbox: ERPConnection) -> None:
    run = synthetic.start_run()
    assert run is not None
    later = timezone.now() + timedelta(seconds=settings.HUB["SYNTHETIC_TIMEOUT_SECONDS"] + 1)
    assert synthetic.run_scheduled(later) == SyntheticResult.RUNNING  # the stale one expired, a new one sent
    run.refresh_from_db()
    assert run.result == SyntheticResult.TIMED_OUT
    assert SyntheticRun.objects.filter(result=SyntheticResult.RUNNING).count() == 1


@pytest.mark.usefixtures("configured")
def test_switched_off_without_a_source_and_connection() -> None:
    with override_settings(HUB={**settings.HUB, "SYNTHETIC_SOURCE": "", "SYNTHETIC_CONNECTION": ""}):
        assert synthetic.run_scheduled() == "not_sent"
    assert not SyntheticRun.objects.exists()
