"""Issue 16 end to end on a real hub and real agents on loopback: one bad
deployment never blocks another; device metrics travel in heartbeats and
are served, bounded, under /api/v1/metrics; a canary of a slower model
version is rolled back by the hub on its own, with the figures that
decided it."""

import threading
import time

import pytest

from fleet_harness import (admin, device_report, keep_scoring, score, two_plant_site,
                           wait_scores)
from harness import wait_for


@pytest.fixture
def site(hubs, tmp_path):
    """A hub, scorer versions 1 and 5 (slow) pushed, three agents in two
    locations (a1, a2 in plant-a; b1 in plant-b)."""
    with two_plant_site(hubs, tmp_path) as site:
        yield site


def test_a_bad_deployment_never_blocks_another(site):
    hub, references, agents, host = site
    for bad in ("not a reference at all", "../../etc/passwd", f"{host}/UPPER/case:1"):
        response = hub.request("POST", "/api/v1/deployments",
                               json={"name": "bad", "reference": bad})
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith("reference:"), response.text
        out = admin(hub, "deploy", bad, "--name", "bad", check=False)
        assert out.returncode != 0 and "reference" in out.stderr, out.stderr
    assert hub.request("GET", "/api/v1/deployments").json() == []

    # A well-formed reference the registry does not have: every agent fails
    # that deployment and reports it, and still serves the other one.
    ghost = f"{host}/fleet/ghost:1"
    admin(hub, "deploy", ghost, "--name", "ghost")
    admin(hub, "deploy", references[1], "--name", "scorer")
    wait_scores(agents.values(), 11.0)

    def ghost_reported(name):
        heartbeat = device_report(hub, name).get("heartbeat", {})
        return (any(m["reference"] == ghost and m["state"] == "FAILED"
                    for m in heartbeat.get("models", []))
                and any("ghost" in error for error in heartbeat.get("errors", [])))
    wait_for(lambda: all(ghost_reported(name) for name in agents), 30,
             what=lambda: f"the ghost deployment reported failed: "
                          f"{[device_report(hub, n) for n in agents]}")

    # The hub's own metrics, in Prometheus text: the failing devices among them.
    response = hub.request("GET", "/metrics", token=None)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = response.text
    assert 'perch_hub_devices{state="failing"} 3' in text, text
    assert 'perch_hub_deployments{state="stable"} 2' in text, text
    assert 'perch_hub_requests_total{api="fleet",method="POST",code="400"}' in text, text
    assert 'perch_hub_requests_total{api="registry"' in text, text
    assert "perch_hub_request_duration_seconds_bucket" in text, text


def test_metrics_are_served_bounded_and_a_slow_canary_rolls_back_by_itself(site):
    hub, references, agents, _ = site
    admin(hub, "deploy", references[1], "--name", "scorer")
    wait_scores(agents.values(), 11.0)
    for _ in range(60):  # the baseline: version 1 on every device
        for agent in agents.values():
            assert score(agent) == 11.0

    def model_requests(path):
        response = hub.request("GET", path)
        assert response.status_code == 200, response.text
        return sum(point["requests"] for point in response.json()["models"])
    wait_for(lambda: model_requests("/api/v1/metrics/devices/a1") >= 60, 30,
             what="a1's 60 requests in the hub's metrics")
    device = hub.request("GET", "/api/v1/metrics/devices/a1").json()
    assert device["vitals"] and device["vitals"][0]["memory_total_bytes"] > 0
    assert 0 <= device["vitals"][-1]["cpu_percent"] <= 100
    assert device["vitals"][-1]["disk_total_bytes"] > 0
    wait_for(lambda: model_requests("/api/v1/metrics/models/scorer") >= 180, 30)
    location = hub.request("GET", "/api/v1/metrics/locations/plant-a").json()
    assert {point["device"] for point in location["vitals"]} == {"a1", "a2"}

    # Bounded: ranges, pages, parameters; admin only.
    now = int(time.time())
    for query, field in ((f"from={now - 8 * 86400}&to={now}", "from"),
                         (f"from={now}&to={now - 10}", "to"),
                         ("limit=1001", "limit"), ("limit=0", "limit"),
                         ("from=yesterday", "from"), ("version=1.5", "version")):
        response = hub.request("GET", f"/api/v1/metrics/devices/a1?{query}")
        assert response.status_code == 400, (query, response.text)
        assert response.json()["error"].startswith(field + ":"), response.text
    assert hub.request("GET", "/api/v1/metrics/devices/a1", token=None).status_code == 401
    assert hub.request("GET", "/api/v1/metrics/devices/a1", token="wrong").status_code == 403
    page = hub.request("GET", "/api/v1/metrics/models/scorer?limit=2").json()
    assert len(page["models"]) <= 2 and page["next_from"] is not None

    # The canary: the slow version 5 on one device in three, judged on
    # 4-second windows of at least 10 requests; two slow windows roll it back.
    out = admin(hub, "deploy", references[5], "--name", "scorer", "--canary", "34%",
                "--analysis", "--analysis-window", "4s", "--analysis-min-requests", "10",
                "--analysis-failing-windows", "2")
    assert "revision 2" in out.stdout, out.stdout
    stop = threading.Event()
    driver = threading.Thread(target=keep_scoring, args=(list(agents.values()), stop))
    driver.start()
    try:
        def rolled_back():
            revision = hub.request("GET", "/api/v1/deployments/scorer").json()["revisions"][1]
            return revision if revision["rolled_back"] else None
        revision = wait_for(rolled_back, 60, interval=0.5, what=lambda: (
            "the hub to roll the slow canary back: " +
            str(hub.request("GET", "/api/v1/deployments/scorer").json())))
    finally:
        stop.set()
        driver.join()
    verdict = revision["verdicts"][-1]
    assert verdict["outcome"] == "rolled-back"
    assert verdict["canary"]["version"] == 5 and verdict["baseline"]["version"] == 1
    assert verdict["canary"]["p99_ms"] > 1.5 * verdict["baseline"]["p99_ms"], verdict
    assert "failing windows in a row" in verdict["reason"]
    wait_scores(agents.values(), 11.0)
    described = admin(hub, "deployments", "describe", "scorer").stdout
    assert "canary analysis:" in described and "rolled-back" in described, described
    assert "v5" in described and "p99" in described, described


def test_bad_heartbeat_metrics_are_refused(site):
    hub, _, agents, _ = site
    wait_for(lambda: len(hub.request("GET", "/api/v1/devices").json()) == 3, 30)
    for metrics, field in (
            ({"models": [{"name": "m", "requests": -1}]}, "metrics.models[0].requests"),
            ({"models": [{"name": "m", "requests": 1, "failures": 2}]},
             "metrics.models[0].failures"),
            ({"models": [{"name": "<script>", "requests": 1}]}, "metrics.models[0].name"),
            ({"vitals": {"cpu_percent": 101}}, "metrics.vitals.cpu_percent"),
            ({"vitals": {"temperature_celsius": 1e6}}, "metrics.vitals.temperature_celsius"),
            ({"models": "many"}, "metrics.models")):
        response = hub.request("POST", "/api/v1/devices/a1/heartbeat",
                               json={"models": [], "metrics": metrics})
        assert response.status_code == 400, (metrics, response.text)
        assert response.json()["error"].startswith(field + ":"), response.text
    for analysis, field in (({"window_seconds": 0}, "rollout.analysis.window_seconds"),
                            ({"max_p99_ratio": 0.5}, "rollout.analysis.max_p99_ratio"),
                            ({"min_requests": "many"}, "rollout.analysis.min_requests")):
        response = hub.request("POST", "/api/v1/deployments", json={
            "name": "x", "reference": "127.0.0.1:1/x:1",
            "rollout": {"strategy": "canary", "canary_percent": 10, "analysis": analysis}})
        assert response.status_code == 400, response.text
        assert response.json()["error"].startswith(field + ":"), response.text
    out = admin(hub, "deploy", "127.0.0.1:1/x:1", "--analysis", check=False)
    assert out.returncode != 0 and "--canary" in out.stderr
