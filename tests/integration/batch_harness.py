"""Helpers for the `perch batch` tests: request files, runs, records."""

import json
import os
import subprocess

import numpy as np
import pytest

from harness import PERCH_BIN, TEST_MODELS

RUN_TIMEOUT = 120
ROW_WISE = TEST_MODELS / "row_wise"


def row_request(values, request_id=None, outputs=None):
    """A row_wise request: INPUT0 FP32 [rows, 4]."""
    rows = np.asarray(values, dtype=np.float32).reshape(-1, 4)
    request = {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                           "shape": list(rows.shape), "data": rows.ravel().tolist()}]}
    if request_id is not None:
        request["id"] = request_id
    if outputs:
        request["outputs"] = [{"name": name} for name in outputs]
    return json.dumps(request)


def requests_file(path, count, seed=0, bad_every=0):
    """count lines of row_wise requests; every bad_every-th line is not JSON."""
    rng = np.random.default_rng(seed)
    lines = []
    for number in range(1, count + 1):
        if bad_every and number % bad_every == 0:
            lines.append("this is not json")
        else:
            lines.append(row_request(rng.standard_normal(4).round(3)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def run_batch(*args, stdin=None, check=True, timeout=RUN_TIMEOUT, env=None):
    """perch batch ARGS; returns the CompletedProcess (bytes)."""
    result = subprocess.run([str(PERCH_BIN), "batch", *map(str, args)],
                            input=stdin, capture_output=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        pytest.fail(f"perch batch {' '.join(map(str, args))} exited "
                    f"{result.returncode}\nstderr: {result.stderr.decode()}")
    return result


def records(path_or_bytes):
    """The JSON records of an output file (or of stdout bytes)."""
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return [json.loads(line) for line in data.decode().splitlines() if line]


def output(record, name):
    """The data of output `name` of a record, as a numpy array of its shape."""
    for tensor in record["outputs"]:
        if tensor["name"] == name:
            return np.array(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    raise KeyError(name)
