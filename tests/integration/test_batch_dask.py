"""`perch batch --dask`: the same job on a real two-worker Dask cluster on
loopback gives the local run's records; a worker killed mid-job loses and
repeats nothing; a model that cannot be pulled fails the job before any task."""

import json
import subprocess
import time

import numpy as np
import pytest

from batch_harness import ROW_WISE, output, records, requests_file, run_batch
from dask_harness import DaskCluster, dask_cluster  # noqa: F401 (fixture)
from harness import PERCH_BIN, TEST_MODELS, free_port, wait_for
from registry_harness import Registry, digest_of, perch

JOB_TIMEOUT = 180


def dask_batch(cluster, *args, check=True):
    return run_batch("--dask", cluster.address, *args, check=check, timeout=JOB_TIMEOUT)


def test_the_cluster_gives_the_local_records(tmp_path, dask_cluster):
    inputs = tmp_path / "in"
    requests_file(inputs / "a.jsonl", 60, seed=10, bad_every=9)
    requests_file(inputs / "b.jsonl", 25, seed=11)
    run_batch("--model", ROW_WISE, "--input", inputs, "--output", tmp_path / "local")
    dask_batch(dask_cluster, "--model", ROW_WISE, "--input", inputs,
               "--output", tmp_path / "cluster", "--partition-lines", 7, "--concurrency", 2)
    for name in ("a.jsonl", "b.jsonl"):
        assert (tmp_path / "cluster" / name).read_bytes() == \
            (tmp_path / "local" / name).read_bytes()
    errors = [r for r in records(tmp_path / "cluster" / "a.jsonl") if "error" in r]
    assert [r["id"] for r in errors] == [str(n) for n in range(9, 61, 9)]
    assert all("JSON" in r["error"] for r in errors)
    local = json.loads((tmp_path / "local" / "_SUCCESS").read_text())
    cluster = json.loads((tmp_path / "cluster" / "_SUCCESS").read_text())
    for key in ("model", "records", "errors"):
        assert cluster[key] == local[key]
    assert [(f["output"], f["records"], f["errors"]) for f in cluster["files"]] == \
        [(f["output"], f["records"], f["errors"]) for f in local["files"]]
    assert cluster["dask"]["workers"] == 2 and cluster["dask"]["partitions"] == 9 + 4
    assert (tmp_path / "cluster" / "_MODEL").read_bytes() == \
        (tmp_path / "local" / "_MODEL").read_bytes()

    # A re-run finds everything finished and scores nothing again.
    before = (tmp_path / "cluster" / "a.jsonl").stat().st_mtime_ns
    dask_batch(dask_cluster, "--model", ROW_WISE, "--input", inputs,
               "--output", tmp_path / "cluster")
    assert (tmp_path / "cluster" / "a.jsonl").stat().st_mtime_ns == before
    again = json.loads((tmp_path / "cluster" / "_SUCCESS").read_text())
    assert all(f["skipped"] for f in again["files"]) and again["dask"]["partitions"] == 0


def test_a_pulled_model_runs_on_every_worker_by_digest(tmp_path, dask_cluster):
    registry = Registry(tmp_path / "registry").start()
    try:
        digest = digest_of(perch("push", ROW_WISE, f"{registry.host}/batch/row_wise:1").stdout)
        ref = f"{registry.host}/batch/row_wise@{digest}"
        source = requests_file(tmp_path / "in.jsonl", 40, seed=12)
        dask_batch(dask_cluster, "--model", ref, "--input", source,
                   "--output", tmp_path / "cluster", "--partition-lines", 5)
    finally:
        registry.stop()
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "local")
    assert (tmp_path / "cluster" / "in.jsonl").read_bytes() == \
        (tmp_path / "local" / "in.jsonl").read_bytes()
    assert json.loads((tmp_path / "cluster" / "_SUCCESS").read_text())["model"][
        "model_digest"] == digest
    # Each worker pulled it into a state folder of its own, before any task.
    for name in ("worker1", "worker2"):
        installed = list((dask_cluster.workdir / name).rglob(
            "perch-state/models/row_wise/1/model.onnx"))
        assert len(installed) == 1, name


def test_a_model_that_cannot_be_pulled_fails_before_any_task(tmp_path, dask_cluster):
    source = requests_file(tmp_path / "in.jsonl", 10)
    nowhere = f"127.0.0.1:{free_port()}/batch/row_wise:1"
    failed = dask_batch(dask_cluster, "--model", nowhere, "--input", source,
                        "--output", tmp_path / "out", check=False)
    assert failed.returncode == 1
    message = failed.stderr.decode()
    assert f"cannot prepare --model {nowhere} on worker" in message
    assert "cannot pull --model" in message
    assert not (tmp_path / "out").exists()
    # Nothing was submitted: the scheduler never saw a perch-batch task.
    tasks = dask_cluster.client.run_on_scheduler(
        lambda dask_scheduler: [str(key) for key in dask_scheduler.tasks])
    assert not [key for key in tasks if "perch-batch" in key]


def test_bad_inputs_to_the_cluster_are_refused(tmp_path, dask_cluster):
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    np.save(arrays / "a.npy", np.zeros(4, dtype=np.float32))
    failed = dask_batch(dask_cluster, "--model", ROW_WISE, "--input", arrays,
                        "--output", tmp_path / "out", check=False)
    assert failed.returncode == 1 and b"run .npy folders locally" in failed.stderr
    failed = dask_batch(dask_cluster, "--model", ROW_WISE, "--input",
                        tmp_path / "missing.jsonl", "--output", tmp_path / "out", check=False)
    assert failed.returncode == 1 and b"cannot read --input" in failed.stderr
    source = requests_file(tmp_path / "in.jsonl", 3)
    run_batch("--model", ROW_WISE, "--input", source, "--output", tmp_path / "taken")
    failed = dask_batch(dask_cluster, "--model", TEST_MODELS / "slow", "--input", source,
                        "--output", tmp_path / "taken", check=False)
    assert failed.returncode == 1 and b"holds the results of model 'row_wise'" in failed.stderr
    unreachable = run_batch("--dask", f"tcp://127.0.0.1:{free_port()}", "--model", ROW_WISE,
                            "--input", source, "--output", tmp_path / "x", check=False,
                            timeout=JOB_TIMEOUT, env={})
    assert unreachable.returncode == 1 and b"Dask scheduler" in unreachable.stderr


def size_of(path):
    """The size of a file that may not exist yet, or no longer."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


@pytest.fixture
def own_cluster(tmp_path):
    cluster = DaskCluster(tmp_path / "dask").start()
    yield cluster
    cluster.stop()


def test_a_worker_killed_mid_job_loses_and_repeats_nothing(tmp_path, own_cluster):
    count = 24
    source = requests_file(tmp_path / "in.jsonl", count, seed=13)
    out = tmp_path / "out"
    job = subprocess.Popen(
        [str(PERCH_BIN), "batch", "--dask", own_cluster.address, "--model",
         str(TEST_MODELS / "slow"), "--input", str(source), "--output", str(out),
         "--partition-lines", "2", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        partial = out / ".in.jsonl.partial"
        # Once records are being written, kill a worker that is running a task.
        wait_for(lambda: size_of(partial) > 0, JOB_TIMEOUT, what=own_cluster.logs)
        victim = own_cluster.worker_address("worker2")
        wait_for(lambda: own_cluster.client.processing().get(victim), JOB_TIMEOUT)
        own_cluster.kill_worker("worker2")
        _, stderr = job.communicate(timeout=JOB_TIMEOUT)
    finally:
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 0, stderr.decode()
    assert own_cluster.workers["worker2"].poll() is not None
    got = records(out / "in.jsonl")
    assert [r["id"] for r in got] == [str(n) for n in range(1, count + 1)]
    for line, record in zip(source.read_text().splitlines(), got):
        data = np.array(json.loads(line)["inputs"][0]["data"], dtype=np.float32)
        np.testing.assert_allclose(output(record, "OUTPUT0").ravel(), data * 2)
    success = json.loads((out / "_SUCCESS").read_text())
    assert success["records"] == count and success["errors"] == 0
