"""The console against the real Tryton: a rejection becomes a case finance can read and fix, and
replaying the dead-letter queue twice at once still posts one invoice."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection as db_connection
from django.test import Client

from apps.console.models import CaseStatus, ExceptionCase
from apps.core.models import AuditEvent
from apps.flow.models import ConnectionFlow
from apps.flow.services import flow_for
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver, wait_for
from tests.console.conftest import as_user
from tests.e2e.test_stripe_to_tryton import new_invoice
from tests.fault_proxy import FaultProxy

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


@pytest.fixture
def finance_user(hub: Any) -> Any:
    from tests.console.conftest import user_in

    return user_in("Finance operations", "fiona.finance")


def test_rejected_revenue_account_is_a_business_case_finance_corrects_and_reposts_once(
    client: Client, tryton: Any, finance_user: Any
) -> None:
    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4999")
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))
    case = wait_for(
        lambda: ExceptionCase.objects.filter(source_id=obj["id"], status=CaseStatus.OPEN).first(), what="a case"
    )
    assert case.category == "business" and case.kind == "Mapping not found in the ERP"
    assert "revenue account 4999 does not exist in tryton-local" in case.message
    assert "for ACME Corp" in case.message and obj["number"] in case.message

    console = as_user(finance_user)
    listing = console.get("/admin/console/exceptioncase/", {"category": "business"}).content.decode()
    assert obj["number"] in listing
    form = console.get(f"/admin/console/exceptioncase/{case.pk}/correct/").content.decode()
    assert 'value="default"' in form and 'value="4999"' in form  # the mapping at fault, prefilled
    without_reason = console.post(
        f"/admin/console/exceptioncase/{case.pk}/correct/",
        {"kind": "revenue_account", "key": "default", "value": "4000"},
    )
    assert (
        without_reason.status_code == 200 and Mapping.objects.get(key="default", kind="revenue_account").value == "4999"
    )

    console.post(
        f"/admin/console/exceptioncase/{case.pk}/correct/",
        {"kind": "revenue_account", "key": "default", "value": "4000", "reason": "4999 was a typo for 4000"},
    )
    wait_for(
        lambda: ExceptionCase.objects.get(pk=case.pk).status == CaseStatus.RESOLVED,
        what="the case to close",
        timeout=120,
    )
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "posted"
    posting = Posting.objects.get(source_id=obj["id"], operation=Operation.POST_INVOICE)
    assert posting.state == PostingState.POSTED and posting.erp_id == str(invoice["id"])
    correction = AuditEvent.objects.get(action="mapping.corrected", actor="fiona.finance")
    assert correction.reason == "4999 was a typo for 4000"
    assert (correction.before["value"], correction.after["value"]) == ("4999", "4000")
    assert ExceptionCase.objects.get(pk=case.pk).resolution.startswith("Post invoice posted")


def test_replaying_a_dead_letter_twice_at_once_posts_it_once(
    client: Client, tryton: Any, hub: Any, settings: Any
) -> None:
    proxy = FaultProxy(hub.url)
    try:
        connection = ERPConnection.objects.get(name="tryton-local")
        connection.settings = {**connection.settings, "url": proxy.url}
        connection.save()
        # Tryton is unavailable for invoices long enough for the posting to spend its retries (with
        # the circuit breaker out of the way: it would hold the posting instead, see tests/flow).
        ConnectionFlow.objects.filter(pk=flow_for(connection).pk).update(failure_threshold=1000)
        proxy.inject("model.account.invoice.create", times=1000, status=503)
        obj = new_invoice()
        deliver(client, se.event("invoice.finalized", obj))
        dead = wait_for(
            lambda: Posting.objects.filter(
                source_id=obj["id"], operation=Operation.POST_INVOICE, state=PostingState.DEAD
            ).first(),
            what="the posting to die",
            timeout=180,
        )
        case = ExceptionCase.objects.get(source_id=obj["id"], status=CaseStatus.OPEN)
        assert case.category == "technical" and case.kind == "ERP unavailable"
        proxy.faults.clear()

        from django.contrib.auth import get_user_model

        engineer = get_user_model().objects.create_superuser("ian", "ian@example.com", "pw")

        def replay() -> str:
            try:
                response = as_user(engineer).post(
                    "/admin/console/deadletter/",
                    {"action": "replay_dead_letters", "_selected_action": [dead.pk]},
                    follow=True,
                )
                return response.content.decode()
            finally:
                db_connection.close()  # this thread's own connection

        with ThreadPoolExecutor(max_workers=2) as pool:
            pages = list(pool.map(lambda _: replay(), range(2)))
        assert sum("1 posting(s) queued for retry." in page for page in pages) == 1
        # The other replay finds it queued already: refused, or (if the first committed before it
        # listed the queue) no longer in the dead-letter queue at all.
        other = [page for page in pages if "1 posting(s) queued for retry." not in page]
        assert any(
            words in other[0]
            for words in (
                "only parked or dead postings can be retried",
                "No items have been changed",
                "Nothing was retried: the selected postings are no longer parked or dead",
            )
        ), re.findall(r'<li class="(?:error|warning|info|success)">(.*?)</li>', other[0]) or other[0][:2000]

        wait_for(lambda: Posting.objects.get(pk=dead.pk).state == PostingState.POSTED, what="posted", timeout=120)
        assert [i["state"] for i in tryton.invoices(f"{SOURCE}:{obj['id']}")] == ["posted"]
        assert AuditEvent.objects.filter(action="posting.retried", object_id=str(dead.pk)).count() == 1
        wait_for(lambda: ExceptionCase.objects.get(pk=case.pk).status == CaseStatus.RESOLVED, what="case closed")
    finally:
        proxy.stop()
