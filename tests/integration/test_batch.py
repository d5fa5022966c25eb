"""`perch batch` on one machine: JSON Lines files, .npy folders and pipe
mode through the same inference service as `perch serve`, records in input
order, bad lines as error records, a resumable output folder."""

import json
import os
import pty
import select
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from batch_harness import (ROW_WISE, output, records, requests_file, row_request,
                           run_batch)
from harness import PERCH_BIN, TEST_MODELS, wait_for
from registry_harness import Registry, digest_of, perch


def lines_of(path):
    return path.read_text().splitlines()


def test_scores_a_folder_in_input_order_with_ids_and_the_model(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_text("\n".join([
        row_request([1, 2, 3, 4]),
        row_request([[0, 0, 0, 0], [1, 1, 1, 1]], request_id="two-rows"),
        row_request([-1, -2, -3, -4], outputs=["OUTPUT1"]),
    ]) + "\n")
    requests_file(inputs / "b.jsonl", 30, seed=1)
    run_batch("--model", ROW_WISE, "--input", inputs, "--output", tmp_path / "out")

    first = records(tmp_path / "out" / "a.jsonl")
    assert [r["id"] for r in first] == ["1", "two-rows", "3"]
    np.testing.assert_array_equal(output(first[0], "OUTPUT0"), [[3, 5, 7, 9]])
    np.testing.assert_array_equal(output(first[1], "OUTPUT1"), [[0], [4]])
    assert [t["name"] for t in first[2]["outputs"]] == ["OUTPUT1"]
    second = records(tmp_path / "out" / "b.jsonl")
    assert [r["id"] for r in second] == [str(n) for n in range(1, 31)]

    success = json.loads((tmp_path / "out" / "_SUCCESS").read_text())
    digest = success["model"]["model_digest"]
    assert digest.startswith("sha256:")
    for record in first + second:
        assert record["model_name"] == "row_wise" and record["model_version"] == "1"
        assert record["parameters"]["model_digest"] == digest
    assert success["records"] == 33 and success["errors"] == 0
    assert [(f["output"], f["records"]) for f in success["files"]] == \
        [("a.jsonl", 3), ("b.jsonl", 30)]
    assert success["seconds"] > 0
    assert json.loads((tmp_path / "out" / "_MODEL").read_text())["model_digest"] == digest
    assert sorted(os.listdir(tmp_path / "out")) == ["_MODEL", "_SUCCESS", "a.jsonl", "b.jsonl"]


def test_batch_answers_equal_the_online_answers(tmp_path, servers):
    source = requests_file(tmp_path / "in.jsonl", 20, seed=2)
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "out")
    server = servers.start(["row_wise"])
    for line, record in zip(lines_of(source), records(tmp_path / "out" / "in.jsonl")):
        online = server.infer("row_wise", json.loads(line)).json()
        assert record["outputs"] == online["outputs"]


def test_concurrency_and_max_batch_keep_order_and_answers(tmp_path):
    source = requests_file(tmp_path / "in.jsonl", 200, seed=3, bad_every=17)
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "one")
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "many",
              "--concurrency", 4)
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "merged",
              "--concurrency", 2, "--max-batch", 8)
    one = (tmp_path / "one" / "in.jsonl").read_bytes()
    assert (tmp_path / "many" / "in.jsonl").read_bytes() == one
    expected, merged = records(one), records(tmp_path / "merged" / "in.jsonl")
    assert [r["id"] for r in merged] == [str(n) for n in range(1, 201)]
    for want, got in zip(expected, merged):
        if "error" in want:
            assert got["error"] == want["error"]
        else:
            np.testing.assert_allclose(output(got, "OUTPUT0"), output(want, "OUTPUT0"))


def test_pipe_mode_reads_stdin_and_writes_stdout(tmp_path):
    source = requests_file(tmp_path / "in.jsonl", 10, seed=4, bad_every=4)
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "out")
    piped = run_batch("--model", ROW_WISE, "--input", "-", "--output", "-",
                      stdin=source.read_bytes())
    assert piped.stdout == (tmp_path / "out" / "in.jsonl").read_bytes()
    assert list(tmp_path.iterdir()) != [] and not (tmp_path / "-").exists()
    # A slice of a larger input keeps its line numbers as ids.
    later = run_batch("--model", ROW_WISE, "--input", "-", "--output", "-",
                      "--first-line", 7, stdin=b"\n".join(source.read_bytes().splitlines()[6:]))
    assert later.stdout == b"\n".join(piped.stdout.splitlines()[6:]) + b"\n"


def test_a_folder_of_npy_files_feeds_a_single_input_model(tmp_path):
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    np.save(arrays / "b.npy", np.array([1, 2, 3, 4], dtype=np.float32))  # no batch dim
    np.save(arrays / "a.npy", np.array([[0, 1, 0, 1], [2, 2, 2, 2]], dtype=np.float32))
    np.save(arrays / "c.npy", np.array([1, 2, 3], dtype=np.float32))  # wrong shape
    (arrays / "d.npy").write_bytes(b"not an npy file")
    run_batch("--model", ROW_WISE, "--input", arrays, "--output", tmp_path / "out")
    got = records(tmp_path / "out" / "arrays.jsonl")
    assert [r["id"] for r in got] == ["a.npy", "b.npy", "c.npy", "d.npy"]
    np.testing.assert_array_equal(output(got[0], "OUTPUT0"), [[1, 3, 1, 3], [5, 5, 5, 5]])
    np.testing.assert_array_equal(output(got[1], "OUTPUT0"), [[3, 5, 7, 9]])
    assert "shape" in got[2]["error"] and "error" in got[3]
    # A model of two inputs is refused before anything is written.
    failed = run_batch("--model", TEST_MODELS / "add_sub", "--input", arrays,
                       "--output", tmp_path / "two", check=False)
    assert failed.returncode == 1 and b"one input" in failed.stderr
    assert not (tmp_path / "two" / "arrays.jsonl").exists()


def test_bad_lines_become_error_records_and_never_stop_the_job(tmp_path):
    good = row_request([1, 1, 1, 1])
    bad = [
        "not json at all",
        '{"inputs": [',
        json.dumps({"id": "short", "inputs": [{"name": "INPUT0", "datatype": "FP32",
                                               "shape": [1, 3], "data": [1, 2, 3]}]}),
        json.dumps({"id": "ints", "inputs": [{"name": "INPUT0", "datatype": "INT32",
                                              "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
        json.dumps({"id": "unknown", "inputs": [{"name": "NOPE", "datatype": "FP32",
                                                 "shape": [1, 4], "data": [1, 2, 3, 4]}]}),
        json.dumps({"id": "no-inputs"}),
        json.dumps({"id": "bad-output", "inputs": json.loads(good)["inputs"],
                    "outputs": [{"name": "NOPE"}]}),
        json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
                                "data": [1, 2]}]}),  # data shorter than the shape
        "[1, 2, 3]",
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join([good, *bad, good]) + "\n")
    for extra in ([], ["--max-batch", "8", "--concurrency", "3"]):
        out = tmp_path / ("out" + "".join(extra))
        run_batch("--model", ROW_WISE, "--input", source, "--output", out, *extra)
        got = records(out / "in.jsonl")
        assert len(got) == len(bad) + 2
        assert "outputs" in got[0] and "outputs" in got[-1]
        errors = got[1:-1]
        assert all(set(r) >= {"id", "error", "model_name"} and "outputs" not in r
                   for r in errors)
        assert [r["id"] for r in errors] == [
            "2", "3", "short", "ints", "unknown", "no-inputs", "bad-output", "9", "10"]
        assert "JSON" in errors[0]["error"]
        assert "[1,3]" in errors[2]["error"]
        assert "INT32" in errors[3]["error"]
        assert "NOPE" in errors[4]["error"]
        success = json.loads((out / "_SUCCESS").read_text())
        assert success["records"] == len(bad) + 2 and success["errors"] == len(bad)


def test_an_unreadable_input_fails_before_anything_is_written(tmp_path):
    failed = run_batch("--model", ROW_WISE, "--input", tmp_path / "missing.jsonl",
                       "--output", tmp_path / "out", check=False)
    assert failed.returncode == 1
    assert b"cannot read --input" in failed.stderr and b"missing.jsonl" in failed.stderr
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty").mkdir()
    failed = run_batch("--model", ROW_WISE, "--input", tmp_path / "empty",
                       "--output", tmp_path / "out", check=False)
    assert failed.returncode == 1 and b"no .jsonl and no .npy" in failed.stderr


def test_an_output_folder_that_cannot_be_written_is_refused(tmp_path):
    source = requests_file(tmp_path / "in.jsonl", 3)
    (tmp_path / "file").write_text("")
    failed = run_batch("--model", ROW_WISE, "--input", source,
                       "--output", tmp_path / "file" / "out", check=False)
    assert failed.returncode == 1
    assert b"cannot create --output" in failed.stderr


def test_an_output_folder_of_another_model_is_refused(tmp_path):
    source = requests_file(tmp_path / "in.jsonl", 3)
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "out")
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    other = tmp_path / "models" / "row_wise"
    shutil.copytree(TEST_MODELS / "dynamic_batched", other)  # same name, other model.json
    failed = run_batch("--model", other, "--input", source, "--output", tmp_path / "out",
                       check=False)
    assert failed.returncode == 1
    assert b"holds the results of model 'row_wise'" in failed.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == before


def test_a_rerun_skips_finished_files_and_redoes_a_half_written_one(tmp_path):
    inputs = tmp_path / "in"
    for name in ("a", "b", "c"):
        requests_file(inputs / f"{name}.jsonl", 20, seed=ord(name))
    out = tmp_path / "out"
    run_batch("--model", ROW_WISE, "--input", inputs, "--output", out)
    expected = {p.name: p.read_bytes() for p in out.glob("*.jsonl")}
    # What a run stopped in the middle of b leaves: a finished, b half-written.
    (out / "b.jsonl").rename(out / ".b.jsonl.partial")
    with open(out / ".b.jsonl.partial", "r+b") as half:
        half.truncate(len(expected["b.jsonl"]) // 2)
    (out / "c.jsonl").unlink()
    (out / "_SUCCESS").unlink()
    finished_at = (out / "a.jsonl").stat().st_mtime_ns

    run_batch("--model", ROW_WISE, "--input", inputs, "--output", out)
    assert (out / "a.jsonl").stat().st_mtime_ns == finished_at
    assert {p.name: p.read_bytes() for p in out.glob("*.jsonl")} == expected
    assert not list(out.glob(".*"))
    success = json.loads((out / "_SUCCESS").read_text())
    assert [(f["output"], f["skipped"], f["records"]) for f in success["files"]] == \
        [("a.jsonl", True, 20), ("b.jsonl", False, 20), ("c.jsonl", False, 20)]


def test_a_killed_run_leaves_nothing_looking_finished(tmp_path):
    source = requests_file(tmp_path / "in.jsonl", 400, seed=5)
    out = tmp_path / "out"
    process = subprocess.Popen([str(PERCH_BIN), "batch", "--model", TEST_MODELS / "slow",
                                "--input", source, "--output", out, "--threads", "1"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Some records written: a run stopped in the middle of a file.
        wait_for(lambda: (out / ".in.jsonl.partial").exists()
                 and (out / ".in.jsonl.partial").stat().st_size > 0, 60)
    finally:
        process.kill()
        process.wait()
    assert not (out / "in.jsonl").exists() and not (out / "_SUCCESS").exists()
    assert (out / ".in.jsonl.partial").exists()


def test_shows_a_progress_bar_on_a_terminal(tmp_path):
    source = requests_file(tmp_path / "in.jsonl", 50, seed=6)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(str(PERCH_BIN), [str(PERCH_BIN), "batch", "--model", str(ROW_WISE),
                                  "--input", str(source), "--output", str(tmp_path / "out"),
                                  "--log-level", "warn"])
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"\rscoring [" in seen and b"100%" in seen


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "registry").start()
    yield registry
    registry.stop()


def test_a_registry_reference_is_pulled_and_recorded_by_digest(tmp_path, registry):
    ref = f"{registry.host}/batch/row_wise:1"
    digest = digest_of(perch("push", ROW_WISE, ref).stdout)
    source = requests_file(tmp_path / "in.jsonl", 5, seed=7)
    run_batch("--model", ref, "--state", tmp_path / "state", "--input", source,
              "--output", tmp_path / "pulled")
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "local")
    # The same artifact: the local folder is known by the digest a push gives it.
    for side in ("pulled", "local"):
        success = json.loads((tmp_path / side / "_SUCCESS").read_text())
        assert success["model"]["model_digest"] == digest
    assert (tmp_path / "pulled" / "in.jsonl").read_bytes() == \
        (tmp_path / "local" / "in.jsonl").read_bytes()
    assert (tmp_path / "state" / "models" / "row_wise" / "1" / "model.onnx").exists()

    failed = run_batch("--model", f"{registry.host}/batch/missing:1", "--state",
                       tmp_path / "state", "--input", source, "--output",
                       tmp_path / "missing", check=False)
    assert failed.returncode == 1 and b"cannot pull --model" in failed.stderr
    assert not (tmp_path / "missing").exists()


def test_usage_errors_are_explained(tmp_path):
    source = requests_file(tmp_path / "in.jsonl", 1)
    cases = [
        (["--input", "-", "--output", tmp_path / "out"], b"pipe mode"),
        (["--input", source, "--output", "-"], b"--output -"),
        (["--input", source], b"--output DIR"),
    ]
    for args, message in cases:
        failed = run_batch("--model", ROW_WISE, *args, check=False)
        assert failed.returncode == 1 and message in failed.stderr, failed.stderr
    failed = run_batch("--model", ROW_WISE / "1", "--input", source, "--output",
                       tmp_path / "out", check=False)
    assert failed.returncode == 1 and b"version folder" in failed.stderr
    failed = run_batch("--model", "no such thing!", "--input", source, "--output",
                       tmp_path / "out", check=False)
    assert failed.returncode == 1 and b"neither a model folder" in failed.stderr
