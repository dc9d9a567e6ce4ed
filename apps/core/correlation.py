"""The correlation id of the work in hand, carried from the webhook to every log line, row and task.

Where it comes from: the caller's ``X-Correlation-ID`` header when it sent a sane one; otherwise,
for a billing event, the event's own id (so the Stripe ``evt_...`` finance sees in the Stripe
dashboard finds the hub's whole trail); otherwise a fresh one. It rides on the inbox event, the
ledger documents, postings, attempts, cases and audit entries, in a Celery task header
(``TASK_HEADER``), and in ``HEADER`` on the requests the hub sends to ERPs that take one.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar

_correlation_id: ContextVar[str] = ContextVar("correlation_id", default="")
_from_caller: ContextVar[bool] = ContextVar("correlation_id_from_caller", default=False)

HEADER = "X-Correlation-ID"
# Not "correlation_id": Celery fills the request's correlation_id from the message property of that
# name (the task id), which would hide ours on the worker side.
TASK_HEADER = "hub_correlation_id"
_VALID = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def is_valid(value: str) -> bool:
    return bool(_VALID.match(value or ""))


def get_correlation_id() -> str:
    return _correlation_id.get()


def set_correlation_id(value: str) -> None:
    _correlation_id.set(value)


def set_from_caller(value: bool) -> None:
    """The request carried its own correlation id (the middleware says so)."""
    _from_caller.set(value)


def for_event(event_id: str) -> str:
    """The id an incoming billing event is traced under: the caller's, else the event id itself
    when it fits the id alphabet, else the one minted for the request."""
    if _from_caller.get() and get_correlation_id():
        return get_correlation_id()
    if is_valid(event_id):
        return event_id
    return get_correlation_id() or new_correlation_id()


def outbound_headers() -> dict[str, str]:
    """The header to add to a request sent to an ERP or a billing engine (empty outside any work)."""
    value = get_correlation_id()
    return {HEADER: value} if value and value != "-" else {}


@contextlib.contextmanager
def correlation_scope(value: str) -> Iterator[str]:
    token = _correlation_id.set(value)
    try:
        yield value
    finally:
        _correlation_id.reset(token)
