"""--ca-file: perch's clients over https, trusting a CA made here with the
openssl CLI. push / pull / ls against Distribution serving TLS; infer, perf
and the fleet commands against an agent and a hub behind a TLS front. With
the CA they work; without it they refuse the server, naming the
certificate problem, and exit non-zero (never hang: every command runs
under a timeout that fails the test)."""

import os
import select
import shutil
import socket
import ssl
import subprocess
import threading

import numpy as np
import pytest

from fleet_harness import create_location, fleet_agent
from harness import PERCH_BIN, WAKEWORD_MODELS, wait_for
from registry_harness import Registry, digest_of, files_of, perch

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"
COMMAND_TIMEOUT = 60
UNTRUSTED = "not signed by a trusted CA"


def openssl(*args):
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_certificates(folder, addresses):
    """A CA (ca.pem) and a server certificate it signed (server.pem,
    server.key) for the IP addresses given."""
    folder.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", folder / "ca.key",
            "-out", folder / "ca.pem", "-days", "2", "-subj", "/CN=perch test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", folder / "server.key",
            "-out", folder / "server.csr", "-subj", f"/CN={addresses[0]}")
    (folder / "server.ext").write_text(
        "subjectAltName=" + ",".join(f"IP:{a}" for a in addresses) + "\n")
    openssl("x509", "-req", "-in", folder / "server.csr", "-CA", folder / "ca.pem",
            "-CAkey", folder / "ca.key", "-CAcreateserial", "-out", folder / "server.pem",
            "-days", "2", "-extfile", folder / "server.ext")
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


# 127.0.0.1 written as one number. perch talks plain HTTP to registries it
# can tell are loopback by their name (localhost, 127.*, [::1]), as Docker
# does; this name it cannot, so it speaks https to a registry that is still
# on this machine's loopback (and so is every byte the tests send).
LOOPBACK_AS_NUMBER = "2130706433"


class TlsFront:
    """Serves TLS on a loopback port and relays the decrypted bytes to a
    perch server's plain-HTTP port: https for the agent and the hub, whose
    own TLS listeners are tested elsewhere."""

    def __init__(self, upstream_port, cert, key):
        self.upstream_port = upstream_port
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(connection,), daemon=True).start()

    def _relay(self, connection):
        connection.settimeout(10)
        try:
            secure = self.context.wrap_socket(connection, server_side=True)
        except (OSError, ssl.SSLError):
            connection.close()  # a client that refused our certificate
            return
        secure.settimeout(None)
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        # One thread per connection: an SSL object must not be read and
        # written from two threads at once.
        try:
            while True:
                readable = [secure] if secure.pending() else \
                    select.select([secure, upstream], [], [], 60)[0]
                if not readable:
                    return
                for source in readable:
                    sink = upstream if source is secure else secure
                    try:
                        data = source.recv(65536)
                    except ssl.SSLWantReadError:
                        continue
                    if not data:
                        return
                    sink.sendall(data)
        except OSError:
            return
        finally:
            secure.close()
            upstream.close()

    def stop(self):
        self.stopped = True
        self.listener.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory):
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"), ["127.0.0.1"])
    return {"ca": ca, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, certificates):
    registry = Registry(tmp_path_factory.mktemp("registry"), name=LOOPBACK_AS_NUMBER,
                        cert=certificates["cert"], key=certificates["key"],
                        ca=certificates["ca"]).start()
    yield registry
    registry.stop()


def run(*args, env=None):
    return perch(*args, check=False, timeout=COMMAND_TIMEOUT, env=env)


def refused_for_the_certificate(result):
    assert result.returncode != 0, result.stdout
    assert UNTRUSTED in result.stderr, result.stderr
    assert "--ca-file" in result.stderr, result.stderr
    return result.stderr


def test_push_and_pull_over_https_with_the_ca_file(registry, certificates, tmp_path):
    source = tmp_path / "src" / "hey_jarvis"
    (source / "1").mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, source / "1" / "model.onnx")
    ref = f"{registry.host}/wakeword/hey_jarvis:1"
    ca = certificates["ca"]

    pushed = run("push", source, ref, "--ca-file", ca)
    assert pushed.returncode == 0, pushed.stderr
    digest = digest_of(pushed.stdout)

    out = tmp_path / "out"
    pulled = run("pull", ref, "--to", out, "--cache", tmp_path / "cache", "--ca-file", ca)
    assert pulled.returncode == 0, pulled.stderr
    assert digest_of(pulled.stdout) == digest
    files = files_of(out / "hey_jarvis" / "1")
    assert files["model.onnx"] == HEY_JARVIS.read_bytes()

    # PERCH_CA_FILE does what --ca-file does.
    listed = run("ls", f"{registry.host}/wakeword/hey_jarvis",
                 env={**os.environ, "PERCH_CA_FILE": str(ca)})
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["1"]


def test_without_the_ca_the_registry_is_refused_naming_the_certificate(registry, tmp_path):
    source = tmp_path / "src" / "hey_jarvis"
    (source / "1").mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, source / "1" / "model.onnx")
    ref = f"{registry.host}/wakeword/other:1"
    message = refused_for_the_certificate(run("push", source, ref))
    assert f"registry {registry.host}" in message
    refused_for_the_certificate(run("pull", ref, "--to", tmp_path / "out",
                                    "--cache", tmp_path / "cache"))
    refused_for_the_certificate(run("ls", registry.host))


def test_another_ca_is_refused_too(registry, tmp_path):
    other_ca, _, _ = make_certificates(tmp_path / "other", ["127.0.0.1"])
    refused_for_the_certificate(run("ls", registry.host, "--ca-file", other_ca))


def test_plain_http_to_the_tls_registry_says_what_it_got(registry):
    result = run("ls", registry.host, "--insecure")
    assert result.returncode != 0
    assert "HTTP request to an HTTPS server" in result.stderr, result.stderr


def test_a_plain_registry_beyond_loopback_is_refused_saying_insecure(
        registry, certificates, tmp_path):
    plain = Registry(tmp_path, name=LOOPBACK_AS_NUMBER).start()
    try:
        result = run("ls", plain.host)
        assert result.returncode != 0
        assert "TLS handshake failed" in result.stderr, result.stderr
        assert "needs --insecure" in result.stderr, result.stderr
        assert run("ls", plain.host, "--insecure").returncode == 0
    finally:
        plain.stop()


def test_a_ca_file_that_does_not_exist_is_a_flag_error(tmp_path):
    result = run("ls", "127.0.0.1:1", "--ca-file", tmp_path / "absent.pem")
    assert result.returncode != 0
    assert "--ca-file" in result.stderr and "absent.pem" in result.stderr, result.stderr


@pytest.fixture(scope="module")
def agent_front(module_servers, certificates):
    server = module_servers.start(["add_sub"])
    front = TlsFront(server.port, str(certificates["cert"]), str(certificates["key"]))
    yield front
    front.stop()


def infer(url, tmp_path, *args):
    a = np.arange(4, dtype=np.float32).reshape(1, 4)
    np.save(tmp_path / "a.npy", a)
    return subprocess.run(
        [str(PERCH_BIN), "infer", "add_sub", "--url", url, "--input",
         f"INPUT0={tmp_path / 'a.npy'}", "--input", f"INPUT1={tmp_path / 'a.npy'}", *args],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT)


def test_infer_and_perf_over_https(agent_front, certificates, tmp_path):
    ca = str(certificates["ca"])
    answered = infer(agent_front.url, tmp_path, "--ca-file", ca)
    assert answered.returncode == 0, answered.stderr
    assert '"model_name": "add_sub"' in answered.stdout

    message = refused_for_the_certificate(infer(agent_front.url, tmp_path))
    assert agent_front.url in message

    measured = subprocess.run(
        [str(PERCH_BIN), "perf", "add_sub", "--url", agent_front.url, "--ca-file", ca,
         "--concurrency", "2", "--duration", "300ms", "--warmup", "0s", "--json"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    assert measured.returncode == 0, measured.stderr
    assert '"errors": 0' in measured.stdout

    refused = subprocess.run(
        [str(PERCH_BIN), "perf", "add_sub", "--url", agent_front.url, "--duration", "100ms"],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    refused_for_the_certificate(refused)


def test_fleet_commands_over_https(hubs, certificates):
    hub = hubs.start()
    front = TlsFront(hub.port, str(certificates["cert"]), str(certificates["key"]))
    try:
        for command in (["locations"], ["devices"], ["deployments"], ["status"]):
            listed = run(*command, "--hub", front.url, "--token", hub.admin_token,
                         "--ca-file", certificates["ca"])
            assert listed.returncode == 0, (command, listed.stderr)
        message = refused_for_the_certificate(
            run("locations", "--hub", front.url, "--token", hub.admin_token))
        assert f"hub {front.url}" in message
    finally:
        front.stop()


def test_an_agent_takes_its_models_from_an_https_hub_with_the_ca_file(
        hubs, certificates, tmp_path):
    hub = hubs.start()
    enrolment = create_location(hub, "tls-site")
    front = TlsFront(hub.port, str(certificates["cert"]), str(certificates["key"]))
    trusting = fleet_agent(tmp_path, front.url, enrolment, "trusting", tmp_path / "state-1")
    trusting.command += ["--ca-file", str(certificates["ca"])]
    refusing = fleet_agent(tmp_path, front.url, enrolment, "refusing", tmp_path / "state-2")
    try:
        trusting.start()
        refusing.start()

        def enrolled():
            listed = hub.request("GET", "/api/v1/devices")
            return listed.status_code == 200 and \
                "trusting" in [d["name"] for d in listed.json()]
        wait_for(enrolled, 30, what=lambda: "the agent with --ca-file to enrol over https\n"
                 + trusting.logs())
        wait_for(lambda: UNTRUSTED in refusing.logs(), 30,
                 what=lambda: "the agent without the CA to say why it cannot reach the hub\n"
                 + refusing.logs())
        assert "--ca-file" in refusing.logs()
        names = [d["name"] for d in hub.request("GET", "/api/v1/devices").json()]
        assert "refusing" not in names
    finally:
        for agent in (trusting, refusing):
            if agent.process is not None:
                assert agent.stop() == 0, agent.logs()
        front.stop()
