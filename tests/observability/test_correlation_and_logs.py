"""One correlation id per billing event: where it comes from, how it crosses into Celery tasks and
ERP requests, and the log lines that carry it with the posting's facts."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from django.test import Client

from apps.connectors.tryton import TrytonRPC
from apps.core.correlation import HEADER, TASK_HEADER, correlation_scope, get_correlation_id, set_correlation_id
from apps.core.logging import ConsoleFormatter, CorrelationIdFilter, JsonFormatter
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor
from apps.posting.models import Operation, Posting, PostingState
from apps.sources import canonical_samples as cs
from apps.sources import stripe_samples as se
from integration_hub.celery import _adopt_correlation_id, _carry_correlation_id
from tests.conftest import SECRET, deliver
from tests.erp_simulator import ErpSimulator
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.usefixtures("configured")


class Lines(logging.Handler):
    """The lines a logger wrote, formatted as production writes them."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(formatter)
        self.addFilter(CorrelationIdFilter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
def json_lines() -> Iterator[Lines]:
    handler = Lines(JsonFormatter())
    logger = logging.getLogger("apps")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_a_webhook_without_a_correlation_header_is_traced_under_the_billing_event_id(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    response = deliver(client, event)
    stored = InboxEvent.objects.get(event_id=event["id"])
    assert stored.correlation_id == event["id"]
    assert response[HEADER] == event["id"] == response.json()["correlation_id"]


def test_the_callers_correlation_header_wins_over_the_event_id(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    body = json.dumps(event).encode()
    response = client.post(
        "/webhooks/stripe-us/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=se.sign(body, SECRET),
        HTTP_X_CORRELATION_ID="billing-run-2026-11:42",
    )
    assert InboxEvent.objects.get(event_id=event["id"]).correlation_id == "billing-run-2026-11:42"
    assert response[HEADER] == "billing-run-2026-11:42"


def test_an_insane_correlation_header_is_replaced_not_stored(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    body = json.dumps(event).encode()
    client.post(
        "/webhooks/stripe-us/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=se.sign(body, SECRET),
        HTTP_X_CORRELATION_ID="<script>alert(1)</script>",
    )
    assert InboxEvent.objects.get(event_id=event["id"]).correlation_id == event["id"]


def test_a_canonical_api_event_answers_with_its_correlation_header(client: Client) -> None:
    body = json.dumps(cs.event("invoice", cs.invoice(cs.uid("cus"), [cs.line(1000)]))).encode()
    key = cs.uid("evt")
    response = client.post(
        "/api/v1/sources/billing-api/events/",
        data=body,
        content_type="application/json",
        headers={k: v for k, v in cs.headers(body, "canonical_test_secret", key).items() if k != "Content-Type"},
    )
    assert response.status_code == 202, response.content
    assert response[HEADER] == key == InboxEvent.objects.get(event_id=key).correlation_id


def test_the_correlation_id_rides_in_its_own_task_header_not_celerys_correlation_id() -> None:
    headers: dict[str, object] = {}
    with correlation_scope("evt_123"):
        _carry_correlation_id(headers=headers)
    assert headers[TASK_HEADER] == "evt_123"

    # On the worker Celery sets request.correlation_id to the task id: the hub's header must win.
    task = SimpleNamespace(request=SimpleNamespace(correlation_id="c0ffee-task-id", **{TASK_HEADER: "evt_123"}))
    _adopt_correlation_id(task=task)
    try:
        assert get_correlation_id() == "evt_123"
    finally:
        set_correlation_id("")


def test_tryton_requests_carry_the_correlation_header_of_the_work_in_hand() -> None:
    with ErpSimulator() as sim:
        proxy = FaultProxy(sim.url)
        try:
            rpc = TrytonRPC(proxy.url, sim.database, sim.username, sim.password, timeout=10)
            with correlation_scope("evt_abc"):
                rpc.call("model.party.party.search", [[], 0, None, None], writes=False)
            rpc.call("model.party.party.search", [[], 0, None, None], writes=False)
        finally:
            proxy.stop()
    traced = [r for r in proxy.received if r.method == "model.party.party.search"]
    assert [r.headers.get(HEADER) for r in traced] == ["evt_abc", None]
    assert proxy.received[0].method == "common.db.login" and proxy.received[0].headers[HEADER] == "evt_abc"


def test_json_lines_carry_the_correlation_id_and_the_fields_logged_with() -> None:
    handler = Lines(JsonFormatter())
    record = logging.makeLogRecord(
        {"name": "apps.posting.executor", "msg": "posted", "levelno": logging.INFO, "levelname": "INFO"}
    )
    record.posting_id, record.connection, record.outcome = 7, "tryton-local", "posted"
    with correlation_scope("evt_9"):
        handler.handle(record)
    line = json.loads(handler.lines[0])
    assert {k: line[k] for k in ("message", "correlation_id", "posting_id", "connection", "outcome")} == {
        "message": "posted",
        "correlation_id": "evt_9",
        "posting_id": 7,
        "connection": "tryton-local",
        "outcome": "posted",
    }


def test_console_lines_are_readable_with_the_same_fields() -> None:
    handler = Lines(ConsoleFormatter())
    record = logging.makeLogRecord({"name": "apps.posting.executor", "msg": "parked", "levelname": "INFO"})
    record.posting_id, record.connection, record.outcome = 8, "tryton-local", "parked"
    with correlation_scope("evt_10"):
        handler.handle(record)
    assert handler.lines[0].endswith(
        "INFO apps.posting.executor [evt_10] parked posting_id=8 connection=tryton-local outcome=parked"
    )


def test_executor_lines_name_the_posting_its_connection_source_and_outcome(client: Client, json_lines: Lines) -> None:
    # The example configuration's Tryton is unreachable here (port 9): a transient failure.
    event = se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(1000)]))
    body = json.dumps(event).encode()
    client.post(
        "/webhooks/stripe-us/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=se.sign(body, SECRET),
        HTTP_X_CORRELATION_ID="trace-exec-1",
    )
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    customer = Posting.objects.get(operation=Operation.ENSURE_CUSTOMER)
    assert executor.execute_posting(customer.pk) == PostingState.RETRY_SCHEDULED

    lines = [json.loads(line) for line in json_lines.lines]
    [retry] = [line for line in lines if line["message"] == "retry scheduled"]
    assert retry["correlation_id"] == "trace-exec-1"
    assert retry["posting_id"] == customer.pk
    assert retry["connection"] == "tryton-local"
    assert retry["source"] == "stripe-us"
    assert retry["operation"] == "ensure_customer"
    assert retry["outcome"] == "transient"
    stored = [line for line in lines if line["message"] == "event stored"]
    assert stored and stored[0]["correlation_id"] == "trace-exec-1" and stored[0]["source"] == "stripe-us"
