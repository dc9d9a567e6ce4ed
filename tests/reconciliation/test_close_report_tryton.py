"""The close report and the closed-period policy on the real Tryton: an invoice billed in a month the
accountant has closed is posted by the executor on the first open day, and the report shows it where
the ERP holds it (in the next month's totals) and lists it as re-dated in both months."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any

import pytest
from django.urls import reverse

from apps.console.catalogue import FINANCE
from apps.posting.models import Operation, Posting, PostingState, RedatedPosting
from apps.reconciliation import close
from apps.reconciliation.close import CloseType
from apps.routing.models import ERPConnection
from tests.console.conftest import as_user, user_in
from tests.reconciliation.conftest import Books, invoice

pytestmark = pytest.mark.tryton

# A fiscal year of this test's own, so Tryton's invoice sequence (dates in order) is its alone.
YEAR = date.today().year - 3
CLOSED_MONTH = date(YEAR, 11, 1)
FIRST_OPEN_DAY = date(YEAR, 12, 1)


@pytest.fixture
def november_closed(books: Books) -> Iterator[None]:
    """The accountant closed November; the connection re-dates what billing dates in it."""
    assert books.tryton is not None
    books.tryton.ensure_fiscal_year(YEAR)
    books.tryton.close_period(CLOSED_MONTH)
    ERPConnection.objects.filter(pk=books.connection.pk).update(closed_period_policy=ERPConnection.CLOSED_PERIOD_REDATE)
    yield
    books.tryton.reopen_period(CLOSED_MONTH)


def dated(amount: int, day: date) -> dict[str, Any]:
    obj = invoice(amount)
    stamp = int(datetime.combine(day, time(12), tzinfo=UTC).timestamp())
    obj.update(created=stamp - 60, effective_at=stamp, period_start=stamp - 30 * 86400, period_end=stamp)
    obj["status_transitions"]["finalized_at"] = stamp
    return obj


@pytest.mark.usefixtures("november_closed")
def test_a_re_dated_invoice_counts_where_the_erp_holds_it_and_is_listed_in_both_months(books: Books) -> None:
    assert books.tryton is not None
    billed_on = date(YEAR, 11, 12)
    moved = dated(12300, billed_on)
    stays = dated(4500, date(YEAR, 12, 3))
    books.webhook("invoice.finalized", moved)
    books.webhook("invoice.finalized", stays)
    books.drain()
    posting = Posting.objects.get(source_id=moved["id"], operation=Operation.POST_INVOICE)
    assert posting.state == PostingState.POSTED
    assert RedatedPosting.objects.get(posting=posting).posted_date == FIRST_OPEN_DAY
    [held] = books.tryton.invoices(books.ref(moved["id"]))
    assert held["invoice_date"] == FIRST_OPEN_DAY and books.tryton.amount(held["total_amount"]) == 123

    november = close.build(books.legal_entity, f"{YEAR}-11")
    assert november.posted == []  # Tryton holds nothing of billing's November
    [row] = november.redated
    assert (row.reference, row.original_date, row.posted_date, row.amount_minor, row.erp_number) == (
        books.ref(moved["id"]),
        billed_on,
        FIRST_OPEN_DAY,
        12300,
        held["number"],
    )
    assert row.direction(november.month_start, november.month_end) == f"out to {YEAR}-12"
    assert row.erp_message and row.erp_message == RedatedPosting.objects.get(posting=posting).erp_message

    december = close.build(books.legal_entity, f"{YEAR}-12")
    posted = {t.document_type: (t.count, t.amount_minor) for t in december.posted if t.connection == "tryton-local"}
    assert posted == {CloseType.INVOICE: (2, 12300 + 4500)}
    assert [(r.reference, r.direction(december.month_start, december.month_end)) for r in december.redated] == [
        (books.ref(moved["id"]), "into this month")
    ]

    finance = as_user(user_in(FINANCE, "fiona.finance"))
    query = {"legal_entity": books.legal_entity.code, "month": f"{YEAR}-11"}
    page = finance.get(reverse("admin:reconciliation_close"), query).content.decode()
    assert '<h2 id="redated-title">Re-dated documents (1)</h2>' in page
    assert f"out to {YEAR}-12" in page and held["number"] in page
