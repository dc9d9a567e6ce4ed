"""gunicorn settings for /metrics in multi-process mode: ``gunicorn -c python:apps.observability.gunicorn_conf
integration_hub.wsgi`` with ``PROMETHEUS_MULTIPROC_DIR`` set to an empty directory shared with the
Celery workers of the same host (prometheus_client's documented gunicorn hook)."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
