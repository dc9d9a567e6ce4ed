from __future__ import annotations

import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from apps.core.correlation import HEADER, correlation_scope, new_correlation_id

_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


class CorrelationIdMiddleware:
    """Adopt the caller's correlation id when it is sane, otherwise mint one; echo it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        incoming = request.headers.get(HEADER, "")
        value = incoming if _VALID.match(incoming) else new_correlation_id()
        request.correlation_id = value  # type: ignore[attr-defined]
        with correlation_scope(value):
            response = self.get_response(request)
        response[HEADER] = value
        return response
