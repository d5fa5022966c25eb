#!/usr/bin/python3
"""Memory benchmarks (issue 18, deliverables 3-5). Each writes its own
section of bench/RESULTS.md unless --no-results.

    make build                                   # perch and bench_memory_ort_sessions
    /usr/bin/python3 bench/memory/run.py many    # 500 small models against bare sessions
    /usr/bin/python3 bench/memory/run.py budget  # 60 models over --memory-limit
    /usr/bin/python3 bench/memory/run.py swap    # p99 of one model while another swaps
    /usr/bin/python3 bench/memory/run.py all

many:   RSS of `perch serve` holding --models small models (each answered
        once) against bench_memory_ort_sessions: the same model file loaded
        --models times as bare ONNX Runtime sessions sharing one thread pool,
        each run once. ABAB pairs (which side goes first alternates); the
        median of the per-pair ratios perch / bare with their spread.
        Goal <= 1.5.
budget: --budget-models lookup models of --weight-mib MiB each under
        --memory-limit (their total exceeds it); --requests requests spread
        uniformly over them from 4 clients. Every answer is checked. Reports
        the hit rate, the load time on a miss (perch's
        perch_model_load_on_demand_duration_seconds), the client's p50/p99,
        and the peak RSS (VmHWM) against the limit.
swap:   model A (a chain of --layers 512x512 MatMuls) under a sustained
        closed-loop load of --concurrency clients. Slices of --slice seconds
        alternate (ABAB, --pairs pairs): steady, and with model B (--swap-mib
        MiB, three warmup runs) getting a new version loaded, warmed up and
        swapped in back to back through the repository API. The median of
        the per-pair ratios of A's p99 (swaps / steady). Goal <= 1.2.

Work files go to build/bench-work/memory/.
"""

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from budget_models import (lookup_answer, lookup_request,  # noqa: E402
                           write_lookup_model, write_lookup_repo)

WORK = ROOT / "build" / "bench-work" / "memory"
MIB = 1 << 20


def log(message):
    print(message, flush=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


class Client:
    """One keep-alive HTTP connection to perch."""

    def __init__(self, port):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        self.connection.request(method, path, body=data, headers=headers)
        response = self.connection.getresponse()
        return response.status, response.read()

    def close(self):
        self.connection.close()


class Perch:
    """`perch serve` on free loopback ports, stopped by stop()."""

    def __init__(self, perch, repo, args=()):
        self.port = free_port()
        self.workdir = WORK / f"serve-{self.port}"
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.workdir.mkdir(parents=True)
        self.log_file = open(self.workdir / "stderr", "wb")
        self.process = subprocess.Popen(
            [str(perch), "serve", "--repo", str(repo), "--http-port", str(self.port),
             "--grpc-port", str(free_port()), "--state", str(self.workdir / "state"),
             "--log-level", "warn", *args],
            stdout=subprocess.DEVNULL, stderr=self.log_file)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"perch exited: see {self.workdir / 'stderr'}")
            try:
                client = Client(self.port)
                status, _ = client.request("GET", "/v2/health/ready")
                client.close()
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("perch was not ready within 600 s")

    def metrics(self):
        client = Client(self.port)
        _, body = client.request("GET", "/metrics")
        client.close()
        values = {}
        for line in body.decode().splitlines():
            match = re.match(r"^([a-z_]+)(\{\})? ([0-9.e+-]+)$", line)
            if match:
                values[match.group(1)] = float(match.group(3))
        return values

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def spread(ratios):
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


def machine_line(args):
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0]
    return (f"Machine: {os.cpu_count()} cores, {cpu}, Linux {os.uname().release}; "
            f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}; perch commit {commit}; "
            f"load average {load:.1f} at the end.")


def write_section(args, key, title, body):
    if args.no_results:
        log(body)
        return
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text()
    start, end = f"<!-- section:{key} -->", f"<!-- /section:{key} -->"
    section = f"{start}\n## {title}\n\n{machine_line(args)}\n\n{body.rstrip()}\n{end}"
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else (
        text.rstrip() + "\n\n" + section + "\n")
    path.write_text(text)
    log(body)
    log(f"wrote section '{key}' of {path}")


def bare_binary(args):
    for candidate in (ROOT / "build" / "bench" / "bench_memory_ort_sessions",
                      ROOT / "build" / "bench-standalone" / "bench_memory_ort_sessions"):
        if candidate.exists():
            return candidate
    log("building bench_memory_ort_sessions alone from bench/CMakeLists.txt")
    build = ROOT / "build" / "bench-standalone"
    subprocess.run(["cmake", "-S", str(ROOT / "bench"), "-B", str(build)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(build), "-j2", "--target",
                    "bench_memory_ort_sessions"], check=True, stdout=subprocess.DEVNULL)
    return build / "bench_memory_ort_sessions"


def perch_binary(args):
    """A copy of build/perch, so that a rebuild during a run changes nothing."""
    copy = WORK / "perch"
    shutil.copy2(args.perch, copy)
    return copy


# --- many: 500 small models -------------------------------------------------

def bench_many(args):
    perch = perch_binary(args)
    bare = bare_binary(args)
    repo = WORK / "many-repo"
    shutil.rmtree(repo, ignore_errors=True)
    write_lookup_model(repo / "lookup_000" / "1" / "model.onnx", 0, args.small_bytes)
    for number in range(1, args.models):
        shutil.copytree(repo / "lookup_000", repo / f"lookup_{number:03d}")
    model_file = repo / "lookup_000" / "1" / "model.onnx"

    def run_bare():
        result = subprocess.run([str(bare), "--model", str(model_file), "--count",
                                 str(args.models), "--threads", str(args.threads)],
                                capture_output=True, text=True, check=True)
        return json.loads(result.stdout)["rss_kib"]

    def run_perch():
        server = Perch(perch, repo, ["--memory-limit", "0", "--threads", str(args.threads)])
        try:
            client = Client(server.port)
            for number in range(args.models):
                status, body = client.request("POST", f"/v2/models/lookup_{number:03d}/infer",
                                              lookup_request(3))
                if status != 200:
                    raise RuntimeError(f"lookup_{number:03d}: {status} {body[:200]}")
            client.close()
            return status_kib(server.process.pid, "VmRSS")
        finally:
            server.stop()

    pairs = []
    for pair in range(args.pairs):
        if pair % 2 == 0:
            perch_kib, bare_kib = run_perch(), run_bare()
        else:
            bare_kib, perch_kib = run_bare(), run_perch()
        pairs.append((perch_kib, bare_kib))
        log(f"pair {pair + 1}: perch {perch_kib / 1024:.1f} MiB, bare {bare_kib / 1024:.1f} MiB,"
            f" ratio {perch_kib / bare_kib:.2f}")
    ratios = [p / b for p, b in pairs]
    ratio = statistics.median(ratios)
    body = (f"`/usr/bin/python3 bench/memory/run.py many --models {args.models} --pairs "
            f"{args.pairs}`: {args.models} copies of a lookup model "
            f"({args.small_bytes} bytes of weights), each answered once. Bare: "
            f"`bench_memory_ort_sessions`, the same file as {args.models} ONNX Runtime sessions "
            f"sharing one thread pool, each run once. RSS after the last answer.\n\n"
            f"| measure | perch | bare sessions | ratio (median of {len(pairs)} pairs, spread)"
            f" | goal |\n|---|---|---|---|---|\n"
            f"| RSS, {args.models} models | "
            f"{statistics.median(p for p, _ in pairs) / 1024:.1f} MiB | "
            f"{statistics.median(b for _, b in pairs) / 1024:.1f} MiB | "
            f"{ratio:.2f}× ({spread(ratios)}) | ≤ 1.5× {'✅' if ratio <= 1.5 else '❌'} |\n")
    write_section(args, "memory-many", "Many models: RSS against bare sessions "
                  "(`bench/memory/run.py many`)", body)


# --- budget: 60 models over --memory-limit -------------------------------------

def bench_budget(args):
    perch = perch_binary(args)
    repo = WORK / "budget-repo"
    shutil.rmtree(repo, ignore_errors=True)
    names = write_lookup_repo(repo, args.budget_models, int(args.weight_mib * MIB))
    limit = int(args.limit_mib * MIB)
    server = Perch(perch, repo, ["--memory-limit", str(limit), "--threads", str(args.threads)])
    try:
        before = server.metrics()
        calls = [(i % args.budget_models, i * 7919 % 1000) for i in range(args.requests)]
        np.random.default_rng(18).shuffle(calls)
        local = threading.local()

        def call(item):
            number, index = item
            if not hasattr(local, "client"):
                local.client = Client(server.port)
            started = time.perf_counter()
            status, body = local.client.request(
                "POST", f"/v2/models/{names[number]}/infer", lookup_request(index))
            elapsed = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"{names[number]}: {status} {body[:200]}")
            answer = json.loads(body)["outputs"][0]["data"]
            if answer != [lookup_answer(number, index)]:
                raise RuntimeError(f"{names[number]} answered {answer}")
            return elapsed

        with ThreadPoolExecutor(4) as pool:
            latencies = list(pool.map(call, [tuple(c) for c in calls]))
        after = server.metrics()
        peak_kib = status_kib(server.process.pid, "VmHWM")
    finally:
        server.stop()

    def delta(name):
        return after.get(name, 0) - before.get(name, 0)

    hits = delta("perch_model_memory_hits_total")
    misses = delta("perch_model_memory_misses_total")
    loads = delta("perch_model_load_on_demand_duration_seconds_count")
    load_ms = 1000 * delta("perch_model_load_on_demand_duration_seconds_sum") / max(1, loads)
    body = (f"`/usr/bin/python3 bench/memory/run.py budget --budget-models "
            f"{args.budget_models} --weight-mib {args.weight_mib} --limit-mib {args.limit_mib} "
            f"--requests {args.requests}`: {args.budget_models} lookup models of "
            f"{args.weight_mib} MiB of weights each ({args.budget_models * args.weight_mib:.0f}"
            f" MiB in all) under `--memory-limit {args.limit_mib:.0f}M`; {args.requests} "
            f"requests spread evenly over them in a shuffled order from 4 clients; every "
            f"answer checked.\n\n"
            f"| measure | value |\n|---|---|\n"
            f"| answers correct | {len(latencies)} of {args.requests} |\n"
            f"| hit rate (version in memory) | {hits / max(1, hits + misses):.1%} "
            f"({hits:.0f} hits, {misses:.0f} misses) |\n"
            f"| load on a miss, mean (perch's histogram) | {load_ms:.1f} ms over "
            f"{loads:.0f} loads |\n"
            f"| versions unloaded | {delta('perch_model_memory_unloads_total'):.0f} |\n"
            f"| client latency p50 / p99 | {1000 * percentile(latencies, 0.5):.2f} ms / "
            f"{1000 * percentile(latencies, 0.99):.2f} ms |\n"
            f"| peak RSS (VmHWM) | {peak_kib / 1024:.0f} MiB, limit {args.limit_mib:.0f} MiB "
            f"(margin allowed: 10 % + 16 MiB) "
            f"{'✅' if peak_kib * 1024 <= limit * 1.1 + 16 * MIB else '❌'} |\n")
    write_section(args, "memory-budget", "Memory budget: many models over --memory-limit "
                  "(`bench/memory/run.py budget`)", body)


# --- swap: p99 of A while B swaps -----------------------------------------------

def write_matmul_model(path, layers, size, seed):
    """OUTPUT0 = INPUT0 · W1 · ... · Wn, INPUT0 FP32 [1, size]."""
    rng = np.random.default_rng(seed)
    nodes, initializers, previous = [], [], "INPUT0"
    for layer in range(layers):
        weight = f"W{layer}"
        initializers.append(numpy_helper.from_array(
            (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32), weight))
        output = "OUTPUT0" if layer == layers - 1 else f"H{layer}"
        nodes.append(helper.make_node("MatMul", [previous, weight], [output]))
        previous = output
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1, size])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1, size])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def bench_swap(args):
    perch = perch_binary(args)
    repo = WORK / "swap-repo"
    shutil.rmtree(repo, ignore_errors=True)
    write_matmul_model(repo / "a" / "1" / "model.onnx", args.layers, 512, 1)
    layers_b = max(1, int(args.swap_mib * MIB // (1024 * 1024 * 4)))
    source_b = WORK / "swap-b.onnx"
    write_matmul_model(source_b, layers_b, 1024, 2)
    (repo / "b" / "1").mkdir(parents=True)
    shutil.copy2(source_b, repo / "b" / "1" / "model.onnx")
    (repo / "b" / "model.json").write_text(json.dumps({"warmup": {"runs": 3}}))
    server = Perch(perch, repo, ["--threads", str(args.threads)])
    request = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 512],
                           "data": [0.5] * 512}]}
    version = [1]

    def swap_once(client):
        """B's next version: written, loaded and warmed up, swapped in, the old one deleted."""
        version[0] += 1
        folder = repo / "b" / str(version[0])
        folder.mkdir()
        shutil.copy2(source_b, folder / "model.onnx")
        status, body = client.request("POST", "/v2/repository/models/b/load")
        if status != 200:
            raise RuntimeError(f"loading b failed: {status} {body[:200]}")
        shutil.rmtree(repo / "b" / str(version[0] - 1))

    def slice_p99(with_swaps):
        stop = threading.Event()
        latencies = [[] for _ in range(args.concurrency)]
        swaps = [0]

        def load(slot):
            client = Client(server.port)
            while not stop.is_set():
                started = time.perf_counter()
                status, body = client.request("POST", "/v2/models/a/infer", request)
                latencies[slot].append(time.perf_counter() - started)
                if status != 200:
                    raise RuntimeError(f"a: {status} {body[:200]}")
            client.close()

        def swapper():
            client = Client(server.port)
            while not stop.is_set():
                swap_once(client)
                swaps[0] += 1
            client.close()

        workers = [threading.Thread(target=load, args=(i,)) for i in range(args.concurrency)]
        if with_swaps:
            workers.append(threading.Thread(target=swapper))
        for worker in workers:
            worker.start()
        time.sleep(args.slice)
        stop.set()
        for worker in workers:
            worker.join()
        merged = [value for per in latencies for value in per]
        return percentile(merged, 0.99), percentile(merged, 0.5), len(merged), swaps[0]

    try:
        slice_p99(False)  # warm-up slice, not counted
        pairs = []
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            results = {kind: slice_p99(kind) for kind in order}
            steady, swapping = results[False], results[True]
            pairs.append((steady, swapping))
            log(f"pair {pair + 1}: p99 steady {1000 * steady[0]:.2f} ms, with swaps "
                f"{1000 * swapping[0]:.2f} ms ({swapping[3]} swaps), ratio "
                f"{swapping[0] / steady[0]:.2f}")
    finally:
        server.stop()
    ratios = [s[0] / t[0] for t, s in pairs]
    ratio = statistics.median(ratios)
    body = (f"`/usr/bin/python3 bench/memory/run.py swap --pairs {args.pairs} --slice "
            f"{args.slice} --concurrency {args.concurrency}`: model A ({args.layers} MatMuls of "
            f"512×512) under a closed-loop load of {args.concurrency} REST clients; slices of "
            f"{args.slice} s alternate between steady and model B ({layers_b} MatMuls of "
            f"1024×1024, {layers_b * 4} MiB, 3 warmup runs) getting a new version loaded, "
            f"warmed up and swapped in back to back (`POST /v2/repository/models/b/load`).\n\n"
            f"| measure | steady | with swaps | ratio (median of {len(pairs)} pairs, spread) "
            f"| goal |\n|---|---|---|---|---|\n"
            f"| A's p99 | {1000 * statistics.median(t[0] for t, _ in pairs):.2f} ms | "
            f"{1000 * statistics.median(s[0] for _, s in pairs):.2f} ms | {ratio:.2f}× "
            f"({spread(ratios)}) | ≤ 1.2× {'✅' if ratio <= 1.2 else '❌'} |\n"
            f"| A's p50 | {1000 * statistics.median(t[1] for t, _ in pairs):.2f} ms | "
            f"{1000 * statistics.median(s[1] for _, s in pairs):.2f} ms | | |\n"
            f"| swaps per slice | | {statistics.median(s[3] for _, s in pairs):.0f} | | |\n")
    write_section(args, "memory-swap", "Swaps without spikes (`bench/memory/run.py swap`)", body)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["many", "budget", "swap", "all"])
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--threads", type=int, default=0, help="perch's and bare's pool")
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--pairs", type=int, default=10)
    parser.add_argument("--models", type=int, default=500)
    parser.add_argument("--small-bytes", type=int, default=4096)
    parser.add_argument("--budget-models", type=int, default=60)
    parser.add_argument("--weight-mib", type=float, default=4)
    parser.add_argument("--limit-mib", type=float, default=160)
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--slice", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--swap-mib", type=float, default=32)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    for which in ("many", "budget", "swap"):
        if args.which in (which, "all"):
            globals()[f"bench_{which}"](args)


if __name__ == "__main__":
    main()
