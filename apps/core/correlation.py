"""The correlation id of the work in hand, carried from the webhook to every log line, row and task."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

_correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")

HEADER = "X-Correlation-ID"


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def get_correlation_id() -> str:
    return _correlation_id.get()


def set_correlation_id(value: str) -> None:
    _correlation_id.set(value)


@contextlib.contextmanager
def correlation_scope(value: str) -> Iterator[str]:
    token = _correlation_id.set(value)
    try:
        yield value
    finally:
        _correlation_id.reset(token)
