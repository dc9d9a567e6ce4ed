"""The canonical events API, version 1, for billing engines without an adapter of their own, and
the JSON Schemas it publishes.

``POST /api/v1/sources/<source>/events/`` stores one canonical event exactly as a webhook is
stored: authenticated and validated first, then written to the inbox before the answer, then
normalized by a task. The ``Idempotency-Key`` header names the event: sending the same key again
with the same body answers 202 again (``"duplicate": true``) and changes nothing; the same key
with a different body is refused with 409, since that is a bug in the sender, not a retry.

Authentication is the source's own secret (``apps/sources/canonical.py``), not a user token: the
caller is a billing system, and its secret is rotated like a webhook secret.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import DatabaseError
from django.urls import path, reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core import correlation
from apps.ingest import services
from apps.sources import canonical
from apps.sources.base import InvalidPayload, SignatureError
from apps.sources.models import BillingSource

log = logging.getLogger(__name__)

_RECEIPT = inline_serializer(
    "EventReceipt",
    {
        "received": serializers.BooleanField(),
        "duplicate": serializers.BooleanField(),
        "event_id": serializers.CharField(),
        "correlation_id": serializers.CharField(),
    },
)
_ERROR = inline_serializer(
    "EventRefused", {"detail": serializers.CharField(), "errors": serializers.ListField(child=serializers.CharField())}
)


def _refuse(code: int, detail: str, errors: list[str] | None = None) -> Response:
    return Response({"detail": detail, "errors": errors or [detail]}, status=code)


class CanonicalEventView(APIView):
    authentication_classes: list[type] = []  # the source's secret authenticates (see canonical.authenticate)
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="send_canonical_event",
        summary="Send one canonical billing event",
        description=(
            "Body: {type, schema_version, data}; data follows the JSON Schema published for that type and "
            "version at /api/v1/schemas/. Authenticate with 'Authorization: Bearer <source secret>' or "
            "'X-Hub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of \"<t>.<body>\">'."
        ),
        parameters=[
            OpenApiParameter(
                canonical.IDEMPOTENCY_HEADER,
                str,
                OpenApiParameter.HEADER,
                required=True,
                description="Names the event. Resending it with the same body is safe.",
            )
        ],
        request=inline_serializer(
            "CanonicalEvent",
            {
                "type": serializers.ChoiceField(choices=canonical.document_types()),
                "schema_version": serializers.IntegerField(min_value=1),
                "data": serializers.DictField(),
            },
        ),
        responses={202: _RECEIPT, 400: _ERROR, 401: _ERROR, 404: _ERROR, 409: _ERROR, 413: _ERROR, 503: _ERROR},
    )
    def post(self, request: Request, source_name: str) -> Response:
        limit = settings.HUB["WEBHOOK_MAX_BYTES"]
        body = request.body
        if len(body) > limit:
            return _refuse(
                413, f"Body of {len(body)} bytes is over the {limit}-byte limit; the event was not accepted."
            )
        try:
            source = services.active_source(source_name)
        except services.UnknownSource as exc:
            return _refuse(404, str(exc))
        except DatabaseError:
            log.exception("database unavailable; answering 503 so the sender retries", extra={"source": source_name})
            return _refuse(503, "The event could not be stored; please retry.")
        if source.kind != BillingSource.KIND_CANONICAL:
            return _refuse(
                404, f"'{source_name}' is a {source.get_kind_display()} source: it sends to /webhooks/{source_name}/."
            )
        headers = dict(request.headers.items())
        try:
            envelope = services.verify(source, body, headers)
        except SignatureError as exc:
            return _refuse(401, f"Authentication failed: {exc}")
        except InvalidPayload as exc:
            return _refuse(400, f"The event was not accepted: {exc}", exc.problems)
        try:
            receipt = services.store_event(source, envelope, body, headers)
        except DatabaseError:
            log.exception("could not store event; answering 503 so the sender retries", extra={"source": source_name})
            return _refuse(503, "The event could not be stored; please retry.")
        if receipt.duplicate and receipt.event.body.encode("utf-8") != body:
            return _refuse(
                409,
                f"{canonical.IDEMPOTENCY_HEADER} '{envelope.event_id}' was already used for a different body; "
                "the first one is kept. Send a new event under a new key.",
            )
        return Response(
            {
                "received": True,
                "duplicate": receipt.duplicate,
                "event_id": receipt.event.event_id,
                "correlation_id": receipt.event.correlation_id,
            },
            status=status.HTTP_202_ACCEPTED,
            headers={correlation.HEADER: receipt.event.correlation_id},
        )


class SchemaIndexView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="list_canonical_schemas",
        summary="The published canonical schemas",
        responses={
            200: inline_serializer("SchemaIndex", {"schemas": serializers.ListField(child=serializers.DictField())})
        },
    )
    def get(self, request: Request) -> Response:
        schemas: list[dict[str, Any]] = []
        for name, versions in sorted(canonical.published().items()):
            for version in sorted(versions):
                url = reverse("canonical-schema", kwargs={"name": name, "version": version})
                schemas.append(
                    {
                        "type": name,
                        "version": version,
                        "latest": version == max(versions),
                        "title": versions[version].get("title", ""),
                        "url": request.build_absolute_uri(url),
                    }
                )
        return Response({"schemas": schemas})


class SchemaView(APIView):
    authentication_classes: list[type] = []
    permission_classes = [AllowAny]

    @extend_schema(operation_id="get_canonical_schema", summary="One published JSON Schema", responses={200: dict})
    def get(self, request: Request, name: str, version: int) -> Response:
        schema = canonical.published().get(name, {}).get(version)
        if schema is None:
            return _refuse(404, f"No schema '{name}' version {version} is published.")
        return Response(schema, content_type="application/schema+json")


urlpatterns = [
    path("sources/<slug:source_name>/events/", CanonicalEventView.as_view(), name="canonical-events"),
    path("schemas/", SchemaIndexView.as_view(), name="canonical-schemas"),
    path("schemas/<slug:name>/v<int:version>/", SchemaView.as_view(), name="canonical-schema"),
]
