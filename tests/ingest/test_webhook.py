import json
import time

import pytest
from django.db import connection
from django.test import Client, override_settings

from apps.ingest.models import InboxEvent, InboxStatus
from apps.sources import stripe_samples as se
from tests.conftest import SECRET, deliver

pytestmark = pytest.mark.usefixtures("configured")


def test_signed_event_is_stored_with_headers_and_correlation_id_before_2xx(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    response = deliver(client, event)
    assert response.status_code == 200
    stored = InboxEvent.objects.get(event_id=event["id"])
    assert stored.status == InboxStatus.RECEIVED
    assert json.loads(stored.body) == event
    assert stored.headers["Stripe-Signature"].startswith("t=")
    assert stored.correlation_id and response["X-Correlation-ID"] == stored.correlation_id
    assert response.json()["duplicate"] is False


def test_caller_correlation_id_is_kept(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    body = json.dumps(event).encode()
    client.post(
        "/webhooks/stripe-us/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=se.sign(body, SECRET),
        HTTP_X_CORRELATION_ID="trace-42",
    )
    assert InboxEvent.objects.get(event_id=event["id"]).correlation_id == "trace-42"


def test_redelivery_answers_200_and_is_not_stored_twice(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    assert deliver(client, event).status_code == 200
    second = deliver(client, event)
    assert second.status_code == 200 and second.json()["duplicate"] is True
    stored = InboxEvent.objects.get(event_id=event["id"])
    assert stored.delivery_count == 2
    assert InboxEvent.objects.filter(event_id=event["id"]).count() == 1


def test_bad_signature_is_refused_and_nothing_is_stored(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    response = deliver(client, event, secret="whsec_wrong")
    assert response.status_code == 400
    assert "Signature verification failed" in response.json()["error"]
    assert not InboxEvent.objects.filter(event_id=event["id"]).exists()


def test_stale_signature_is_refused_and_nothing_is_stored(client: Client) -> None:
    event = se.event("customer.created", se.customer())
    response = deliver(client, event, timestamp=int(time.time()) - 600)
    assert response.status_code == 400
    assert "Stale webhook" in response.json()["error"]
    assert not InboxEvent.objects.exists()


def test_rotated_secret_is_accepted_while_both_are_set(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET_PREVIOUS", SECRET)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_rotated_in")
    old = se.event("customer.created", se.customer())
    new = se.event("customer.created", se.customer())
    assert deliver(client, old, secret=SECRET).status_code == 200
    assert deliver(client, new, secret="whsec_rotated_in").status_code == 200
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET_PREVIOUS")
    assert deliver(client, se.event("customer.created", se.customer()), secret=SECRET).status_code == 400


@override_settings(HUB={**__import__("django.conf").conf.settings.HUB, "WEBHOOK_MAX_BYTES": 2048})
def test_oversized_body_is_413_and_nothing_is_stored(client: Client) -> None:
    obj = se.customer()
    obj["metadata"] = {"padding": "x" * 4096}
    response = deliver(client, se.event("customer.created", obj))
    assert response.status_code == 413
    assert "over the 2048-byte limit" in response.json()["error"]
    assert not InboxEvent.objects.exists()


def test_unknown_source_is_404(client: Client) -> None:
    response = deliver(client, se.event("customer.created", se.customer()), source="nope")
    assert response.status_code == 404


def test_signed_but_not_a_stripe_event_is_400(client: Client) -> None:
    body = b'{"hello": "world"}'
    response = client.post(
        "/webhooks/stripe-us/", data=body, content_type="application/json", HTTP_STRIPE_SIGNATURE=se.sign(body, SECRET)
    )
    assert response.status_code == 400
    assert "not a Stripe event" in response.json()["error"]


def test_when_the_database_cannot_store_the_event_the_answer_is_5xx_never_2xx(client: Client) -> None:
    # A real PostgreSQL failure on insert, made by a trigger for this test's transaction only.
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION hub_test_refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ "
            "LANGUAGE plpgsql; CREATE TRIGGER hub_test_refuse BEFORE INSERT ON ingest_inboxevent "
            "FOR EACH ROW EXECUTE FUNCTION hub_test_refuse();"
        )
    event = se.event("customer.created", se.customer())
    response = deliver(client, event)
    assert response.status_code == 503
    assert "could not be stored" in response.json()["error"]
