"""What a posting reads per run, and that configuration read once per process is never stale.

Mappings, routing rules and maintenance windows are kept per process under a generation counter
in Redis (apps/core/config_cache.py). These tests run outside a test transaction, as workers do,
so the cache is in use."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.console import hub_config
from apps.flow import services as flow
from apps.flow.models import MaintenanceWindow
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting import executor
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, Mapping
from apps.sources import stripe_samples as se
from tests.conftest import EXAMPLE_CONFIG, SECRET
from tests.erp_simulator import ErpSimulator


@pytest.fixture
def erp(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[ErpSimulator]:
    with ErpSimulator() as sim:
        monkeypatch.setenv("TRYTON_URL", sim.url)
        monkeypatch.setenv("TRYTON_DATABASE", sim.database)
        monkeypatch.setenv("TRYTON_PASSWORD", sim.password)
        hub_config.apply(hub_config.load(EXAMPLE_CONFIG))
        yield sim


def _invoice(client: Client, customer: str, amount: int) -> list[Posting]:
    event = se.event("invoice.finalized", se.invoice(customer, [se.line(amount), se.line(500)]))
    body = json.dumps(event).encode()
    client.post(
        "/webhooks/stripe-us/", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=se.sign(body, SECRET)
    )
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)
    return list(Posting.objects.filter(state=PostingState.QUEUED).order_by("pk"))


def _post_all(postings: list[Posting]) -> list[str]:
    """Run the postings, then those they released (an invoice waits for its customer)."""
    states = [executor.execute_posting(posting.pk) for posting in postings]
    released = Posting.objects.filter(state=PostingState.QUEUED).order_by("pk")
    return states + [executor.execute_posting(posting.pk) for posting in released]


def test_a_warm_worker_posts_an_invoice_in_twenty_statements_and_six_erp_requests(
    client: Client, erp: ErpSimulator
) -> None:
    customer = se.uid("cus")
    assert _post_all(_invoice(client, customer, 1000)) == [PostingState.POSTED, PostingState.POSTED]
    [posting] = _invoice(client, customer, 2000)
    before = Counter(erp.requests)
    with CaptureQueriesContext(connection) as statements:
        assert executor.execute_posting(posting.pk) == PostingState.POSTED
    sent = Counter(erp.requests) - before
    # The find-by-reference guard, the party, create, the total check, post, the number: no
    # mapping, rule or window query, and no chart-of-accounts lookup (cached by the connector).
    assert sum(sent.values()) == 6, sent
    assert "model.account.invoice.search_read" in sent  # the duplicate guard is never skipped
    assert not [q for q in statements.captured_queries if "routing_mapping" in q["sql"]]
    assert not [q for q in statements.captured_queries if "flow_maintenancewindow" in q["sql"]]
    assert len(statements) <= 20, "\n".join(q["sql"][:120] for q in statements.captured_queries)


def test_a_mapping_changed_by_a_bulk_update_is_used_by_the_next_posting(client: Client, erp: ErpSimulator) -> None:
    customer = se.uid("cus")
    assert _post_all(_invoice(client, customer, 1000)) == [PostingState.POSTED, PostingState.POSTED]
    Mapping.objects.filter(kind=Mapping.KIND_REVENUE_ACCOUNT, key="default").update(value="4999")
    [posting] = _invoice(client, customer, 2000)
    assert executor.execute_posting(posting.pk) == PostingState.PARKED
    posting.refresh_from_db()
    assert posting.error_code == "unmapped_revenue_account" and "'4999'" in posting.finance_message

    mapping = Mapping.objects.get(kind=Mapping.KIND_REVENUE_ACCOUNT, key="default")
    mapping.value = "4000"
    mapping.save()  # saved as the admin does: the parked posting is reposted and now goes through
    [third] = _invoice(client, customer, 3000)
    assert executor.execute_posting(third.pk) == PostingState.POSTED


def test_a_maintenance_window_planned_after_a_posting_holds_the_next(client: Client, erp: ErpSimulator) -> None:
    customer = se.uid("cus")
    assert _post_all(_invoice(client, customer, 1000)) == [PostingState.POSTED, PostingState.POSTED]
    tryton = ERPConnection.objects.get(name="tryton-local")
    now = timezone.now()
    MaintenanceWindow.objects.create(
        connection=tryton, starts_at=now - timedelta(minutes=1), ends_at=now + timedelta(hours=1), reason="upgrade"
    )
    [posting] = _invoice(client, customer, 2000)
    assert executor.execute_posting(posting.pk) == "skipped"
    posting.refresh_from_db()
    assert (posting.state, posting.error_code) == (PostingState.RETRY_SCHEDULED, flow.HOLD_MAINTENANCE)
    assert posting.operation == Operation.POST_INVOICE
