"""Runs `perch hub` for the tests and talks to its registry over HTTP.

HubServer is one hub process on a free loopback port with its own data
folder; HubPool starts hubs for a test or a module and checks that each
exits cleanly. Other hub tests (fleet API, agents pulling from a hub) reuse
both.
"""

import hashlib
import json
import signal
import subprocess
from pathlib import Path

import pytest
import requests

from harness import (PERCH_BIN, READY_TIMEOUT, REQUEST_TIMEOUT, STOP_TIMEOUT,
                     WaitTimeout, free_port, wait_for)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type, data, **extra):
    return {"mediaType": media_type, "digest": sha256(data),
            "size": len(data), **extra}


class HubServer:
    """One `perch hub` process. Tokens: admin_token is read from
    DATA/admin-token when the hub generated it. With `ca` (the CA file that
    signed the certificate given in `args`) the hub is reached over HTTPS,
    presenting `client_cert` ((cert, key) files) when set."""

    running = set()

    def __init__(self, workdir, args=(), env=None, data=None, ca=None,
                 client_cert=None):
        self.workdir = Path(workdir)
        self.data = Path(data) if data else self.workdir / "hub-data"
        self.port = free_port()
        self.tls = {"verify": str(ca), "cert": client_cert} if ca else {}
        self.url = f"{'https' if ca else 'http'}://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"
        self.command = [str(PERCH_BIN), "hub", "--data", str(self.data),
                        "--port", str(self.port), *map(str, args)]
        self.env = env
        self.admin_token = None
        self._stderr_path = self.workdir / f"hub-{self.port}.stderr"
        self.process = None

    def start(self):
        with open(self._stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                self.command, stdout=subprocess.DEVNULL, stderr=err,
                env=self.env)
        try:
            wait_for(self._ready_or_exited, READY_TIMEOUT)
        except WaitTimeout:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"perch hub was not ready within {READY_TIMEOUT} s\n"
                        + self.logs())
        if self.process.poll() is not None:
            pytest.fail(f"perch hub exited with status "
                        f"{self.process.returncode} before it was ready\n"
                        + self.logs())
        token_file = self.data / "admin-token"
        if self.admin_token is None and token_file.exists():
            self.admin_token = token_file.read_text().strip()
        HubServer.running.add(self)
        return self

    def _ready_or_exited(self):
        if self.process.poll() is not None:
            return True
        try:
            return requests.get(self.url + "/healthz", timeout=1,
                                **self.tls).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, sig=signal.SIGTERM):
        HubServer.running.discard(self)
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def assert_alive(self):
        if self.process.poll() is not None:
            HubServer.running.discard(self)
            pytest.fail(f"perch hub went away during the test (exit status "
                        f"{self.process.returncode})\n" + self.logs())

    def logs(self):
        stderr = self._stderr_path.read_text(errors="replace")
        return f"--- perch hub stderr (last 4000 chars) ---\n{stderr[-4000:]}"

    # HTTP ------------------------------------------------------------------

    def request(self, method, path, token="admin", **kwargs):
        """token: "admin", None (no credentials) or a token string."""
        headers = dict(kwargs.pop("headers", {}) or {})
        if token == "admin":
            token = self.admin_token
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        kwargs.setdefault("allow_redirects", False)
        for key, value in self.tls.items():
            kwargs.setdefault(key, value)
        url = path if path.startswith("http") else self.url + path
        return requests.request(method, url, headers=headers, **kwargs)

    def push_blob(self, repo, data, token="admin"):
        """Monolithic POST ?digest=; returns the digest."""
        digest = sha256(data)
        response = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/?digest={digest}", token=token,
            data=data, headers={"Content-Type": "application/octet-stream"})
        assert response.status_code == 201, response.text
        return digest

    def push_manifest(self, repo, reference, manifest,
                      media_type=OCI_MANIFEST, token="admin"):
        """PUT a manifest (a dict, or bytes sent as they are); the response."""
        body = manifest if isinstance(manifest, bytes) else \
            json.dumps(manifest).encode()
        return self.request("PUT", f"/v2/{repo}/manifests/{reference}",
                            token=token, data=body,
                            headers={"Content-Type": media_type})

    def push_image(self, repo, tag, layers=(b"layer bytes",),
                   config=b"{}", config_type="application/vnd.perch.test.v1+json",
                   **fields):
        """Pushes config, layers and an image manifest; returns
        (manifest bytes, manifest digest)."""
        self.push_blob(repo, config)
        for layer in layers:
            self.push_blob(repo, layer)
        manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                    "config": descriptor(config_type, config),
                    "layers": [descriptor("application/octet-stream", layer)
                               for layer in layers], **fields}
        body = json.dumps(manifest).encode()
        response = self.push_manifest(repo, tag, body)
        assert response.status_code == 201, response.text
        return body, sha256(body)


class HubPool:
    """Starts hubs on demand; on close, stops them and fails unless each
    exited 0 on SIGTERM."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._hubs = []

    def start(self, args=(), env=None, data=None, **tls):
        hub = HubServer(self._tmp.mktemp("hub"), args, env, data, **tls).start()
        self._hubs.append(hub)
        return hub

    def close(self):
        failures = []
        for hub in self._hubs:
            if hub.process.returncode is None:
                status = hub.stop()
                if status != 0:
                    failures.append(f"perch hub exited with status {status} "
                                    f"on SIGTERM\n{hub.logs()}")
        assert not failures, "\n".join(failures)


def oci_error(response):
    """The first error code of an OCI error body."""
    body = response.json()
    assert "errors" in body and body["errors"], body
    return body["errors"][0]["code"]


def raw_request(hub, method, path, token="admin", body=None, headers=None):
    """(status, parsed JSON body or None) for a path sent byte for byte:
    unlike requests, http.client does not normalise ".." or escapes."""
    import http.client
    headers = dict(headers or {})
    if token == "admin":
        token = hub.admin_token
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    connection = http.client.HTTPConnection("127.0.0.1", hub.port,
                                            timeout=REQUEST_TIMEOUT)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return response.status, parsed
    finally:
        connection.close()
