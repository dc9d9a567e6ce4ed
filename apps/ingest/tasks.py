from __future__ import annotations

from celery import shared_task

from apps.ingest import services


@shared_task(name="ingest.normalize_event", ignore_result=True)
def normalize_event(inbox_event_id: int) -> str:
    return services.normalize_event(inbox_event_id)


@shared_task(name="ingest.sweep_inbox", ignore_result=True)
def sweep_inbox() -> int:
    return services.sweep_inbox()
