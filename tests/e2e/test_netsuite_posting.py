"""Signed Stripe webhooks through the real hub (inbox, a real Celery worker process, the ledger,
postings) into NetSuite, played by its SuiteTalk REST contract simulator: the customer, the invoice
and its payment reach NetSuite exactly once, with the subsidiary, currency, items and dimensions the
connection maps, and a lost answer after NetSuite saved the invoice makes no second invoice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest
import requests
from django.test import Client

from apps.connectors.netsuite import external_id
from apps.posting.models import Operation, PostingAttempt
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import SECRET, SOURCE, deliver
from tests.e2e.test_stripe_to_tryton import new_invoice, wait_posted
from tests.netsuite_simulator import NetSuiteSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

SEGMENTS = {"department": {"id": "3"}, "class": {"id": "5"}, "location": {"id": "7"}}
MAPPINGS = [
    (Mapping.KIND_REVENUE_ACCOUNT, "default", "4000"),  # NetSuite takes revenue from the item's income account
    (Mapping.KIND_ITEM, "default", "201"),
    (Mapping.KIND_ITEM, "prod_usage_api_calls", "202"),
    (Mapping.KIND_PAYMENT_JOURNAL, "default", "1150"),
    (Mapping.KIND_CURRENCY, "USD", "1"),
    ("subsidiary", "US01", "1"),
    ("department", "US01", "3"),
    ("class", "default", "5"),
    ("location", "US", "7"),  # by region: the legal entity's country
]


def route_everything_to(connection: ERPConnection) -> None:
    """Send every document to ``connection`` (the example configuration routes to Tryton)."""
    RoutingRule.objects.update(connection=connection)


@pytest.fixture
def netsuite() -> Iterator[NetSuiteSimulator]:
    simulator = NetSuiteSimulator(hang_seconds=5)
    yield simulator
    simulator.stop()


@pytest.fixture
def connection(hub: Any, netsuite: NetSuiteSimulator) -> ERPConnection:
    # The worker process reads the settings from the database; the simulator's key is a test key.
    connection = ERPConnection.objects.create(
        name="netsuite-sandbox", kind="netsuite", settings=netsuite.settings(timeout=2)
    )
    for kind, key, value in MAPPINGS:
        Mapping.objects.create(connection=connection, kind=kind, key=key, value=value)
    route_everything_to(connection)
    return connection


def committed(netsuite: NetSuiteSimulator, record: str) -> list[Any]:
    return [r for r in netsuite.writes() if r.committed and r.path.split("/")[5] == record]


def test_customer_invoice_and_payment_reach_netsuite_once_with_the_mapped_dimensions(
    live_server: Any, netsuite: NetSuiteSimulator, connection: ERPConnection
) -> None:
    obj = new_invoice()
    events = [se.event("invoice.finalized", obj), se.event("invoice.paid", se.paid(obj))]

    def send(event: dict[str, Any]) -> int:
        body = json.dumps(event).encode()
        return requests.post(
            f"{live_server.url}/webhooks/{SOURCE}/",
            data=body,
            timeout=60,
            headers={"Content-Type": "application/json", "Stripe-Signature": se.sign(body, SECRET)},
        ).status_code

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(send, events * 2)) == [200] * 4  # every event twice, at once
    postings = wait_posted(obj["id"])

    assert {p.connection_id for p in postings.values()} == {connection.pk}
    customer = netsuite.record("customer", eid=external_id(f"{SOURCE}:{obj['customer']}"))
    invoice = netsuite.record("invoice", eid=external_id(f"{SOURCE}:{obj['id']}"))
    assert customer is not None and invoice is not None
    assert (customer["companyName"], customer["subsidiary"]["id"], customer["currency"]["id"]) == (
        "ACME Corp",
        "1",
        "1",
    )
    assert postings[Operation.ENSURE_CUSTOMER].erp_id == customer["id"]
    assert (postings[Operation.POST_INVOICE].erp_id, postings[Operation.POST_INVOICE].erp_number) == (
        invoice["id"],
        invoice["tranId"],
    )
    assert (invoice["total"], invoice["status"]["id"], invoice["entity"]["id"]) == (
        Decimal("61.50"),
        "paidInFull",
        customer["id"],
    )
    assert {name: {"id": invoice[name]["id"]} for name in SEGMENTS} == SEGMENTS
    lines = [(line["item"]["id"], line["quantity"], line["amount"]) for line in invoice["item"]["items"]]
    assert sorted(lines) == [("201", 1, Decimal("49.00")), ("202", 5, Decimal("12.50"))]
    assert all({name: {"id": line[name]["id"]} for name in SEGMENTS} == SEGMENTS for line in invoice["item"]["items"])
    [payment] = netsuite.all("customerPayment")
    assert postings[Operation.APPLY_PAYMENT].erp_id == payment["id"]
    assert (payment["payment"], payment["account"]["id"], payment["unapplied"]) == (
        Decimal("61.50"),
        "1150",
        Decimal(0),
    )
    assert netsuite.customer_balance(customer["id"]) == Decimal("0.00")
    for record in ("customer", "invoice", "customerPayment"):
        assert len(netsuite.all(record)) == 1
        assert len(committed(netsuite, record)) == 1  # written once, whatever was delivered twice
    assert netsuite.ignored_fields == []


def test_an_invoice_netsuite_saved_before_the_answer_was_lost_is_found_not_posted_again(
    client: Client, netsuite: NetSuiteSimulator, connection: ERPConnection
) -> None:
    netsuite.fail_next("timeout_after_commit", on="invoice")  # saved, answered after the hub's 2 s timeout
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("invoice.paid", se.paid(obj)))

    postings = wait_posted(obj["id"])

    invoice_posting = postings[Operation.POST_INVOICE]
    outcomes = list(invoice_posting.attempts.order_by("id").values_list("outcome", flat=True))
    assert outcomes[0] == PostingAttempt.Outcome.UNCERTAIN and outcomes[-1] == PostingAttempt.Outcome.FOUND
    [invoice] = netsuite.all("invoice")
    assert invoice_posting.erp_id == invoice["id"] and invoice["status"]["id"] == "paidInFull"
    assert len(committed(netsuite, "invoice")) == 1  # never sent twice
    assert netsuite.customer_balance(invoice["entity"]["id"]) == Decimal("0.00")
