from __future__ import annotations

from celery import shared_task

from apps.validation import services


@shared_task(name="validation.refresh_reference_data", ignore_result=True)
def refresh_reference_data() -> dict[str, str]:
    return services.refresh_all()
