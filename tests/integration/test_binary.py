"""The binary tensor data extension, as Triton defines it, on add_sub."""

import json

import numpy as np
import pytest

import oip


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(["add_sub"])


@pytest.fixture
def operands():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((3, 4)).astype(np.float32),
            rng.standard_normal((3, 4)).astype(np.float32))


def post_binary(server, request, raws):
    body, headers = oip.binary_body(request, raws)
    response = server.infer("add_sub", body, headers=headers)
    assert response.status_code == 200, response.text
    return response


def test_binary_inputs_json_outputs(server, operands):
    a, b = operands
    input0, raw0 = oip.binary_input("INPUT0", a, "FP32")
    input1, raw1 = oip.binary_input("INPUT1", b, "FP32")
    response = post_binary(server, {"inputs": [input0, input1]}, [raw0, raw1])
    # A response without binary outputs is plain JSON.
    outputs = oip.outputs_by_name(response.json())
    assert np.array_equal(outputs["OUTPUT0"], a + b)
    assert np.array_equal(outputs["OUTPUT1"], a - b)


def test_binary_and_json_inputs_mixed(server, operands):
    a, b = operands
    input1, raw1 = oip.binary_input("INPUT1", b, "FP32")
    request = {"inputs": [oip.json_input("INPUT0", a, "FP32"), input1]}
    outputs = oip.outputs_by_name(
        post_binary(server, request, [raw1]).json())
    assert np.array_equal(outputs["OUTPUT0"], a + b)
    assert np.array_equal(outputs["OUTPUT1"], a - b)


def test_all_outputs_binary(server, operands):
    a, b = operands
    input0, raw0 = oip.binary_input("INPUT0", a, "FP32")
    input1, raw1 = oip.binary_input("INPUT1", b, "FP32")
    request = {"inputs": [input0, input1],
               "parameters": {"binary_data_output": True}}
    response = post_binary(server, request, [raw0, raw1])

    header_length = int(response.headers[oip.HEADER_LENGTH])
    header = json.loads(response.content[:header_length])
    expected = [("OUTPUT0", a + b), ("OUTPUT1", a - b)]
    assert [o["name"] for o in header["outputs"]] == [n for n, _ in expected]
    offset = header_length
    for output, (_, array) in zip(header["outputs"], expected):
        assert "data" not in output
        assert output["parameters"]["binary_data_size"] == array.nbytes
        raw = response.content[offset:offset + array.nbytes]
        assert raw == array.tobytes()
        offset += array.nbytes
    assert offset == len(response.content)


@pytest.mark.parametrize("binary_output", ["OUTPUT0", "OUTPUT1"])
def test_binary_chosen_per_output(server, operands, binary_output):
    a, b = operands
    request = {"inputs": [oip.json_input("INPUT0", a, "FP32"),
                          oip.json_input("INPUT1", b, "FP32")],
               "outputs": [
                   {"name": name,
                    "parameters": {"binary_data": name == binary_output}}
                   for name in ("OUTPUT1", "OUTPUT0")]}
    response = server.infer("add_sub", request)
    assert response.status_code == 200, response.text
    body = oip.decode_response(response)
    assert [o["name"] for o in body["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    for output in body["outputs"]:
        assert ("raw" in output) == (output["name"] == binary_output)
    outputs = oip.outputs_by_name(body)
    assert np.array_equal(outputs["OUTPUT0"], a + b)
    assert np.array_equal(outputs["OUTPUT1"], a - b)


def test_output_parameter_overrides_binary_data_output(server, operands):
    a, b = operands
    request = {"inputs": [oip.json_input("INPUT0", a, "FP32"),
                          oip.json_input("INPUT1", b, "FP32")],
               "parameters": {"binary_data_output": True},
               "outputs": [{"name": "OUTPUT0"},
                           {"name": "OUTPUT1",
                            "parameters": {"binary_data": False}}]}
    response = server.infer("add_sub", request)
    assert response.status_code == 200, response.text
    body = oip.decode_response(response)
    assert "raw" in body["outputs"][0]
    assert "data" in body["outputs"][1]


def test_large_tensors(server):
    # 256 KiB per input: more than one read or write of the HTTP layer.
    rng = np.random.default_rng(8)
    a = rng.standard_normal((16384, 4)).astype(np.float32)
    b = rng.standard_normal((16384, 4)).astype(np.float32)
    input0, raw0 = oip.binary_input("INPUT0", a, "FP32")
    input1, raw1 = oip.binary_input("INPUT1", b, "FP32")
    request = {"inputs": [input0, input1],
               "parameters": {"binary_data_output": True}}
    body = oip.decode_response(post_binary(server, request, [raw0, raw1]))
    outputs = oip.outputs_by_name(body)
    assert np.array_equal(outputs["OUTPUT0"], a + b)
    assert np.array_equal(outputs["OUTPUT1"], a - b)
