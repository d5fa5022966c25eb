"""Models that are not ONNX: a scikit-learn model served by its own small
OIP server, which perch starts under bubblewrap, supervises and serves over
REST, gRPC and MQTT next to an ONNX model (issue 15)."""

import json
import os
import signal
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import grpc_oip
import oip
from grpc_oip import grpc_stubs  # noqa: F401 (a fixture)
from batch_harness import run_batch
from fleet_harness import admin, create_location, device_report, fleet_agent
from harness import copy_models, wait_for
from mqtt_harness import Broker, Client, unique, wait_online
from registry_harness import Registry, digest_of, index_row, model_server, perch
from process_models import train_iris, write_process_model

pytestmark = pytest.mark.skipif(not Path("/usr/bin/bwrap").exists(),
                                reason="bubblewrap is not installed")

ONNX_MODEL = "identity_fp32"
SERVER_TIMEOUT = 15  # a restart: backoff, a Python start, the sklearn import


def server_pids(marker):
    """The pids of processes whose environment holds MARKER=marker."""
    pids = []
    needle = f"MARKER={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0") and b"server.py" in cmdline \
                and not cmdline.startswith(b"/usr/bin/bwrap"):
            pids.append(int(entry.name))
    return pids


def full_log(server):
    """All of the agent's log so far (server.logs() keeps only its end)."""
    return server._stderr_path.read_text(errors="replace")


def index_entry(server, name):
    for entry in server.post("/v2/repository/index").json():
        if entry["name"] == name:
            return entry
    pytest.fail(f"{name} is not in the repository index")


@pytest.fixture(scope="module")
def trained():
    return train_iris()


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("broker")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def agent(module_servers, broker, trained, tmp_path_factory):
    """One agent (REST, gRPC, MQTT) with the sklearn model, its misbehaving
    siblings and an ONNX model; its --state folder is what the sandbox must
    hide."""
    workdir = tmp_path_factory.mktemp("process-models")
    repo = copy_models(workdir / "repo", [ONNX_MODEL])
    state = workdir / "state"
    state.mkdir()
    (state / "hub-token").write_text("secret")
    model, _ = trained
    write_process_model(repo, "iris", model)
    write_process_model(repo, "garbage", model, env={"MODE": "garbage"})
    write_process_model(repo, "nosy", model, env={
        "MODE": "read_state", "STATE_DIR": str(state)})
    write_process_model(repo, "hog", model, runtime={"memory_mb": 400},
                        env={"MODE": "alloc", "ALLOC_MB": "800"})
    write_process_model(repo, "stuck", model, runtime={"ready_timeout_ms": 1000},
                        env={"MODE": "never_ready"})
    write_process_model(repo, "bare", model, runtime={"sandbox": False})
    write_process_model(repo, "local", model, runtime={"listen": "unix"})
    return module_servers.start(repo=repo, args=[
        "--state", state, "--mqtt", broker.url, "--location", "lab", "--device", "d1"])


def iris_request(x):
    return {"inputs": [oip.json_input("input", x, "FP32")]}


def test_rest_answers_equal_predict_proba(agent, trained):
    model, x = trained
    response = agent.infer("iris", iris_request(x[:20]))
    assert response.status_code == 200, response.text
    outputs = oip.outputs_by_name(response.json())
    np.testing.assert_allclose(outputs["probabilities"],
                               model.predict_proba(x[:20]), rtol=0, atol=1e-12)
    assert list(outputs["label"]) == list(model.predict(x[:20]))
    # The ONNX model next to it serves as before.
    onnx = agent.infer(ONNX_MODEL, {"inputs": [oip.json_input(
        "INPUT0", np.ones((1, 4), np.float32), "FP32")]})
    assert onnx.status_code == 200, onnx.text


def test_a_server_on_a_unix_socket_answers_the_same(agent, trained):
    model, x = trained
    response = agent.infer("local", iris_request(x[:7]))
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(oip.outputs_by_name(response.json())["probabilities"],
                               model.predict_proba(x[:7]), atol=1e-12)
    assert "[local:1] serving local on /" in full_log(agent)


def test_metadata_comes_from_the_process(agent):
    metadata = agent.get("/v2/models/iris").json()
    assert metadata["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 4]}], metadata
    assert [o["name"] for o in metadata["outputs"]] == ["probabilities", "label"]


def test_grpc_answers_equal_predict_proba(agent, trained, grpc_stubs):  # noqa: F811
    model, x = trained
    client = grpc_oip.connect(grpc_stubs, agent)
    try:
        pb = grpc_stubs.pb
        request = grpc_oip.infer_request(pb, "iris", [grpc_oip.typed_input(
            pb, "input", x[:5], "FP32")])
        arrays, _ = grpc_oip.response_arrays(client.infer(request))
    finally:
        client.close()
    np.testing.assert_allclose(arrays["probabilities"],
                               model.predict_proba(x[:5]), atol=1e-12)


def test_request_parameters_reach_the_server(agent, trained, grpc_stubs):  # noqa: F811
    """The Open Inference Protocol passes a request's parameters through: the
    model's server gets them over REST and gRPC, but for the ones perch reads
    for its own hop (timeout, binary_data_output)."""
    _, x = trained
    response = agent.infer("iris", {**iris_request(x[:1]), "parameters": {
        "stream_id": "rest-1", "gain": 2, "ratio": 0.5, "loud": True,
        "timeout": 10_000_000, "binary_data_output": False}})
    assert response.status_code == 200, response.text
    wait_for(lambda: 'PARAMETERS: {"gain": 2, "loud": true, "ratio": 0.5, '
             '"stream_id": "rest-1"}' in full_log(agent), SERVER_TIMEOUT,
             what=lambda: "the REST parameters in the server's output: "
             + full_log(agent)[-2000:])
    client = grpc_oip.connect(grpc_stubs, agent)
    try:
        pb = grpc_stubs.pb
        request = grpc_oip.infer_request(pb, "iris", [grpc_oip.typed_input(
            pb, "input", x[:1], "FP32")])
        request.parameters["stream_id"].string_param = "grpc-1"
        request.parameters["timeout"].int64_param = 10_000_000
        client.infer(request)
    finally:
        client.close()
    wait_for(lambda: 'PARAMETERS: {"stream_id": "grpc-1"}' in full_log(agent),
             SERVER_TIMEOUT, what=lambda: "the gRPC parameters in the server's "
             "output: " + full_log(agent)[-2000:])


def test_mqtt_answers_equal_predict_proba(agent, broker, trained):
    model, x = trained
    client = Client(broker.port).connect()
    try:
        wait_online(client, "lab", "d1")
        reply = unique("replies/")
        client.subscribe(reply)
        client.publish("perch/lab/d1/infer/iris", iris_request(x[:3]),
                       response_topic=reply, correlation=b"c1")
        answer = client.next(SERVER_TIMEOUT)
        assert answer is not None, "no MQTT answer" + full_log(agent)[-4000:]
        outputs = oip.outputs_by_name(answer.json())
    finally:
        client.close()
    np.testing.assert_allclose(outputs["probabilities"],
                               model.predict_proba(x[:3]), atol=1e-12)


def test_garbage_answer_is_a_502_and_perch_stays_up(agent, trained):
    response = agent.infer("garbage", iris_request(trained[1][:1]))
    assert response.status_code == 502, response.text
    assert "not an inference response" in response.json()["error"]
    assert agent.get("/v2/health/live").status_code == 200


def test_the_sandbox_hides_the_agents_state(agent):
    wait_for(lambda: "STATE-ACCESS" in full_log(agent), 5)
    log = full_log(agent)
    assert "[nosy:1] STATE-ACCESS: denied FileNotFoundError" in log, log[-3000:]
    assert "STATE-ACCESS: read" not in log


def test_allocating_past_the_memory_limit_fails(agent, trained):
    response = agent.infer("hog", iris_request(trained[1][:1]))
    assert response.status_code == 502, response.text
    wait_for(lambda: "[hog:1] ALLOC: MemoryError" in full_log(agent), 5)
    assert agent.get("/v2/health/live").status_code == 200


def test_a_server_never_ready_leaves_the_model_failed(agent, trained):
    entry = index_entry(agent, "stuck")
    assert entry["state"] == "UNAVAILABLE", entry
    assert "did not answer GET /v2/health/ready with 200 within 1000 ms" \
        in entry["reason"], entry
    response = agent.infer("stuck", iris_request(trained[1][:1]))
    assert response.status_code == 503, response.text
    assert server_pids_of_mode("never_ready") == []


def server_pids_of_mode(mode):
    return [pid for pid in Path("/proc").iterdir() if pid.name.isdigit()
            and _environ_has(pid, f"MODE={mode}")]


def _environ_has(pid, entry):
    try:
        return entry.encode() in (pid / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def test_a_killed_server_is_restarted_and_serves(servers, trained, tmp_path):
    model, x = trained
    marker = uuid.uuid4().hex
    write_process_model(tmp_path / "repo", "iris", model, env={"MARKER": marker})
    agent = servers.start(repo=tmp_path / "repo", args=["--state", tmp_path / "state"])
    [pid] = server_pids(marker)
    os.kill(pid, signal.SIGKILL)
    # A request sent during the restart waits for it (runtime.request_timeout_ms).
    response = agent.infer("iris", iris_request(x[:2]), timeout=SERVER_TIMEOUT)
    assert response.status_code == 200, response.text + agent.logs()
    np.testing.assert_allclose(oip.outputs_by_name(response.json())["probabilities"],
                               model.predict_proba(x[:2]), atol=1e-12)
    [restarted] = server_pids(marker)
    assert restarted != pid
    assert "model 'iris' version 1: its server exited with status 137; restarting it" \
        in full_log(agent) or "its server was killed by signal 9; restarting it" \
        in full_log(agent), full_log(agent)[-3000:]

    # Unloading the model stops its server.
    assert agent.post("/v2/repository/models/iris/unload").status_code == 200
    wait_for(lambda: server_pids(marker) == [], 5, what="the server to stop")


def test_requests_during_a_restart_wait_up_to_their_deadline(servers, trained, tmp_path):
    """A request's own timeout bounds its wait for a restarting server
    (504 when it passes), the configured request_timeout_ms bounds the
    wait of one without (503), even when the request allows longer."""
    model, x = trained
    marker = uuid.uuid4().hex
    write_process_model(tmp_path / "repo", "iris", model,
                        runtime={"sandbox": False, "request_timeout_ms": 500},
                        env={"MARKER": marker, "STARTS_FILE": str(tmp_path / "starts"),
                             "RESTART_DELAY_S": "2.5"})
    agent = servers.start(repo=tmp_path / "repo", args=["--state", tmp_path / "state"])
    [pid] = server_pids(marker)
    os.kill(pid, signal.SIGKILL)

    def timed(request):
        started = time.monotonic()
        response = agent.infer("iris", request, timeout=SERVER_TIMEOUT)
        return response, time.monotonic() - started

    response, took = timed({**iris_request(x[:1]), "parameters": {"timeout": 300_000}})
    assert response.status_code == 504, response.text  # DEADLINE_EXCEEDED
    assert 0.25 <= took < 2, took
    response, took = timed(iris_request(x[:1]))
    assert response.status_code == 503, response.text
    assert "restarting" in response.json()["error"]
    assert 0.45 <= took < 2, took
    response, took = timed({**iris_request(x[:2]), "parameters": {"timeout": 20_000_000}})
    assert response.status_code == 200, response.text
    assert took > 1, took  # it waited past request_timeout_ms for the restart
    np.testing.assert_allclose(oip.outputs_by_name(response.json())["probabilities"],
                               model.predict_proba(x[:2]), atol=1e-12)


def test_the_server_dies_with_a_killed_agent(servers, trained, tmp_path):
    model, _ = trained
    marker = uuid.uuid4().hex
    write_process_model(tmp_path / "repo", "iris", model, env={"MARKER": marker})
    agent = servers.start(repo=tmp_path / "repo", args=["--state", tmp_path / "state"])
    assert len(server_pids(marker)) == 1
    agent.stop(signal.SIGKILL)
    wait_for(lambda: server_pids(marker) == [], 5, what="no orphan server")


def test_unsandboxed_only_when_asked_and_logged(agent, trained):
    assert agent.infer("bare", iris_request(trained[1][:1])).status_code == 200
    log = full_log(agent)
    assert "model 'bare' version 1 runs WITHOUT a sandbox" in log
    assert "model 'bare' version 1: started its server" in log
    assert "NOT sandboxed" in log and ", sandboxed)" in log


def test_travels_through_the_oci_store(trained, tmp_path):
    """perch push of the model folder, then an agent that pulls and serves it."""
    model, x = trained
    write_process_model(tmp_path / "src", "iris", model)
    registry = Registry(tmp_path / "registry").start()
    agent = None
    try:
        ref = f"{registry.host}/models/iris:1"
        digest = digest_of(perch("push", tmp_path / "src" / "iris", ref).stdout)
        state = tmp_path / "state"
        agent = model_server(tmp_path, [ref], state).start()
        response = agent.infer("iris", iris_request(x[:4]))
        assert response.status_code == 200, response.text
        np.testing.assert_allclose(oip.outputs_by_name(response.json())["probabilities"],
                                   model.predict_proba(x[:4]), atol=1e-12)
        assert index_row(agent, "iris")["artifact"] == {"reference": ref, "digest": digest}
        assert (state / "models" / "iris" / "1" / "server.py").exists()
    finally:
        if agent is not None:
            assert agent.stop() == 0
        registry.stop()


def test_a_fleet_deploys_it_like_an_onnx_model(hubs, trained, tmp_path):
    """Pushed to the hub's registry and deployed with `perch deploy`: the
    agent pulls it, starts its server sandboxed, serves it; a new revision
    replaces the server; the server cannot see the agent's credentials."""
    model, x = trained
    hub = hubs.start()
    marker = uuid.uuid4().hex
    source = tmp_path / "src"
    write_process_model(source, "iris", model, env={"MARKER": marker})
    write_process_model(source, "iris2", model, env={
        "MARKER": marker, "MODE": "read_state", "STATE_DIR": str(tmp_path / "state")})
    write_process_model(source, "stuck", model, runtime={"ready_timeout_ms": 1000},
                        env={"MODE": "never_ready"})
    references = [f"{hub.host}/fleet/iris:{tag}" for tag in ("1", "2", "3")]
    for folder, reference in zip(("iris", "iris2", "stuck"), references):
        perch("push", source / folder, reference, "--name", "iris", "--token", hub.admin_token)
    agent = fleet_agent(tmp_path, hub.url, create_location(hub, "plant"), "d1",
                        tmp_path / "state").start()
    try:
        def probabilities():
            response = agent.infer("iris", iris_request(x[:4]))
            if response.status_code != 200:
                return None
            return oip.outputs_by_name(response.json())["probabilities"]

        admin(hub, "deploy", references[0], "--name", "iris")
        wait_for(lambda: probabilities() is not None, 30,
                 what=lambda: "the agent to serve iris\n" + full_log(agent)[-3000:])
        np.testing.assert_allclose(probabilities(), model.predict_proba(x[:4]), atol=1e-12)
        [first] = server_pids(marker)
        assert "model 'iris' version 1: started its server" in full_log(agent)
        assert index_row(agent, "iris")["artifact"]["reference"] == references[0]

        # A new revision: the agent swaps in the new artifact and stops the
        # old server.
        admin(hub, "deploy", references[1], "--name", "iris")
        wait_for(lambda: index_row(agent, "iris").get("artifact", {}).get("reference")
                 == references[1] and server_pids(marker) not in ([], [first]), 30,
                 what=lambda: "the second revision's server\n" + full_log(agent)[-3000:])
        np.testing.assert_allclose(probabilities(), model.predict_proba(x[:4]), atol=1e-12)
        wait_for(lambda: first not in server_pids(marker), 5, what="the old server to stop")

        # Its files sit in the agent's state, next to the credentials; the
        # sandbox shows it its own version folder and nothing else there.
        log = full_log(agent)
        assert "STATE-ACCESS: read" in log, log[-3000:]
        listing = log.split("STATE-ACCESS: read", 1)[1].splitlines()[0]
        state = tmp_path / "state"
        started = [line for line in log.splitlines() if "started its server" in line][-1]
        version_folder = Path(started.split(" --chdir ")[1].split(" ")[0])
        on_the_way = version_folder.relative_to(state).parts[0]
        assert {p.name for p in state.iterdir()} - {on_the_way}  # there is more to hide
        assert listing.strip() == repr([on_the_way]), listing

        # A revision whose server never becomes ready is refused, as an ONNX
        # model that fails its warm-up: the agent says so and serves on.
        admin(hub, "deploy", references[2], "--name", "iris")
        wait_for(lambda: any("refused" in error for error in device_report(hub, "d1").get(
            "heartbeat", {}).get("errors", [])), 30,
            what=lambda: "the agent to refuse the update: " + str(device_report(hub, "d1")))
        report = device_report(hub, "d1")["heartbeat"]
        assert any("did not answer GET /v2/health/ready" in error
                   for error in report["errors"]), report
        np.testing.assert_allclose(probabilities(), model.predict_proba(x[:4]), atol=1e-12)
        assert server_pids_of_mode("never_ready") == []
    finally:
        if agent.process.poll() is None:
            assert agent.stop() == 0
    wait_for(lambda: server_pids(marker) == [], 5, what="no server after the agent stopped")


def test_perch_batch_runs_it(trained, tmp_path):
    """`perch batch` over a process model: its records equal predict_proba."""
    model, x = trained
    marker = uuid.uuid4().hex
    write_process_model(tmp_path / "repo", "iris", model, env={"MARKER": marker})
    requests_file = tmp_path / "in" / "rows.jsonl"
    requests_file.parent.mkdir()
    requests_file.write_text("".join(
        json.dumps({"id": str(i), **iris_request(x[i:i + 2])}) + "\n" for i in range(0, 10, 2)))
    run_batch("--model", tmp_path / "repo" / "iris", "--input", requests_file,
              "--output", tmp_path / "out", "--state", tmp_path / "state")
    records = [json.loads(line) for line in
               (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["0", "2", "4", "6", "8"], records
    for i, record in zip(range(0, 10, 2), records):
        np.testing.assert_allclose(oip.outputs_by_name(record)["probabilities"],
                                   model.predict_proba(x[i:i + 2]), atol=1e-12)
    # Stopped with the job: the sandbox's PID namespace is torn down as perch
    # exits, which a loaded machine may finish a moment after the job returns.
    wait_for(lambda: server_pids(marker) == [], 5, what="no server after the batch job")
