"""The production URLs plus the benchmark's ceiling views (settings_bench only).

``/bench/ok/`` answers 200 and does nothing else: what the web server and Django's middleware cost.
``/bench/insert/<source>/`` inserts the row the webhook view would insert for the same body, in one
statement, and nothing else (no signature check, no broker message, no log line, no metric)."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from apps.ingest.models import InboxEvent
from integration_hub.urls import urlpatterns as hub_urlpatterns

KEPT_HEADERS = ("content-type", "user-agent", "stripe-signature")  # what the Stripe adapter keeps


@csrf_exempt
def bare_ok(request: HttpRequest) -> HttpResponse:
    return HttpResponse(status=200)


@csrf_exempt
def insert_only(request: HttpRequest, source_name: str) -> HttpResponse:
    body = request.body
    event = json.loads(body)
    InboxEvent.objects.create(
        source=source_name,
        event_id=event["id"],
        event_type=event["type"],
        object_id=event["data"]["object"]["id"],
        headers={k: v for k, v in request.headers.items() if k.lower() in KEPT_HEADERS},
        body=body.decode("utf-8"),
        correlation_id=event["id"],
    )
    return HttpResponse(status=200)


urlpatterns = [
    path("bench/ok/", bare_ok),
    path("bench/insert/<slug:source_name>/", insert_only),
    *hub_urlpatterns,
]
