"""Settings for the benchmark harness (bench/run.py) only: the production settings plus two ceiling
views (a bare 200 and an insert-only webhook) and a no-op Celery task, so the hub's figures are
measured next to what the same server and workers can do at best. Never deploy with these."""

from integration_hub.settings import *  # noqa: F403

ROOT_URLCONF = "integration_hub.urls_bench"
CELERY_IMPORTS = ("integration_hub.bench_tasks",)
