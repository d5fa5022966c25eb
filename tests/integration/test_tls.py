"""REST and gRPC over TLS and mutual TLS, with certificates made by the
openssl CLI: TLS works, plain HTTP to the TLS port is refused, a client
without the CA refuses the server, mutual TLS refuses a client without a
certificate."""

import socket
import ssl
import subprocess

import grpc
import pytest
import requests

from grpc_oip import grpc_stubs  # noqa: F401 (fixture)
from harness import REQUEST_TIMEOUT, PerchServer, copy_models


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and localhost, a client
    certificate signed by the CA, and a second, unrelated CA."""
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                "-subj", f"/CN=perch test {ca}", "-keyout", d / f"{ca}.key",
                "-out", d / f"{ca}.pem")
    extensions = {"server": "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
                  "client": "extendedKeyUsage=clientAuth\n"}
    for name, extension in extensions.items():
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", d / f"{name}.key", "-out", d / f"{name}.csr")
        (d / f"{name}.ext").write_text(extension)
        openssl("x509", "-req", "-in", d / f"{name}.csr", "-CA", d / "ca.pem",
                "-CAkey", d / "ca.key", "-CAcreateserial", "-days", "2",
                "-extfile", d / f"{name}.ext", "-out", d / f"{name}.pem")
    return d


class TlsServer(PerchServer):
    """perch serve over HTTPS; requests trust `ca` and present `client`."""

    def __init__(self, repo, workdir, args, ca, client=None):
        super().__init__(repo, workdir, args)
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = str(ca)
        self.client = client

    def get(self, path, **kwargs):
        kwargs.setdefault("verify", self.ca)
        kwargs.setdefault("cert", self.client)
        return super().get(path, **kwargs)

    def post(self, path, **kwargs):
        kwargs.setdefault("verify", self.ca)
        kwargs.setdefault("cert", self.client)
        return super().post(path, **kwargs)


@pytest.fixture
def start_tls(tmp_path_factory, certs):
    started = []

    def start(mutual=False):
        workdir = tmp_path_factory.mktemp("perch")
        repo = copy_models(workdir / "repo", ["identity_fp32"])
        args = ["--tls-cert", certs / "server.pem", "--tls-key", certs / "server.key",
                "--state", workdir / "state"]
        client = None
        if mutual:
            args += ["--tls-client-ca", certs / "ca.pem"]
            client = (str(certs / "client.pem"), str(certs / "client.key"))
        server = TlsServer(repo, workdir, args, certs / "ca.pem", client).start()
        started.append(server)
        return server

    yield start
    for server in started:
        assert server.stop() == 0, server.logs()


INFER = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2],
                     "data": [1.5, -2.0]}]}


def test_rest_over_tls(start_tls):
    server = start_tls()
    assert server.get("/v2/health/ready").status_code == 200
    response = server.post("/v2/models/identity_fp32/infer", json=INFER)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [1.5, -2.0]


def test_plain_http_to_the_tls_port_is_refused(start_tls):
    server = start_tls()
    with socket.create_connection(("127.0.0.1", server.port),
                                  timeout=REQUEST_TIMEOUT) as plain:
        plain.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = plain.recv(4096)
    assert not answer.startswith(b"HTTP/"), answer[:100]
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{server.port}/v2/health/ready",
                     timeout=REQUEST_TIMEOUT)
    server.assert_alive()


def test_a_client_without_the_ca_refuses_the_server(start_tls, certs):
    server = start_tls()
    with pytest.raises(requests.exceptions.SSLError):
        server.get("/v2/health/ready", verify=str(certs / "other-ca.pem"))
    with pytest.raises(requests.exceptions.SSLError):
        server.get("/v2/health/ready", verify=True)  # the system's CAs


def test_mutual_tls_refuses_a_client_without_a_certificate(start_tls, certs):
    server = start_tls(mutual=True)
    assert server.get("/v2/health/ready").status_code == 200
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        server.get("/v2/health/ready", cert=None)
    # A certificate the CA did not sign is refused too.
    other = (str(certs / "other-ca.pem"), str(certs / "other-ca.key"))
    with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
        server.get("/v2/health/ready", cert=other)
    server.assert_alive()


def grpc_channel(server, certs, client=False):
    options = {"root_certificates": (certs / "ca.pem").read_bytes()}
    if client:
        options["private_key"] = (certs / "client.key").read_bytes()
        options["certificate_chain"] = (certs / "client.pem").read_bytes()
    return grpc.secure_channel(server.grpc_target, grpc.ssl_channel_credentials(**options))


def test_grpc_over_tls(start_tls, certs, grpc_stubs):  # noqa: F811
    server = start_tls()
    with grpc_channel(server, certs) as channel:
        stub = grpc_stubs.pb_grpc.GRPCInferenceServiceStub(channel)
        ready = stub.ServerReady(grpc_stubs.pb.ServerReadyRequest(), timeout=REQUEST_TIMEOUT)
        assert ready.ready
    with grpc.insecure_channel(server.grpc_target) as plain:
        stub = grpc_stubs.pb_grpc.GRPCInferenceServiceStub(plain)
        with pytest.raises(grpc.RpcError) as failure:
            stub.ServerReady(grpc_stubs.pb.ServerReadyRequest(), timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


def test_grpc_mutual_tls(start_tls, certs, grpc_stubs):  # noqa: F811
    server = start_tls(mutual=True)
    with grpc_channel(server, certs, client=True) as channel:
        stub = grpc_stubs.pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(grpc_stubs.pb.ServerLiveRequest(),
                               timeout=REQUEST_TIMEOUT).live
    with grpc_channel(server, certs) as channel:
        stub = grpc_stubs.pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as failure:
            stub.ServerLive(grpc_stubs.pb.ServerLiveRequest(), timeout=5)
        assert failure.value.code() == grpc.StatusCode.UNAVAILABLE


def test_check_config_names_a_key_that_does_not_match(certs, tmp_path):
    from harness import PERCH_BIN
    repo = tmp_path / "repo"
    repo.mkdir()
    result = subprocess.run(
        [str(PERCH_BIN), "serve", "--repo", str(repo), "--check-config",
         "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "client.key")],
        capture_output=True, text=True, timeout=REQUEST_TIMEOUT)
    assert result.returncode != 0
    assert "client.key" in result.stderr and "does not belong" in result.stderr
    result = subprocess.run(
        [str(PERCH_BIN), "serve", "--repo", str(repo), "--check-config",
         "--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(certs / "server.key")],
        capture_output=True, text=True, timeout=REQUEST_TIMEOUT)
    assert result.returncode != 0
    assert "missing.pem" in result.stderr
    result = subprocess.run(
        [str(PERCH_BIN), "serve", "--repo", str(repo), "--check-config",
         "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key"),
         "--tls-client-ca", str(certs / "ca.pem")],
        capture_output=True, text=True, timeout=REQUEST_TIMEOUT)
    assert result.returncode == 0, result.stderr


def test_ssl_module_agrees(start_tls, certs):
    """The standard library's client, with hostname checking, accepts the
    server for both of its names."""
    server = start_tls()
    context = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    for name in ("127.0.0.1", "localhost"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=REQUEST_TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                tls.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                assert tls.recv(4096).startswith(b"HTTP/1.1 200")
