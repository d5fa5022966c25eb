#!/usr/bin/python3
"""Writes the benchmark models.

    export_mobilenet.py OUT.onnx            MobileNetV2 (torchvision, random weights)
    export_mobilenet.py --tiny OUT.onnx     FP32 [1,256] -> FP32 [1,256] (y = x * 1)

MobileNetV2: input `input` FP32 [N,3,224,224] (dynamic batch), output
`output` FP32 [N,1000]. Weights are random (weights=None) but seeded, so the
file is the same from run to run; speed does not depend on the values.
Run with Debian's /usr/bin/python3 (python3-torchvision, python3-onnx).
"""
import argparse
import os
import sys


def export_mobilenet(out: str, opset: int) -> None:
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(weights=None).eval()
    example = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.onnx.export(
            model, example, out,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "N"}, "output": {0: "N"}},
            opset_version=opset, do_constant_folding=True)


def export_tiny(out: str, opset: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    one = numpy_helper.from_array(np.array([1.0], dtype=np.float32), name="one")
    node = helper.make_node("Mul", ["input", "one"], ["output"])
    graph = helper.make_graph(
        [node], "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 256])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 256])],
        initializer=[one])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="perch-bench")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="ONNX file to write")
    parser.add_argument("--tiny", action="store_true", help="write the tiny [1,256] model instead")
    parser.add_argument("--opset", type=int, default=13)
    args = parser.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    (export_tiny if args.tiny else export_mobilenet)(args.out, args.opset)
    import onnx
    onnx.checker.check_model(onnx.load(args.out))
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
