#!/usr/bin/python3
"""Writes the small ONNX models the integration tests serve.

Usage: make_models.py OUTDIR

OUTDIR becomes a Triton-style model repository:
    OUTDIR/<model>/<version>/model.onnx
    OUTDIR/<model>/model.json          (only where a model needs one)

The output is deterministic. Each model's directory is replaced as a whole, so
running the script again gives the same repository whatever an earlier run
left behind.
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, checker, helper, numpy_helper
from onnx.external_data_helper import set_external_data

OPSET = 13
IR_VERSION = 8

# Every Open Inference Protocol datatype that has an ONNX tensor type. The
# identity model for a datatype is named identity_<lower-case OIP name>.
OIP_TO_ONNX = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32,
    "UINT64": TensorProto.UINT64,
    "INT8": TensorProto.INT8,
    "INT16": TensorProto.INT16,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
    "BF16": TensorProto.BFLOAT16,
}

FP32 = TensorProto.FLOAT

# Where external_outside claims its weights live: outside the model directory,
# so a server that followed the path would read an unrelated system file.
ESCAPING_LOCATION = "../../../../../../etc/hostname"

# Addend of the external data models; the tests read it back from the files.
EXTERNAL_WEIGHTS = np.array([0.5, -1.25, 2.0, 1024.0], dtype=np.float32)


def make_model(name, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(
        graph,
        producer_name="perch-tests",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    model.ir_version = IR_VERSION
    return model


def unary_model(name, op_type, elem_type, dims):
    """OUTPUT0 = op_type(INPUT0); a string in dims is a dynamic dimension."""
    return make_model(
        name,
        [helper.make_node(op_type, ["INPUT0"], ["OUTPUT0"])],
        [helper.make_tensor_value_info("INPUT0", elem_type, dims)],
        [helper.make_tensor_value_info("OUTPUT0", elem_type, dims)],
    )


def with_constant_model(name, op_type, dims, constant):
    """OUTPUT0 = op_type(INPUT0, constant), the constant an initializer."""
    return make_model(
        name,
        [helper.make_node(op_type, ["INPUT0", "CONSTANT"], ["OUTPUT0"])],
        [helper.make_tensor_value_info("INPUT0", FP32, dims)],
        [helper.make_tensor_value_info("OUTPUT0", FP32, dims)],
        [numpy_helper.from_array(np.float32(constant), "CONSTANT")],
    )


def add_sub_model():
    dims = ["batch", 4]
    return make_model(
        "add_sub",
        [
            helper.make_node("Add", ["INPUT0", "INPUT1"], ["OUTPUT0"]),
            helper.make_node("Sub", ["INPUT0", "INPUT1"], ["OUTPUT1"]),
        ],
        [helper.make_tensor_value_info(name, FP32, dims)
         for name in ("INPUT0", "INPUT1")],
        [helper.make_tensor_value_info(name, FP32, dims)
         for name in ("OUTPUT0", "OUTPUT1")],
    )


def external_data_model(name, location):
    """OUTPUT0 = INPUT0 + EXTERNAL_WEIGHTS, read from the file at location."""
    model = with_constant_model(name, "Add", [4], EXTERNAL_WEIGHTS)
    weights = model.graph.initializer[0]
    set_external_data(weights, location=location, offset=0,
                      length=EXTERNAL_WEIGHTS.nbytes)
    weights.ClearField("raw_data")
    return model


def write_version(model_dir, version, model, extra_files=None, check=True):
    """Writes model.onnx, with extra_files ({name: bytes}) beside it."""
    path = model_dir / str(version) / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(model.SerializeToString())
    for name, content in (extra_files or {}).items():
        (path.parent / name).write_bytes(content)
    if check:
        # From the file, so that external data resolves as a server sees it.
        checker.check_model(str(path), full_check=True)


def write_config(model_dir, config):
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    (model_dir / "model.json").write_text(text)


def write_identity(datatype):
    def write(model_dir):
        elem_type = OIP_TO_ONNX[datatype]
        write_version(model_dir, 1, unary_model(
            model_dir.name, "Identity", elem_type, ["rows", "columns"]))
    return write


def write_add_sub(model_dir):
    write_version(model_dir, 1, add_sub_model())


def write_fixed(model_dir):
    # Relu rather than Identity, so that a server returning its input
    # unchanged is caught.
    write_version(model_dir, 1, unary_model("fixed", "Relu", FP32, [2, 3]))


def write_batched(model_dir):
    write_version(model_dir, 1,
                  with_constant_model("batched", "Mul", ["batch", 3], 2.0))
    write_config(model_dir, {"max_batch_size": 4})


def write_versioned(policy):
    def write(model_dir):
        # Each version adds its own number, so a response tells which ran.
        for version in (1, 2, 3):
            write_version(model_dir, version, with_constant_model(
                model_dir.name, "Add", ["n"], float(version)))
        write_config(model_dir, {"version_policy": policy})
    return write


def write_external_inside(model_dir):
    write_version(model_dir, 1,
                  external_data_model("external_inside", "weights.bin"),
                  extra_files={"weights.bin": EXTERNAL_WEIGHTS.tobytes()})


def write_external_outside(model_dir):
    # Not checked: its external data is meant not to resolve.
    write_version(model_dir, 1,
                  external_data_model("external_outside", ESCAPING_LOCATION),
                  check=False)


def write_broken(model_dir):
    path = model_dir / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not an ONNX model\x00\xff\x13\x37")


def write_mixed_precision(model_dir):
    # A half-precision output beside a single-precision one: over gRPC an
    # answer holding FP16 has no typed field, so it must come all raw.
    dims = ["rows", "columns"]
    write_version(model_dir, 1, make_model(
        "mixed_precision",
        [
            helper.make_node("Cast", ["INPUT0"], ["OUTPUT0"],
                             to=TensorProto.FLOAT16),
            helper.make_node("Neg", ["INPUT0"], ["OUTPUT1"]),
        ],
        [helper.make_tensor_value_info("INPUT0", FP32, dims)],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT16, dims),
         helper.make_tensor_value_info("OUTPUT1", FP32, dims)],
    ))


# The slow model's busy work: SLOW_STEPS products of a SLOW_SIZE square
# matrix: about 80 ms per inference on the 2-core development machine.
SLOW_SIZE = 384
SLOW_STEPS = 100


def write_slow(model_dir):
    """OUTPUT0 = INPUT0 * 2, deterministic but slow.

    The busy work starts from the sum of the input, so that no optimizer can
    fold it away, and stays bounded through Tanh; it joins the output
    multiplied by zero, which adds exactly (-)0.0 to every element."""
    rng = np.random.default_rng(7)
    weights = (rng.standard_normal((SLOW_SIZE, SLOW_SIZE))
               / np.sqrt(SLOW_SIZE)).astype(np.float32)
    nodes = [
        helper.make_node("ReduceSum", ["INPUT0"], ["total"], keepdims=0),
        helper.make_node("Mul", ["WEIGHTS", "total"], ["state0"]),
    ]
    for step in range(SLOW_STEPS):
        nodes += [
            helper.make_node("MatMul", [f"state{step}", "WEIGHTS"],
                             [f"product{step}"]),
            helper.make_node("Tanh", [f"product{step}"],
                             [f"state{step + 1}"]),
        ]
    nodes += [
        helper.make_node("ReduceSum", [f"state{SLOW_STEPS}"], ["busy"],
                         keepdims=0),
        helper.make_node("Mul", ["busy", "ZERO"], ["nothing"]),
        helper.make_node("Mul", ["INPUT0", "TWO"], ["doubled"]),
        helper.make_node("Add", ["doubled", "nothing"], ["OUTPUT0"]),
    ]
    dims = ["batch", 4]
    write_version(model_dir, 1, make_model(
        "slow", nodes,
        [helper.make_tensor_value_info("INPUT0", FP32, dims)],
        [helper.make_tensor_value_info("OUTPUT0", FP32, dims)],
        [numpy_helper.from_array(weights, "WEIGHTS"),
         numpy_helper.from_array(np.float32(0), "ZERO"),
         numpy_helper.from_array(np.float32(2), "TWO")],
    ))
    write_config(model_dir, {"instances": 1, "max_queue_size": 2})


def row_wise_model(name):
    """OUTPUT0 = INPUT0 * 2 + 1 and OUTPUT1 = the sum of each row: every row
    of the answer depends on its own row alone, as batching needs."""
    dims = ["batch", 4]
    return make_model(
        name,
        [
            helper.make_node("Mul", ["INPUT0", "TWO"], ["doubled"]),
            helper.make_node("Add", ["doubled", "ONE"], ["OUTPUT0"]),
            helper.make_node("ReduceSum", ["INPUT0", "AXES"], ["OUTPUT1"],
                             keepdims=1),
        ],
        [helper.make_tensor_value_info("INPUT0", FP32, dims)],
        [helper.make_tensor_value_info("OUTPUT0", FP32, dims),
         helper.make_tensor_value_info("OUTPUT1", FP32, ["batch", 1])],
        [numpy_helper.from_array(np.float32(2), "TWO"),
         numpy_helper.from_array(np.float32(1), "ONE"),
         numpy_helper.from_array(np.array([1], dtype=np.int64), "AXES")],
    )


def write_row_wise(config):
    def write(model_dir):
        write_version(model_dir, 1, row_wise_model(model_dir.name))
        write_config(model_dir, config)
    return write


WRITERS = {
    **{f"identity_{dt.lower()}": write_identity(dt) for dt in OIP_TO_ONNX},
    "add_sub": write_add_sub,
    "fixed": write_fixed,
    "batched": write_batched,
    "multi_version": write_versioned({"all": {}}),
    "latest_two": write_versioned({"latest": {"num_versions": 2}}),
    "external_inside": write_external_inside,
    "external_outside": write_external_outside,
    "broken": write_broken,
    "mixed_precision": write_mixed_precision,
    "slow": write_slow,
    # Merges concurrent requests, waiting up to 20 ms for company.
    "dynamic_batched": write_row_wise({
        "max_batch_size": 8,
        "dynamic_batching": {"max_queue_delay_us": 20000, "wait_when_idle": True}}),
    # Waits up to 1 s for company, unless two requests make a batch of 2,
    # even while idle.
    "preferred_batched": write_row_wise({
        "max_batch_size": 4,
        "dynamic_batching": {"preferred_batch_sizes": [2],
                             "max_queue_delay_us": 1000000,
                             "wait_when_idle": True}}),
    # The same 1 s for company, but only while a batch runs: idle, it runs
    # a request at once.
    "idle_batched": write_row_wise({
        "max_batch_size": 4,
        "dynamic_batching": {"max_queue_delay_us": 1000000}}),
    # The same graph, run one request at a time.
    "row_wise": write_row_wise({"max_batch_size": 8}),
}


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} OUTDIR")
    outdir = Path(argv[1])
    for name, write in WRITERS.items():
        model_dir = outdir / name
        shutil.rmtree(model_dir, ignore_errors=True)
        model_dir.mkdir(parents=True)
        write(model_dir)


if __name__ == "__main__":
    main(sys.argv)
