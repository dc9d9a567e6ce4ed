from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from apps.sources import stripe_samples as stripe_events

pytest_plugins = ["tests.tryton_plugin"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = ROOT / "config" / "hub.example.yaml"
SOURCE = "stripe-us"
SECRET = os.environ["STRIPE_WEBHOOK_SECRET"]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 90, interval: float = 0.3, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def deliver(
    client: Client,
    event: dict[str, Any],
    *,
    secret: str = SECRET,
    source: str = SOURCE,
    timestamp: int | None = None,
    body: bytes | None = None,
) -> Any:
    body = body if body is not None else json.dumps(event).encode()
    return client.post(
        f"/webhooks/{source}/",
        data=body,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=stripe_events.sign(body, secret, timestamp),
    )


@pytest.fixture
def tryton_env(tryton_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("TRYTON_URL", tryton_server.url)
    monkeypatch.setenv("TRYTON_DATABASE", tryton_server.database)
    monkeypatch.setenv("TRYTON_PASSWORD", tryton_server.password)
    return tryton_server


@pytest.fixture
def hub(transactional_db: None, tryton_env: Any) -> Any:
    """The example configuration applied, pointing at the test Tryton."""
    from apps.console import hub_config

    hub_config.apply(hub_config.load(EXAMPLE_CONFIG))
    return tryton_env


@pytest.fixture
def configured(db: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example configuration in a rolled-back test transaction, without any ERP behind it."""
    from apps.console import hub_config

    monkeypatch.setenv("TRYTON_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("TRYTON_DATABASE", "none")
    monkeypatch.setenv("TRYTON_PASSWORD", "none")
    hub_config.apply(hub_config.load(EXAMPLE_CONFIG))


def _test_database_url() -> str:
    db = settings.DATABASES["default"]
    return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def worker_queues(base: str) -> tuple[str, str]:
    """The ingest and posting queues a hub worker reads (see CELERY_TASK_QUEUES)."""
    return base, f"{base}.posting"


class WorkerProcess:
    def __init__(self, log_path: Path, env: dict[str, str], extra_args: list[str] | None = None) -> None:
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "integration_hub",
                "worker",
                "-l",
                "info",
                "-c",
                "2",
                "-Q",
                ",".join(worker_queues(env.get("HUB_TEST_QUEUE") or os.environ["HUB_TEST_QUEUE"])),
                "-n",
                f"hub-test-{os.getpid()}-{time.monotonic_ns()}@%h",
                "--without-gossip",
                "--without-mingle",
                *(extra_args or []),
            ],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a test can kill it with its children
        )
        wait_for(
            lambda: "ready." in log_path.read_text() or self.process.poll() is not None,
            timeout=60,
            what="the Celery worker to start",
        )
        if self.process.poll() is not None:
            raise RuntimeError(f"Celery worker exited:\n{log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children at once, as an OOM killer or a lost host would."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.log.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def process_env(tryton_server: Any, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="integration_hub.settings_test",
        DATABASE_URL=_test_database_url(),
        TRYTON_URL=tryton_server.url,
        TRYTON_DATABASE=tryton_server.database,
        TRYTON_PASSWORD=tryton_server.password,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


@pytest.fixture(scope="session")
def celery_worker_process(
    django_db_setup: None, tryton_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A real Celery worker process on the real Redis and the test PostgreSQL database."""
    worker = WorkerProcess(tmp_path_factory.mktemp("worker") / "worker.log", process_env(tryton_server))
    yield worker
    worker.stop()


@pytest.fixture
def worker(celery_worker_process: WorkerProcess, hub: Any) -> WorkerProcess:
    if celery_worker_process.process.poll() is not None:
        raise RuntimeError(f"Celery worker died:\n{celery_worker_process.log_path.read_text()[-3000:]}")
    return celery_worker_process
