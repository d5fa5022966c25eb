"""A real OCI registry (Distribution, /usr/bin/docker-registry) for the
store tests, the `perch` client commands, and two test tools that play a
registry going wrong: a proxy that cuts blob downloads in the middle, and
a server that sends bad content on purpose."""

import hashlib
import http.server
import json
import signal
import socketserver
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import requests

from harness import PERCH_BIN, PerchServer, WaitTimeout, free_port, wait_for

REGISTRY_BIN = Path("/usr/bin/docker-registry")
SKOPEO_BIN = Path("/usr/bin/skopeo")
REGISTRY_READY_TIMEOUT = 20
COMMAND_TIMEOUT = 120

CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {host}
"""
# The URL the registry writes into the Location of its answers: the name
# clients use, which need not be the address it listens on.
HOST_CONFIG = """  host: {url}
"""
TLS_CONFIG = """  tls:
    certificate: {cert}
    key: {key}
"""


class Registry:
    """One Distribution registry on a free loopback port, storage in tmp;
    https with `cert` and `key` (a certificate for 127.0.0.1 that `ca`
    signed). Clients name it `name` (127.0.0.1 unless given)."""

    def __init__(self, workdir, port=None, name="127.0.0.1", cert=None, key=None, ca=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.host = f"{name}:{self.port}"
        self.url = f"{'https' if cert else 'http'}://127.0.0.1:{self.port}"
        self.cert, self.key, self.ca = cert, key, ca
        self.process = None

    def start(self):
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        config.write_text(CONFIG.format(root=self.workdir / "storage",
                                        host=f"127.0.0.1:{self.port}")
                          + HOST_CONFIG.format(url=f"{self.url.split(':')[0]}://{self.host}")
                          + (TLS_CONFIG.format(cert=self.cert, key=self.key) if self.cert else ""))
        self._log = open(self.workdir / "registry.log", "ab")
        self.process = subprocess.Popen(
            [str(REGISTRY_BIN), "serve", str(config)],
            stdout=self._log, stderr=self._log)
        try:
            wait_for(self._ready, REGISTRY_READY_TIMEOUT)
        except WaitTimeout:
            self.stop()
            pytest.fail("Distribution did not answer /v2/ in time:\n"
                        + (self.workdir / "registry.log").read_text())
        return self

    def _ready(self):
        if self.process.poll() is not None:
            pytest.fail("Distribution exited:\n"
                        + (self.workdir / "registry.log").read_text())
        try:
            return requests.get(self.url + "/v2/", timeout=1,
                                verify=str(self.ca) if self.ca else True).status_code == 200
        except requests.RequestException:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process:
            self._log.close()


def perch(*args, timeout=COMMAND_TIMEOUT, check=True, env=None):
    """Runs the perch binary; returns the CompletedProcess (text)."""
    result = subprocess.run([str(PERCH_BIN), *map(str, args)],
                            capture_output=True, text=True, timeout=timeout,
                            env=env)
    if check and result.returncode != 0:
        pytest.fail(f"perch {' '.join(map(str, args))} exited "
                    f"{result.returncode}\nstdout: {result.stdout}\n"
                    f"stderr: {result.stderr}")
    return result


def digest_of(output):
    """The `digest: sha256:...` line perch push / pull / tag print."""
    for line in output.splitlines():
        if line.startswith("digest: "):
            return line.split()[1]
    pytest.fail(f"no digest in perch's output:\n{output}")


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def files_of(folder):
    """{relative path: bytes} of every file under folder."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


class _ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class _Tool:
    """A small HTTP server on a free loopback port, run in a thread."""

    def __init__(self, handler):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.server = _ThreadingServer(("127.0.0.1", self.port), handler)
        self.server.tool = self
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       daemon=True)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _forward(self, method):
        tool = self.server.tool
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "content-length")}
        if "/blobs/sha256:" in self.path and method == "GET":
            tool.blob_requests.append((self.path, self.headers.get("Range")))
        upstream = requests.request(method, tool.upstream + self.path,
                                    headers=headers, data=body,
                                    allow_redirects=False, stream=True,
                                    timeout=30)
        content = upstream.raw.read() if method != "HEAD" else b""
        self.send_response(upstream.status_code)
        for key, value in upstream.headers.items():
            if key.lower() in ("transfer-encoding", "connection",
                               "content-length"):
                continue
            self.send_header(key, value)
        declared = upstream.headers.get("Content-Length")
        self.send_header("Content-Length",
                         declared if method == "HEAD" else str(len(content)))
        cut = (method == "GET" and "/blobs/sha256:" in self.path
               and tool.cuts_left > 0 and len(content) > tool.cut_at)
        if cut:
            tool.cuts_left -= 1
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(content[:tool.cut_at])
            self.wfile.flush()
            self.close_connection = True
            return
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(content)

    def do_GET(self):
        self._forward("GET")

    def do_HEAD(self):
        self._forward("HEAD")


class CuttingProxy(_Tool):
    """Forwards to a registry; cuts the first `cuts` blob downloads longer
    than cut_at after cut_at bytes (the connection just closes), and
    records the Range header of every blob request."""

    def __init__(self, upstream, cut_at, cuts=1):
        super().__init__(_ProxyHandler)
        self.upstream = upstream
        self.cut_at = cut_at
        self.cuts_left = cuts
        self.blob_requests = []


class _BrokenHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", headers=None, declared=None):
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length",
                         str(len(body) if declared is None else declared))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        tool = self.server.tool
        if self.path == "/v2/":
            self._send(200, b"{}")
            return
        parts = self.path.split("/")
        if "manifests" in parts:
            manifest = tool.manifests.get(parts[-1])
            if manifest is None:
                self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
                return
            self._send(200, manifest, {
                "Content-Type": "application/vnd.oci.image.manifest.v1+json",
                "Docker-Content-Digest": sha256(manifest)})
            return
        if "blobs" in parts:
            digest = parts[-1]
            blob = tool.blobs.get(digest)
            if blob is None:
                self._send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
                return
            fault = tool.faults.get(digest)
            if fault == "bitflip":
                blob = bytes([blob[0] ^ 1]) + blob[1:]
            elif fault == "truncate":
                # The body ends early and the connection closes.
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(blob[:len(blob) // 2])
                self.close_connection = True
                return
            elif fault == "extra":
                blob = blob + b"\0" * 4096
            elif fault == "extra_unsized":
                # No Content-Length: only counting the bytes can stop it.
                self.send_response(200)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(blob + b"\0" * (1 << 20))
                self.close_connection = True
                return
            self._send(200, blob)
            return
        self._send(404)


class BrokenRegistry(_Tool):
    """Serves perch model artifacts built here, with faults on request:
    faults[digest] = "bitflip" | "truncate" | "extra" |
    "extra_unsized"."""

    def __init__(self):
        super().__init__(_BrokenHandler)
        self.manifests = {}
        self.blobs = {}
        self.faults = {}

    def add_model(self, tag, name, version, files, inputs, outputs,
                  model_config=None):
        """files: {path: bytes}. Returns the manifest digest."""
        config = {"name": name, "version": version, "platform": "onnx",
                  "architectures": ["amd64", "arm64"],
                  "inputs": inputs, "outputs": outputs}
        if model_config is not None:
            config["model_config"] = model_config
        config_bytes = json.dumps(config).encode()
        self.blobs[sha256(config_bytes)] = config_bytes
        layers = []
        for path, data in files.items():
            self.blobs[sha256(data)] = data
            layers.append({
                "mediaType": "application/vnd.cncf.model.weight.v1.raw",
                "digest": sha256(data), "size": len(data),
                "annotations": {"org.cncf.model.filepath": path,
                                "org.opencontainers.image.title": path}})
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.perch.model.v1",
            "config": {
                "mediaType": "application/vnd.perch.model.config.v1+json",
                "digest": sha256(config_bytes), "size": len(config_bytes)},
            "layers": layers}).encode()
        self.manifests[tag] = manifest
        self.manifests[sha256(manifest)] = manifest
        return sha256(manifest)


def skopeo(*args, timeout=COMMAND_TIMEOUT):
    result = subprocess.run([str(SKOPEO_BIN), *map(str, args)],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        pytest.fail(f"skopeo {' '.join(map(str, args))} exited "
                    f"{result.returncode}\n{result.stderr}")
    return result


def model_server(workdir, references, state, args=()):
    """A PerchServer serving references instead of a repository."""
    server = PerchServer(workdir, workdir, args)
    at = server.command.index("--repo")
    del server.command[at:at + 2]
    for reference in references:
        server.command += ["--model", reference]
    server.command += ["--state", str(state)]
    return server


def jarvis_request():
    rng = np.random.default_rng(7)
    data = rng.uniform(-1, 1, (1, 16, 96)).astype(np.float32)
    return {"inputs": [{"name": "x.1", "shape": [1, 16, 96],
                        "datatype": "FP32", "data": data.ravel().tolist()}]}


def infer(server, model):
    answer = server.infer(model, jarvis_request())
    assert answer.status_code == 200, answer.text
    return answer.json()["outputs"]


def index_row(server, model):
    rows = server.post("/v2/repository/index").json()
    return next(row for row in rows if row["name"] == model)
