"""Issue 6's acceptance: a missing route or mapping parks with a case naming what is missing, and
posts once it is added, through the real worker into the real Tryton."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.console.models import CaseStatus, ExceptionCase
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources import stripe_samples as se
from tests.conftest import deliver, wait_for
from tests.e2e.test_lifecycle import posted

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


def test_an_invoice_no_rule_takes_posts_once_a_rule_is_added(client: Client, tryton: Any) -> None:
    RoutingRule.objects.all().delete()
    obj = se.invoice(se.uid("cus"), [se.line(2500)])
    assert deliver(client, se.event("invoice.finalized", obj)).status_code == 200
    case = wait_for(
        lambda: ExceptionCase.objects.filter(source_id=obj["id"], status=CaseStatus.OPEN).first(),
        what="a no-route case",
    )
    assert (case.kind, case.connection) == ("No ERP route", None)
    assert "No ERP connection is routed for invoice" in case.message and "legal entity US01" in case.message

    RoutingRule.objects.create(legal_entity=None, connection=ERPConnection.objects.get(name="tryton-local"))
    posted(obj["id"], Operation.POST_INVOICE)
    [erp_invoice] = tryton.invoices(f"stripe-us:{obj['id']}")
    assert erp_invoice["state"] == "posted"
    case.refresh_from_db()
    assert case.status == CaseStatus.RESOLVED


def test_an_invoice_without_a_revenue_account_posts_once_the_mapping_is_added(client: Client, tryton: Any) -> None:
    tryton_local = ERPConnection.objects.get(name="tryton-local")
    Mapping.objects.filter(connection=tryton_local, kind=Mapping.KIND_REVENUE_ACCOUNT).delete()
    obj = se.invoice(se.uid("cus"), [se.line(2500, product="prod_new_addon", description="New add-on")])
    assert deliver(client, se.event("invoice.finalized", obj)).status_code == 200
    parked = wait_for(
        lambda: Posting.objects.filter(
            source_id=obj["id"], operation=Operation.POST_INVOICE, state=PostingState.PARKED
        ).first(),
        what="the invoice to park",
    )
    assert parked.error_code == "missing_revenue_account_mapping"
    case = ExceptionCase.objects.get(source_id=obj["id"], status=CaseStatus.OPEN)
    assert "no revenue account is mapped" in case.message and "prod_new_addon" in case.message

    Mapping.objects.create(
        connection=tryton_local, kind=Mapping.KIND_REVENUE_ACCOUNT, key="prod_new_addon", value="4000"
    )
    posted(obj["id"], Operation.POST_INVOICE)
    [erp_invoice] = tryton.invoices(f"stripe-us:{obj['id']}")
    assert erp_invoice["state"] == "posted"
    case.refresh_from_db()
    assert case.status == CaseStatus.RESOLVED
