from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.core.correlation import HEADER, correlation_scope, is_valid, new_correlation_id, set_from_caller


class CorrelationIdMiddleware:
    """Adopt the caller's correlation id when it is sane, otherwise mint one; echo it back.

    A view may answer under another id (the webhook view traces an event under the billing event
    id when the caller sent none): its header is kept."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        supplied = is_valid(incoming)
        value = incoming if supplied else new_correlation_id()
        request.correlation_id = value  # type: ignore[attr-defined]
        set_from_caller(supplied)
        try:
            with correlation_scope(value):
                response = self.get_response(request)
        finally:
            set_from_caller(False)
        if not response.has_header(HEADER):
            response[HEADER] = value
        return response
