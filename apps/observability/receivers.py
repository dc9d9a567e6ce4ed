"""Signal receivers: the synthetic run closes in the transaction that settles its posting, and a
Celery pool process that exits drops its live gauge files from the multiprocess directory."""

from __future__ import annotations

import os
from typing import Any

from celery.signals import worker_process_shutdown
from django.dispatch import receiver
from prometheus_client import multiprocess

from apps.observability import synthetic
from apps.posting.models import Posting
from apps.posting.signals import needs_attention, settled


@receiver(settled, sender=Posting)
def _posting_settled(sender: type, posting: Posting, **_: Any) -> None:
    synthetic.finish_for(posting)


@receiver(needs_attention, sender=Posting)
def _posting_needs_attention(sender: type, posting: Posting, **_: Any) -> None:
    synthetic.finish_for(posting)


@worker_process_shutdown.connect
def _pool_process_exits(**_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())
