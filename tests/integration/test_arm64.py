"""Arm devices (issue 17). `make arm64-test` runs this file with PERCH_BIN
and PERCH_ARM64_BIN set to the arm64 binary under qemu, PERCH_AMD64_BIN and
PERCH_BUILD to the x86-64 build: then the openWakeWord answers over gRPC
are the arm64 binary's, compared with the x86-64 ONNX Runtime's, and the
fleet has an arm64 agent beside an amd64 one. In `make integration-test`
everything is amd64 and the fleet test checks the device facts alone."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import grpc_oip
from fleet_harness import HEARTBEAT, POLL, make_scorer_repo, wait_scores
from harness import PERCH_BIN, PerchServer, wait_for
from hub_harness import HubServer
from test_wakeword import (CROSS_ARCH_TOLERANCE, INPUTS, MODELS, TOLERANCE,  # noqa: F401
                           assert_close, reference, repo)

AMD64_BIN = Path(os.environ.get("PERCH_AMD64_BIN", PERCH_BIN))
ARM64_BIN = os.environ.get("PERCH_ARM64_BIN")
# Under emulation an agent enrols, pulls and loads several times slower.
FLEET_TIMEOUT = 60 if os.environ.get("PERCH_EMULATED") else 30


@pytest.fixture(scope="module")
def stubs(tmp_path_factory):
    return grpc_oip.generate_stubs(tmp_path_factory.mktemp("stubs"))


@pytest.fixture(scope="module")
def server(module_servers, repo):  # noqa: F811
    return module_servers.start(repo=repo)


@pytest.mark.parametrize("model", MODELS)
def test_wakeword_models_over_grpc_match_onnx_runtime(server, stubs, reference,  # noqa: F811
                                                       model):
    pb = stubs.pb
    described = [grpc_oip.raw_input(pb, name, array, datatype)
                 for name, (array, datatype) in INPUTS[model].items()]
    request = grpc_oip.infer_request(pb, model, [tensor for tensor, _ in described],
                                     raws=[raw for _, raw in described])
    client = grpc_oip.connect(stubs, server)
    try:
        response = client.infer(request)
    finally:
        client.close()
    outputs, _ = grpc_oip.response_arrays(response)
    assert_close(outputs, reference(model, INPUTS[model]),
                 CROSS_ARCH_TOLERANCE.get(model, TOLERANCE))


def run(binary, *args):
    result = subprocess.run([str(binary), *map(str, args)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, f"perch {args}: {result.stderr}"
    return result


def agent(binary, workdir, hub, token, name):
    """A `perch serve` of the given binary that takes its models from hub."""
    server = PerchServer(workdir, workdir, ())
    at = server.command.index("--repo")
    del server.command[at:at + 2]
    server.command[0] = str(binary)
    server.command += ["--hub", hub.url, "--token", token, "--device", name,
                       "--state", str(workdir / f"state-{name}"),
                       "--hub-poll", POLL, "--heartbeat", HEARTBEAT]
    return server


def device(hub, name):
    response = hub.request("GET", f"/api/v1/devices/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def applied_all_it_was_told(hub, workdir, name):
    """True once the device serves the desired state the hub has for it now:
    read with the device's own token, compared with its last heartbeat."""
    saved = json.loads((workdir / f"state-{name}" / "fleet" / "device.json").read_text())
    desired = hub.request("GET", f"/api/v1/devices/{name}/desired-state",
                          token=saved["token"])
    assert desired.status_code == 200, desired.text
    heartbeat = device(hub, name).get("heartbeat") or {}
    return heartbeat.get("applied_etag") == desired.json()["etag"], desired.json()


@pytest.fixture
def started(tmp_path):
    """Starts servers (hubs and agents) made here, whatever binary they run;
    stops them after the test."""
    running = []

    def start(server):
        running.append(server)
        return server.start()
    yield start
    for server in reversed(running):
        if server.process is not None and server.process.poll() is None:
            server.stop()


def test_devices_report_their_facts_and_deployments_select_on_them(started, tmp_path):
    hub = HubServer(tmp_path / "hub", ())
    (tmp_path / "hub").mkdir()
    hub.command[0] = str(AMD64_BIN)
    started(hub)
    response = hub.request("POST", "/api/v1/locations", json={"name": "tower"})
    assert response.status_code == 201, response.text
    token = response.json()["enrolment_token"]
    repo = make_scorer_repo(tmp_path / "models")
    reference_1 = f"{hub.host}/fleet/scorer:1"
    run(AMD64_BIN, "push", repo, reference_1, "--version", "1", "--token", hub.admin_token)

    devices = {"pc": AMD64_BIN}
    if ARM64_BIN:
        devices["pi"] = ARM64_BIN
    agents = {name: started(agent(binary, tmp_path, hub, token, name))
              for name, binary in devices.items()}
    def heard_from(name):
        response = hub.request("GET", f"/api/v1/devices/{name}")
        return response.status_code == 200 and response.json().get("heartbeat")
    for name in agents:
        wait_for(lambda name=name: heard_from(name), FLEET_TIMEOUT)

    pc = device(hub, "pc")
    assert pc["architecture"] == "amd64"
    facts = pc["facts"]
    assert facts["architecture"] == "amd64"
    assert facts["cores"] >= 1 and facts["memory_bytes"] > 0
    assert facts["cpu_model"] and facts["cpu_features"]
    assert facts["onnxruntime_version"].startswith("1.")
    assert "cpu" in facts["execution_providers"]
    assert facts["perch_version"] == pc["perch_version"]
    # No GPU on this machine: no accelerator, and a deployment that needs
    # one reaches no device.
    assert facts["accelerators"] == []
    assert pc["heartbeat"]["facts"] == facts
    out = run(AMD64_BIN, "deploy", reference_1, "--name", "gpu-scorer", "--accelerator",
              "nvidia", "--hub", hub.url, "--token", hub.admin_token)
    assert "matches no device" in out.stderr, out.stderr

    if not ARM64_BIN:
        pytest.skip("the arm64 half needs PERCH_ARM64_BIN: run `make arm64-test`")
    pi = device(hub, "pi")
    assert pi["architecture"] == "arm64"
    assert pi["facts"]["architecture"] == "arm64"
    assert pi["facts"]["onnxruntime_version"].startswith("1.30"), pi["facts"]

    run(AMD64_BIN, "deploy", reference_1, "--name", "arm-scorer", "--architecture", "arm64",
        "--hub", hub.url, "--token", hub.admin_token)
    wait_scores([agents["pi"]], 11.0, timeout=FLEET_TIMEOUT)
    # The amd64 agent applied its own desired state, which has no scorer.
    wait_for(lambda: applied_all_it_was_told(hub, tmp_path, "pc")[0], FLEET_TIMEOUT)
    assert applied_all_it_was_told(hub, tmp_path, "pc")[1]["models"] == []
    # pc serves no scorer itself; pi, of the same location, may answer for it.
    answer = agents["pc"].infer("scorer", {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [10.0]}]})
    assert answer.status_code != 200 or answer.headers.get("Perch-Device") == "pi", (
        answer.status_code, dict(answer.headers))
    assert [m["name"] for m in device(hub, "pi")["heartbeat"]["models"]] == ["scorer"]
