"""The hub's dashboard in a real browser: Debian's headless Chromium driven
by Selenium against a real hub with three real agents in two locations.
Sign in (a bad token refused), see the fleet, open a device and see its
charts fill, watch a canary of a slower model version roll back by itself
with its figures, press Roll back on another, names shown as text. The
screenshots of this run are the ones in docs/ (docs/dashboard.md)."""

import os
import shutil
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from fleet_harness import admin, keep_scoring, two_plant_site, wait_scores
from harness import wait_for

DOCS = Path(__file__).resolve().parents[2] / "docs"
# A label no page may run: shown as text, it sets nothing.
HOSTILE = '<img src=x onerror="window.pwned=1"><script>window.pwned=1</script>'


@pytest.fixture
def browser():
    chromedriver = shutil.which("chromedriver")
    if chromedriver is None:
        pytest.fail("chromedriver is missing: run scripts/bootstrap.sh (chromium-driver)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1400,1000", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=chromedriver),
                              options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def fleet(hubs, tmp_path):
    with two_plant_site(hubs, tmp_path, labels={"a1": [f"note={HOSTILE}"]}) as (
            hub, references, agents, _):
        yield hub, references, agents


def text(driver, css):
    """The text of every element matching css; "" while the page redraws
    them (a stale element), for the caller's wait to look again."""
    try:
        return "\n".join(e.text for e in driver.find_elements(By.CSS_SELECTOR, css))
    except StaleElementReferenceException:
        return ""


def click(driver, by, value, timeout=30):
    """Clicks the element, found again when the page redrew it meanwhile."""
    def clicked():
        try:
            driver.find_element(by, value).click()
            return True
        except StaleElementReferenceException:
            return False
    wait_for(clicked, timeout, what=f"a click on {value}")


def wait_text(driver, css, expected, timeout=30):
    wait_for(lambda: expected in text(driver, css), timeout,
             what=lambda: f"{expected!r} in {css}; it shows {text(driver, css)!r}")


def screenshot(driver, name):
    if os.environ.get("PERCH_DASHBOARD_SCREENSHOTS", "1") != "0":
        driver.save_screenshot(str(DOCS / name))


def sign_in(driver, token):
    field = driver.find_element(By.ID, "token")
    field.clear()
    field.send_keys(token)
    driver.find_element(By.ID, "sign-in-button").click()


def test_the_dashboard_in_a_browser(fleet, browser):
    hub, references, agents = fleet
    wait_for(lambda: len(hub.request("GET", "/api/v1/devices").json()) == 3, 30)
    admin(hub, "deploy", references[1], "--name", "scorer", "--location", "plant-a")
    admin(hub, "deploy", references[1], "--name", "scorer-b", "--location", "plant-b")
    wait_scores(agents.values(), 11.0)
    stop = threading.Event()
    driver_thread = threading.Thread(target=keep_scoring, args=(list(agents.values()), stop))
    driver_thread.start()
    try:
        browser.get(hub.url + "/")
        # A bad token is refused, and nothing of the fleet shows.
        sign_in(browser, "not-the-admin-token")
        wait_text(browser, "#sign-in-error", "refused")
        assert not browser.find_element(By.ID, "nav").is_displayed()

        sign_in(browser, hub.admin_token)
        wait_text(browser, "#count-online", "3")
        wait_text(browser, "#locations", "plant-a")
        wait_text(browser, "#locations", "plant-b")
        screenshot(browser, "dashboard-fleet.png")

        # The location: names and labels as text, never as markup.
        click(browser, By.LINK_TEXT, "plant-a")
        wait_text(browser, "#devices", "a2")
        wait_text(browser, "#devices", HOSTILE)
        assert browser.execute_script("return window.pwned") is None

        # A device's charts fill as heartbeats arrive.
        click(browser, By.LINK_TEXT, "a1")
        wait_text(browser, "#serves", "scorer v1 READY")

        def points():
            value = browser.find_element(By.ID, "charts").get_attribute("data-points")
            return int(value or 0)
        wait_for(lambda: points() >= 30, 30, what=lambda: f"charts with points; {points()}")
        first = points()
        wait_for(lambda: points() > first, 15, what="the charts to grow")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#charts .uplot")) == 6
        screenshot(browser, "dashboard-device.png")

        # A canary of a slower version, judged on the devices' figures,
        # rolls back by itself; the page shows the verdicts and figures.
        admin(hub, "deploy", references[5], "--name", "scorer", "--location", "plant-a",
              "--canary", "50%",
              "--analysis", "--analysis-window", "4s", "--analysis-min-requests", "10",
              "--analysis-failing-windows", "2")
        browser.get(hub.url + "/#/deployments")
        wait_text(browser, "#deployment-scorer", "current (canary)")

        def rolled_back():
            browser.refresh()
            return "rolled-back" in text(browser, "#verdicts-scorer")
        wait_for(rolled_back, 60, interval=1,
                 what=lambda: f"the canary rolled back; {text(browser, '#deployment-scorer')}")
        verdicts = text(browser, "#verdicts-scorer")
        assert "failing windows in a row" in verdicts and "v5" in verdicts, verdicts
        screenshot(browser, "dashboard-canary.png")

        # Roll back pressed on another deployment.
        admin(hub, "deploy", references[5], "--name", "scorer-b", "--location", "plant-b",
              "--canary", "50%", "--canary-after", "1h")
        browser.refresh()
        wait_text(browser, "#deployment-scorer-b", "current (canary)")
        click(browser, By.CSS_SELECTOR, "#deployment-scorer-b button.rollback")
        wait_text(browser, "#deployment-scorer-b", "rolled back")
        assert hub.request("GET", "/api/v1/deployments/scorer-b").json()["revisions"][1][
            "rolled_back"]

        browser.get(hub.url + "/#/registry")
        wait_text(browser, "#registry", "fleet/scorer")
        browser.get(hub.url + "/#/events")
        wait_text(browser, "#events", "rolled back")
        wait_text(browser, "#events", "device enrolled")

        # Signing out forgets the token.
        browser.find_element(By.ID, "sign-out").click()
        assert browser.find_element(By.ID, "sign-in").is_displayed()
        assert browser.execute_script("return sessionStorage.length") == 0
    finally:
        stop.set()
        driver_thread.join()


def test_dashboard_files_are_served_safely(hubs):
    hub = hubs.start()
    for path, kind in (("/", "text/html"), ("/dashboard/app.js", "text/javascript"),
                       ("/dashboard/uPlot.iife.min.js", "text/javascript"),
                       ("/dashboard/uPlot.min.css", "text/css")):
        response = hub.request("GET", path, token=None)
        assert response.status_code == 200, path
        assert response.headers["Content-Type"].startswith(kind)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "uPlot" in hub.request("GET", "/dashboard/uPlot.iife.min.js", token=None).text
    for bad in ("/dashboard/index.html", "/dashboard/../tokens.json", "/dashboard/nope.js",
                "/dashboard/%2e%2e"):
        assert hub.request("GET", bad, token=None).status_code == 404, bad
    # Actions take the token in the Authorization header only: a browser
    # on another site has none to send.
    assert hub.request("POST", "/api/v1/deployments/scorer/rollback", token=None).status_code == 401
    assert hub.request("POST", "/api/v1/deployments/scorer/promote", token=None).status_code == 401
