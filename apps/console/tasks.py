from __future__ import annotations

from celery import shared_task

from apps.console import notifications


@shared_task(name="console.send_digest")
def send_digest() -> int:
    return notifications.send_digest()
