"""The benchmark's no-op task (settings_bench only): the ceiling of a Celery worker with the hub's
reliability settings (acks_late, prefetch 1, JSON, reject on worker lost), nothing else."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="bench.noop")
def noop(n: int) -> None:
    return None
