import os
import time

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")

app = Celery("integration_hub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


from celery.signals import before_task_publish, task_postrun, task_prerun  # noqa: E402

from apps.core.broker import SENT_AT_HEADER  # noqa: E402
from apps.core.correlation import TASK_HEADER, get_correlation_id, new_correlation_id, set_correlation_id  # noqa: E402


@before_task_publish.connect
def _carry_correlation_id(headers: dict | None = None, **_: object) -> None:
    if headers is not None:
        if not headers.get(TASK_HEADER):
            headers[TASK_HEADER] = get_correlation_id()
        # When the message was sent: the sweepers read it off the oldest waiting message to tell a
        # message merely queued behind a backlog from one that was consumed and lost.
        headers[SENT_AT_HEADER] = time.time()


@task_prerun.connect
def _adopt_correlation_id(task: object = None, **_: object) -> None:
    request = getattr(task, "request", None)
    # Our own header: Celery sets request.correlation_id to the task id.
    set_correlation_id(str(getattr(request, TASK_HEADER, "") or new_correlation_id()))


@task_postrun.connect
def _drop_correlation_id(**_: object) -> None:
    set_correlation_id("")
