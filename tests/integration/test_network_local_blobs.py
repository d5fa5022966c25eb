"""Network local, peers and shared blobs (docs/network-local.md): agents of
one location find each other (--peer, or the hub), authenticate each other
with the location's peer token, and fetch model blobs from each other
before the registry, verified, falling back to the registry on any fault."""

import subprocess

import grpc
import pytest
import requests

from grpc_oip import grpc_stubs  # noqa: F401 (fixture)
from harness import PERCH_BIN, PerchServer, copy_models, wait_for

PEER_TOKEN = "location-secret-1"
API_TOKEN = "api-secret-1"
INFER = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                     "data": [1.5, -2.0]}]}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def assert_peer_refused(response):
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "Unauthenticated"
    assert "peer token" in response.json()["error"]


class Location:
    """Agents started together, each naming the others with --peer."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self.agents = []

    def start(self, specs, common=()):
        """specs: one (device, models, extra args) per agent."""
        created = []
        for device, models, extra in specs:
            workdir = self._tmp.mktemp(device)
            repo = copy_models(workdir / "repo", models)
            created.append((PerchServer(repo, workdir), device, extra, workdir))
        urls = [server.url for server, *_ in created]
        for server, device, extra, workdir in created:
            peers = [arg for url in urls if url != server.url
                     for arg in ("--peer", url)]
            server.command += ["--device", device, "--state", str(workdir / "state"),
                               *peers, *map(str, common), *map(str, extra)]
        for server, *_ in created:
            server.start()
            self.agents.append(server)
        return [server for server, *_ in created]

    def close(self):
        for server in self.agents:
            if server.process.returncode is None:
                assert server.stop() == 0, server.logs()


@pytest.fixture
def location(tmp_path_factory):
    pool = Location(tmp_path_factory)
    yield pool
    pool.close()


def test_peer_answers_who_it_is_to_the_peer_token_only(location):
    a, b = location.start(
        [("agent-a", ["identity_fp32"], []), ("agent-b", ["add_sub"], [])],
        common=["--peer-token", PEER_TOKEN, "--api-token", API_TOKEN])
    answer = a.get("/perch/v1/peer", headers=bearer(PEER_TOKEN))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["device"] == "agent-a"
    assert body["url"] == a.url
    assert body["grpc_address"] == a.grpc_target
    assert body["models"] == ["identity_fp32"]
    assert body["blobs"] == []
    # Anything but the peer token: missing, forged, the API token, malformed.
    assert_peer_refused(a.get("/perch/v1/peer"))
    assert_peer_refused(a.get("/perch/v1/peer", headers=bearer("forged")))
    assert_peer_refused(a.get("/perch/v1/peer", headers=bearer(API_TOKEN)))
    assert_peer_refused(a.get("/perch/v1/peer", headers={"Authorization": "Basic !!"}))
    assert b.get("/perch/v1/peer", headers=bearer(PEER_TOKEN)).json()["models"] == ["add_sub"]
    digest = "sha256:" + "0" * 64
    assert_peer_refused(a.get(f"/v2/models/x/blobs/{digest}", headers=bearer(API_TOKEN)))
    # Read-only: any other method on a peer route is 405.
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        response = requests.request(method, a.url + "/perch/v1/peer",
                                    headers=bearer(PEER_TOKEN), timeout=10)
        assert response.status_code == 405, (method, response.text)
        response = requests.request(method, a.url + f"/v2/models/x/blobs/{digest}",
                                    headers=bearer(PEER_TOKEN), timeout=10)
        assert response.status_code == 405, (method, response.text)
    # The OIP routes take the API token and the peer token (forwarded
    # requests carry the latter), nothing else.
    for token in (API_TOKEN, PEER_TOKEN):
        assert a.infer("identity_fp32", INFER, headers=bearer(token)).status_code == 200
        assert a.get("/v2/models/identity_fp32", headers=bearer(token)).status_code == 200
    assert a.get("/v2/models/identity_fp32", headers=bearer("forged")).status_code == 401
    assert a.infer("identity_fp32", INFER).status_code == 401


def test_grpc_takes_the_peer_token_too(location, grpc_stubs):  # noqa: F811
    (a,) = location.start([("agent-a", ["identity_fp32"], [])],
                          common=["--peer-token", PEER_TOKEN, "--api-token", API_TOKEN])
    pb = grpc_stubs.pb
    with grpc.insecure_channel(a.grpc_target) as channel:
        stub = grpc_stubs.pb_grpc.GRPCInferenceServiceStub(channel)
        request = pb.ModelReadyRequest(name="identity_fp32")
        for token in (API_TOKEN, PEER_TOKEN):
            assert stub.ModelReady(request, metadata=[("authorization", f"Bearer {token}")],
                                   timeout=10).ready
        with pytest.raises(grpc.RpcError) as refused:
            stub.ModelReady(request, metadata=[("authorization", "Bearer forged")], timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def run_check_config(*args):
    return subprocess.run([str(PERCH_BIN), "serve", "--check-config", *map(str, args)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args, complaint", [
    (["--peer", "http://127.0.0.1:1"], "--peer needs --peer-token"),
    (["--peer", "http://127.0.0.1:1", "--peer-token", "t", "--host", "0.0.0.0"],
     "--advertise-url"),
    (["--peer", "ftp://127.0.0.1:1", "--peer-token", "t"], "--peer 'ftp://127.0.0.1:1'"),
    (["--peer", "http://127.0.0.1:1/path", "--peer-token", "t"], "must be http://HOST:PORT"),
    (["--advertise-url", "127.0.0.1:8000"], "--advertise-url"),
    (["--advertise-grpc", "nohostport"], "--advertise-grpc"),
])
def test_bad_peer_flags_are_refused_before_serving(tmp_path, args, complaint):
    result = run_check_config("--repo", tmp_path, *args)
    assert result.returncode != 0, result.stdout
    assert complaint in result.stderr, result.stderr


def test_wildcard_host_with_advertise_url_is_valid(tmp_path):
    result = run_check_config("--repo", tmp_path, "--peer", "http://127.0.0.1:1",
                              "--peer-token", "t", "--host", "0.0.0.0",
                              "--advertise-url", "http://10.1.2.3:8000")
    assert result.returncode == 0, result.stderr


def test_static_peers_are_polled_and_a_missing_one_is_survived(location, tmp_path):
    # A peer that never answers: the agent starts, serves, and logs it once.
    gone = "http://127.0.0.1:9"
    (a,) = location.start([("agent-a", ["identity_fp32"], ["--peer", gone])],
                          common=["--peer-token", PEER_TOKEN])
    assert a.infer("identity_fp32", INFER).status_code == 200
    wait_for(lambda: f"peer {gone}" in a.logs(), 10, what="the unreachable peer logged")
