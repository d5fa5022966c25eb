"""A pipeline pushed and pulled as one OCI artifact that pins its step
models by manifest digest (docs/model-store.md, "Pipelines"): `perch push`
of a pipeline folder, `perch pull`, `perch serve --model` and a fleet
deployment of it against the hub; a pinned digest the registry does not
hold and a step whose bytes do not match are refused, naming the step."""

import json
import shutil
import subprocess

import pytest

from fleet_harness import admin, create_location, fleet_agent
from harness import TEST_MODELS, PerchServer, wait_for
from hub_harness import OCI_EMPTY, OCI_MANIFEST, descriptor, sha256
from registry_harness import BrokenRegistry, digest_of, index_row, model_server, perch

# x -> scorer version 2 (adds 2) -> offset (adds 3): answers x + 5.
CHAIN = {
    "kind": "pipeline",
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [1]}],
    "outputs": [{"name": "z", "datatype": "FP32", "dims": [1]}],
    "steps": [
        {"name": "add2", "model": "scorer", "version": "2",
         "input_map": {"INPUT0": "x"}, "output_map": {"OUTPUT0": "y"}},
        {"name": "add3", "model": "offset",
         "input_map": {"INPUT0": "y"}, "output_map": {"OUTPUT0": "z"}},
    ],
}
CONFIG_TYPE = "application/vnd.perch.model.config.v1+json"


def make_repo(folder):
    """chain/model.json beside its step models: scorer 1..3, offset 1
    (multi_version's version 3, which adds 3)."""
    for version in (1, 2, 3):
        shutil.copytree(TEST_MODELS / "multi_version" / str(version),
                        folder / "scorer" / str(version))
    shutil.copytree(TEST_MODELS / "multi_version" / "3", folder / "offset" / "1")
    (folder / "chain").mkdir()
    (folder / "chain" / "model.json").write_text(json.dumps(CHAIN))
    return folder


def chain(server, value=10.0):
    answer = server.infer("chain", {"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [1], "data": [value]}]})
    assert answer.status_code == 200, answer.text
    return answer.json()["outputs"][0]["data"][0]


def pinned_digests(model_json):
    return {step["model"]: step["digest"]
            for step in model_json["steps"] if "model" in step}


@pytest.fixture
def pushed(hubs, tmp_path):
    """A hub holding the chain pushed from a local repository."""
    hub = hubs.start()
    repo = make_repo(tmp_path / "src")
    ref = f"{hub.host}/pipes/chain:1"
    out = perch("push", repo / "chain", ref, "--token", hub.admin_token).stdout
    return hub, repo, ref, digest_of(out), out


def test_push_pins_the_steps_and_pull_installs_them(pushed, tmp_path):
    hub, repo, ref, digest, out = pushed
    assert "step add2: pushed scorer version 2" in out, out
    assert "step add3: pushed offset version 1" in out, out
    # The pipeline's artifact: a perch model whose config says "pipeline",
    # whose only layer is the empty descriptor, and whose model.json pins
    # each step to the manifest the push just gave it.
    inspected = json.loads(perch("inspect", ref, "--json").stdout)
    assert inspected["artifactType"] == "application/vnd.perch.model.v1"
    assert inspected["model"]["platform"] == "pipeline"
    assert inspected["model"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [1]}]
    pins = pinned_digests(inspected["model"]["model_config"])
    scorer = json.loads(perch("inspect", f"{hub.host}/pipes/scorer:2", "--json").stdout)
    offset = json.loads(perch("inspect", f"{hub.host}/pipes/offset:1", "--json").stdout)
    assert pins == {"scorer": scorer["digest"], "offset": offset["digest"]}
    manifest = hub.request("GET", f"/v2/pipes/chain/manifests/{digest}",
                           headers={"Accept": OCI_MANIFEST}).json()
    assert manifest["layers"] == [descriptor(OCI_EMPTY, b"{}")]
    assert manifest["annotations"]["dev.perch.model.platform"] == "pipeline"
    # Pushing again changes nothing: the same digest.
    again = perch("push", repo / "chain", ref, "--token", hub.admin_token).stdout
    assert digest_of(again) == digest

    to = tmp_path / "pulled"
    pulled = perch("pull", ref, "--to", to, "--cache", tmp_path / "cache").stdout
    assert "step model scorer version 2: pulled" in pulled, pulled
    assert pinned_digests(json.loads((to / "chain" / "model.json").read_text())) == pins
    record = json.loads((to / "scorer" / "2" / ".perch-artifact.json").read_text())
    assert record["digest"] == pins["scorer"]
    assert not (to / "scorer" / "1").exists()
    server = PerchServer(to, tmp_path).start()
    try:
        assert chain(server) == 15.0
    finally:
        assert server.stop() == 0


def test_serve_model_of_a_pipeline_and_offline(pushed, tmp_path):
    hub, _, ref, digest, _ = pushed
    state = tmp_path / "state"
    agent = model_server(tmp_path, [ref], state).start()
    try:
        assert chain(agent) == 15.0
        assert index_row(agent, "chain")["artifact"] == {"reference": ref, "digest": digest}
        # The steps serve on their own too, named by their pinned digests.
        pins = pinned_digests(json.loads(
            (state / "models" / "chain" / "model.json").read_text()))
        assert index_row(agent, "scorer")["artifact"]["digest"] == pins["scorer"]
    finally:
        assert agent.stop() == 0
    # The hub gone: the pipeline and its steps come from the cache.
    hub.stop()
    offline = model_server(tmp_path, [ref], state).start()
    try:
        assert chain(offline) == 15.0
    finally:
        assert offline.stop() == 0


def push_with_pin(hub, repo_name, tag, model_config):
    """A pipeline manifest written by hand (as another tool would): the
    config blob, the empty layer, the manifest. Returns the reference."""
    config = json.dumps({"name": "chain", "version": 1, "platform": "pipeline",
                         "architectures": ["amd64", "arm64"],
                         "inputs": [], "outputs": [],
                         "model_config": model_config}).encode()
    hub.push_blob(repo_name, config)
    hub.push_blob(repo_name, b"{}")
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.perch.model.v1",
                "config": descriptor(CONFIG_TYPE, config),
                "layers": [descriptor(OCI_EMPTY, b"{}")],
                "annotations": {"dev.perch.model.platform": "pipeline"}}
    response = hub.push_manifest(repo_name, tag, manifest)
    assert response.status_code == 201, response.text
    return f"{hub.host}/{repo_name}:{tag}"


def test_a_pinned_digest_the_registry_lacks_is_refused(pushed, tmp_path):
    hub, _, ref, _, _ = pushed
    body = json.loads(json.dumps(CHAIN))
    missing = sha256(b"no such manifest")
    for step in body["steps"]:
        step.update(version="2" if step["model"] == "scorer" else "1",
                    digest=missing if step["model"] == "offset" else
                    json.loads(perch("inspect", f"{hub.host}/pipes/scorer:2",
                                     "--json").stdout)["digest"])
    bad = push_with_pin(hub, "pipes/chain", "bad", body)
    refused = perch("pull", bad, "--to", tmp_path / "pulled", "--cache", tmp_path / "cache",
                    check=False)
    assert refused.returncode != 0
    assert (f"pipeline 'chain': step add3 (model 'offset' pinned to "
            f"{hub.host}/pipes/offset@{missing})") in refused.stderr, refused.stderr
    assert not (tmp_path / "pulled" / "chain").exists()
    # An agent given only that reference does not start, and says why.
    started = perch("serve", "--model", bad, "--state", tmp_path / "state", "--http-port", "0",
                    check=False)
    assert started.returncode != 0
    assert "step add3 (model 'offset'" in started.stderr, started.stderr
    # A step not pinned at all (a model.json not written by perch push).
    unpinned = push_with_pin(hub, "pipes/chain", "unpinned", CHAIN)
    refused = perch("pull", unpinned, "--to", tmp_path / "pulled", "--cache",
                    tmp_path / "cache", check=False)
    assert "step 'add2' (model 'scorer') is not pinned" in refused.stderr, refused.stderr
    # The good pipeline still pulls.
    assert perch("pull", ref, "--to", tmp_path / "good",
                 "--cache", tmp_path / "cache").returncode == 0


@pytest.fixture
def broken():
    registry = BrokenRegistry().start()
    yield registry
    registry.stop()


def pipeline_on(broken, tag, scorer, offset):
    """The chain on a BrokenRegistry, pinning scorer and offset."""
    body = json.loads(json.dumps(CHAIN))
    body["steps"][0].update(version="2", digest=scorer)
    body["steps"][1].update(version="1", digest=offset)
    config = json.dumps({"name": "chain", "version": 1, "platform": "pipeline",
                         "inputs": [], "outputs": [], "model_config": body}).encode()
    broken.blobs[sha256(config)] = config
    broken.blobs[sha256(b"{}")] = b"{}"
    broken.manifests[tag] = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.perch.model.v1",
        "config": descriptor(CONFIG_TYPE, config),
        "layers": [descriptor(OCI_EMPTY, b"{}")],
        "annotations": {"dev.perch.model.platform": "pipeline"}}).encode()
    return f"127.0.0.1:{broken.port}/pipes/chain:{tag}"


def test_a_step_whose_bytes_do_not_match_is_refused(broken, tmp_path):
    onnx = (TEST_MODELS / "multi_version" / "2" / "model.onnx").read_bytes()
    tensor = [{"name": "INPUT0", "datatype": "FP32", "shape": [-1]}]
    output = [{"name": "OUTPUT0", "datatype": "FP32", "shape": [-1]}]
    scorer = broken.add_model("2", "scorer", 2, {"model.onnx": onnx}, tensor, output)
    offset = broken.add_model("o1", "offset", 1, {"model.onnx": onnx}, tensor, output)
    ref = pipeline_on(broken, "1", scorer, offset)
    # A pin naming another model's manifest is refused.
    mixed = pipeline_on(broken, "mixed", scorer, scorer)
    refused = perch("pull", mixed, "--to", tmp_path / "pulled", "--cache", tmp_path / "cache",
                    check=False)
    assert ("step add3 (model 'offset' pinned to" in refused.stderr and
            "it holds model 'scorer' version 2, but the pipeline names model 'offset' "
            "version 1" in refused.stderr), refused.stderr
    # The step's model.onnx is served with one bit flipped.
    # (A fresh cache: the one above holds the good bytes already.)
    broken.faults[sha256(onnx)] = "bitflip"
    refused = perch("pull", ref, "--to", tmp_path / "pulled", "--cache", tmp_path / "fresh",
                    check=False)
    assert refused.returncode != 0
    assert "pipeline 'chain': step add2 (model 'scorer' pinned to" in refused.stderr, \
        refused.stderr
    assert "file model.onnx" in refused.stderr, refused.stderr
    assert not (tmp_path / "pulled" / "scorer").exists()
    assert not (tmp_path / "pulled" / "chain").exists()
    # The bytes right again: it pulls.
    del broken.faults[sha256(onnx)]
    assert perch("pull", ref, "--to", tmp_path / "pulled",
                 "--cache", tmp_path / "fresh").returncode == 0


def test_fleet_deploys_a_pipeline(pushed, tmp_path):
    hub, _, ref, _, _ = pushed
    agent = fleet_agent(tmp_path, hub.url, create_location(hub, "site"), "d1",
                        tmp_path / "state-d1").start()
    try:
        admin(hub, "deploy", ref, "--name", "chain")

        def answers():
            response = agent.infer("chain", {"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]})
            return response.status_code == 200 and \
                response.json()["outputs"][0]["data"][0] == 6.0
        wait_for(answers, 30, what=lambda: agent.logs()[-3000:])
    finally:
        assert agent.stop() == 0


def test_step_signatures_travel_and_meet_the_trust_policy(hubs, tmp_path):
    """A signed step's signature is pushed with it and installed beside it;
    the agent's trust policy checks each step as any model: the signed one
    serves, the unsigned one is refused, and the pipeline is not ready."""
    hub = hubs.start()
    repo = make_repo(tmp_path / "src")
    private, public = tmp_path / "site.pem", tmp_path / "site.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", private], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", private, "-pubout", "-out", public],
                   check=True, capture_output=True)
    perch("sign", repo / "scorer" / "2", "--key", private)
    ref = f"{hub.host}/pipes/chain:1"
    out = perch("push", repo / "chain", ref, "--token", hub.admin_token).stdout
    assert "signature: sha256:" in out, out
    state = tmp_path / "state"
    agent = model_server(tmp_path, [ref], state, args=["--trust-key", public]).start()
    try:
        assert (state / "models" / "scorer" / "2" / "model.sig").is_file()
        assert agent.get("/v2/models/scorer/ready").status_code == 200
        offset = index_row(agent, "offset")
        assert "refused by the trust policy, unsigned" in offset["reason"], offset
        assert agent.get("/v2/models/chain/ready").status_code != 200
    finally:
        assert agent.stop() == 0
