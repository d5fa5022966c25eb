"""Enrolment that survives a lost answer (issue 19, flapping links): the
agent sends the enrolment key it keeps in STATE/fleet/enrolment-key, so
when the hub's answer to POST /enrol is lost after the hub enrolled the
device, the retry is answered with the same device instead of being refused
as a taken name. Another agent under the same name is still refused, with
what to do, and the first device is not disturbed. docs/fleet.md
("Enrolling again")."""

import pytest

from fault_proxy import FaultProxy
from fleet_harness import (admin, create_location, device_report,
                           fleet_agent, make_scorer_repo, push_scorer,
                           score, wait_scores)
from harness import wait_for

KEY = "a" * 64


def enrol(hub, token, name, **fields):
    body = {"name": name, **fields}
    return hub.request("POST", "/api/v1/enrol", token=token, json=body)


@pytest.fixture
def site(hubs, tmp_path):
    """A hub with scorer versions 1 and 2 pushed, version 1 deployed to
    every device, and location plant-a; yields (hub, references, token)."""
    hub = hubs.start()
    repo = make_scorer_repo(tmp_path / "models")
    references = {v: push_scorer(hub, repo, hub.host, v) for v in (1, 2)}
    token = create_location(hub, "plant-a")
    admin(hub, "deploy", references[1], "--name", "scorer")
    return hub, references, token


def test_an_enrolment_whose_answer_was_lost_is_answered_on_the_retry(site, tmp_path):
    hub, _, token = site
    proxy = FaultProxy(hub.port).start()
    proxy.lose_replies(b"POST /api/v1/enrol")
    state = tmp_path / "state-a1"
    agent = fleet_agent(tmp_path, f"http://{proxy.url}", token, "a1", state).start()
    try:
        wait_scores([agent], 11.0, timeout=30)
        assert proxy.replies_lost == 1, "the proxy lost no answer to /enrol"
        assert [d["name"] for d in hub.request("GET", "/api/v1/devices").json()] == ["a1"]
        assert "enrolled again with its enrolment key" in hub.logs(), hub.logs()
        key = state / "fleet" / "enrolment-key"
        assert key.stat().st_mode & 0o777 == 0o600
        assert len(key.read_text().strip()) == 64
        # The token of the retry is the device's: its heartbeats arrive.
        wait_for(lambda: device_report(hub, "a1").get("heartbeat", {}).get(
                     "applied_etag"), 10,
                 what=lambda: f"a heartbeat from a1: {device_report(hub, 'a1')}")
    finally:
        assert agent.stop() == 0, agent.logs()[-3000:]
        proxy.close()


def test_another_agent_under_a_taken_name_is_refused_and_the_first_keeps_working(
        site, tmp_path):
    hub, references, token = site
    first = fleet_agent(tmp_path, hub.url, token, "a1", tmp_path / "state-a1").start()
    # Its own state folder, so its own enrolment key.
    other = fleet_agent(tmp_path, hub.url, token, "a1", tmp_path / "state-other")
    try:
        wait_scores([first], 11.0, timeout=30)
        other.start()
        wait_for(lambda: "already enrolled by another agent" in other.logs(), 15,
                 what=lambda: "the second a1 to be refused:\n" + other.logs()[-3000:])
        logs = other.logs()
        assert "--device" in logs and "perch devices revoke a1" in logs, logs[-3000:]
        assert score(other) is None
        assert not (tmp_path / "state-other" / "fleet" / "device.json").exists()

        admin(hub, "deploy", references[2], "--name", "scorer")
        wait_scores([first], 12.0, timeout=30)
        assert len(hub.request("GET", "/api/v1/devices").json()) == 1
    finally:
        for agent in (other, first):
            if agent.process is not None and agent.process.poll() is None:
                assert agent.stop() == 0, agent.logs()[-3000:]


@pytest.fixture(scope="module")
def api_hub(module_hubs):
    """One hub for the API's cases, with location plant-r: (hub, token)."""
    hub = module_hubs.start()
    return hub, create_location(hub, "plant-r")


def test_the_api_answers_a_repeat_with_a_new_token_and_refuses_other_keys(api_hub):
    hub, token = api_hub
    first = enrol(hub, token, "r1", enrolment_key=KEY)
    assert first.status_code == 201, first.text
    again = enrol(hub, token, "r1", enrolment_key=KEY)
    assert again.status_code == 200, again.text
    assert again.json()["device"]["name"] == "r1"
    assert again.json()["device"]["enrolled_at"] == first.json()["device"]["enrolled_at"]
    old, new = first.json()["token"], again.json()["token"]
    assert old != new
    path = "/api/v1/devices/r1/desired-state"
    assert hub.request("GET", path, token=old).status_code == 401
    assert hub.request("GET", path, token=new).status_code == 200

    for fields in ({"enrolment_key": "b" * 64}, {}):
        refused = enrol(hub, token, "r1", **fields)
        assert refused.status_code == 409, refused.text
        assert refused.json()["code"] == "AlreadyExists"
        assert "give it another name (--device)" in refused.json()["error"]
    assert hub.request("GET", path, token=new).status_code == 200

    # The key proves the agent, not the right to enrol: the token still counts.
    assert enrol(hub, "not-a-token", "r1", enrolment_key=KEY).status_code == 401


@pytest.mark.parametrize("key,message", [
    ("", "enrolment_key: must be 32 to 128"),
    ("k" * 129, "enrolment_key: must be 32 to 128"),
    ("k" * 31, "enrolment_key: must be 32 to 128"),
    ("../" + "k" * 40, "enrolment_key: must be 32 to 128"),
    (42, "enrolment_key: must be a string"),
    ({"key": KEY}, "enrolment_key: must be a string"),
], ids=["empty", "too-long", "too-short", "not-a-key", "number", "object"])
def test_a_malformed_enrolment_key_is_refused(api_hub, key, message):
    hub, token = api_hub
    response = enrol(hub, token, "bad-key", enrolment_key=key)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "InvalidArgument"
    assert message in response.json()["error"], response.text
    assert hub.request("GET", "/api/v1/devices/bad-key").status_code == 404


def test_a_damaged_enrolment_key_is_reported_not_replaced(api_hub, tmp_path):
    hub, token = api_hub
    state = tmp_path / "state-damaged"
    (state / "fleet").mkdir(parents=True)
    (state / "fleet" / "enrolment-key").write_text("not a key\n")
    agent = fleet_agent(tmp_path, hub.url, token, "damaged", state).start()
    try:
        wait_for(lambda: "enrolment-key is damaged: remove it" in agent.logs(), 10,
                 what=lambda: "the damaged key to be reported:\n" + agent.logs()[-2000:])
        assert (state / "fleet" / "enrolment-key").read_text() == "not a key\n"
        assert hub.request("GET", "/api/v1/devices/damaged").status_code == 404
    finally:
        assert agent.stop() == 0, agent.logs()[-3000:]
