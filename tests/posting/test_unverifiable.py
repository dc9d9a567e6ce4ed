"""A connector for an ERP that cannot be searched by the hub's reference: after an uncertain call
the posting is parked for a person, never sent again on a guess. (Tryton can always be searched,
so this path needs a connector of its own; the real-Tryton path is in tests/e2e.)"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.connectors import registry
from apps.connectors.base import ERPConnector
from apps.connectors.documents import PostResult
from apps.console.models import CaseStatus, ExceptionCase
from apps.core.errors import UncertainOutcome
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection
from apps.sources import stripe_samples as se
from tests.conftest import deliver

CALLS: list[str] = []


class BlindConnector(ERPConnector):
    kind = "blind"
    dedupe_strategy = "none"

    def ensure_customer(self, doc: Any) -> PostResult:
        CALLS.append(doc.external_ref)
        raise UncertainOutcome("no answer within the timeout")

    def post_invoice(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def apply_payment(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def refund_credit_memo(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def post_credit_memo(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def void_invoice(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def write_off(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def move_disputed_funds(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def receive_on_account(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def apply_credit(self, doc: Any) -> PostResult:
        raise AssertionError("not reached")

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        raise NotImplementedError


@pytest.mark.usefixtures("configured")
def test_an_uncertain_call_to_an_erp_without_lookup_is_parked_not_repeated(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(registry.CONNECTOR_CLASSES, "blind", f"{__name__}.BlindConnector")
    ERPConnection.objects.filter(name="tryton-local").update(kind="blind")
    obj = se.invoice(se.uid("cus"), [se.line(4900)])
    event = se.event("invoice.finalized", obj)
    deliver(client, event)
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    posting = Posting.objects.get(source_id=obj["customer"], operation=Operation.ENSURE_CUSTOMER)

    assert executor.execute_posting(posting.pk) == PostingState.RETRY_SCHEDULED
    Posting.objects.filter(pk=posting.pk).update(retry_at=timezone.now())
    assert executor.execute_posting(posting.pk) == PostingState.PARKED

    posting.refresh_from_db()
    assert (posting.error_code, posting.verify_before_retry) == ("cannot_verify", True)
    assert CALLS.count(f"stripe-us:{obj['customer']}") == 1  # sent once, never again on a guess
    case = ExceptionCase.objects.get(source_id=obj["customer"], status=CaseStatus.OPEN)
    assert case.kind == "Unconfirmed posting" and "link the document if it is there" in case.message
