"""Issue 4's whole story against perch's own hub: a new user pushes
hey_jarvis to the hub, starts an agent with --model HUB/wakeword/hey_jarvis:1,
gets inferences, stops the hub, restarts the agent and still gets them. And
the hub interoperates with real OCI tools: skopeo copies a perch model from
the hub to an oci: layout and on into Distribution, skopeo inspect reads it,
and perch pulls it back from Distribution and serves it."""

import json
import shutil

import pytest

from harness import WAKEWORD_MODELS, PerchServer
from registry_harness import (Registry, digest_of, index_row, infer,
                              model_server, perch, skopeo)

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"


def push_jarvis(hub, tmp_path):
    repo = tmp_path / "src"
    (repo / "hey_jarvis" / "1").mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, repo / "hey_jarvis" / "1" / "model.onnx")
    ref = f"{hub.host}/wakeword/hey_jarvis:1"
    pushed = perch("push", repo / "hey_jarvis", ref, "--token", hub.admin_token)
    return repo, ref, digest_of(pushed.stdout)


def test_push_to_the_hub_serve_and_survive_the_hub_going_away(hubs, tmp_path):
    hub = hubs.start()
    repo, ref, digest = push_jarvis(hub, tmp_path)
    # Pushing needs the admin token: without one the hub refuses.
    refused = perch("push", repo / "hey_jarvis", f"{hub.host}/wakeword/other:1", check=False)
    assert refused.returncode != 0 and "token" in refused.stderr.lower()

    listed = perch("ls", f"{hub.host}/wakeword/hey_jarvis").stdout
    assert "1" in listed.split()
    state = tmp_path / "state"
    local = PerchServer(repo, tmp_path, ()).start()
    agent = model_server(tmp_path, [ref], state).start()
    try:
        expected = infer(local, "hey_jarvis")
        assert infer(agent, "hey_jarvis") == expected
        assert index_row(agent, "hey_jarvis")["artifact"] == {"reference": ref, "digest": digest}
    finally:
        assert agent.stop() == 0
        assert local.stop() == 0

    hub.stop()
    restarted = model_server(tmp_path, [ref], state).start()
    try:
        assert infer(restarted, "hey_jarvis") == expected
        assert index_row(restarted, "hey_jarvis")["artifact"]["digest"] == digest
    finally:
        assert restarted.stop() == 0
    assert f"registry {hub.host} is unreachable" in restarted.logs()


@pytest.fixture
def distribution(tmp_path):
    registry = Registry(tmp_path / "distribution").start()
    yield registry
    registry.stop()


def test_skopeo_carries_a_model_from_the_hub_into_distribution(hubs, distribution, tmp_path):
    hub = hubs.start()
    _, ref, digest = push_jarvis(hub, tmp_path)

    inspected = json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                                  f"docker://{ref}").stdout)
    assert inspected["artifactType"] == "application/vnd.perch.model.v1"

    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:1")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest

    copy = f"{distribution.host}/mirror/hey_jarvis:1"
    skopeo("copy", "--dest-tls-verify=false", f"oci:{layout}:1", f"docker://{copy}")
    assert json.loads(skopeo("inspect", "--raw", "--tls-verify=false",
                             f"docker://{copy}").stdout) == inspected

    hub.stop()  # what follows needs Distribution only
    out = tmp_path / "out"
    pulled = perch("pull", copy, "--to", out, "--cache", tmp_path / "cache")
    assert digest_of(pulled.stdout) == digest
    assert (out / "hey_jarvis" / "1" / "model.onnx").read_bytes() == HEY_JARVIS.read_bytes()
    server = model_server(tmp_path, [copy], tmp_path / "state").start()
    try:
        assert len(infer(server, "hey_jarvis")) == 1
        assert index_row(server, "hey_jarvis")["artifact"]["digest"] == digest
    finally:
        assert server.stop() == 0
