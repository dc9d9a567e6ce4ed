"""The validation API against the real Tryton: checks answered from a cache refreshed from the ERP,
still answered (and marked stale) while the ERP is down."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.test import Client
from rest_framework.authtoken.models import Token

from apps.ledger.models import LegalEntity
from apps.posting.models import Operation
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from apps.validation import services
from apps.validation.models import ReferenceRefresh
from tests.conftest import deliver
from tests.e2e.test_lifecycle import posted
from tests.fault_proxy import FaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


@pytest.fixture
def billing_system(hub: Any) -> dict[str, str]:
    """A service user for the billing platform, allowed to run checks."""
    user = get_user_model().objects.create_user("billing-platform")
    user.user_permissions.add(Permission.objects.get(codename="view_referenceentry"))
    return {"HTTP_AUTHORIZATION": f"Token {Token.objects.create(user=user).key}"}


def check(client: Client, auth: dict[str, str], what: str, **params: str) -> Any:
    response = client.get(f"/api/v1/validation/{what}/", params, **auth)
    return response.status_code, response.json()


def test_checks_answer_from_the_cache_and_keep_answering_while_tryton_is_down(
    client: Client, hub: Any, billing_system: dict[str, str]
) -> None:
    proxy = FaultProxy(hub.url)
    try:
        connection = ERPConnection.objects.get(name="tryton-local")
        connection.settings = {**connection.settings, "url": proxy.url, "timeout": 5}
        connection.save()
        status, body = check(client, billing_system, "tax-codes", legal_entity="US01", code="VAT20")
        assert status == 503 and "has not been filled yet" in body["detail"]

        obj = se.invoice(se.uid("cus"), [se.line(1200)])
        assert deliver(client, se.event("invoice.finalized", obj)).status_code == 200
        posted(obj["customer"], Operation.ENSURE_CUSTOMER)
        state = services.refresh(connection)
        assert state.error == "" and state.entries > 0

        status, body = check(
            client, billing_system, "customers", legal_entity="US01", source="stripe-us", customer_id=obj["customer"]
        )
        assert status == 200 and body["valid"] and body["customer"]["in_erp"] and not body["cache_stale"]
        assert body["customer"]["erp_name"] == "ACME Corp"

        status, body = check(
            client, billing_system, "customers", legal_entity="US01", source="stripe-us", customer_id="cus_nobody"
        )
        assert not body["valid"]
        assert body["reasons"] == [
            "Customer cus_nobody of stripe-us is unknown: billing has not sent it to the hub and tryton-local "
            "has no account for it."
        ]

        status, body = check(client, billing_system, "tax-codes", legal_entity="US01", code="VAT20")
        assert body["valid"] and body["erp_tax_code"] == "VAT20"
        status, body = check(client, billing_system, "tax-codes", legal_entity="US01", code="VAT99")
        assert not body["valid"] and body["reasons"] == ["Tax code 'VAT99' does not exist in tryton-local."]

        status, body = check(
            client, billing_system, "dimensions", legal_entity="US01", dimension="account", value="4000"
        )
        assert body["valid"] and body["name"]
        status, body = check(
            client, billing_system, "dimensions", legal_entity="US01", dimension="account", value="4999"
        )
        assert not body["valid"]
        status, body = check(client, billing_system, "dimensions", legal_entity="US01", dimension="payment_journal")
        assert {"Card", "Bank"} <= {value["code"] for value in body["values"]}

        proxy.stop()  # Tryton is unreachable from here on
        state = services.refresh(connection)
        assert state.error and ReferenceRefresh.objects.get(connection=connection).refreshed_at is not None
        status, body = check(
            client, billing_system, "customers", legal_entity="US01", source="stripe-us", customer_id=obj["customer"]
        )
        assert status == 200 and body["valid"] and body["cache_stale"]
        status, body = check(client, billing_system, "tax-codes", legal_entity="US01", code="VAT20")
        assert body["valid"] and body["cache_stale"]
    finally:
        proxy.stop()


def test_a_check_names_what_is_wrong_with_the_request(client: Client, billing_system: dict[str, str]) -> None:
    status, body = check(client, billing_system, "tax-codes", legal_entity="US01")
    assert (status, body["detail"]) == (400, "Missing query parameter(s): code.")
    status, body = check(client, billing_system, "tax-codes", legal_entity="XX99", code="VAT20")
    assert (status, body["detail"]) == (404, "No legal entity has the code 'XX99'.")
    LegalEntity.objects.create(code="DE01", name="Hub GmbH", country="DE", base_currency="EUR")
    status, body = check(client, billing_system, "tax-codes", legal_entity="DE01", code="VAT20")
    assert status == 422 and "No ERP connection is routed" in body["detail"]


def test_checks_need_a_token_with_the_permission(client: Client, hub: Any) -> None:
    assert client.get("/api/v1/validation/tax-codes/", {"legal_entity": "US01", "code": "VAT20"}).status_code == 401
    user = get_user_model().objects.create_user("no-rights")
    token = Token.objects.create(user=user).key
    response = client.get(
        "/api/v1/validation/tax-codes/", {"legal_entity": "US01", "code": "VAT20"}, HTTP_AUTHORIZATION=f"Token {token}"
    )
    assert response.status_code == 403
