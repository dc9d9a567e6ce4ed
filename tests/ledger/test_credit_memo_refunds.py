"""A refund recorded after its credit note was issued (Chargebee's refund_due, then refunded)."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest
from django.db import transaction

from apps.ledger import services as ledger
from apps.ledger.commands import CreditMemoData, CreditMemoLineData
from apps.ledger.models import CreditMemo

pytestmark = pytest.mark.usefixtures("configured")

ISSUED = CreditMemoData(
    source_id="cn_1",
    source_version=1,
    number="CN-1",
    customer_source_id="cus_1",
    invoice_source_id="in_1",
    status="issued",
    currency="USD",
    subtotal_minor=1250,
    tax_minor=0,
    total_minor=1250,
    memo_date=date(2026, 11, 3),
    lines=(CreditMemoLineData("API calls", Decimal(1), 1250, 1250),),
)


def test_a_refund_recorded_later_is_kept_once() -> None:
    ledger.upsert_credit_memo("stripe-us", ISSUED)
    refunded = ledger.upsert_credit_memo("stripe-us", replace(ISSUED, source_version=2, refunded_minor=1250))
    again = ledger.upsert_credit_memo("stripe-us", replace(ISSUED, source_version=3, refunded_minor=1250))

    assert (refunded.changed, again.changed) == (True, False)
    assert CreditMemo.objects.get(source_id="cn_1").refunded_minor == 1250


def test_a_second_refund_is_refused_with_what_to_do() -> None:
    ledger.upsert_credit_memo("stripe-us", replace(ISSUED, refunded_minor=500))
    with (
        pytest.raises(ledger.UnsupportedChange, match="record the further refund in the ERP by hand"),
        transaction.atomic(),  # as normalization runs it: the refused change rolls back alone
    ):
        ledger.upsert_credit_memo("stripe-us", replace(ISSUED, source_version=2, refunded_minor=1250))
    assert CreditMemo.objects.get(source_id="cn_1").refunded_minor == 500
