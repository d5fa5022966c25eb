"""What the fleet tests share: a network link that can be cut, agents that
take their models from a hub, and the models they serve.

Link is a TCP relay on a fixed loopback port in front of the hub: agents
talk to the hub through it, so the test can take a running agent offline
(down) and back (up) while the hub itself stays reachable for the admin.
"""

import contextlib
import json
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from harness import TEST_MODELS, PerchServer, free_port, wait_for
from registry_harness import perch

POLL = "0.2"       # --hub-poll of the test agents
HEARTBEAT = "0.3"  # --heartbeat of the test agents


class Link:
    """A TCP relay 127.0.0.1:port -> 127.0.0.1:target that can be cut."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.port = free_port()
        self._listener = None
        self._sockets = set()
        self._lock = threading.Lock()

    def up(self):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def down(self):
        """Refuses new connections and cuts the open ones."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown wakes the accept() blocked in _accept: close alone
            # leaves it listening until one more connection arrives.
            try:
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, listener):
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self._listener is not listener:
                # Accepted as the link went down: refused, not relayed (a
                # kept-alive connection would otherwise outlive the cut).
                client.close()
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # went down meanwhile
                    client.close()
                    server.close()
                    return
                self._sockets |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for s in (source, sink):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def make_scorer_repo(folder):
    """scorer/<v>/model.onnx for v = 1, 2, 3 (OUTPUT0 = INPUT0 + v), and
    v = 4, which loads but fails its warm-up run (a reshape of one element
    into three): a deliberately broken update."""
    repo = Path(folder) / "scorer"
    for version in (1, 2, 3):
        shutil.copytree(TEST_MODELS / "multi_version" / str(version), repo / str(version))
    (repo / "model.json").write_text(json.dumps({"version_policy": {"all": {}}}))
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["INPUT0", "SHAPE"], ["OUTPUT0"])], "scorer",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [3])],
        [helper.make_tensor("SHAPE", TensorProto.INT64, [1], [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (repo / "4").mkdir()
    onnx.save(model, repo / "4" / "model.onnx")
    return repo


def push_scorer(hub, repo, registry_host, version):
    reference = f"{registry_host}/fleet/scorer:{version}"
    perch("push", repo, reference, "--version", version, "--token", hub.admin_token)
    return reference


def admin(hub, *args, check=True):
    """Runs a fleet command against the hub with the admin token."""
    return perch(*args, "--hub", hub.url, "--token", hub.admin_token, check=check)


def create_location(hub, name):
    response = hub.request("POST", "/api/v1/locations", json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["enrolment_token"]


def fleet_agent(workdir, hub_url, enrolment_token, device, state, labels=()):
    """A PerchServer that takes its models from the hub at hub_url."""
    server = PerchServer(workdir, workdir, ())
    at = server.command.index("--repo")
    del server.command[at:at + 2]
    server.command += ["--hub", hub_url, "--token", enrolment_token,
                       "--device", device, "--state", str(state),
                       "--hub-poll", POLL, "--heartbeat", HEARTBEAT]
    for label in labels:
        server.command += ["--label", label]
    return server


def score(agent, value=10.0):
    """What the agent's scorer answers for `value` (value + version), or
    None when it serves no scorer."""
    response = agent.infer("scorer", {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1], "data": [value]}]})
    if response.status_code != 200:
        return None
    return response.json()["outputs"][0]["data"][0]


def wait_scores(agents, expected, timeout=30.0):
    """Waits until every agent's scorer answers `expected`."""
    def all_there():
        return all(score(agent) == expected for agent in agents)
    wait_for(all_there, timeout, what=lambda: (
        f"every agent to answer {expected}; they answer "
        f"{[score(agent) for agent in agents]}\n" +
        "\n".join(agent.logs()[-3000:] for agent in agents)))


def device_report(hub, name):
    response = hub.request("GET", f"/api/v1/devices/{name}")
    assert response.status_code == 200, response.text
    return response.json()


def add_slow_scorer(repo, version):
    """scorer/<version>: OUTPUT0 = INPUT0 + version, like the others, but
    after three 384x384 matrix products that depend on the input (so that
    nothing is folded away at load): a deliberately slower model version."""
    n = 384
    nodes = [
        helper.make_node("ReduceSum", ["INPUT0"], ["s"], keepdims=1),
        helper.make_node("Expand", ["s", "SQUARE"], ["x0"]),
        helper.make_node("MatMul", ["x0", "x0"], ["x1"]),
        helper.make_node("MatMul", ["x1", "x0"], ["x2"]),
        helper.make_node("MatMul", ["x2", "x0"], ["x3"]),
        helper.make_node("ReduceSum", ["x3"], ["t"], keepdims=0),
        helper.make_node("Mul", ["t", "ZERO"], ["z"]),
        helper.make_node("Add", ["INPUT0", "V"], ["y"]),
        helper.make_node("Add", ["y", "z"], ["OUTPUT0"]),
    ]
    graph = helper.make_graph(
        nodes, "scorer",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor("SQUARE", TensorProto.INT64, [2], [n, n]),
         helper.make_tensor("ZERO", TensorProto.FLOAT, [], [0.0]),
         helper.make_tensor("V", TensorProto.FLOAT, [], [float(version)])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (repo / str(version)).mkdir()
    onnx.save(model, repo / str(version) / "model.onnx")


def keep_scoring(agents, stop):
    """Sends requests to every agent until `stop` is set."""
    while not stop.is_set():
        for agent in agents:
            score(agent)


@contextlib.contextmanager
def two_plant_site(hubs, tmp_path, labels=None, signed=(), sign_with=None, flags=None):
    """A hub, scorer versions 1 and 5 (slow) pushed, three agents in two
    locations (a1, a2 in plant-a; b1 in plant-b) reaching the hub through a
    Link; `labels` and extra command-line `flags` by agent name; the
    versions in `signed` signed with the private key `sign_with` before
    they are pushed. Yields (hub, references, agents, host)."""
    hub = hubs.start()
    link = Link(hub.port).up()
    repo = make_scorer_repo(tmp_path / "models")
    add_slow_scorer(repo, 5)
    for version in signed:
        perch("sign", repo / str(version), "--key", sign_with)
    host = f"127.0.0.1:{link.port}"
    references = {v: push_scorer(hub, repo, host, v) for v in (1, 5)}
    tokens = {name: create_location(hub, name) for name in ("plant-a", "plant-b")}
    url = f"http://127.0.0.1:{link.port}"
    agents = {}
    try:
        for name, location in (("a1", "plant-a"), ("a2", "plant-a"), ("b1", "plant-b")):
            agent = fleet_agent(tmp_path, url, tokens[location], name,
                                tmp_path / f"state-{name}", labels=(labels or {}).get(name, []))
            agent.command += (flags or {}).get(name, [])
            agents[name] = agent.start()
        yield hub, references, agents, host
    finally:
        for agent in agents.values():
            if agent.process.poll() is None:
                assert agent.stop() == 0
        link.down()
