"""Placement end to end (issue 11): a real hub with a short
--placement-grace and three real agents of one location on loopback. Six
models deployed with --replicas 1 and 2 land three on each agent and are
served exactly where the hub placed them; an agent stopped past the grace
has its models placed on the two others, which then serve them, while the
placements do not move before the grace is over."""

import shutil

import pytest

from fleet_harness import admin, create_location, fleet_agent
from harness import TEST_MODELS, wait_for
from registry_harness import perch

GRACE = 4  # --placement-grace of the test hub, seconds
AGENTS = ("s1", "s2", "s3")
REPLICAS = {"m0": 1, "m1": 2, "m2": 1, "m3": 2, "m4": 1, "m5": 2}  # 9 placements


@pytest.fixture
def site(hubs, tmp_path):
    """The hub, the six models pushed to it, and three agents of location
    `site` that have each sent a heartbeat (with their free memory)."""
    hub = hubs.start(args=["--placement-grace", GRACE])
    enrolment = create_location(hub, "site")
    references = {}
    for name in REPLICAS:
        # OUTPUT0 = INPUT0 + 1, under six names.
        model = tmp_path / "models" / name
        shutil.copytree(TEST_MODELS / "multi_version" / "1", model / "1")
        references[name] = f"{hub.host}/place/{name}:1"
        perch("push", model, references[name], "--version", "1", "--token", hub.admin_token)
    agents = {name: fleet_agent(tmp_path, hub.url, enrolment, name,
                                tmp_path / f"state-{name}").start()
              for name in AGENTS}
    try:
        wait_for(lambda: all(heartbeat(hub, name).get("memory_available_bytes", 0) > 0
                             for name in AGENTS), 30,
                 what=lambda: f"a heartbeat with free memory from every agent: "
                              f"{[heartbeat(hub, name) for name in AGENTS]}")
        yield hub, references, agents
    finally:
        for agent in agents.values():
            if agent.process.poll() is None:
                assert agent.stop() == 0


def heartbeat(hub, device):
    """The device's last heartbeat, {} before it enrolled or sent one."""
    response = hub.request("GET", f"/api/v1/devices/{device}")
    return response.json().get("heartbeat", {}) if response.status_code == 200 else {}


def heartbeat_time(hub, device):
    """When the hub last heard from the device, by the hub's clock."""
    response = hub.request("GET", f"/api/v1/devices/{device}")
    assert response.status_code == 200, response.text
    return response.json()["last_seen"]


def placements(hub):
    """{model: [devices]} as the hub placed them."""
    placed = {}
    for name in REPLICAS:
        response = hub.request("GET", f"/api/v1/deployments/{name}")
        assert response.status_code == 200, response.text
        body = response.json()
        placed[name] = sorted(device for placement in body.get("placements", [])
                              for device in placement["devices"])
    return placed


def served(hub, device):
    """The models the device itself reports READY, by the reference it was
    deployed from: its own models, never ones a peer answers for."""
    report = heartbeat(hub, device)
    return {model["name"] for model in report.get("models", [])
            if model["state"] == "READY" and model["reference"]}


def expected(placed, device):
    return {name for name, devices in placed.items() if device in devices}


def answer(agent, model):
    response = agent.infer(model, {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [10.0]}]})
    assert response.status_code == 200, (model, response.text)
    return response.json()["outputs"][0]["data"][0]


def wait_served_as_placed(hub, agents, placed, timeout=60):
    def converged():
        return all(served(hub, name) == expected(placed, name) for name in agents)
    wait_for(converged, timeout, what=lambda: (
        f"every agent to serve what is placed on it: placed {placed}, served "
        f"{ {name: sorted(served(hub, name)) for name in agents} }\n" +
        "\n".join(agent.logs()[-2000:] for agent in agents.values())))


def test_six_models_spread_over_three_agents_and_move_off_a_stopped_one(site):
    hub, references, agents = site
    for name, replicas in REPLICAS.items():
        out = admin(hub, "deploy", references[name], "--name", name, "--location", "site",
                    "--replicas", replicas)
        assert "placed on: site: " in out.stdout, out.stdout
        assert "warning" not in out.stderr, out.stderr

    placed = placements(hub)
    assert {name: len(devices) for name, devices in placed.items()} == REPLICAS
    # 9 placements over 3 devices: 3 each.
    assert [len(expected(placed, name)) for name in AGENTS] == [3, 3, 3], placed

    wait_served_as_placed(hub, agents, placed)
    for name, devices in placed.items():
        for device in devices:
            assert answer(agents[device], name) == 11.0

    listing = admin(hub, "deployments").stdout
    assert "PLACED ON" in listing
    for name, devices in placed.items():
        assert f"site: {','.join(devices)}" in listing, listing

    # One agent stops. Its placements stay for the grace (a reboot moves
    # nothing), then go to the two others.
    gone = "s1"
    assert agents[gone].stop() == 0
    last_seen = heartbeat_time(hub, gone)
    held_within_grace = []

    def moved():
        # The hub's clock first: placements read after it are no older.
        now = hub.request("GET", "/api/v1/status").json()["now"]
        held = any(gone in devices for devices in placements(hub).values())
        if now - last_seen <= GRACE - 1:
            held_within_grace.append(held)
        return not held
    wait_for(moved, GRACE + 15, what=lambda: f"{gone}'s models to move: {placements(hub)}")
    assert held_within_grace and all(held_within_grace), \
        f"{gone} lost its models within the grace: {held_within_grace}"

    survivors = {name: agent for name, agent in agents.items() if name != gone}
    before, placed = placed, placements(hub)
    for name, replicas in REPLICAS.items():
        assert len(placed[name]) == min(replicas, 2), placed
        assert set(placed[name]) <= set(survivors), placed
        # Only what the stopped agent held moved: the others kept theirs.
        assert set(before[name]) - {gone} <= set(placed[name]), (before, placed)

    wait_served_as_placed(hub, survivors, placed)
    for name, devices in placed.items():
        for device in devices:
            assert answer(survivors[device], name) == 11.0
    described = admin(hub, "deployments", "describe", "m0").stdout
    assert f"placed on: site: {placed['m0'][0]}" in described, described


def test_fewer_devices_than_replicas_warn_and_bad_replicas_are_refused(site):
    hub, references, agents = site
    out = admin(hub, "deploy", references["m0"], "--name", "wide", "--location", "site",
                "--replicas", 5)
    assert "location 'site' has 3 device(s)" in out.stderr, out.stderr
    body = hub.request("GET", "/api/v1/deployments/wide").json()
    assert body["placements"] == [{"location": "site", "devices": list(AGENTS), "replicas": 5}]
    assert len(body["warnings"]) == 1

    for replicas, message in ((-1, "replicas: must be between 0"),
                              (1001, "replicas: must be between 0"),
                              ("two", "replicas: must be an integer"),
                              (1.5, "replicas: must be an integer")):
        response = hub.request("PUT", "/api/v1/deployments/wide", json={
            "name": "wide", "reference": references["m0"], "replicas": replicas})
        assert response.status_code == 400, response.text
        assert message in response.json()["error"], response.text
    out = admin(hub, "deploy", references["m0"], "--name", "wide", "--replicas", -1,
                check=False)
    assert out.returncode != 0 and "replicas" in out.stderr, out
