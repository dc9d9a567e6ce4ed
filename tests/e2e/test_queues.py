"""Posting has a queue of its own: a month-end backlog of events waiting for normalization does
not stand in front of postings that are ready to go."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.test import Client

from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.posting.models import Operation, Posting, PostingState
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver, wait_for
from tests.e2e.test_stripe_to_tryton import new_invoice

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


def test_postings_flow_while_a_backlog_of_events_waits_in_the_ingest_queue(client: Client, tryton: Any) -> None:
    broker = redis.Redis.from_url(current_app.conf.broker_url)
    ingest_queue = settings.CELERY_TASK_DEFAULT_QUEUE
    obj = new_invoice()
    event = se.event("invoice.finalized", obj)
    deliver(client, event)
    # A burst: 3,000 normalization messages (for events that no longer exist: quick no-ops) queue up
    # in front of anything sent to the ingest queue from now on.
    for _ in range(3000):
        current_app.send_task("ingest.normalize_event", args=[0])
    normalize_event(InboxEvent.objects.get(event_id=event["id"]).pk)  # plans and sends the postings

    invoice = wait_for(
        lambda: Posting.objects.filter(
            source_id=obj["id"], operation=Operation.POST_INVOICE, state=PostingState.POSTED
        ).first(),
        timeout=120,
        what="the invoice to be posted",
    )
    waiting = broker.llen(ingest_queue)
    assert waiting > 1500, f"only {waiting} of the 3,000 ingest messages were still waiting"
    assert invoice.erp_id and [i["state"] for i in tryton.invoices(f"{SOURCE}:{obj['id']}")] == ["posted"]
    wait_for(lambda: broker.llen(ingest_queue) == 0, timeout=180, what="the ingest backlog to drain")
