"""--memory-limit: more models than fit at once, loaded on first use, the
least recently used idle ones unloaded, and a model that can never fit
refused with 503 and Retry-After (docs/model-repository.md, "Memory
budget")."""

import os
import random
import subprocess
from concurrent.futures import ThreadPoolExecutor

from budget_models import (lookup_answer, lookup_request, write_lookup_model,
                           write_lookup_repo)
from harness import model_path

MIB = 1 << 20
MODELS = 60
WEIGHT_BYTES = 2 * MIB
LIMIT = 160 * MIB
# What RSS may exceed the limit by (docs/model-repository.md): request
# buffers, versions still finishing requests after they were replaced, the
# allocator's slack.
MARGIN = LIMIT // 10 + 16 * MIB


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} line in /proc/{pid}/status")


def metric(server, name):
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{}"):
            return float(line.split()[-1])
    raise AssertionError(f"no metric {name}")


def test_more_models_than_fit_all_answer_within_the_budget(servers, tmp_path):
    repo = tmp_path / "repo"
    names = write_lookup_repo(repo, MODELS, WEIGHT_BYTES)
    # Its load needs three times its size, more than the whole budget: it can
    # never load.
    write_lookup_model(repo / "zz_huge" / "1" / "model.onnx", 99, LIMIT // 3)
    server = servers.start(repo=repo, args=["--memory-limit", str(LIMIT)])
    index = server.post("/v2/repository/index").json()
    waiting = [row for row in index if "--memory-limit" in row.get("reason", "")]
    assert waiting, "every model loaded at start: the test needs more than fit"

    calls = [(number, random.Random(number).randrange(5000))
             for number in range(MODELS) for _ in range(4)]
    random.Random(18).shuffle(calls)

    def call(number_and_index):
        number, lookup = number_and_index
        response = server.infer(names[number], lookup_request(lookup))
        return number, lookup, response

    with ThreadPoolExecutor(4) as pool:
        for number, lookup, response in pool.map(call, calls):
            assert response.status_code == 200, response.text
            assert response.json()["outputs"][0]["data"] == [
                lookup_answer(number, lookup)], names[number]

    # Under a sanitizer RSS holds its shadow memory and quarantine too.
    if "ASAN_OPTIONS" not in os.environ:
        peak = status_kib(server.process.pid, "VmHWM") * 1024
        assert peak <= LIMIT + MARGIN, f"peak RSS {peak / MIB:.0f} MiB"
    assert metric(server, "perch_model_memory_misses_total") > 0
    assert metric(server, "perch_model_memory_unloads_total") > 0

    huge = server.infer("zz_huge", lookup_request(1))
    assert huge.status_code == 503, huge.text
    assert "raise --memory-limit" in huge.json()["error"]
    assert huge.headers.get("Retry-After") is not None
    server.assert_alive()


def refused_start(servers, tmp_path, limit):
    """perch serve's exit status and stderr for --memory-limit limit."""
    repo = tmp_path / "repo"
    write_lookup_repo(repo, 1, 4096)
    command = servers.prepare(repo=repo, args=["--memory-limit", limit]).command
    result = subprocess.run(command, capture_output=True, text=True, timeout=20)
    return result.returncode, result.stderr


def test_memory_limit_below_the_idle_agent_is_refused(servers, tmp_path):
    status, stderr = refused_start(servers, tmp_path, "1M")
    assert status != 0
    assert "raise it" in stderr, stderr


def test_a_memory_limit_that_is_no_size_is_refused(servers, tmp_path):
    status, stderr = refused_start(servers, tmp_path, "lots")
    assert status != 0
    assert "512M" in stderr, stderr
