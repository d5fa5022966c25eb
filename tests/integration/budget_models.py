"""Models for the memory-budget tests and benchmarks: OUTPUT0 =
WEIGHTS[INDEX], with WEIGHTS[j] = model * 1000 + j % 1000, so every answer
says which model gave it and the weights stay resident (the input is not a
constant, nothing folds them away)."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_lookup_model(path, model_number, weight_bytes):
    """Writes a lookup model whose weights take weight_bytes."""
    count = max(1000, weight_bytes // 4)
    weights = (model_number * 1000 + np.arange(count) % 1000).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["WEIGHTS", "INDEX"], ["OUTPUT0"], axis=0)],
        "lookup",
        [helper.make_tensor_value_info("INDEX", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(weights, "WEIGHTS")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def write_lookup_repo(repo, count, weight_bytes, prefix="lookup"):
    """count lookup models REPO/<prefix>_<i>/1/model.onnx; returns their names."""
    names = []
    for number in range(count):
        name = f"{prefix}_{number:03d}"
        write_lookup_model(repo / name / "1" / "model.onnx", number, weight_bytes)
        names.append(name)
    return names


def lookup_request(index):
    return {"inputs": [{"name": "INDEX", "datatype": "INT64", "shape": [1],
                        "data": [index]}]}


def lookup_answer(model_number, index):
    return float(model_number * 1000 + index % 1000)
