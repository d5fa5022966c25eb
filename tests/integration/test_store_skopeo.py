"""Interoperability: skopeo reads what perch pushes, copies it to an OCI
layout and to another registry, and perch pulls and serves the copy."""

import json

import pytest

from harness import WAKEWORD_MODELS
from registry_harness import (Registry, digest_of, infer, model_server,
                              perch, skopeo)

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"


@pytest.fixture
def registries(tmp_path):
    first = Registry(tmp_path / "first").start()
    second = Registry(tmp_path / "second").start()
    yield first, second
    first.stop()
    second.stop()


def test_skopeo_copies_a_perch_model(registries, tmp_path):
    first, second = registries
    ref = f"{first.host}/wakeword/hey_jarvis:1"
    digest = digest_of(perch("push", HEY_JARVIS, ref).stdout)

    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    manifest = json.loads(raw.stdout)
    assert manifest["artifactType"] == "application/vnd.perch.model.v1"
    assert manifest["layers"][0]["annotations"]["org.cncf.model.filepath"] \
        == "model.onnx"

    layout = tmp_path / "layout"
    skopeo("copy", "--src-tls-verify=false", f"docker://{ref}",
           f"oci:{layout}:1")
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == digest
    blob = layout / "blobs" / "sha256" / manifest["layers"][0]["digest"][7:]
    assert blob.read_bytes() == HEY_JARVIS.read_bytes()

    copy = f"{second.host}/mirror/hey_jarvis:1"
    skopeo("copy", "--src-tls-verify=false", "--dest-tls-verify=false",
           f"docker://{ref}", f"docker://{copy}")
    out = tmp_path / "out"
    pulled = perch("pull", copy, "--to", out, "--cache", tmp_path / "cache")
    assert digest_of(pulled.stdout) == digest
    assert (out / "hey_jarvis" / "1" / "model.onnx").read_bytes() == \
        HEY_JARVIS.read_bytes()

    server = model_server(tmp_path, [copy], tmp_path / "state").start()
    try:
        assert len(infer(server, "hey_jarvis")) == 1
    finally:
        assert server.stop() == 0
