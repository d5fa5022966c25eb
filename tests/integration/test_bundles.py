"""Location bundles (issue 12, items 4 and 5): a new user makes a key with
openssl, signs a model, pushes it, exports a bundle, imports it on an agent
that has never seen a hub, and the model serves; every bad bundle is refused
with a clear error, nothing changes, and the previous state keeps serving."""

import io
import json
import shutil
import subprocess
import tarfile

import pytest

from harness import WAKEWORD_MODELS, PerchServer, wait_for
from hub_harness import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, descriptor, sha256
from registry_harness import Registry, digest_of, files_of, infer, perch, skopeo

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"
BUNDLE_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SWITCH_TIMEOUT = 30


def make_key(folder, name):
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", private], check=True)
    subprocess.run(["openssl", "ec", "-in", private, "-pubout", "-out", public],
                   check=True, capture_output=True)
    return private, public


def model_folder(root, version, payload=None):
    folder = root / "hey_jarvis" / str(version)
    folder.mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, folder / "model.onnx")
    if payload is not None:
        (folder / "notes.txt").write_text(payload)
    return folder


class Site:
    """A registry with signed models, keys, and an export helper."""

    def __init__(self, root):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.registry = Registry(root / "registry").start()
        self.key, self.public = make_key(root, "site")
        self.other_key, self.other_public = make_key(root, "other")

    def push(self, version, sign_with=None, tamper_after_signing=False, tag=None):
        folder = model_folder(self.root / f"src-{version}-{tag or 'x'}", version,
                              "signed" if tamper_after_signing else None)
        if sign_with is not None:
            perch("sign", folder, "--key", sign_with)
        if tamper_after_signing:
            (folder / "notes.txt").write_text("changed after signing")
        ref = f"{self.registry.host}/wakeword/hey_jarvis:{tag or version}"
        return ref, digest_of(perch("push", folder, ref).stdout)

    def export(self, out, refs, generation, key=None):
        perch("bundle", "export", *refs, "--key", key or self.key, "--out", out,
              "--location", "plant-1", "--generation", generation,
              "--cache", self.root / "export-cache")
        return out


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = Site(tmp_path_factory.mktemp("site"))
    site.v1 = site.push(1, sign_with=site.key)
    site.v2 = site.push(2, sign_with=site.key)
    yield site
    site.registry.stop()


def bundle_server(workdir, state, args=()):
    server = PerchServer(workdir, workdir, args)
    at = server.command.index("--repo")
    del server.command[at:at + 2]
    server.command += ["--bundles", "--state", str(state)]
    return server


def imported(state, bundle, key, check=True):
    return perch("bundle", "import", bundle, "--state", state, "--trust-key", key, check=check)


def served_versions(server):
    rows = server.post("/v2/repository/index").json()
    return sorted((row["name"], row.get("version")) for row in rows
                  if row.get("state") == "READY")


def test_a_signed_bundle_serves_on_an_agent_that_never_saw_a_hub(site, tmp_path):
    bundle = site.export(tmp_path / "site.tar", [site.v1[0]], 1)
    # skopeo reads the models out of the bundle as an OCI archive.
    skopeo("copy", f"oci-archive:{bundle}:wakeword/hey_jarvis:1", f"dir:{tmp_path / 'copy'}")
    assert (tmp_path / "copy" / "manifest.json").exists()

    state = tmp_path / "state"
    out = imported(state, bundle, site.public)
    assert "imported generation 1 for location plant-1 (1 models)" in out.stdout
    # The agent trusts the same key: nothing unsigned would become READY.
    agent = bundle_server(tmp_path, state, ("--trust-key", site.public)).start()
    try:
        reference = PerchServer(model_folder(tmp_path / "local", 1).parent.parent, tmp_path)
        reference.start()
        try:
            assert infer(agent, "hey_jarvis") == infer(reference, "hey_jarvis")
        finally:
            assert reference.stop() == 0
        served = state / "bundle" / "releases" / "g1" / "hey_jarvis" / "1"
        assert (served / "model.sig").exists()
        # A tampered copy of the same bundle, as generation 2, changes nothing.
        tampered = tmp_path / "tampered.tar"
        rewrite(bundle, tampered, lambda name, data: data.replace(b"hey_jarvis", b"hey_jarviz")
                if name.startswith("blobs/") and b"hey_jarvis" in data else data)
        refused = imported(state, tampered, site.public, check=False)
        assert refused.returncode == 1 and "nothing changed" in refused.stderr
        assert served_versions(agent) == [("hey_jarvis", "1")]
    finally:
        assert agent.stop() == 0


def test_a_running_agent_switches_to_a_newer_generation_and_never_back(site, tmp_path):
    state = tmp_path / "state"
    first = site.export(tmp_path / "g1.tar", [site.v1[0]], 10)
    second = site.export(tmp_path / "g2.tar", [site.v2[0]], 11)
    imported(state, first, site.public)
    agent = bundle_server(tmp_path, state).start()
    try:
        assert served_versions(agent) == [("hey_jarvis", "1")]
        imported(state, second, site.public)
        wait_for(lambda: served_versions(agent) == [("hey_jarvis", "2")], SWITCH_TIMEOUT,
                 what="the agent to switch to generation 11")
        # The older bundle again: a rollback, refused.
        refused = imported(state, first, site.public, check=False)
        assert refused.returncode == 1
        assert "generation 10 is not above the 11 this site runs" in refused.stderr
    finally:
        assert agent.stop() == 0
    # Remembered across restarts: the agent serves 11, and 11 again is a replay.
    again = bundle_server(tmp_path, state).start()
    try:
        assert served_versions(again) == [("hey_jarvis", "2")]
    finally:
        assert again.stop() == 0
    replay = imported(state, second, site.public, check=False)
    assert replay.returncode == 1 and "replayed or older" in replay.stderr


# --- bad bundles ------------------------------------------------------------

def members(bundle):
    """[(TarInfo, bytes or None)] of a tar."""
    with tarfile.open(bundle) as tar:
        return [(info, tar.extractfile(info).read() if info.isfile() else None)
                for info in tar.getmembers()]


def write_tar(out, entries, fmt=tarfile.PAX_FORMAT):
    with tarfile.open(out, "w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def rewrite(bundle, out, change):
    """A copy of `bundle` with each file's bytes passed through change(name, bytes)."""
    entries = []
    for info, data in members(bundle):
        if data is not None:
            data = change(info.name, data)
            info.size = len(data)
        entries.append((info, data))
    return write_tar(out, entries)


def added(bundle, out, info, data=None):
    return write_tar(out, members(bundle) + [(info, data)])


def entry(name, kind=tarfile.REGTYPE, size=0, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size, link
    return info


def index_of(bundle):
    return json.loads(dict((i.name, d) for i, d in members(bundle))["index.json"])


def with_index(bundle, out, change):
    def edit(name, data):
        if name == "index.json":
            index = json.loads(data)
            change(index)
            return json.dumps(index).encode()
        return data
    return rewrite(bundle, out, edit)


def model_entry(index):
    return next(m for m in index["manifests"]
                if m.get("artifactType") == "application/vnd.perch.model.v1")


def layer_digests(bundle):
    files = dict((i.name, d) for i, d in members(bundle))
    manifest = json.loads(files["blobs/sha256/" + model_entry(index_of(bundle))["digest"][7:]])
    return [layer["digest"] for layer in manifest["layers"]]


def truncated(bundle, out):
    data = bundle.read_bytes()
    out.write_bytes(data[:len(data) // 2])
    return out


def without_blob(bundle, out):
    gone = "blobs/sha256/" + layer_digests(bundle)[0][7:]
    return write_tar(out, [(i, d) for i, d in members(bundle) if i.name != gone])


def changed_blob(bundle, out):
    target = "blobs/sha256/" + layer_digests(bundle)[0][7:]
    return rewrite(bundle, out, lambda name, data: data[:-1] + bytes([data[-1] ^ 1])
                   if name == target else data)


def huge_declared_size(bundle, out):
    # A tar header declaring 10 GB (GNU base-256 size) and a few bytes after.
    info = entry("blobs/sha256/" + "ab" * 32, size=10 * 10**9)
    header = info.tobuf(tarfile.GNU_FORMAT)
    out.write_bytes(header + b"x" * 512)
    return out


def index_declares_10gb(bundle, out):
    def change(index):
        model_entry(index)["size"] = 10 * 10**9
    return with_index(bundle, out, change)


BAD_TARS = {
    "truncated": (truncated, "not a complete tar file"),
    "dot-dot": (lambda b, o: added(b, o, entry("../evil", size=1), b"x"),
                "not part of an OCI image layout"),
    "nested-dot-dot": (lambda b, o: added(b, o, entry("blobs/sha256/../../evil", size=1), b"x"),
                       "not named by a sha256 digest"),
    "absolute": (lambda b, o: added(b, o, entry("/etc/evil", size=1), b"x"),
                 "not part of an OCI image layout"),
    "symlink": (lambda b, o: added(b, o, entry("blobs/sha256/" + "cd" * 32, tarfile.SYMTYPE,
                                               link="/etc/passwd")), "is a link"),
    "hardlink": (lambda b, o: added(b, o, entry("blobs/sha256/" + "cd" * 32, tarfile.LNKTYPE,
                                                link="index.json")), "is a link"),
    "device": (lambda b, o: added(b, o, entry("blobs/sha256/" + "cd" * 32, tarfile.CHRTYPE)),
               "device or other special file"),
    "blob-not-its-digest": (changed_blob, "do not match its digest"),
    "missing-blob": (without_blob, "which the bundle does not hold"),
    "declared-10GB-in-tar": (huge_declared_size, "more than the 1073741824 a blob may have"),
    "declared-10GB-in-index": (index_declares_10gb, "says blob"),
}


@pytest.fixture(scope="module")
def serving(site, tmp_path_factory):
    """An agent serving generation 1, and the good generation-2 bundle."""
    root = tmp_path_factory.mktemp("serving")
    state = root / "state"
    imported(state, site.export(root / "g1.tar", [site.v1[0]], 1), site.public)
    agent = bundle_server(root, state).start()
    good = site.export(root / "g2.tar", [site.v2[0]], 2)
    yield root, state, agent, good
    assert agent.stop() == 0


def assert_refused(site, serving, bundle, message):
    root, state, agent, _ = serving
    before = files_of(state / "bundle")
    result = perch("bundle", "import", bundle, "--state", state, "--trust-key", site.public,
                   "--max-blob-bytes", 1 << 30, check=False)
    assert result.returncode == 1, result.stdout
    assert "not imported (nothing changed)" in result.stderr
    assert message in result.stderr, result.stderr
    assert files_of(state / "bundle") == before
    assert json.loads((state / "bundle" / "current.json").read_text())["generation"] == 1
    assert served_versions(agent) == [("hey_jarvis", "1")]


@pytest.mark.parametrize("case", sorted(BAD_TARS))
def test_a_bad_tar_is_refused_and_changes_nothing(site, serving, case, tmp_path):
    make, message = BAD_TARS[case]
    assert_refused(site, serving, make(serving[3], tmp_path / "bad.tar"), message)


def test_a_state_signed_by_an_untrusted_key_is_refused(site, serving, tmp_path):
    bundle = site.export(tmp_path / "other.tar", [site.v2[0]], 3, key=site.other_key)
    assert_refused(site, serving, bundle, "the location state's signature does not hold")


def test_a_signature_over_other_files_is_refused(site, serving, tmp_path):
    ref, _ = site.push(3, sign_with=site.key, tamper_after_signing=True, tag="tampered")
    bundle = site.export(tmp_path / "tampered.tar", [ref], 4)
    assert_refused(site, serving, bundle, "signature model.sig is refused")


def test_an_unsigned_model_is_refused(site, serving, tmp_path):
    ref, _ = site.push(4, tag="unsigned")
    bundle = site.export(tmp_path / "unsigned.tar", [ref], 5)
    assert_refused(site, serving, bundle, "is not signed")


def test_a_garbage_second_signature_next_to_a_good_one_is_refused(site, serving, tmp_path):
    bundle = serving[3]
    index = index_of(bundle)
    model = model_entry(index)
    garbage = b"\x00garbage, not a Sigstore bundle"
    referrer = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_TYPE,
        "config": descriptor(OCI_EMPTY, b"{}"), "layers": [descriptor(BUNDLE_TYPE, garbage)],
        "subject": {"mediaType": OCI_MANIFEST, "digest": model["digest"],
                    "size": model["size"]}}).encode()
    index["manifests"].append({"mediaType": OCI_MANIFEST, "digest": sha256(referrer),
                               "size": len(referrer), "artifactType": BUNDLE_TYPE})
    extra = [(entry("blobs/sha256/" + sha256(data)[7:], size=len(data)), data)
             for data in (garbage, referrer)]
    out = with_index(bundle, tmp_path / "garbage.tar", lambda i: i.update(index))
    write_tar(out, members(out) + extra)
    assert_refused(site, serving, out, "signature model.sig.2 is refused")


def test_a_replayed_bundle_is_refused(site, serving, tmp_path):
    root, state, agent, good = serving
    replay = site.export(tmp_path / "g1-again.tar", [site.v1[0]], 1)
    assert_refused(site, serving, replay, "replayed or older")


# --- with hubs: export a location's state, hand a bundle to a site's hub -----

def test_a_hub_location_exported_and_handed_to_a_sites_own_hub(hubs, tmp_path):
    from fleet_harness import admin, create_location, fleet_agent

    key, public = make_key(tmp_path, "site")
    central = hubs.start()
    folder = model_folder(tmp_path / "src", 1)
    perch("sign", folder, "--key", key)
    ref = f"{central.host}/wakeword/hey_jarvis:1"
    perch("push", folder, ref, "--token", central.admin_token)
    create_location(central, "plant-1")
    admin(central, "deploy", ref, "--name", "jarvis", "--location", "plant-1")
    bundle = tmp_path / "plant-1.tar"
    out = perch("bundle", "export", "--hub", central.url, "--location", "plant-1", "--token",
                central.admin_token, "--key", key, "--out", bundle, "--generation", 5)
    assert "exported 1 models for location plant-1, generation 5" in out.stdout

    # The site's own hub, an agent of it, and the bundle handed over.
    site_hub = hubs.start()
    enrolment = create_location(site_hub, "plant-1")
    agent = fleet_agent(tmp_path, site_hub.url, enrolment, "edge-1", tmp_path / "agent").start()
    try:
        handed = perch("bundle", "import", bundle, "--hub", site_hub.url, "--token",
                       site_hub.admin_token, "--state", tmp_path / "importer",
                       "--trust-key", public)
        assert "deployed hey_jarvis version 1 to location plant-1" in handed.stdout
        wait_for(lambda: served_versions(agent) == [("hey_jarvis", "1")], SWITCH_TIMEOUT,
                 what="the site hub's agent to serve the bundle's model")
        # The signature came along: the agent installed it beside the model.
        assert list((tmp_path / "agent").rglob("model.sig"))
        replay = perch("bundle", "import", bundle, "--hub", site_hub.url, "--token",
                       site_hub.admin_token, "--state", tmp_path / "importer",
                       "--trust-key", public, check=False)
        assert replay.returncode == 1 and "replayed or older" in replay.stderr
    finally:
        assert agent.stop() == 0


def test_a_site_back_in_touch_reports_its_bundle_generation(hubs, tmp_path):
    from fleet_harness import admin, create_location, device_report, fleet_agent

    key, public = make_key(tmp_path, "site")
    central = hubs.start()
    folder = model_folder(tmp_path / "src", 1)
    perch("sign", folder, "--key", key)
    ref = f"{central.host}/wakeword/hey_jarvis:1"
    perch("push", folder, ref, "--token", central.admin_token)
    enrolment = create_location(central, "plant-1")
    admin(central, "deploy", ref, "--name", "jarvis", "--location", "plant-1")
    bundle = tmp_path / "plant-1.tar"
    perch("bundle", "export", "--hub", central.url, "--location", "plant-1", "--token",
          central.admin_token, "--key", key, "--out", bundle, "--generation", 9)
    # The site ran on bundles; now its agent reaches the central hub again.
    state = tmp_path / "agent"
    imported(state, bundle, public)
    agent = fleet_agent(tmp_path, central.url, enrolment, "edge-1", state).start()
    try:
        # Enrolled first: the agent is ready before it has asked the hub.
        wait_for(lambda: central.request("GET", "/api/v1/devices/edge-1").status_code == 200,
                 SWITCH_TIMEOUT, what=lambda: "the agent to enrol:\n" + agent.logs()[-2000:])
        wait_for(lambda: (device_report(central, "edge-1").get("heartbeat") or {})
                 .get("bundle_generation") == 9, SWITCH_TIMEOUT,
                 what="the agent to report bundle generation 9")
        assert "g9" in admin(central, "status").stdout
        # The hub's desired state is what it serves now.
        wait_for(lambda: served_versions(agent) == [("hey_jarvis", "1")], SWITCH_TIMEOUT,
                 what="the agent to serve the hub's state")
    finally:
        assert agent.stop() == 0
