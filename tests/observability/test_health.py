"""/healthz says the process answers; /readyz says whether it can work, and names what cannot."""

from __future__ import annotations

from typing import Any

import pytest
from celery import current_app
from django.test import Client
from django.utils import timezone

from apps.flow import services as flow
from apps.flow.models import CircuitState, ConnectionFlow
from apps.routing.models import ERPConnection

pytestmark = pytest.mark.usefixtures("configured")


def open_circuit(name: str = "tryton-local") -> None:
    row = flow.flow_for(ERPConnection.objects.get(name=name))
    ConnectionFlow.objects.filter(pk=row.pk).update(
        circuit_state=CircuitState.OPEN, circuit_reason="ERP unreachable", next_probe_at=timezone.now()
    )


def test_healthz_answers_without_touching_the_database(client: Client, django_assert_num_queries: Any) -> None:
    with django_assert_num_queries(0):
        response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_readyz_is_200_when_database_broker_and_every_circuit_are_fine(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["ready"] is True and body["not_ready"] == []
    assert body["checks"]["database"] == {"ok": True}
    assert body["checks"]["broker"] == {"ok": True}
    assert body["checks"]["connections"]["tryton-local"]["circuit"] == "closed"


def test_readyz_is_503_naming_the_connection_whose_circuit_is_open(client: Client) -> None:
    open_circuit()
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["not_ready"] == ["connection tryton-local (circuit open)"]
    assert body["checks"]["connections"]["tryton-local"]["ok"] is False
    # What the webhook load balancer asks: an ERP outage must not stop the hub taking events.
    assert client.get("/readyz?checks=database,broker").status_code == 200


def test_a_paused_connection_is_reported_but_still_ready(client: Client) -> None:
    connection = ERPConnection.objects.get(name="tryton-local")
    flow.pause(connection, actor="ops", reason="month-end close")
    body = client.get("/readyz").json()
    assert body["ready"] is True
    assert body["checks"]["connections"]["tryton-local"]["paused"] is True


def test_readyz_is_503_naming_the_broker_when_it_cannot_be_reached(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Celery reads CELERY_BROKER_URL from the environment first; nothing listens on port 9.
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:9/0")
    assert current_app.conf.broker_url == "redis://127.0.0.1:9/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["not_ready"] == ["broker"]
    assert response.json()["checks"]["broker"]["ok"] is False


def test_readyz_refuses_a_check_it_does_not_know(client: Client) -> None:
    response = client.get("/readyz?checks=database,erp")
    assert response.status_code == 400
    assert "erp" in response.json()["error"]
