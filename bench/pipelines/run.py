#!/usr/bin/python3
"""Wake-word pipeline benchmark: perch's `wakeword` pipeline per 80 ms chunk
against the sum of its steps run in-process (bench_pipeline_steps: the same
step models one after the other with ONNX Runtime called directly, set up
as perch sets it up), and how many concurrent real-time audio streams one
machine keeps up with. Writes the "## Pipelines" section of
bench/RESULTS.md (between <!-- section:pipelines --> markers) unless
--no-results.

    cmake --build build --target perch bench_pipeline_steps bench_pipeline_client
    /usr/bin/python3 bench/pipelines/run.py                   # about 3 minutes
    /usr/bin/python3 bench/pipelines/run.py --chunks 30 --repeats 1 \\
        --streams 1,2 --duration 2 --no-results               # smoke test

The client is bench_pipeline_client (C++ on plain sockets, binary REST
tensors, one keep-alive connection per stream): Python's http.client spent
~0.24 ms of CPU per request, which the latency figure counted as perch's
and which took a share of the 2 cores from perch at many streams.

Latency: each pair streams --chunks chunks of noise back to back on a fresh
stream and runs the baseline over as many chunks; pairs alternate which
side goes first (ABAB). The figure is the median of the per-pair ratios of
p50 per chunk, perch / in-process steps, with their spread. Goal: <= 1.1x.

Real time: N streams each send one chunk every 80 ms for --duration
seconds; N is kept up with when every chunk is answered, within 80 ms at
p99, and no stream falls more than two periods behind its clock. The sweep
stops at the first N not kept up with: the figure is the largest N kept.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402  (bench/run.py: helpers)

PERIOD = 0.08


def client(args, port, streams, chunks, period_ms, prefix):
    """bench_pipeline_client's answer: latencies (seconds), chunks behind, failures."""
    result = subprocess.run([args.client, "--port", str(port), "--streams", str(streams),
                             "--chunks", str(chunks), "--period-ms", str(period_ms),
                             "--prefix", prefix],
                            capture_output=True, text=True, check=False)
    if not result.stdout:
        raise RuntimeError(f"bench_pipeline_client failed: {result.stderr}")
    answer = json.loads(result.stdout)
    return [m / 1e6 for m in answer["micros"]], answer["behind"], answer["failed"]


def perch_p50(args, port, chunks, run):
    latencies, _, failed = client(args, port, 1, chunks, 0, f"latency-{run}")
    if failed:
        raise RuntimeError("perch refused a chunk; see its log")
    return statistics.median(latencies)


def steps_p50(args, repo, chunks):
    result = subprocess.run([args.baseline, "--models", str(repo), "--chunks", str(chunks),
                             "--threads", str(args.threads)],
                            capture_output=True, text=True, check=True)
    return statistics.median(json.loads(result.stdout)["micros"]) / 1e6


def real_time(args, port, streams):
    """(kept up, p99 seconds) for `streams` streams at one chunk per 80 ms."""
    chunks = max(1, int(args.duration / PERIOD))
    latencies, behind, failed = client(args, port, streams, chunks, PERIOD * 1e3,
                                       f"rt-{streams}")
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("inf")
    return p99 <= PERIOD and not behind and not failed, p99


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perch", default=str(ROOT / "build/perch"))
    parser.add_argument("--baseline", default=str(ROOT / "build/bench/bench_pipeline_steps"))
    parser.add_argument("--client", default=str(ROOT / "build/bench/bench_pipeline_client"))
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--streams", default="1,2,4,8,16,32,48,64,96,128,192")
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()

    work = bench.fresh(ROOT / "build/bench-work/pipelines")
    repo = work / "repo"
    subprocess.run([str(ROOT / "scripts/make_sample_repo.sh"), str(repo)], check=True)
    port = bench.free_port()
    log = open(work / "perch.log", "wb")
    perch = subprocess.Popen([args.perch, "serve", "--repo", str(repo), "--http-port", str(port),
                              "--grpc-port", str(bench.free_port()), "--threads",
                              str(args.threads), "--log-level", "warn"],
                             stdout=log, stderr=log)
    try:
        bench.wait_http_ready(port, process=perch)
        perch_p50(args, port, 20, "warmup")
        ratios = []
        rows = []
        for repeat in range(args.repeats):
            order = ["perch", "steps"] if repeat % 2 == 0 else ["steps", "perch"]
            measured = {}
            for side in order:
                measured[side] = (perch_p50(args, port, args.chunks, repeat) if side == "perch"
                                  else steps_p50(args, repo, args.chunks))
            ratios.append(measured["perch"] / measured["steps"])
            rows.append([str(repeat + 1), bench.fmt_ms(measured["perch"] * 1e3),
                         bench.fmt_ms(measured["steps"] * 1e3), f"{ratios[-1]:.2f}"])
            bench.log(f"pair {repeat + 1}: perch {measured['perch'] * 1e3:.2f} ms, "
                      f"steps in-process {measured['steps'] * 1e3:.2f} ms")
        ratio = statistics.median(ratios)
        kept = 0
        stream_rows = []
        for streams in [int(n) for n in args.streams.split(",")]:
            ok, p99 = real_time(args, port, streams)
            stream_rows.append([str(streams), bench.fmt_ms(p99 * 1e3), "yes" if ok else "no"])
            bench.log(f"{streams} streams: p99 {p99 * 1e3:.1f} ms, {'kept up' if ok else 'behind'}")
            if not ok:
                break
            kept = streams
    finally:
        perch.terminate()
        perch.wait(30)
        log.close()
    summary = (f"p50 per chunk, perch / sum of steps in-process: **{ratio:.2f}x** "
               f"(spread {min(ratios):.2f}..{max(ratios):.2f}, {len(ratios)} ABAB pairs of "
               f"{args.chunks} chunks; goal <= 1.1x). Real-time streams kept up with: "
               f"**{kept}**.")
    bench.log(summary)
    if not args.no_results:
        body = "\n".join([
            f"Measured {time.strftime('%Y-%m-%d')} at {bench.current_commit()}.", "",
            summary, "",
            bench.table(["pair", "perch p50 ms", "steps p50 ms", "ratio"], rows), "",
            bench.table(["streams", "p99 ms", "kept up"], stream_rows)])
        bench.replace_results_section(ROOT / "bench/RESULTS.md", "pipelines",
                                      "Pipelines: wakeword per 80 ms chunk", body)


if __name__ == "__main__":
    main()
