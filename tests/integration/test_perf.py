"""`perch perf`: the load generator, against a real agent over REST and gRPC."""

import json
import subprocess

import pytest

from harness import PERCH_BIN

LEVELS = [1, 2]


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(["add_sub", "identity_bytes"])


def perf(*args):
    return subprocess.run(
        [str(PERCH_BIN), "perf", *map(str, args)],
        capture_output=True, text=True, timeout=60)


def levels_of(completed):
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


def assert_measured(levels):
    assert [level["concurrency"] for level in levels] == LEVELS
    for level in levels:
        assert level["requests"] > 0
        assert level["errors"] == 0
        assert level["throughput"] > 0
        assert 0 < level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"]


@pytest.mark.parametrize("transport", [
    ["--protocol", "rest"],
    ["--protocol", "rest", "--binary"],
    ["--protocol", "grpc"],
])
def test_measures_each_level(server, transport):
    completed = perf("add_sub", "--url", server.url,
                     "--grpc-target", server.grpc_target, *transport,
                     "--concurrency", ",".join(map(str, LEVELS)),
                     "--duration", "300ms", "--warmup", "100ms", "--json")
    assert_measured(levels_of(completed))


def test_requests_are_counted_by_the_server(server):
    def served():
        text = server.get("/metrics").text
        line = next(line for line in text.splitlines() if line.startswith(
            'perch_inference_requests_total{model="identity_bytes"'))
        return float(line.split()[-1])

    before = served()
    levels = levels_of(perf("identity_bytes", "--url", server.url,
                            "--concurrency", "1", "--duration", "300ms",
                            "--warmup", "0s", "--json"))
    # Requests still in flight when a level ends are sent but not counted.
    assert served() - before >= levels[0]["requests"]


def test_input_data_file(server, tmp_path):
    request = {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
         "data": [1, 2, 3, 4]},
        {"name": "INPUT1", "datatype": "FP32", "shape": [1, 4],
         "data": [[4, 3, 2, 1]]}]}
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    completed = perf("add_sub", "--url", server.url, "--input-data", path,
                     "--concurrency", "1,2", "--duration", "300ms",
                     "--warmup", "0s", "--csv")
    assert completed.returncode == 0, completed.stderr
    header, *rows = completed.stdout.strip().splitlines()
    assert header.startswith("concurrency,requests,errors,throughput")
    assert len(rows) == 2


def test_failed_requests_are_reported(server, tmp_path):
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps({"inputs": [
        {"name": "NOPE", "datatype": "FP32", "shape": [1], "data": [1]}]}))
    completed = perf("add_sub", "--url", server.url, "--input-data", path,
                     "--concurrency", "1", "--duration", "200ms",
                     "--warmup", "0s")
    assert completed.returncode != 0
    assert "NOPE" in completed.stderr


@pytest.mark.parametrize("args, mention", [
    (["--duration", "soon"], "duration"),
    (["--warmup", "-1s"], "duration"),
    (["--concurrency", "0"], "concurrency"),
    (["--protocol", "carrier-pigeon"], "protocol"),
])
def test_bad_arguments(server, args, mention):
    completed = perf("add_sub", "--url", server.url, *args)
    assert completed.returncode != 0
    assert mention in completed.stderr.lower()


def test_unknown_model(server):
    completed = perf("no_such_model", "--url", server.url,
                     "--duration", "100ms")
    assert completed.returncode != 0
    assert "no_such_model" in completed.stderr


def test_bad_input_data_file(server, tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"inputs": [')
    completed = perf("add_sub", "--url", server.url, "--input-data", path,
                     "--duration", "100ms")
    assert completed.returncode != 0
    assert "unusable" in completed.stderr
