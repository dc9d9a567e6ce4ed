"""Every configuration change made in the admin is on the audit log with who made it."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from apps.core.models import AuditEvent
from apps.routing.models import ERPConnection, Mapping, RoutingRule

pytestmark = pytest.mark.django_db


@pytest.fixture
def engineer(client: Client) -> Client:
    client.force_login(get_user_model().objects.create_superuser("ian.engineer", "i@example.com", "pw"))
    return client


def test_mappings_and_rules_changed_in_the_admin_are_audited(engineer: Client) -> None:
    connection = ERPConnection.objects.create(name="erp", kind="tryton", settings={"url": "http://erp"})
    response = engineer.post(
        "/admin/routing/mapping/add/",
        {"connection": connection.pk, "kind": "revenue_account", "key": "prod_pro", "value": "4000"},
    )
    assert response.status_code == 302
    mapping = Mapping.objects.get(key="prod_pro")
    response = engineer.post(
        f"/admin/routing/mapping/{mapping.pk}/change/",
        {"connection": connection.pk, "kind": "revenue_account", "key": "prod_pro", "value": "4100"},
    )
    assert response.status_code == 302
    [created] = AuditEvent.objects.filter(action="config.created", object_type="routing.mapping")
    [updated] = AuditEvent.objects.filter(action="config.updated", object_type="routing.mapping")
    assert created.actor == updated.actor == "ian.engineer"
    assert (updated.before, updated.after) == ({"value": "4000"}, {"value": "4100"})

    rule = RoutingRule.objects.create(connection=connection, priority=10)
    engineer.post(
        "/admin/routing/routingrule/", {"action": "delete_selected", "_selected_action": [rule.pk], "post": "yes"}
    )
    assert not RoutingRule.objects.exists()
    [removed] = AuditEvent.objects.filter(action="config.removed", object_type="routing.routingrule")
    assert removed.actor == "ian.engineer" and "erp" in removed.before["was"]
