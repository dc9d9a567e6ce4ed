"""The executor's closed-period policy between attempts, against the real Tryton, run in this
process attempt by attempt: a re-date once decided is sent again on the same date (the ERP may
hold a draft on it), and withdrawn when the connection's policy went back to park.

Tryton's answer to the re-dated draft's update is lost (a real proxy holds it back past the
hub's timeout after Tryton committed it), so the next attempt is the one that decides. The
invoices go into a fiscal year two years back, whose November is closed for the test and reopened
after it (see tests/e2e/test_closed_periods.py)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.console import hub_config
from apps.core.models import AuditEvent
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState, RedatedPosting
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.conftest import EXAMPLE_CONFIG, SOURCE, deliver
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.tryton

YEAR = date.today().year - 2
BILLED_ON = date(YEAR, 11, 14)
FIRST_OPEN_DAY = date(YEAR, 12, 1)


@pytest.fixture
def proxy(db: None, tryton_env: Any, tryton: Any) -> Iterator[FaultProxy]:
    """The example configuration, set to re-date, talking to Tryton through a fault proxy; November
    closed in Tryton."""
    doc = hub_config.load(EXAMPLE_CONFIG)
    doc["erp_connections"][0]["closed_period_policy"] = ERPConnection.CLOSED_PERIOD_REDATE
    hub_config.apply(doc)
    fault_proxy = FaultProxy(tryton_env.url)
    connection = ERPConnection.objects.get(name="tryton-local")
    connection.settings = {**connection.settings, "url": fault_proxy.url, "timeout": 3}
    connection.save()
    tryton.ensure_fiscal_year(YEAR)
    tryton.close_period(BILLED_ON)
    yield fault_proxy
    tryton.reopen_period(BILLED_ON)
    fault_proxy.stop()


def invoice_posting(client: Client) -> tuple[dict[str, Any], Posting]:
    """A Stripe invoice dated in the closed November, normalized, with its customer posted."""
    stamp = int(datetime.combine(BILLED_ON, time(12), tzinfo=UTC).timestamp())
    obj = se.invoice(se.uid("cus"), [se.line(4900, description="Pro plan (monthly)")])
    obj.update(created=stamp - 60, effective_at=stamp)
    obj["status_transitions"]["finalized_at"] = stamp
    event = se.event("invoice.finalized", obj)
    deliver(client, event)
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    customer = Posting.objects.get(source_id=obj["customer"], operation=Operation.ENSURE_CUSTOMER)
    assert executor.execute_posting(customer.pk) == PostingState.POSTED
    return obj, Posting.objects.get(source_id=obj["id"], operation=Operation.POST_INVOICE)


def run_again(posting: Posting) -> str:
    """The retry, now rather than after its backoff."""
    Posting.objects.filter(pk=posting.pk).update(retry_at=timezone.now())
    return executor.execute_posting(posting.pk)


def test_a_re_date_decided_before_a_lost_answer_is_sent_on_the_same_date_next_time(
    client: Client, proxy: FaultProxy, tryton: Any
) -> None:
    obj, posting = invoice_posting(client)
    proxy.inject("model.account.invoice.write", hold_seconds=6)  # the re-dated draft's update

    assert executor.execute_posting(posting.pk) == PostingState.RETRY_SCHEDULED
    decided = RedatedPosting.objects.get(posting=posting)  # decided before the call that got no answer
    assert (decided.original_date, decided.posted_date) == (BILLED_ON, FIRST_OPEN_DAY)

    assert run_again(posting) == PostingState.POSTED
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "posted" and invoice["invoice_date"] == FIRST_OPEN_DAY
    assert f"billing date {BILLED_ON.isoformat()}" in invoice["description"]
    # Billing's date was sent once; the second attempt went straight to the first open day.
    assert proxy.calls["model.account.invoice.post"] == 2 and proxy.calls["model.account.invoice.write"] == 1
    assert AuditEvent.objects.filter(action="posting.redated", object_id=str(posting.pk)).count() == 1
    [attempt_1, attempt_2] = PostingAttempt.objects.filter(posting=posting).order_by("number")
    assert (attempt_1.outcome, attempt_2.outcome) == (PostingAttempt.Outcome.UNCERTAIN, PostingAttempt.Outcome.POSTED)
    assert f"{BILLED_ON} → {FIRST_OPEN_DAY}" in attempt_2.detail


def test_a_re_date_not_yet_in_the_erp_is_withdrawn_when_the_policy_goes_back_to_park(
    client: Client, proxy: FaultProxy, tryton: Any
) -> None:
    obj, posting = invoice_posting(client)
    proxy.inject("model.account.invoice.write", hold_seconds=6)
    assert executor.execute_posting(posting.pk) == PostingState.RETRY_SCHEDULED
    assert RedatedPosting.objects.filter(posting=posting).exists()

    ERPConnection.objects.filter(name="tryton-local").update(closed_period_policy=ERPConnection.CLOSED_PERIOD_PARK)
    assert run_again(posting) == PostingState.PARKED

    posting.refresh_from_db()
    assert posting.error_code == "closed_period"
    assert not RedatedPosting.objects.filter(posting=posting).exists()
    [withdrawn] = AuditEvent.objects.filter(action="posting.redate_withdrawn", object_id=str(posting.pk))
    assert withdrawn.before == {"date": FIRST_OPEN_DAY.isoformat(), "original_date": BILLED_ON.isoformat()}
    [draft] = tryton.invoices(f"{SOURCE}:{obj['id']}")  # the draft is back on billing's date, without the memo
    assert draft["state"] == "draft" and draft["invoice_date"] == BILLED_ON
    assert "billing date" not in draft["description"]
