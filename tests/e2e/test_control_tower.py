"""The control tower in a real browser: headless Chromium against Django's live server, with a
month of postings, attempts, billing events and exception cases seeded at chosen times. A finance
user opens it from the admin index and sees every chart drawn by the vendored Chart.js from the
seeded numbers, the SLA breaches of one connection in red, and the month and one-connection views.

The screenshots go to ``<pytest tmp dir>/control-tower/`` (printed when the test runs).
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from apps.console import control_tower
from apps.console.catalogue import FINANCE
from apps.posting.models import Posting, PostingAttempt, PostingState
from apps.routing.models import ERPConnection
from tests.console.control_tower_data import Seed
from tests.console.test_control_tower import seed
from tests.e2e import test_console_browser
from tests.e2e.test_console_browser import PASSWORD, Console

pytestmark = [pytest.mark.e2e]
# The console test's headless Chromium, as the fixture "browser" here too.
chromium = test_console_browser.browser

RED = "#c62828"  # control_tower.js: a point that breaches the SLA
A_LATENCIES = [5.0 * k for k in range(1, 21)]  # erp-a, each past day: 20 posted, 5 s to 100 s
B_LATENCIES = [100.0 * k for k in range(1, 11)]  # erp-b, each past day: 10 posted, 100 s to 1000 s
SPREAD_DAYS = range(3, 30)  # days before today, at noon UTC (2 days ago holds one more erp-a posting)


def spread_over_the_month(connections: dict[str, ERPConnection], today: datetime) -> None:
    """Each past day at noon: erp-a posts 20 and parks 1; erp-b posts 10 and 3 die. Every posting
    has its attempts; the parked and dead ones have the failed attempts that ended them."""
    rows = Seed()
    for days in SPREAD_DAYS:
        noon = datetime.combine((today - timedelta(days=days)).date(), time(12), tzinfo=UTC)
        for latency in A_LATENCIES:
            rows.posted(connections["a"], latency=latency, posted_at=noon)
        rows.posting(connections["a"], PostingState.PARKED, created_at=noon - timedelta(minutes=1), updated_at=noon)
        for latency in B_LATENCIES:
            rows.posted(connections["b"], latency=latency, posted_at=noon)
        for _ in range(3):
            rows.posting(connections["b"], PostingState.DEAD, created_at=noon - timedelta(minutes=1), updated_at=noon)
    rows.save()
    attempts = []
    for posting in Posting.objects.filter(source_id__startswith="in_tower_doc_"):
        outcome = {
            PostingState.POSTED: PostingAttempt.Outcome.POSTED,
            PostingState.PARKED: PostingAttempt.Outcome.BUSINESS,
            PostingState.DEAD: PostingAttempt.Outcome.TRANSIENT,
        }.get(posting.state)
        if outcome is not None:
            finished = posting.posted_at or posting.updated_at
            attempts.append(
                PostingAttempt(
                    posting=posting,
                    number=1,
                    started_at=finished - timedelta(seconds=1),
                    finished_at=finished,
                    outcome=outcome,
                )
            )
    PostingAttempt.objects.bulk_create(attempts, batch_size=500)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 3)


def chart(driver: WebDriver, canvas_id: str) -> dict[str, Any]:
    """What Chart.js holds for one canvas, and how many of its pixels are painted."""
    return driver.execute_script(
        """
        const canvas = document.getElementById(arguments[0]);
        const instance = Chart.getChart(canvas);
        if (!instance) { return null; }
        const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
        let painted = 0;
        for (let i = 3; i < pixels.length; i += 4) { if (pixels[i] !== 0) { painted++; } }
        return {
            type: instance.config.type,
            labels: instance.data.labels,
            painted: painted,
            datasets: instance.data.datasets.map((d) => ({
                label: d.label,
                data: d.data,
                points: Array.isArray(d.pointBackgroundColor) ? d.pointBackgroundColor : [],
            })),
        };
        """,
        canvas_id,
    )


def dataset(drawn: dict[str, Any], label: str) -> dict[str, Any]:
    found = [d for d in drawn["datasets"] if d["label"] == label]
    assert found, f"no dataset {label!r} in {[d['label'] for d in drawn['datasets']]}"
    return found[0]


@pytest.fixture
def tower_screens(tmp_path: Path, capsys: Any) -> Path:
    folder = tmp_path / "control-tower"
    folder.mkdir()
    with capsys.disabled():
        print(f"\ncontrol tower screenshots: {folder}")
    return folder


def test_finance_sees_the_control_tower_charts_and_the_breaches_of_a_connection(
    transactional_db: None,
    live_server: Any,
    chromium: WebDriver,
    tower_screens: Path,
) -> None:
    now = timezone.now()
    connections = seed(now)
    spread_over_the_month(connections, now)
    user = get_user_model().objects.create_user("fiona.tower", "fiona.tower@example.com", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=FINANCE))
    browser = chromium
    console = Console(browser, live_server.url, tower_screens)

    console.open("/admin/login/")
    console.find(By.ID, "id_username", "the login form").send_keys("fiona.tower")
    console.find(By.ID, "id_password", "the password field").send_keys(PASSWORD)
    console.click(By.CSS_SELECTOR, "#login-form input[type=submit]", "the log-in button")
    console.click(By.CSS_SELECTOR, '#content-main a[href="/admin/console/controltower/"]', "the Control tower link")
    console.wait_until(
        lambda d: d.execute_script("return !!(window.controlTower && window.controlTower.charts.reconciliation)"),
        "the charts of the last day",
    )

    # The breaches of erp-b, in words and in red; erp-a and erp-c within their SLA.
    breaches = console.find(By.ID, "sla-breaches", "the SLA breaches")
    console.expect_text(
        breaches,
        "erp-b: 25.00% of postings succeeded in the last day (1 posted, 3 parked or dead)",
        "erp-b: 95% of documents were posted within 10 min of their billing event",
        "erp-b: 5 postings wait to be posted; the SLA allows at most 3.",
        "erp-b: the oldest open exception case has been open 3 days",
        what="the breaches",
    )
    if "erp-a:" in breaches.text or "erp-c:" in breaches.text:
        console.fail(f"a connection within its SLA is listed as breached:\n{breaches.text}")
    red_cells = browser.find_elements(By.CSS_SELECTOR, '#sla-table tr[data-connection="erp-b"] td.breach')
    if len(red_cells) != 4:
        console.fail(f"erp-b's row has {len(red_cells)} cells in red, not 4")
    if browser.find_elements(By.CSS_SELECTOR, '#sla-table tr[data-connection="erp-a"] td.breach'):
        console.fail("erp-a's row is in red")
    colour = red_cells[0].value_of_css_property("color")
    if colour not in ("rgba(176, 0, 32, 1)", "rgb(176, 0, 32)"):
        console.fail(f"a breached cell is drawn in {colour}, not red")

    # Every chart is drawn, from the server's numbers.
    embedded = browser.execute_script("return JSON.parse(document.getElementById('control-tower-data').textContent)")
    for canvas in ("chart-success", "chart-latency", "chart-backlog", "chart-aging", "chart-reconciliation"):
        drawn = chart(browser, canvas)
        if drawn is None or drawn["painted"] < 500 or len(drawn["labels"]) != 24:
            console.fail(f"{canvas} is not drawn over 24 hours: {drawn and {k: drawn[k] for k in ('type', 'painted')}}")
    backlog = chart(browser, "chart-backlog")
    b_backlog = dataset(backlog, "erp-b")
    assert b_backlog["data"] == embedded["backlog"][1]["data"]
    assert b_backlog["data"][-1] == 5 and b_backlog["points"][-1] == RED  # 5 waiting, the SLA allows 3
    assert dataset(backlog, "erp-a")["data"][-1] == 0
    success = chart(browser, "chart-success")
    for name, minimum in (("erp-a", 80), ("erp-b", 90)):
        drawn = dataset(success, name)
        assert drawn["data"] == next(d["data"] for d in embedded["success"] if d["label"] == name)
        for rate, point in zip(drawn["data"], drawn["points"], strict=True):
            assert (point == RED) == (rate is not None and rate < minimum), (name, rate, point)
    assert RED in dataset(success, "erp-b")["points"]  # its 25% (or 0%, if an hour began in between)
    aging = chart(browser, "chart-aging")
    assert sum(d["data"][-1] for d in aging["datasets"]) == 2  # the two cases open now
    assert [d["label"] for d in aging["datasets"]] == [a.label for a in control_tower.AGE_BUCKETS]
    assert chart(browser, "chart-reconciliation")["datasets"][0]["data"] == [0] * 24
    console.expect_text(
        console.find(By.ID, "reconciliation-note", "the reconciliation note"),
        "latest completed reconciliation run",
        what="the note",
    )
    day_shot = console.shot("01-control-tower-day", full_page=True)

    # The month: each past day's seeded rates and latency percentiles, exactly.
    console.click(By.CSS_SELECTOR, "#tower-windows a[data-window=month]", "the 'Last month' link")
    console.wait_until(lambda d: "window=month" in d.current_url, "the month in the URL")
    console.wait_until(
        lambda d: d.execute_script("return !!(window.controlTower && window.controlTower.data.window === 'month')"),
        "the charts of the month",
    )
    success = chart(browser, "chart-success")
    latency = chart(browser, "chart-latency")
    assert len(success["labels"]) == 30
    both = A_LATENCIES + B_LATENCIES
    for days in SPREAD_DAYS:
        index = 29 - days
        assert dataset(success, "erp-a")["data"][index] == 95.24  # 20 ÷ 21
        assert dataset(success, "erp-b")["data"][index] == 76.92  # 10 ÷ 13, below erp-b's 90%
        assert dataset(success, "erp-b")["points"][index] == RED
        assert dataset(success, "erp-a")["points"][index] != RED
        for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            assert dataset(latency, name)["data"][index] == percentile(both, fraction), (name, days)
    assert (dataset(latency, "p50")["data"][26], dataset(latency, "p95")["data"][26]) == (77.5, 855.0)
    month_shot = console.shot("02-control-tower-month", full_page=True)

    # One connection: its SLA lines drawn, its p95 above the limit in red.
    Select(console.find(By.ID, "connection-select", "the connection choice")).select_by_visible_text("erp-b")
    console.wait_until(lambda d: "connection=erp-b" in d.current_url, "erp-b in the URL")
    console.wait_until(
        lambda d: d.execute_script(
            "return document.getElementById('connection-select').value === 'erp-b'"
            " && !!(window.controlTower && window.controlTower.charts.latency)"
        ),
        "the charts of erp-b",
    )
    latency = chart(browser, "chart-latency")
    limit = dataset(latency, "SLA p95 limit")
    assert set(limit["data"]) == {300}
    p95 = dataset(latency, "p95")
    assert p95["data"][29 - SPREAD_DAYS[0]] == percentile(B_LATENCIES, 0.95) == 955.0
    assert p95["points"][29 - SPREAD_DAYS[0]] == RED
    assert set(dataset(chart(browser, "chart-success"), "SLA minimum")["data"]) == {90}
    one_shot = console.shot("03-control-tower-erp-b", full_page=True)

    for shot in (day_shot, month_shot, one_shot):
        assert shot.stat().st_size > 20_000, f"{shot} looks empty"
    print(f"control tower screenshots: {day_shot}, {month_shot}, {one_shot}")
