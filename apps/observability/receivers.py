"""Signal receivers: the synthetic run closes in the transaction that settles its posting; a Celery
pool process that exits drops its live gauge files from the multiprocess directory; and a worker
on a host without the web serves its own counters on ``HUB_WORKER_METRICS_PORT``."""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready
from django.dispatch import receiver
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from apps.observability import synthetic
from apps.posting.models import Posting
from apps.posting.signals import needs_attention, settled

log = logging.getLogger(__name__)


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


@worker_ready.connect
def _serve_worker_metrics(**_: Any) -> None:
    """In the worker's main process: the counters of its pool processes (read from the multiprocess
    directory) on their own port, for a worker that does not share that directory with the web.
    The database gauges are the web's /metrics job; they are not repeated here."""
    port = os.environ.get("HUB_WORKER_METRICS_PORT", "")
    if not port:
        return
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        log.warning("HUB_WORKER_METRICS_PORT needs PROMETHEUS_MULTIPROC_DIR: pool processes count in their own memory")
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    address = os.environ.get("HUB_WORKER_METRICS_ADDR", "127.0.0.1")
    start_http_server(int(port), addr=address, registry=registry)
    log.info("worker metrics served", extra={"address": f"{address}:{port}"})
