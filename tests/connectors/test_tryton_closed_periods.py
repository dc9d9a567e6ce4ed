"""Closed periods in the real Tryton: the connector says when a date is why Tryton refused a
document (its period is closed, or a later customer invoice is already numbered), names the first
day Tryton takes, and posts a re-dated document once with billing's date in its memo.

The test Tryton is shared by the whole session, and Tryton numbers customer invoices in date
order within a fiscal year, so these tests post into fiscal years of their own (created here, years
before the ones the bootstrap makes) and reopen every period they close."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest

from apps.connectors.base import ACCEPTED_FROM, CLOSED_PERIOD, INVOICE_DATE_ORDER, OPERATION_POST_INVOICE
from apps.connectors.documents import OnAccountDocument
from apps.connectors.tryton import TrytonConnector
from apps.core.errors import BusinessRuleError
from tests.connectors.test_tryton_connector import customer, invoice_doc, payment_doc

pytestmark = pytest.mark.tryton

# Fiscal years no other test posts into: one for closed periods, one for the numbering order.
CLOSED_YEAR = date.today().year - 4
ORDER_YEAR = date.today().year - 5


@pytest.fixture
def close_period(tryton: Any) -> Iterator[Callable[[date], dict[str, Any]]]:
    """Close the period of a day, as an accountant does at month end; reopened afterwards."""
    closed: list[date] = []

    def close(on: date) -> dict[str, Any]:
        tryton.ensure_fiscal_year(on.year)
        closed.append(on)
        return tryton.close_period(on)  # type: ignore[no-any-return]

    yield close
    for on in closed:
        tryton.reopen_period(on)


def test_the_first_open_day_is_the_day_itself_or_the_first_day_of_the_next_open_period(
    tryton_connector: TrytonConnector, tryton: Any, close_period: Callable[[date], dict[str, Any]]
) -> None:
    tryton.ensure_fiscal_year(CLOSED_YEAR)
    assert tryton_connector.first_open_date(date(CLOSED_YEAR, 2, 14)) == date(CLOSED_YEAR, 2, 14)
    close_period(date(CLOSED_YEAR, 2, 1))
    close_period(date(CLOSED_YEAR, 3, 1))  # two closed months in a row: the next open one is April

    assert tryton_connector.first_open_date(date(CLOSED_YEAR, 2, 14)) == date(CLOSED_YEAR, 4, 1)
    company = str(tryton.rpc.context["company"])
    assert tryton_connector.first_open_date(date(CLOSED_YEAR, 3, 31), company) == date(CLOSED_YEAR, 4, 1)
    last_year_set_up = date.today().year + 1  # the bootstrap's last fiscal year
    assert tryton_connector.first_open_date(date(last_year_set_up + 1, 1, 5)) is None


def test_an_invoice_in_a_closed_period_is_refused_as_such_and_posts_once_re_dated_with_billings_date(
    tryton_connector: TrytonConnector, tryton: Any, close_period: Callable[[date], dict[str, Any]]
) -> None:
    billed_on = date(CLOSED_YEAR, 5, 12)
    period = close_period(billed_on)
    doc = invoice_doc(*customer(tryton_connector), invoice_date=billed_on, due_date=None, number="INV-LATE-1")

    with pytest.raises(BusinessRuleError) as refused:
        tryton_connector.post_invoice(doc)

    assert refused.value.code == CLOSED_PERIOD
    assert refused.value.params["date"] == billed_on.isoformat() and refused.value.params["period"] == period["name"]
    assert "reopen the period" in refused.value.params["erp_message"]  # Tryton's own words, for the case
    [draft] = tryton.invoices(doc.external_ref)
    assert draft["state"] == "draft" and draft["invoice_date"] == billed_on

    first_open = tryton_connector.first_open_date(billed_on)
    assert first_open == date(CLOSED_YEAR, 6, 1)
    redated = replace(doc, invoice_date=first_open, original_date=billed_on)
    posted = tryton_connector.post_invoice(redated)
    again = tryton_connector.post_invoice(redated)  # a retry finds it: nothing new

    [invoice] = tryton.invoices(doc.external_ref)  # the draft, re-dated and posted: one document
    assert invoice["id"] == draft["id"] == int(posted.erp_id) == int(again.erp_id)
    assert invoice["state"] == "posted" and invoice["invoice_date"] == first_open
    assert invoice["number"].startswith(f"INV/{CLOSED_YEAR}/")
    assert f"billing date {billed_on.isoformat()}" in invoice["description"]
    assert invoice["description"].startswith("INV-LATE-1 (")
    assert tryton_connector.find_document(OPERATION_POST_INVOICE, doc.external_ref).erp_id == posted.erp_id  # type: ignore[union-attr]


def test_an_invoice_dated_before_the_last_one_numbered_names_the_first_date_tryton_takes(
    tryton_connector: TrytonConnector, tryton: Any
) -> None:
    tryton.ensure_fiscal_year(ORDER_YEAR)
    party = customer(tryton_connector)
    later = invoice_doc(*party, invoice_date=date(ORDER_YEAR, 12, 20), due_date=None)
    later_number = tryton_connector.post_invoice(later).erp_number
    backfilled = invoice_doc(*party, invoice_date=date(ORDER_YEAR, 12, 5), due_date=None)

    with pytest.raises(BusinessRuleError) as refused:
        tryton_connector.post_invoice(backfilled)

    assert refused.value.code == INVOICE_DATE_ORDER
    assert refused.value.params[ACCEPTED_FROM] == date(ORDER_YEAR, 12, 20).isoformat()
    assert refused.value.params["erp_number"] == later_number
    assert "you must set an invoice date after" in refused.value.params["erp_message"]
    start = date.fromisoformat(refused.value.params[ACCEPTED_FROM])
    assert tryton_connector.first_open_date(start) == start

    posted = tryton_connector.post_invoice(
        replace(backfilled, invoice_date=start, original_date=backfilled.invoice_date)
    )
    [invoice] = tryton.invoices(backfilled.external_ref)
    assert invoice["state"] == "posted" and invoice["invoice_date"] == start and posted.erp_id == str(invoice["id"])
    assert f"billing date {ORDER_YEAR}-12-05" in invoice["description"]


def test_a_payment_in_a_closed_period_is_refused_as_such_and_the_re_dated_one_carries_billings_date_in_a_note(
    tryton_connector: TrytonConnector, tryton: Any, close_period: Callable[[date], dict[str, Any]]
) -> None:
    invoice = invoice_doc(*customer(tryton_connector), invoice_date=date(CLOSED_YEAR, 6, 1), due_date=None)
    invoice_id = tryton_connector.post_invoice(invoice).erp_id
    paid_on = date(CLOSED_YEAR, 7, 9)
    close_period(paid_on)
    payment = replace(payment_doc(invoice, invoice_id, 6400), paid_on=paid_on)

    with pytest.raises(BusinessRuleError) as refused:
        tryton_connector.apply_payment(payment)
    assert refused.value.code == CLOSED_PERIOD and refused.value.params["date"] == paid_on.isoformat()
    assert tryton.payment_lines(int(invoice_id)) == []

    redated = replace(payment, paid_on=date(CLOSED_YEAR, 8, 1), original_date=paid_on)
    applied = tryton_connector.apply_payment(redated)
    assert tryton_connector.apply_payment(redated).erp_id == applied.erp_id  # a retry: nothing new

    move = tryton.move_of_line(int(applied.erp_id))
    assert move["date"] == date(CLOSED_YEAR, 8, 1) and move["description"] == payment.external_ref
    assert tryton.notes("account.move", move["id"]) == [
        f"billing date {paid_on.isoformat()}, re-dated {CLOSED_YEAR}-08-01 by the hub"
    ]  # once, though asked twice
    [paid] = tryton.invoices(invoice.external_ref)
    assert paid["state"] == "paid"


def test_a_journal_entry_in_a_closed_period_is_refused_as_such_and_the_re_dated_one_says_billings_date(
    tryton_connector: TrytonConnector, tryton: Any, close_period: Callable[[date], dict[str, Any]]
) -> None:
    customer_ref, customer_id = customer(tryton_connector)
    received_on = date(CLOSED_YEAR, 9, 3)
    close_period(received_on)
    cash = OnAccountDocument(
        external_ref=f"test:{uuid.uuid4().hex[:12]}:on-account",
        payment_ref="test:py_early",
        customer_ref=customer_ref,
        customer_erp_id=customer_id,
        currency="USD",
        amount_minor=2500,
        received_on=received_on,
        payment_journal="Bank",
    )

    with pytest.raises(BusinessRuleError) as refused:
        tryton_connector.receive_on_account(cash)
    assert refused.value.code == CLOSED_PERIOD and "is closed" in refused.value.params["erp_message"]

    tryton_connector.receive_on_account(replace(cash, received_on=date(CLOSED_YEAR, 10, 1), original_date=received_on))
    [move] = tryton.moves(cash.external_ref)
    assert move["state"] == "posted"
    assert sorted(line["credit"] for line in move["lines"]) == [Decimal(0), Decimal("25.00")]
    labels = tryton._search_read("account.move.line", [["move", "=", move["id"]]], ["description"])
    assert {row["description"] for row in labels} == {
        f"Unapplied cash from payment test:py_early (billing date {received_on.isoformat()}, re-dated "
        f"{CLOSED_YEAR}-10-01 by the hub)"
    }
