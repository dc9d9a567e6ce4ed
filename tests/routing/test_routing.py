"""Routing rules: evaluated by priority on legal entity, region, product line, transaction type and
currency; fan-out to several ERPs; every posting records the rule version that routed it; no route
is a case that clears itself once a rule takes the document."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.connectors import registry
from apps.connectors.tryton import TrytonConnector
from apps.console.models import CaseStatus, ExceptionCase
from apps.ingest.models import InboxEvent, InboxStatus
from apps.ingest.services import normalize_event
from apps.ledger.models import Invoice, LegalEntity, Product
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, RoutingRule, RoutingVersion
from apps.routing.services import NoRoute, RouteFacts, routes
from apps.sources import stripe_samples as se
from tests.conftest import deliver

pytestmark = pytest.mark.usefixtures("configured")


def connection(name: str) -> ERPConnection:
    return ERPConnection.objects.create(name=name, kind="tryton", settings={"url": "http://127.0.0.1:9"})


def receive(client: Client, event: dict[str, Any]) -> str:
    assert deliver(client, event).status_code == 200
    return normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)


def names(facts: RouteFacts) -> list[str]:
    return [c.name for c in routes(facts).connections]


def test_rules_match_on_every_condition_in_priority_order() -> None:
    RoutingRule.objects.all().delete()
    us = LegalEntity.objects.get(code="US01")
    de = LegalEntity.objects.create(code="DE01", name="Hub GmbH", country="DE", base_currency="EUR")
    group, sap, netsuite, analytics, eur = (connection(n) for n in ("group", "sap", "netsuite", "analytics", "eur"))
    RoutingRule.objects.create(priority=10, product_line="analytics", connection=analytics)
    RoutingRule.objects.create(priority=20, legal_entity=de, connection=sap)
    RoutingRule.objects.create(priority=30, region="GB, ie", transaction_type="invoice", connection=netsuite)
    RoutingRule.objects.create(priority=40, currency="eur", connection=eur)
    RoutingRule.objects.create(priority=100, connection=group)

    invoice = RouteFacts(RoutingRule.TYPE_INVOICE, us, "US", "", "USD")
    assert names(invoice) == ["group"]  # only the default matches
    assert names(RouteFacts(RoutingRule.TYPE_INVOICE, us, "US", "analytics", "USD")) == ["analytics"]
    # The product-line rule comes first, so it wins even for the German entity.
    assert names(RouteFacts(RoutingRule.TYPE_INVOICE, de, "DE", "analytics", "EUR")) == ["analytics"]
    assert names(RouteFacts(RoutingRule.TYPE_INVOICE, de, "DE", "", "EUR")) == ["sap"]
    assert names(RouteFacts(RoutingRule.TYPE_INVOICE, us, "IE", "", "USD")) == ["netsuite"]
    # The region rule is for invoices only: unapplied cash from Ireland falls through to the default.
    assert names(RouteFacts(RoutingRule.TYPE_PAYMENT, us, "IE", "", "USD")) == ["group"]
    assert names(RouteFacts(RoutingRule.TYPE_INVOICE, us, "FR", "", "EUR")) == ["eur"]

    RoutingRule.objects.filter(connection=group).update(active=False)
    with pytest.raises(NoRoute) as refused:
        routes(invoice)
    assert "legal entity US01, region US, product line (none), transaction type invoice, currency USD" in str(
        refused.value
    )


def test_a_fanned_out_invoice_is_planned_in_both_erps_under_the_rule_version(client: Client) -> None:
    group = ERPConnection.objects.get(name="tryton-local")
    statutory = connection("statutory")
    RoutingRule.objects.create(priority=1, name="statutory ledger", connection=statutory, also=True)

    obj = se.invoice(se.uid("cus"), [se.line(2500)])
    assert receive(client, se.event("invoice.finalized", obj)) == InboxStatus.PROCESSED

    planned = Posting.objects.filter(invoice__source_id=obj["id"], operation=Operation.POST_INVOICE)
    assert {p.connection.name for p in planned} == {"tryton-local", "statutory"}
    versions = {p.routing_version_id for p in Posting.objects.filter(source_id__in=[obj["id"], obj["customer"]])}
    [version_id] = versions
    version = RoutingVersion.objects.get(pk=version_id)
    assert [(rule["connection"], rule["also"]) for rule in version.rules] == [
        ("statutory", True),
        (group.name, False),
    ]


def test_documents_stay_with_the_erp_their_invoice_went_to_after_a_rule_change(client: Client) -> None:
    obj = se.invoice(se.uid("cus"), [se.line(4000)])
    receive(client, se.event("invoice.finalized", obj))
    first = Posting.objects.get(invoice__source_id=obj["id"], operation=Operation.POST_INVOICE)

    other = connection("new-erp")
    RoutingRule.objects.all().update(connection=other)  # from now on, new invoices go elsewhere
    receive(client, se.event("invoice.paid", se.paid(obj)))
    payment = Posting.objects.get(payment_application__invoice__source_id=obj["id"])
    assert payment.connection == first.connection  # the payment follows its invoice
    assert payment.routing_version == first.routing_version

    later = se.invoice(se.uid("cus"), [se.line(100)])
    receive(client, se.event("invoice.finalized", later))
    moved = Posting.objects.get(invoice__source_id=later["id"], operation=Operation.POST_INVOICE)
    assert moved.connection == other
    assert moved.routing_version != first.routing_version  # a rule change is a new version


def test_an_invoice_of_a_product_line_goes_to_its_erp(client: Client) -> None:
    analytics = connection("analytics-erp")
    RoutingRule.objects.create(priority=1, product_line="analytics", connection=analytics)
    small = se.line(500, product="prod_small", product_line="core")
    obj = se.invoice(se.uid("cus"), [small, se.line(9000, product="prod_warehouse", product_line="analytics")])
    receive(client, se.event("invoice.finalized", obj))
    posting = Posting.objects.get(invoice__source_id=obj["id"], operation=Operation.POST_INVOICE)
    assert posting.connection == analytics  # the largest line's product line decides
    assert Product.objects.get(source_id="prod_warehouse").product_line == "analytics"  # from Stripe's metadata


def test_no_route_opens_a_case_naming_what_is_missing_and_a_new_rule_posts_it(
    client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    RoutingRule.objects.all().delete()
    event = se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(1000)]))
    invoice_id = event["data"]["object"]["id"]
    assert receive(client, event) == InboxStatus.FAILED
    stored = InboxEvent.objects.get(event_id=event["id"])
    assert stored.error_code == "no_route" and not Invoice.objects.filter(source_id=invoice_id).exists()
    case = ExceptionCase.objects.get(source_id=invoice_id, status=CaseStatus.OPEN)
    assert case.kind == "No ERP route" and case.connection is None
    assert "No ERP connection is routed for invoice" in case.message
    assert "legal entity US01, region US" in case.message and "Add a routing rule" in case.message

    with django_capture_on_commit_callbacks(execute=True):
        RoutingRule.objects.create(connection=ERPConnection.objects.get(name="tryton-local"))
    stored.refresh_from_db()
    assert stored.status == InboxStatus.RECEIVED  # replayed by itself: sent to normalize again
    assert normalize_event(stored.pk) == InboxStatus.PROCESSED
    case.refresh_from_db()
    assert case.status == CaseStatus.RESOLVED and case.resolved_by == "system"
    assert Posting.objects.filter(invoice__source_id=invoice_id, operation=Operation.POST_INVOICE).exists()


def test_a_missing_mapping_is_reposted_once_the_mapping_is_added(django_capture_on_commit_callbacks: Any) -> None:
    from apps.routing.models import Mapping

    tryton = ERPConnection.objects.get(name="tryton-local")
    parked = Posting.objects.create(
        idempotency_key="k" * 64,
        connection=tryton,
        operation=Operation.POST_INVOICE,
        source="stripe-us",
        source_id="in_parked",
        state=PostingState.PARKED,
        error_code="missing_department_mapping",
    )
    other = Posting.objects.create(
        idempotency_key="o" * 64,
        connection=tryton,
        operation=Operation.POST_INVOICE,
        source="stripe-us",
        source_id="in_other",
        state=PostingState.PARKED,
        error_code="missing_tax_code_mapping",
    )
    with django_capture_on_commit_callbacks(execute=True):
        Mapping.objects.create(connection=tryton, kind="department", key="US01", value="D-100")
    parked.refresh_from_db()
    other.refresh_from_db()
    assert parked.state == PostingState.QUEUED
    assert other.state == PostingState.PARKED  # not what was missing there


class SubsidiaryERP(TrytonConnector):
    """An ERP that, like NetSuite, posts nothing without a subsidiary and its own currency ids."""

    required_mappings = frozenset({"subsidiary", "currency"})


def test_dimensions_resolve_by_legal_entity_then_region_then_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from apps.core.errors import BusinessRuleError
    from apps.posting.documents import dimensions, erp_currency
    from apps.routing.models import Mapping

    monkeypatch.setitem(registry.CONNECTOR_CLASSES, "subsidiary-erp", f"{__name__}.SubsidiaryERP")
    netsuite = ERPConnection.objects.create(name="ns", kind="subsidiary-erp", settings={})
    us = LegalEntity.objects.get(code="US01")
    de = LegalEntity.objects.create(code="DE01", name="Hub GmbH", country="DE", base_currency="EUR")
    for kind, key, value in [
        ("department", "default", "10"),
        ("department", "DE", "20"),  # every German entity
        ("department", "US01", "30"),
        ("location", "default", "HQ"),
        ("currency", "EUR", "4"),
    ]:
        Mapping.objects.create(connection=netsuite, kind=kind, key=key, value=value)
    with pytest.raises(BusinessRuleError) as missing:
        dimensions(netsuite, us)
    assert missing.value.code == "missing_subsidiary_mapping"
    assert "No subsidiary dimension is mapped" in missing.value.finance_message

    Mapping.objects.create(connection=netsuite, kind="subsidiary", key="default", value="1")
    assert dimensions(netsuite, us) == {"subsidiary": "1", "department": "30", "location": "HQ"}
    assert dimensions(netsuite, de) == {"subsidiary": "1", "department": "20", "location": "HQ"}
    assert erp_currency(netsuite, "eur") == "4"
    with pytest.raises(BusinessRuleError) as no_currency:
        erp_currency(netsuite, "USD")
    assert no_currency.value.code == "missing_currency_mapping"
    # Tryton needs neither: an unmapped dimension is left out, not a case.
    assert dimensions(ERPConnection.objects.get(name="tryton-local"), us) == {}


def test_an_erp_that_books_revenue_on_items_needs_no_revenue_account_mapping(client: Client) -> None:
    from apps.core.errors import BusinessRuleError
    from apps.ledger.models import InvoiceLine
    from apps.posting.documents import _line_document
    from apps.routing.models import Mapping

    obj = se.invoice(se.uid("cus"), [se.line(2500, product="prod_addon")])
    receive(client, se.event("invoice.finalized", obj))
    line = InvoiceLine.objects.select_related("product").get(invoice__source_id=obj["id"])
    netsuite = ERPConnection.objects.create(name="ns-items", kind="netsuite", settings={})
    Mapping.objects.create(connection=netsuite, kind="item", key="default", value="201")
    document = _line_document(netsuite, line, line)
    assert (document.item, document.revenue_account) == ("201", "")  # NetSuite: the item's income account

    tryton_like = ERPConnection.objects.create(name="tryton-2", kind="tryton", settings={})
    with pytest.raises(BusinessRuleError) as missing:
        _line_document(tryton_like, line, line)  # Tryton books revenue on the mapped account: required
    assert missing.value.code == "missing_revenue_account_mapping"
