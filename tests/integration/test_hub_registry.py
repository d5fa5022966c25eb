"""`perch hub` as an OCI Distribution v1.1 registry: the spec's endpoints,
headers, pagination, referrers and authorisation, against the real binary."""

import hashlib
import json
import os
import re

import pytest

from hub_harness import (OCI_INDEX, OCI_MANIFEST, descriptor, oci_error,
                         sha256)

DEVICE_TOKEN = "device-token-for-tests-0123456789"


@pytest.fixture(scope="module")
def hub(module_hubs):
    env = dict(os.environ, PERCH_HUB_DEVICE_TOKEN=DEVICE_TOKEN)
    env.pop("PERCH_HUB_ADMIN_TOKEN", None)
    return module_hubs.start(env=env)


def test_generates_an_admin_token_readable_only_by_its_owner(hub):
    token_file = hub.data / "admin-token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert len(hub.admin_token) == 64
    assert hub.admin_token not in hub.logs()


def test_base_endpoint_and_health(hub):
    response = hub.request("GET", "/v2/")
    assert response.status_code == 200
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    anonymous = hub.request("GET", "/v2/", token=None)
    assert anonymous.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert oci_error(anonymous) == "UNAUTHORIZED"
    assert hub.request("GET", "/healthz", token=None).status_code == 200


def test_monolithic_blob_push_head_get(hub):
    data = os.urandom(100_000)
    digest = hub.push_blob("mono/blob", data)
    head = hub.request("HEAD", f"/v2/mono/blob/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest
    get = hub.request("GET", f"/v2/mono/blob/blobs/{digest}")
    assert get.status_code == 200 and get.content == data
    # Visible only in the repository it was pushed to.
    other = hub.request("GET", f"/v2/mono/other/blobs/{digest}")
    assert other.status_code == 404 and oci_error(other) == "BLOB_UNKNOWN"


def test_post_then_put_monolithic(hub):
    data = b"post then put"
    start = hub.request("POST", "/v2/twostep/blobs/uploads/")
    assert start.status_code == 202
    location = start.headers["Location"]
    assert start.headers["Docker-Upload-UUID"]
    done = hub.request("PUT", f"{location}?digest={sha256(data)}", data=data,
                       headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == sha256(data)
    assert done.headers["Location"] == f"/v2/twostep/blobs/{sha256(data)}"
    assert hub.request("GET", done.headers["Location"]).content == data


def test_chunked_upload_with_status_and_final_put(hub):
    data = os.urandom(300_000)
    first, second = data[:123_456], data[123_456:]
    location = hub.request("POST", "/v2/chunked/blobs/uploads/").headers["Location"]
    patch = hub.request("PATCH", location, data=first, headers={
        "Content-Type": "application/octet-stream",
        "Content-Range": f"0-{len(first) - 1}"})
    assert patch.status_code == 202, patch.text
    assert patch.headers["Range"] == f"0-{len(first) - 1}"
    location = patch.headers["Location"]
    status = hub.request("GET", location)
    assert status.status_code == 204
    assert status.headers["Range"] == f"0-{len(first) - 1}"
    # A chunk sent without Content-Range is appended too (what skopeo does).
    patch = hub.request("PATCH", location, data=second[:1000])
    assert patch.status_code == 202
    patch = hub.request("PATCH", location, data=second[1000:], headers={
        "Content-Range": f"{len(first) + 1000}-{len(data) - 1}"})
    assert patch.status_code == 202, patch.text
    done = hub.request("PUT", f"{location}?digest={sha256(data)}")
    assert done.status_code == 201, done.text
    assert hub.request("GET", f"/v2/chunked/blobs/{sha256(data)}").content == data


def test_long_content_ranges_of_big_chunks(hub):
    # Offsets of multi-MiB chunks make the header longer than a short
    # string: it must be read as a whole, not through a dangling view.
    data = os.urandom(300_000)
    location = hub.request("POST", "/v2/long-ranges/blobs/uploads/").headers["Location"]
    for start, end in ((0, 149_999), (150_000, 299_999)):
        patch = hub.request("PATCH", location, data=data[start:end + 1], headers={
            "Content-Range": f"bytes {start}-{end}/{len(data)}"})
        assert patch.status_code == 202, patch.text
        location = patch.headers["Location"]
    done = hub.request("PUT", f"{location}?digest={sha256(data)}")
    assert done.status_code == 201, done.text


def test_out_of_order_chunk_is_refused_and_the_upload_goes_on(hub):
    location = hub.request("POST", "/v2/ooo/blobs/uploads/").headers["Location"]
    assert hub.request("PATCH", location, data=b"abcd",
                       headers={"Content-Range": "0-3"}).status_code == 202
    for bad_range in ("0-3", "5-8", "2-5"):
        response = hub.request("PATCH", location, data=b"efgh",
                               headers={"Content-Range": bad_range})
        assert response.status_code == 416, bad_range
        assert oci_error(response) == "BLOB_UPLOAD_INVALID"
        assert response.headers["Range"] == "0-3"
    assert hub.request("PATCH", location, data=b"efgh",
                       headers={"Content-Range": "4-7"}).status_code == 202
    done = hub.request("PUT", f"{location}?digest={sha256(b'abcdefgh')}")
    assert done.status_code == 201


def test_cancel_and_unknown_uploads(hub):
    location = hub.request("POST", "/v2/cancel/blobs/uploads/").headers["Location"]
    assert hub.request("DELETE", location).status_code == 204
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        response = hub.request(method, location + "?digest=" + sha256(b""),
                               data=b"x" if method in ("PATCH", "PUT") else None)
        assert response.status_code == 404, method
        assert oci_error(response) == "BLOB_UPLOAD_UNKNOWN"
    response = hub.request("PATCH", "/v2/cancel/blobs/uploads/no-such-upload",
                           data=b"x")
    assert response.status_code == 404
    assert oci_error(response) == "BLOB_UPLOAD_UNKNOWN"
    # An upload of one repository is unknown in another.
    location = hub.request("POST", "/v2/cancel/blobs/uploads/").headers["Location"]
    elsewhere = location.replace("/v2/cancel/", "/v2/elsewhere/")
    assert hub.request("GET", elsewhere).status_code == 404


def test_cross_repository_mount(hub):
    data = b"mount me"
    digest = hub.push_blob("mount/source", data)
    mounted = hub.request(
        "POST", f"/v2/mount/target/blobs/uploads/?mount={digest}&from=mount/source")
    assert mounted.status_code == 201
    assert mounted.headers["Location"] == f"/v2/mount/target/blobs/{digest}"
    assert mounted.headers["Docker-Content-Digest"] == digest
    assert hub.request("GET", f"/v2/mount/target/blobs/{digest}").content == data
    # Not in `from`: an ordinary upload starts instead.
    missing = sha256(b"not pushed anywhere")
    fallback = hub.request(
        "POST", f"/v2/mount/target/blobs/uploads/?mount={missing}&from=mount/source")
    assert fallback.status_code == 202
    assert "/blobs/uploads/" in fallback.headers["Location"]


def test_manifest_put_get_head_delete(hub):
    body, digest = hub.push_image("manifests/a", "v1")
    get = hub.request("GET", "/v2/manifests/a/manifests/v1")
    assert get.status_code == 200
    assert get.content == body
    assert get.headers["Content-Type"] == OCI_MANIFEST
    assert get.headers["Docker-Content-Digest"] == digest
    head = hub.request("HEAD", f"/v2/manifests/a/manifests/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(body))
    assert head.headers["Docker-Content-Digest"] == digest
    by_digest = hub.push_manifest("manifests/a", digest, body)
    assert by_digest.status_code == 201
    assert by_digest.headers["Location"] == f"/v2/manifests/a/manifests/{digest}"
    assert by_digest.headers["Docker-Content-Digest"] == digest
    # Deleting the tag leaves the manifest; deleting the digest removes it.
    assert hub.request("DELETE", "/v2/manifests/a/manifests/v1").status_code == 202
    gone = hub.request("GET", "/v2/manifests/a/manifests/v1")
    assert gone.status_code == 404 and oci_error(gone) == "MANIFEST_UNKNOWN"
    assert hub.request("GET", f"/v2/manifests/a/manifests/{digest}").status_code == 200
    assert hub.request("DELETE", f"/v2/manifests/a/manifests/{digest}").status_code == 202
    gone = hub.request("GET", f"/v2/manifests/a/manifests/{digest}")
    assert gone.status_code == 404 and oci_error(gone) == "MANIFEST_UNKNOWN"
    again = hub.request("DELETE", f"/v2/manifests/a/manifests/{digest}")
    assert again.status_code == 404


def test_image_index_of_pushed_manifests(hub):
    body, digest = hub.push_image("index/repo", "amd64")
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
             "manifests": [descriptor(OCI_MANIFEST, body)]}
    response = hub.push_manifest("index/repo", "multi", index, OCI_INDEX)
    assert response.status_code == 201, response.text
    get = hub.request("GET", "/v2/index/repo/manifests/multi")
    assert get.headers["Content-Type"] == OCI_INDEX
    assert json.loads(get.content)["manifests"][0]["digest"] == digest


def follow_pages(hub, path, key):
    names, pages = [], 0
    while path:
        response = hub.request("GET", path)
        assert response.status_code == 200, response.text
        names += response.json()[key]
        pages += 1
        link = response.headers.get("Link")
        path = re.match(r'<([^>]+)>; rel="next"', link).group(1) if link else None
    return names, pages


def test_tags_list_pages_with_link(hub):
    tags = ["v5", "v1", "latest", "v3", "v2", "v4"]
    body, _ = hub.push_image("paged", tags[0])
    for tag in tags[1:]:
        assert hub.push_manifest("paged", tag, body).status_code == 201
    everything = hub.request("GET", "/v2/paged/tags/list")
    assert everything.json() == {"name": "paged", "tags": sorted(tags)}
    assert "Link" not in everything.headers
    first = hub.request("GET", "/v2/paged/tags/list?n=2")
    assert first.json()["tags"] == ["latest", "v1"]
    assert first.headers["Link"] == '</v2/paged/tags/list?n=2&last=v1>; rel="next"'
    names, pages = follow_pages(hub, "/v2/paged/tags/list?n=2", "tags")
    assert names == sorted(tags) and pages == 3
    after = hub.request("GET", "/v2/paged/tags/list?n=10&last=v3")
    assert after.json()["tags"] == ["v4", "v5"]
    unknown = hub.request("GET", "/v2/never/pushed/tags/list")
    assert unknown.status_code == 404 and oci_error(unknown) == "NAME_UNKNOWN"
    bad = hub.request("GET", "/v2/paged/tags/list?n=many")
    assert bad.status_code == 400


def test_catalog_pages(hub):
    for repo in ("catalog/a", "catalog/b", "catalog/c"):
        hub.push_blob(repo, repo.encode())
    names, pages = follow_pages(hub, "/v2/_catalog?n=1", "repositories")
    assert pages == len(names)
    assert [n for n in names if n.startswith("catalog/")] == \
        ["catalog/a", "catalog/b", "catalog/c"]
    assert names == sorted(names)


def test_referrers_with_subject_and_artifact_type_filter(hub):
    subject_body, subject_digest = hub.push_image("refs/model", "v1")
    subject = descriptor(OCI_MANIFEST, subject_body)
    signature = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                 "artifactType": "application/vnd.example.signature",
                 "config": descriptor("application/vnd.oci.empty.v1+json", b"{}"),
                 "layers": [descriptor("application/octet-stream", b"sig")],
                 "subject": subject,
                 "annotations": {"org.example.signed-by": "tests"}}
    hub.push_blob("refs/model", b"sig")
    response = hub.push_manifest("refs/model", "sig", signature)
    assert response.status_code == 201, response.text
    assert response.headers["OCI-Subject"] == subject_digest
    sbom = dict(signature, artifactType="application/vnd.example.sbom",
                annotations={})
    del sbom["annotations"]
    sbom_response = hub.push_manifest("refs/model", "sbom", sbom)
    assert sbom_response.status_code == 201

    listing = hub.request("GET", f"/v2/refs/model/referrers/{subject_digest}")
    assert listing.status_code == 200
    assert listing.headers["Content-Type"] == OCI_INDEX
    index = listing.json()
    assert index["schemaVersion"] == 2 and index["mediaType"] == OCI_INDEX
    by_type = {m["artifactType"]: m for m in index["manifests"]}
    assert set(by_type) == {"application/vnd.example.signature",
                            "application/vnd.example.sbom"}
    sig = by_type["application/vnd.example.signature"]
    assert sig["digest"] == response.headers["Docker-Content-Digest"]
    assert sig["mediaType"] == OCI_MANIFEST
    assert sig["annotations"] == {"org.example.signed-by": "tests"}
    assert "OCI-Filters-Applied" not in listing.headers

    filtered = hub.request(
        "GET", f"/v2/refs/model/referrers/{subject_digest}"
        "?artifactType=application/vnd.example.sbom")
    assert filtered.headers["OCI-Filters-Applied"] == "artifactType"
    assert [m["digest"] for m in filtered.json()["manifests"]] == \
        [sbom_response.headers["Docker-Content-Digest"]]

    nothing = hub.request("GET", f"/v2/refs/model/referrers/{sha256(b'x')}")
    assert nothing.status_code == 200 and nothing.json()["manifests"] == []
    bad = hub.request("GET", "/v2/refs/model/referrers/sha256:nothex")
    assert bad.status_code == 400 and oci_error(bad) == "DIGEST_INVALID"


def test_range_requests(hub):
    data = bytes(range(256)) * 40
    digest = hub.push_blob("ranges", data)
    path = f"/v2/ranges/blobs/{digest}"
    middle = hub.request("GET", path, headers={"Range": "bytes=100-199"})
    assert middle.status_code == 206
    assert middle.content == data[100:200]
    assert middle.headers["Content-Range"] == f"bytes 100-199/{len(data)}"
    open_ended = hub.request("GET", path, headers={"Range": "bytes=10000-"})
    assert open_ended.status_code == 206 and open_ended.content == data[10000:]
    suffix = hub.request("GET", path, headers={"Range": "bytes=-5"})
    assert suffix.status_code == 206 and suffix.content == data[-5:]
    past_end = hub.request("GET", path, headers={"Range": "bytes=20000-"})
    assert past_end.status_code == 416
    assert past_end.headers["Content-Range"] == f"bytes */{len(data)}"
    backwards = hub.request("GET", path, headers={"Range": "bytes=50-10"})
    assert backwards.status_code == 416
    # A missing blob is a plain 404 even with a Range header.
    missing = hub.request("GET", f"/v2/ranges/blobs/{sha256(b'no')}",
                          headers={"Range": "bytes=0-1"})
    assert missing.status_code == 404 and oci_error(missing) == "BLOB_UNKNOWN"


def test_blob_delete(hub):
    digest = hub.push_blob("deleting", b"delete me")
    assert hub.request("DELETE", f"/v2/deleting/blobs/{digest}").status_code == 202
    gone = hub.request("HEAD", f"/v2/deleting/blobs/{digest}")
    assert gone.status_code == 404
    again = hub.request("DELETE", f"/v2/deleting/blobs/{digest}")
    assert again.status_code == 404 and oci_error(again) == "BLOB_UNKNOWN"


def test_anonymous_pull_on_by_default_but_never_push(hub):
    body, digest = hub.push_image("anon/pull", "v1")
    pulled = hub.request("GET", "/v2/anon/pull/manifests/v1", token=None)
    assert pulled.status_code == 200 and pulled.content == body
    pushed = hub.request("POST", "/v2/anon/pull/blobs/uploads/", token=None)
    assert pushed.status_code == 401 and oci_error(pushed) == "UNAUTHORIZED"
    assert "WWW-Authenticate" in pushed.headers
    deleted = hub.request("DELETE", f"/v2/anon/pull/manifests/{digest}", token=None)
    assert deleted.status_code == 401


def test_device_token_pulls_but_cannot_push(hub):
    body, digest = hub.push_image("device/pull", "v1")
    assert hub.request("GET", "/v2/device/pull/manifests/v1",
                       token=DEVICE_TOKEN).content == body
    for method, path in (("POST", "/v2/device/pull/blobs/uploads/"),
                         ("PUT", "/v2/device/pull/manifests/v2"),
                         ("DELETE", f"/v2/device/pull/manifests/{digest}"),
                         ("DELETE", f"/v2/device/pull/blobs/{digest}")):
        response = hub.request(method, path, token=DEVICE_TOKEN, data=body)
        assert response.status_code == 403, (method, path)
        assert oci_error(response) == "DENIED"
    assert hub.request("GET", "/v2/device/pull/manifests/v1").status_code == 200


def test_closed_hub_needs_a_token_to_pull(hubs, tmp_path):
    admin_file = tmp_path / "admin"
    admin_file.write_text("admin-token-from-a-file-0123456789\n")
    device_file = tmp_path / "device"
    device_file.write_text("device-token-from-a-file-0123456789\n")
    hub = hubs.start(args=["--no-anonymous-pull", "--admin-token-file", admin_file,
                           "--device-token-file", device_file])
    hub.admin_token = "admin-token-from-a-file-0123456789"
    assert not (hub.data / "admin-token").exists()
    hub.push_image("closed/repo", "v1")
    for token in (None, "wrong-token", "device-token-from-a-file-012345678"):
        response = hub.request("GET", "/v2/closed/repo/manifests/v1", token=token)
        assert response.status_code == 401, token
        assert oci_error(response) == "UNAUTHORIZED"
        assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert hub.request("GET", "/v2/closed/repo/manifests/v1",
                       token="device-token-from-a-file-0123456789").status_code == 200
    assert hub.request("GET", "/v2/_catalog", token=None).status_code == 401
    # Basic auth with the token as password, as docker-style clients send it.
    basic = hub.request("GET", "/v2/closed/repo/tags/list", token=None,
                        auth=("anyone", "admin-token-from-a-file-0123456789"))
    assert basic.status_code == 200 and basic.json()["tags"] == ["v1"]


def test_admin_token_from_the_environment(hubs):
    env = dict(os.environ, PERCH_HUB_ADMIN_TOKEN="admin-token-from-env-0123456789")
    hub = hubs.start(env=env)
    assert not (hub.data / "admin-token").exists()
    hub.admin_token = "admin-token-from-env-0123456789"
    hub.push_image("env/repo", "v1")
    assert hub.request("POST", "/v2/env/repo/blobs/uploads/",
                       token="something-else-0123456789").status_code == 401


def test_state_survives_a_restart(hubs):
    hub = hubs.start()
    body, digest = hub.push_image("restart/repo", "v1", layers=(b"persisted",))
    token = hub.admin_token
    assert hub.stop() == 0
    again = hubs.start(data=hub.data)
    assert again.admin_token == token
    assert again.request("GET", "/v2/restart/repo/manifests/v1").content == body
    assert again.request("GET", f"/v2/restart/repo/blobs/{sha256(b'persisted')}").content \
        == b"persisted"


def test_large_blob_streams_in_chunked_encoding_and_out_again(hub):
    """20 MiB sent with Transfer-Encoding: chunked (no Content-Length), as
    skopeo sends layers, and read back streamed."""
    piece = os.urandom(1 << 20)
    data_digest = sha256(piece * 20)

    def body():
        for _ in range(20):
            yield piece

    location = hub.request("POST", "/v2/large/blobs/uploads/").headers["Location"]
    patch = hub.request("PATCH", location, data=body(), timeout=60)
    assert patch.status_code == 202, patch.text
    assert patch.headers["Range"] == f"0-{20 * len(piece) - 1}"
    done = hub.request("PUT", f"{patch.headers['Location']}?digest={data_digest}")
    assert done.status_code == 201, done.text
    streamed = hub.request("GET", f"/v2/large/blobs/{data_digest}", stream=True,
                           timeout=60)
    hasher = hashlib.sha256()
    for chunk in streamed.iter_content(1 << 16):
        hasher.update(chunk)
    assert "sha256:" + hasher.hexdigest() == data_digest
