"""`perch hub gc`: frees blobs no manifest references, keeps everything a
manifest needs (config, layers, index children, subjects), and leaves the
store readable while the hub runs."""

import json
import subprocess

from harness import PERCH_BIN
from hub_harness import OCI_INDEX, OCI_MANIFEST, descriptor, sha256


def gc(hub, *args):
    result = subprocess.run([str(PERCH_BIN), "hub", "gc", "--data", str(hub.data),
                             *map(str, args)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def assert_pullable(hub, repo, tag):
    """Pulls a manifest and everything it references, checking digests."""
    response = hub.request("GET", f"/v2/{repo}/manifests/{tag}")
    assert response.status_code == 200, response.text
    manifest = response.json()
    children = manifest.get("manifests", [])
    for child in children:
        child_body = hub.request("GET", f"/v2/{repo}/manifests/{child['digest']}")
        assert sha256(child_body.content) == child["digest"]
        manifest_blobs = [json.loads(child_body.content)["config"],
                          *json.loads(child_body.content)["layers"]]
        for blob in manifest_blobs:
            data = hub.request("GET", f"/v2/{repo}/blobs/{blob['digest']}").content
            assert sha256(data) == blob["digest"]
    for blob in ([manifest["config"], *manifest["layers"]] if "config" in manifest else []):
        data = hub.request("GET", f"/v2/{repo}/blobs/{blob['digest']}").content
        assert sha256(data) == blob["digest"] and len(data) == blob["size"]


def test_gc_removes_only_unreferenced_blobs(hubs):
    hub = hubs.start()
    body, digest = hub.push_image("gc/model", "v1", layers=(b"kept layer",),
                                  config=b'{"kept": true}')
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [descriptor(OCI_MANIFEST, body)]}
    assert hub.push_manifest("gc/model", "multi", index, OCI_INDEX).status_code == 201
    hub.push_blob("gc/model", b"{}")
    hub.push_blob("gc/model", b"signature")
    signature = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "artifactType": "application/vnd.example.signature",
                 "config": descriptor("application/vnd.oci.empty.v1+json", b"{}"),
                 "layers": [descriptor("application/octet-stream", b"signature")],
                 "subject": descriptor(OCI_MANIFEST, body)}
    assert hub.push_manifest("gc/model", "sig", signature).status_code == 201
    orphan = hub.push_blob("gc/model", b"orphan blob, never in a manifest")
    orphan_elsewhere = hub.push_blob("gc/other", b"another orphan")
    pending = hub.request("POST", "/v2/gc/model/blobs/uploads/").headers["Location"]

    # Young blobs are protected by the default grace period.
    assert "removed 0 blobs" in gc(hub)
    assert hub.request("HEAD", f"/v2/gc/model/blobs/{orphan}").status_code == 200

    dry = gc(hub, "--dry-run", "--grace", 0)
    assert f"would remove {orphan}" in dry
    assert f"would remove {orphan_elsewhere}" in dry
    assert "would remove 2 blobs" in dry
    assert hub.request("HEAD", f"/v2/gc/model/blobs/{orphan}").status_code == 200

    report = gc(hub, "--grace", 0)
    assert f"removed {orphan}" in report and f"removed {orphan_elsewhere}" in report
    assert "removed 2 blobs" in report and "removed 1 stale uploads" in report
    assert hub.request("HEAD", f"/v2/gc/model/blobs/{orphan}").status_code == 404
    assert hub.request("GET", pending).status_code == 404
    for tag in ("v1", "multi", "sig"):
        assert_pullable(hub, "gc/model", tag)
    assert hub.request("GET", f"/v2/gc/model/referrers/{digest}").json()["manifests"]
    assert "removed 0 blobs" in gc(hub, "--grace", 0)

    # Dropping the index and the signature frees only what nothing else needs.
    for tag in ("multi", "sig"):
        manifest_digest = hub.request("HEAD", f"/v2/gc/model/manifests/{tag}") \
            .headers["Docker-Content-Digest"]
        assert hub.request("DELETE", f"/v2/gc/model/manifests/{manifest_digest}") \
            .status_code == 202
    report = gc(hub, "--grace", 0)
    assert f"removed {sha256(b'signature')}" in report
    assert f"removed {sha256(b'{}')}" in report
    assert sha256(b"kept layer") not in report
    # v1 was the subject of the signature: it stays whole.
    assert_pullable(hub, "gc/model", "v1")


def test_gc_refuses_a_folder_that_is_not_a_hub(tmp_path):
    result = subprocess.run([str(PERCH_BIN), "hub", "gc", "--data",
                             str(tmp_path / "missing")], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert "not a hub data folder" in result.stderr
