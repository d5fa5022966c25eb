"""Many models on one device, and models that try to reach outside REPO."""

import os
import shutil

import pytest

from harness import TEST_MODELS, model_path

MODEL_COUNT = 200


def threads_of(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line in /proc/PID/status")


def test_hundreds_of_models_share_one_thread_pool(servers, tmp_path):
    repo = tmp_path / "repo"
    for i in range(MODEL_COUNT):
        shutil.copytree(TEST_MODELS / "add_sub", repo / f"add_sub_{i}")
    server = servers.start(repo=repo, args=["--threads", "2", "--workers", "2"])
    index = server.post("/v2/repository/index").json()
    assert sum(entry["state"] == "READY" for entry in index) == MODEL_COUNT

    request = {"inputs": [
        {"name": name, "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
        for name in ("INPUT0", "INPUT1")]}
    for i in (0, MODEL_COUNT // 2, MODEL_COUNT - 1):
        response = server.post(model_path(f"add_sub_{i}") + "/infer",
                               json=request)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"][0]["data"] == [2, 4, 6, 8]

    # One shared inference pool, the workers, the HTTP and gRPC pools: a
    # thread pool per model would put this in the hundreds.
    assert threads_of(server.process.pid) < 80


@pytest.fixture
def outside(tmp_path):
    """A model file outside the repository that a link can point at."""
    target = tmp_path / "outside" / "model.onnx"
    target.parent.mkdir()
    shutil.copyfile(TEST_MODELS / "add_sub" / "1" / "model.onnx", target)
    return target


def test_model_file_linked_out_of_the_repository_is_refused(servers, tmp_path,
                                                            outside):
    repo = tmp_path / "repo"
    (repo / "escape" / "1").mkdir(parents=True)
    os.symlink(outside, repo / "escape" / "1" / "model.onnx")
    shutil.copytree(TEST_MODELS / "add_sub", repo / "add_sub")
    server = servers.start(repo=repo)

    rows = [row for row in server.post("/v2/repository/index").json()
            if row["name"] == "escape"]
    assert rows and rows[0]["state"] == "UNAVAILABLE"
    assert "outside the repository" in rows[0]["reason"]
    response = server.post("/v2/repository/models/escape/load")
    assert response.status_code == 403, response.text
    assert server.get(model_path("add_sub") + "/ready").status_code == 200


def test_version_folder_linked_out_of_the_repository_is_refused(
        servers, tmp_path, outside):
    repo = tmp_path / "repo"
    (repo / "escape").mkdir(parents=True)
    os.symlink(outside.parent, repo / "escape" / "1")
    server = servers.start(repo=repo)
    ready = server.get(model_path("escape") + "/ready")
    assert ready.status_code == 503
    assert "outside the repository" in ready.json()["error"]
