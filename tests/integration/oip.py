"""Open Inference Protocol tensors as the tests see them: numpy arrays in and
out of the JSON and binary encodings of the KServe v2 REST API.

Written from the protocol (and Triton's binary tensor extension), sharing no
code with perch, so that it can judge the server rather than agree with it.
"""

import json
import struct

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"

# numpy has no bfloat16: BF16 tensors are held as their uint16 bit patterns,
# which is also exactly their binary encoding.
NUMPY_DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
    "BF16": np.dtype("<u2"),
}

DATATYPES = tuple(NUMPY_DTYPES)


def bf16_bits_to_float(bits):
    """BF16 bit patterns to the float32 values they stand for (exact)."""
    return (np.asarray(bits, "<u2").astype("<u4") << 16).view("<f4")


def float_to_bf16_bits(values):
    """float32 values to BF16 bits; each must be exactly representable."""
    floats = np.asarray(values, "<f4")
    bits = (floats.view("<u4") >> 16).astype("<u2")
    assert np.array_equal(bf16_bits_to_float(bits).view("<u4"),
                          floats.view("<u4")), "not exact in BF16"
    return bits


def flatten(data):
    """Leaves of a (possibly nested) JSON array in row-major order."""
    if not isinstance(data, list):
        return [data]
    return [leaf for item in data for leaf in flatten(item)]


def to_json_data(array, datatype):
    """A tensor as the flat JSON list OIP expects for its datatype."""
    flat = np.asarray(array).reshape(-1)
    if datatype == "BYTES":
        return [element.decode("utf-8") for element in flat]
    if datatype == "BF16":
        return [float(x) for x in bf16_bits_to_float(flat)]
    if datatype in ("FP16", "FP32", "FP64"):
        return [float(x) for x in flat]
    if datatype == "BOOL":
        return [bool(x) for x in flat]
    return [int(x) for x in flat]


def from_json_data(data, datatype, shape):
    """The inverse of to_json_data; also accepts nested data."""
    leaves = flatten(data)
    if datatype == "BYTES":
        assert all(isinstance(x, str) for x in leaves), leaves
        array = np.empty(len(leaves), dtype=object)
        array[:] = [x.encode("utf-8") for x in leaves]
    elif datatype == "BF16":
        array = float_to_bf16_bits(leaves)
    elif datatype == "BOOL":
        assert all(isinstance(x, bool) for x in leaves), leaves
        array = np.array(leaves, dtype=np.bool_)
    else:
        # Integers go through Python ints so that 64-bit extremes stay exact.
        array = np.array(leaves, dtype=NUMPY_DTYPES[datatype])
    return array.reshape(shape)


def to_raw(array, datatype):
    """A tensor in the binary tensor data encoding (little-endian)."""
    flat = np.asarray(array).reshape(-1)
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(x)) + x for x in flat)
    return np.ascontiguousarray(flat, NUMPY_DTYPES[datatype]).tobytes()


def from_raw(raw, datatype, shape):
    """The inverse of to_raw; asserts the bytes are exactly one tensor."""
    if datatype != "BYTES":
        return np.frombuffer(raw, NUMPY_DTYPES[datatype]).reshape(shape)
    elements = []
    offset = 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        elements.append(raw[offset:offset + length])
        offset += length
    assert offset == len(raw), "BYTES element runs past its tensor"
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    return array.reshape(shape)


def json_input(name, array, datatype):
    array = np.asarray(array)
    return {"name": name, "datatype": datatype, "shape": list(array.shape),
            "data": to_json_data(array, datatype)}


def binary_input(name, array, datatype):
    """(input description, raw bytes) for a binary-encoded input."""
    array = np.asarray(array)
    raw = to_raw(array, datatype)
    description = {"name": name, "datatype": datatype,
                   "shape": list(array.shape),
                   "parameters": {"binary_data_size": len(raw)}}
    return description, raw


def binary_body(request, raws):
    """(body, headers) of a request whose JSON part is followed by raws."""
    header = json.dumps(request).encode()
    headers = {HEADER_LENGTH: str(len(header)),
               "Content-Type": "application/octet-stream"}
    return header + b"".join(raws), headers


def decode_response(response):
    """The JSON part of an infer response; binary outputs get their bytes
    under the "raw" key, checked to fill the body exactly."""
    length = response.headers.get(HEADER_LENGTH)
    if length is None:
        return response.json()
    content = response.content
    body = json.loads(content[:int(length)])
    offset = int(length)
    for output in body["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            assert "data" not in output, output
            output["raw"] = content[offset:offset + size]
            offset += size
    assert offset == len(content), "binary outputs do not fill the body"
    return body


def output_array(output):
    """An output of a decoded response as a numpy array."""
    if "raw" in output:
        return from_raw(output["raw"], output["datatype"], output["shape"])
    return from_json_data(output["data"], output["datatype"], output["shape"])


def outputs_by_name(body):
    return {output["name"]: output_array(output) for output in body["outputs"]}


def same_bits(a, b):
    """Exact equality, telling -0.0 from 0.0 and NaN payloads apart."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == object or b.dtype == object:
        return a.shape == b.shape and a.tolist() == b.tolist()
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes())
