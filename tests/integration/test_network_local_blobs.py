"""Network local, peers and shared blobs (docs/network-local.md): agents of
one location find each other (--peer, or the hub), authenticate each other
with the location's peer token, and fetch model blobs from each other
before the registry, verified, falling back to the registry on any fault."""

import hashlib
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import requests
from onnx import TensorProto, helper, numpy_helper

from grpc_oip import grpc_stubs  # noqa: F401 (fixture)
from harness import (PERCH_BIN, WAKEWORD_MODELS, PerchServer, copy_models,
                     wait_for)
from fleet_harness import admin, create_location, fleet_agent
from registry_harness import Registry, infer, model_server, perch

TOOLS = Path(__file__).resolve().parents[1] / "tools"
HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"

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


def test_a_wildcard_listener_advertises_what_it_is_told(location, tmp_path):
    workdir = tmp_path / "w"
    server = PerchServer(copy_models(workdir / "repo", ["identity_fp32"]), tmp_path)
    server.command += ["--host", "0.0.0.0", "--device", "wild", "--state", str(workdir / "s"),
                       "--peer-token", PEER_TOKEN, "--peer", "http://127.0.0.1:9",
                       "--advertise-url", f"http://localhost:{server.port}/"]
    server.start()
    location.agents.append(server)
    body = server.get("/perch/v1/peer", headers=bearer(PEER_TOKEN)).json()
    assert body["url"] == f"http://localhost:{server.port}"
    assert body["grpc_address"] == f"localhost:{server.grpc_port}"


def test_static_peers_are_polled_and_a_missing_one_is_survived(location, tmp_path):
    # A peer that never answers: the agent starts, serves, and logs it once.
    gone = "http://127.0.0.1:9"
    (a,) = location.start([("agent-a", ["identity_fp32"], ["--peer", gone])],
                          common=["--peer-token", PEER_TOKEN])
    assert a.infer("identity_fp32", INFER).status_code == 200
    wait_for(lambda: f"peer {gone}" in a.logs(), 10, what="the unreachable peer logged")


# --- Blobs shared on the LAN -------------------------------------------------


class Tool:
    """A tests/tools script that prints its port first, killed at the end."""

    def __init__(self, script, *args):
        self.process = subprocess.Popen(
            ["/usr/bin/python3", str(TOOLS / script), *map(str, args)],
            stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"

    def lines(self):
        """What it printed since its port (call once it is stopped)."""
        return self.process.stdout.read().splitlines()

    def stop(self):
        self.process.kill()
        self.process.wait()


@pytest.fixture
def tools():
    started = []

    def start(script, *args):
        tool = Tool(script, *args)
        started.append(tool)
        return tool

    yield start
    for tool in started:
        if tool.process.poll() is None:
            tool.stop()


@pytest.fixture
def wan(tmp_path, tools):
    """A Distribution registry holding hey_jarvis, reached through a proxy
    that counts the blob bytes it sends (the location's WAN link)."""
    registry = Registry(tmp_path / "registry").start()
    repo = tmp_path / "src"
    (repo / "hey_jarvis" / "1").mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, repo / "hey_jarvis" / "1" / "model.onnx")
    perch("push", repo / "hey_jarvis", f"{registry.host}/wakeword/hey_jarvis:1")
    proxy = tools("counting_proxy.py", registry.url)
    proxy.reference = f"{proxy.host}/wakeword/hey_jarvis:1"
    proxy.layer = "sha256:" + hashlib.sha256(HEY_JARVIS.read_bytes()).hexdigest()
    proxy.registry = registry
    yield proxy
    registry.stop()


def layer_requests(proxy):
    """[(range, bytes)] of the registry's answers for the model file."""
    stats = requests.get(proxy.url + "/_proxy/stats", timeout=10).json()
    return [(r, sent) for path, r, sent in stats["blob_requests"] if proxy.layer in path]


class Agents:
    """`perch serve --model` agents of one location; each names the given
    peers with --peer and shares PEER_TOKEN unless told otherwise."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        self.agents = []

    def make(self, device, reference, token=PEER_TOKEN):
        workdir = self.tmp / device
        workdir.mkdir()
        server = model_server(workdir, [reference], workdir / "state",
                              ["--device", device, "--peer-token", token])
        server.state = workdir / "state"
        self.agents.append(server)
        return server

    def close(self):
        for server in self.agents:
            if server.process is not None and server.process.returncode is None:
                assert server.stop() == 0, server.logs()


@pytest.fixture
def agents(tmp_path):
    pool = Agents(tmp_path)
    yield pool
    pool.close()


def test_the_registry_sends_each_blob_once_per_location(wan, agents):
    a = agents.make("agent-a", wan.reference)
    b = agents.make("agent-b", wan.reference)
    c = agents.make("agent-c", wan.reference)
    a.command += ["--peer", b.url, "--peer", c.url]
    b.command += ["--peer", a.url, "--peer", c.url]
    c.command += ["--peer", a.url, "--peer", b.url]
    a.start()
    assert layer_requests(wan) == [(None, HEY_JARVIS.stat().st_size)]
    b.start()
    c.start()
    # b and c took the model file from a peer: the registry sent it once.
    assert layer_requests(wan) == [(None, HEY_JARVIS.stat().st_size)]
    expected = infer(a, "hey_jarvis")
    for agent in (b, c):
        assert infer(agent, "hey_jarvis") == expected
        assert (agent.state / "models" / "hey_jarvis" / "1" / "model.onnx").read_bytes() \
            == HEY_JARVIS.read_bytes()
        held = agent.get("/perch/v1/peer", headers=bearer(PEER_TOKEN)).json()
        assert wan.layer in held["blobs"]
        assert held["models"] == ["hey_jarvis"]


def test_agent_blob_route_is_the_oci_blob_form_for_peers_only(wan, agents):
    a = agents.make("agent-a", wan.reference)
    a.command += ["--api-token", API_TOKEN]
    a.start()
    blob = HEY_JARVIS.read_bytes()
    path = f"/v2/wakeword/hey_jarvis/blobs/{wan.layer}"
    whole = a.get(path, headers=bearer(PEER_TOKEN))
    assert whole.status_code == 200 and whole.content == blob
    assert whole.headers["Docker-Content-Digest"] == wan.layer
    head = requests.head(a.url + path, headers=bearer(PEER_TOKEN), timeout=10)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(blob)
    part = a.get(path, headers={**bearer(PEER_TOKEN), "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == blob[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(blob)}"
    tail = a.get(path, headers={**bearer(PEER_TOKEN), "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == blob[-10:]
    for bad in (f"bytes={len(blob)}-", "bytes=5-1", "bytes=0-1,4-5", "lines=1-2"):
        refused = a.get(path, headers={**bearer(PEER_TOKEN), "Range": bad})
        assert refused.status_code == 416, (bad, refused.text)
        assert refused.headers["Content-Range"] == f"bytes */{len(blob)}"
    unknown = a.get(f"/v2/wakeword/hey_jarvis/blobs/sha256:{'1' * 64}", headers=bearer(PEER_TOKEN))
    assert unknown.status_code == 404 and "error" in unknown.json()
    malformed = a.get("/v2/wakeword/hey_jarvis/blobs/sha256:xyz", headers=bearer(PEER_TOKEN))
    assert malformed.status_code == 400, malformed.text
    for headers in ({}, bearer("forged"), bearer(API_TOKEN)):
        assert_peer_refused(a.get(path, headers=headers))
    assert requests.delete(a.url + path, headers=bearer(PEER_TOKEN), timeout=10).status_code == 405


@pytest.mark.parametrize("mode", ["flip", "oversize", "die", "stall"])
def test_a_hostile_peer_never_gets_a_wrong_byte_into_a_model(wan, agents, tools, mode):
    hostile = tools("hostile_peer.py", "--blob", HEY_JARVIS, "--mode", mode,
                    "--token", PEER_TOKEN)
    b = agents.make("agent-b", wan.reference)
    b.command += ["--peer", hostile.url]
    b.start()
    assert (b.state / "models" / "hey_jarvis" / "1" / "model.onnx").read_bytes() \
        == HEY_JARVIS.read_bytes()
    assert infer(b, "hey_jarvis")
    hostile.stop()
    assert any(line.startswith("GET") for line in hostile.lines())
    size = HEY_JARVIS.stat().st_size
    if mode in ("flip", "oversize"):
        # Detected, discarded whole, fetched again from the registry.
        assert layer_requests(wan) == [(None, size)]
    else:
        # What arrived before the peer died or stalled was verified as part
        # of the whole: the registry sent only the rest.
        assert layer_requests(wan) == [(f"bytes={size // 2}-", size - size // 2)]


def test_a_peer_with_a_forged_token_gets_nothing(wan, agents):
    a = agents.make("agent-a", wan.reference)
    b = agents.make("agent-b", wan.reference, token="forged-token")
    a.command += ["--peer", b.url]
    b.command += ["--peer", a.url]
    a.start()
    b.start()
    # b could not use a: the registry sent the model file twice.
    size = HEY_JARVIS.stat().st_size
    assert layer_requests(wan) == [(None, size), (None, size)]
    assert "refused this agent's peer token" in b.logs()
    path = f"/v2/wakeword/hey_jarvis/blobs/{wan.layer}"
    assert_peer_refused(a.get(path, headers=bearer("forged-token")))
    assert_peer_refused(a.get(path))



class SlowLink:
    """A TCP relay to 127.0.0.1:target that sends the answers at `rate`
    bytes/s and counts them: a LAN slow enough to kill a peer mid-transfer."""

    def __init__(self, target, rate):
        self.target, self.rate = target, rate
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, True), daemon=True).start()

    def _pipe(self, source, sink, slow):
        try:
            while data := source.recv(8192 if slow else 65536):
                if slow:
                    time.sleep(len(data) / self.rate)
                    self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.listener.close()


def make_big_model(path, mib):
    """OUTPUT0 = INPUT0 + WEIGHTS, WEIGHTS `mib` MiB: larger than what the
    kernel's socket buffers hold, so that a killed sender really stops."""
    count = mib * (1 << 20) // 4
    weights = np.random.default_rng(5).standard_normal(count).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "WEIGHTS"], ["OUTPUT0"])], "big",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [count])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [count])],
        [numpy_helper.from_array(weights, "WEIGHTS")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def test_a_peer_killed_mid_transfer_is_resumed_from_the_registry(wan, agents, tmp_path):
    model_file = tmp_path / "big-src" / "big" / "1" / "model.onnx"
    make_big_model(model_file, 32)
    perch("push", model_file.parent.parent, f"{wan.registry.host}/bench/big:1")
    reference = f"{wan.host}/bench/big:1"
    wan.layer = "sha256:" + hashlib.sha256(model_file.read_bytes()).hexdigest()
    size = model_file.stat().st_size
    a = agents.make("agent-a", reference)
    link = SlowLink(a.port, rate=size // 4)  # about 4 s for the model file
    try:
        a.command += ["--advertise-url", link.url]
        a.start()
        b = agents.make("agent-b", reference)
        b.command += ["--peer", link.url]
        b.process = subprocess.Popen(b.command, stdout=subprocess.DEVNULL,
                                     stderr=open(b._stderr_path, "wb"))
        PerchServer.running.add(b)
        wait_for(lambda: link.sent > size // 4, 20, what="agent-b to be a quarter through")
        a.process.send_signal(signal.SIGKILL)
        a.process.wait()
        PerchServer.running.discard(a)
        wait_for(lambda: b._ready_or_exited(), 30, what="agent-b to serve")
        assert b.process.poll() is None, b.logs()
        assert (b.state / "models" / "big" / "1" / "model.onnx").read_bytes() \
            == model_file.read_bytes()
        # The registry sent a's copy and, to b, only what a had not.
        requests_ = layer_requests(wan)
        assert requests_[0] == (None, size)
        assert len(requests_) == 2, requests_
        resumed_at = int(requests_[1][0].removeprefix("bytes=").rstrip("-"))
        assert size // 4 <= resumed_at < size
        assert requests_[1][1] == size - resumed_at
    finally:
        link.close()

# --- Peers from the hub ------------------------------------------------------


def hub_peers(hub, device, token="admin"):
    return hub.request("GET", f"/api/v1/devices/{device}/peers", token=token)


def test_hub_tells_each_agent_its_peers_and_the_registry_sends_each_blob_once(
        hubs, tools, tmp_path):
    hub = hubs.start()
    repo = tmp_path / "src"
    (repo / "hey_jarvis" / "1").mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, repo / "hey_jarvis" / "1" / "model.onnx")
    perch("push", repo / "hey_jarvis", f"{hub.host}/wakeword/hey_jarvis:1",
          "--token", hub.admin_token)
    proxy = tools("counting_proxy.py", hub.url)
    proxy.layer = "sha256:" + hashlib.sha256(HEY_JARVIS.read_bytes()).hexdigest()
    site = create_location(hub, "site")
    other = create_location(hub, "elsewhere")
    agents = {}
    try:
        for name, token in (("agent-a", site), ("agent-b", site), ("agent-c", site),
                            ("far", other)):
            agents[name] = fleet_agent(tmp_path, hub.url, token, name,
                                       tmp_path / f"state-{name}").start()

        def peers_of(name):
            return {p["device"]: p for p in hub_peers(hub, name).json()["peers"]}

        wait_for(lambda: set(peers_of("agent-a")) == {"agent-b", "agent-c"}, 20,
                 what="agent-a's peers listed by the hub")
        answer = hub_peers(hub, "agent-a").json()
        assert answer["location"] == "site"
        peer_token = answer["peer_token"]
        assert len(peer_token) >= 32
        b = answer["peers"][0]
        assert b["device"] == "agent-b"
        assert b["url"] == agents["agent-b"].url
        assert b["grpc_address"] == agents["agent-b"].grpc_target
        assert b["models"] == [] and b["last_seen"] > 0
        # One token per location, the same for all its devices; none of
        # another location's devices is a peer.
        assert hub_peers(hub, "agent-b").json()["peer_token"] == peer_token
        far = hub_peers(hub, "far").json()
        assert far["peers"] == [] and far["peer_token"] != peer_token
        # A device reads its own peers only.
        device_token = json_of(tmp_path / "state-agent-a" / "fleet" / "device.json")["token"]
        assert hub_peers(hub, "agent-a", token=device_token).status_code == 200
        assert hub_peers(hub, "agent-b", token=device_token).status_code == 403
        assert hub_peers(hub, "agent-a", token=None).status_code == 401
        assert hub_peers(hub, "nobody").status_code == 404
        # The agents take the hub's token as the location's peer token.
        a = agents["agent-a"]
        wait_for(lambda: a.get("/perch/v1/peer", headers=bearer(peer_token)).status_code
                 == 200, 10, what="agent-a to accept the hub's peer token")
        assert_peer_refused(a.get("/perch/v1/peer", headers=bearer(far["peer_token"])))

        # All three are told at once to serve the model, through the WAN.
        admin(hub, "deploy", f"{proxy.host}/wakeword/hey_jarvis:1", "--name", "jarvis",
              "--location", "site")
        site_agents = [agents[n] for n in ("agent-a", "agent-b", "agent-c")]
        wait_for(lambda: all(agent.get("/v2/models/hey_jarvis/ready").status_code == 200
                             for agent in site_agents), 60,
                 what=lambda: "every agent of site to serve hey_jarvis\n"
                 + "\n".join(agent.logs()[-2000:] for agent in site_agents))
        assert layer_requests(proxy) == [(None, HEY_JARVIS.stat().st_size)]
        expected = infer(site_agents[0], "hey_jarvis")
        for agent in site_agents[1:]:
            assert infer(agent, "hey_jarvis") == expected
        # Their heartbeats tell the hub which blobs and models each holds.
        wait_for(lambda: all(proxy.layer in p["blobs"] and p["models"] == ["hey_jarvis"]
                             for p in peers_of("agent-a").values()), 10,
                 what="the hub to list the peers' blobs and models")
    finally:
        for agent in agents.values():
            if agent.process.poll() is None:
                assert agent.stop() == 0, agent.logs()


def json_of(path):
    import json
    return json.loads(Path(path).read_text())
