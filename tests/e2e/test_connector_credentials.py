"""Refused credentials open the connection's circuit, for every cloud ERP: the posting waits with
the others (not parked, no attempt spent against its cap) instead of hammering the ERP, and posts
once an engineer has fixed the credentials and closed the circuit. Each ERP is its contract
simulator, driven through the real worker process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client

from apps.flow import services as flow
from apps.flow.models import CircuitState, ConnectionFlow
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import deliver, wait_for
from tests.dynamics365_simulator import Dynamics365Simulator
from tests.netsuite_simulator import NetSuiteSimulator
from tests.quickbooks_simulator import QuickBooksSimulator
from tests.sap_simulator import SapSimulator
from tests.xero_simulator import XeroSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


def _netsuite(refuse: bool) -> Any:
    simulator = NetSuiteSimulator()
    simulator.refuse_tokens = refuse
    return simulator


def _refusing(factory: Callable[[], Any]) -> Callable[[bool], Any]:
    def make(refuse: bool) -> Any:
        simulator = factory()
        simulator.refuse_credentials(refuse)
        return simulator

    return make


def _allow(simulator: Any, connection: ERPConnection) -> None:
    if isinstance(simulator, NetSuiteSimulator):
        simulator.refuse_tokens = False
    elif isinstance(simulator, QuickBooksSimulator):
        # QuickBooks refuses a wrong client secret: the engineer enters the right one.
        connection.settings = simulator.connector_settings()
        connection.save()
    else:
        simulator.refuse_credentials(False)


def _settings(simulator: Any) -> dict[str, Any]:
    if isinstance(simulator, QuickBooksSimulator):
        return {**simulator.connector_settings(), "client_secret": "an-old-secret"}
    return simulator.settings()  # type: ignore[no-any-return]


ERPS: dict[str, tuple[str, Callable[[bool], Any], dict[str, str]]] = {
    "netsuite": (
        "netsuite",
        _netsuite,
        {"revenue_account": "4000", "item": "201", "currency": "1", "subsidiary": "1", "payment_journal": "1150"},
    ),
    "sap": (
        "sap_s4hana",
        _refusing(SapSimulator),
        {"company": "1710", "revenue_account": "41000000", "payment_journal": "11001000"},
    ),
    "dynamics365": (
        "dynamics365",
        _refusing(Dynamics365Simulator),
        {"company": "usmf", "revenue_account": "401100", "payment_journal": "USMF CARD"},
    ),
    "xero": ("xero", _refusing(XeroSimulator), {"revenue_account": "200", "payment_journal": "091"}),
    "quickbooks": (
        "quickbooks",
        lambda refuse: QuickBooksSimulator(),
        {"revenue_account": "79", "item": "1", "payment_journal": "35"},
    ),
}


@pytest.fixture(params=sorted(ERPS))
def erp(request: pytest.FixtureRequest, hub: Any) -> Iterator[tuple[ERPConnection, Any]]:
    kind, make, mappings = ERPS[request.param]
    simulator = make(True)
    connection = ERPConnection.objects.create(name=f"{request.param}-cloud", kind=kind, settings=_settings(simulator))
    for mapping_kind, value in mappings.items():
        key = "USD" if mapping_kind == "currency" else "default"
        Mapping.objects.create(connection=connection, kind=mapping_kind, key=key, value=value)
    RoutingRule.objects.update(connection=connection)
    yield connection, simulator
    simulator.stop()


def test_refused_credentials_open_the_circuit_and_the_invoice_posts_once_they_are_fixed(
    client: Client, erp: tuple[ERPConnection, Any]
) -> None:
    connection, simulator = erp
    obj = se.invoice(se.uid("cus"), [se.line(4900)])
    assert deliver(client, se.event("invoice.finalized", obj)).status_code == 200

    opened = wait_for(
        lambda: ConnectionFlow.objects.filter(connection=connection, circuit_state=CircuitState.OPEN).first(),
        timeout=60,
        what="the circuit to open",
    )
    assert opened.circuit_reason  # says why, for the engineer
    customer = Posting.objects.get(operation=Operation.ENSURE_CUSTOMER, source_id=obj["customer"])
    assert customer.state in (PostingState.RETRY_SCHEDULED, PostingState.QUEUED)  # held, not parked
    assert customer.error_code == flow.HOLD_CIRCUIT

    _allow(simulator, connection)
    flow.close_circuit(connection, actor="engineer", reason="new client secret")
    wait_for(
        lambda: Posting.objects.filter(
            source_id=obj["id"], operation=Operation.POST_INVOICE, state=PostingState.POSTED, connection=connection
        ).exists(),
        timeout=120,
        what="the invoice to post after the fix",
    )
    assert not Posting.objects.filter(state__in=[PostingState.PARKED, PostingState.DEAD]).exists()
