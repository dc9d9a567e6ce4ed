"""Rotated credentials are kept for every worker process: QuickBooks rotates its refresh token, and
a second process that started from the connection's settings must not be left with a dead one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from apps.connectors.quickbooks import REFRESH_TOKEN, QuickBooksConnector
from apps.core.errors import AuthenticationError
from apps.routing.models import ConnectionToken, ERPConnection
from apps.routing.tokens import DatabaseTokenStore
from tests.connectors.test_quickbooks import customer
from tests.quickbooks_simulator import INITIAL_REFRESH_TOKEN, QuickBooksSimulator

pytestmark = pytest.mark.django_db


@pytest.fixture
def qbo() -> Iterator[QuickBooksSimulator]:
    simulator = QuickBooksSimulator()
    yield simulator
    simulator.stop()


def worker_process(qbo: QuickBooksSimulator, connection: ERPConnection | None) -> QuickBooksConnector:
    """A connector as one worker process builds it, with the connection's store when it has one."""
    connector = QuickBooksConnector(qbo.connector_settings())
    if connection is not None:
        connector.token_store = DatabaseTokenStore(connection.pk)
    return connector


def test_a_token_one_process_rotates_is_used_by_the_others(qbo: QuickBooksSimulator) -> None:
    connection = ERPConnection.objects.create(name="qbo", kind="quickbooks", settings={})
    first, second = worker_process(qbo, connection), worker_process(qbo, connection)
    qbo.rotate_refresh_token_on_next_refresh()
    customer(first)  # the first process refreshes; Intuit rotates; the old token stops working
    assert qbo.refresh_token != INITIAL_REFRESH_TOKEN

    customer(second, "Initech")  # the second process started from the settings' (now dead) token
    used = [r.body["refresh_token"] for r in qbo.requests if r.entity == "token"]
    assert used == [INITIAL_REFRESH_TOKEN, qbo.refresh_token]  # it read the rotated one from the store
    stored = ConnectionToken.objects.get(connection=connection, name=REFRESH_TOKEN)
    assert qbo.refresh_token not in stored.encrypted  # kept encrypted
    assert DatabaseTokenStore(connection.pk).load(REFRESH_TOKEN) == qbo.refresh_token


def test_without_the_store_the_second_process_is_refused(qbo: QuickBooksSimulator) -> None:
    first, second = worker_process(qbo, None), worker_process(qbo, None)
    qbo.rotate_refresh_token_on_next_refresh()
    customer(first)
    with pytest.raises(AuthenticationError):
        customer(second, "Initech")
