"""Hand postings to Celery after the rows are committed, never before.

A broker that is down must not fail the transaction that planned the work: the row is safe in
the database and ``sweep_postings`` enqueues it once the broker is back.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction
from django.utils import timezone

from apps.core.correlation import TASK_HEADER, get_correlation_id
from apps.posting.models import Posting

log = logging.getLogger(__name__)

EXECUTE_TASK = "posting.execute"


def send_execute(posting_id: int, *, correlation_id: str = "", countdown: float | None = None) -> bool:
    try:
        current_app.send_task(
            EXECUTE_TASK,
            args=[posting_id],
            countdown=countdown,
            headers={TASK_HEADER: correlation_id or get_correlation_id()},
        )
    except Exception:  # noqa: BLE001 - any broker failure; the sweeper recovers
        log.warning("broker unavailable; posting stays queued for the sweeper", extra={"posting_id": posting_id})
        return False
    Posting.objects.filter(pk=posting_id).update(enqueued_at=timezone.now())
    return True


def enqueue_on_commit(posting: Posting, *, countdown: float | None = None) -> None:
    posting_id, correlation_id = posting.pk, posting.correlation_id
    transaction.on_commit(lambda: send_execute(posting_id, correlation_id=correlation_id, countdown=countdown))
