"""The broker is down when a webhook arrives: the event is stored and answered 2xx, and once the
broker is back the beat-scheduled inbox sweeper brings it through to Tryton."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from typing import Any

import pytest
import requests

from apps.ingest.models import InboxEvent, InboxStatus
from apps.posting.models import Operation, Posting, PostingState
from apps.sources import stripe_samples as se
from tests.conftest import ROOT, SECRET, SOURCE, process_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(args: list[str], env: dict[str, str], log_path: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *args], cwd=ROOT, env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()


def test_event_received_while_the_broker_is_down_is_posted_once_it_is_back(
    hub: Any, tryton: Any, tmp_path: Any
) -> None:
    port = free_port()
    # The web process's broker points at a port where nothing listens: a broker that is down.
    web = start(
        ["manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        process_env(hub, CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0"),
        tmp_path / "web.log",
    )
    beat = None
    try:
        wait_for(lambda: _listening(port), timeout=30, what="the web process")
        obj = se.invoice(se.uid("cus"), [se.line(3300)])
        event = se.event("invoice.finalized", obj)
        body = json.dumps(event).encode()
        response = requests.post(
            f"http://127.0.0.1:{port}/webhooks/{SOURCE}/",
            data=body,
            timeout=60,
            headers={"Content-Type": "application/json", "Stripe-Signature": se.sign(body, SECRET)},
        )
        assert response.status_code == 200
        stored = InboxEvent.objects.get(event_id=event["id"])
        assert stored.status == InboxStatus.RECEIVED and stored.enqueued_at is None
        time.sleep(6)  # the sweeper leaves events younger than 5 s to the normal path
        assert InboxEvent.objects.get(pk=stored.pk).status == InboxStatus.RECEIVED

        # The broker is back: django-celery-beat runs the inbox sweeper, which re-enqueues it.
        beat = start(
            ["-m", "celery", "-A", "integration_hub", "beat", "-l", "info", "-s", str(tmp_path / "beat")],
            process_env(hub, HUB_SWEEP_SECONDS="1"),
            tmp_path / "beat.log",
        )
        posting = wait_for(
            lambda: Posting.objects.filter(
                operation=Operation.POST_INVOICE, source_id=obj["id"], state=PostingState.POSTED
            ).first(),
            timeout=120,
            what="the invoice to be posted after the broker came back",
        )
        [invoice] = tryton.invoices(f"{SOURCE}:{obj['id']}")
        assert posting.erp_id == str(invoice["id"]) and invoice["state"] == "posted"
        assert InboxEvent.objects.get(pk=stored.pk).status == InboxStatus.PROCESSED
    finally:
        stop(web)
        if beat is not None:
            stop(beat)


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
