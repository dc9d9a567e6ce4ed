"""Issue 6's acceptance: one configuration file routes US01 to NetSuite, DE01 to SAP S/4HANA Cloud,
GB01 to Dynamics 365 Finance and the analytics product line to Tryton. A mixed stream of Stripe
events from three accounts, each delivered twice, lands every document in the right system, once:
the three contract simulators and the real Tryton."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from apps.connectors.netsuite import external_id
from apps.connectors.sap_s4hana import reference_key
from apps.console import hub_config
from apps.posting.models import Posting, PostingState
from apps.routing.models import ERPConnection, RoutingVersion
from apps.sources import stripe_samples as se
from tests.conftest import SECRET, deliver, wait_for
from tests.dynamics365_simulator import Dynamics365Simulator
from tests.netsuite_simulator import NetSuiteSimulator
from tests.sap_simulator import SapSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

CONFIG = Path(__file__).resolve().parents[2] / "config" / "hub.multi-erp.example.yaml"
SECRETS = {"stripe-us": SECRET, "stripe-de": "whsec_test_de_account", "stripe-gb": "whsec_test_gb_account"}


@pytest.fixture
def simulators() -> Iterator[dict[str, Any]]:
    found = {
        "netsuite-us": NetSuiteSimulator(),
        "sap-de": SapSimulator(),
        "d365-gb": Dynamics365Simulator(
            companies={"usmf": "USD", "gbsi": "GBP"}, bank_accounts={"USMF CARD", "GBSI CARD"}
        ),
    }
    yield found
    for simulator in found.values():
        simulator.stop()


@pytest.fixture
def group(hub: Any, simulators: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_DE", SECRETS["stripe-de"])
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_GB", SECRETS["stripe-gb"])
    report = hub_config.apply(hub_config.load(CONFIG))
    assert "route" in str(report)
    # The file names the production endpoints and env: secrets; here they are the simulators'.
    for name, simulator in simulators.items():
        ERPConnection.objects.filter(name=name).update(settings=simulator.settings(timeout=5))
    return simulators


def invoice(currency: str, country: str, *, product_line: str = "") -> dict[str, Any]:
    obj = se.invoice(se.uid("cus"), [se.line(4900, description="Pro plan (monthly)", product_line=product_line)])
    return {
        **obj,
        "currency": currency,
        "customer_address": {**obj["customer_address"], "country": country},
    }


def send(client: Client, source: str, event: dict[str, Any]) -> None:
    for _ in range(2):  # every event twice
        assert deliver(client, event, source=source, secret=SECRETS[source]).status_code == 200


def test_a_mixed_stripe_stream_lands_each_document_in_its_erp_once(
    client: Client, tryton: Any, group: dict[str, Any]
) -> None:
    us = invoice("usd", "US")
    analytics = invoice("usd", "US", product_line="analytics")
    de = invoice("eur", "DE")
    gb = invoice("gbp", "GB")
    stream = [
        ("stripe-us", se.event("invoice.finalized", us)),
        ("stripe-de", se.event("invoice.finalized", de)),
        ("stripe-us", se.event("invoice.finalized", analytics)),
        ("stripe-gb", se.event("invoice.finalized", gb)),
        ("stripe-de", se.event("invoice.paid", se.paid(de))),
        ("stripe-us", se.event("invoice.paid", se.paid(us))),
    ]
    for source, event in stream:
        send(client, source, event)

    expected = {
        ("stripe-us", us["id"]): "netsuite-us",
        ("stripe-us", analytics["id"]): "tryton-local",
        ("stripe-de", de["id"]): "sap-de",
        ("stripe-gb", gb["id"]): "d365-gb",
    }
    for (source, invoice_id), connection in expected.items():
        postings = wait_for(
            lambda s=source, i=invoice_id: (
                [p for p in Posting.objects.filter(source=s, invoice__source_id=i) if p.state == PostingState.POSTED]
                or None
            ),
            timeout=180,
            what=f"{invoice_id} posted",
        )
        assert {p.connection.name for p in postings} == {connection}, (invoice_id, connection)

    def all_posted() -> bool:
        return not Posting.objects.exclude(state__in=[PostingState.POSTED, PostingState.SKIPPED]).exists()

    wait_for(all_posted, timeout=180, what="every posting to be posted")
    assert not Posting.objects.filter(state__in=[PostingState.PARKED, PostingState.DEAD]).exists()

    # NetSuite: the US invoice and its payment, once; not the analytics invoice.
    netsuite = group["netsuite-us"]
    assert netsuite.record("invoice", eid=external_id(f"stripe-us:{us['id']}")) is not None
    assert netsuite.record("invoice", eid=external_id(f"stripe-us:{analytics['id']}")) is None
    assert len(netsuite.all("invoice")) == 1 and len(netsuite.all("customerPayment")) == 1
    # SAP: the German invoice and its payment as two journal entries in company code 1010.
    sap = group["sap-de"]
    [entry] = sap.entries_with_reference(reference_key(f"stripe-de:{de['id']}"))
    assert (entry.company_code, entry.currency) == ("1010", "EUR")
    assert len(sap.entries) == 2
    # Dynamics 365: the British invoice, in legal entity gbsi, in GBP.
    d365 = group["d365-gb"]
    [header] = d365.invoices(company="gbsi")
    assert header["CurrencyCode"] == "GBP" and not d365.invoices(company="usmf")
    # Tryton: only the analytics invoice.
    [erp_invoice] = tryton.invoices(f"stripe-us:{analytics['id']}")
    assert erp_invoice["total_amount"] == Decimal("49.00")
    assert tryton.invoices(f"stripe-us:{us['id']}") == []

    # Every posting records the version of the rules that routed it: the file's.
    versions = set(Posting.objects.values_list("routing_version", flat=True))
    assert len(versions) == 1 and RoutingVersion.objects.get(pk=versions.pop()).rules[0]["product line"] == "analytics"
