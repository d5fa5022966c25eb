"""The fleet end to end: a real hub, three real agents in two locations on
loopback, real models pushed to the hub's registry. Deploy, canary,
refusing a broken update and rolling it back, and the offline scenario:
the hub killed, agents serving on (one restarted meanwhile), deployments
changed while the agents are cut off, every agent converging to the newest
state when the link is back."""

import base64
import signal
import time

import pytest

from fleet_harness import (Link, admin, create_location, device_report,
                           fleet_agent, make_scorer_repo, push_scorer,
                           score, wait_scores)
from harness import wait_for
from hub_harness import HubServer
from registry_harness import perch


@pytest.fixture
def fleet(hubs, tmp_path):
    """A hub behind a Link, the scorer versions pushed through it, and two
    locations with their enrolment tokens."""
    hub = hubs.start()
    link = Link(hub.port).up()
    repo = make_scorer_repo(tmp_path / "models")
    host = f"127.0.0.1:{link.port}"
    references = {v: push_scorer(hub, repo, host, v) for v in (1, 2, 3, 4)}
    tokens = {name: create_location(hub, name) for name in ("plant-a", "plant-b")}
    yield hub, link, references, tokens
    link.down()


def start_agents(tmp_path, link, tokens):
    """a1, a2 in plant-a and b1 in plant-b, each with its own state."""
    url = f"http://127.0.0.1:{link.port}"
    agents = {}
    for name, location in (("a1", "plant-a"), ("a2", "plant-a"), ("b1", "plant-b")):
        agent = fleet_agent(tmp_path, url, tokens[location], name, tmp_path / f"state-{name}",
                            labels=[f"camera={'yes' if name != 'a2' else 'no'}"])
        agents[name] = agent.start()
    return agents


def stop_all(agents):
    for agent in agents.values():
        if agent.process.poll() is None:
            assert agent.stop() == 0


def test_deploy_canary_broken_update_and_rollback(fleet, tmp_path):
    hub, link, references, tokens = fleet
    agents = start_agents(tmp_path, link, tokens)
    try:
        # Enrolled, nothing deployed: no scorer anywhere.
        assert wait_for(lambda: len(hub.request("GET", "/api/v1/devices").json()) == 3, 30)
        assert all(score(agent) is None for agent in agents.values())

        out = admin(hub, "deploy", references[1], "--name", "scorer").stdout
        assert "revision 1" in out
        wait_scores(agents.values(), 11.0)

        # A label selector: only the devices with a camera.
        out = admin(hub, "deploy", references[1], "--name", "camera-scorer",
                    "--label", "camera=yes", "--location", "plant-c", check=False)
        assert out.returncode == 0
        assert "matches no device" in out.stderr

        # Canary: one device of three first, the rest once it was healthy 2 s.
        admin(hub, "deploy", references[2], "--name", "scorer", "--canary", "20%",
              "--canary-after", "2s")
        wait_for(lambda: sorted(score(a) for a in agents.values()) == [11.0, 11.0, 12.0], 30,
                 what=lambda: f"one canary; the agents answer {[score(a) for a in agents.values()]}")
        canary = next(name for name, a in agents.items() if score(a) == 12.0)
        described = admin(hub, "deployments", "describe", "scorer").stdout
        assert "current (canary)" in described
        wait_scores(agents.values(), 12.0, timeout=60)
        assert hub.request("GET", "/api/v1/deployments/scorer").json()["revisions"][1]["promoted"]

        # A broken update (it fails its warm-up) is refused by every agent,
        # which keeps serving the last good version and says why.
        admin(hub, "deploy", references[4], "--name", "scorer")

        def refused_everywhere():
            return all(any("refused" in error for error in
                           device_report(hub, name).get("heartbeat", {}).get("errors", []))
                       for name in agents)
        wait_for(refused_everywhere, 30, what=lambda: (
            f"every agent to report the update refused: "
            f"{[device_report(hub, n) for n in agents]}"))
        assert all(score(agent) == 12.0 for agent in agents.values())
        status = admin(hub, "status").stdout
        assert "warmup failed" in status and status.count("online") == 3, status
        report = device_report(hub, canary)["heartbeat"]
        assert any(m["reference"] == references[4] and m["state"] == "FAILED"
                   for m in report["models"]), report

        out = admin(hub, "rollback", "scorer").stdout
        assert "rolled back to revision 2" in out

        def healthy_everywhere():
            return all(not device_report(hub, name)["heartbeat"]["errors"] for name in agents)
        assert wait_for(healthy_everywhere, 30)
        assert all(score(agent) == 12.0 for agent in agents.values())
        assert "rolled back" in admin(hub, "deployments", "describe", "scorer").stdout
    finally:
        stop_all(agents)


def restart_hub_on(port, data, workdir):
    hub = HubServer(workdir, data=data)
    hub.port = port
    hub.url = f"http://127.0.0.1:{port}"
    hub.host = f"127.0.0.1:{port}"
    hub.command[hub.command.index("--port") + 1] = str(port)
    return hub.start()


def test_agents_keep_serving_offline_and_converge_to_the_newest_state(fleet, tmp_path):
    hub, link, references, tokens = fleet
    agents = start_agents(tmp_path, link, tokens)
    revived = None
    try:
        admin(hub, "deploy", references[1], "--name", "scorer")
        wait_scores(agents.values(), 11.0)

        # The hub dies: every agent keeps serving.
        hub.stop(signal.SIGKILL)
        time.sleep(1)
        assert all(score(agent) == 11.0 for agent in agents.values())

        # An agent restarted while the hub is down still serves, from --state.
        a1 = agents["a1"]
        assert a1.stop() == 0
        agents["a1"] = fleet_agent(tmp_path, f"http://127.0.0.1:{link.port}", tokens["plant-a"],
                                   "a1", tmp_path / "state-a1").start()
        assert score(agents["a1"]) == 11.0
        assert "serving the last applied desired state" in agents["a1"].logs()

        # The hub comes back, but the agents stay cut off while the
        # deployment changes twice.
        link.down()
        revived = restart_hub_on(hub.port, hub.data, tmp_path)
        revived.admin_token = hub.admin_token
        admin(revived, "deploy", references[2], "--name", "scorer")
        admin(revived, "deploy", references[3], "--name", "scorer")
        time.sleep(1)
        assert all(score(agent) == 11.0 for agent in agents.values())

        # The link is back: straight to the newest state, nothing between.
        link.up()
        wait_scores(agents.values(), 13.0)
        for agent in agents.values():
            assert references[2] not in agent.logs(), agent.logs()[-3000:]
        # An agent serves the new version a moment before its heartbeat says so.
        def reported():
            status = admin(revived, "status").stdout
            return status.count("online") == 3 and status.count("scorer:3") == 3
        wait_for(reported, 10, what=lambda: "the hub's status to show all three on "
                 "scorer:3:\n" + admin(revived, "status").stdout)
    finally:
        stop_all(agents)
        if revived is not None:
            assert revived.stop() == 0


def test_fleet_api_refuses_bad_input(fleet, tmp_path):
    hub, link, references, tokens = fleet

    def call(method, path, token="admin", **kwargs):
        return hub.request(method, path, token=token, **kwargs)

    missing = call("GET", "/api/v1/devices", token=None)
    assert missing.status_code == 401 and missing.json()["code"] == "Unauthenticated"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert call("GET", "/api/v1/devices", token="not-a-token").status_code == 401
    # The scheme in any case, or the token as the password of Basic.
    secret = hub.admin_token
    for authorization in (f"bearer {secret}", f"BEARER {secret}",
                          "Basic " + base64.b64encode(f"perch:{secret}".encode()).decode()):
        assert call("GET", "/api/v1/devices", token=None,
                    headers={"Authorization": authorization}).status_code == 200
    assert call("GET", "/api/v1/devices", token=None,
                headers={"Authorization": "Digest x"}).json()["code"] == "Unauthenticated"
    enrolled = call("POST", "/api/v1/enrol", token=tokens["plant-a"],
                    json={"name": "d1", "architecture": "amd64"})
    assert enrolled.status_code == 201, enrolled.text
    device_token = enrolled.json()["token"]
    other = call("POST", "/api/v1/enrol", token=tokens["plant-b"], json={"name": "d2"})
    assert other.status_code == 201

    # A device acts only for itself, and never as the admin.
    assert call("GET", "/api/v1/devices/d1/desired-state", token=device_token).status_code == 200
    assert call("GET", "/api/v1/devices/d2/desired-state", token=device_token).status_code == 403
    assert call("POST", "/api/v1/devices/d2/heartbeat", token=device_token,
                json={}).status_code == 403
    assert call("POST", "/api/v1/deployments", token=device_token,
                json={"name": "x", "reference": references[1]}).status_code == 403
    assert call("POST", "/api/v1/enrol", token="wrong", json={"name": "d3"}).status_code == 401

    # Malformed documents: 400 naming the field.
    for body, field in (
            (b"{", "not valid JSON"),
            (b'{"reference": "h/m:1"}', "name: is required"),
            (b'{"name": "x", "reference": "h/m:1", "selector": {"labels": {"k": 1}}}',
             "selector.labels.k"),
            (b'{"name": "x", "reference": "h/m:1", "rollout": {"strategy": "big-bang"}}',
             "rollout.strategy"),
            (b'{"name": "Bad Name", "reference": "h/m:1"}', "name")):
        response = call("POST", "/api/v1/deployments", data=body,
                        headers={"Content-Type": "application/json"})
        assert response.status_code == 400, (body, response.text)
        assert field in response.json()["error"], (body, response.text)
    response = call("POST", "/api/v1/devices/d1/heartbeat", token=device_token,
                    json={"models": [{"name": "m", "version": "one"}]})
    assert response.status_code == 400 and "models[0].version" in response.json()["error"]
    assert response.json()["code"] == "InvalidArgument"
    too_big = call("POST", "/api/v1/locations", data=b"[" * (2 << 20),
                   headers={"Content-Type": "application/json"})
    assert too_big.status_code == 413 and too_big.json()["code"] == "ResourceExhausted"

    # Duplicates: 409; a selector that matches nothing: accepted, warned.
    taken = call("POST", "/api/v1/locations", json={"name": "plant-a"})
    assert taken.status_code == 409 and taken.json()["code"] == "AlreadyExists"
    assert call("POST", "/api/v1/enrol", token=tokens["plant-a"],
                json={"name": "d1"}).status_code == 409
    created = call("POST", "/api/v1/deployments",
                   json={"name": "nowhere", "reference": references[1],
                         "selector": {"location": "plant-z"}})
    assert created.status_code == 201
    assert "matches no device" in created.json()["warnings"][0]
    assert call("POST", "/api/v1/deployments",
                json={"name": "nowhere", "reference": references[1]}).status_code == 409
    unknown = call("GET", "/api/v1/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["code"] == "NotFound"
    wrong_method = call("DELETE", "/api/v1/locations")
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "InvalidArgument"
    assert set(wrong_method.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}

    # A revoked device is refused from then on; nothing accepted was lost.
    assert call("POST", "/api/v1/devices/d1/revoke").status_code == 200
    assert call("GET", "/api/v1/devices/d1/desired-state",
                token=device_token).status_code == 401
    names = sorted(d["name"] for d in call("GET", "/api/v1/devices").json())
    assert names == ["d1", "d2"]
    assert [d["name"] for d in call("GET", "/api/v1/deployments").json()] == ["nowhere"]
    hub.assert_alive()


def test_bad_flags_and_damaged_state_are_refused_clearly(fleet, tmp_path):
    hub, link, references, tokens = fleet
    for args, message in (
            (["deploy", references[1], "--canary", "150%"], "must be 1% to 99%"),
            (["deploy", references[1], "--canary", "20%", "--canary-after", "5x"],
             "is not a duration"),
            (["deploy", references[1], "--label", "no-equals-sign"], "must be KEY=VALUE"),
            (["deploy", references[1], "--label", "Bad Key=v"], "keys are lowercase"),
            (["devices", "describe", "../a1"], "is not a valid device name"),
            (["rollback", "a/b"], "is not a valid deployment name")):
        result = admin(hub, *args, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    result = perch("status", "--hub", "ftp://127.0.0.1:1", check=False)
    assert result.returncode == 2 and "must be http://" in result.stderr

    url = f"http://127.0.0.1:{link.port}"
    both = fleet_agent(tmp_path, url, tokens["plant-a"], "x1", tmp_path / "x1")
    both.command += ["--repo", str(tmp_path)]
    result = perch(*both.command[1:], check=False)
    assert result.returncode == 1 and "--hub decides" in result.stderr

    labelled = fleet_agent(tmp_path, url, tokens["plant-a"], "x2", tmp_path / "x2",
                           labels=["oops"])
    result = perch(*labelled.command[1:], check=False)
    assert result.returncode == 1 and "must be KEY=VALUE" in result.stderr

    # A damaged enrolment is not silently replaced: the device would get a
    # second identity. A damaged record of the last state only costs the
    # models until the hub answers.
    state = tmp_path / "x3"
    (state / "fleet").mkdir(parents=True)
    (state / "fleet" / "device.json").write_text("{not json")
    damaged = fleet_agent(tmp_path, url, tokens["plant-a"], "x3", state)
    result = perch(*damaged.command[1:], check=False)
    assert result.returncode == 1 and "is damaged: remove it" in result.stderr

    admin(hub, "deploy", references[1], "--name", "scorer")

    def serves_the_hubs_state_over(name, current, release=None):
        state = tmp_path / name
        (state / "fleet").mkdir(parents=True)
        if release:
            (state / "fleet" / "releases" / release).mkdir(parents=True)
        (state / "fleet" / "current.json").write_text(current)
        agent = fleet_agent(tmp_path, url, tokens["plant-a"], name, state).start()
        try:
            wait_scores([agent], 11.0)
            assert "current.json is damaged" in agent.logs()
        finally:
            assert agent.stop() == 0

    serves_the_hubs_state_over("x4", "[1, 2")
    # Well-formed JSON with a field of the wrong type is damaged too.
    serves_the_hubs_state_over(
        "x5", '{"etag": "e1", "release": "r1", '
              '"models": [{"name": 5, "steps": [{"digest": []}]}]}', release="r1")
