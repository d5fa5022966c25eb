"""Malformed requests get a 4xx naming what was wrong, and never take the
server down: after each one, the server must still answer a good request."""

import gzip
import json
import math
import re
import struct

import numpy as np
import pytest

import oip

MAX_BODY_BYTES = 256 * 1024
MAX_JSON_DEPTH = 16
HEADER = oip.HEADER_LENGTH

MODELS = ["add_sub", "fixed", "batched", "identity_bool", "identity_uint8",
          "identity_int8", "identity_int32", "identity_int64",
          "identity_uint64", "identity_fp16", "identity_fp32",
          "identity_bytes"]

# Patterns an error message must match, case-insensitively.
JSON_ERROR = r"json|pars|syntax|invalid|utf"
DEPTH_ERROR = r"deep|depth|nest"
SIZE_ERROR = r"large|limit|size|bytes|body"
SHORT_BINARY_ERROR = r"INPUT1|binary|size|body"


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(MODELS, args=[
        "--max-body-bytes", MAX_BODY_BYTES,
        "--max-json-depth", MAX_JSON_DEPTH])


def tensor(name="INPUT0", shape=(1, 4), datatype="FP32", data=None):
    """A JSON input; data defaults to zeros filling the shape."""
    if data is None:
        data = [0.0] * math.prod(shape)
    return {"name": name, "datatype": datatype, "shape": list(shape),
            "data": data}


def add_sub(*inputs, **fields):
    """An add_sub request: the inputs given, else two good ones."""
    inputs = inputs or (tensor("INPUT0"), tensor("INPUT1"))
    return {"inputs": list(inputs), **fields}


def assert_still_serving(server):
    rng = np.random.default_rng(10)
    a = rng.standard_normal((2, 4)).astype(np.float32)
    b = rng.standard_normal((2, 4)).astype(np.float32)
    response = server.infer("add_sub", {"inputs": [
        oip.json_input("INPUT0", a, "FP32"),
        oip.json_input("INPUT1", b, "FP32")]})
    assert response.status_code == 200, (
        f"a good request failed after a bad one: {response.text}")
    assert np.array_equal(oip.outputs_by_name(response.json())["OUTPUT0"],
                          a + b)


def assert_rejected(server, response, status, mention):
    """response is an error with status whose JSON message matches the
    pattern mention, and the server still serves."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert re.search(mention, error, re.IGNORECASE), (
        f"error message {error!r} does not mention {mention!r}")
    assert_still_serving(server)


def nested(depth, leaf):
    """leaf wrapped in depth JSON arrays."""
    return "[" * depth + leaf + "]" * depth


JSON_CASES = [
    pytest.param("add_sub", add_sub(tensor(datatype="INT32", data=[0] * 4),
                                    tensor("INPUT1")),
                 "INPUT0", id="wrong-datatype"),
    pytest.param("add_sub", add_sub(tensor(datatype="FP33"), tensor("INPUT1")),
                 "FP33", id="unknown-datatype"),
    pytest.param("add_sub", add_sub(tensor(shape=(2, 4), data=[0.0] * 7),
                                    tensor("INPUT1", shape=(2, 4))),
                 "INPUT0", id="too-little-data"),
    pytest.param("add_sub", add_sub(tensor(data=[0.0] * 5), tensor("INPUT1")),
                 "INPUT0", id="too-much-data"),
    pytest.param("add_sub", add_sub(tensor(shape=(-1, 4), data=[0.0] * 4),
                                    tensor("INPUT1")),
                 "INPUT0", id="negative-dim"),
    # 2**62 * 4 wraps to 0 in 64 bits, which the empty data would "fill".
    pytest.param("add_sub", add_sub(tensor(shape=(2**62, 4), data=[]),
                                    tensor("INPUT1")),
                 "INPUT0", id="element-count-wraps-to-zero"),
    pytest.param("identity_fp32", {"inputs": [
        tensor(shape=(2**32, 2**32), data=[])]},
        "INPUT0", id="element-count-overflows"),
    pytest.param("add_sub", add_sub(tensor(shape=(2**63, 4), data=[]),
                                    tensor("INPUT1")),
                 "INPUT0|shape", id="dim-beyond-int64"),
    pytest.param("add_sub", add_sub(tensor(shape=(1.5, 4), data=[0.0] * 4),
                                    tensor("INPUT1")),
                 "INPUT0|shape", id="fractional-dim"),
    pytest.param("add_sub", add_sub(tensor(shape=(4,)), tensor("INPUT1")),
                 "INPUT0", id="wrong-rank"),
    pytest.param("add_sub", add_sub(tensor(shape=(2, 5)),
                                    tensor("INPUT1", shape=(2, 5))),
                 "INPUT0", id="dim-differs-from-model"),
    pytest.param("fixed", {"inputs": [tensor(shape=(3, 2))]},
                 "INPUT0", id="dims-differ-from-fixed-model"),
    pytest.param("batched", {"inputs": [tensor(shape=(5, 3))]},
                 "batch|INPUT0", id="batch-over-max-batch-size"),
    pytest.param("add_sub", add_sub(tensor("INPUT0")),
                 "INPUT1", id="missing-input"),
    pytest.param("add_sub", add_sub(tensor("INPUT0"), tensor("INPUT0"),
                                    tensor("INPUT1")),
                 "INPUT0", id="duplicate-input"),
    pytest.param("add_sub", add_sub(tensor("INPUT0"), tensor("INPUT1"),
                                    tensor("INPUT2")),
                 "INPUT2", id="unknown-input"),
    pytest.param("add_sub", add_sub(outputs=[{"name": "OUTPUT9"}]),
                 "OUTPUT9", id="unknown-output"),
    pytest.param("add_sub", add_sub(
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4]},
        tensor("INPUT1")),
        "INPUT0", id="no-data"),
    pytest.param("add_sub", add_sub(tensor(data="0 0 0 0"), tensor("INPUT1")),
                 "INPUT0", id="data-not-an-array"),
    pytest.param("add_sub", add_sub(
        {**tensor(), "parameters": {"binary_data_size": 16}},
        tensor("INPUT1")),
        "INPUT0|binary", id="binary-size-without-binary-part"),
    pytest.param("add_sub", {"inputs": {"INPUT0": tensor()}},
                 "inputs", id="inputs-not-an-array"),
    pytest.param("add_sub", {"outputs": []}, "inputs", id="no-inputs"),
]


@pytest.mark.parametrize("model, request_body, mention", JSON_CASES)
def test_invalid_request(server, model, request_body, mention):
    assert_rejected(server, server.infer(model, request_body), 400, mention)


@pytest.mark.parametrize("datatype, value", [
    ("UINT8", 300), ("UINT8", -1), ("INT8", 128), ("INT32", 1.5),
    ("INT32", 2**31), ("INT64", 2**63), ("UINT64", -1),
    ("FP32", "x"), ("FP32", None), ("FP16", "1"), ("BOOL", "true"),
    ("BYTES", 5),
])
def test_value_not_of_the_datatype(server, datatype, value):
    request = {"inputs": [tensor(shape=(1, 1), datatype=datatype,
                                 data=[value])]}
    response = server.infer(f"identity_{datatype.lower()}", request)
    assert_rejected(server, response, 400, "INPUT0")


def test_integer_past_64_bits(server):
    # No 64-bit type holds it, so the JSON parser refuses the whole body
    # before any tensor is read: the message names the range, not the input.
    request = {"inputs": [tensor(shape=(1, 1), datatype="UINT64",
                                 data=[2**64])]}
    response = server.infer("identity_uint64", request)
    assert_rejected(server, response, 400, "64-bit range")


def test_unknown_model(server):
    assert_rejected(server, server.infer("no_such_model", add_sub()), 404,
                    "no_such_model")


def test_unknown_version(server):
    assert_rejected(server, server.infer("add_sub", add_sub(), version=7),
                    404, r"\b7\b")


@pytest.mark.parametrize("body, mention", [
    pytest.param(b'{"inputs": [', JSON_ERROR, id="truncated"),
    pytest.param(b"", JSON_ERROR + "|empty|body", id="empty"),
    pytest.param(b'{"inputs": "\xff\xfe"}', JSON_ERROR, id="not-utf8"),
    pytest.param(b"[" * 100_000, JSON_ERROR + "|" + DEPTH_ERROR,
                 id="unterminated-deep-nesting"),
    pytest.param(nested(100_000, "").encode(), DEPTH_ERROR,
                 id="deep-nesting"),
    # 19 deep: refused only if --max-json-depth is obeyed (the default is 64).
    pytest.param(json.dumps(add_sub()).replace(
        '"data": [0.0, 0.0, 0.0, 0.0]',
        '"data": ' + nested(MAX_JSON_DEPTH, "0.0"), 1).encode(),
        DEPTH_ERROR, id="data-nested-past-the-limit"),
])
def test_unparsable_body(server, body, mention):
    response = server.infer("add_sub", body,
                            headers={"Content-Type": "application/json"})
    assert_rejected(server, response, 400, mention)


def padded_request(size):
    """A valid JSON request body of size bytes."""
    head, tail = b'{"inputs": [', b"]}"
    return head + b" " * (size - len(head) - len(tail)) + tail


def test_body_over_the_limit(server):
    response = server.infer("add_sub", padded_request(MAX_BODY_BYTES + 1))
    assert_rejected(server, response, 413, SIZE_ERROR)


def test_chunked_body_over_the_limit(server):
    # No Content-Length: the server must count while it reads.
    chunk = b" " * 4096
    chunks = [b'{"inputs": [', *[chunk] * (MAX_BODY_BYTES // len(chunk)),
              b"]}"]
    response = server.infer("add_sub", iter(chunks))
    assert_rejected(server, response, 413, SIZE_ERROR)


def test_gzip_body_inflating_past_the_limit(server):
    bomb = gzip.compress(padded_request(64 * MAX_BODY_BYTES))
    assert len(bomb) < MAX_BODY_BYTES
    response = server.infer("add_sub", bomb, headers={
        "Content-Encoding": "gzip", "Content-Type": "application/json"})
    assert_rejected(server, response, 413, SIZE_ERROR)


def fp32_binary(name, shape=(1, 4), size=None):
    """(input, raw) with binary_data_size overridable to lie about raw."""
    description, raw = oip.binary_input(
        name, np.zeros(shape, dtype=np.float32), "FP32")
    if size is not None:
        description["parameters"]["binary_data_size"] = size
    return description, raw


def post_binary(server, model, inputs, raws, header_length=None):
    body, headers = oip.binary_body({"inputs": inputs}, raws)
    if header_length is not None:
        headers[HEADER] = header_length
    return server.infer(model, body, headers=headers)


@pytest.mark.parametrize("header_length", [
    "99999", "abc", "-1", "12abc", "1e3", "99999999999999999999999"])
def test_bad_header_length(server, header_length):
    input0, raw0 = fp32_binary("INPUT0")
    input1, raw1 = fp32_binary("INPUT1")
    response = post_binary(server, "add_sub", [input0, input1], [raw0, raw1],
                           header_length=header_length)
    assert_rejected(server, response, 400, HEADER)


def test_binary_size_not_matching_the_shape(server):
    input0, raw0 = fp32_binary("INPUT0", size=12)
    input1, raw1 = fp32_binary("INPUT1")
    response = post_binary(server, "add_sub", [input0, input1],
                           [raw0[:12], raw1])
    assert_rejected(server, response, 400, "INPUT0")


def test_binary_data_shorter_than_the_sizes(server):
    input0, raw0 = fp32_binary("INPUT0")
    input1, raw1 = fp32_binary("INPUT1")
    response = post_binary(server, "add_sub", [input0, input1],
                           [raw0, raw1[:8]])
    assert_rejected(server, response, 400, SHORT_BINARY_ERROR)


@pytest.mark.parametrize("size", [2**63, 2**64 - 1])
def test_binary_size_overflowing_the_offsets(server, size):
    input0, raw0 = fp32_binary("INPUT0")
    input1, raw1 = fp32_binary("INPUT1", size=size)
    response = post_binary(server, "add_sub", [input0, input1], [raw0, raw1])
    assert_rejected(server, response, 400, SHORT_BINARY_ERROR)


def test_bytes_length_prefix_past_the_buffer(server):
    raw = struct.pack("<I", 1000) + b"abcd"
    description = {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1],
                   "parameters": {"binary_data_size": len(raw)}}
    response = post_binary(server, "identity_bytes", [description], [raw])
    assert_rejected(server, response, 400, "INPUT0")


def test_bytes_elements_fewer_than_the_shape(server):
    raw = struct.pack("<I", 2) + b"ab"
    description = {"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2],
                   "parameters": {"binary_data_size": len(raw)}}
    response = post_binary(server, "identity_bytes", [description], [raw])
    assert_rejected(server, response, 400, "INPUT0")
