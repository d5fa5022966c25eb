"""Malformed and hostile input to `perch hub`: each gets a clear OCI error,
the hub stays up, and nothing unverified or outside DATA is left behind."""

import json
import os

import pytest

from hub_harness import (OCI_INDEX, OCI_MANIFEST, descriptor, oci_error,
                         raw_request, sha256)

MAX_BLOB = 64 * 1024


@pytest.fixture(scope="module")
def hub(module_hubs):
    return module_hubs.start(args=["--max-blob-bytes", MAX_BLOB])


def assert_blob_absent(hub, repo, digest):
    for method in ("HEAD", "GET"):
        response = hub.request(method, f"/v2/{repo}/blobs/{digest}")
        assert response.status_code == 404, (method, digest)
    assert not list((hub.data / "blobs" / "sha256").rglob(digest[7:]))


def test_truncated_blob_is_refused(hub):
    data = os.urandom(5000)
    truncated = data[:4000]
    response = hub.request("POST", f"/v2/bad/blobs/uploads/?digest={sha256(data)}",
                           data=truncated)
    assert response.status_code == 400
    assert oci_error(response) == "DIGEST_INVALID"
    assert "digest mismatch" in response.json()["errors"][0]["message"]
    assert_blob_absent(hub, "bad", sha256(data))
    assert_blob_absent(hub, "bad", sha256(truncated))


def test_bit_flipped_chunked_blob_is_refused(hub):
    data = bytearray(os.urandom(8000))
    digest = sha256(bytes(data))
    data[1234] ^= 0x01
    location = hub.request("POST", "/v2/bad/blobs/uploads/").headers["Location"]
    assert hub.request("PATCH", location, data=bytes(data[:4000]),
                       headers={"Content-Range": "0-3999"}).status_code == 202
    response = hub.request("PUT", f"{location}?digest={digest}", data=bytes(data[4000:]),
                           headers={"Content-Range": "4000-7999"})
    assert response.status_code == 400 and oci_error(response) == "DIGEST_INVALID"
    assert_blob_absent(hub, "bad", digest)
    assert_blob_absent(hub, "bad", sha256(bytes(data)))
    # The failed upload is gone, not left half-written.
    assert hub.request("GET", location).status_code == 404


def image_manifest(config, layers, **fields):
    return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": descriptor("application/vnd.perch.test.v1+json", config),
            "layers": [descriptor("application/octet-stream", layer) for layer in layers],
            **fields}


def test_descriptor_size_must_match_the_stored_blob(hub):
    hub.push_blob("bad/size", b"{}")
    hub.push_blob("bad/size", b"twelve bytes")
    manifest = image_manifest(b"{}", [b"twelve bytes"])
    manifest["layers"][0]["size"] = 13
    response = hub.push_manifest("bad/size", "v1", manifest)
    assert response.status_code == 400
    assert oci_error(response) == "MANIFEST_INVALID"
    assert "13 bytes" in response.json()["errors"][0]["message"]
    assert hub.request("GET", "/v2/bad/size/manifests/v1").status_code == 404


def test_manifest_referencing_missing_blobs(hub):
    hub.push_blob("bad/missing", b"{}")
    response = hub.push_manifest("bad/missing", "v1",
                                 image_manifest(b"{}", [b"never uploaded"]))
    assert response.status_code == 400
    assert oci_error(response) == "MANIFEST_BLOB_UNKNOWN"
    assert sha256(b"never uploaded") in response.json()["errors"][0]["message"]
    missing_config = hub.push_manifest("bad/missing", "v1",
                                       image_manifest(b"no config", []))
    assert oci_error(missing_config) == "MANIFEST_BLOB_UNKNOWN"
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [descriptor(OCI_MANIFEST, b"no such manifest")]}
    response = hub.push_manifest("bad/missing", "multi", index, OCI_INDEX)
    assert response.status_code == 400
    assert oci_error(response) == "MANIFEST_BLOB_UNKNOWN"
    assert hub.request("GET", "/v2/bad/missing/tags/list").json()["tags"] == []


def test_manifest_media_type_must_match_content_type(hub):
    hub.push_blob("bad/types", b"{}")
    manifest = image_manifest(b"{}", [])
    response = hub.push_manifest("bad/types", "v1", manifest, media_type=OCI_INDEX)
    assert response.status_code == 400 and oci_error(response) == "MANIFEST_INVALID"
    assert "Content-Type" in response.json()["errors"][0]["message"]
    unknown = dict(manifest, mediaType="application/vnd.example.unknown+json")
    response = hub.push_manifest("bad/types", "v1", unknown,
                                 media_type="application/vnd.example.unknown+json")
    assert response.status_code == 400 and oci_error(response) == "MANIFEST_INVALID"
    assert "unsupported manifest media type" in response.json()["errors"][0]["message"]
    assert hub.request("GET", "/v2/bad/types/manifests/v1").status_code == 404


@pytest.mark.parametrize("body", [b"{not json", b"", b"[]", b'{"schemaVersion": 2}',
                                  b"\xff\xfe garbage"])
def test_invalid_manifest_json(hub, body):
    response = hub.push_manifest("bad/json", "v1", body)
    assert response.status_code == 400
    assert oci_error(response) == "MANIFEST_INVALID"


def test_manifest_digest_must_match_its_reference(hub):
    hub.push_blob("bad/digest", b"{}")
    body = json.dumps(image_manifest(b"{}", [])).encode()
    response = hub.push_manifest("bad/digest", sha256(body + b" "), body)
    assert response.status_code == 400 and oci_error(response) == "DIGEST_INVALID"
    assert hub.request("GET", f"/v2/bad/digest/manifests/{sha256(body)}").status_code == 404


def refused_before_the_body(response):
    """A declared length over a route's limit is refused by the HTTP server
    before the route runs, with perch's JSON error body, not the OCI one."""
    return response.status_code == 413 and response.json()["code"] == "ResourceExhausted"


def test_manifest_larger_than_the_limit(hub):
    response = hub.push_manifest("bad/big", "v1", b" " * (4 * 1024 * 1024 + 1))
    assert refused_before_the_body(response), response.text
    # Chunked (no length declared): counted as it arrives.
    response = hub.request("PUT", "/v2/bad/big/manifests/v1",
                           data=iter([b" " * (1 << 20)] * 5),
                           headers={"Content-Type": OCI_MANIFEST})
    assert refused_before_the_body(response), response.text


TRAVERSAL_PATHS = [
    ("GET", "/v2/../../etc/tags/list", "NAME_INVALID"),
    ("GET", "/v2/%2e%2e/%2e%2e/etc/tags/list", "NAME_INVALID"),
    ("GET", "/v2/a/..%2f..%2fb/manifests/v1", "NAME_INVALID"),
    ("GET", "/v2/repo/..%2f..%2fetc/manifests/v1", "NAME_INVALID"),
    ("POST", "/v2/../evil/blobs/uploads/", "NAME_INVALID"),
    ("POST", "/v2/%2e%2e/blobs/uploads/", "NAME_INVALID"),
    ("PUT", "/v2/..%2fevil/manifests/v1", "NAME_INVALID"),
    ("GET", "/v2/UPPER/tags/list", "NAME_INVALID"),
    ("GET", "/v2/repo/manifests/..%2f..%2fetc", "MANIFEST_UNKNOWN"),
    ("GET", "/v2/repo/manifests/%2e%2e", "MANIFEST_UNKNOWN"),
    ("PUT", "/v2/repo/manifests/..", "TAG_INVALID"),
    ("PUT", "/v2/repo/manifests/..%2f..%2fescape", "TAG_INVALID"),
    ("GET", "/v2/repo/blobs/..%2f..%2fregistry.db", "DIGEST_INVALID"),
    ("GET", "/v2/repo/blobs/sha256:..%2f..%2f..%2fregistry.db", "DIGEST_INVALID"),
    ("GET", "/v2/repo/blobs/uploads/..%2f..%2fregistry.db", "BLOB_UPLOAD_UNKNOWN"),
    ("PATCH", "/v2/repo/blobs/uploads/..%2f..%2fregistry.db", "BLOB_UPLOAD_UNKNOWN"),
    ("POST", "/v2/repo/blobs/uploads/?mount=sha256:abc&from=../x", "DIGEST_INVALID"),
    ("POST", f"/v2/repo/blobs/uploads/?mount={sha256(b'x')}&from=..%2fx",
     "NAME_INVALID"),
]


@pytest.mark.parametrize("method,path,code", TRAVERSAL_PATHS)
def test_path_traversal_is_refused(hub, method, path, code):
    before = sorted(p.name for p in hub.data.parent.iterdir())
    status, body = raw_request(hub, method, path, body=b"{}" if method != "GET" else None)
    assert body is not None, (status, path)
    expected = 404 if code in ("BLOB_UPLOAD_UNKNOWN", "MANIFEST_UNKNOWN") else 400
    assert (status, body["errors"][0]["code"]) == (expected, code), path
    assert sorted(p.name for p in hub.data.parent.iterdir()) == before


@pytest.mark.parametrize("tag", ["-leading-dash", ".hidden", "a" * 129, "sp%20ace", "t@g"])
def test_manifest_under_a_malformed_tag(hub, tag):
    """No manifest can exist under a malformed tag: reading one is 404
    MANIFEST_UNKNOWN (what the OCI conformance suite expects); pushing one
    is the client's mistake, 400 TAG_INVALID."""
    path = f"/v2/bad/tags/manifests/{tag}"
    got = hub.request("GET", path)
    assert got.status_code == 404 and oci_error(got) == "MANIFEST_UNKNOWN", got.text
    head = hub.request("HEAD", path)
    assert head.status_code == 404 and head.content == b""
    hub.push_blob("bad/tags", b"{}")
    pushed = hub.push_manifest("bad/tags", tag, image_manifest(b"{}", []))
    assert pushed.status_code == 400 and oci_error(pushed) == "TAG_INVALID", pushed.text
    deleted = hub.request("DELETE", path)
    assert deleted.status_code == 400 and oci_error(deleted) == "TAG_INVALID"


def test_one_byte_over_the_blob_limit(hub):
    limit_data = os.urandom(MAX_BLOB)
    assert hub.push_blob("bad/limit", limit_data) == sha256(limit_data)
    over = os.urandom(MAX_BLOB + 1)
    response = hub.request("POST", f"/v2/bad/limit/blobs/uploads/?digest={sha256(over)}",
                           data=over)
    assert refused_before_the_body(response), response.text
    assert_blob_absent(hub, "bad/limit", sha256(over))
    # Without a declared length, the registry counts the bytes as they come.
    response = hub.request("POST", f"/v2/bad/limit/blobs/uploads/?digest={sha256(over)}",
                           data=iter([over[:MAX_BLOB], over[MAX_BLOB:]]))
    assert response.status_code == 413, response.text
    assert_blob_absent(hub, "bad/limit", sha256(over))
    # Chunked: the chunk that crosses the limit cancels the upload.
    location = hub.request("POST", "/v2/bad/limit/blobs/uploads/").headers["Location"]
    assert hub.request("PATCH", location, data=over[:MAX_BLOB]).status_code == 202
    crossing = hub.request("PATCH", location, data=over[MAX_BLOB:])
    assert crossing.status_code == 413 and oci_error(crossing) == "SIZE_INVALID"
    assert hub.request("GET", location).status_code == 404
    assert_blob_absent(hub, "bad/limit", sha256(over))
    upload_id = location.rsplit("/", 1)[1]
    assert not (hub.data / "blobs" / "writing" / upload_id).exists()


@pytest.mark.parametrize("digest", ["sha256:zz", "md5:abc", "sha256:" + "a" * 63,
                                    "sha256:" + "A" * 64, "nodigest", "sha512:" + "a" * 128])
def test_garbage_digests(hub, digest):
    for method, path in (("GET", f"/v2/repo/blobs/{digest}"),
                         ("DELETE", f"/v2/repo/blobs/{digest}"),
                         ("POST", f"/v2/repo/blobs/uploads/?digest={digest}"),
                         ("POST", f"/v2/repo/blobs/uploads/?mount={digest}&from=other"),
                         ("GET", f"/v2/repo/referrers/{digest}")):
        response = hub.request(method, path, data=b"x" if method == "POST" else None)
        assert response.status_code == 400, (method, path)
        assert oci_error(response) == "DIGEST_INVALID", (method, path)
    location = hub.request("POST", "/v2/repo/blobs/uploads/").headers["Location"]
    response = hub.request("PUT", f"{location}?digest={digest}", data=b"x")
    assert response.status_code == 400 and oci_error(response) == "DIGEST_INVALID"
    missing = hub.request("PUT", location, data=b"x")
    assert missing.status_code == 400 and oci_error(missing) == "DIGEST_INVALID"


def test_malformed_content_range(hub):
    location = hub.request("POST", "/v2/bad/range/blobs/uploads/").headers["Location"]
    for value in ("garbage", "5-1", "-3", "0-"):
        response = hub.request("PATCH", location, data=b"abc",
                               headers={"Content-Range": value})
        assert response.status_code == 400, value
        assert oci_error(response) == "BLOB_UPLOAD_INVALID"
    mismatch = hub.request("PATCH", location, data=b"abc",
                           headers={"Content-Range": "0-9"})
    assert mismatch.status_code == 400
    assert hub.request("GET", location).headers["Range"] == "0-0"


def test_unknown_endpoints_answer_in_the_spec_shape(hub):
    response = hub.request("GET", "/v2/repo/nothing-here")
    assert response.status_code == 404 and oci_error(response) == "UNSUPPORTED"
    response = hub.request("POST", "/v2/repo/manifests/v1", data=b"x")
    assert response.status_code == 404 and oci_error(response) == "UNSUPPORTED"


def test_the_hub_still_serves_after_all_that(hub):
    body, digest = hub.push_image("bad/after", "v1")
    assert hub.request("GET", "/v2/bad/after/manifests/v1").content == body
