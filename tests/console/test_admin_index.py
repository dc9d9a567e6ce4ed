"""The admin index's Operations box: the control tower, Flower where it runs, readiness."""

from __future__ import annotations

from typing import Any

import pytest

from tests.console.conftest import as_user


def test_engineers_reach_flower_and_the_control_tower_from_the_admin_index(
    engineer: Any, settings: pytest.FixtureRequest
) -> None:
    settings.HUB_FLOWER_URL = "http://flower.internal:5555/flower/"  # type: ignore[attr-defined]
    page = as_user(engineer).get("/admin/").content.decode()
    assert 'id="link-flower" href="http://flower.internal:5555/flower/"' in page
    assert 'id="link-control-tower" href="/admin/console/controltower/"' in page


def test_without_a_flower_url_there_is_no_dead_link(finance: Any, settings: pytest.FixtureRequest) -> None:
    settings.HUB_FLOWER_URL = ""  # type: ignore[attr-defined]
    page = as_user(finance).get("/admin/").content.decode()
    assert "link-flower" not in page and "link-control-tower" in page
