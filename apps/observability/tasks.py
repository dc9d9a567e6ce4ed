from __future__ import annotations

from celery import shared_task

from apps.observability import synthetic


@shared_task(name="observability.run_synthetic", ignore_result=True)
def run_synthetic() -> str:
    return synthetic.run_scheduled()
