"""``/healthz`` (the process answers), ``/readyz`` (it can work) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from apps.observability import health
from apps.observability.collectors import DatabaseCollector


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """Alive: the process answers requests. Touches nothing else (no database, no broker)."""
    return JsonResponse({"status": "alive"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """503 naming what is not ready. ``?checks=database,broker`` limits the checks: a load balancer
    in front of the webhooks should not take the hub out of service because an ERP is down, since
    events are stored and posted once the ERP is back."""
    asked = tuple(name for name in request.GET.get("checks", "").split(",") if name)
    unknown = [name for name in asked if name not in health.CHECKS]
    if unknown:
        return JsonResponse({"error": f"Unknown checks {unknown}; known: {list(health.CHECKS)}."}, status=400)
    result = health.readiness(asked or health.CHECKS)
    return JsonResponse(
        {"ready": result.ready, "not_ready": result.not_ready, "checks": result.checks},
        status=200 if result.ready else 503,
    )


def _registry() -> CollectorRegistry:
    """Multi-process: the values every process wrote to PROMETHEUS_MULTIPROC_DIR, added up.
    Single process: this process's own registry. The database gauges either way."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_ProcessRegistry())
    registry.register(DatabaseCollector())
    return registry


class _ProcessRegistry(Collector):
    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Open unless ``HUB_METRICS_TOKEN`` is set; then Prometheus sends it as a bearer token
    (``authorization: {credentials: ...}`` in its scrape config)."""
    token = settings.HUB.get("METRICS_TOKEN", "")
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
            response = HttpResponse("A bearer token is required for /metrics.\n", status=401, content_type="text/plain")
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    return HttpResponse(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)
