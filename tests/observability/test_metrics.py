"""What /metrics shows after work done in this process (single-process registry, as in the demo),
and the database gauges read at scrape time."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from apps.console.models import CaseStatus, ExceptionCase
from apps.flow import services as flow
from apps.flow.models import CircuitState, ConnectionFlow
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.observability import metrics
from apps.posting import executor
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.conftest import deliver
from tests.erp_simulator import ErpSimulator
from tests.observability.conftest import budget

pytestmark = pytest.mark.usefixtures("configured")


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client: Client, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def planned(client: Client, **invoice: object) -> tuple[dict[str, object], dict[str, Posting]]:
    event = se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(4900)], **invoice))
    assert deliver(client, event).status_code == 200
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    found = Posting.objects.filter(correlation_id=event["id"])
    return event, {p.operation: p for p in found}


def test_events_are_counted_by_source_and_what_the_hub_answered(client: Client) -> None:
    before = {
        outcome: value("hub_events_received_total", source="stripe-us", outcome=outcome)
        for outcome in ("stored", "duplicate", "bad_signature")
    }
    unknown = value("hub_events_received_total", source="-", outcome="unknown_source")
    timed = value("hub_ingest_seconds_count", source="stripe-us")
    event = se.event("customer.created", se.customer())
    deliver(client, event)
    deliver(client, event)
    deliver(client, se.event("customer.created", se.customer()), secret="whsec_wrong")
    deliver(client, se.event("customer.created", se.customer()), source="no-such-source")

    assert value("hub_events_received_total", source="stripe-us", outcome="stored") == before["stored"] + 1
    assert value("hub_events_received_total", source="stripe-us", outcome="duplicate") == before["duplicate"] + 1
    assert (
        value("hub_events_received_total", source="stripe-us", outcome="bad_signature") == before["bad_signature"] + 1
    )
    # A name from the URL never becomes a label value: anyone could make up new ones.
    assert value("hub_events_received_total", source="-", outcome="unknown_source") == unknown + 1
    assert value("hub_events_received_total", source="no-such-source", outcome="unknown_source") == 0
    assert value("hub_ingest_seconds_count", source="stripe-us") == timed + 2


def test_normalization_is_counted_with_its_lag(client: Client) -> None:
    processed = value("hub_events_normalized_total", source="stripe-us", outcome="processed")
    lagged = value("hub_normalize_lag_seconds_count", source="stripe-us")
    planned(client)
    assert value("hub_events_normalized_total", source="stripe-us", outcome="processed") == processed + 1
    assert value("hub_normalize_lag_seconds_count", source="stripe-us") == lagged + 1


def test_postings_count_outcomes_and_event_to_posted_latency_from_the_billing_event(
    client: Client, erp: ErpSimulator
) -> None:
    budget(max_requests=3, period_seconds=1)  # the customer and the invoice need more requests than that
    labels = {"connection": "tryton-local"}
    posted = {op: value("hub_posting_outcomes_total", operation=op, outcome="posted", **labels) for op in Operation}
    latencies = value("hub_event_to_posted_seconds_count", **labels)
    waits = value("hub_rate_limit_waits_total", limit="requests", **labels)

    event, postings = planned(client)
    for operation in (Operation.ENSURE_CUSTOMER, Operation.POST_INVOICE):
        assert executor.execute_posting(postings[operation].pk) == PostingState.POSTED

    for operation in (Operation.ENSURE_CUSTOMER, Operation.POST_INVOICE):
        assert value("hub_posting_outcomes_total", operation=operation, outcome="posted", **labels) == (
            posted[operation] + 1
        )
    assert value("hub_event_to_posted_seconds_count", **labels) == latencies + 2
    assert value("hub_rate_limit_waits_total", limit="requests", **labels) > waits
    assert value("hub_rate_limit_wait_seconds_total", **labels) > 0
    invoice = Posting.objects.get(pk=postings[Operation.POST_INVOICE].pk)
    inbox = InboxEvent.objects.get(event_id=event["id"])
    assert metrics.event_received_at(invoice) == inbox.received_at  # measured from the webhook, not the plan


def test_a_parked_posting_and_a_retry_are_counted(client: Client, erp: ErpSimulator) -> None:
    labels = {"connection": "tryton-local"}
    parked = value("hub_posting_outcomes_total", operation="post_invoice", outcome="parked", **labels)
    retries = value("hub_posting_retries_total", reason="transient", **labels)
    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4999")  # no such account
    _, postings = planned(client)
    assert executor.execute_posting(postings[Operation.ENSURE_CUSTOMER].pk) == PostingState.POSTED
    assert executor.execute_posting(postings[Operation.POST_INVOICE].pk) == PostingState.PARKED
    assert value("hub_posting_outcomes_total", operation="post_invoice", outcome="parked", **labels) == parked + 1

    erp.inject("read_server_error", "model.party.party.search_read")
    _, others = planned(client)
    assert executor.execute_posting(others[Operation.ENSURE_CUSTOMER].pk) == PostingState.RETRY_SCHEDULED
    assert value("hub_posting_retries_total", reason="transient", **labels) == retries + 1


def test_a_held_posting_is_counted_under_its_hold(client: Client) -> None:
    held = value(
        "hub_posting_outcomes_total", connection="tryton-local", operation="ensure_customer", outcome="held_paused"
    )
    flow.pause(ERPConnection.objects.get(name="tryton-local"), actor="ops", reason="year-end close")
    _, postings = planned(client)
    assert executor.execute_posting(postings[Operation.ENSURE_CUSTOMER].pk) == "skipped"
    assert (
        value(
            "hub_posting_outcomes_total", connection="tryton-local", operation="ensure_customer", outcome="held_paused"
        )
        == held + 1
    )


def test_metrics_show_backlog_cases_by_age_circuit_and_reconciliation_from_the_database(
    client: Client, erp: ErpSimulator
) -> None:
    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4999")
    _, parked = planned(client)
    executor.execute_posting(parked[Operation.ENSURE_CUSTOMER].pk)
    executor.execute_posting(parked[Operation.POST_INVOICE].pk)
    _, old = planned(client)
    executor.execute_posting(old[Operation.ENSURE_CUSTOMER].pk)
    executor.execute_posting(old[Operation.POST_INVOICE].pk)
    ExceptionCase.objects.filter(source_id=old[Operation.POST_INVOICE].source_id).update(
        opened_at=timezone.now() - timedelta(days=2)
    )
    planned(client)  # a customer queued, its invoice waiting for it
    row = flow.flow_for(ERPConnection.objects.get(name="tryton-local"))
    ConnectionFlow.objects.filter(pk=row.pk).update(circuit_state=CircuitState.OPEN, circuit_reason="down")

    samples = scrape(client)
    assert ExceptionCase.objects.filter(status=CaseStatus.OPEN).count() == 2
    assert sample(samples, "hub_open_cases", category="business", age="under_1h") == 1
    assert sample(samples, "hub_open_cases", category="business", age="1d_to_3d") == 1
    assert sample(samples, "hub_open_cases", category="business", age="over_3d") == 0
    assert sample(samples, "hub_open_cases", category="technical", age="under_1h") == 0
    assert sample(samples, "hub_posting_backlog", connection="tryton-local", state="queued") == 1
    assert sample(samples, "hub_posting_backlog", connection="tryton-local", state="waiting") == 1
    assert sample(samples, "hub_posting_backlog", connection="tryton-local", state="in_flight") == 0
    assert sample(samples, "hub_posting_backlog_oldest_seconds", connection="tryton-local") >= 0
    assert sample(samples, "hub_circuit_state", connection="tryton-local", state="open") == 1
    assert sample(samples, "hub_circuit_state", connection="tryton-local", state="closed") == 0
    assert sample(samples, "hub_connection_paused", connection="tryton-local") == 0
    assert sample(samples, "hub_reconciliation_differences", connection="tryton-local") == 0
    assert sample(samples, "hub_metrics_database_up") == 1
    # This process's own counters are there too, in the single-process registry.
    assert (
        sample(
            samples, "hub_posting_outcomes_total", connection="tryton-local", operation="post_invoice", outcome="parked"
        )
        >= 2
    )


def test_metrics_want_the_bearer_token_when_one_is_set(client: Client) -> None:
    with override_settings(HUB={**settings.HUB, "METRICS_TOKEN": "scrape-secret"}):
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
        response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
        assert response.status_code == 200
        assert b"hub_posting_backlog" in response.content
    assert client.get("/metrics").status_code == 200  # open without a token (the demo)
