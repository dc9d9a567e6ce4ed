"""The canonical events API as a billing engine without an adapter sees it: authenticate with the
source's secret, send a versioned document under an idempotency key, get a 4xx naming the field
when it is wrong, and never lose or double-store what was accepted."""

from __future__ import annotations

import copy
import json
import os
import time
from typing import Any

import pytest
from django.test import Client

from apps.ingest.models import InboxEvent, InboxStatus
from apps.sources import canonical

pytestmark = pytest.mark.usefixtures("configured")

URL = "/api/v1/sources/billing-api/events/"
SECRET = os.environ["HUB_CANONICAL_API_SECRET"]


def invoice_event(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(canonical.published()["invoice"][1]["examples"][0])
    data.update(changes)
    return {"type": "invoice", "schema_version": 1, "data": data}


def send(
    client: Client,
    payload: Any,
    *,
    key: str | None = "evt-1",
    token: str | None = SECRET,
    signature: str | None = None,
    url: str = URL,
) -> Any:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers: dict[str, str] = {}
    if key is not None:
        headers["HTTP_IDEMPOTENCY_KEY"] = key
    if signature is not None:
        headers["HTTP_X_HUB_SIGNATURE"] = signature
    elif token is not None:
        headers["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.post(url, data=body, content_type="application/json", **headers)


def test_an_accepted_event_is_stored_under_its_idempotency_key_before_202(client: Client) -> None:
    payload = invoice_event()
    response = send(client, payload, key="acme-in_2001-r1")

    assert response.status_code == 202
    assert response.json()["duplicate"] is False and response.json()["event_id"] == "acme-in_2001-r1"
    stored = InboxEvent.objects.get(source="billing-api", event_id="acme-in_2001-r1")
    assert (stored.status, stored.event_type, stored.object_id) == (InboxStatus.RECEIVED, "invoice.v1", "in_2001")
    assert json.loads(stored.body) == payload
    assert stored.headers["Idempotency-Key"] == "acme-in_2001-r1" and "Authorization" not in stored.headers
    assert response["X-Correlation-ID"] == stored.correlation_id


def test_the_same_key_and_body_again_is_a_harmless_retry(client: Client) -> None:
    payload = invoice_event()
    assert send(client, payload).status_code == 202
    again = send(client, payload)
    assert again.status_code == 202 and again.json()["duplicate"] is True
    assert InboxEvent.objects.get(source="billing-api", event_id="evt-1").delivery_count == 2


def test_the_same_key_with_another_body_is_a_conflict_and_the_first_body_is_kept(client: Client) -> None:
    first = invoice_event()
    assert send(client, first).status_code == 202
    response = send(client, invoice_event(revision=first["data"]["revision"] + 1, status="void"))

    assert response.status_code == 409
    assert "Idempotency-Key 'evt-1' was already used for a different body" in response.json()["detail"]
    assert json.loads(InboxEvent.objects.get(source="billing-api", event_id="evt-1").body) == first


def test_a_missing_field_is_refused_with_400_naming_it_and_nothing_is_stored(client: Client) -> None:
    payload = invoice_event()
    del payload["data"]["lines"][0]["amount_minor"]
    response = send(client, payload)

    assert response.status_code == 400
    assert response.json()["errors"] == ["data.lines[0].amount_minor: this field is required"]
    assert not InboxEvent.objects.filter(source="billing-api").exists()


def test_an_unknown_schema_version_is_refused_naming_the_versions_there_are(client: Client) -> None:
    response = send(client, {**invoice_event(), "schema_version": 2})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        "schema_version: invoice has no schema version 2; the published versions are 1"
    ]


def test_totals_that_do_not_add_up_are_refused_before_storing(client: Client) -> None:
    response = send(client, invoice_event(tax_minor=1800, total_minor=11800))
    assert response.status_code == 400
    assert response.json()["errors"] == ["data.tax_minor: 1800 is not the sum of the lines' tax_minor"]
    assert not InboxEvent.objects.filter(source="billing-api").exists()


def test_a_body_that_is_not_json_or_has_no_key_is_refused(client: Client) -> None:
    assert send(client, b"{not json").json()["errors"][0].startswith("(body): not valid JSON")
    response = send(client, invoice_event(), key=None)
    assert response.status_code == 400
    assert response.json()["errors"] == ["Idempotency-Key: this header is required; it names the event."]


def test_a_wrong_or_missing_token_is_refused_with_401(client: Client) -> None:
    wrong = send(client, invoice_event(), token="not-the-secret")
    assert wrong.status_code == 401 and "not one of this source's secrets" in wrong.json()["detail"]
    missing = send(client, invoice_event(), token=None)
    assert missing.status_code == 401
    assert not InboxEvent.objects.filter(source="billing-api").exists()


def test_an_hmac_signed_request_is_accepted_and_a_stale_or_forged_one_refused(client: Client) -> None:
    body = json.dumps(invoice_event()).encode()
    assert send(client, body, signature=canonical.sign(body, SECRET)).status_code == 202

    stale = send(client, body, key="evt-2", signature=canonical.sign(body, SECRET, int(time.time()) - 3600))
    assert stale.status_code == 401 and "Stale request" in stale.json()["detail"]
    forged = send(client, body.replace(b"11900", b"11000"), key="evt-3", signature=canonical.sign(body, SECRET))
    assert forged.status_code == 401 and "does not match the body" in forged.json()["detail"]
    assert list(InboxEvent.objects.filter(source="billing-api").values_list("event_id", flat=True)) == ["evt-1"]


def test_a_stripe_source_is_not_reachable_through_the_canonical_api(client: Client) -> None:
    response = send(client, invoice_event(), url="/api/v1/sources/stripe-us/events/")
    assert response.status_code == 404
    assert response.json()["detail"] == "'stripe-us' is a Stripe source: it sends to /webhooks/stripe-us/."
    assert send(client, invoice_event(), url="/api/v1/sources/nope/events/").status_code == 404


def test_the_schemas_are_published_with_their_versions(client: Client) -> None:
    index = client.get("/api/v1/schemas/").json()["schemas"]
    assert {(item["type"], item["version"], item["latest"]) for item in index} == {
        ("credit_memo", 1, True),
        ("customer", 1, True),
        ("dispute", 1, True),
        ("event", 1, False),
        ("event", 2, True),
        ("invoice", 1, True),
        ("payment", 1, True),
    }
    invoice_url = next(item["url"] for item in index if item["type"] == "invoice")
    schema = client.get(invoice_url)
    assert schema.status_code == 200 and schema["Content-Type"].startswith("application/schema+json")
    assert schema.json() == canonical.published()["invoice"][1]
    assert client.get("/api/v1/schemas/invoice/v9/").status_code == 404


def test_the_openapi_document_describes_the_events_endpoint(admin_client: Client) -> None:
    document = admin_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    operation = document["paths"]["/api/v1/sources/{source_name}/events/"]["post"]
    assert operation["operationId"] == "send_canonical_event"
    assert any(parameter["name"] == "Idempotency-Key" for parameter in operation["parameters"])
