"""The Open Inference Protocol over gRPC as the tests see it: Python stubs
generated from perch's .proto at test time, and numpy arrays in and out of
typed and raw tensor contents.

Like oip.py, written from the protocol and sharing no code with perch, so
that it can judge the server rather than agree with it.
"""

import importlib
import math
import subprocess
import sys
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

import oip
from harness import REQUEST_TIMEOUT, ROOT

PROTO_DIR = ROOT / "proto"
PROTO_FILE = "grpc_predict_v2.proto"
GRPC_PYTHON_PLUGIN = "/usr/bin/grpc_python_plugin"

# The InferTensorContents field that carries each datatype; FP16 and BF16
# have none and travel in raw contents only.
TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
CONTENTS_FIELDS = sorted(set(TYPED_FIELDS.values()))
TYPED_DATATYPES = tuple(TYPED_FIELDS)
RAW_ONLY_DATATYPES = ("FP16", "BF16")

_generated = {}


def generate_stubs(outdir):
    """Compiles the .proto into outdir and imports the two modules; the
    result is kept, so that a second fixture reuses the first's stubs."""
    if "stubs" not in _generated:
        subprocess.run(
            ["protoc", f"--python_out={outdir}", f"--grpc_out={outdir}",
             f"--plugin=protoc-gen-grpc={GRPC_PYTHON_PLUGIN}",
             "-I", str(PROTO_DIR), str(PROTO_DIR / PROTO_FILE)],
            check=True, capture_output=True, timeout=60)
        sys.path.insert(0, str(outdir))
        _generated["stubs"] = SimpleNamespace(
            pb=importlib.import_module("grpc_predict_v2_pb2"),
            pb_grpc=importlib.import_module("grpc_predict_v2_pb2_grpc"))
    return _generated["stubs"]


@pytest.fixture(scope="session")
def grpc_stubs(tmp_path_factory):
    """The generated modules: .pb (messages) and .pb_grpc (the stub)."""
    return generate_stubs(tmp_path_factory.mktemp("grpc-stubs"))


class GrpcClient:
    """A channel to one server; every call has a deadline."""

    def __init__(self, stubs, target):
        self.pb = stubs.pb
        # No client-side size limits: the server's are the ones under test.
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1)])
        self.stub = stubs.pb_grpc.GRPCInferenceServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def call(self, rpc, message=None, timeout=REQUEST_TIMEOUT, **fields):
        """Calls rpc with message, or with a <rpc>Request made of fields."""
        if message is None:
            message = getattr(self.pb, rpc + "Request")(**fields)
        return getattr(self.stub, rpc)(message, timeout=timeout)

    def infer(self, message, timeout=REQUEST_TIMEOUT):
        return self.stub.ModelInfer(message, timeout=timeout)

    def error(self, rpc, message=None, timeout=REQUEST_TIMEOUT, **fields):
        """The grpc.RpcError that the call must fail with."""
        with pytest.raises(grpc.RpcError) as failure:
            self.call(rpc, message, timeout, **fields)
        return failure.value


def connect(stubs, server):
    return GrpcClient(stubs, server.grpc_target)


def typed_values(array, field):
    """A tensor's elements as the Python values field holds."""
    flat = np.asarray(array).reshape(-1)
    if field == "bytes_contents":
        return [bytes(x) for x in flat]
    if field == "bool_contents":
        return [bool(x) for x in flat]
    if field in ("fp32_contents", "fp64_contents"):
        return [float(x) for x in flat]
    return [int(x) for x in flat]


def typed_input(pb, name, array, datatype, field=None, shape=None):
    """An input with typed contents, in field (default: the datatype's own)
    and with shape (default: the array's)."""
    array = np.asarray(array)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype,
        shape=list(array.shape if shape is None else shape))
    field = field or TYPED_FIELDS[datatype]
    getattr(tensor.contents, field).extend(typed_values(array, field))
    return tensor


def raw_input(pb, name, array, datatype, shape=None):
    """(input, raw bytes): raw bytes for raw_input_contents."""
    array = np.asarray(array)
    tensor = pb.ModelInferRequest.InferInputTensor(
        name=name, datatype=datatype,
        shape=list(array.shape if shape is None else shape))
    return tensor, oip.to_raw(array, datatype)


def infer_request(pb, model, inputs, raws=(), version="", outputs=(),
                  **fields):
    """A ModelInferRequest; outputs are the names of the outputs wanted."""
    return pb.ModelInferRequest(
        model_name=model, model_version=str(version), inputs=list(inputs),
        raw_input_contents=list(raws),
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=name)
                 for name in outputs],
        **fields)


def filled_fields(contents):
    return [field for field in CONTENTS_FIELDS
            if len(getattr(contents, field))]


def typed_array(output):
    """A typed output as a numpy array, checked to fill its own field only
    and exactly its shape."""
    datatype = output.datatype
    assert datatype in TYPED_FIELDS, f"{datatype} output {output.name} typed"
    field = TYPED_FIELDS[datatype]
    assert filled_fields(output.contents) in ([field], []), output
    values = list(getattr(output.contents, field))
    assert len(values) == math.prod(output.shape), output
    if datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = values
    else:
        array = np.array(values, dtype=oip.NUMPY_DTYPES[datatype])
    return array.reshape(list(output.shape))


def response_arrays(response):
    """({name: array}, "raw" or "typed") of a ModelInferResponse, checked to
    use one encoding for all its outputs."""
    if response.raw_output_contents:
        assert len(response.raw_output_contents) == len(response.outputs)
        for output in response.outputs:
            assert not filled_fields(output.contents), (
                f"output {output.name} has typed contents beside raw ones")
        return {output.name: oip.from_raw(raw, output.datatype,
                                          list(output.shape))
                for output, raw in zip(response.outputs,
                                       response.raw_output_contents)}, "raw"
    return {output.name: typed_array(output)
            for output in response.outputs}, "typed"


def parameters(pb, **values):
    """A parameters map: ints become int64_param, str string_param and bool
    bool_param."""
    def parameter(value):
        if isinstance(value, bool):
            return pb.InferParameter(bool_param=value)
        if isinstance(value, int):
            return pb.InferParameter(int64_param=value)
        return pb.InferParameter(string_param=value)
    return {key: parameter(value) for key, value in values.items()}
