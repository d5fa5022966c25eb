"""Runs `perch serve` for the tests and talks to it over HTTP."""

import http.client
import inspect
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import onnx
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]

# The Makefile sets these; the defaults match its layout so that pytest can
# also be run by hand after `make build test-models`.
BUILD = Path(os.environ.get("PERCH_BUILD", ROOT / "build"))
PERCH_BIN = Path(os.environ.get("PERCH_BIN", BUILD / "perch"))
ORT_REFERENCE = BUILD / "tests" / "ort_reference"
TEST_MODELS = Path(os.environ.get("PERCH_TEST_MODELS", BUILD / "test-models"))
WAKEWORD_MODELS = Path(os.environ.get("PERCH_WAKEWORD_MODELS",
                                      ROOT / ".deps" / "openwakeword"))

# Every request has a deadline: a hung server fails the test, not the run.
# Under user-mode emulation (`make arm64-test` sets PERCH_EMULATED) the
# binary runs several times slower, and so may its answers.
SLOWDOWN = 4 if os.environ.get("PERCH_EMULATED") else 1
REQUEST_TIMEOUT = 10 * SLOWDOWN
READY_TIMEOUT = 20 * SLOWDOWN
STOP_TIMEOUT = 10
PORT_RANGE = tuple(int(port) for port in os.environ["PERCH_TEST_PORTS"].split("-")) \
    if os.environ.get("PERCH_TEST_PORTS") else None


def free_port():
    """A loopback TCP port that nothing listened on a moment ago: from
    PERCH_TEST_PORTS ("LOW-HIGH") when set, which keeps a run beside another
    suite from picking a port that suite picked a moment before."""
    if PORT_RANGE:
        for _ in range(200):
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", random.randint(*PORT_RANGE)))
                except OSError:
                    continue
                return probe.getsockname()[1]
        raise AssertionError(f"no free port in PERCH_TEST_PORTS {PORT_RANGE}")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def copy_models(repo, names, source=TEST_MODELS):
    """Copies models of the test repository into repo (created if needed)."""
    repo.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copytree(source / name, repo / name)
    return repo


class WaitTimeout(AssertionError):
    """A wait_for that ran out of time: it fails the test that waited."""


def assert_stops_within(server, seconds, during):
    """Stops server (SIGTERM) and fails unless it exits 0 within seconds;
    during says what it was doing, for the failure message."""
    stopped_at = time.monotonic()
    status = server.stop()
    took = time.monotonic() - stopped_at
    assert status == 0 and took < seconds, (
        f"perch exited {status} {took:.1f} s after SIGTERM, {during}\n"
        + server.logs()[-4000:])


def describe(condition):
    """The source of condition (a lambda's line), for a failure message."""
    try:
        return inspect.getsource(condition).strip()
    except (OSError, TypeError):
        return getattr(condition, "__name__", repr(condition))


def wait_for(condition, timeout, interval=0.1, what=None):
    """Polls condition() until it returns something truthy, and returns
    that. After timeout seconds raises WaitTimeout, which fails the test,
    naming what it waited for: what (a string, or a callable that describes
    the state at that moment), or else the condition's source."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            waited_for = what() if callable(what) else what or describe(condition)
            raise WaitTimeout(f"gave up after {timeout} s waiting for "
                              f"{waited_for}")
        time.sleep(interval)


class PerchServer:
    """One `perch serve` process on a free loopback port."""

    # Servers started and not stopped yet, checked for life after each test.
    running = set()

    def __init__(self, repo, workdir, args=()):
        self.repo = Path(repo)
        self.port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.command = [str(PERCH_BIN), "serve", "--repo", str(self.repo),
                        "--http-port", str(self.port),
                        "--grpc-port", str(self.grpc_port), *map(str, args)]
        # Files rather than pipes: a chatty server never blocks on a full
        # pipe, and the logs survive for the failure message.
        self._stdout_path = Path(workdir) / f"perch-{self.port}.stdout"
        self._stderr_path = Path(workdir) / f"perch-{self.port}.stderr"
        self.process = None

    def start(self):
        with open(self._stdout_path, "wb") as out, \
                open(self._stderr_path, "wb") as err:
            self.process = subprocess.Popen(self.command, stdout=out,
                                            stderr=err)
        try:
            wait_for(self._ready_or_exited, READY_TIMEOUT)
        except WaitTimeout:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"perch was not ready within {READY_TIMEOUT} s\n"
                        + self.logs())
        if self.process.poll() is not None:
            pytest.fail(f"perch exited with status {self.process.returncode}"
                        f" before it was ready\n{self.logs()}")
        PerchServer.running.add(self)
        return self

    def _ready_or_exited(self):
        if self.process.poll() is not None:
            return True
        try:
            return self.get("/v2/health/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self, sig=signal.SIGTERM):
        """Asks the server to exit and returns its exit status, which is
        -SIGKILL if it had to be killed after ignoring sig."""
        PerchServer.running.discard(self)
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
            PerchServer.running.discard(self)
            pytest.fail(f"perch went away during the test (exit status "
                        f"{self.process.returncode})\n" + self.logs())

    def logs(self):
        stderr = self._stderr_path.read_text(errors="replace")
        return f"--- perch stderr (last 4000 chars) ---\n{stderr[-4000:]}"

    def whole_log(self):
        """Everything perch wrote to stderr so far."""
        return self._stderr_path.read_text(errors="replace")

    def get(self, path, **kwargs):
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        return requests.get(self.url + path, **kwargs)

    def post(self, path, **kwargs):
        kwargs.setdefault("timeout", REQUEST_TIMEOUT)
        return requests.post(self.url + path, **kwargs)

    def raw_request(self, method, path):
        """(status, body) for a path sent byte for byte: unlike requests,
        http.client does not normalise "..", so traversal attempts arrive."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port,
                                                timeout=REQUEST_TIMEOUT)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def infer(self, model, request, version=None, **kwargs):
        """POSTs an infer request: a dict is sent as JSON, bytes as is."""
        if isinstance(request, dict):
            kwargs["json"] = request
        else:
            kwargs["data"] = request
        return self.post(model_path(model, version) + "/infer", **kwargs)


# How OIP names the ONNX tensor element types it carries.
ONNX_TO_OIP = {
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.UINT16: "UINT16",
    onnx.TensorProto.UINT32: "UINT32",
    onnx.TensorProto.UINT64: "UINT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.INT16: "INT16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.STRING: "BYTES",
    onnx.TensorProto.BFLOAT16: "BF16",
}


def tensor_metadata(value_info):
    tensor_type = value_info.type.tensor_type
    return {
        "name": value_info.name,
        "datatype": ONNX_TO_OIP[tensor_type.elem_type],
        "shape": [d.dim_value if d.HasField("dim_value") else -1
                  for d in tensor_type.shape.dim],
    }


def expected_metadata(model_file):
    """Inputs and outputs of model metadata, read from the ONNX file."""
    graph = onnx.load(model_file, load_external_data=False).graph
    initializers = {tensor.name for tensor in graph.initializer}
    return {
        "inputs": [tensor_metadata(v) for v in graph.input
                   if v.name not in initializers],
        "outputs": [tensor_metadata(v) for v in graph.output],
    }


def project_version():
    """The version CMakeLists.txt gives the project."""
    text = (ROOT / "CMakeLists.txt").read_text()
    return re.search(r"project\(perch VERSION ([0-9.]+)", text).group(1)


def model_path(model, version=None):
    path = f"/v2/models/{model}"
    return path if version is None else f"{path}/versions/{version}"


class ServerPool:
    """Starts servers on demand and stops each with a clean-exit check."""

    def __init__(self, tmp_path_factory):
        self._tmp = tmp_path_factory
        self._servers = []

    def start(self, models=(), args=(), repo=None):
        """A server for a fresh copy of the named test models, or for repo,
        with extra command line arguments args."""
        return self.prepare(models, args, repo).start()

    def prepare(self, models=(), args=(), repo=None):
        """As start, but not started yet: its ports are known, so that
        servers that name each other (peers) can be set up first."""
        workdir = self._tmp.mktemp("perch")
        if repo is None:
            repo = copy_models(workdir / "repo", models)
        server = PerchServer(repo, workdir, args)
        self._servers.append(server)
        return server

    def close(self):
        """Stops the servers still running; fails unless each exits 0."""
        failures = []
        for server in self._servers:
            if server.process is not None and server.process.returncode is None:
                status = server.stop()
                if status == -signal.SIGKILL:
                    failures.append(f"perch ignored SIGTERM for {STOP_TIMEOUT}"
                                    f" s and was killed\n{server.logs()}")
                elif status != 0:
                    failures.append(f"perch exited with status {status} on "
                                    f"SIGTERM\n{server.logs()}")
        assert not failures, "\n".join(failures)
