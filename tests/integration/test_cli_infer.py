"""`perch infer`: one request from the command line, inputs from files."""

import json
import subprocess

import numpy as np
import pytest

import oip
from edge_values import sample
from harness import PERCH_BIN, free_port

# Datatypes a .npy file can hold natively.
NPY_DATATYPES = [dt for dt in oip.DATATYPES if dt not in ("BYTES", "BF16")]


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(
        ["add_sub", "multi_version",
         *(f"identity_{dt.lower()}" for dt in NPY_DATATYPES)])


@pytest.fixture
def operands():
    rng = np.random.default_rng(9)
    return (rng.standard_normal((2, 4)).astype(np.float32),
            rng.standard_normal((2, 4)).astype(np.float32))


def run_perch(*args):
    return subprocess.run([str(PERCH_BIN), *map(str, args)],
                          capture_output=True, text=True, timeout=30)


def perch_infer(url, model, inputs, *args):
    """Runs `perch infer` with --input NAME=FILE for each of inputs."""
    input_args = [arg for name, path in inputs.items()
                  for arg in ("--input", f"{name}={path}")]
    return run_perch("infer", model, "--url", url, *input_args, *args)


def printed_response(result):
    """The response the CLI printed, after checking it exited 0."""
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def error_message(result):
    """The CLI's error message, after checking it failed."""
    assert result.returncode != 0, result.stdout
    assert result.stderr.strip(), "no error message on stderr"
    return result.stderr


def save_npy(path, array):
    np.save(path, array)
    return path


def test_npy_inputs(server, operands, tmp_path):
    a, b = operands
    body = printed_response(perch_infer(server.url, "add_sub", {
        "INPUT0": save_npy(tmp_path / "a.npy", a),
        "INPUT1": save_npy(tmp_path / "b.npy", b)}))
    assert body["model_name"] == "add_sub"
    outputs = oip.outputs_by_name(body)
    assert np.array_equal(outputs["OUTPUT0"], a + b)
    assert np.array_equal(outputs["OUTPUT1"], a - b)


def test_json_inputs(server, operands, tmp_path):
    a, b = operands
    # One file in the OIP tensor form, one a bare nested array whose
    # datatype the CLI must take from the model metadata.
    tensor_file = tmp_path / "a.json"
    tensor = oip.json_input("INPUT0", a, "FP32")
    del tensor["name"]
    tensor_file.write_text(json.dumps(tensor))
    nested_file = tmp_path / "b.json"
    nested_file.write_text(json.dumps(b.tolist()))

    body = printed_response(perch_infer(server.url, "add_sub", {
        "INPUT0": tensor_file, "INPUT1": nested_file}))
    assert np.array_equal(oip.outputs_by_name(body)["OUTPUT0"], a + b)


@pytest.mark.parametrize("selected", [["OUTPUT1"], ["OUTPUT1", "OUTPUT0"]])
def test_output_selection(server, operands, tmp_path, selected):
    a, b = operands
    args = [arg for name in selected for arg in ("--output", name)]
    body = printed_response(perch_infer(server.url, "add_sub", {
        "INPUT0": save_npy(tmp_path / "a.npy", a),
        "INPUT1": save_npy(tmp_path / "b.npy", b)}, *args))
    assert [o["name"] for o in body["outputs"]] == selected


def test_model_version(server, tmp_path):
    x = np.array([1.0, -2.0], dtype=np.float32)
    body = printed_response(perch_infer(
        server.url, "multi_version",
        {"INPUT0": save_npy(tmp_path / "x.npy", x)}, "--model-version", "2"))
    assert body["model_version"] == "2"
    assert np.array_equal(oip.outputs_by_name(body)["OUTPUT0"], x + 2)


@pytest.mark.parametrize("datatype", NPY_DATATYPES)
def test_npy_datatype_round_trip(server, tmp_path, datatype):
    tensor = sample(datatype)
    body = printed_response(perch_infer(
        server.url, f"identity_{datatype.lower()}",
        {"INPUT0": save_npy(tmp_path / "x.npy", tensor)}))
    (output,) = body["outputs"]
    assert output["datatype"] == datatype
    assert oip.same_bits(oip.output_array(output), tensor)


@pytest.mark.parametrize("layout", ["fortran-order", "big-endian"])
def test_npy_layouts_are_read_right_or_refused(server, tmp_path, layout):
    x = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    if layout == "fortran-order":
        stored = np.asfortranarray(x)
    else:
        stored = x.astype(">f8")
    result = perch_infer(server.url, "identity_fp64",
                         {"INPUT0": save_npy(tmp_path / "x.npy", stored)})
    if result.returncode == 0:
        output = oip.outputs_by_name(json.loads(result.stdout))["OUTPUT0"]
        assert np.array_equal(output, x), "misread the .npy file"
    else:
        error_message(result)


def test_unknown_model(server, tmp_path):
    path = save_npy(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    message = error_message(
        perch_infer(server.url, "no_such_model", {"INPUT0": path}))
    assert "no_such_model" in message


@pytest.mark.parametrize("content", [
    b"", b"\x93NUMPY garbage", b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'"])
def test_corrupt_npy(server, tmp_path, content):
    path = tmp_path / "corrupt.npy"
    path.write_bytes(content)
    message = error_message(
        perch_infer(server.url, "identity_fp32", {"INPUT0": path}))
    assert "corrupt.npy" in message


def test_truncated_npy_data(server, tmp_path):
    path = save_npy(tmp_path / "short.npy", np.zeros((4, 4), np.float32))
    path.write_bytes(path.read_bytes()[:-8])
    assert "short.npy" in error_message(
        perch_infer(server.url, "identity_fp32", {"INPUT0": path}))


def test_missing_input_file(server, tmp_path):
    message = error_message(perch_infer(
        server.url, "identity_fp32", {"INPUT0": tmp_path / "absent.npy"}))
    assert "absent.npy" in message


def test_input_argument_without_a_file(server):
    error_message(run_perch("infer", "identity_fp32", "--url", server.url,
                            "--input", "INPUT0"))


def test_server_not_reachable(tmp_path):
    path = save_npy(tmp_path / "x.npy", np.zeros((1, 4), np.float32))
    error_message(perch_infer(f"http://127.0.0.1:{free_port()}",
                              "add_sub", {"INPUT0": path}))


# A pipeline that keeps the last 4 values of each stream, the stream named by
# the request parameter stream_id.
WINDOW = {
    "kind": "pipeline",
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [1]}],
    "outputs": [{"name": "last", "datatype": "FP32", "dims": [4]}],
    "steps": [{"name": "window", "op": "window", "input": "x",
               "output": "last", "frames": 4}],
}


@pytest.fixture(scope="module")
def pipeline_server(module_servers):
    server = module_servers.prepare()
    (server.repo / "window").mkdir()
    (server.repo / "window" / "model.json").write_text(json.dumps(WINDOW))
    return server.start()


def test_parameters_name_a_pipelines_stream(pipeline_server, tmp_path):
    def last(value, *args):
        path = tmp_path / "x.json"
        path.write_text(json.dumps([value]))
        answer = printed_response(perch_infer(
            pipeline_server.url, "window", {"x": path}, *args))
        return oip.outputs_by_name(answer)["last"].tolist()
    assert last(1.5, "--parameter", "stream_id=kitchen") == [0, 0, 0, 1.5]
    assert last(2.5, "--parameter", "stream_id=kitchen",
                "--parameter", "gain=2") == [0, 0, 1.5, 2.5]
    # An integer names a stream of its own; a quoted one is the same text.
    assert last(3.5, "--parameter", "stream_id=7") == [0, 0, 0, 3.5]
    assert last(4.5, "--parameter", 'stream_id="7"') == [0, 0, 3.5, 4.5]
    path = tmp_path / "x.json"
    assert 'request parameter "stream_id"' in error_message(
        perch_infer(pipeline_server.url, "window", {"x": path}))
    assert "--parameter takes NAME=VALUE" in error_message(perch_infer(
        pipeline_server.url, "window", {"x": path}, "--parameter", "=x"))
