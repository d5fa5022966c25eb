"""Registries that go wrong: a download cut in the middle resumes with a
Range request; corrupt, truncated, oversized or path-escaping content is
refused, nothing is installed, and an agent keeps serving what it had."""

import json

import pytest

from harness import TEST_MODELS, WAKEWORD_MODELS, expected_metadata
from registry_harness import (BrokenRegistry, CuttingProxy, Registry,
                              index_row, model_server, perch, sha256)

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"
CUT_AT = 300_000


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "registry").start()
    yield registry
    registry.stop()


def test_an_interrupted_pull_resumes_with_a_range_request(registry, tmp_path):
    perch("push", HEY_JARVIS, f"{registry.host}/wakeword/hey_jarvis:1")
    proxy = CuttingProxy(registry.url, cut_at=CUT_AT).start()
    try:
        ref = f"{proxy.host}/wakeword/hey_jarvis:1"
        cache = tmp_path / "cache"
        out = tmp_path / "out"
        cut = perch("pull", ref, "--to", out, "--cache", cache, check=False)
        assert cut.returncode == 1
        assert "run again to resume" in cut.stderr
        assert not (out / "hey_jarvis").exists()
        partial = list((cache / "writing").iterdir())
        assert len(partial) == 1 and partial[0].stat().st_size == CUT_AT

        perch("pull", ref, "--to", out, "--cache", cache)
        assert (out / "hey_jarvis" / "1" / "model.onnx").read_bytes() == \
            HEY_JARVIS.read_bytes()
        layer = sha256(HEY_JARVIS.read_bytes())
        ranges = [r for path, r in proxy.blob_requests if path.endswith(layer)]
        assert ranges == [None, f"bytes={CUT_AT}-"]
        assert list((cache / "writing").iterdir()) == []
    finally:
        proxy.stop()


@pytest.fixture
def broken(tmp_path):
    server = BrokenRegistry().start()
    yield server
    server.stop()


def fixed_model():
    model_file = TEST_MODELS / "fixed" / "1" / "model.onnx"
    metadata = expected_metadata(model_file)
    return model_file.read_bytes(), metadata


def add_fixed(broken, tag, version=1, extra=None, model_bytes=None):
    data, metadata = fixed_model()
    files = {"model.onnx": model_bytes or data}
    files.update(extra or {})
    return broken.add_model(tag, "fixed", version, files, metadata["inputs"],
                            metadata["outputs"])


@pytest.mark.parametrize("fault, message", [
    ("bitflip", "digest mismatch"),
    ("truncate", "run again to resume"),
    ("extra", "descriptor says"),
    ("extra_unsized", "descriptor says"),
])
def test_bad_blobs_are_refused(broken, tmp_path, fault, message):
    add_fixed(broken, "1")
    data, _ = fixed_model()
    broken.faults[sha256(data)] = fault
    out = tmp_path / "out"
    result = perch("pull", f"{broken.host}/tests/fixed:1", "--to", out,
                   "--cache", tmp_path / "cache", check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert f"blob {sha256(data)}" in result.stderr
    assert not (out / "fixed").exists()
    assert not (tmp_path / "cache" / "sha256" / sha256(data)[7:9]).exists()


def test_more_bytes_than_the_descriptor_stop_the_transfer(broken, tmp_path):
    add_fixed(broken, "1")
    data, _ = fixed_model()
    broken.faults[sha256(data)] = "extra"
    result = perch("pull", f"{broken.host}/tests/fixed:1", "--to", tmp_path,
                   "--cache", tmp_path / "cache", check=False)
    assert result.returncode == 1
    assert f"registry sent {len(data) + 4096} bytes, descriptor says " \
           f"{len(data)}" in result.stderr

    # Without a Content-Length, the bytes are counted as they come.
    broken.faults[sha256(data)] = "extra_unsized"
    result = perch("pull", f"{broken.host}/tests/fixed:1", "--to", tmp_path,
                   "--cache", tmp_path / "cache", check=False)
    assert result.returncode == 1
    assert "registry sent at least" in result.stderr
    assert f"descriptor says {len(data)}; the transfer was stopped" \
        in result.stderr


@pytest.mark.parametrize("path", ["../evil.onnx", "/tmp/evil.onnx",
                                  "sub/../../evil.onnx"])
def test_paths_that_escape_are_refused(broken, tmp_path, path):
    add_fixed(broken, "1", extra={path: b"evil"})
    out = tmp_path / "deep" / "out"
    result = perch("pull", f"{broken.host}/tests/fixed:1", "--to", out,
                   "--cache", tmp_path / "cache", check=False)
    assert result.returncode == 1
    assert f'model file path "{path}"' in result.stderr
    assert not (out / "fixed").exists()
    assert not (tmp_path / "deep" / "evil.onnx").exists()
    assert not (tmp_path / "evil.onnx").exists()


def test_a_bad_update_leaves_the_previous_version_serving(broken, tmp_path):
    ref = f"{broken.host}/tests/fixed:stable"
    good = add_fixed(broken, "stable", version=1)
    state = tmp_path / "state"
    first = model_server(tmp_path, [ref], state).start()
    assert index_row(first, "fixed")["artifact"]["digest"] == good
    assert first.stop() == 0

    # The tag moves to version 2, whose model blob arrives corrupted.
    other = (TEST_MODELS / "identity_fp32" / "1" / "model.onnx").read_bytes()
    bad = add_fixed(broken, "stable", version=2, model_bytes=other)
    broken.faults[sha256(other)] = "bitflip"
    second = model_server(tmp_path, [ref], state).start()
    try:
        row = index_row(second, "fixed")
        assert row["version"] == "1" and row["state"] == "READY"
        assert row["artifact"]["digest"] == good
        answer = second.infer("fixed", {"inputs": [{
            "name": "INPUT0", "shape": [2, 3], "datatype": "FP32",
            "data": [-1, 2, -3, 4, -5, 6]}]})
        assert answer.status_code == 200
        assert answer.json()["outputs"][0]["data"] == [0, 2, 0, 4, 0, 6]
    finally:
        assert second.stop() == 0
    logs = second.logs()
    assert "digest mismatch" in logs
    assert f"serving the cached {good}" in logs
    assert not (state / "models" / "fixed" / "2").exists()
    assert json.loads((state / "pulled.json").read_text())["references"][ref][
        "digest"] == good
    assert bad != good
