"""The model repository extension, external data containment, and hot
reload of a polled repository."""

import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import oip
from harness import TEST_MODELS, model_path, wait_for

POLL_SECONDS = 1
# Generous against a loaded machine; a change is normally seen in ~1 s.
RELOAD_TIMEOUT = 10

X = np.array([0.5, -3.0, 42.0], dtype=np.float32)
X_REQUEST = {"inputs": [oip.json_input("INPUT0", X, "FP32")]}


def adds(n):
    """The version directory of a model that adds n (1, 2 or 3) to its input:
    copied as versions of another model, these make answers that tell which
    file ran."""
    return TEST_MODELS / "multi_version" / str(n)


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(["add_sub", "multi_version", "latest_two",
                                 "broken", "external_inside",
                                 "external_outside"])


def index(server):
    """{model: {version: entry}} of the repository index; version is None
    for an entry without one (as Triton lists an unloaded model)."""
    response = server.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    entries = {}
    for entry in response.json():
        entries.setdefault(entry["name"], {})[entry.get("version")] = entry
    return entries


def added(server):
    """What the served "adder" model adds to its input, or None when it
    does not answer."""
    response = server.infer("adder", X_REQUEST)
    if response.status_code != 200:
        return None
    (output,) = oip.outputs_by_name(response.json()).values()
    return float(output[0] - X[0])


def make_adder_repo(root, versions):
    """A repository with one model, "adder", whose versions ({version: n})
    add n."""
    repo = root / "repo"
    for version, n in versions.items():
        shutil.copytree(adds(n), repo / "adder" / str(version))
    return repo


def test_index_lists_every_version_with_its_state(server):
    entries = index(server)
    assert {v: e["state"] for v, e in entries["add_sub"].items()} == {
        "1": "READY"}
    assert {v: e["state"] for v, e in entries["multi_version"].items()} == {
        "1": "READY", "2": "READY", "3": "READY"}
    # Version 1 of latest_two may be listed, but not as READY.
    assert sorted(v for v, e in entries["latest_two"].items()
                  if e["state"] == "READY") == ["2", "3"]
    assert entries["external_inside"]["1"]["state"] == "READY"


@pytest.mark.parametrize("model", ["broken", "external_outside"])
def test_model_that_fails_to_load_is_unavailable(server, model):
    entries = index(server)[model]
    assert entries
    for entry in entries.values():
        assert entry["state"] == "UNAVAILABLE"
        assert entry["reason"]
    response = server.get(model_path(model) + "/ready")
    assert response.status_code == 503
    assert response.json()["error"]
    assert server.infer(model, X_REQUEST).status_code in (404, 503)


def test_external_data_outside_the_model_is_never_opened(servers, tmp_path):
    # The weights are a FIFO outside the model directory: opening it for
    # reading is what a writer polling with O_NONBLOCK can see, even when the
    # reader then fails.
    fifo = tmp_path / "canary.fifo"
    os.mkfifo(fifo)
    location = "../../../canary.fifo"
    model = onnx.load(TEST_MODELS / "external_outside" / "1" / "model.onnx",
                      load_external_data=False)
    for entry in model.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = location
    version_dir = tmp_path / "repo" / "escape" / "1"
    version_dir.mkdir(parents=True)
    onnx.save(model, version_dir / "model.onnx")
    assert (version_dir / location).resolve() == fifo

    opened = threading.Event()
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                opened.set()
            except OSError:  # ENXIO: nobody has it open for reading
                time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        server = servers.start(repo=tmp_path / "repo")
        load = server.post("/v2/repository/models/escape/load")
    finally:
        stop.set()
        watcher.join()
    assert not opened.is_set(), "perch opened external data outside the model"
    # Forbidden: the model asks to read a file outside the repository.
    assert load.status_code == 403, load.text
    assert load.json()["error"]
    assert index(server)["escape"]["1"]["state"] == "UNAVAILABLE"


def test_unload_then_load(servers, tmp_path):
    server = servers.start(repo=make_adder_repo(tmp_path, {1: 1}),
                           args=["--poll", POLL_SECONDS])
    assert added(server) == 1

    response = server.post("/v2/repository/models/adder/unload")
    assert response.status_code == 200, response.text
    assert server.infer("adder", X_REQUEST).status_code in (404, 503)
    assert server.get(model_path("adder") + "/ready").status_code in (404, 503)
    assert all(entry["state"] == "UNAVAILABLE"
               for entry in index(server)["adder"].values())

    # The poller must not undo an explicit unload.
    time.sleep(3 * POLL_SECONDS)
    assert added(server) is None

    response = server.post("/v2/repository/models/adder/load")
    assert response.status_code == 200, response.text
    assert added(server) == 1


def test_load_rereads_the_model_from_disk(servers, tmp_path):
    repo = make_adder_repo(tmp_path, {1: 1})
    server = servers.start(repo=repo)
    assert added(server) == 1

    staged = tmp_path / "model.onnx"
    shutil.copyfile(adds(3) / "model.onnx", staged)
    os.replace(staged, repo / "adder" / "1" / "model.onnx")
    assert added(server) == 1, "changed without a load or a poller"

    response = server.post("/v2/repository/models/adder/load")
    assert response.status_code == 200, response.text
    assert added(server) == 3


@pytest.mark.parametrize("action", ["load", "unload"])
def test_unknown_model_is_404(server, action):
    response = server.post(f"/v2/repository/models/no_such_model/{action}")
    assert response.status_code == 404
    assert "no_such_model" in response.json()["error"]


def test_load_of_a_broken_model_fails(server):
    response = server.post("/v2/repository/models/broken/load")
    assert response.status_code in (400, 500)
    assert response.json()["error"]
    assert server.get(model_path("add_sub") + "/ready").status_code == 200


class RequestLoop(threading.Thread):
    """Sends infer requests to "adder" until stopped, recording for each
    (status, model_version, what was added) or the exception raised."""

    def __init__(self, server):
        super().__init__()
        self.server = server
        self.results = []
        self._stopping = threading.Event()

    def run(self):
        while not self._stopping.is_set():
            try:
                response = self.server.infer("adder", X_REQUEST)
                body = response.json()
                if response.status_code == 200:
                    (out,) = oip.outputs_by_name(body).values()
                    self.results.append((200, body["model_version"],
                                         float(out[0] - X[0])))
                else:
                    self.results.append((response.status_code, body, None))
            except Exception as error:  # recorded, asserted by the test
                self.results.append((None, repr(error), None))
            time.sleep(0.005)

    def answers(self):
        """The (model_version, added) pairs seen so far."""
        return {(version, n) for status, version, n in list(self.results)
                if status == 200}

    def stop(self):
        self._stopping.set()
        self.join()


@contextlib.contextmanager
def request_loop(server):
    """A RequestLoop running for the with block, known to have started."""
    loop = RequestLoop(server)
    loop.start()
    try:
        assert wait_for(lambda: loop.results, RELOAD_TIMEOUT)
        yield loop
    finally:
        loop.stop()


@pytest.fixture
def polled(servers, tmp_path):
    """A polled server for a repository where "adder" version 1 adds 1.

    Returns (server, repository, stage) where stage(directory) copies a
    directory outside the repository and returns the copy, for the test to
    move in with one rename: a poller may look at any moment, and a
    half-copied model is not what a reload should see.
    """
    repo = make_adder_repo(tmp_path, {1: 1})
    server = servers.start(repo=repo, args=["--poll", POLL_SECONDS])
    staging = tmp_path / "staging"
    staging.mkdir()

    def stage(directory):
        copy = Path(tempfile.mkdtemp(dir=staging)) / directory.name
        shutil.copytree(directory, copy)
        return copy

    return server, repo, stage


def assert_only_successes(loop, expected):
    """Every request of loop succeeded, answered by each of expected
    ((model_version, added) pairs) and nothing else."""
    failures = [r for r in loop.results if r[0] != 200]
    assert not failures, (f"{len(failures)} of {len(loop.results)} failed: "
                          f"{failures[:3]}")
    assert loop.answers() == expected


def test_poll_serves_an_added_version(polled):
    server, repo, stage = polled
    with request_loop(server) as loop:
        os.rename(stage(adds(2)), repo / "adder" / "2")
        assert wait_for(lambda: ("2", 2.0) in loop.answers(), RELOAD_TIMEOUT)
    assert_only_successes(loop, {("1", 1.0), ("2", 2.0)})
    assert server.get(model_path("adder")).json()["versions"] == ["2"]


def test_poll_picks_up_a_replaced_model_file(polled):
    server, repo, stage = polled
    with request_loop(server) as loop:
        os.replace(stage(adds(3)) / "model.onnx",
                   repo / "adder" / "1" / "model.onnx")
        assert wait_for(lambda: ("1", 3.0) in loop.answers(), RELOAD_TIMEOUT)
    assert_only_successes(loop, {("1", 1.0), ("1", 3.0)})


def test_poll_falls_back_when_the_latest_version_goes(polled, tmp_path):
    server, repo, stage = polled
    os.rename(stage(adds(2)), repo / "adder" / "2")
    assert wait_for(lambda: added(server) == 2, RELOAD_TIMEOUT)
    # Moved out in one step, where rmtree would show a half-deleted version.
    os.rename(repo / "adder" / "2", tmp_path / "removed")
    assert wait_for(lambda: added(server) == 1, RELOAD_TIMEOUT)
    assert server.get(model_path("adder")).json()["versions"] == ["1"]


def test_poll_drops_a_removed_model(polled, tmp_path):
    server, repo, _ = polled
    os.rename(repo / "adder", tmp_path / "removed")
    assert wait_for(
        lambda: server.get(model_path("adder")).status_code == 404,
        RELOAD_TIMEOUT)
    assert server.infer("adder", X_REQUEST).status_code == 404


def test_poll_serves_an_added_model(polled):
    server, repo, stage = polled
    os.rename(stage(TEST_MODELS / "add_sub"), repo / "add_sub")
    assert wait_for(
        lambda: server.get(model_path("add_sub") + "/ready").status_code
        == 200, RELOAD_TIMEOUT)
