"""Exception cases without an ERP: opened by the planner's own checks, worked through the console's
actions, notified, counted, and followed on the timeline."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django.utils import timezone

from apps.console import notifications, services
from apps.console.catalogue import FINANCE
from apps.console.models import CaseStatus, ExceptionCase
from apps.core.models import AuditEvent
from apps.posting.models import ErrorCategory, Operation, Posting, PostingState
from tests.console.conftest import as_user, mismatched_invoice, user_in

CASES = "/admin/console/exceptioncase/"


def test_a_parked_invoice_opens_one_business_case_in_finance_words(case: ExceptionCase) -> None:
    invoice = case.invoice
    assert invoice is not None
    assert (case.category, case.kind, case.owner_group) == (ErrorCategory.BUSINESS, "Amount mismatch", FINANCE)
    assert case.message.startswith(f"Invoice {invoice.number} for Initech LLC does not match")
    assert case.technical_detail.startswith("subtotal_minor=4900")
    assert case.status == CaseStatus.OPEN and case.legal_entity and case.legal_entity.code == "US01"
    assert AuditEvent.objects.filter(action="case.opened", object_id=str(case.pk)).exists()


def test_skip_needs_a_reason_then_resolves_the_case(case: ExceptionCase) -> None:
    with pytest.raises(services.ActionRefused, match="reason is required"):
        services.skip_case(case.pk, actor="fiona", reason="  ")
    assert services.skip_case(case.pk, actor="fiona", reason="duplicate of INV-7 already in the ERP") == 1

    case.refresh_from_db()
    posting = Posting.objects.get(source_id=case.source_id, operation=Operation.POST_INVOICE)
    assert posting.state == PostingState.SKIPPED
    assert (case.status, case.resolved_by) == (CaseStatus.RESOLVED, "fiona")
    with pytest.raises(services.ActionRefused, match="already resolved"):
        services.retry_case(case.pk, actor="fiona")


def test_link_records_the_existing_erp_document_and_resolves(case: ExceptionCase) -> None:
    with pytest.raises(services.ActionRefused):
        services.link_case(case.pk, erp_id="", actor="fiona", reason="entered by hand")
    posting = services.link_case(case.pk, erp_id="981", erp_number="INV/2026/0042", actor="fiona", reason="by hand")

    assert (posting.state, posting.erp_id, posting.erp_number) == (PostingState.POSTED, "981", "INV/2026/0042")
    case.refresh_from_db()
    assert case.status == CaseStatus.RESOLVED and "INV/2026/0042" in case.resolution
    linked = AuditEvent.objects.get(action="posting.linked", object_id=str(posting.pk))
    assert linked.before["state"] == "parked" and linked.after["erp_id"] == "981" and linked.actor == "fiona"


def test_assign_records_before_and_after(case: ExceptionCase, finance: Any, engineer: Any) -> None:
    client = as_user(finance)
    client.post(f"{CASES}{case.pk}/assign/", {"owner": engineer.pk, "reason": "ERP side"})
    client.post(f"{CASES}{case.pk}/assign/", {"owner": finance.pk, "reason": "mine after all"})
    case.refresh_from_db()
    assert case.owner == finance
    trail = [
        (e.before["owner"], e.after["owner"]) for e in AuditEvent.objects.filter(action="case.assigned").order_by("id")
    ]
    assert trail == [(None, engineer.username), (engineer.username, finance.username)]
    assert case.source_id in client.get(f"{CASES}?owner=me").content.decode()
    assert case.source_id not in client.get(f"{CASES}?owner=none").content.decode()


def test_bulk_skip_asks_for_a_reason_first(configured: None, client: Client, finance: Any) -> None:
    first, _ = mismatched_invoice(client)
    second, _ = mismatched_invoice(client)
    ids = list(ExceptionCase.objects.filter(source_id__in=[first["id"], second["id"]]).values_list("pk", flat=True))
    console = as_user(finance)
    form = console.post(CASES, {"action": "skip_cases", "_selected_action": ids})
    assert "Skip cases" in form.content.decode()
    assert ExceptionCase.objects.filter(pk__in=ids, status=CaseStatus.OPEN).count() == 2

    done = console.post(
        CASES, {"action": "skip_cases", "_selected_action": ids, "apply": "1", "reason": "test invoices"}, follow=True
    )
    assert "2 case(s) skipped." in done.content.decode()
    assert ExceptionCase.objects.filter(pk__in=ids, status=CaseStatus.RESOLVED).count() == 2


def test_changelist_counts_open_cases_and_filters_by_age(configured: None, client: Client, finance: Any) -> None:
    old, _ = mismatched_invoice(client)
    mismatched_invoice(client)
    ExceptionCase.objects.filter(source_id=old["id"]).update(opened_at=timezone.now() - timedelta(days=4))
    console = as_user(finance)
    page = console.get(CASES).content.decode()
    assert 'id="open-counts"' in page and '<td class="count">2</td>' in page
    over_three = console.get(f"{CASES}?age=gt3").content.decode()
    under_one = console.get(f"{CASES}?age=lt1").content.decode()
    assert old["id"] in over_three and old["id"] not in under_one


def test_a_new_case_mails_its_owning_group(
    configured: None, client: Client, django_capture_on_commit_callbacks: Any
) -> None:
    user_in(FINANCE, "fiona.finance", "fiona@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        obj, _ = mismatched_invoice(client)
    [message] = mail.outbox
    assert message.to == ["fiona@example.com"] and "Amount mismatch" in message.subject
    assert obj["number"] in message.body and "/admin/console/exceptioncase/" in message.body


def test_the_daily_digest_counts_open_cases_by_age(configured: None, client: Client) -> None:
    user_in(FINANCE, "fiona.finance", "fiona@example.com")
    old, _ = mismatched_invoice(client)
    mismatched_invoice(client)
    ExceptionCase.objects.filter(source_id=old["id"]).update(opened_at=timezone.now() - timedelta(days=2))
    assert notifications.digest_counts() == {FINANCE: {"under 1 day": 1, "1-3 days": 1, "over 3 days": 0}}
    assert notifications.send_digest() == 1
    assert "1-3 days: 1" in mail.outbox[-1].body and "2 open cases" in mail.outbox[-1].subject


def test_timeline_follows_the_invoice_from_webhook_to_human_action(case: ExceptionCase, finance: Any) -> None:
    services.assign_case(case.pk, owner=finance, actor=finance.username, reason="taking it")
    invoice = case.invoice
    assert invoice is not None
    console = as_user(finance)
    for query in (invoice.number, invoice.source_id, case.correlation_id):
        page = console.get("/admin/console/exceptioncase/timeline/", {"q": query}).content.decode()
        assert "Received invoice.finalized" in page, query
        assert "posting.parked" in page and "case.opened" in page and "case.assigned" in page, query
        assert finance.username in page
    empty = console.get("/admin/console/exceptioncase/timeline/", {"q": "in_does_not_exist"}).content.decode()
    assert 'id="timeline-empty"' in empty
