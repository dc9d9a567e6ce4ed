from collections.abc import Iterator

import pytest

from apps.validation import api, services


@pytest.fixture(autouse=True)
def fresh_routes() -> Iterator[None]:
    """Each test's database has its own rows: no route memo carries over from another test."""
    services.forget_routes()
    api.forget_permissions()
    yield
    services.forget_routes()
    api.forget_permissions()
