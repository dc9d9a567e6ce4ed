"""The webhook view reads its billing source at most every few seconds per process; a change saved
in this process is seen by the next webhook at once."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.sources import stripe_samples as se
from apps.sources.models import BillingSource
from tests.conftest import SOURCE, deliver


def invoice_event() -> dict[str, Any]:
    return se.event("invoice.finalized", se.invoice(se.uid("cus"), [se.line(4900)]))


def test_a_source_deactivated_here_refuses_the_next_webhook(client: Client, configured: None) -> None:
    assert deliver(client, invoice_event()).status_code == 200
    source = BillingSource.objects.get(name=SOURCE)
    source.active = False
    source.save()

    refused = deliver(client, invoice_event())
    assert refused.status_code == 404
    assert "No active billing source" in refused.json()["error"]

    source.active = True
    source.save()
    assert deliver(client, invoice_event()).status_code == 200


def test_a_new_webhook_secret_saved_here_is_required_by_the_next_webhook(
    client: Client, configured: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert deliver(client, invoice_event()).status_code == 200
    monkeypatch.setenv("HUB_TEST_ROTATED_SECRET", "whsec_rotated")
    source = BillingSource.objects.get(name=SOURCE)
    source.webhook_secrets = ["env:HUB_TEST_ROTATED_SECRET"]
    source.save()

    assert deliver(client, invoice_event()).status_code == 400  # the old secret no longer verifies
    assert deliver(client, invoice_event(), secret="whsec_rotated").status_code == 200
