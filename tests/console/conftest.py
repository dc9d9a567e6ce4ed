from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from apps.console.catalogue import AUDITORS, ENGINEERS, FINANCE
from apps.console.models import ExceptionCase
from apps.ingest.models import InboxEvent
from apps.ingest.services import normalize_event
from apps.sources import stripe_samples as se
from tests.conftest import deliver


def user_in(role: str, username: str, email: str = "") -> Any:
    user = get_user_model().objects.create_user(username, email or f"{username}@example.com", "pw", is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def finance(db: None) -> Any:
    return user_in(FINANCE, "fiona.finance")


@pytest.fixture
def engineer(db: None) -> Any:
    return user_in(ENGINEERS, "ian.engineer")


@pytest.fixture
def auditor(db: None) -> Any:
    return user_in(AUDITORS, "alice.auditor")


def as_user(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def mismatched_invoice(client: Client, customer_name: str = "Initech LLC") -> tuple[dict[str, Any], InboxEvent]:
    """An invoice whose total is not lines + tax: the planner parks it at once, no ERP needed."""
    obj = se.invoice(se.uid("cus"), [se.line(4900, description="Pro plan (monthly)")], customer_name=customer_name)
    obj["total"] += 100
    event = se.event("invoice.finalized", obj)
    assert deliver(client, event).status_code == 200
    stored = InboxEvent.objects.get(event_id=event["id"])
    normalize_event(stored.pk)
    return obj, stored


@pytest.fixture
def case(configured: None, client: Client) -> ExceptionCase:
    obj, _ = mismatched_invoice(client)
    return ExceptionCase.objects.get(source_id=obj["id"])
