"""Interoperability: skopeo (containers/image, what docker-style tooling
uses) copies an ONNX model artifact into `perch hub` and back out, digests
unchanged."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import TEST_MODELS
from hub_harness import OCI_MANIFEST, descriptor, sha256

SKOPEO = shutil.which("skopeo")
pytestmark = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")

MODEL_CONFIG = "application/vnd.perch.model.config.v1+json"
ONNX_LAYER = "application/vnd.perch.model.onnx"


def skopeo(*args, check=True):
    result = subprocess.run([SKOPEO, *map(str, args)], capture_output=True,
                            text=True, timeout=120)
    if check and result.returncode != 0:
        pytest.fail(f"skopeo {' '.join(map(str, args))} failed:\n{result.stderr}")
    return result


def write_blob(layout, data):
    path = layout / "blobs" / "sha256" / sha256(data)[7:]
    path.write_bytes(data)


def make_layout(layout, tag, onnx_bytes):
    """An OCI image layout holding one model artifact: a config with the
    model's metadata and the ONNX file as its only layer."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    config = json.dumps({"name": "identity", "platform": "onnx"}).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.perch.model.v1",
        "config": descriptor(MODEL_CONFIG, config),
        "layers": [descriptor(ONNX_LAYER, onnx_bytes, annotations={
            "org.opencontainers.image.title": "model.onnx"})],
    }).encode()
    for blob in (config, onnx_bytes, manifest):
        write_blob(layout, blob)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2,
        "manifests": [descriptor(OCI_MANIFEST, manifest, annotations={
            "org.opencontainers.image.ref.name": tag})],
    }))
    return manifest


def any_onnx_model():
    models = sorted(Path(TEST_MODELS).rglob("*.onnx"))
    assert models, f"no ONNX model under {TEST_MODELS}"
    return models[0].read_bytes()


@pytest.fixture(scope="module")
def hub(module_hubs):
    return module_hubs.start()


def test_skopeo_copies_a_model_in_and_out(hub, tmp_path):
    onnx_bytes = any_onnx_model()
    manifest = make_layout(tmp_path / "src", "v1", onnx_bytes)
    remote = f"docker://{hub.host}/models/identity"
    creds = f"perch:{hub.admin_token}"

    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds,
           f"oci:{tmp_path / 'src'}:v1", f"{remote}:v1")
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds", creds,
           f"oci:{tmp_path / 'src'}:v1", f"{remote}:latest")

    raw = skopeo("inspect", "--tls-verify=false", "--creds", creds, "--raw",
                 f"{remote}:v1").stdout.encode()
    assert raw == manifest
    tags = json.loads(skopeo("list-tags", "--tls-verify=false", "--creds", creds,
                             remote).stdout)
    assert sorted(tags["Tags"]) == ["latest", "v1"]

    skopeo("copy", "--src-tls-verify=false", "--src-creds", creds,
           f"{remote}:v1", f"oci:{tmp_path / 'out'}:v1")
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == sha256(manifest)
    out_blobs = tmp_path / "out" / "blobs" / "sha256"
    assert (out_blobs / sha256(onnx_bytes)[7:]).read_bytes() == onnx_bytes
    assert (out_blobs / sha256(manifest)[7:]).read_bytes() == manifest


def test_skopeo_pulls_anonymously_and_is_refused_a_push_without_creds(hub, tmp_path):
    onnx_bytes = any_onnx_model()
    manifest = make_layout(tmp_path / "src", "v1", onnx_bytes)
    remote = f"docker://{hub.host}/models/anonymous"
    skopeo("copy", "--dest-tls-verify=false", "--dest-creds",
           f"perch:{hub.admin_token}", f"oci:{tmp_path / 'src'}:v1", f"{remote}:v1")
    raw = skopeo("inspect", "--tls-verify=false", "--no-creds", "--raw",
                 f"{remote}:v1").stdout.encode()
    assert raw == manifest
    refused = skopeo("copy", "--dest-tls-verify=false", "--dest-no-creds",
                     f"oci:{tmp_path / 'src'}:v1", f"{remote}:v2", check=False)
    assert refused.returncode != 0
    wrong = skopeo("copy", "--dest-tls-verify=false", "--dest-creds", "perch:wrong-token",
                   f"oci:{tmp_path / 'src'}:v1", f"{remote}:v3", check=False)
    assert wrong.returncode != 0
    assert "unauthorized" in wrong.stderr.lower() or "401" in wrong.stderr
