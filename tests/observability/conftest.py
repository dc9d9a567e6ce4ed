from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings
from django.test import override_settings

from apps.flow import services as flow
from apps.flow.models import ConnectionFlow
from apps.ledger.models import LegalEntity
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.sources.models import BillingSource
from tests.erp_simulator import ErpSimulator

SYNTHETIC_SOURCE = "synthetic"
SANDBOX = "tryton-sandbox"
SYNTHETIC_SECRET_ENV = "HUB_SYNTHETIC_TEST_SECRET"


@pytest.fixture
def erp(configured: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[ErpSimulator]:
    """The example configuration's Tryton connection pointed at the in-memory Tryton simulator."""
    with ErpSimulator() as sim:
        monkeypatch.setenv("TRYTON_URL", sim.url)
        monkeypatch.setenv("TRYTON_DATABASE", sim.database)
        monkeypatch.setenv("TRYTON_PASSWORD", sim.password)
        yield sim


def budget(name: str = "tryton-local", **values: object) -> None:
    row = flow.flow_for(ERPConnection.objects.get(name=name))
    ConnectionFlow.objects.filter(pk=row.pk).update(**values)


def create_sandbox(url: str, database: str, password_env: str = "TRYTON_PASSWORD") -> ERPConnection:
    """A legal entity of its own for the synthetic source, routed to a sandbox Tryton connection."""
    entity = LegalEntity.objects.create(code="SYNTH", name="Synthetic checks", country="US", base_currency="USD")
    BillingSource.objects.create(
        name=SYNTHETIC_SOURCE,
        kind=BillingSource.KIND_CANONICAL,
        legal_entity=entity,
        webhook_secrets=[f"env:{SYNTHETIC_SECRET_ENV}"],
    )
    sandbox = ERPConnection.objects.create(
        name=SANDBOX,
        kind="tryton",
        settings={"url": url, "database": database, "username": "admin", "password": f"env:{password_env}"},
    )
    Mapping.objects.create(connection=sandbox, kind=Mapping.KIND_REVENUE_ACCOUNT, key="default", value="4000")
    Mapping.objects.create(connection=sandbox, kind=Mapping.KIND_TAX_CODE, key="default", value="VAT20")
    RoutingRule.objects.create(name="synthetic checks", priority=1, legal_entity=entity, connection=sandbox)
    return sandbox


@pytest.fixture
def synthetic_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(SYNTHETIC_SECRET_ENV, "synthetic-test-secret")
    hub = {**settings.HUB, "SYNTHETIC_SOURCE": SYNTHETIC_SOURCE, "SYNTHETIC_CONNECTION": SANDBOX}
    with override_settings(HUB=hub):
        yield
