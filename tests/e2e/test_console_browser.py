"""The finance console in a real browser: headless Chromium (Debian's package) driven by Selenium
through Debian's chromedriver, against Django's live server, a real Celery worker process and the
real Tryton. A finance user logs in, filters the open business cases, opens the one a wrong revenue
account caused, follows its timeline, corrects the mapping and reposts, and sees the case resolved.

Screenshots of each step go to ``<pytest basetemp>/console-screenshots/`` (printed when the test runs).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from apps.console.catalogue import FINANCE
from apps.console.models import CaseStatus, ExceptionCase
from apps.routing.models import Mapping
from apps.sources import stripe_samples as se
from tests.conftest import SOURCE, deliver, wait_for
from tests.e2e.test_stripe_to_tryton import new_invoice

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("worker")]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
WAIT = 15  # seconds for one page element to appear
PASSWORD = "Correct-horse-battery-42"


class Console:
    """The browser on the hub's admin console, with failures that show what the page held."""

    def __init__(self, driver: WebDriver, base_url: str, screenshots: Path) -> None:
        self.driver = driver
        self.base_url = base_url
        self.screenshots = screenshots
        self.saved: list[Path] = []

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def excerpt(self, limit: int = 4000) -> str:
        try:
            html = self.driver.execute_script(
                "const el = document.getElementById('content') || document.body; return el ? el.outerHTML : '';"
            )
        except WebDriverException as exc:
            html = f"(page source unavailable: {exc.msg})"
        html = html or self.driver.page_source
        if len(html) > limit:
            html = html[:limit] + f"\n… ({len(html) - limit} more characters)"
        return f"URL: {self.driver.current_url}\nTitle: {self.driver.title}\nPage source excerpt:\n{html}"

    def fail(self, message: str) -> None:
        name = f"failure-{len(self.saved) + 1:02d}"
        try:
            shot = self.shot(name)
            message += f"\nScreenshot: {shot}"
        except WebDriverException:
            pass
        pytest.fail(f"{message}\n{self.excerpt()}", pytrace=False)

    def find(self, by: str, selector: str, what: str, timeout: float = WAIT) -> WebElement:
        try:
            return WebDriverWait(self.driver, timeout).until(ec.visibility_of_element_located((by, selector)))
        except TimeoutException:
            self.fail(f"{what} ({by} {selector!r}) did not appear within {timeout}s")
            raise  # not reached: fail() raises

    def click(self, by: str, selector: str, what: str) -> None:
        element = self.find(by, selector, what)
        try:
            WebDriverWait(self.driver, WAIT).until(ec.element_to_be_clickable(element))
        except TimeoutException:
            self.fail(f"{what} ({by} {selector!r}) is shown but cannot be clicked")
        element.click()

    def expect_text(self, element: WebElement, *needles: str, what: str) -> str:
        text = element.text
        missing = [n for n in needles if n not in text]
        if missing:
            self.fail(f"{what} does not show {missing!r}; it shows:\n{text[:2000]}")
        return text

    def wait_until(self, condition: Callable[[WebDriver], Any], what: str, timeout: float = WAIT) -> Any:
        try:
            return WebDriverWait(self.driver, timeout).until(condition)
        except TimeoutException:
            self.fail(f"timed out after {timeout}s waiting for {what}")

    def shot(self, name: str, *, full_page: bool = False) -> Path:
        """A PNG of the window; ``full_page`` grows the window to the page's height for the picture."""
        path = self.screenshots / f"{name}.png"
        size = self.driver.get_window_size()
        if full_page:
            height = self.driver.execute_script("return document.documentElement.scrollHeight")
            self.driver.set_window_size(size["width"], min(max(int(height) + 150, size["height"]), 6000))
        try:
            assert self.driver.save_screenshot(str(path)), f"could not save the screenshot {path}"
        finally:
            if full_page:
                self.driver.set_window_size(size["width"], size["height"])
        self.saved.append(path)
        return path


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory, record_property: Any, capsys: Any) -> Path:
    folder = tmp_path_factory.getbasetemp() / "console-screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    record_property("console_screenshots", str(folder))
    with capsys.disabled():
        print(f"\nconsole screenshots: {folder}")
    return folder


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail(
            "Chromium and its driver are missing: bin/test installs them (apt-get install chromium chromium-driver)",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1000",
        "--lang=en-US",
    ):
        options.add_argument(argument)
    service = Service(CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def console(browser: WebDriver, live_server: Any, screenshots: Path) -> Console:
    return Console(browser, live_server.url, screenshots)


def test_finance_user_corrects_and_reposts_a_business_case_in_the_browser(
    client: Client, tryton: Any, console: Console
) -> None:
    # A revenue account Tryton does not have: the worker's posting is rejected and parked as a case.
    Mapping.objects.filter(kind="revenue_account", key="default").update(value="4999")
    obj = new_invoice()
    assert deliver(client, se.event("invoice.finalized", obj)).status_code == 200
    case = wait_for(
        lambda: ExceptionCase.objects.filter(source_id=obj["id"], status=CaseStatus.OPEN).first(),
        what="the open case",
    )
    number = obj["number"]
    user = get_user_model().objects.create_user("fiona.browser", "fiona@example.com", PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get(name=FINANCE))
    driver = console.driver

    # Log in with the form.
    console.open("/admin/login/")
    console.find(By.ID, "id_username", "the login form").send_keys("fiona.browser")
    console.find(By.ID, "id_password", "the password field").send_keys(PASSWORD)
    console.click(By.CSS_SELECTOR, "#login-form input[type=submit]", "the log-in button")
    console.find(By.ID, "user-tools", "the logged-in user's tools")

    # The case list, then the category filter from the sidebar.
    console.click(By.CSS_SELECTOR, '#content-main a[href="/admin/console/exceptioncase/"]', "the Exception cases link")
    console.find(By.ID, "changelist-filter", "the filter sidebar")
    console.click(
        By.XPATH,
        "//nav[@id='changelist-filter']//details[@data-filter-title='category']"
        "//a[normalize-space()='Business (finance)']",
        "the 'Business (finance)' category filter",
    )
    console.wait_until(lambda d: "category__exact=business" in d.current_url, "the business filter in the URL")
    console.find(
        By.XPATH,
        "//details[@data-filter-title='category']//li[@class='selected']/a[normalize-space()='Business (finance)']",
        "the business filter shown as selected",
    )
    row = console.find(
        By.XPATH, f"//table[@id='result_list']//tr[.//a[normalize-space()='{number}']]", f"the row of {number}"
    )
    console.expect_text(row, number, "4999", "Mapping not found in the ERP", "Open", what="the case row")
    console.shot("01-console-list")

    # The case page.
    row.find_element(By.CSS_SELECTOR, ".field-id a").click()
    summary = console.find(By.ID, "case-summary", "the case summary")
    console.wait_until(lambda d: f"/exceptioncase/{case.pk}/change/" in d.current_url, "the case page")
    case_url = driver.current_url
    console.expect_text(summary, "Mapping not found in the ERP", "open", obj["id"], what="the case summary")
    console.expect_text(
        console.find(By.ID, "case-message", "the case message"),
        "revenue account 4999 does not exist in tryton-local",
        number,
        what="the case message",
    )
    console.shot("02-case")

    # Its timeline, and back.
    console.click(By.ID, "timeline-link", "the timeline link")
    table = console.find(By.ID, "timeline", "the timeline table")
    console.expect_text(table, "Received invoice.finalized", "posting.parked", what="the timeline")
    console.shot("03-timeline", full_page=True)
    driver.back()
    console.wait_until(lambda d: d.current_url == case_url, "the case page again")

    # Correct the mapping and repost.
    console.click(By.ID, "action-correct", "the 'Correct mapping and repost' button")
    console.find(By.ID, "case-action-form", "the correction form")
    kind = Select(console.find(By.ID, "id_kind", "the mapping kind"))
    key = console.find(By.ID, "id_key", "the mapping key")
    value = console.find(By.ID, "id_value", "the ERP value")
    prefilled = (
        kind.first_selected_option.get_attribute("value"),
        key.get_attribute("value"),
        value.get_attribute("value"),
    )
    if prefilled != ("revenue_account", "default", "4999"):
        console.fail(f"the correction form is prefilled with {prefilled}, not the mapping at fault")
    value.clear()
    value.send_keys("4000")
    console.find(By.ID, "id_reason", "the reason").send_keys("4999 was a typo for 4000")
    console.shot("04-correction-form")
    console.click(By.CSS_SELECTOR, "#case-action-form input[type=submit]", "the submit button")
    message = console.find(By.CSS_SELECTOR, "ul.messagelist li.success", "the success message")
    console.expect_text(message, "Mapping revenue account 'default' → '4000' saved; reposting.", what="the message")
    case_path = urlsplit(case_url).path
    if urlsplit(driver.current_url).path != case_path:
        console.fail(f"after the correction the browser is on {driver.current_url}, not the case page {case_path}")

    # The worker reposts; reload the case page until it shows the case resolved.
    deadline = time.monotonic() + 90
    while True:
        summary_text = console.find(By.ID, "case-summary", "the case summary").text
        if "resolved" in summary_text and "Post invoice posted" in summary_text:
            break
        if time.monotonic() > deadline:
            console.fail(f"the case page did not show the case resolved within 90 s; it shows:\n{summary_text}")
        time.sleep(2)
        driver.refresh()
    console.expect_text(
        console.find(By.CSS_SELECTOR, "#case-summary h2", "the case heading"), "resolved", what="the case heading"
    )
    if driver.find_elements(By.ID, "action-correct"):
        console.fail("a resolved case still offers 'Correct mapping and repost'")
    console.expect_text(
        console.find(By.ID, "case-postings", "the postings of the case"), "Posted", what="the postings table"
    )
    console.shot("05-resolved")

    # One posted invoice in Tryton, and the screenshots on disk.
    invoices = tryton.invoices(f"{SOURCE}:{obj['id']}")
    assert [i["state"] for i in invoices] == ["posted"], invoices
    assert Mapping.objects.get(kind="revenue_account", key="default").value == "4000"
    for name in ("01-console-list", "02-case", "03-timeline", "04-correction-form", "05-resolved"):
        path = console.screenshots / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 0, f"missing or empty screenshot {path}"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
