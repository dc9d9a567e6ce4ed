from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.core.models import AuditEvent
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources.models import BillingSource
from tests.conftest import EXAMPLE_CONFIG

pytestmark = pytest.mark.django_db


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    call_command("hub_config", *args)
    return capsys.readouterr().out


def test_apply_creates_everything_then_a_second_apply_changes_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    out = run("apply", str(EXAMPLE_CONFIG), capsys=capsys)
    assert "+ source stripe-us" in out and "+ ERP connection tryton-local" in out
    assert BillingSource.objects.get(name="stripe-us").legal_entity.code == "US01"
    assert ERPConnection.objects.get(name="tryton-local").settings["password"] == "env:TRYTON_PASSWORD"
    assert RoutingRule.objects.count() == 1
    assert Mapping.objects.get(kind="revenue_account", key="default").value == "4000"
    assert AuditEvent.objects.filter(actor="hub_config").exists()
    assert "no changes: already up to date" in run("apply", str(EXAMPLE_CONFIG), capsys=capsys)


def test_a_changed_mapping_is_reported_and_a_removed_one_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run("apply", str(EXAMPLE_CONFIG), capsys=capsys)
    text = (
        EXAMPLE_CONFIG.read_text()
        .replace('default: "4000"', 'default: "4010"')
        .replace('      prod_usage_api_calls: "4100"\n', "")
    )
    changed = tmp_path / "hub.yaml"
    changed.write_text(text)
    out = run("apply", str(changed), capsys=capsys)
    assert "~ mapping tryton-local revenue_account default → 4010 (value)" in out
    assert "- mapping tryton-local revenue_account prod_usage_api_calls" in out
    assert not Mapping.objects.filter(key="prod_usage_api_calls").exists()


def test_invalid_files_are_refused_with_every_problem_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "sources:\n  - name: s\n    kind: paypal\n    legal_entity: XX\n    webhook_secrets: [whsec_literal]\n"
        "erp_connections:\n  - name: t\n    kind: tryton\n    settings: {password: hunter2}\n"
        "routing:\n  - legal_entity: '*'\n    connection: nowhere\n"
    )
    with pytest.raises(CommandError) as info:
        call_command("hub_config", "apply", str(bad))
    message = str(info.value)
    assert "sources[0].kind: must be one of ['canonical', 'chargebee', 'lago', 'recurly', 'stripe']" in message
    assert "sources[0].legal_entity: 'XX' is not declared" in message
    assert "webhook_secrets[0]: must be an env:VAR reference" in message
    assert "settings.password: must be an env:VAR reference" in message
    assert "routing[0].connection: 'nowhere' is not declared" in message
    assert not BillingSource.objects.exists()


def test_unparseable_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("sources: [unclosed")
    with pytest.raises(CommandError, match="not valid YAML"):
        call_command("hub_config", "validate", str(broken))
    with pytest.raises(CommandError, match="no such file"):
        call_command("hub_config", "validate", str(tmp_path / "absent.yaml"))


def test_a_writeback_connection_is_linked_to_its_source_and_must_be_of_the_source_kind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (
        EXAMPLE_CONFIG.read_text()
        .replace("    # writeback_connection: stripe-us-writeback", "    writeback_connection: stripe-us-writeback")
        .replace("  # - name: stripe-us-writeback", "  - name: stripe-us-writeback")
        .replace("  #   kind: stripe", "    kind: stripe")
        .replace(
            "  #   settings:\n  #     api_key: env:STRIPE_API_KEY\n  #     timeout: 20",
            "    settings:\n      api_key: env:STRIPE_API_KEY\n      timeout: 20",
        )
    )
    good = tmp_path / "writeback.yaml"
    good.write_text(text)
    run("apply", str(good), capsys=capsys)
    assert BillingSource.objects.get(name="stripe-us").writeback_connection.kind == "stripe"  # type: ignore[union-attr]

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(text.replace("writeback_connection: stripe-us-writeback", "writeback_connection: tryton-local"))
    with pytest.raises(CommandError) as info:
        call_command("hub_config", "validate", str(wrong))
    assert (
        "sources[0].writeback_connection: 'tryton-local' is a tryton connection; a stripe source writes back "
        "through a connection of kind stripe"
    ) in str(info.value)
