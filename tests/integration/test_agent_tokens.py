"""Credentials on the agent: the management endpoints need a token whenever
the agent listens beyond loopback (given, or generated into the state
folder); --api-token guards inference and model metadata on REST and gRPC;
health and metrics stay open."""

import base64
import json
import os
import stat
import subprocess

import grpc
import pytest

from grpc_oip import grpc_stubs  # noqa: F401 (fixture)
from harness import PERCH_BIN, REQUEST_TIMEOUT

INFER = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                     "data": [1.5, -2.0]}]}
MANAGEMENT = ["/v2/repository/index", "/v2/repository/models/identity_fp32/unload",
              "/v2/repository/models/identity_fp32/load"]


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_unauthorized(response):
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="perch"'
    assert response.json()["code"] == "Unauthenticated"


@pytest.fixture(scope="module")
def beyond_loopback(module_servers, tmp_path_factory):
    """An agent on 0.0.0.0 (reached through 127.0.0.1) with no token given."""
    state = tmp_path_factory.mktemp("state")
    server = module_servers.start(["identity_fp32"],
                                  args=["--host", "0.0.0.0", "--state", state])
    return server, state


def test_management_needs_the_generated_token_beyond_loopback(beyond_loopback):
    server, state = beyond_loopback
    token_file = state / "management-token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 32
    assert str(token_file) in server.logs()
    for path in MANAGEMENT:
        assert_unauthorized(server.post(path))
        assert_unauthorized(server.post(path, headers=bearer("wrong")))
    for path in MANAGEMENT:
        response = server.post(path, headers=bearer(token))
        assert response.status_code == 200, response.text
    # Docker-style Basic credentials carry the token as the password.
    basic = base64.b64encode(f"admin:{token}".encode()).decode()
    response = server.post(MANAGEMENT[0], headers={"Authorization": f"Basic {basic}"})
    assert response.status_code == 200, response.text
    # Inference and health need no token: only --api-token guards them.
    assert server.get("/v2/health/ready").status_code == 200
    assert server.infer("identity_fp32", INFER).status_code == 200


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Basic !!!not-base64", "Basic " + base64.b64encode(b"nocolon").decode(),
    "Token abc", "Bearer t\xf6k\xe9n", "Bearer " + "x" * 8000])
def test_malformed_authorization_is_401_and_the_agent_stays_up(beyond_loopback, header):
    server, _ = beyond_loopback
    response = server.post(MANAGEMENT[0], headers={"Authorization": header})
    assert response.status_code == 401, response.text
    assert "error" in response.json()
    server.assert_alive()
    assert server.get("/v2/health/live").status_code == 200


def test_control_bytes_in_authorization_are_400_and_the_agent_stays_up(beyond_loopback):
    server, _ = beyond_loopback
    response = server.post(MANAGEMENT[0], headers={"Authorization": "Bearer \x01\x02"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "InvalidArgument"
    assert server.get("/v2/health/live").status_code == 200


def test_the_generated_token_survives_a_restart(servers, tmp_path):
    state = tmp_path / "state"
    first = servers.start(["identity_fp32"], args=["--host", "0.0.0.0", "--state", state])
    token = (state / "management-token").read_text().strip()
    assert first.stop() == 0
    second = servers.start(["identity_fp32"], args=["--host", "0.0.0.0", "--state", state])
    assert (state / "management-token").read_text().strip() == token
    assert second.post(MANAGEMENT[0], headers=bearer(token)).status_code == 200


def test_a_given_management_token_is_used_and_nothing_is_written(servers, tmp_path):
    state = tmp_path / "state"
    server = servers.start(["identity_fp32"],
                           args=["--host", "0.0.0.0", "--state", state,
                                 "--management-token", "given-secret"])
    assert not (state / "management-token").exists()
    assert_unauthorized(server.post(MANAGEMENT[0]))
    assert server.post(MANAGEMENT[0], headers=bearer("given-secret")).status_code == 200


def test_loopback_needs_no_management_token(servers, tmp_path):
    state = tmp_path / "state"
    server = servers.start(["identity_fp32"], args=["--state", state])
    assert server.post(MANAGEMENT[0]).status_code == 200
    assert not (state / "management-token").exists()


@pytest.fixture(scope="module")
def api_token_server(module_servers, tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    return module_servers.start(["identity_fp32"],
                                args=["--api-token", "infer-secret", "--state", state])


def test_api_token_guards_inference_and_model_metadata(api_token_server):
    server = api_token_server
    assert_unauthorized(server.infer("identity_fp32", INFER))
    assert_unauthorized(server.infer("identity_fp32", INFER, headers=bearer("wrong")))
    assert_unauthorized(server.get("/v2/models/identity_fp32"))
    assert_unauthorized(server.get("/v2/models/identity_fp32/ready"))
    response = server.infer("identity_fp32", INFER, headers=bearer("infer-secret"))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.5, -2.0]
    # The scheme in any case.
    response = server.get("/v2/models/identity_fp32",
                          headers={"Authorization": "bearer infer-secret"})
    assert response.status_code == 200
    # Health, server metadata and metrics stay open.
    for path in ("/v2/health/live", "/v2/health/ready", "/v2", "/metrics"):
        assert server.get(path).status_code == 200, path
    # The API token is not the management token (loopback: management open).
    assert server.post(MANAGEMENT[0]).status_code == 200


def test_api_token_on_grpc(api_token_server, grpc_stubs):  # noqa: F811
    server = api_token_server
    pb = grpc_stubs.pb
    request = pb.ModelInferRequest(model_name="identity_fp32")
    tensor = request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.5, -2.0])
    with grpc.insecure_channel(server.grpc_target) as channel:
        stub = grpc_stubs.pb_grpc.GRPCInferenceServiceStub(channel)
        for call, message in ((stub.ModelInfer, request),
                              (stub.ModelMetadata, pb.ModelMetadataRequest(name="identity_fp32")),
                              (stub.ModelReady, pb.ModelReadyRequest(name="identity_fp32"))):
            for metadata in ((), (("authorization", "Bearer wrong"),),
                             (("authorization", "Basic ###"),)):
                with pytest.raises(grpc.RpcError) as failure:
                    call(message, timeout=REQUEST_TIMEOUT, metadata=metadata)
                assert failure.value.code() == grpc.StatusCode.UNAUTHENTICATED
        good = (("authorization", "Bearer infer-secret"),)
        answer = stub.ModelInfer(request, timeout=REQUEST_TIMEOUT, metadata=good)
        assert list(answer.outputs[0].shape) == [1, 2]
        assert stub.ModelReady(pb.ModelReadyRequest(name="identity_fp32"),
                               timeout=REQUEST_TIMEOUT, metadata=good).ready
        # Server calls stay open.
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=REQUEST_TIMEOUT).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=REQUEST_TIMEOUT).ready


def test_cli_clients_send_the_api_token(api_token_server, tmp_path):
    server = api_token_server
    data = tmp_path / "input.json"
    data.write_text(json.dumps({"datatype": "FP32", "shape": [1, 2], "data": [1.5, -2.0]}))
    infer = [str(PERCH_BIN), "infer", "identity_fp32", "--url", server.url,
             "--input", f"INPUT0={data}"]
    refused = subprocess.run(infer, capture_output=True, text=True, timeout=REQUEST_TIMEOUT)
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr, refused.stderr
    answered = subprocess.run(infer + ["--api-token", "infer-secret"], capture_output=True,
                              text=True, timeout=REQUEST_TIMEOUT)
    assert answered.returncode == 0, answered.stderr
    assert json.loads(answered.stdout)["outputs"][0]["data"] == [1.5, -2.0]
    for protocol, target in (("rest", ["--url", server.url]),
                             ("grpc", ["--grpc-target", server.grpc_target])):
        perf = subprocess.run([str(PERCH_BIN), "perf", "identity_fp32", "--protocol", protocol,
                               *target, "--duration", "0.3s", "--warmup", "0s", "--json"],
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PERCH_API_TOKEN": "infer-secret"})
        assert perf.returncode == 0, perf.stderr
        level = json.loads(perf.stdout)[0]
        assert level["requests"] > 0 and level["errors"] == 0, (protocol, level)
