"""Closed periods, end to end from signed Stripe webhooks into the real Tryton: a document dated in
a period the accountant has closed follows its connection's closed-period policy. ``park`` opens a
Closed period case for finance; ``redate`` posts it on the first day of the next open period with
billing's date in its memo, records it as re-dated (once, whatever the retries) with an audit event
the timeline and the admin show. A connector that cannot name its first open day parks either way.

The session's Tryton is shared with every other test and numbers customer invoices in date order
within a fiscal year, so these tests post into a fiscal year of their own (two years back) and
reopen the period they close."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Q
from django.test import Client

from apps.console import hub_config
from apps.console.models import CaseStatus, ExceptionCase
from apps.console.timeline import build as timeline
from apps.core.models import AuditEvent
from apps.posting.models import Operation, Posting, PostingAttempt, PostingState, RedatedPosting
from apps.posting.services import ActionRefused, retry_posting
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.conftest import EXAMPLE_CONFIG, SOURCE, deliver, wait_for
from tests.e2e.test_quickbooks_posting import MAPPINGS, route_everything_to
from tests.e2e.test_stripe_to_tryton import new_invoice
from tests.fault_proxy import FaultProxy
from tests.quickbooks_simulator import QuickBooksSimulator

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

YEAR = date.today().year - 2
CLOSED_MONTH = date(YEAR, 11, 1)
FIRST_OPEN_DAY = date(YEAR, 12, 1)


@pytest.fixture
def november_closed(tryton: Any) -> Iterator[dict[str, Any]]:
    """The accountant closed November: it is month end in the books two years back."""
    tryton.ensure_fiscal_year(YEAR)
    yield tryton.close_period(CLOSED_MONTH)
    tryton.reopen_period(CLOSED_MONTH)


@pytest.fixture
def quickbooks(hub: Any) -> Iterator[tuple[QuickBooksSimulator, ERPConnection]]:
    """Every document routed to QuickBooks (its contract simulator), on a connection set to re-date."""
    simulator = QuickBooksSimulator(hang_seconds=3.0)
    connection = ERPConnection.objects.create(
        name="quickbooks-us",
        kind="quickbooks",
        settings=simulator.connector_settings(timeout=1.5),
        closed_period_policy=ERPConnection.CLOSED_PERIOD_REDATE,
    )
    for kind, values in MAPPINGS.items():
        for key, value in values.items():
            Mapping.objects.create(connection=connection, kind=kind, key=key, value=value)
    route_everything_to(connection)
    yield simulator, connection
    simulator.stop()


def set_policy(policy: str) -> None:
    """What an engineer does in the configuration file for the Tryton connection."""
    doc = hub_config.load(EXAMPLE_CONFIG)
    [connection] = doc["erp_connections"]
    connection["closed_period_policy"] = policy
    report = hub_config.apply(doc)
    assert "~ ERP connection tryton-local (closed_period_policy)" in report.changes


def at_noon(day: date) -> int:
    return int(datetime.combine(day, time(12), tzinfo=UTC).timestamp())


def invoice_dated(day: date) -> dict[str, Any]:
    """A Stripe invoice finalized on ``day`` that reaches the hub late (a backfill, an outage)."""
    obj = new_invoice()
    stamp = at_noon(day)
    obj.update(created=stamp - 60, effective_at=stamp, period_start=stamp - 30 * 86400, period_end=stamp)
    obj["status_transitions"]["finalized_at"] = stamp
    return obj


def posting_of(source_id: str, operation: str, state: str) -> Posting:
    return wait_for(  # type: ignore[no-any-return]
        lambda: Posting.objects.filter(source_id=source_id, operation=operation, state=state).first(),
        timeout=120,
        what=f"{operation} of {source_id} to be {state}",
    )


def test_park_opens_a_closed_period_case_and_a_retry_under_redate_posts_it_once_on_the_first_open_day(
    client: Client, tryton: Any, november_closed: dict[str, Any]
) -> None:
    billed_on = date(YEAR, 11, 12)
    obj = invoice_dated(billed_on)
    deliver(client, se.event("invoice.finalized", obj))

    parked = posting_of(obj["id"], Operation.POST_INVOICE, PostingState.PARKED)
    assert parked.error_code == "closed_period" and parked.error_params["date"] == billed_on.isoformat()
    [case] = ExceptionCase.objects.filter(source_id=obj["id"], status=CaseStatus.OPEN)
    assert case.kind == "Closed period" and november_closed["name"] in case.message
    [draft] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert draft["state"] == "draft"
    assert not RedatedPosting.objects.exists()

    set_policy(ERPConnection.CLOSED_PERIOD_REDATE)  # finance would rather post it in December
    retry_posting(parked.pk, actor="finance.ops", reason="post it in the first open period")
    posted = posting_of(obj["id"], Operation.POST_INVOICE, PostingState.POSTED)

    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")  # the draft, re-dated: one document
    assert invoice["id"] == draft["id"] and posted.erp_id == str(invoice["id"])
    assert invoice["state"] == "posted" and invoice["invoice_date"] == FIRST_OPEN_DAY
    assert f"billing date {billed_on.isoformat()}" in invoice["description"]
    assert tryton.amount(invoice["total_amount"]) == Decimal("61.50")
    redated = RedatedPosting.objects.get(posting=posted)
    assert (redated.original_date, redated.posted_date, redated.reason) == (billed_on, FIRST_OPEN_DAY, "closed_period")
    [event] = AuditEvent.objects.filter(action="posting.redated", object_id=str(posted.pk))
    assert event.after == {
        "date": FIRST_OPEN_DAY.isoformat(),
        "original_date": billed_on.isoformat(),
        "reason": "closed_period",
    }
    assert not ExceptionCase.objects.filter(source_id=obj["id"], status=CaseStatus.OPEN).exists()

    with pytest.raises(ActionRefused):  # a retry of a posted document is refused: nothing posts twice
        retry_posting(posted.pk, actor="finance.ops")
    deliver(client, se.event("invoice.finalized", obj))  # nor does billing sending it again
    assert len(tryton.invoices(f"{SOURCE}:{obj['id']}")) == 1
    assert RedatedPosting.objects.filter(posting__source_id=obj["id"]).count() == 1

    entries = [entry for entry in timeline(obj["id"]).entries if entry.title.startswith("posting.redated")]
    assert len(entries) == 1 and f"billing's date {billed_on.isoformat()}" in entries[0].detail
    client.force_login(get_user_model().objects.create_superuser("controller", "c@example.com", "pw"))
    page = client.get(f"/admin/posting/posting/{posted.pk}/change/").content.decode()
    assert "Re-dated by the closed-period policy" in page and "Period closed in the ERP" in page
    listing = client.get("/admin/posting/redatedposting/?posted=yes").content.decode()
    assert f"/admin/posting/posting/{posted.pk}/change/" in listing


def test_a_re_dated_invoice_whose_answer_was_lost_is_found_posted_and_recorded_once(
    client: Client, tryton: Any, hub: Any, november_closed: dict[str, Any]
) -> None:
    set_policy(ERPConnection.CLOSED_PERIOD_REDATE)
    proxy = FaultProxy(hub.url)
    try:
        connection = ERPConnection.objects.get(name="tryton-local")
        connection.settings = {**connection.settings, "url": proxy.url, "timeout": 3}
        connection.save()
        # Billing's date is refused; Tryton posts the re-dated invoice, but its answer is lost.
        proxy.inject("model.account.invoice.post", after=1, hold_seconds=6)
        billed_on = date(YEAR, 11, 14)
        obj = invoice_dated(billed_on)
        deliver(client, se.event("invoice.finalized", obj))

        posted = posting_of(obj["id"], Operation.POST_INVOICE, PostingState.POSTED)
    finally:
        proxy.stop()
    outcomes = list(posted.attempts.order_by("number").values_list("outcome", flat=True))
    assert outcomes == [PostingAttempt.Outcome.UNCERTAIN, PostingAttempt.Outcome.FOUND]
    assert proxy.calls["model.account.invoice.post"] == 2  # billing's date, then the first open day: never again
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "posted" and invoice["invoice_date"] == FIRST_OPEN_DAY
    assert posted.erp_id == str(invoice["id"])
    [redated] = RedatedPosting.objects.filter(posting=posted)
    assert (redated.original_date, redated.posted_date) == (billed_on, FIRST_OPEN_DAY)
    assert AuditEvent.objects.filter(action="posting.redated", object_id=str(posted.pk)).count() == 1


def test_a_payment_into_a_closed_period_is_re_dated_with_its_invoice_and_settles_it(
    client: Client, tryton: Any, november_closed: dict[str, Any]
) -> None:
    set_policy(ERPConnection.CLOSED_PERIOD_REDATE)
    obj = invoice_dated(date(YEAR, 11, 20))
    paid = se.paid(obj)
    paid_on = date(YEAR, 11, 25)
    paid["status_transitions"]["paid_at"] = at_noon(paid_on)
    deliver(client, se.event("invoice.finalized", obj))
    deliver(client, se.event("invoice.paid", paid))

    payment = wait_for(
        lambda: Posting.objects.filter(
            operation=Operation.APPLY_PAYMENT,
            payment_application__invoice__source_id=obj["id"],
            state=PostingState.POSTED,
        ).first(),
        timeout=120,
        what="the payment to be posted",
    )
    [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert invoice["state"] == "paid" and invoice["invoice_date"] == FIRST_OPEN_DAY
    move = tryton.move_of_line(int(payment.erp_id))
    assert move["date"] == FIRST_OPEN_DAY and move["description"] == payment.external_ref
    assert tryton.notes("account.move", move["id"]) == [
        f"billing date {paid_on.isoformat()}, re-dated {FIRST_OPEN_DAY.isoformat()} by the hub"
    ]
    assert tryton.receivable(f"{SOURCE}:{obj['customer']}") == Decimal("0")
    redated = {
        r.posting.operation: (r.original_date, r.posted_date)
        for r in RedatedPosting.objects.filter(
            Q(posting__invoice__source_id=obj["id"]) | Q(posting=payment)
        ).select_related("posting")
    }
    assert redated == {
        Operation.POST_INVOICE: (date(YEAR, 11, 20), FIRST_OPEN_DAY),
        Operation.APPLY_PAYMENT: (paid_on, FIRST_OPEN_DAY),
    }


def test_an_erp_that_cannot_name_its_first_open_day_parks_whatever_the_policy(
    client: Client, quickbooks: tuple[QuickBooksSimulator, ERPConnection]
) -> None:
    qbo, qbo_connection = quickbooks
    qbo.books_closed_through = date.today()
    obj = new_invoice()
    deliver(client, se.event("invoice.finalized", obj))

    parked = posting_of(obj["id"], Operation.POST_INVOICE, PostingState.PARKED)
    assert parked.connection == qbo_connection and parked.error_code == "closed_period"
    assert qbo.documents("Invoice") == []
    assert not RedatedPosting.objects.exists()
