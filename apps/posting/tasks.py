from __future__ import annotations

from celery import shared_task

from apps.posting import executor, services


@shared_task(name="posting.execute", ignore_result=True)
def execute_posting(posting_id: int) -> str:
    """Retries live in the database (state, retry_at), not in Celery: this task never raises to
    be retried, so a redelivered message can only find the row already handled."""
    return executor.execute_posting(posting_id)


@shared_task(name="posting.sweep_postings", ignore_result=True)
def sweep_postings() -> dict[str, int]:
    return services.sweep_postings()
