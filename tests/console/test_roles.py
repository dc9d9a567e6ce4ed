"""What each role sees and may do in the console, checked on the server (direct URLs and posted
actions), not only by the buttons shown."""

from __future__ import annotations

from typing import Any

from django.test import Client

from apps.console.models import CaseStatus, ExceptionCase
from apps.core.models import AuditEvent
from apps.ingest.models import InboxEvent
from apps.posting.models import Posting, PostingState
from apps.routing.models import Mapping
from tests.console.conftest import as_user

CASES = "/admin/console/exceptioncase/"


def event_page(case: ExceptionCase) -> str:
    event = InboxEvent.objects.get(object_id=case.source_id)
    return f"/admin/ingest/inboxevent/{event.pk}/change/"


def test_finance_works_cases_but_never_sees_sensitive_raw_fields(case: ExceptionCase, finance: Any) -> None:
    client = as_user(finance)
    listing = client.get(CASES).content.decode()
    assert "Amount mismatch" in listing and case.source_id in listing

    page = client.get(f"{CASES}{case.pk}/change/").content.decode()
    assert case.message in page
    assert 'id="action-correct"' in page and 'id="action-skip"' in page

    raw = client.get(event_page(case))
    assert raw.status_code == 200
    body = raw.content.decode()
    assert "ap@acme.example" not in body and "1 Main St" not in body
    assert "hidden (sensitive)" in body and case.source_id in body  # the rest of the payload is readable


def test_finance_can_skip_with_a_reason_but_cannot_touch_connections_or_replay_raw_events(
    case: ExceptionCase, finance: Any
) -> None:
    client = as_user(finance)
    assert client.get("/admin/routing/erpconnection/add/").status_code == 403
    connection = case.connection
    assert client.get(f"/admin/routing/erpconnection/{connection.pk}/change/").status_code == 200  # view only
    response = client.post(f"/admin/routing/erpconnection/{connection.pk}/change/", {"name": "renamed"})
    assert response.status_code == 403

    event = InboxEvent.objects.get(object_id=case.source_id)
    client.post("/admin/ingest/inboxevent/", {"action": "replay_selected", "_selected_action": [event.pk]}, follow=True)
    assert not AuditEvent.objects.filter(action="inbox.replayed", object_id=str(event.pk)).exists()

    client.post(f"{CASES}{case.pk}/skip/", {"reason": "billed in error, credited in Stripe"})
    case.refresh_from_db()
    assert case.status == CaseStatus.RESOLVED and case.resolved_by == finance.username
    assert AuditEvent.objects.filter(
        action="posting.skipped", actor=finance.username, reason="billed in error, credited in Stripe"
    ).exists()


def test_engineer_sees_the_raw_payload_in_full_and_can_replay_it(case: ExceptionCase, engineer: Any) -> None:
    client = as_user(engineer)
    body = client.get(event_page(case)).content.decode()
    assert "ap@acme.example" in body and "hidden (sensitive)" not in body

    event = InboxEvent.objects.get(object_id=case.source_id)
    response = client.post(
        "/admin/ingest/inboxevent/", {"action": "replay_selected", "_selected_action": [event.pk]}, follow=True
    )
    assert "1 event(s) queued for replay." in response.content.decode()
    assert client.get("/admin/routing/erpconnection/add/").status_code == 200


def test_auditor_reads_everything_and_can_run_no_action(case: ExceptionCase, auditor: Any) -> None:
    client = as_user(auditor)
    page = client.get(f"{CASES}{case.pk}/change/").content.decode()
    assert case.message in page
    assert 'id="action-' not in page  # no action offered
    assert client.get("/admin/core/auditevent/").status_code == 200
    assert client.get("/admin/posting/posting/").status_code == 200
    assert "ap@acme.example" not in client.get(event_page(case)).content.decode()

    for action in ("retry", "replay", "correct", "link", "skip", "assign"):
        assert client.get(f"{CASES}{case.pk}/{action}/").status_code == 403, action
        assert client.post(f"{CASES}{case.pk}/{action}/", {"reason": "x"}).status_code == 403, action
    for action in ("retry_cases", "replay_cases", "skip_cases", "assign_cases"):
        client.post(CASES, {"action": action, "_selected_action": [case.pk], "apply": "1", "reason": "x"})
    posting = Posting.objects.get(source_id=case.source_id)
    assert posting.state == PostingState.PARKED
    case.refresh_from_db()
    assert case.status == CaseStatus.OPEN and case.owner is None
    assert not AuditEvent.objects.filter(actor=auditor.username).exists()
    assert client.post(f"/admin/routing/mapping/{Mapping.objects.first().pk}/change/", {}).status_code == 403


def test_nobody_can_edit_or_delete_an_audit_entry(case: ExceptionCase, admin_client: Client, auditor: Any) -> None:
    entry = AuditEvent.objects.filter(object_type="console.exceptioncase").first()
    assert entry is not None
    for client in (admin_client, as_user(auditor)):
        assert client.post(f"/admin/core/auditevent/{entry.pk}/delete/", {"post": "yes"}).status_code == 403
        client.post(f"/admin/core/auditevent/{entry.pk}/change/", {"reason": "rewritten"})
        client.post("/admin/core/auditevent/", {"action": "delete_selected", "_selected_action": [entry.pk]})
    entry.refresh_from_db()
    assert entry.reason != "rewritten" and AuditEvent.objects.filter(pk=entry.pk).exists()
