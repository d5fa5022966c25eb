"""model.json "execution_providers": a provider this machine does not have
(no GPU here: the ONNX Runtime build carries only the CPU provider) is
passed over for the next one, with the reason in the log; a list with no
provider that can run leaves the model unavailable, saying why."""

import json
import shutil

import numpy as np

import oip
from harness import TEST_MODELS

X = np.array([0.5, -3.0, 42.0], dtype=np.float32)
X_REQUEST = {"inputs": [oip.json_input("INPUT0", X, "FP32")]}


def repo_with(folder, providers_by_model):
    """A repository of models that add 1, each with its model.json asking
    for the given execution providers."""
    for model, providers in providers_by_model.items():
        (folder / model / "1").mkdir(parents=True)
        shutil.copyfile(TEST_MODELS / "multi_version" / "1" / "model.onnx",
                        folder / model / "1" / "model.onnx")
        (folder / model / "model.json").write_text(
            json.dumps({"execution_providers": providers}))
    return folder


def index_entry(server, model):
    response = server.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    (entry,) = [e for e in response.json() if e["name"] == model]
    return entry


def test_a_missing_gpu_falls_back_to_the_cpu_and_says_why(
        servers, tmp_path):
    repo = repo_with(tmp_path / "repo", {
        "gpu_first": ["cuda", "cpu"],
        "gpu_only": ["cuda"],
        "cpu_only": ["cpu"]})
    server = servers.start(repo=repo)

    for model in ("gpu_first", "cpu_only"):
        response = server.infer(model, X_REQUEST)
        assert response.status_code == 200, response.text
        (output,) = oip.outputs_by_name(response.json()).values()
        np.testing.assert_allclose(output, X + 1)

    logs = server.logs()
    assert "execution provider passed over, cuda: not in this ONNX " \
        "Runtime build" in logs, logs
    assert "runs on the cpu execution provider" in logs, logs

    entry = index_entry(server, "gpu_only")
    assert entry["state"] != "READY", entry
    assert "none of the execution providers asked for can run here" \
        in entry.get("reason", ""), entry
    assert 'add "cpu"' in entry["reason"], entry
    assert server.infer("gpu_only", X_REQUEST).status_code != 200


def test_an_unknown_provider_is_refused_by_name(servers, tmp_path):
    repo = repo_with(tmp_path / "repo", {"typo": ["gpu", "cpu"]})
    server = servers.start(repo=repo)
    entry = index_entry(server, "typo")
    assert entry["state"] != "READY", entry
    assert '"execution_providers": "gpu" is not one of' in entry["reason"], \
        entry
