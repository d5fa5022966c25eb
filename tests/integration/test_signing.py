"""OMS model signatures (`perch sign` / `perch verify`), interop with the
reference signer's folders, and the agent's trust policy (--trust-key)."""

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import grpc_oip
import oip
from fleet_harness import (admin, create_location, device_report, fleet_agent,
                           make_scorer_repo, push_scorer, score)
from grpc_oip import connect, infer_request, typed_input
from harness import PERCH_BIN, ROOT, TEST_MODELS, wait_for
from mqtt_harness import Broker, Client, start_agent, unique, wait_online
from registry_harness import Registry, digest_of, model_server
from test_mqtt import ask

INTEROP = ROOT / "tests" / "data" / "oms"
INTEROP_FOLDERS = ["v1.0.1-elliptic-key", "v1.1.0-elliptic-key"]
INTEROP_ROOT = ("sha256:92745110b1ab4368471cbe31664e10174e954b113a3df333db8603"
                "17b2c6dec4")
POLL_SECONDS = 1
RELOAD_TIMEOUT = 15
X = np.array([0.5, -3.0, 42.0], dtype=np.float32)
X_REQUEST = {"inputs": [oip.json_input("INPUT0", X, "FP32")]}

grpc_stubs = grpc_oip.grpc_stubs


def perch(*args):
    return subprocess.run([str(PERCH_BIN), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def make_key(folder, name, curve="prime256v1"):
    """(private, public) PEM files made by the openssl CLI, as a user would."""
    private = folder / f"{name}.pem"
    public = folder / f"{name}.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", curve, "-genkey", "-noout",
                    "-out", private], check=True, capture_output=True)
    subprocess.run(["openssl", "ec", "-in", private, "-pubout", "-out",
                    public], check=True, capture_output=True)
    return private, public


@pytest.fixture
def keys(tmp_path):
    folder = tmp_path / "keys"
    folder.mkdir()
    return {"site": make_key(folder, "site"),
            "other": make_key(folder, "other", "secp384r1")}


@pytest.fixture
def model(tmp_path):
    """A model folder: the test model that adds 1, plus a nested file."""
    folder = tmp_path / "model"
    shutil.copytree(TEST_MODELS / "multi_version" / "1", folder)
    (folder / "labels").mkdir()
    (folder / "labels" / "names.txt").write_text("a\nb\n")
    return folder


def assert_refused(result, *reasons):
    assert result.returncode == 1, (result.stdout, result.stderr)
    for reason in reasons:
        assert reason in result.stderr, result.stderr


def payload_of(signature):
    bundle = json.loads(Path(signature).read_text())
    return json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))


def sign_statement(statement, private_key, signature, tmp_path,
                   payload_type="application/vnd.in-toto+json"):
    """Writes a bundle over statement signed with the openssl CLI: the
    crafted statements a signer could make, to see the verifier refuse them."""
    payload = json.dumps(statement).encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(),
                                   len(payload), payload)
    (tmp_path / "pae").write_bytes(pae)
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", private_key,
                          tmp_path / "pae"], check=True,
                         capture_output=True).stdout
    bundle = {
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "x"}},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode(),
            "payloadType": payload_type,
            "signatures": [{"sig": base64.b64encode(der).decode(),
                            "keyid": ""}]}}
    Path(signature).write_text(json.dumps(bundle))


# perch sign / perch verify

def test_sign_and_verify(model, keys):
    private, public = keys["site"]
    signed = perch("sign", model, "--key", private)
    assert signed.returncode == 0, signed.stderr
    assert (model / "model.sig").is_file()
    verified = perch("verify", model, "--key", public)
    assert verified.returncode == 0, verified.stderr
    statement = payload_of(model / "model.sig")
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == ["labels/names.txt", "model.onnx"]
    digest = statement["subject"][0]["digest"]["sha256"]
    assert f"sha256:{digest}" in verified.stdout
    # The root digest is the sha256 of the file digests, in order.
    files = b"".join(hashlib.sha256((model / n).read_bytes()).digest()
                     for n in names)
    assert hashlib.sha256(files).hexdigest() == digest


def test_verify_refusals(model, keys, tmp_path):
    private, public = keys["site"]
    assert perch("verify", model, "--key", public).returncode == 1
    assert_refused(perch("verify", model, "--key", public), "not signed")
    assert perch("sign", model, "--key", private).returncode == 0

    assert_refused(perch("verify", model, "--key", keys["other"][1]),
                   "does not verify with any trusted key")
    # A private key where the public one belongs.
    assert_refused(perch("verify", model, "--key", private),
                   "is a private key")

    (model / "extra.bin").write_bytes(b"x")
    assert_refused(perch("verify", model, "--key", public),
                   '"extra.bin" is not covered')
    assert perch("verify", model, "--key", public, "--ignore-paths",
                 model / "extra.bin").returncode == 0
    (model / "extra.bin").unlink()

    data = bytearray((model / "model.onnx").read_bytes())
    data[-1] ^= 1
    (model / "model.onnx").write_bytes(bytes(data))
    assert_refused(perch("verify", model, "--key", public),
                   '"model.onnx" does not match its signature')
    data[-1] ^= 1
    (model / "model.onnx").write_bytes(bytes(data))
    assert perch("verify", model, "--key", public).returncode == 0

    (model / "labels" / "names.txt").unlink()
    assert_refused(perch("verify", model, "--key", public),
                   'signed file "labels/names.txt" is missing')
    (model / "labels" / "names.txt").write_text("a\nb\n")

    (model / "alias.onnx").symlink_to("model.onnx")
    assert_refused(perch("verify", model, "--key", public),
                   '"alias.onnx" is a symlink')
    assert_refused(perch("sign", model, "--key", private), "is a symlink")


@pytest.mark.parametrize("change, reason", [
    (lambda s: s["predicate"]["resources"][0].update(name="../escape"),
     "with '..'"),
    (lambda s: s["predicate"]["resources"][0].update(name="/etc/passwd"),
     "with a leading '/'"),
    (lambda s: s["predicate"]["serialization"].update(method="shards"),
     '"shards" serialization'),
    (lambda s: s.update(predicateType="https://sigstore.dev/cosign/sign/v1"),
     "predicate type"),
    (lambda s: s["subject"][0]["digest"].update(sha256="0" * 64),
     "root digest does not match"),
])
def test_refuses_crafted_statements(model, keys, tmp_path, change, reason):
    private, public = keys["site"]
    assert perch("sign", model, "--key", private).returncode == 0
    statement = payload_of(model / "model.sig")
    change(statement)
    sign_statement(statement, private, model / "model.sig", tmp_path)
    assert_refused(perch("verify", model, "--key", public), reason)


def test_refuses_another_payload_type(model, keys, tmp_path):
    private, public = keys["site"]
    assert perch("sign", model, "--key", private).returncode == 0
    statement = payload_of(model / "model.sig")
    # The openssl-made bundle verifies unchanged...
    sign_statement(statement, private, model / "model.sig", tmp_path)
    assert perch("verify", model, "--key", public).returncode == 0
    # ...and not under another payload type.
    sign_statement(statement, private, model / "model.sig", tmp_path,
                   payload_type="application/json")
    assert_refused(perch("verify", model, "--key", public),
                   'payload type is "application/json"')


def test_single_file_model(model, keys):
    private, public = keys["site"]
    onnx_file = model / "model.onnx"
    assert perch("sign", onnx_file, "--key", private,
                 "--signature", model / "file.sig").returncode == 0
    assert perch("verify", onnx_file, "--key", public,
                 "--signature", model / "file.sig").returncode == 0
    onnx_file.write_bytes(onnx_file.read_bytes() + b"\0")
    assert_refused(perch("verify", onnx_file, "--key", public,
                         "--signature", model / "file.sig"),
                   "does not match its signature")


# The reference implementation's folders

@pytest.mark.parametrize("folder", INTEROP_FOLDERS)
def test_verifies_the_reference_signers_folders(folder, tmp_path, keys):
    key = INTEROP / "signing-key-pub.pem"
    result = perch("verify", INTEROP / folder, "--key", key,
                   "--ignore-paths", INTEROP / folder / "ignore-me")
    assert result.returncode == 0, result.stderr
    assert INTEROP_ROOT in result.stdout
    assert_refused(perch("verify", INTEROP / folder, "--key", keys["site"][1],
                         "--ignore-paths", "ignore-me"),
                   "does not verify with any trusted key")

    copy = tmp_path / folder
    shutil.copytree(INTEROP / folder, copy)
    for path in copy.iterdir():
        path.chmod(0o644)
    original = (copy / "signme-1").read_bytes()
    (copy / "signme-1").write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert_refused(perch("verify", copy, "--key", key, "--ignore-paths",
                         "ignore-me"), '"signme-1" does not match')
    (copy / "signme-1").write_bytes(original)
    assert perch("verify", copy, "--key", key, "--ignore-paths",
                 "ignore-me").returncode == 0
    (copy / "unsigned").write_text("x")
    assert_refused(perch("verify", copy, "--key", key, "--ignore-paths",
                         "ignore-me"), '"unsigned" is not covered')


# The trust policy of the agent

def repo_with(tmp_path, versions):
    repo = tmp_path / "repo"
    for version in versions:
        shutil.copytree(TEST_MODELS / "multi_version" / str(version),
                        repo / "m" / str(version))
    return repo


def index(server):
    response = server.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    return {(row["name"], row.get("version")): row for row in response.json()}


def test_trusted_signed_model_serves_and_names_its_digest(
        servers, tmp_path, keys, grpc_stubs):
    private, public = keys["site"]
    repo = repo_with(tmp_path, [1])
    assert perch("sign", repo / "m" / "1", "--key", private).returncode == 0
    root = "sha256:" + payload_of(
        repo / "m" / "1" / "model.sig")["subject"][0]["digest"]["sha256"]
    server = servers.start(repo=repo, args=["--trust-key", public])
    response = server.infer("m", X_REQUEST)
    assert response.status_code == 200, response.text
    assert response.json()["parameters"]["perch.digest"] == root
    client = connect(grpc_stubs, server)
    try:
        answer = client.call("ModelInfer", infer_request(
            client.pb, "m", [typed_input(client.pb, "INPUT0", X, "FP32")]))
        assert answer.parameters["perch.digest"].string_param == root
    finally:
        client.close()


def test_pulled_answers_name_the_manifest_digest(tmp_path):
    registry = Registry(tmp_path / "registry").start()
    try:
        repo = repo_with(tmp_path, [1])
        ref = f"{registry.host}/models/m:1"
        digest = digest_of(perch("push", repo / "m", ref).stdout)
        server = model_server(tmp_path, [ref], tmp_path / "state").start()
        try:
            answer = server.infer("m", X_REQUEST)
            assert answer.status_code == 200, answer.text
            assert answer.json()["parameters"]["perch.digest"] == digest
        finally:
            assert server.stop() == 0
    finally:
        registry.stop()


def test_mqtt_answers_name_the_artifact(servers, tmp_path, keys):
    private, public = keys["site"]
    repo = repo_with(tmp_path, [1])
    assert perch("sign", repo / "m" / "1", "--key", private).returncode == 0
    root = "sha256:" + payload_of(
        repo / "m" / "1" / "model.sig")["subject"][0]["digest"]["sha256"]
    broker = Broker(tmp_path / "broker").start()
    try:
        start_agent(servers, broker, "lab", "d1", repo=repo,
                    state=tmp_path / "state", extra=["--trust-key", public])
        client = Client(broker.port).connect()
        try:
            wait_online(client, "lab", "d1")
            client.replies = unique("replies/")
            client.subscribe(client.replies + "/#")
            answer = ask(client, "perch/lab/d1/infer/m", X_REQUEST)
            assert answer.json()["parameters"]["perch.digest"] == root
        finally:
            client.close()
    finally:
        broker.stop()


def test_unsigned_and_tampered_versions_never_serve(servers, tmp_path, keys):
    private, public = keys["site"]
    repo = repo_with(tmp_path, [1])
    assert perch("sign", repo / "m" / "1", "--key", private).returncode == 0
    server = servers.start(repo=repo, args=["--trust-key", public,
                                            "--poll", POLL_SECONDS])
    assert server.infer("m", X_REQUEST).status_code == 200

    # An unsigned version 2: refused, and version 1 keeps serving.
    shutil.copytree(TEST_MODELS / "multi_version" / "2", repo / "m" / "2")
    wait_for(lambda: ("m", "2") in index(server)
             and index(server)[("m", "2")]["state"] == "UNAVAILABLE",
             RELOAD_TIMEOUT)
    assert "unsigned" in index(server)[("m", "2")]["reason"]
    ready = server.get("/v2/models/m/versions/2/ready")
    assert ready.status_code == 503
    assert "refused by the trust policy, unsigned" in ready.json()["error"]
    answer = server.infer("m", X_REQUEST)
    assert answer.status_code == 200, answer.text
    assert answer.json()["model_version"] == "1"
    assert "refused by the trust policy" in server.logs()

    # Signed by another key: still refused, with that reason.
    assert perch("sign", repo / "m" / "2", "--key",
                 keys["other"][0]).returncode == 0
    wait_for(lambda: "does not verify with any trusted key"
             in index(server)[("m", "2")].get("reason", ""), RELOAD_TIMEOUT)
    assert server.infer("m", X_REQUEST).json()["model_version"] == "1"

    # Signed by the trusted key: version 2 takes over.
    assert perch("sign", repo / "m" / "2", "--key", private).returncode == 0
    wait_for(lambda: server.infer("m", X_REQUEST).json()["model_version"]
             == "2", RELOAD_TIMEOUT)

    # A changed byte of the serving copy: refused, and 2 keeps serving.
    model_file = repo / "m" / "2" / "model.onnx"
    model_file.write_bytes(model_file.read_bytes() + b"\0")
    wait_for(lambda: "does not match its signature"
             in index(server)[("m", "2")].get("reason", ""), RELOAD_TIMEOUT)
    assert server.infer("m", X_REQUEST).json()["model_version"] == "2"


def test_trust_folder_in_state(servers, tmp_path, keys):
    private, public = keys["site"]
    state = tmp_path / "state"
    (state / "trust").mkdir(parents=True)
    shutil.copy(public, state / "trust" / "site.pem")
    repo = repo_with(tmp_path, [1])
    server = servers.start(repo=repo, args=["--state", state])
    assert server.infer("m", X_REQUEST).status_code == 503
    row = index(server)[("m", "1")]
    assert row["state"] == "UNAVAILABLE"
    assert "unsigned" in row["reason"]
    metadata = server.get("/v2/models/m")
    assert "refused by the trust policy" in metadata.text


def test_bad_trust_key_stops_the_agent(tmp_path, keys):
    repo = repo_with(tmp_path, [1])
    result = perch("serve", "--repo", repo, "--trust-key", keys["site"][0],
                   "--check-config")
    assert_refused(result, "is a private key")
    result = perch("serve", "--repo", repo, "--trust-key",
                   tmp_path / "missing.pem", "--check-config")
    assert_refused(result, "missing.pem")


# Fleet agents: a deployment that requires a signature, and trust keys

def test_fleet_agents_refuse_unsigned_models(hubs, tmp_path, keys):
    hub = hubs.start()
    repo = make_scorer_repo(tmp_path / "models")
    reference = push_scorer(hub, repo, hub.host, 1)
    # Two locations: in one, the agents would answer for each other
    # (network local), and the trusting one would forward to the other.
    url = f"http://127.0.0.1:{hub.port}"
    plain = fleet_agent(tmp_path, url, create_location(hub, "site"), "plain",
                        tmp_path / "state-plain")
    trusting = fleet_agent(tmp_path, url, create_location(hub, "site-b"), "trusting",
                           tmp_path / "state-trusting")
    trusting.command += ["--trust-key", str(keys["site"][1])]
    plain.start()
    trusting.start()
    try:
        wait_for(lambda: len(hub.request("GET", "/api/v1/devices").json())
                 == 2, 30)

        def errors(name):
            return " ".join(device_report(hub, name).get(
                "heartbeat", {}).get("errors", []))

        def signatures(name):
            """The signature state each model of the heartbeat reports."""
            return sorted((m["version"], m["state"], m.get("signature", {}).get("state"))
                          for m in device_report(hub, name).get("heartbeat", {}).get(
                              "models", []))

        # Required by the deployment: refused even without trust keys.
        admin(hub, "deploy", reference, "--name", "scorer",
              "--require-signature")
        wait_for(lambda: "requires a signature" in errors("plain"), 30,
                 what=lambda: errors("plain"))
        assert score(plain) is None
        assert signatures("plain") == [(1, "FAILED", "refused")]
        # Not required: the agent without keys serves it; the one with a
        # trust key refuses it, and says why.
        admin(hub, "deploy", reference, "--name", "scorer")
        wait_for(lambda: score(plain) == 11.0, 30)
        wait_for(lambda: "refused by the trust policy, unsigned"
                 in errors("trusting"), 30, what=lambda: errors("trusting"))
        assert score(trusting) is None
        wait_for(lambda: signatures("plain") == [(1, "READY", "unsigned")], 30,
                 what=lambda: signatures("plain"))
        assert signatures("trusting") == [(1, "FAILED", "refused")]
        status = admin(hub, "status").stdout
        assert "refused by the trust policy" in status, status
    finally:
        for agent in (plain, trusting):
            assert agent.stop() == 0
