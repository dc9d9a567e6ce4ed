from __future__ import annotations

from celery import shared_task

from apps.reconciliation import services


# A run reads every document of a month from three places: longer than the default time limit.
@shared_task(name=services.RUN_TASK, ignore_result=True, time_limit=3600, soft_time_limit=3500)
def run_reconciliation(run_id: int) -> str:
    return services.execute_run(run_id).status


@shared_task(name="reconciliation.run_scheduled", ignore_result=True)
def run_scheduled() -> list[int]:
    return services.start_scheduled()
