"""Where the closed-period policy of a connection is set: the configuration file and the admin,
each change on the audit record. What the policy does is in tests/e2e/test_closed_periods.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from apps.core.models import AuditEvent
from apps.routing.models import ERPConnection
from tests.conftest import EXAMPLE_CONFIG

pytestmark = pytest.mark.django_db


def config_with(tmp_path: Path, policy: str) -> Path:
    path = tmp_path / "hub.yaml"
    path.write_text(EXAMPLE_CONFIG.read_text().replace("closed_period_policy: park", f"closed_period_policy: {policy}"))
    return path


def test_the_file_sets_the_policy_and_leaving_it_out_means_park(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("hub_config", "apply", str(config_with(tmp_path, "redate")))
    connection = ERPConnection.objects.get(name="tryton-local")
    assert connection.closed_period_policy == ERPConnection.CLOSED_PERIOD_REDATE
    capsys.readouterr()

    without = tmp_path / "without.yaml"
    without.write_text(EXAMPLE_CONFIG.read_text().replace("    closed_period_policy: park\n", ""))
    call_command("hub_config", "apply", str(without))
    assert "~ ERP connection tryton-local (closed_period_policy)" in capsys.readouterr().out
    connection.refresh_from_db()
    assert connection.closed_period_policy == ERPConnection.CLOSED_PERIOD_PARK
    change = AuditEvent.objects.filter(action="config.updated", object_id=str(connection.pk)).latest("id")
    assert (change.before["closed_period_policy"], change.after["closed_period_policy"]) == ("redate", "park")


def test_an_unknown_policy_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as refused:
        call_command("hub_config", "apply", str(config_with(tmp_path, "backdate")))
    assert "erp_connections[0].closed_period_policy: must be one of ['park', 'redate']" in str(refused.value)
    assert not ERPConnection.objects.exists()


def test_the_admin_sets_the_policy_and_records_who_changed_it(client: Client) -> None:
    connection = ERPConnection.objects.create(name="tryton-main", kind="tryton", settings={"url": "http://erp"})
    client.force_login(get_user_model().objects.create_superuser("controller", "c@example.com", "pw"))
    form = client.get(f"/admin/routing/erpconnection/{connection.pk}/change/").content.decode()
    assert "Re-date into the first open period" in form

    response = client.post(
        f"/admin/routing/erpconnection/{connection.pk}/change/",
        {
            "name": "tryton-main",
            "kind": "tryton",
            "settings": '{"url": "http://erp"}',
            "active": "on",
            "closed_period_policy": "redate",
            "mappings-TOTAL_FORMS": "0",
            "mappings-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302
    connection.refresh_from_db()
    assert connection.closed_period_policy == ERPConnection.CLOSED_PERIOD_REDATE
    [change] = AuditEvent.objects.filter(action="config.updated", object_id=str(connection.pk))
    assert change.actor == "controller"
    assert (change.before, change.after) == ({"closed_period_policy": "park"}, {"closed_period_policy": "redate"})
