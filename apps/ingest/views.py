"""Webhook endpoint: verify, store, answer. No business work happens in the request."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from apps.core.correlation import HEADER
from apps.ingest import services
from apps.observability import metrics
from apps.sources.base import InvalidPayload, SignatureError

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


@csrf_exempt
@require_POST
def receive_webhook(request: HttpRequest, source_name: str) -> JsonResponse:
    started = time.perf_counter()
    limit = settings.HUB["WEBHOOK_MAX_BYTES"]
    declared = request.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        metrics.event_received(metrics.UNKNOWN_SOURCE, metrics.TOO_LARGE)
        return _error(413, f"Body of {declared} bytes is over the {limit}-byte limit; the event was not accepted.")
    body = request.body
    if len(body) > limit:
        metrics.event_received(metrics.UNKNOWN_SOURCE, metrics.TOO_LARGE)
        return _error(413, f"Body of {len(body)} bytes is over the {limit}-byte limit; the event was not accepted.")
    try:
        source = services.active_source(source_name)
    except services.UnknownSource as exc:
        metrics.event_received(metrics.UNKNOWN_SOURCE, metrics.NO_SUCH_SOURCE)
        return _error(404, str(exc))
    except DatabaseError:
        log.exception("database unavailable; answering 503 so the sender retries", extra={"source": source_name})
        metrics.event_received(metrics.UNKNOWN_SOURCE, metrics.UNAVAILABLE)
        return _error(503, "The event could not be stored; please retry.")
    headers = dict(request.headers.items())
    try:
        envelope = services.verify(source, body, headers)
    except SignatureError as exc:
        log.warning("webhook signature refused", extra={"source": source_name, "reason": str(exc)})
        metrics.event_received(source.name, metrics.BAD_SIGNATURE)
        return _error(400, f"Signature verification failed: {exc}")
    except InvalidPayload as exc:
        metrics.event_received(source.name, metrics.INVALID)
        return _error(400, str(exc))
    try:
        receipt = services.store_event(source, envelope, body, headers)
    except DatabaseError:
        log.exception("could not store webhook; answering 503 so the sender retries", extra={"source": source_name})
        metrics.event_received(source.name, metrics.UNAVAILABLE)
        return _error(503, "The event could not be stored; please retry.")
    metrics.ingest_latency(source.name, time.perf_counter() - started)
    response = JsonResponse(
        {
            "received": True,
            "duplicate": receipt.duplicate,
            "event_id": receipt.event.event_id,
            "correlation_id": receipt.event.correlation_id,
        },
        status=200,
    )
    response[HEADER] = receipt.event.correlation_id
    return response
