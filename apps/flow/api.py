"""The flow-control API, version 1: read each ERP connection's flow state, pause and resume it,
close its circuit, and plan or cancel maintenance windows, from scripts as well as from the admin.

Views are thin: the changes are made (and audited) by ``apps/flow/services.py``; the two that have
no service of their own yet (creating and deleting a maintenance window) are audited here, in the
transaction that makes them. Authentication is a DRF token (``Authorization: Token <key>``, made
with ``manage.py drf_create_token <user>``) or the admin's session; each method needs the Django
permission the admin would need for the same change (see ``apps/console/roles.py``). Every error
answers JSON with a readable ``detail``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import transaction
from django.db.models import Count
from django.urls import path, reverse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from apps.flow import services
from apps.flow.models import CircuitState, MaintenanceWindow
from apps.flow.serializers import ConnectionFlowSerializer, MaintenanceWindowSerializer, ReasonSerializer
from apps.posting.models import Posting, PostingState
from apps.routing.models import ERPConnection

VIEW_FLOW = "flow.view_connectionflow"
CHANGE_FLOW = "flow.change_connectionflow"
VIEW_WINDOW = "flow.view_maintenancewindow"
ADD_WINDOW = "flow.add_maintenancewindow"
DELETE_WINDOW = "flow.delete_maintenancewindow"
READ_METHODS = ("GET", "HEAD", "OPTIONS")


class HasMethodPermission(BasePermission):
    """The Django permission the view names for the request's method (``view.permissions``, keyed
    by method; GET covers HEAD and OPTIONS). Anonymous callers get 401, others without it 403."""

    message = "You do not have permission to perform this action."

    def has_permission(self, request: Request, view: APIView) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False
        method = "GET" if request.method in READ_METHODS else request.method
        needed = getattr(view, "permissions", {}).get(method)
        if needed is None:
            return False
        if request.user.has_perm(needed):
            return True
        self.message = f"Your account lacks the permission {needed} that this request needs."
        return False


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's handler, plus a readable ``detail`` for validation errors (the field errors stay
    under ``errors``)."""
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.ValidationError):
        return response
    errors = response.data
    response.data = {"detail": _first_message(errors), "errors": errors}
    return response


def _first_message(errors: Any, field: str = "") -> str:
    if isinstance(errors, dict):
        for key, value in errors.items():
            return _first_message(value, "" if key == "non_field_errors" else key)
        return "Invalid request."
    if isinstance(errors, list):
        return _first_message(errors[0], field) if errors else "Invalid request."
    message = str(errors)
    return message if not field or message.startswith(field) else f"{field}: {message}"


class FlowAPIView(APIView):
    permission_classes = [HasMethodPermission]
    permissions: dict[str, str] = {}

    def get_exception_handler(self) -> Any:
        return exception_handler

    def actor(self) -> str:
        return self.request.user.get_username()


def connection_named(name: str) -> ERPConnection:
    connection = ERPConnection.objects.filter(name=name).first()
    if connection is None:
        raise exceptions.NotFound(f"No ERP connection is named {name!r}.")
    return connection


def flow_state(connections: Iterable[ERPConnection]) -> list[dict[str, Any]]:
    """The flow state of each connection, with its current and upcoming maintenance windows and
    the postings held for it (one query each for the windows and the held postings of them all)."""
    connections = list(connections)
    flows = [services.flow_for(connection) for connection in connections]
    for flow, connection in zip(flows, connections, strict=True):
        flow.connection = connection
    by_id = {connection.pk: connection for connection in connections}
    ids = list(by_id)
    now = timezone.now()
    windows: dict[int, list[MaintenanceWindow]] = defaultdict(list)
    for window in MaintenanceWindow.objects.filter(connection_id__in=ids, ends_at__gt=now).order_by("starts_at", "pk"):
        window.connection = by_id[window.connection_id]
        windows[window.connection_id].append(window)
    held: dict[int, dict[str, int]] = defaultdict(dict)
    for row in (
        Posting.objects.filter(
            connection_id__in=ids, state=PostingState.RETRY_SCHEDULED, error_code__in=services.HOLD_CODES
        )
        .values("connection_id", "error_code")
        .annotate(count=Count("pk"))
    ):
        held[row["connection_id"]][row["error_code"]] = row["count"]
    context = {"now": now, "windows": windows, "held": held}
    return ConnectionFlowSerializer(flows, many=True, context=context).data


def one_state(connection: ERPConnection) -> dict[str, Any]:
    return flow_state([connection])[0]


def reason_from(request: Request, required_message: str = "") -> str:
    body = ReasonSerializer(data=request.data or {}, required_message=required_message)
    body.is_valid(raise_exception=True)
    return body.validated_data["reason"]


Released = inline_serializer(
    "ReleasedConnection",
    {
        "released": serializers.IntegerField(help_text="Held postings made due again, oldest first."),
        "connection": ConnectionFlowSerializer(),
    },
)


class ConnectionList(FlowAPIView):
    permissions = {"GET": VIEW_FLOW}

    @extend_schema(responses=ConnectionFlowSerializer(many=True), summary="Every ERP connection's flow state")
    def get(self, request: Request) -> Response:
        return Response(flow_state(ERPConnection.objects.order_by("name")))


class ConnectionDetail(FlowAPIView):
    permissions = {"GET": VIEW_FLOW}

    @extend_schema(responses=ConnectionFlowSerializer, summary="One ERP connection's flow state")
    def get(self, request: Request, name: str) -> Response:
        return Response(one_state(connection_named(name)))


class PauseConnection(FlowAPIView):
    permissions = {"POST": CHANGE_FLOW}

    @extend_schema(
        request=ReasonSerializer,
        responses=inline_serializer("PausedConnection", {"connection": ConnectionFlowSerializer()}),
        summary="Pause postings to the connection (reason required)",
        description="Events keep arriving and normalizing; postings wait, without using attempts, until resumed.",
    )
    def post(self, request: Request, name: str) -> Response:
        connection = connection_named(name)
        reason = reason_from(
            request, f'A reason is required to pause {connection.name}, e.g. {{"reason": "ERP upgrade tonight"}}.'
        )
        services.pause(connection, actor=self.actor(), reason=reason)
        return Response({"connection": one_state(connection)})


class ResumeConnection(FlowAPIView):
    permissions = {"POST": CHANGE_FLOW}

    @extend_schema(
        request=ReasonSerializer,
        responses=Released,
        summary="Resume postings to the connection (reason optional)",
        description="Postings held by the pause become due again, oldest first; parents still go before children.",
    )
    def post(self, request: Request, name: str) -> Response:
        connection = connection_named(name)
        released = services.resume(connection, actor=self.actor(), reason=reason_from(request))
        return Response({"released": released, "connection": one_state(connection)})


class CloseCircuit(FlowAPIView):
    permissions = {"POST": CHANGE_FLOW}

    @extend_schema(
        request=ReasonSerializer,
        responses={200: Released, 409: inline_serializer("AlreadyClosed", {"detail": serializers.CharField()})},
        summary="Close the circuit once the cause is fixed (reason required)",
    )
    def post(self, request: Request, name: str) -> Response:
        connection = connection_named(name)
        reason = reason_from(
            request,
            f"A reason is required to close the circuit of {connection.name}: say what was fixed, "
            'e.g. {"reason": "new API credentials"}.',
        )
        if services.flow_for(connection).circuit_state == CircuitState.CLOSED:
            return Response(
                {"detail": f"The circuit of {connection.name} is already closed: the hub is calling it."},
                status=status.HTTP_409_CONFLICT,
            )
        released = services.close_circuit(connection, actor=self.actor(), reason=reason)
        return Response({"released": released, "connection": one_state(connection)})


class MaintenanceWindows(FlowAPIView):
    permissions = {"GET": VIEW_WINDOW, "POST": ADD_WINDOW}

    @extend_schema(
        parameters=[OpenApiParameter("past", bool, description="Include windows that have ended.")],
        responses=MaintenanceWindowSerializer(many=True),
        summary="The connection's current and upcoming maintenance windows",
    )
    def get(self, request: Request, name: str) -> Response:
        connection = connection_named(name)
        windows = MaintenanceWindow.objects.filter(connection=connection).select_related("connection")
        if request.query_params.get("past", "").lower() not in ("1", "true", "yes"):
            windows = windows.filter(ends_at__gt=timezone.now())
        return Response(MaintenanceWindowSerializer(windows.order_by("starts_at", "pk"), many=True).data)

    @extend_schema(
        request=MaintenanceWindowSerializer,
        responses={201: MaintenanceWindowSerializer},
        summary="Plan a maintenance window: postings to the connection wait while it lasts",
    )
    def post(self, request: Request, name: str) -> Response:
        connection = connection_named(name)
        body = MaintenanceWindowSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        with transaction.atomic():
            window = body.save(connection=connection, created_by=self.actor())
            services.window_planned(window, actor=self.actor())
        return Response(
            MaintenanceWindowSerializer(window).data,
            status=status.HTTP_201_CREATED,
            headers={"Location": reverse("flow-maintenance-window", args=[window.pk])},
        )


class MaintenanceWindowDetail(FlowAPIView):
    permissions = {"GET": VIEW_WINDOW, "DELETE": DELETE_WINDOW}

    def window(self, pk: int, *, lock: bool = False) -> MaintenanceWindow:
        windows = MaintenanceWindow.objects.select_related("connection")
        if lock:
            windows = windows.select_for_update(of=("self",))
        window = windows.filter(pk=pk).first()
        if window is None:
            raise exceptions.NotFound(f"No maintenance window has the id {pk}.")
        return window

    @extend_schema(responses=MaintenanceWindowSerializer, summary="One maintenance window")
    def get(self, request: Request, pk: int) -> Response:
        return Response(MaintenanceWindowSerializer(self.window(pk)).data)

    @extend_schema(
        request=ReasonSerializer,
        responses=inline_serializer(
            "DeletedWindow",
            {
                "released": serializers.IntegerField(help_text="Held postings made due again, oldest first."),
                "deleted": MaintenanceWindowSerializer(),
            },
        ),
        summary="Cancel a window, or end it early: postings it held become due again",
    )
    def delete(self, request: Request, pk: int) -> Response:
        reason = reason_from(request) or request.query_params.get("reason", "").strip()
        with transaction.atomic():
            window = self.window(pk, lock=True)  # two deletes at once: the second one finds nothing
            deleted = MaintenanceWindowSerializer(window).data
            released = services.cancel_window(window, actor=self.actor(), reason=reason)
        return Response({"released": released, "deleted": deleted})


urlpatterns = [
    path("connections/", ConnectionList.as_view(), name="flow-connections"),
    path("connections/<slug:name>/", ConnectionDetail.as_view(), name="flow-connection"),
    path("connections/<slug:name>/pause/", PauseConnection.as_view(), name="flow-pause"),
    path("connections/<slug:name>/resume/", ResumeConnection.as_view(), name="flow-resume"),
    path("connections/<slug:name>/close-circuit/", CloseCircuit.as_view(), name="flow-close-circuit"),
    path("connections/<slug:name>/maintenance-windows/", MaintenanceWindows.as_view(), name="flow-maintenance-windows"),
    path("maintenance-windows/<int:pk>/", MaintenanceWindowDetail.as_view(), name="flow-maintenance-window"),
]
