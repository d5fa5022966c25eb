"""The hub's dashboard in a real browser: Debian's headless Chromium driven
by Selenium against a real hub with three real agents in two locations.
Sign in (a bad token refused), see the fleet, open a device and see its
charts fill and what it serves with its signature state, watch the
overview and the event log refresh themselves and a canary of a slower
model version roll back by itself with its figures, press Roll back on
another, names shown as text. The screenshots of this run are the ones in
docs/ (docs/dashboard.md)."""

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from fleet_harness import admin, create_location, keep_scoring, two_plant_site, wait_scores
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
    """The two plants, scorer version 1 signed (5 not), and b1 trusting only
    the key that signed it."""
    private, public = tmp_path / "site.pem", tmp_path / "site.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", private], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", private, "-pubout", "-out", public],
                   check=True, capture_output=True)
    with two_plant_site(hubs, tmp_path, labels={"a1": [f"note={HOSTILE}"]}, signed=(1,),
                        sign_with=private, flags={"b1": ["--trust-key", str(public)]}) as (
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


def go(driver, page):
    """Moves to `page` (#/...) as a link does: no page load."""
    driver.execute_script("location.hash = arguments[0]", page)


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
        # From here on the page is never loaded again: what changes on the
        # hub shows by the pages' own refreshes (a load would drop this).
        browser.execute_script("window.perchNotReloaded = true")

        # The location: names and labels as text, never as markup.
        click(browser, By.LINK_TEXT, "plant-a")
        wait_text(browser, "#devices", "a2")
        wait_text(browser, "#devices", HOSTILE)
        assert browser.execute_script("return window.pwned") is None

        # A device's charts fill as heartbeats arrive; what it serves shows
        # its signature state: signed, which a1 (no trusted key) cannot check.
        click(browser, By.LINK_TEXT, "a1")
        wait_text(browser, "#serves", "scorer v1 READY")
        wait_text(browser, "#serves .signature", "signed, not verified")

        def points():
            value = browser.find_element(By.ID, "charts").get_attribute("data-points")
            return int(value or 0)
        wait_for(lambda: points() >= 30, 30, what=lambda: f"charts with points; {points()}")
        first = points()
        wait_for(lambda: points() > first, 15, what="the charts to grow")
        assert len(browser.find_elements(By.CSS_SELECTOR, "#charts .uplot")) == 6
        screenshot(browser, "dashboard-device.png")
        # b1 trusts the key that signed version 1, and says which key it is.
        go(browser, "#/device/b1")
        wait_text(browser, "#serves .signature", "signature verified by site.pub.pem (sha256 ")

        # A canary of a slower version, judged on the devices' figures,
        # rolls back by itself; the overview and the event log, left open,
        # show it coming and going.
        click(browser, By.LINK_TEXT, "Fleet")
        wait_text(browser, "#count-rollouts", "0")
        admin(hub, "deploy", references[5], "--name", "scorer", "--location", "plant-a",
              "--canary", "50%",
              "--analysis", "--analysis-window", "4s", "--analysis-min-requests", "10",
              "--analysis-failing-windows", "2")
        wait_text(browser, "#count-rollouts", "1", timeout=15)
        wait_text(browser, "#rollouts", "scorer")
        click(browser, By.LINK_TEXT, "Events")
        wait_text(browser, "#events", "scorer revision 2")
        wait_for(lambda: "rolled back\tscorer revision 2" in rows(browser, "#events"), 60,
                 what=lambda: f"the canary rolled back; the log shows {rows(browser, '#events')}")
        click(browser, By.LINK_TEXT, "Deployments")
        wait_text(browser, "#verdicts-scorer", "rolled-back")
        verdicts = text(browser, "#verdicts-scorer")
        assert "failing windows in a row" in verdicts and "v5" in verdicts, verdicts
        screenshot(browser, "dashboard-canary.png")

        # Another canary of the (unsigned) slow version: b1 refuses it, and
        # its page says why; Roll back pressed on it.
        admin(hub, "deploy", references[5], "--name", "scorer-b", "--location", "plant-b",
              "--canary", "50%", "--canary-after", "1h")
        wait_text(browser, "#deployment-scorer-b", "current (canary)", timeout=15)
        wait_text(browser, "#deployment-scorer-b .progress", "Canary on 50% of the devices")
        go(browser, "#/device/b1")
        wait_text(browser, "#serves .signature", "refused by the signature policy")
        wait_text(browser, "#serves", "refused by the trust policy, unsigned")
        screenshot(browser, "dashboard-signatures.png")
        go(browser, "#/deployments")
        click(browser, By.CSS_SELECTOR, "#deployment-scorer-b button.rollback")
        wait_text(browser, "#deployment-scorer-b", "rolled back")
        assert hub.request("GET", "/api/v1/deployments/scorer-b").json()["revisions"][1][
            "rolled_back"]

        go(browser, "#/registry")
        wait_text(browser, "#registry", "fleet/scorer")
        # A device enrolled and revoked while the event log is open.
        go(browser, "#/events")
        wait_text(browser, "#events", "device enrolled")
        token = hub.request("POST", "/api/v1/locations/plant-b/enrolment-token").json()[
            "enrolment_token"]
        enrolled = hub.request("POST", "/api/v1/enrol", token=token,
                               json={"name": "c1", "architecture": "amd64"})
        assert enrolled.status_code == 201, enrolled.text
        assert hub.request("POST", "/api/v1/devices/c1/revoke").status_code == 200
        wait_for(lambda: "device revoked\tc1" in rows(browser, "#events"), 15,
                 what=lambda: f"c1's revocation in {rows(browser, '#events')}")
        revoked = [r for r in rows(browser, "#events").splitlines() if "device revoked\tc1" in r]
        assert revoked[0][:2] == "20", revoked  # with its time
        assert "rolled back\tscorer-b revision 2\tby an operator" in rows(browser, "#events")
        assert browser.execute_script("return window.perchNotReloaded") is True

        # Signing out forgets the token.
        browser.find_element(By.ID, "sign-out").click()
        assert browser.find_element(By.ID, "sign-in").is_displayed()
        assert browser.execute_script("return sessionStorage.length") == 0
    finally:
        stop.set()
        driver_thread.join()


def rows(driver, css):
    """The rows of the table at css, cells separated by tabs."""
    try:
        return driver.execute_script(
            "const t = document.querySelector(arguments[0]); return t ? [...t.rows].map("
            "(r) => [...r.cells].map((c) => c.textContent).join('\\t')).join('\\n') : ''",
            css)
    except StaleElementReferenceException:
        return ""


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


def test_event_log_and_overview_api(hubs):
    """GET /api/v1/events: enrolments, revocations, deployments and rollbacks
    with their times, newest first, bounded; admin only. GET
    /api/v1/overview: the devices counted by state, per location."""
    hub = hubs.start()
    token = create_location(hub, "plant-x")
    enrolled = hub.request("POST", "/api/v1/enrol", token=token,
                           json={"name": "x1", "architecture": "amd64"})
    assert enrolled.status_code == 201, enrolled.text
    for method, path, tag in (("POST", "/api/v1/deployments", "1"),
                              ("PUT", "/api/v1/deployments/d", "2")):
        deployed = hub.request(method, path,
                               json={"name": "d", "reference": f"{hub.host}/fleet/m:{tag}"})
        assert deployed.status_code in (200, 201), deployed.text
    overview = hub.request("GET", "/api/v1/overview").json()
    assert overview["devices"] == {"online": 0, "offline": 1, "failing": 0, "revoked": 0}
    assert overview["rollouts"] == []
    create_location(hub, "plant-y")
    assert hub.request("POST", "/api/v1/deployments/d/rollback").status_code == 200
    assert hub.request("POST", "/api/v1/devices/x1/revoke").status_code == 200

    events = hub.request("GET", "/api/v1/events").json()
    kinds = sorted((e["kind"], e["subject"], e.get("revision", 0)) for e in events)
    assert kinds == [("deployed", "d", 1), ("deployed", "d", 2), ("device-enrolled", "x1", 0),
                     ("device-revoked", "x1", 0), ("rolled-back", "d", 2)], events
    assert all(e["at"] > 1_700_000_000 for e in events), events
    assert [e["at"] for e in events] == sorted((e["at"] for e in events), reverse=True)
    assert [e["detail"] for e in events if e["kind"] == "rolled-back"] == ["by an operator"]
    assert len(hub.request("GET", "/api/v1/events?limit=2").json()) == 2
    assert len(hub.request("GET", "/api/v1/events?limit=500").json()) == 5
    for bad in ("0", "501", "-1", "x", "", "1e3", "99999999999999999999999"):
        answer = hub.request("GET", f"/api/v1/events?limit={bad}")
        assert answer.status_code == 400, (bad, answer.text)
        assert "limit" in answer.json()["error"], answer.text
    assert hub.request("GET", "/api/v1/events", token=None).status_code == 401
    overview = hub.request("GET", "/api/v1/overview").json()
    assert overview["devices"] == {"online": 0, "offline": 0, "failing": 0, "revoked": 1}
    assert [(l["name"], l["revoked"], l["offline"]) for l in overview["locations"]] == [
        ("plant-x", 1, 0), ("plant-y", 0, 0)], overview
    assert hub.request("GET", "/api/v1/overview", token=None).status_code == 401
    assert [d["name"] for d in hub.request(
        "GET", "/api/v1/status?location=plant-x").json()["devices"]] == ["x1"]
    assert hub.request("GET", "/api/v1/status?location=plant-y").json()["devices"] == []
    assert hub.request("GET", "/api/v1/events", token="wrong").status_code in (401, 403)
