"""ONNX Runtime 1.29 and later collect usage telemetry for Microsoft on
Linux unless ORT_DISABLE_TELEMETRY is set before its first use, and keep a
device id and an event cache in ~/.cache/Microsoft and a log in
/tmp/mat-debug-<pid>.log. perch turns it off itself: an agent serving and
answering leaves neither behind, with nothing set in its environment."""

import os
import subprocess
from pathlib import Path

import requests

from harness import PERCH_BIN, copy_models, free_port, wait_for


def test_serving_writes_no_telemetry(tmp_path):
    repo = copy_models(tmp_path / "repo", ["identity_fp32"])
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(home)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "perch.log", "wb") as log:
        process = subprocess.Popen(
            [PERCH_BIN, "serve", "--repo", repo, "--state", tmp_path / "state",
             "--http-port", str(port), "--grpc-port", "0"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        def answered():
            try:
                return requests.post(f"{url}/v2/models/identity_fp32/infer", json={
                    "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                                "data": [1, 2, 3, 4]}]}, timeout=2).status_code == 200
            except requests.RequestException:
                return False
        wait_for(answered, 20, what=lambda: "an answer from perch:\n"
                 + (tmp_path / "perch.log").read_text(errors="replace"))
    finally:
        process.terminate()
        assert process.wait(10) == 0
    assert not (home / ".cache" / "Microsoft").exists(), \
        sorted(str(p) for p in home.rglob("*"))
    assert not Path(f"/tmp/mat-debug-{process.pid}.log").exists()
