"""`perch hub` over TLS (--tls-cert, --tls-key) and mutual TLS
(--tls-client-ca), with certificates made by the `openssl` CLI: the
registry and the fleet API answer over HTTPS, plain HTTP to the port is
refused, a client that does not trust the CA refuses the hub, and skopeo
pushes and pulls through it."""

import json
import shutil
import subprocess

import pytest
import requests

from hub_harness import OCI_MANIFEST, descriptor, sha256

OPENSSL = shutil.which("openssl")
SKOPEO = shutil.which("skopeo")
pytestmark = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def openssl(*args):
    result = subprocess.run([OPENSSL, *map(str, args)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"openssl {' '.join(map(str, args))}:\n{result.stderr}"


def issue(folder, name, ca, extensions):
    """A key and a certificate for `name`, signed by `ca` (a (cert, key) pair)."""
    key, csr, cert = (folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    ext_file = folder / f"{name}.ext"
    ext_file.write_text(extensions)
    openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
            "-subj", f"/CN={name}")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-out", cert, "-days", "2", "-sha256", "-extfile", ext_file)
    return cert, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    ca = (folder / "ca.crt", folder / "ca.key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca[1], "-out", ca[0],
            "-days", "2", "-subj", "/CN=perch test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    server = issue(folder, "hub", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                      "extendedKeyUsage=serverAuth\n")
    client = issue(folder, "device", ca, "extendedKeyUsage=clientAuth\n")
    # Another CA, to stand for a client that was given the wrong one.
    other = (folder / "other.crt", folder / "other.key")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", other[1], "-out",
            other[0], "-days", "2", "-subj", "/CN=some other CA")
    return {"ca": ca[0], "server": server, "client": client, "other_ca": other[0],
            "folder": folder}


def tls_args(certs, client_ca=False):
    args = ["--tls-cert", certs["server"][0], "--tls-key", certs["server"][1]]
    return args + (["--tls-client-ca", certs["ca"]] if client_ca else [])


@pytest.fixture(scope="module")
def hub(module_hubs, certs):
    return module_hubs.start(args=tls_args(certs), ca=certs["ca"])


def test_registry_and_fleet_api_over_https(hub):
    assert hub.url.startswith("https://")
    assert hub.request("GET", "/healthz").json() == {"status": "ok"}
    assert hub.request("GET", "/v2/").status_code == 200
    assert hub.request("GET", "/v2/", token=None).status_code == 401
    assert hub.request("GET", "/api/v1/locations").json() == []
    body, digest = hub.push_image("tls/model", "v1")
    assert hub.request("GET", "/v2/tls/model/manifests/v1").content == body
    layer = hub.request("GET", f"/v2/tls/model/blobs/{sha256(b'layer bytes')}",
                        headers={"Range": "bytes=0-4"})
    assert layer.status_code == 206 and layer.content == b"layer"


def test_plain_http_to_the_tls_port_is_refused(hub):
    """The connection closes without an HTTP answer; HTTPS goes on."""
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{hub.port}/healthz", timeout=5)
    assert hub.request("GET", "/healthz").status_code == 200


def test_a_client_without_the_ca_refuses_the_hub(hub, certs):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(hub.url + "/healthz", timeout=5, verify=str(certs["other_ca"]))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(hub.url + "/healthz", timeout=5)  # the system's CAs only


def test_mutual_tls_needs_a_client_certificate(hubs, certs):
    client = tuple(map(str, certs["client"]))
    hub = hubs.start(args=tls_args(certs, client_ca=True), ca=certs["ca"], client_cert=client)
    assert hub.request("GET", "/healthz").status_code == 200
    assert hub.request("GET", "/api/v1/devices").json() == []
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(hub.url + "/healthz", timeout=5, verify=str(certs["ca"]))
    # A certificate the hub's client CA did not sign is refused too.
    stranger = issue(certs["folder"], "stranger",
                     (certs["other_ca"], certs["folder"] / "other.key"),
                     "extendedKeyUsage=clientAuth\n")
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        requests.get(hub.url + "/healthz", timeout=5, verify=str(certs["ca"]),
                     cert=tuple(map(str, stranger)))


def test_bad_tls_files_are_refused_at_start(hubs, certs, tmp_path):
    from hub_harness import HubServer
    missing = tmp_path / "missing.crt"
    not_a_cert = tmp_path / "garbage.crt"
    not_a_cert.write_text("not a certificate\n")
    for args, says in (
            (["--tls-cert", missing, "--tls-key", certs["server"][1]], "missing.crt"),
            (["--tls-cert", not_a_cert, "--tls-key", certs["server"][1]], "garbage.crt"),
            (["--tls-cert", certs["server"][0], "--tls-key", certs["client"][1]], "key"),
            (["--tls-cert", certs["server"][0]], "--tls-key")):
        hub = HubServer(tmp_path, args)
        result = subprocess.run(hub.command, capture_output=True, text=True, timeout=30)
        assert result.returncode != 0, args
        assert says in result.stderr, (args, result.stderr)


@pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")
def test_skopeo_pushes_and_pulls_over_tls(hub, certs, tmp_path):
    cert_dir = tmp_path / "cert-dir"
    cert_dir.mkdir()
    shutil.copy(certs["ca"], cert_dir / "ca.crt")  # skopeo trusts every *.crt there
    layout = tmp_path / "src"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    config, layer = b'{"name": "tls"}', b"model bytes over TLS" * 1000
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": descriptor("application/vnd.perch.model.config.v1+json", config),
        "layers": [descriptor("application/vnd.perch.model.onnx", layer)]}).encode()
    for blob in (config, layer, manifest):
        (layout / "blobs" / "sha256" / sha256(blob)[7:]).write_bytes(blob)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "manifests": [descriptor(OCI_MANIFEST, manifest, annotations={
            "org.opencontainers.image.ref.name": "v1"})]}))

    remote = f"docker://{hub.host}/tls/skopeo:v1"
    creds = f"perch:{hub.admin_token}"

    def skopeo(*args):
        result = subprocess.run([SKOPEO, *map(str, args)], capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, f"skopeo {args}:\n{result.stderr}"

    skopeo("copy", "--dest-cert-dir", cert_dir, "--dest-creds", creds, f"oci:{layout}:v1",
           remote)
    assert hub.request("GET", "/v2/tls/skopeo/manifests/v1").content == manifest
    skopeo("copy", "--src-cert-dir", cert_dir, remote, f"oci:{tmp_path / 'back'}:v1")
    index = json.loads((tmp_path / "back" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == sha256(manifest)
    assert (tmp_path / "back" / "blobs" / "sha256" / sha256(layer)[7:]).read_bytes() == layer
    # Without the CA, skopeo refuses the hub.
    result = subprocess.run([SKOPEO, "inspect", "--raw", remote], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "certificate" in result.stderr, result.stderr
