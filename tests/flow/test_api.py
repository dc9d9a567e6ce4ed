"""The flow-control REST API (/api/v1/): who may read and change what, the answers it gives, the
audit trail it leaves, and that held postings drain when a connection is resumed or a window ends."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from apps.console.catalogue import AUDITORS, ENGINEERS, FINANCE
from apps.core.models import AuditEvent
from apps.flow import services as flow
from apps.flow.models import CircuitState, MaintenanceWindow
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.conftest import deliver

pytestmark = pytest.mark.usefixtures("configured")

API = "/api/v1"
TRYTON = f"{API}/connections/tryton-local"


def api_user(role: str, username: str) -> tuple[Any, APIClient]:
    user = get_user_model().objects.create_user(username, f"{username}@example.com", "pw")
    user.groups.add(Group.objects.get(name=role))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return user, client


@pytest.fixture
def engineer() -> tuple[Any, APIClient]:
    return api_user(ENGINEERS, "ian.engineer")


@pytest.fixture
def auditor() -> tuple[Any, APIClient]:
    return api_user(AUDITORS, "alice.auditor")


def connection() -> ERPConnection:
    return ERPConnection.objects.get(name="tryton-local")


def audited(action: str, actor: str, **fields: Any) -> AuditEvent:
    return AuditEvent.objects.get(action=action, actor=actor, **fields)


def later(**delta: float) -> str:
    return (timezone.now() + timedelta(**delta)).isoformat()


def held_customer_posting(client: Client) -> Posting:
    """A customer posting planned from a signed Stripe event, not run yet."""
    obj = se.invoice(se.uid("cus"), [se.line(4900)])
    event = se.event("invoice.finalized", obj)
    assert deliver(client, event).status_code == 200
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    return Posting.objects.get(source_id=obj["customer"], operation=Operation.ENSURE_CUSTOMER)


def test_an_engineer_pauses_sees_the_pause_and_resumes(engineer: tuple[Any, APIClient]) -> None:
    user, api = engineer
    response = api.post(f"{TRYTON}/pause/", {"reason": "Tryton upgrade to 8.2"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["connection"]["paused"] is True

    hold = flow.admission(connection())
    assert hold is not None and hold.code == flow.HOLD_PAUSED and "Tryton upgrade to 8.2" in hold.reason
    assert audited("flow.paused", user.username, reason="Tryton upgrade to 8.2")

    listing = api.get(f"{API}/connections/")
    assert listing.status_code == 200
    (state,) = [row for row in listing.json() if row["name"] == "tryton-local"]
    assert state["paused"] is True and state["paused_reason"] == "Tryton upgrade to 8.2"
    assert state["paused_by"] == user.username and state["paused_at"]
    assert state["kind"] == "tryton" and state["circuit_state"] == CircuitState.CLOSED
    assert set(state["budget"]) == {"max_requests", "period_seconds", "max_concurrency"}
    assert state["held_postings"] == 0 and state["maintenance_windows"] == []
    assert api.get(f"{TRYTON}/").json() == state

    response = api.post(f"{TRYTON}/resume/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["released"] == 0 and response.json()["connection"]["paused"] is False
    assert flow.admission(connection()) is None
    assert audited("flow.resumed", user.username)


def test_pausing_needs_a_reason(engineer: tuple[Any, APIClient]) -> None:
    _, api = engineer
    for body in ({}, {"reason": "   "}):
        response = api.post(f"{TRYTON}/pause/", body, format="json")
        assert response.status_code == 400
        assert "reason is required to pause tryton-local" in response.json()["detail"]
        assert "reason" in response.json()["errors"]
    assert flow.flow_for(connection()).paused is False
    assert not AuditEvent.objects.filter(action="flow.paused").exists()


def test_a_held_posting_is_released_by_resume(engineer: tuple[Any, APIClient], client: Client) -> None:
    user, api = engineer
    posting = held_customer_posting(client)
    assert api.post(f"{TRYTON}/pause/", {"reason": "month-end close"}, format="json").status_code == 200

    assert executor.execute_posting(posting.pk) == "skipped"
    posting.refresh_from_db()
    assert (posting.state, posting.error_code, posting.attempt_count) == (
        PostingState.RETRY_SCHEDULED,
        flow.HOLD_PAUSED,
        0,
    )
    assert posting.retry_at > timezone.now()
    state = api.get(f"{TRYTON}/").json()
    assert state["held_postings"] == 1 and state["held_postings_by_code"] == {flow.HOLD_PAUSED: 1}

    response = api.post(f"{TRYTON}/resume/", {"reason": "close done"}, format="json")
    assert response.status_code == 200
    assert response.json()["released"] == 1
    posting.refresh_from_db()
    assert posting.state == PostingState.RETRY_SCHEDULED and posting.attempt_count == 0
    assert posting.retry_at <= timezone.now()  # due now: the sweeper or the message sent after commit runs it
    assert audited("flow.resumed", user.username, reason="close done")


def test_maintenance_windows_are_planned_validated_listed_and_ended_early(
    engineer: tuple[Any, APIClient], client: Client
) -> None:
    user, api = engineer
    windows = f"{TRYTON}/maintenance-windows/"

    backwards = api.post(windows, {"starts_at": later(hours=2), "ends_at": later(hours=1), "reason": "x"})
    assert backwards.status_code == 400
    assert "ends_at" in backwards.json()["detail"] and "must be after starts_at" in backwards.json()["detail"]
    no_reason = api.post(windows, {"starts_at": later(hours=1), "ends_at": later(hours=2), "reason": " "})
    assert no_reason.status_code == 400
    assert no_reason.json()["detail"] == "reason: A reason is required for a maintenance window."
    missing = api.post(windows, {"reason": "patch"})
    assert missing.status_code == 400 and "starts_at is required" in missing.json()["detail"]
    garbled = api.post(windows, {"starts_at": "tomorrow", "ends_at": later(hours=2), "reason": "patch"})
    assert garbled.status_code == 400 and garbled.json()["detail"].startswith("starts_at: ")
    assert not MaintenanceWindow.objects.exists()

    response = api.post(windows, {"starts_at": later(minutes=-5), "ends_at": later(hours=2), "reason": "DB patch"})
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["connection"] == "tryton-local" and created["created_by"] == user.username and created["active"]
    assert response["Location"] == f"{API}/maintenance-windows/{created['id']}/"
    assert audited("flow.maintenance_window_created", user.username, reason="DB patch", object_id=str(created["id"]))

    upcoming = api.post(windows, {"starts_at": later(days=7), "ends_at": later(days=7, hours=1), "reason": "next"})
    assert upcoming.status_code == 201
    assert [w["reason"] for w in api.get(windows).json()] == ["DB patch", "next"]
    state = api.get(f"{TRYTON}/").json()
    assert state["in_maintenance"] is True
    assert [w["reason"] for w in state["maintenance_windows"]] == ["DB patch", "next"]

    posting = held_customer_posting(client)
    assert executor.execute_posting(posting.pk) == "skipped"
    posting.refresh_from_db()
    assert (posting.error_code, posting.attempt_count) == (flow.HOLD_MAINTENANCE, 0)

    response = api.delete(f"{API}/maintenance-windows/{created['id']}/", {"reason": "patched early"})
    assert response.status_code == 200, response.content
    assert response.json()["released"] == 1 and response.json()["deleted"]["id"] == created["id"]
    posting.refresh_from_db()
    assert posting.retry_at <= timezone.now()
    assert flow.admission(connection()) is None
    event = audited("flow.maintenance_window_deleted", user.username, object_id=str(created["id"]))
    assert event.reason == "patched early" and event.before["reason"] == "DB patch"
    assert api.delete(f"{API}/maintenance-windows/{created['id']}/").status_code == 404


def test_closing_the_circuit_needs_a_reason_and_an_open_circuit(engineer: tuple[Any, APIClient]) -> None:
    user, api = engineer
    assert api.post(f"{TRYTON}/close-circuit/", {"reason": "fixed"}, format="json").status_code == 409
    flow.record_failure(connection(), "401 from Tryton", authentication=True)
    state = api.get(f"{TRYTON}/").json()
    assert state["circuit_state"] == CircuitState.OPEN and "401 from Tryton" in state["circuit_reason"]
    assert state["next_probe_at"]

    response = api.post(f"{TRYTON}/close-circuit/", {}, format="json")
    assert response.status_code == 400 and "reason is required to close the circuit" in response.json()["detail"]
    response = api.post(f"{TRYTON}/close-circuit/", {"reason": "new API key"}, format="json")
    assert response.status_code == 200
    assert response.json()["released"] == 0 and response.json()["connection"]["circuit_state"] == CircuitState.CLOSED
    assert audited("flow.circuit_closed", user.username, reason="new API key")


def test_an_auditor_reads_but_changes_nothing(auditor: tuple[Any, APIClient]) -> None:
    user, api = auditor
    window = MaintenanceWindow.objects.create(
        connection=connection(), starts_at=timezone.now(), ends_at=timezone.now() + timedelta(hours=1), reason="x"
    )
    assert api.get(f"{API}/connections/").status_code == 200
    assert api.get(f"{TRYTON}/").status_code == 200
    assert api.get(f"{TRYTON}/maintenance-windows/").status_code == 200
    assert api.get(f"{API}/maintenance-windows/{window.pk}/").status_code == 200

    changes = [
        api.post(f"{TRYTON}/pause/", {"reason": "x"}),
        api.post(f"{TRYTON}/resume/", {}),
        api.post(f"{TRYTON}/close-circuit/", {"reason": "x"}),
        api.post(f"{TRYTON}/maintenance-windows/", {"starts_at": later(), "ends_at": later(hours=1), "reason": "x"}),
        api.delete(f"{API}/maintenance-windows/{window.pk}/"),
    ]
    assert [response.status_code for response in changes] == [403] * 5
    assert "flow.change_connectionflow" in changes[0].json()["detail"]
    assert "flow.delete_maintenancewindow" in changes[4].json()["detail"]
    assert flow.flow_for(connection()).paused is False and MaintenanceWindow.objects.filter(pk=window.pk).exists()
    assert not AuditEvent.objects.filter(actor=user.username).exists()


def test_finance_may_read_but_not_pause() -> None:
    _, api = api_user(FINANCE, "fiona.finance")
    assert api.get(f"{TRYTON}/").status_code == 200
    assert api.post(f"{TRYTON}/pause/", {"reason": "x"}).status_code == 403


def test_anonymous_callers_and_bad_tokens_get_401() -> None:
    anonymous = APIClient()
    for response in (
        anonymous.get(f"{API}/connections/"),
        anonymous.post(f"{TRYTON}/pause/", {"reason": "x"}),
        anonymous.get(f"{API}/schema/", HTTP_ACCEPT="application/json"),
    ):
        assert response.status_code == 401
        assert response["WWW-Authenticate"] == "Token" and response.json()["detail"]
    forged = APIClient()
    forged.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
    assert forged.get(f"{API}/connections/").status_code == 401
    assert flow.flow_for(connection()).paused is False


def test_unknown_connections_and_windows_are_404_in_json(engineer: tuple[Any, APIClient]) -> None:
    _, api = engineer
    for response in (
        api.get(f"{API}/connections/no-such-erp/"),
        api.post(f"{API}/connections/no-such-erp/pause/", {"reason": "x"}),
        api.get(f"{API}/connections/no-such-erp/maintenance-windows/"),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "No ERP connection is named 'no-such-erp'."}
    response = api.delete(f"{API}/maintenance-windows/999999/")
    assert response.status_code == 404 and response.json() == {"detail": "No maintenance window has the id 999999."}


def test_the_admin_session_works_too_and_the_schema_is_served(engineer: tuple[Any, APIClient]) -> None:
    user, api = engineer
    session = APIClient()
    session.force_login(user)
    assert session.get(f"{API}/connections/").status_code == 200

    schema = api.get(f"{API}/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert f"{API}/connections/{{name}}/pause/" in paths and f"{API}/maintenance-windows/{{id}}/" in paths
