#!/usr/bin/python3
"""`perch batch` throughput against a bare ONNX Runtime loop, and the same
job on a two-worker Dask cluster against a local run (issue 13, item 5).

    /usr/bin/python3 bench/batch/run.py                    # MobileNetV2, 2,000 requests
    /usr/bin/python3 bench/batch/run.py --requests 100 --jsonl-requests 20 \\
        --dask-requests 20 --repeats 1 --no-results        # a smoke test

Every comparison is interleaved A/B (B/A on odd repeats) and reports the
median of the per-pair ratios with their range. Each side is one process
timed from spawn to exit (model load included on both sides):

  a. `perch batch` over a folder of .npy files (--max-batch 1, the default
     --concurrency 1) vs `bench_batch_ort_loop` (batch 1), the same
     --threads: goal ≥ 0.9× (a1: the same with --concurrency 2, decoding and
     encoding beside the engine run)
  b. the same with --max-batch 8 vs the same loop: goal > 1×
  c. `perch batch` over JSON Lines (OIP JSON, ~1.3 MB a line for
     MobileNetV2) vs the loop: what decoding JSON costs
  d. `perch batch --dask` on a two-worker cluster on loopback (one thread
     each) vs a local run with --threads 2, JSON Lines; the overhead per
     partition comes from the same cluster job cut into 5× more partitions:
     (extra seconds × workers) / extra partitions.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402  (bench/run.py: machine info, table, median)

PYTHON = "/usr/bin/python3"


def timed(command, **kwargs):
    start = time.monotonic()
    result = subprocess.run(command, capture_output=True, **kwargs)
    seconds = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, command))} failed:\n{result.stderr.decode()[-3000:]}")
    return seconds, result


def prepare(args):
    """The model as a repository folder, a .npy folder and a JSON Lines file."""
    import numpy as np
    import onnx

    work = Path(args.work)
    model_file = Path(args.model) if args.model else ROOT / "build/bench-work/models/mobilenet.onnx"
    if not model_file.exists():
        bench.log("exporting MobileNetV2 (torchvision, random weights)")
        subprocess.run([PYTHON, str(ROOT / "bench/models/export_mobilenet.py"), str(model_file)],
                       check=True)
    graph = onnx.load(str(model_file), load_external_data=False).graph
    first = graph.input[0]
    shape = [d.dim_value if d.dim_value > 0 else 1 for d in first.type.tensor_type.shape.dim]
    name = first.name
    folder = work / "models" / "model"
    if not (folder / "1" / "model.onnx").exists():
        (folder / "1").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(model_file, folder / "1" / "model.onnx")
    rng = np.random.default_rng(0)
    distinct = [rng.random(shape, dtype=np.float32) for _ in range(16)]

    arrays = work / f"arrays-{args.requests}"
    if not arrays.exists():
        staging = work / "arrays.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for k, array in enumerate(distinct):
            np.save(staging / f"distinct{k}.npy", array)
        for i in range(args.requests):  # hard links: 16 files' worth of disk
            os.link(staging / f"distinct{i % 16}.npy", staging / f"r{i:06d}.npy")
        for k in range(16):
            (staging / f"distinct{k}.npy").unlink()
        staging.rename(arrays)

    def jsonl(count):
        path = work / f"requests-{count}.jsonl"
        if not path.exists():
            lines = [json.dumps({"inputs": [{"name": name, "datatype": "FP32",
                                             "shape": shape,
                                             "data": np.round(a, 5).ravel().tolist()}]})
                     for a in distinct]
            with open(path.with_suffix(".tmp"), "w") as f:
                for i in range(count):
                    f.write(lines[i % 16] + "\n")
            path.with_suffix(".tmp").rename(path)
        return path

    return folder, model_file, arrays, jsonl(args.jsonl_requests), jsonl(args.dask_requests)


def perch_batch(args, model, inputs, out, *extra):
    shutil.rmtree(out, ignore_errors=True)
    seconds, result = timed([args.perch, "batch", "--model", str(model), "--input", str(inputs),
                             "--output", str(out), "--log-level", "warn", *map(str, extra)])
    return seconds


def baseline(args, model_file, requests):
    seconds, result = timed([args.baseline, "--model", str(model_file), "--threads",
                             str(args.threads), "--requests", str(requests)])
    return seconds, json.loads(result.stdout)


def pairs(repeats, first, second):
    """[(a seconds, b seconds)] measured a-then-b, b-then-a, ..."""
    results = []
    for repeat in range(repeats):
        order = [("a", first), ("b", second)] if repeat % 2 == 0 else [("b", second), ("a", first)]
        got = {}
        for key, measure in order:
            got[key] = measure()
        results.append((got["a"], got["b"]))
    return results


def ratio_line(label, results, count, goal):
    """perch throughput / baseline throughput per pair (same count: inverse time ratio)."""
    ratios = [base / perch for perch, base in results]
    perch_rate = bench.median([count / perch for perch, _ in results])
    base_rate = bench.median([count / base for _, base in results])
    med = bench.median(ratios)
    verdict = "" if goal is None else (" met" if med >= goal else " MISSED") + f" (goal ≥ {goal}×)"
    return [label, f"{perch_rate:.1f}", f"{base_rate:.1f}",
            f"{med:.2f}× ({min(ratios):.2f}–{max(ratios):.2f}){verdict}"]


class Cluster:
    def __init__(self, work, workers=2):
        self.port = bench.free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.processes = []
        work.mkdir(parents=True, exist_ok=True)
        log = open(work / "dask.log", "ab")
        self.processes.append(subprocess.Popen(
            ["dask-scheduler", "--host", "127.0.0.1", "--port", str(self.port),
             "--no-dashboard", "--no-show"], stdout=log, stderr=log, start_new_session=True))
        for index in range(workers):
            self.processes.append(subprocess.Popen(
                ["dask-worker", self.address, "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-nanny", "--no-dashboard", "--local-directory", str(work / f"w{index}")],
                stdout=log, stderr=log, start_new_session=True))
        from distributed import Client
        with Client(self.address, timeout=60) as client:
            deadline = time.monotonic() + 60
            while len(client.scheduler_info()["workers"]) < workers:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"the Dask workers did not join; see {work / 'dask.log'}")
                time.sleep(0.2)

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(ROOT / "build/perch"))
    parser.add_argument("--baseline", default=str(ROOT / "build/bench/bench_batch_ort_loop"))
    parser.add_argument("--model", help="an ONNX file with one input (default: MobileNetV2)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--jsonl-requests", type=int, default=200,
                        help="lines of the JSON Lines comparison (c)")
    parser.add_argument("--dask-requests", type=int, default=200)
    parser.add_argument("--partition-lines", type=int, default=25)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-dask", action="store_true")
    parser.add_argument("--work", default=str(ROOT / "build/bench-work/batch"))
    parser.add_argument("--results", default=str(ROOT / "bench/RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()
    bench.PERCH_COMMIT = bench.current_commit()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder, model_file, arrays, jsonl, dask_jsonl = prepare(args)
    outputs = work / "out"
    threads = ["--threads", args.threads]

    bench.log(f"a. perch batch (.npy, --max-batch 1) vs the bare loop, {args.requests} requests")
    a = pairs(args.repeats,
              lambda: perch_batch(args, folder, arrays, outputs / "a", *threads),
              lambda: baseline(args, model_file, args.requests)[0])
    bench.log("a1. the same with --concurrency 2 (decoding and writing beside the engine)")
    a1 = pairs(args.repeats,
               lambda: perch_batch(args, folder, arrays, outputs / "a1", *threads,
                                   "--concurrency", 2),
               lambda: baseline(args, model_file, args.requests)[0])
    bench.log("b. perch batch (.npy, --max-batch 8) vs the bare loop")
    b = pairs(args.repeats,
              lambda: perch_batch(args, folder, arrays, outputs / "b", *threads,
                                  "--max-batch", 8),
              lambda: baseline(args, model_file, args.requests)[0])
    bench.log(f"c. perch batch (JSON Lines) vs the bare loop, {args.jsonl_requests} requests")
    c = pairs(args.repeats,
              lambda: perch_batch(args, folder, jsonl, outputs / "c", *threads),
              lambda: baseline(args, model_file, args.jsonl_requests)[0])
    rows = [
        ratio_line(".npy folder, --max-batch 1", a, args.requests, 0.9),
        ratio_line(".npy folder, --max-batch 1, --concurrency 2", a1, args.requests, None),
        ratio_line(".npy folder, --max-batch 8", b, args.requests, 1.0),
        ratio_line("JSON Lines, --max-batch 1", c, args.jsonl_requests, None),
    ]
    body = [f"Model: {model_file.name}; {args.threads} engine threads on both sides; each side "
            "one process from spawn to exit; ratio = perch throughput / loop throughput, "
            "median of the per-pair ratios (range).\n",
            bench.table(["perch batch input", "perch req/s", "bare loop req/s", "ratio"], rows)]

    if not args.skip_dask:
        bench.log(f"d. the two-worker Dask cluster vs local, {args.dask_requests} lines")
        cluster = Cluster(work / "dask")
        try:
            partitions = -(-args.dask_requests // args.partition_lines)
            small_lines = max(1, args.partition_lines // 5)
            small_partitions = -(-args.dask_requests // small_lines)

            def on_cluster(lines, out):
                return perch_batch(args, folder, dask_jsonl, outputs / out, "--dask",
                                   cluster.address, "--threads", 1, "--partition-lines", lines)
            d = pairs(args.repeats, lambda: on_cluster(args.partition_lines, "d"),
                      lambda: perch_batch(args, folder, dask_jsonl, outputs / "local",
                                          "--threads", 2))
            # The same job in partitions five times smaller: what the extra
            # partitions cost is the cost of a partition.
            e = pairs(args.repeats, lambda: on_cluster(small_lines, "e"),
                      lambda: on_cluster(args.partition_lines, "d"))
        finally:
            cluster.stop()
        overhead = [(small - large) * 2 / (small_partitions - partitions)
                    for small, large in e] if small_partitions > partitions else [float("nan")]
        body.append(
            f"\nDask: {args.dask_requests} JSON lines in {partitions} partitions of "
            f"{args.partition_lines}; two dask-worker processes on loopback, one thread and "
            "`--threads 1` each, against one local `perch batch --threads 2`. Overhead per "
            f"partition: the same cluster job in {small_partitions} partitions of {small_lines} "
            "against it, (extra seconds × 2 workers) / extra partitions.\n\n" +
            bench.table(["", "cluster s", "local s", "cluster / local time",
                         "overhead per partition (s)"],
                        [["median (range)", f"{bench.median([x for x, _ in d]):.2f}",
                          f"{bench.median([y for _, y in d]):.2f}",
                          f"{bench.median([x / y for x, y in d]):.2f}× "
                          f"({min(x / y for x, y in d):.2f}–{max(x / y for x, y in d):.2f})",
                          f"{bench.median(overhead):.3f} ({min(overhead):.3f}–"
                          f"{max(overhead):.3f})"]]))
    text = "\n".join(body)
    print(text)
    if not args.no_results:
        m = bench.machine_info()
        section = (f"<!-- section:batch -->\n## perch batch (bench/batch/run.py)\n\n"
                   f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM; "
                   f"{m['date']}; perch commit {m['commit']}; {args.repeats} interleaved "
                   f"repeats.\n\n{text.rstrip()}\n<!-- /section:batch -->")
        path = Path(args.results)
        old = path.read_text() if path.exists() else "# Benchmark results\n"
        pattern = re.compile(r"<!-- section:batch -->.*?<!-- /section:batch -->", re.S)
        new = pattern.sub(lambda _: section, old) if pattern.search(old) else \
            old.rstrip() + "\n\n" + section + "\n"
        path.write_text(new)
        bench.log(f"wrote the batch section of {path}")


if __name__ == "__main__":
    main()
