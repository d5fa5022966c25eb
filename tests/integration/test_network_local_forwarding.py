"""Network local, forwarding: three agents of one location on loopback, each
with models of its own and --peer to the other two; any agent answers any
model over REST and gRPC, naming the device that served it."""

import json
import signal
import time

import grpc
import numpy as np
import pytest
import requests

import grpc_oip
import oip
from grpc_oip import infer_request, raw_input, response_arrays
from harness import REQUEST_TIMEOUT, model_path, wait_for

grpc_stubs = grpc_oip.grpc_stubs

PEER_TOKEN = "location-secret"
API_TOKEN = "client-secret"
CLIENT = {"Authorization": f"Bearer {API_TOKEN}"}

# Which device serves which models.
PLACEMENT = {
    "alpha": ["identity_fp32", "add_sub"],
    "beta": ["identity_int32", "slow"],
    "gamma": ["identity_fp64", "fixed"],
}
# Pipelines (model.json alone) of a device: a stateful one keeps a window
# per stream, the stream named by the request parameter stream_id.
PIPELINES = {
    "beta": {"stream_window": {
        "kind": "pipeline",
        "inputs": [{"name": "x", "datatype": "FP32", "dims": [1]}],
        "outputs": [{"name": "last", "datatype": "FP32", "dims": [4]}],
        "steps": [{"name": "window", "op": "window", "input": "x",
                   "output": "last", "frames": 4}]}},
}
HOME = {model: device for device, models in PLACEMENT.items()
        for model in models} | {
    name: device for device, pipelines in PIPELINES.items()
    for name in pipelines}
DISCOVERY_TIMEOUT = 30


def start_location(pool, placement, extra_args=(), pipelines=None):
    """One agent per device of placement (and of pipelines: {device: {name:
    model.json}}), each with --peer to the others, started once every one
    knows its peers' models."""
    pipelines = pipelines or {}
    agents = {device: pool.prepare(models)
              for device, models in placement.items()}
    for device, bodies in pipelines.items():
        for name, body in bodies.items():
            (agents[device].repo / name).mkdir()
            (agents[device].repo / name / "model.json").write_text(json.dumps(body))
    for device, agent in agents.items():
        agent.command += ["--device", device, "--peer-token", PEER_TOKEN,
                          "--api-token", API_TOKEN, *extra_args]
        for other, peer in agents.items():
            if other != device:
                agent.command += ["--peer", peer.url]
    for agent in agents.values():
        agent.start()
    every_model = sorted([m for models in placement.values() for m in models]
                         + [n for bodies in pipelines.values() for n in bodies])
    for device, agent in agents.items():
        wait_for(lambda: sorted(row["name"] for row in location_index(agent))
                 == every_model, DISCOVERY_TIMEOUT,
                 what=lambda: f"{device} to list {every_model}: "
                 f"{location_index(agent)}")
    return agents


def location_index(agent):
    response = agent.post("/v2/repository/index", json={"location": True})
    assert response.status_code == 200, response.text
    return [row for row in response.json() if row["state"] == "READY"]


@pytest.fixture(scope="module")
def location(module_servers):
    return start_location(module_servers, PLACEMENT, pipelines=PIPELINES)


@pytest.fixture(scope="module")
def clients(grpc_stubs, location):
    connected = {device: grpc_oip.connect(grpc_stubs, agent)
                 for device, agent in location.items()}
    yield connected
    for client in connected.values():
        client.close()


def fp32(rows=2, columns=3, seed=0):
    return np.random.default_rng(seed).standard_normal(
        (rows, columns)).astype(np.float32)


def rest_request(model):
    """(JSON body, the outputs the model must answer with)."""
    if model == "identity_fp32":
        x = fp32()
        return ({"inputs": [oip.json_input("INPUT0", x, "FP32")]},
                {"OUTPUT0": x})
    if model == "identity_int32":
        x = np.arange(6, dtype=np.int32).reshape(2, 3) - 3
        return ({"inputs": [oip.json_input("INPUT0", x, "INT32")]},
                {"OUTPUT0": x})
    if model == "identity_fp64":
        x = fp32().astype(np.float64)
        return ({"inputs": [oip.json_input("INPUT0", x, "FP64")]},
                {"OUTPUT0": x})
    if model == "fixed":
        x = fp32()
        return ({"inputs": [oip.json_input("INPUT0", x, "FP32")]},
                {"OUTPUT0": np.maximum(x, 0)})
    if model == "add_sub":
        a, b = fp32(1, 4, 1), fp32(1, 4, 2)
        return ({"inputs": [oip.json_input("INPUT0", a, "FP32"),
                            oip.json_input("INPUT1", b, "FP32")]},
                {"OUTPUT0": a + b, "OUTPUT1": a - b})
    raise AssertionError(model)


def trailer(call, key):
    return dict(call.trailing_metadata() or ()).get(key)


# REST

@pytest.mark.parametrize("asked", sorted(PLACEMENT))
@pytest.mark.parametrize("model", ["identity_fp32", "identity_int32",
                                   "identity_fp64", "fixed", "add_sub"])
def test_rest_any_agent_answers_every_model(location, asked, model):
    body, expected = rest_request(model)
    response = location[asked].infer(model, body, headers=CLIENT)
    assert response.status_code == 200, response.text
    assert response.headers["Perch-Device"] == HOME[model]
    outputs = oip.outputs_by_name(oip.decode_response(response))
    for name, value in expected.items():
        np.testing.assert_allclose(outputs[name], value, rtol=1e-6)


def test_rest_metadata_and_readiness_are_forwarded(location):
    alpha = location["alpha"]
    metadata = alpha.get(model_path("identity_int32"), headers=CLIENT)
    assert metadata.status_code == 200, metadata.text
    assert metadata.headers["Perch-Device"] == "beta"
    assert metadata.json()["name"] == "identity_int32"
    assert metadata.json()["inputs"][0]["datatype"] == "INT32"
    ready = alpha.get(model_path("fixed", 1) + "/ready", headers=CLIENT)
    assert ready.status_code == 200, ready.text
    assert ready.headers["Perch-Device"] == "gamma"
    # A version the serving agent lacks: its own 404, passed back.
    missing = alpha.get(model_path("fixed", 9) + "/ready", headers=CLIENT)
    assert missing.status_code == 404, missing.text
    assert missing.headers["Perch-Device"] == "gamma"


def test_rest_binary_tensors_are_forwarded(location):
    x = fp32(3, 5, 4)
    description, raw = oip.binary_input("INPUT0", x, "FP32")
    request = {"inputs": [description],
               "outputs": [{"name": "OUTPUT0",
                            "parameters": {"binary_data": True}}]}
    body, headers = oip.binary_body(request, [raw])
    response = location["gamma"].infer("identity_fp32", body,
                                       headers={**headers, **CLIENT})
    assert response.status_code == 200, response.text
    assert response.headers["Perch-Device"] == "alpha"
    assert oip.HEADER_LENGTH in response.headers
    outputs = oip.outputs_by_name(oip.decode_response(response))
    assert oip.same_bits(outputs["OUTPUT0"], x)


def test_rest_local_answers_name_their_device(location):
    body, _ = rest_request("add_sub")
    response = location["alpha"].infer("add_sub", body, headers=CLIENT)
    assert response.status_code == 200, response.text
    assert response.headers["Perch-Device"] == "alpha"


def test_rest_client_set_hop_header_gets_the_local_answer(location):
    body, _ = rest_request("identity_int32")
    response = location["alpha"].infer(
        "identity_int32", body,
        headers={**CLIENT, "Perch-Forwarded-By": "a-client"})
    assert response.status_code == 404, response.text
    assert response.headers["Perch-Device"] == "alpha"


def test_rest_model_nobody_serves_is_a_404_that_says_so(location):
    body, _ = rest_request("identity_fp32")
    for agent in location.values():
        response = agent.infer("nobody_has_it", body, headers=CLIENT)
        assert response.status_code == 404, response.text
        assert "no agent of this location serves model 'nobody_has_it'" \
            in response.json()["error"], response.text
        metadata = agent.get(model_path("nobody_has_it"), headers=CLIENT)
        assert metadata.status_code == 404, metadata.text


def test_rest_client_credential_is_checked_here_not_passed_on(location):
    body, _ = rest_request("identity_int32")
    alpha = location["alpha"]
    # The client's token is alpha's to check: without it, nothing is forwarded.
    refused = alpha.infer("identity_int32", body)
    assert refused.status_code == 401, refused.text
    # The peer token is the location's, not a client's: a client holding
    # it passes (peers accept it), but alpha presents it on its own.
    forwarded = alpha.infer("identity_int32", body, headers=CLIENT)
    assert forwarded.status_code == 200, forwarded.text


def test_location_index_lists_where_every_model_runs(location):
    for device, agent in location.items():
        rows = location_index(agent)
        assert {row["name"]: row["device"] for row in rows} == HOME, rows
    plain = location["alpha"].post("/v2/repository/index").json()
    assert sorted(row["name"] for row in plain) == sorted(PLACEMENT["alpha"])
    assert all("device" not in row for row in plain)
    bad = location["alpha"].post("/v2/repository/index",
                                 json={"location": "yes"})
    assert bad.status_code == 400, bad.text


# gRPC

def grpc_identity(pb, model, datatype, array):
    tensor, raw = raw_input(pb, "INPUT0", array, datatype)
    return infer_request(pb, model, [tensor], [raw])


@pytest.mark.parametrize("asked", sorted(PLACEMENT))
def test_grpc_any_agent_answers_every_model(clients, asked):
    client = clients[asked]
    pb = client.pb
    cases = [("identity_fp32", "FP32", fp32()),
             ("identity_int32", "INT32",
              np.arange(6, dtype=np.int32).reshape(2, 3)),
             ("identity_fp64", "FP64", fp32().astype(np.float64))]
    for model, datatype, array in cases:
        response, call = client.stub.ModelInfer.with_call(
            grpc_identity(pb, model, datatype, array),
            timeout=REQUEST_TIMEOUT, metadata=[("authorization",
                                                f"Bearer {API_TOKEN}")])
        assert trailer(call, "perch-device") == HOME[model], model
        np.testing.assert_array_equal(response_arrays(response)[0]["OUTPUT0"],
                                      array)


def test_grpc_metadata_and_readiness_are_forwarded(clients):
    client = clients["gamma"]
    auth = [("authorization", f"Bearer {API_TOKEN}")]
    metadata, call = client.stub.ModelMetadata.with_call(
        client.pb.ModelMetadataRequest(name="add_sub"),
        timeout=REQUEST_TIMEOUT, metadata=auth)
    assert metadata.name == "add_sub"
    assert trailer(call, "perch-device") == "alpha"
    ready, call = client.stub.ModelReady.with_call(
        client.pb.ModelReadyRequest(name="slow"),
        timeout=REQUEST_TIMEOUT, metadata=auth)
    assert ready.ready is True
    assert trailer(call, "perch-device") == "beta"


def test_grpc_client_set_hop_metadata_gets_the_local_answer(clients):
    client = clients["alpha"]
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    with pytest.raises(grpc.RpcError) as failure:
        client.stub.ModelInfer(
            grpc_identity(client.pb, "identity_int32", "INT32", array),
            timeout=REQUEST_TIMEOUT,
            metadata=[("authorization", f"Bearer {API_TOKEN}"),
                      ("perch-forwarded-by", "a-client")])
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(failure.value.trailing_metadata())["perch-device"] == "alpha"


def test_grpc_model_nobody_serves_is_not_found(clients):
    client = clients["beta"]
    with pytest.raises(grpc.RpcError) as failure:
        client.stub.ModelInfer(
            grpc_identity(client.pb, "nobody_has_it", "FP32", fp32()),
            timeout=REQUEST_TIMEOUT,
            metadata=[("authorization", f"Bearer {API_TOKEN}")])
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no agent of this location serves model 'nobody_has_it'" \
        in failure.value.details()


def test_grpc_deadline_carries_over_to_the_peer(clients, location):
    # slow (beta) takes about 80 ms an inference; 20 ms cannot do.
    client = clients["alpha"]
    x = np.ones((1, 4), dtype=np.float32)
    request = grpc_identity(client.pb, "slow", "FP32", x)
    auth = [("authorization", f"Bearer {API_TOKEN}")]
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as failure:
        client.stub.ModelInfer(request, timeout=0.02, metadata=auth)
    assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 2
    # Beta is not blamed for the client's deadline: the next call reaches it.
    response, call = client.stub.ModelInfer.with_call(
        request, timeout=REQUEST_TIMEOUT, metadata=auth)
    assert trailer(call, "perch-device") == "beta"
    np.testing.assert_allclose(response_arrays(response)[0]["OUTPUT0"], x * 2)


def test_request_parameters_travel_with_a_forwarded_request(location, clients):
    """A stream's window kept on beta grows by one value per request,
    whichever agent the request came to over REST or gRPC: the stream_id
    parameter reaches beta with every forwarded request."""
    for k, asked in enumerate(["alpha", "beta", "gamma"]):
        response = location[asked].infer("stream_window", {
            "parameters": {"stream_id": "forwarded"},
            "inputs": [oip.json_input("x", np.array([k + 1.0], np.float32),
                                      "FP32")]}, headers=CLIENT)
        assert response.status_code == 200, response.text
        assert response.headers["Perch-Device"] == "beta"
        assert oip.outputs_by_name(response.json())["last"].tolist() == \
            [0.0] * (3 - k) + [float(v) for v in range(1, k + 2)]
    client = clients["gamma"]
    request = infer_request(client.pb, "stream_window", [grpc_oip.typed_input(
        client.pb, "x", np.array([4.0], np.float32), "FP32")])
    request.parameters["stream_id"].string_param = "forwarded"
    response, call = client.stub.ModelInfer.with_call(
        request, timeout=REQUEST_TIMEOUT,
        metadata=[("authorization", f"Bearer {API_TOKEN}")])
    assert trailer(call, "perch-device") == "beta"
    assert response_arrays(response)[0]["last"].tolist() == [1.0, 2.0, 3.0, 4.0]
    # Without it, beta's refusal comes back through alpha.
    missing = location["alpha"].infer("stream_window", {"inputs": [
        oip.json_input("x", np.array([5.0], np.float32), "FP32")]},
        headers=CLIENT)
    assert missing.status_code == 400, missing.text
    assert "request parameter \"stream_id\"" in missing.json()["error"]


# A peer that goes away

def test_a_peer_killed_is_skipped_for_another_that_serves_the_model(
        servers, grpc_stubs):
    agents = start_location(servers, {
        "alpha": ["identity_fp32"],
        "beta": ["identity_int8"],
        "gamma": ["identity_int8"],
    })
    x = np.arange(6, dtype=np.int8).reshape(2, 3)
    body = {"inputs": [oip.json_input("INPUT0", x, "INT8")]}
    alpha = agents["alpha"]
    assert alpha.infer("identity_int8", body,
                       headers=CLIENT).status_code == 200
    agents["beta"].stop(signal.SIGKILL)
    devices = set()
    for _ in range(10):
        response = alpha.infer("identity_int8", body, headers=CLIENT)
        assert response.status_code == 200, response.text
        devices.add(response.headers["Perch-Device"])
    assert devices == {"gamma"}
    client = grpc_oip.connect(grpc_stubs, alpha)
    try:
        for _ in range(3):
            _, call = client.stub.ModelInfer.with_call(
                grpc_identity(client.pb, "identity_int8", "INT8", x),
                timeout=REQUEST_TIMEOUT,
                metadata=[("authorization", f"Bearer {API_TOKEN}")])
            assert trailer(call, "perch-device") == "gamma"
    finally:
        client.close()


def test_a_location_whose_only_server_of_a_model_is_gone_answers_503(
        servers):
    agents = start_location(servers, {
        "alpha": ["identity_fp32"],
        "beta": ["identity_int8"],
    })
    agents["beta"].stop(signal.SIGKILL)
    x = np.arange(6, dtype=np.int8).reshape(2, 3)
    body = {"inputs": [oip.json_input("INPUT0", x, "INT8")]}
    started = time.monotonic()
    try:
        response = agents["alpha"].infer("identity_int8", body,
                                         headers=CLIENT)
    except requests.RequestException as error:
        pytest.fail(f"alpha did not answer: {error}")
    # Either the directory still lists beta (503: it did not answer) or it
    # dropped it already (404: nobody serves it); never a wait.
    assert response.status_code in (503, 404), response.text
    assert time.monotonic() - started < 5
