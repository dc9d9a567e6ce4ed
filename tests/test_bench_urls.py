"""The benchmark's ceiling views (integration_hub/urls_bench.py) exist only under the bench settings."""

from __future__ import annotations

import json

import pytest
from django.test import Client, override_settings

from apps.ingest.models import InboxEvent
from apps.sources import stripe_samples as se

pytestmark = pytest.mark.django_db


def event_body() -> bytes:
    return json.dumps(se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(4900)]))).encode()


def test_the_production_urls_do_not_serve_the_ceiling_views(client: Client) -> None:
    assert client.post("/bench/ok/").status_code == 404
    assert (
        client.post("/bench/insert/stripe-us/", data=event_body(), content_type="application/json").status_code == 404
    )
    assert not InboxEvent.objects.exists()


@override_settings(ROOT_URLCONF="integration_hub.urls_bench")
def test_the_bench_urls_answer_a_bare_200_and_insert_the_inbox_row_the_webhook_would(client: Client) -> None:
    assert client.post("/bench/ok/").status_code == 200
    body = event_body()
    response = client.post(
        "/bench/insert/stripe-us/", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE="t=1,v1=x"
    )
    assert response.status_code == 200
    row = InboxEvent.objects.get()
    event = json.loads(body)
    assert (row.source, row.event_id, row.object_id, row.body) == (
        "stripe-us",
        event["id"],
        event["data"]["object"]["id"],
        body.decode(),
    )
    assert row.headers["Stripe-Signature"] == "t=1,v1=x"
