"""Process models for the tests: a scikit-learn classifier trained here,
and a small Open Inference Protocol server for it, written into a model
repository as a user would (REPO/<name>/model.json + REPO/<name>/1/)."""

import json
import pickle
from pathlib import Path

# The server a user writes for a scikit-learn model: stdlib HTTP, the OIP
# routes perch calls. MODE (from model.json's runtime.env) makes it
# misbehave for the failure tests.
SERVER = r'''
import json, os, pickle, socket, socketserver, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import numpy as np

NAME, MODE = os.environ["PERCH_MODEL_NAME"], os.environ.get("MODE", "")
if os.environ.get("STARTS_FILE"):  # unsandboxed: restarts take RESTART_DELAY_S longer
    if os.path.exists(os.environ["STARTS_FILE"]):
        time.sleep(float(os.environ["RESTART_DELAY_S"]))
    open(os.environ["STARTS_FILE"], "a").write("started\n")
model = pickle.load(open("model.pkl", "rb"))
META = {"name": NAME, "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
                    {"name": "label", "datatype": "INT64", "shape": [-1]}]}
if MODE == "read_state":
    try:
        print("STATE-ACCESS: read", os.listdir(os.environ["STATE_DIR"]), flush=True)
    except OSError as error:
        print("STATE-ACCESS: denied", type(error).__name__, flush=True)

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def setup(self):
        super().setup()
        # Headers and body go out as two writes: without this, Nagle and
        # delayed ACKs add 40 ms to every answer on a kept-alive connection.
        if self.request.family == socket.AF_INET:
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def answer(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        if self.path == "/v2/health/ready":
            self.answer(503 if MODE == "never_ready" else 200, {})
        elif self.path == "/v2/models/" + NAME:
            self.answer(200, META)
        else:
            self.answer(404, {"error": "no route " + self.path})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "parameters" in body:  # what the tests read to see them passed through
            print("PARAMETERS:", json.dumps(body["parameters"], sort_keys=True), flush=True)
        if MODE == "garbage":
            return self.answer(200, b"<html>this is not json</html>")
        if MODE == "alloc":
            try:
                hog = bytearray(int(os.environ["ALLOC_MB"]) << 20)
            except MemoryError:
                print("ALLOC: MemoryError", flush=True)
                return self.answer(500, {"error": "out of memory"})
        x = np.asarray(body["inputs"][0]["data"], dtype=np.float32).reshape(
            body["inputs"][0]["shape"])
        p = model.predict_proba(x)
        self.answer(200, {"model_name": NAME, "outputs": [
            {"name": "probabilities", "datatype": "FP64", "shape": list(p.shape),
             "data": p.ravel().tolist()},
            {"name": "label", "datatype": "INT64", "shape": [len(x)],
             "data": p.argmax(axis=1).tolist()}]})
    def log_message(self, *args):
        pass

class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

if "PERCH_SOCKET" in os.environ:  # model.json "listen": "unix"
    print("serving", NAME, "on", os.environ["PERCH_SOCKET"], flush=True)
    UnixServer(os.environ["PERCH_SOCKET"], Handler).serve_forever()
print("serving", NAME, "on port", os.environ["PERCH_PORT"], flush=True)
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PERCH_PORT"])), Handler).serve_forever()
'''


def train_iris():
    """A logistic regression on iris, and the data it was trained on."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=300).fit(x, y), x.astype("float32")


def write_process_model(repo, name, model, runtime=None, env=None):
    """REPO/name/1/{server.py, model.pkl} and REPO/name/model.json."""
    folder = Path(repo) / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    (folder / "1" / "server.py").write_text(SERVER)
    (folder / "1" / "model.pkl").write_bytes(pickle.dumps(model))
    config = {"kind": "process", "command": ["/usr/bin/python3", "server.py"],
              "ready_timeout_ms": 15000, "request_timeout_ms": 10000,
              "env": dict(env or {})}
    config.update(runtime or {})
    (folder / "model.json").write_text(json.dumps({"runtime": config}))
    return folder
