"""A document the closed-period policy re-dated weeks after its period is still looked for in the ERP."""

from __future__ import annotations

from datetime import date

import pytest

from apps.ledger.models import LegalEntity
from apps.posting.models import Operation, Posting, RedatedPosting, RedateReason
from apps.reconciliation.sides import Scope, _redated_until
from apps.routing.models import ERPConnection

pytestmark = pytest.mark.django_db


def test_the_erp_is_read_up_to_the_latest_re_dated_document_of_the_period() -> None:
    connection = ERPConnection.objects.create(name="erp", kind="tryton", settings={})
    entity = LegalEntity.objects.create(code="US01", name="Hub Demo Inc.", country="US", base_currency="USD")
    scope = Scope(connection, entity, "USD", date(2026, 10, 1), date(2026, 10, 31))
    _start, end = scope.window
    assert _redated_until(scope, end) == date(2026, 11, 7)  # nothing re-dated: the usual margin

    def redated(n: int, original: date, posted: date) -> None:
        posting = Posting.objects.create(
            idempotency_key=f"{n}" * 64,
            connection=connection,
            operation=Operation.POST_INVOICE,
            source="stripe-us",
            source_id=f"in_{n}",
        )
        RedatedPosting.objects.create(
            posting=posting, original_date=original, posted_date=posted, reason=RedateReason.choices[0][0]
        )

    redated(1, date(2026, 10, 20), date(2026, 12, 1))  # October, closed until December
    redated(2, date(2026, 9, 30), date(2027, 1, 1))  # September's: another run's business
    assert _redated_until(scope, end) == date(2026, 12, 1)
