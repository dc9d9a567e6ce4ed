"""The validation API, version 1: checks billing makes before it finalizes an invoice, answered
from the validation cache (``apps/validation/services.py``), never by calling the ERP.

Every answer is 200 with ``valid`` and the ``reasons`` it is not; 404 for an unknown legal entity,
422 when no ERP is routed for it, 503 while the cache has never been filled. Authentication is a
DRF token (``Authorization: Token <key>``) of a user with ``validation.view_referenceentry``."""

from __future__ import annotations

import time

from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.validation import services

VIEW = "validation.view_referenceentry"
# A user's right to run checks, kept per process for this long: reading it costs two queries, a
# third of a check's work. A revoked permission stops working within this time.
PERMISSION_MEMO_SECONDS = 30.0
_allowed: dict[int, tuple[float, bool]] = {}


def forget_permissions() -> None:
    _allowed.clear()


class CanRunChecks(BasePermission):
    """``validation.view_referenceentry``; anonymous callers get 401, others without it 403."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not (user and user.is_authenticated):
            return False
        now = time.monotonic()
        held = _allowed.get(user.pk)
        if held is None or now - held[0] > PERMISSION_MEMO_SECONDS:
            held = (now, bool(user.is_active and user.has_perm(VIEW)))
            _allowed[user.pk] = held
        return held[1]


_VERDICT = inline_serializer(
    "ValidationVerdict",
    {
        "valid": serializers.BooleanField(),
        "reasons": serializers.ListField(child=serializers.CharField()),
        "erp_connection": serializers.CharField(),
        "cache_refreshed_at": serializers.DateTimeField(allow_null=True),
        "cache_stale": serializers.BooleanField(help_text="The last refresh failed: the answer is from before it."),
    },
)
_ERROR = inline_serializer("ValidationRefused", {"detail": serializers.CharField()})
_ENTITY = OpenApiParameter("legal_entity", str, required=True, description="The legal entity's code, e.g. US01.")


def _required(request: Request, *names: str) -> list[str] | Response:
    values = [request.query_params.get(name, "").strip() for name in names]
    missing = [name for name, value in zip(names, values, strict=True) if not value]
    if missing:
        return Response({"detail": f"Missing query parameter(s): {', '.join(missing)}."}, status=400)
    return values


def _answer(check: object, *args: str) -> Response:
    try:
        verdict = check(*args)  # type: ignore[operator]
    except services.CannotValidate as exc:
        return Response({"detail": str(exc)}, status=exc.status)
    return Response(verdict.as_dict())


class CustomerCheckView(APIView):
    permission_classes = [CanRunChecks]

    @extend_schema(
        operation_id="validate_customer_account",
        summary="Validate a customer account for a legal entity",
        parameters=[
            _ENTITY,
            OpenApiParameter("source", str, required=True, description="The billing source, e.g. stripe-us."),
            OpenApiParameter("customer_id", str, required=True, description="The customer's id in billing."),
        ],
        responses={200: _VERDICT, 400: _ERROR, 404: _ERROR, 422: _ERROR, 503: _ERROR},
    )
    def get(self, request: Request) -> Response:
        values = _required(request, "legal_entity", "source", "customer_id")
        return values if isinstance(values, Response) else _answer(services.validate_customer, *values)


class DimensionLookupView(APIView):
    permission_classes = [CanRunChecks]

    @extend_schema(
        operation_id="lookup_dimension",
        summary="List an ERP dimension's values, or check one",
        parameters=[
            _ENTITY,
            OpenApiParameter("dimension", str, required=True, description="account, department, payment_journal…"),
            OpenApiParameter("value", str, description="Check this value instead of listing them all."),
        ],
        responses={200: _VERDICT, 400: _ERROR, 404: _ERROR, 422: _ERROR, 503: _ERROR},
    )
    def get(self, request: Request) -> Response:
        values = _required(request, "legal_entity", "dimension")
        if isinstance(values, Response):
            return values
        return _answer(services.lookup_dimension, *values, request.query_params.get("value", "").strip())


class TaxCodeCheckView(APIView):
    permission_classes = [CanRunChecks]

    @extend_schema(
        operation_id="verify_tax_code",
        summary="Verify a tax code for a legal entity",
        parameters=[_ENTITY, OpenApiParameter("code", str, required=True, description="Billing's or the ERP's code.")],
        responses={200: _VERDICT, 400: _ERROR, 404: _ERROR, 422: _ERROR, 503: _ERROR},
    )
    def get(self, request: Request) -> Response:
        values = _required(request, "legal_entity", "code")
        return values if isinstance(values, Response) else _answer(services.verify_tax_code, *values)


urlpatterns = [
    path("validation/customers/", CustomerCheckView.as_view(), name="validate-customer"),
    path("validation/dimensions/", DimensionLookupView.as_view(), name="lookup-dimension"),
    path("validation/tax-codes/", TaxCodeCheckView.as_view(), name="verify-tax-code"),
]
