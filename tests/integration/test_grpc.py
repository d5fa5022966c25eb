"""The KServe v2 GRPCInferenceService: health, metadata and inference with
typed and raw tensor contents, answering as the REST API does."""

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

import grpc_oip
import oip
from edge_values import binary_sample
from grpc_oip import (RAW_ONLY_DATATYPES, TYPED_DATATYPES, connect,
                      infer_request, raw_input, response_arrays, typed_input)
from harness import TEST_MODELS, expected_metadata, model_path, \
    project_version
from test_metrics import REQUESTS, FAILURES, scrape

# The session's generated stubs, a fixture of grpc_oip.
grpc_stubs = grpc_oip.grpc_stubs

IDENTITY_MODELS = [f"identity_{dt.lower()}" for dt in oip.DATATYPES]
MODELS = [*IDENTITY_MODELS, "add_sub", "multi_version", "broken",
          "mixed_precision"]


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(MODELS)


@pytest.fixture(scope="module")
def client(grpc_stubs, server):
    client = connect(grpc_stubs, server)
    yield client
    client.close()


def random_fp32(rng, shape):
    return rng.standard_normal(shape).astype(np.float32)


def add_sub_request(pb, a, b, **fields):
    return infer_request(pb, "add_sub", [typed_input(pb, "INPUT0", a, "FP32"),
                                         typed_input(pb, "INPUT1", b, "FP32")],
                         **fields)


def assert_code(error, code, *mentions):
    """error has the gRPC status code and a message naming each mention."""
    assert error.code() == code, (error.code(), error.details())
    for mention in mentions:
        assert mention in error.details(), (
            f"message {error.details()!r} does not name {mention!r}")


# Health and metadata

def test_server_live_and_ready(client):
    assert client.call("ServerLive").live is True
    assert client.call("ServerReady").ready is True


def test_server_metadata(client, server):
    response = client.call("ServerMetadata")
    assert response.name == "perch"
    assert response.version == project_version()
    # gRPC has no binary tensor data extension to claim; the rest are REST's.
    rest = server.get("/v2").json()
    assert set(response.extensions) <= set(rest["extensions"])
    assert len(set(response.extensions)) == len(response.extensions)


@pytest.mark.parametrize("name, version", [
    ("add_sub", ""), ("add_sub", "1"), ("multi_version", ""),
    ("multi_version", "2")])
def test_model_ready(client, name, version):
    assert client.call("ModelReady", name=name, version=version).ready is True


def test_failed_model_is_not_ready(client):
    for version in ("", "1"):
        response = client.call("ModelReady", name="broken", version=version)
        assert response.ready is False


def test_failed_model_has_no_metadata(client, server):
    # As over REST, where it is a 503 with the reason.
    assert server.get(model_path("broken")).status_code == 503
    error = client.error("ModelMetadata", name="broken")
    assert_code(error, grpc.StatusCode.UNAVAILABLE, "broken")


@pytest.mark.parametrize("name, version, code, mention", [
    ("no_such_model", "", grpc.StatusCode.NOT_FOUND, "no_such_model"),
    ("add_sub", "2", grpc.StatusCode.NOT_FOUND, "2"),
    ("multi_version", "4", grpc.StatusCode.NOT_FOUND, "4"),
    ("add_sub", "abc", grpc.StatusCode.INVALID_ARGUMENT, "abc"),
    ("../add_sub", "", grpc.StatusCode.INVALID_ARGUMENT, "../add_sub"),
])
def test_model_ready_of_unknown_model_or_version(client, name, version, code,
                                                 mention):
    for rpc in ("ModelReady", "ModelMetadata"):
        error = client.error(rpc, name=name, version=version)
        assert_code(error, code, mention)


def metadata_as_json(response):
    """A ModelMetadataResponse in the shape of the REST metadata body."""
    def tensors(specs):
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
                for t in specs]
    return {"name": response.name, "versions": list(response.versions),
            "platform": response.platform,
            "inputs": tensors(response.inputs),
            "outputs": tensors(response.outputs)}


@pytest.mark.parametrize("model", ["add_sub", "identity_bf16",
                                   "identity_bytes", "mixed_precision",
                                   "multi_version"])
@pytest.mark.parametrize("version", ["", "1"])
def test_model_metadata_is_the_rest_metadata(client, server, model, version):
    response = client.call("ModelMetadata", name=model, version=version)
    rest = server.get(model_path(model, version or None))
    assert rest.status_code == 200, rest.text
    expected = {key: rest.json()[key] for key in
                ("name", "versions", "platform", "inputs", "outputs")}
    assert metadata_as_json(response) == expected
    served = version or ("3" if model == "multi_version" else "1")
    assert {key: expected[key] for key in ("inputs", "outputs")} == \
        expected_metadata(TEST_MODELS / model / served / "model.onnx")


def test_model_metadata_lists_every_version(client):
    response = client.call("ModelMetadata", name="multi_version", version="2")
    assert sorted(response.versions, key=int) == ["1", "2", "3"]
    assert response.platform == "onnxruntime_onnx"


# Inference: round trips of every datatype

def round_trip(client, datatype, inputs, raws=()):
    model = f"identity_{datatype.lower()}"
    response = client.infer(infer_request(client.pb, model, inputs, raws))
    assert response.model_name == model
    assert response.model_version == "1"
    (output,) = response.outputs
    assert output.name == "OUTPUT0"
    assert output.datatype == datatype
    assert list(output.shape) == [2, 3]
    return response


@pytest.mark.parametrize("datatype", TYPED_DATATYPES)
def test_typed_in_typed_out(client, datatype):
    # Typed fields are binary: NaN, infinities, -0.0 and bytes that are not
    # UTF-8 travel as they are, as do the extremes of every integer type.
    tensor = binary_sample(datatype)
    response = round_trip(client, datatype,
                          [typed_input(client.pb, "INPUT0", tensor, datatype)])
    arrays, encoding = response_arrays(response)
    assert encoding == "typed"
    assert oip.same_bits(arrays["OUTPUT0"], tensor)


@pytest.mark.parametrize("datatype", oip.DATATYPES)
def test_raw_in_raw_out(client, datatype):
    tensor = binary_sample(datatype)
    description, raw = raw_input(client.pb, "INPUT0", tensor, datatype)
    response = round_trip(client, datatype, [description], [raw])
    arrays, encoding = response_arrays(response)
    assert encoding == "raw"
    assert response.raw_output_contents[0] == raw
    assert oip.same_bits(arrays["OUTPUT0"], tensor)


@pytest.mark.parametrize("field", [None, "fp32_contents", "uint_contents"])
@pytest.mark.parametrize("datatype", RAW_ONLY_DATATYPES)
def test_typed_half_precision_is_refused(client, datatype, field):
    # No typed field holds FP16 or BF16: whatever field the values come in,
    # if any, the server must point to raw_input_contents.
    pb = client.pb
    tensor = binary_sample(datatype)
    description = pb.ModelInferRequest.InferInputTensor(
        name="INPUT0", datatype=datatype, shape=[2, 3])
    if field == "fp32_contents":
        description.contents.fp32_contents.extend([0.5] * 6)
    elif field == "uint_contents":
        # The bit patterns, as a client might try.
        description.contents.uint_contents.extend(
            tensor.view("<u2").reshape(-1).tolist())
    error = client.error("ModelInfer", infer_request(
        pb, f"identity_{datatype.lower()}", [description]))
    assert_code(error, grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents")
    # Raw, the same tensor goes through.
    description, raw = raw_input(client.pb, "INPUT0", tensor, datatype)
    response = round_trip(client, datatype, [description], [raw])
    assert response.raw_output_contents[0] == raw


def test_integer_extremes_exactly(client):
    for datatype in ("INT64", "UINT64"):
        info = np.iinfo(oip.NUMPY_DTYPES[datatype])
        tensor = np.array([[info.min, info.max, info.min + 1],
                           [info.max - 1, 0, 1]], oip.NUMPY_DTYPES[datatype])
        for raw in (False, True):
            if raw:
                description, data = raw_input(client.pb, "INPUT0", tensor,
                                              datatype)
                response = round_trip(client, datatype, [description], [data])
            else:
                response = round_trip(client, datatype, [typed_input(
                    client.pb, "INPUT0", tensor, datatype)])
            arrays, _ = response_arrays(response)
            assert arrays["OUTPUT0"].tolist() == tensor.tolist(), datatype


def test_bytes_with_empty_and_nul_elements(client):
    tensor = np.empty(6, dtype=object)
    tensor[:] = [b"", b"\x00", b"a\x00b", b"\x00\x00\x00\x00", b"", b"end"]
    tensor = tensor.reshape(2, 3)
    typed = round_trip(client, "BYTES", [typed_input(
        client.pb, "INPUT0", tensor, "BYTES")])
    assert list(typed.outputs[0].contents.bytes_contents) == \
        tensor.reshape(-1).tolist()
    description, raw = raw_input(client.pb, "INPUT0", tensor, "BYTES")
    assert round_trip(client, "BYTES", [description],
                      [raw]).raw_output_contents[0] == raw


def test_bools(client):
    tensor = np.array([[True, False, False], [False, True, True]])
    response = round_trip(client, "BOOL", [typed_input(
        client.pb, "INPUT0", tensor, "BOOL")])
    assert list(response.outputs[0].contents.bool_contents) == \
        tensor.reshape(-1).tolist()
    description, raw = raw_input(client.pb, "INPUT0", tensor, "BOOL")
    assert round_trip(client, "BOOL", [description],
                      [raw]).raw_output_contents[0] == b"\x01\x00\x00\x00\x01\x01"


def mixed_precision_expectation(x):
    return {"OUTPUT0": x.astype(np.float16), "OUTPUT1": -x}


@pytest.mark.parametrize("outputs", [(), ("OUTPUT0",), ("OUTPUT1", "OUTPUT0")])
def test_answer_with_half_precision_is_all_raw(client, outputs):
    # Values exact in FP16, so that the cast has one right answer.
    x = np.array([[0.5, -2.0, 1024.0], [0.0, 3.25, -65504.0]], np.float32)
    response = client.infer(infer_request(
        client.pb, "mixed_precision",
        [typed_input(client.pb, "INPUT0", x, "FP32")], outputs=outputs))
    arrays, encoding = response_arrays(response)
    assert encoding == "raw"
    assert [o.name for o in response.outputs] == \
        list(outputs or ("OUTPUT0", "OUTPUT1"))
    expected = mixed_precision_expectation(x)
    for name, array in arrays.items():
        assert oip.same_bits(array, expected[name]), name


def test_answer_without_half_precision_stays_typed(client):
    x = np.array([[0.5, -2.0, 7.0]], np.float32)
    response = client.infer(infer_request(
        client.pb, "mixed_precision",
        [typed_input(client.pb, "INPUT0", x, "FP32")], outputs=["OUTPUT1"]))
    arrays, encoding = response_arrays(response)
    assert encoding == "typed"
    assert oip.same_bits(arrays["OUTPUT1"], -x)


def test_raw_request_gets_raw_answer_for_every_output(client):
    x = np.array([[0.5, -2.0, 7.0]], np.float32)
    description, raw = raw_input(client.pb, "INPUT0", x, "FP32")
    response = client.infer(infer_request(
        client.pb, "mixed_precision", [description], [raw],
        outputs=["OUTPUT1"]))
    arrays, encoding = response_arrays(response)
    assert encoding == "raw"
    assert oip.same_bits(arrays["OUTPUT1"], -x)


# Inference: request fields

def test_add_sub_with_id(client):
    rng = np.random.default_rng(1)
    a, b = random_fp32(rng, (3, 4)), random_fp32(rng, (3, 4))
    response = client.infer(add_sub_request(client.pb, a, b, id="req-42"))
    assert response.model_name == "add_sub"
    assert response.model_version == "1"
    assert response.id == "req-42"
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]
    for output in response.outputs:
        assert output.datatype == "FP32"
        assert list(output.shape) == [3, 4]
    arrays, encoding = response_arrays(response)
    assert encoding == "typed"
    assert np.array_equal(arrays["OUTPUT0"], a + b)
    assert np.array_equal(arrays["OUTPUT1"], a - b)


def test_no_id_answers_without_one(client):
    a = np.ones((1, 4), np.float32)
    assert client.infer(add_sub_request(client.pb, a, a)).id == ""


@pytest.mark.parametrize("selected", [["OUTPUT1"], ["OUTPUT1", "OUTPUT0"],
                                      ["OUTPUT0"]])
@pytest.mark.parametrize("raw", [False, True], ids=["typed", "raw"])
def test_requested_outputs_come_in_request_order(client, selected, raw):
    pb = client.pb
    rng = np.random.default_rng(3)
    a, b = random_fp32(rng, (2, 4)), random_fp32(rng, (2, 4))
    if raw:
        (in0, raw0), (in1, raw1) = (raw_input(pb, "INPUT0", a, "FP32"),
                                    raw_input(pb, "INPUT1", b, "FP32"))
        request = infer_request(pb, "add_sub", [in0, in1], [raw0, raw1],
                                outputs=selected, id="selection")
    else:
        request = add_sub_request(pb, a, b, outputs=selected, id="selection")
    response = client.infer(request)
    assert response.id == "selection"
    assert [o.name for o in response.outputs] == selected
    arrays, encoding = response_arrays(response)
    assert encoding == ("raw" if raw else "typed")
    expected = {"OUTPUT0": a + b, "OUTPUT1": a - b}
    for name, array in arrays.items():
        assert np.array_equal(array, expected[name]), name


def test_inputs_in_any_order(client):
    pb = client.pb
    a, b = np.full((1, 4), 5, np.float32), np.full((1, 4), 3, np.float32)
    request = infer_request(pb, "add_sub", [
        typed_input(pb, "INPUT1", b, "FP32"),
        typed_input(pb, "INPUT0", a, "FP32")])
    arrays, _ = response_arrays(client.infer(request))
    assert np.array_equal(arrays["OUTPUT1"], a - b)


@pytest.mark.parametrize("version", ["1", "2", "3"])
def test_each_version_runs_its_own_model(client, version):
    x = np.array([0.25, -4.0, 100.0], dtype=np.float32)
    response = client.infer(infer_request(
        client.pb, "multi_version",
        [typed_input(client.pb, "INPUT0", x, "FP32")], version=version))
    assert response.model_version == version
    arrays, _ = response_arrays(response)
    assert np.array_equal(arrays["OUTPUT0"], x + np.float32(int(version)))


def test_highest_version_answers_without_a_version(client):
    x = np.array([1.5], dtype=np.float32)
    response = client.infer(infer_request(
        client.pb, "multi_version",
        [typed_input(client.pb, "INPUT0", x, "FP32")]))
    assert response.model_version == "3"
    arrays, _ = response_arrays(response)
    assert np.array_equal(arrays["OUTPUT0"], x + 3)


def test_empty_batch(client):
    empty = np.zeros((0, 4), dtype=np.float32)
    response = client.infer(add_sub_request(client.pb, empty, empty))
    for output in response.outputs:
        assert list(output.shape) == [0, 4]
    arrays, _ = response_arrays(response)
    assert arrays["OUTPUT0"].shape == (0, 4)


def test_concurrent_requests_get_their_own_answers(client):
    def check(seed):
        rng = np.random.default_rng(seed)
        shape = (seed % 5 + 1, 4)
        a, b = random_fp32(rng, shape), random_fp32(rng, shape)
        response = client.infer(add_sub_request(client.pb, a, b,
                                                id=str(seed)))
        arrays, _ = response_arrays(response)
        return (response.id == str(seed)
                and np.array_equal(arrays["OUTPUT0"], a + b)
                and np.array_equal(arrays["OUTPUT1"], a - b))

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(check, range(100)))


def test_rest_and_grpc_agree(client, server):
    rng = np.random.default_rng(9)
    a, b = random_fp32(rng, (2, 4)), random_fp32(rng, (2, 4))
    grpc_arrays, _ = response_arrays(client.infer(
        add_sub_request(client.pb, a, b)))
    rest = server.infer("add_sub", {"inputs": [
        oip.json_input("INPUT0", a, "FP32"),
        oip.json_input("INPUT1", b, "FP32")]})
    assert rest.status_code == 200, rest.text
    for name, array in oip.outputs_by_name(rest.json()).items():
        assert oip.same_bits(array, grpc_arrays[name]), name


# Metrics

def test_grpc_infer_is_counted_once(client, server):
    labels = {"model": "add_sub", "version": "1"}
    a = np.ones((1, 4), np.float32)
    before = scrape(server)
    client.infer(add_sub_request(client.pb, a, a))
    after = scrape(server)
    assert after.value(REQUESTS, **labels) - before.value(REQUESTS, **labels) \
        == 1
    assert after.value(FAILURES, **labels) == before.value(FAILURES, **labels)


def test_failed_grpc_infer_is_counted_once(client, server):
    # One refused while decoding, one by the model's signature.
    pb = client.pb
    labels = {"model": "add_sub", "version": "1"}
    a = np.ones((1, 4), np.float32)
    undecodable = add_sub_request(pb, a, a)
    undecodable.inputs[0].datatype = "FP33"
    missing_input = add_sub_request(pb, a, a)
    del missing_input.inputs[1]
    before = scrape(server)
    for request in (undecodable, missing_input):
        error = client.error("ModelInfer", request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = scrape(server)
    for counter in (REQUESTS, FAILURES):
        assert after.value(counter, **labels) \
            - before.value(counter, **labels) == 2, counter
