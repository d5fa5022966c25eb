"""Malformed gRPC requests get a status code and a message naming what was
wrong, and never take the server down: after each one, the server must
still answer a good request."""

import re
import struct

import grpc
import numpy as np
import pytest

import grpc_oip
from grpc_oip import (connect, infer_request, parameters, raw_input,
                      response_arrays, typed_input)

# The session's generated stubs, a fixture of grpc_oip.
grpc_stubs = grpc_oip.grpc_stubs

MAX_MESSAGE_BYTES = 64 * 1024

MODELS = ["add_sub", "multi_version", "identity_uint8", "identity_uint16",
          "identity_int8", "identity_int32", "identity_bool",
          "identity_bytes", "identity_fp32"]

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(MODELS)


@pytest.fixture(scope="module")
def client(grpc_stubs, server):
    client = connect(grpc_stubs, server)
    yield client
    client.close()


@pytest.fixture(scope="module")
def small_server(module_servers):
    """A server whose gRPC messages may be at most MAX_MESSAGE_BYTES."""
    return module_servers.start(
        ["add_sub", "identity_fp32", "mixed_precision"],
        args=["--grpc-max-message-bytes", MAX_MESSAGE_BYTES])


@pytest.fixture(scope="module")
def small_client(grpc_stubs, small_server):
    client = connect(grpc_stubs, small_server)
    yield client
    client.close()


def assert_still_serving(client):
    rng = np.random.default_rng(10)
    a = rng.standard_normal((2, 4)).astype(np.float32)
    b = rng.standard_normal((2, 4)).astype(np.float32)
    pb = client.pb
    response = client.infer(infer_request(pb, "add_sub", [
        typed_input(pb, "INPUT0", a, "FP32"),
        typed_input(pb, "INPUT1", b, "FP32")]))
    arrays, _ = response_arrays(response)
    assert np.array_equal(arrays["OUTPUT0"], a + b)


def assert_rejected(client, message, code, mention):
    """ModelInfer(message) fails with code and a message matching the
    pattern mention, and the server still serves."""
    error = client.error("ModelInfer", message)
    assert error.code() == code, (error.code(), error.details())
    assert re.search(mention, error.details(), re.IGNORECASE), (
        f"error message {error.details()!r} does not mention {mention!r}")
    assert_still_serving(client)


def fp32(pb, name="INPUT0", shape=(1, 4), values=None, field=None,
         datatype="FP32"):
    """A typed input; values default to zeros filling the shape."""
    if values is None:
        values = np.zeros(shape, np.float32)
    return typed_input(pb, name, np.asarray(values), datatype, field=field,
                       shape=shape)


def add_sub(pb, *inputs, **fields):
    """An add_sub request: the inputs given, else two good typed ones."""
    inputs = inputs or (fp32(pb, "INPUT0"), fp32(pb, "INPUT1"))
    return infer_request(pb, "add_sub", inputs, **fields)


def raw_add_sub(pb, raws=None, shapes=((1, 4), (1, 4)), **fields):
    """An add_sub request in raw contents; raws default to the bytes of
    [1, 4] zeros whatever the shapes say."""
    inputs, good_raws = zip(*(
        raw_input(pb, name, np.zeros((1, 4), np.float32), "FP32", shape=shape)
        for name, shape in zip(("INPUT0", "INPUT1"), shapes)))
    return infer_request(pb, "add_sub", inputs,
                         good_raws if raws is None else raws, **fields)


def with_input_datatype(message, datatype):
    message.inputs[0].datatype = datatype
    return message


def with_typed_contents_too(message):
    message.inputs[0].contents.fp32_contents.extend([0.0] * 4)
    return message


def with_two_fields(tensor):
    tensor.contents.fp64_contents.extend([0.0] * 4)
    return tensor


def bytes_raw_request(pb, raw, shape):
    description = pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype="BYTES", shape=list(shape))
    return infer_request(pb, "identity_bytes", [description], [raw])


# (id, build(pb) -> request, status code, pattern the message must match)
CASES = [
    ("wrong-datatype", lambda pb: add_sub(
        pb, fp32(pb, values=np.zeros((1, 4), np.int32), datatype="INT32"),
        fp32(pb, "INPUT1")), INVALID, r"INPUT0.*INT32|INT32.*INPUT0"),
    ("wrong-datatype-raw", lambda pb: with_input_datatype(
        raw_add_sub(pb), "INT32"), INVALID, r"INPUT0.*INT32|INT32.*INPUT0"),
    ("unknown-datatype", lambda pb: with_input_datatype(
        add_sub(pb), "FP33"), INVALID, r"FP33"),
    ("unknown-datatype-raw", lambda pb: with_input_datatype(
        raw_add_sub(pb), "FP33"), INVALID, r"FP33"),
    ("empty-datatype", lambda pb: with_input_datatype(add_sub(pb), ""),
     INVALID, r"INPUT0.*datatype|datatype.*INPUT0"),
    ("raw-too-short", lambda pb: raw_add_sub(pb, [b"\0" * 12, b"\0" * 16]),
     INVALID, r"INPUT0"),
    ("raw-too-long", lambda pb: raw_add_sub(pb, [b"\0" * 16, b"\0" * 17]),
     INVALID, r"INPUT1"),
    ("raw-empty", lambda pb: raw_add_sub(pb, [b"", b"\0" * 16]),
     INVALID, r"INPUT0"),
    ("fewer-raw-contents-than-inputs", lambda pb: raw_add_sub(
        pb, [b"\0" * 16]), INVALID, r"raw_input_contents"),
    ("more-raw-contents-than-inputs", lambda pb: raw_add_sub(
        pb, [b"\0" * 16] * 3), INVALID, r"raw_input_contents"),
    ("typed-and-raw-contents", lambda pb: with_typed_contents_too(
        raw_add_sub(pb)), INVALID, r"INPUT0.*(raw|typed)"),
    ("int32-in-int64-contents", lambda pb: infer_request(
        pb, "identity_int32", [fp32(pb, values=np.zeros((1, 4), np.int32),
                                    datatype="INT32",
                                    field="int64_contents")]),
     INVALID, r"INPUT0.*(field|contents)"),
    ("fp32-in-int-contents", lambda pb: add_sub(
        pb, fp32(pb, values=np.zeros((1, 4), np.int32), field="int_contents"),
        fp32(pb, "INPUT1")), INVALID, r"INPUT0.*(field|contents)"),
    ("fp32-in-fp64-contents", lambda pb: add_sub(
        pb, fp32(pb, field="fp64_contents"), fp32(pb, "INPUT1")),
     INVALID, r"INPUT0.*(field|contents)"),
    ("values-in-two-fields", lambda pb: add_sub(
        pb, with_two_fields(fp32(pb)), fp32(pb, "INPUT1")),
     INVALID, r"INPUT0"),
    ("no-contents", lambda pb: add_sub(
        pb, pb.ModelInferRequest.InferInputTensor(
            name="INPUT0", datatype="FP32", shape=[1, 4]),
        fp32(pb, "INPUT1")), INVALID, r"INPUT0"),
    ("too-few-values", lambda pb: add_sub(
        pb, fp32(pb, shape=(2, 4), values=np.zeros(7, np.float32)),
        fp32(pb, "INPUT1", shape=(2, 4))), INVALID, r"INPUT0"),
    ("too-many-values", lambda pb: add_sub(
        pb, fp32(pb, values=np.zeros(5, np.float32)), fp32(pb, "INPUT1")),
     INVALID, r"INPUT0"),
    ("negative-dim", lambda pb: add_sub(
        pb, fp32(pb, shape=(-1, 4), values=np.zeros(4, np.float32)),
        fp32(pb, "INPUT1")), INVALID, r"INPUT0"),
    ("negative-dim-raw", lambda pb: raw_add_sub(
        pb, shapes=((-1, 4), (1, 4))), INVALID, r"INPUT0"),
    # 2**62 * 4 wraps to 0 in 64 bits, which no data would "fill".
    ("element-count-wraps-to-zero", lambda pb: add_sub(
        pb, fp32(pb, shape=(2**62, 4), values=np.zeros(0, np.float32)),
        fp32(pb, "INPUT1")), INVALID, r"INPUT0"),
    ("element-count-wraps-to-zero-raw", lambda pb: raw_add_sub(
        pb, [b"", b"\0" * 16], shapes=((2**62, 4), (1, 4))),
     INVALID, r"INPUT0"),
    ("element-count-overflows", lambda pb: infer_request(
        pb, "identity_fp32", [fp32(pb, shape=(2**32, 2**32),
                                   values=np.zeros(0, np.float32))]),
     INVALID, r"INPUT0"),
    ("dims-at-int64-max", lambda pb: raw_add_sub(
        pb, [b"", b"\0" * 16], shapes=((2**63 - 1, 2**63 - 1), (1, 4))),
     INVALID, r"INPUT0"),
    ("wrong-rank", lambda pb: add_sub(
        pb, fp32(pb, shape=(4,)), fp32(pb, "INPUT1")), INVALID, r"INPUT0"),
    ("dim-differs-from-model", lambda pb: add_sub(
        pb, fp32(pb, shape=(2, 5)), fp32(pb, "INPUT1", shape=(2, 5))),
     INVALID, r"INPUT0"),
    ("missing-input", lambda pb: add_sub(pb, fp32(pb, "INPUT0")),
     INVALID, r"INPUT1"),
    ("no-inputs", lambda pb: infer_request(pb, "add_sub", []),
     INVALID, r"INPUT0|input"),
    ("duplicate-input", lambda pb: add_sub(
        pb, fp32(pb, "INPUT0"), fp32(pb, "INPUT0"), fp32(pb, "INPUT1")),
     INVALID, r"INPUT0"),
    ("unknown-input", lambda pb: add_sub(
        pb, fp32(pb, "INPUT0"), fp32(pb, "INPUT1"), fp32(pb, "INPUT2")),
     INVALID, r"INPUT2"),
    ("unknown-output", lambda pb: add_sub(pb, outputs=["OUTPUT9"]),
     INVALID, r"OUTPUT9"),
    ("duplicate-output", lambda pb: add_sub(
        pb, outputs=["OUTPUT0", "OUTPUT0"]), INVALID, r"OUTPUT0"),
    ("unknown-model", lambda pb: infer_request(
        pb, "no_such_model", [fp32(pb)]), NOT_FOUND, r"no_such_model"),
    ("invalid-model-name", lambda pb: infer_request(
        pb, "../add_sub", [fp32(pb)]), INVALID, r"\.\./add_sub"),
    ("no-model-name", lambda pb: infer_request(pb, "", [fp32(pb)]),
     INVALID, r"name"),
    ("unknown-version", lambda pb: add_sub(pb, version="7"),
     NOT_FOUND, r"\b7\b"),
    ("version-outside-the-repository", lambda pb: infer_request(
        pb, "multi_version", [fp32(pb, shape=(2,))], version="4"),
     NOT_FOUND, r"\b4\b"),
    ("malformed-version", lambda pb: add_sub(pb, version="abc"),
     INVALID, r"abc"),
    ("version-zero", lambda pb: add_sub(pb, version="0"),
     INVALID, r"version"),
    ("timeout-as-string", lambda pb: add_sub(
        pb, parameters=parameters(pb, timeout="x")), INVALID, r"timeout"),
    ("timeout-as-bool", lambda pb: add_sub(
        pb, parameters=parameters(pb, timeout=True)), INVALID, r"timeout"),
    ("negative-timeout", lambda pb: add_sub(
        pb, parameters=parameters(pb, timeout=-1)), INVALID, r"timeout"),
    ("bytes-length-prefix-past-the-buffer", lambda pb: bytes_raw_request(
        pb, struct.pack("<I", 1000) + b"abcd", (1, 1)), INVALID, r"INPUT0"),
    ("bytes-length-prefix-cut-short", lambda pb: bytes_raw_request(
        pb, b"\x01\x00", (1, 1)), INVALID, r"INPUT0"),
    ("bytes-elements-fewer-than-the-shape", lambda pb: bytes_raw_request(
        pb, struct.pack("<I", 2) + b"ab", (1, 2)), INVALID, r"INPUT0"),
    ("bytes-elements-more-than-the-shape", lambda pb: bytes_raw_request(
        pb, (struct.pack("<I", 1) + b"a") * 3, (1, 2)), INVALID, r"INPUT0"),
]


@pytest.mark.parametrize("build, code, mention",
                         [pytest.param(*case[1:], id=case[0])
                          for case in CASES])
def test_invalid_request(client, build, code, mention):
    assert_rejected(client, build(client.pb), code, mention)


# Typed values that do not fit the input's datatype.
@pytest.mark.parametrize("datatype, field, value", [
    ("UINT8", "uint_contents", 256),
    ("UINT8", "uint_contents", 2**32 - 1),
    ("UINT16", "uint_contents", 65536),
    ("INT8", "int_contents", 128),
    ("INT8", "int_contents", -129),
    ("UINT16", "uint_contents", 2**32 - 1),
])
def test_typed_value_out_of_range(client, datatype, field, value):
    pb = client.pb
    description = pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype=datatype, shape=[1, 2])
    getattr(description.contents, field).extend([0, value])
    request = infer_request(pb, f"identity_{datatype.lower()}", [description])
    assert_rejected(client, request, INVALID, r"INPUT0")


@pytest.mark.parametrize("datatype, field, value", [
    ("UINT8", "uint_contents", 256), ("INT8", "int_contents", 128),
    ("INT8", "int_contents", -129), ("UINT16", "uint_contents", 65536)])
def test_out_of_range_message_names_the_value(client, datatype, field, value):
    pb = client.pb
    description = pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype=datatype, shape=[1, 1])
    getattr(description.contents, field).append(value)
    request = infer_request(pb, f"identity_{datatype.lower()}", [description])
    assert_rejected(client, request, INVALID,
                    rf"INPUT0.*{value}.*range|range.*{value}")


def test_message_over_the_limit(small_client):
    values = np.zeros((1, 100 * 1024 // 4), np.float32)
    pb = small_client.pb
    request = infer_request(pb, "identity_fp32",
                            [typed_input(pb, "INPUT0", values, "FP32")])
    assert request.ByteSize() > MAX_MESSAGE_BYTES
    assert_rejected(small_client, request,
                    grpc.StatusCode.RESOURCE_EXHAUSTED, r"larger|max|limit")


def test_message_over_the_limit_raw(small_client):
    values = np.zeros((1, 100 * 1024 // 4), np.float32)
    pb = small_client.pb
    description, raw = raw_input(pb, "INPUT0", values, "FP32")
    request = infer_request(pb, "identity_fp32", [description], [raw])
    assert_rejected(small_client, request,
                    grpc.StatusCode.RESOURCE_EXHAUSTED, r"larger|max|limit")


def test_message_under_the_limit(small_client):
    values = np.arange(12 * 1024, dtype=np.float32).reshape(1, -1)
    pb = small_client.pb
    description, raw = raw_input(pb, "INPUT0", values, "FP32")
    response = small_client.infer(
        infer_request(pb, "identity_fp32", [description], [raw]))
    assert response.raw_output_contents[0] == raw


def test_answer_over_the_limit(small_client):
    # The request fits; the answer to it (its FP32 input as FP16 and as
    # FP32) does not, and must fail cleanly rather than hang or crash.
    pb = small_client.pb
    values = np.zeros((1, 13 * 1024), np.float32)
    description, raw = raw_input(pb, "INPUT0", values, "FP32")
    request = infer_request(pb, "mixed_precision", [description], [raw])
    assert request.ByteSize() < MAX_MESSAGE_BYTES < 6 * values.size
    error = small_client.error("ModelInfer", request)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (
        error.code(), error.details())
    assert_still_serving(small_client)
