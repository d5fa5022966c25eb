"""Tensors at the edges of each OIP datatype, for exact round trips."""

import numpy as np

import oip


def integer_edges(dtype):
    info = np.iinfo(dtype)
    return [info.min, info.max, info.min + 1, info.max - 1, 0, info.max // 3]


def float_edges(dtype):
    """Largest, smallest normal, smallest subnormal, and values whose
    decimal forms need every digit of the type."""
    info = np.finfo(dtype)
    smallest_subnormal = np.nextafter(dtype(0), dtype(1))
    return [info.max, info.tiny, smallest_subnormal, dtype(1) / dtype(3),
            -dtype(np.pi), dtype(-1234.5)]


# Bit patterns: largest, smallest normal, smallest subnormal, -0.5, the BF16
# nearest 1/3, -1232.
BF16_EDGES = [0x7F7F, 0x0080, 0x0001, 0xBF00, 0x3EAB, 0xC49A]

BYTES_EDGES = [b"", "héllo wörld".encode(), "☃ snowman, 🐦 bird".encode(),
               b'quote " backslash \\ newline \n tab \t', b"nul \x00 inside",
               b"x" * 1000]


def sample(datatype):
    """A 2x3 tensor at the edges of datatype, every value JSON can carry."""
    dtype = oip.NUMPY_DTYPES[datatype]
    if datatype == "BOOL":
        values = [True, False, True, False, False, True]
    elif datatype == "BF16":
        values = BF16_EDGES
    elif datatype == "BYTES":
        values = BYTES_EDGES
    elif datatype.startswith("FP"):
        values = float_edges(dtype.type)
    else:
        values = integer_edges(dtype)
    array = np.empty(6, dtype=dtype)
    array[:] = values
    return array.reshape(2, 3)


def binary_sample(datatype):
    """Like sample(), with values only the binary encoding can carry: NaN,
    infinities, -0.0 and bytes that are not UTF-8."""
    array = sample(datatype).copy()
    if datatype in ("FP16", "FP32", "FP64"):
        array[0] = [np.nan, np.inf, -0.0]
        array[1, 0] = -np.inf
    elif datatype == "BF16":
        array[0] = [0x7FC0, 0x7F80, 0x8000]  # NaN, +inf, -0.0
        array[1, 0] = 0xFF80  # -inf
    elif datatype == "BYTES":
        array[0] = [b"\xff\xfe\x00", b"\x80", b"\xc3"]
    return array
