"""Signatures travel with models (issue 12, item 2): `perch push` of a
folder holding model.sig attaches it to the model's manifest as an OCI
referrer in cosign's layout, and `perch pull` / `serve --model` fetch it by
the exact manifest digest they pulled and install it next to the model.
Against perch's hub (referrers API) and Distribution 2.8 (no referrers API:
the tag-schema index). What a bundle says is the verifier's business; these
tests carry opaque bundles."""

import json
import shutil

import pytest
import requests

from harness import WAKEWORD_MODELS
from hub_harness import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, descriptor, sha256
from registry_harness import Registry, digest_of, model_server, perch

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"


def fake_bundle(tag):
    return json.dumps({"mediaType": BUNDLE_TYPE, "dsseEnvelope": {"payload": tag}}).encode()


class Target:
    """A registry under test: the hub (with its admin token) or Distribution."""

    def __init__(self, host, url, token=None):
        self.host, self.url, self.token = host, url, token

    def flags(self):
        return ["--token", self.token] if self.token else []

    def get(self, path, **headers):
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return requests.get(self.url + path, headers=headers, timeout=10)

    def put(self, path, body, media_type):
        headers = {"Content-Type": media_type}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return requests.put(self.url + path, data=body, headers=headers, timeout=10)

    def post_blob(self, repo, data):
        headers = {"Content-Type": "application/octet-stream"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        # Distribution wants POST then PUT; the hub takes either.
        started = requests.post(f"{self.url}/v2/{repo}/blobs/uploads/", headers=headers,
                                timeout=10)
        assert started.status_code == 202, started.text
        location = started.headers["Location"]
        if location.startswith("/"):
            location = self.url + location
        sep = "&" if "?" in location else "?"
        done = requests.put(f"{location}{sep}digest={sha256(data)}", data=data,
                            headers=headers, timeout=10)
        assert done.status_code == 201, done.text

    def referrers(self, repo, digest):
        """The referrers index: the API where there is one, else the tag schema."""
        listed = self.get(f"/v2/{repo}/referrers/{digest}", Accept=OCI_INDEX)
        if listed.status_code == 200:
            return listed.json()
        tagged = self.get(f"/v2/{repo}/manifests/{digest.replace(':', '-')}", Accept=OCI_INDEX)
        assert tagged.status_code == 200, tagged.text
        return tagged.json()


@pytest.fixture(params=["hub", "distribution"])
def target(request, hubs, tmp_path):
    if request.param == "hub":
        hub = hubs.start()
        yield Target(hub.host, hub.url, hub.admin_token)
        return
    registry = Registry(tmp_path / "distribution").start()
    yield Target(registry.host, registry.url)
    registry.stop()


def signed_model(root, bundle):
    folder = root / "hey_jarvis" / "1"
    folder.mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, folder / "model.onnx")
    if bundle is not None:
        (folder / "model.sig").write_bytes(bundle)
    return root / "hey_jarvis"


def test_push_attaches_model_sig_and_pull_installs_it(target, tmp_path):
    bundle = fake_bundle("first")
    model = signed_model(tmp_path / "src", bundle)
    ref = f"{target.host}/wakeword/hey_jarvis:1"
    pushed = perch("push", model, ref, *target.flags())
    digest = digest_of(pushed.stdout)
    assert "pushed hey_jarvis version 1 to" in pushed.stdout
    assert "(1 files" in pushed.stdout  # model.sig is not a layer
    signature = next(line.split()[1] for line in pushed.stdout.splitlines()
                     if line.startswith("signature: "))

    # Cosign's layout: listed by the subject's digest, one bundle layer.
    index = target.referrers("wakeword/hey_jarvis", digest)
    entry = next(e for e in index["manifests"] if e["digest"] == signature)
    assert entry["artifactType"] == BUNDLE_TYPE
    manifest = target.get(f"/v2/wakeword/hey_jarvis/manifests/{signature}",
                          Accept=OCI_MANIFEST).json()
    assert manifest["artifactType"] == BUNDLE_TYPE
    assert manifest["config"]["mediaType"] == OCI_EMPTY
    assert manifest["layers"] == [descriptor(BUNDLE_TYPE, bundle)]
    assert manifest["subject"]["digest"] == digest

    # Pushing again changes nothing (deterministic referrer, no duplicate).
    again = perch("push", model, ref, *target.flags())
    assert f"signature: {signature}" in again.stdout
    index = target.referrers("wakeword/hey_jarvis", digest)
    assert [e["digest"] for e in index["manifests"]].count(signature) == 1

    out = tmp_path / "out"
    pulled = perch("pull", ref, "--to", out, "--cache", tmp_path / "cache", *target.flags())
    assert f"signature: {sha256(bundle)}" in pulled.stdout
    version = out / "hey_jarvis" / "1"
    assert (version / "model.sig").read_bytes() == bundle
    record = json.loads((version / ".perch-artifact.json").read_text())
    assert record["signatures"] == [sha256(bundle)]


def test_a_tag_moved_to_an_unsigned_model_brings_no_signature(target, tmp_path):
    ref = f"{target.host}/wakeword/hey_jarvis:1"
    perch("push", signed_model(tmp_path / "a", fake_bundle("a")), ref, *target.flags())
    # Another model (another file set) under the same tag, unsigned.
    unsigned = signed_model(tmp_path / "b", None)
    (unsigned / "1" / "extra.txt").write_text("another model")
    perch("push", unsigned, ref, *target.flags())
    out = tmp_path / "out"
    pulled = perch("pull", ref, "--to", out, "--cache", tmp_path / "cache", *target.flags())
    assert "signature:" not in pulled.stdout
    assert not (out / "hey_jarvis" / "1" / "model.sig").exists()


def attach_raw(target, repo, subject_digest, subject_size, bundle, bundle_type=BUNDLE_TYPE,
               claimed_subject=None):
    """Pushes a referrer by hand (and the tag-schema entry where needed)."""
    target.post_blob(repo, b"{}")
    target.post_blob(repo, bundle)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": bundle_type,
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor(bundle_type, bundle)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": claimed_subject or subject_digest,
                    "size": subject_size}}).encode()
    answer = target.put(f"/v2/{repo}/manifests/{sha256(manifest)}", manifest, OCI_MANIFEST)
    assert answer.status_code == 201, answer.text
    if target.get(f"/v2/{repo}/referrers/{subject_digest}").status_code == 404:
        tag = subject_digest.replace(":", "-")
        old = target.get(f"/v2/{repo}/manifests/{tag}", Accept=OCI_INDEX)
        entries = old.json()["manifests"] if old.status_code == 200 else []
        entries.append({"mediaType": OCI_MANIFEST, "digest": sha256(manifest),
                        "size": len(manifest), "artifactType": BUNDLE_TYPE})
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": entries}).encode()
        assert target.put(f"/v2/{repo}/manifests/{tag}", index, OCI_INDEX).status_code == 201
    return sha256(manifest)


def test_pull_takes_every_signature_and_skips_oversized_ones(target, tmp_path):
    good = fake_bundle("good")
    ref = f"{target.host}/wakeword/hey_jarvis:1"
    pushed = perch("push", signed_model(tmp_path / "src", good), ref, *target.flags())
    digest = digest_of(pushed.stdout)
    size = len(target.get(f"/v2/wakeword/hey_jarvis/manifests/{digest}",
                          Accept=OCI_MANIFEST).content)
    garbage = b"\x00not a bundle\xff"
    attach_raw(target, "wakeword/hey_jarvis", digest, size, garbage)
    attach_raw(target, "wakeword/hey_jarvis", digest, size, b"x" * ((1 << 20) + 1))
    # A referrer listed for this model that names another subject.
    other = sha256(b"another manifest")
    attach_raw(target, "wakeword/hey_jarvis", digest, size, fake_bundle("elsewhere"),
               claimed_subject=other)

    out = tmp_path / "out"
    pulled = perch("pull", ref, "--to", out, "--cache", tmp_path / "cache", *target.flags())
    version = out / "hey_jarvis" / "1"
    installed = sorted(p.name for p in version.iterdir() if p.name.startswith("model.sig"))
    assert installed == ["model.sig", "model.sig.2"]
    assert {(version / name).read_bytes() for name in installed} == {good, garbage}
    assert "more than the 1048576 allowed" in pulled.stderr
    # The hub lists only the referrers whose subject is this manifest; the
    # tag-schema index is a tag anyone can write, so the referrer is checked.
    if target.token is None:
        assert "its subject is another manifest" in pulled.stderr


def test_serve_model_installs_the_signature_and_keeps_it_offline(hubs, tmp_path):
    hub = hubs.start()
    bundle = fake_bundle("agent")
    ref = f"{hub.host}/wakeword/hey_jarvis:1"
    perch("push", signed_model(tmp_path / "src", bundle), ref, "--token", hub.admin_token)
    state = tmp_path / "state"
    agent = model_server(tmp_path, [ref], state).start()
    assert agent.stop() == 0
    assert (state / "models" / "hey_jarvis" / "1" / "model.sig").read_bytes() == bundle
    assert json.loads((state / "pulled.json").read_text())["references"][ref]["signatures"] \
        == [sha256(bundle)]
    # The hub gone and the folder lost, the cache reinstalls model and signature.
    hub.stop()
    shutil.rmtree(state / "models" / "hey_jarvis")
    again = model_server(tmp_path, [ref], state).start()
    assert again.stop() == 0
    assert (state / "models" / "hey_jarvis" / "1" / "model.sig").read_bytes() == bundle
