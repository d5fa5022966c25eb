"""Health, server and model metadata, readiness and plain JSON inference."""

import gzip
import json
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import oip
from harness import (PERCH_BIN, TEST_MODELS, expected_metadata, model_path,
                     project_version)

IDENTITY_MODELS = [f"identity_{dt.lower()}" for dt in oip.DATATYPES]
SINGLE_VERSION_MODELS = [*IDENTITY_MODELS, "add_sub", "fixed", "batched",
                         "external_inside"]
MODELS = [*SINGLE_VERSION_MODELS, "multi_version", "latest_two", "broken"]

INVALID_NAMES = ["..", ".", "a%2Fb", "..%2F..%2Fetc", "x" * 200, "bad-name!",
                 "a%00b", "%2e%2e"]
INVALID_VERSIONS = ["0", "-1", "abc", "1.0", "01x", "99999999999999999999",
                    "%2e%2e"]


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(MODELS)


def random_fp32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def infer_ok(server, model, request, version=None):
    response = server.infer(model, request, version)
    assert response.status_code == 200, response.text
    return response.json()


def add_sub_request(a, b, **fields):
    return {"inputs": [oip.json_input("INPUT0", a, "FP32"),
                       oip.json_input("INPUT1", b, "FP32")], **fields}


def test_health(server):
    assert server.get("/v2/health/live").status_code == 200
    assert server.get("/v2/health/ready").status_code == 200


def test_server_metadata(server):
    response = server.get("/v2")
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "perch"
    assert body["version"] == project_version()
    assert sorted(body["extensions"]) == sorted(
        ["binary_tensor_data", "model_repository", "metrics"])


def test_version_command():
    result = subprocess.run([PERCH_BIN, "version"], capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"perch {project_version()}"


def test_help_names_the_subcommands():
    result = subprocess.run([PERCH_BIN, "--help"], capture_output=True,
                            text=True, timeout=10)
    assert result.returncode == 0, result.stderr
    for subcommand in ("serve", "infer"):
        assert subcommand in result.stdout


def check_config(tmp_path, *args):
    """`perch serve --check-config` on an empty repository and --state in
    tmp_path: (exit status, stdout + stderr)."""
    repo = tmp_path / "repo"
    repo.mkdir(exist_ok=True)
    result = subprocess.run(
        [PERCH_BIN, "serve", "--check-config", "--repo", repo,
         "--state", tmp_path / "state", *map(str, args)],
        capture_output=True, text=True, timeout=10)
    return result.returncode, result.stdout + result.stderr


def test_check_config_accepts_good_options_and_leaves_no_trace(tmp_path):
    status, output = check_config(tmp_path, "--mqtt", "mqtt://127.0.0.1:1",
                                  "--location", "lab", "--device", "d1")
    assert status == 0, output
    assert "configuration is valid" in output
    assert not (tmp_path / "state").exists(), "--check-config wrote --state"


# Each is refused by a check that runs after the model source is known;
# --check-config must run it too, not stop at the first group of checks.
@pytest.mark.parametrize("args,message", [
    (["--mqtt", "http://127.0.0.1:1883"], "must start with mqtt:// or mqtts://"),
    (["--mqtt", "mqtt://127.0.0.1:99999"], "has a bad port"),
    (["--mqtt", "mqtt://127.0.0.1", "--location", "a/b"],
     'location "a/b" must be one topic level'),
    (["--mqtt", "mqtt://127.0.0.1", "--device", "d+"],
     'device "d+" must be one topic level'),
    (["--mqtt", "mqtt://127.0.0.1", "--mqtt-prefix", "#"],
     'prefix "#" must be one topic level'),
], ids=["scheme", "port", "location", "device", "prefix"])
def test_check_config_runs_the_mqtt_checks(tmp_path, args, message):
    status, output = check_config(tmp_path, *args)
    assert status == 1, output
    assert message in output, output
    assert "configuration is valid" not in output


@pytest.mark.parametrize("args,message", [
    (["--hub", "ftp://127.0.0.1:1"], "must be http://"),
    (["--hub", "http://127.0.0.1:1", "--device", "Not Valid"],
     "is not a valid device name"),
    (["--hub", "http://127.0.0.1:1", "--label", "oops"], "must be KEY=VALUE"),
], ids=["url", "device", "label"])
def test_check_config_runs_the_hub_checks(tmp_path, args, message):
    result = subprocess.run(
        [PERCH_BIN, "serve", "--check-config", "--state", tmp_path / "state",
         *args], capture_output=True, text=True, timeout=10)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert not (tmp_path / "state").exists(), "--check-config wrote --state"


@pytest.mark.parametrize("model", SINGLE_VERSION_MODELS)
def test_model_metadata_matches_the_onnx_file(server, model):
    expected = {"name": model, "versions": ["1"],
                "platform": "onnxruntime_onnx",
                **expected_metadata(TEST_MODELS / model / "1" / "model.onnx")}
    for path in (model_path(model), model_path(model, 1)):
        response = server.get(path)
        assert response.status_code == 200, response.text
        body = response.json()
        assert {key: body.get(key) for key in expected} == expected


@pytest.mark.parametrize("model, versions", [
    ("multi_version", ["1", "2", "3"]),
    ("latest_two", ["2", "3"]),
])
def test_version_policy_decides_the_versions_served(server, model, versions):
    body = server.get(model_path(model)).json()
    assert sorted(body["versions"], key=int) == versions
    for version in versions:
        assert server.get(model_path(model, version) + "/ready").json() == {
            "name": model, "ready": True}


def test_version_outside_the_policy_is_not_served(server):
    request = {"inputs": [oip.json_input("INPUT0", [1.0], "FP32")]}
    path = model_path("latest_two", 1)
    assert server.get(path).status_code == 404
    assert server.get(path + "/ready").status_code == 404
    assert server.post(path + "/infer", json=request).status_code == 404


def test_each_version_runs_its_own_model(server):
    x = np.array([0.25, -4.0, 100.0], dtype=np.float32)
    request = {"inputs": [oip.json_input("INPUT0", x, "FP32")]}
    for version in (1, 2, 3):
        body = infer_ok(server, "multi_version", request, version)
        assert body["model_version"] == str(version)
        assert np.array_equal(oip.outputs_by_name(body)["OUTPUT0"],
                              x + np.float32(version))


def test_highest_version_answers_without_a_version(server):
    x = np.array([1.5], dtype=np.float32)
    request = {"inputs": [oip.json_input("INPUT0", x, "FP32")]}
    for model in ("multi_version", "latest_two"):
        body = infer_ok(server, model, request)
        assert body["model_version"] == "3"
        assert np.array_equal(oip.outputs_by_name(body)["OUTPUT0"], x + 3)


def test_model_ready(server):
    for path in (model_path("add_sub"), model_path("add_sub", 1)):
        response = server.get(path + "/ready")
        assert response.status_code == 200
        assert response.json() == {"name": "add_sub", "ready": True}


@pytest.mark.parametrize("path", [
    model_path("no_such_model"),
    model_path("no_such_model", 1),
    model_path("add_sub", 2),
    model_path("multi_version", 4),
])
def test_unknown_model_or_version_is_404(server, path):
    request = add_sub_request(np.zeros((1, 4)), np.zeros((1, 4)))
    for response in (server.get(path), server.get(path + "/ready"),
                     server.post(path + "/infer", json=request)):
        assert response.status_code == 404, (path, response.text)
        assert response.json()["error"]


def test_broken_model_is_not_ready_and_others_serve(server):
    response = server.get(model_path("broken") + "/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["name"] == "broken"
    assert body["ready"] is False
    assert body["error"]
    assert server.get(model_path("add_sub") + "/ready").status_code == 200


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_model_name_is_refused(server, name):
    for method, suffix in (("GET", ""), ("GET", "/ready"),
                           ("POST", "/infer"), ("GET", "/versions/1")):
        status, _ = server.raw_request(method, f"/v2/models/{name}{suffix}")
        assert status in (400, 404), (method, name, suffix)
    assert server.get(model_path("add_sub") + "/ready").status_code == 200


@pytest.mark.parametrize("version", INVALID_VERSIONS)
def test_invalid_version_is_refused(server, version):
    for method, suffix in (("GET", ""), ("GET", "/ready"), ("POST", "/infer")):
        path = f"/v2/models/add_sub/versions/{version}{suffix}"
        status, _ = server.raw_request(method, path)
        assert status in (400, 404), (method, path)


def test_add_sub(server):
    rng = np.random.default_rng(1)
    a, b = random_fp32(rng, (3, 4)), random_fp32(rng, (3, 4))
    body = infer_ok(server, "add_sub", add_sub_request(a, b, id="req-42"))
    assert body["model_name"] == "add_sub"
    assert body["model_version"] == "1"
    assert body["id"] == "req-42"
    assert [o["name"] for o in body["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    for output in body["outputs"]:
        assert output["datatype"] == "FP32"
        assert output["shape"] == [3, 4]
    outputs = oip.outputs_by_name(body)
    assert np.array_equal(outputs["OUTPUT0"], a + b)
    assert np.array_equal(outputs["OUTPUT1"], a - b)


def test_nested_data_reads_row_major(server):
    rng = np.random.default_rng(2)
    a, b = random_fp32(rng, (2, 4)), random_fp32(rng, (2, 4))
    request = add_sub_request(a, b)
    request["inputs"][0]["data"] = [[float(x) for x in row] for row in a]
    outputs = oip.outputs_by_name(infer_ok(server, "add_sub", request))
    assert np.array_equal(outputs["OUTPUT0"], a + b)


@pytest.mark.parametrize("selected", [["OUTPUT1"], ["OUTPUT1", "OUTPUT0"]])
def test_requested_outputs_come_in_request_order(server, selected):
    rng = np.random.default_rng(3)
    a, b = random_fp32(rng, (1, 4)), random_fp32(rng, (1, 4))
    request = add_sub_request(a, b, outputs=[{"name": n} for n in selected])
    body = infer_ok(server, "add_sub", request)
    assert [o["name"] for o in body["outputs"]] == selected
    expected = {"OUTPUT0": a + b, "OUTPUT1": a - b}
    for name, array in oip.outputs_by_name(body).items():
        assert np.array_equal(array, expected[name])


def test_concurrent_requests_get_their_own_answers(server):
    def check(seed):
        # Batch sizes vary too, so that mixed-up answers cannot fit.
        rng = np.random.default_rng(seed)
        shape = (seed % 5 + 1, 4)
        a, b = random_fp32(rng, shape), random_fp32(rng, shape)
        outputs = oip.outputs_by_name(
            infer_ok(server, "add_sub", add_sub_request(a, b)))
        return (np.array_equal(outputs["OUTPUT0"], a + b)
                and np.array_equal(outputs["OUTPUT1"], a - b))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(check, range(200)))


def test_empty_batch(server):
    empty = np.zeros((0, 4), dtype=np.float32)
    body = infer_ok(server, "add_sub", add_sub_request(empty, empty))
    for output in body["outputs"]:
        assert output["shape"] == [0, 4]
        assert output["data"] == []


def test_fixed_shape_model(server):
    x = random_fp32(np.random.default_rng(4), (2, 3))
    request = {"inputs": [oip.json_input("INPUT0", x, "FP32")]}
    outputs = oip.outputs_by_name(infer_ok(server, "fixed", request))
    assert np.array_equal(outputs["OUTPUT0"], np.maximum(x, 0))


@pytest.mark.parametrize("batch", [1, 4])
def test_batched_model_up_to_max_batch_size(server, batch):
    x = random_fp32(np.random.default_rng(batch), (batch, 3))
    request = {"inputs": [oip.json_input("INPUT0", x, "FP32")]}
    outputs = oip.outputs_by_name(infer_ok(server, "batched", request))
    assert np.array_equal(outputs["OUTPUT0"], x * 2)


def test_external_data_inside_the_model_directory(server):
    # A str path: onnx 1.12 resolves external data only relative to one.
    model = onnx.load(str(TEST_MODELS / "external_inside/1/model.onnx"))
    weights = numpy_helper.to_array(model.graph.initializer[0])
    x = random_fp32(np.random.default_rng(5), weights.shape)
    request = {"inputs": [oip.json_input("INPUT0", x, "FP32")]}
    outputs = oip.outputs_by_name(infer_ok(server, "external_inside", request))
    assert np.array_equal(outputs["OUTPUT0"], x + weights)


def test_gzip_request_body(server):
    rng = np.random.default_rng(6)
    a, b = random_fp32(rng, (2, 4)), random_fp32(rng, (2, 4))
    body = gzip.compress(json.dumps(add_sub_request(a, b)).encode())
    response = server.infer("add_sub", body, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert np.array_equal(oip.outputs_by_name(response.json())["OUTPUT0"],
                          a + b)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_exits_cleanly_on_signal(servers, sig):
    server = servers.start(["add_sub"])
    assert server.stop(sig) == 0, server.logs()
