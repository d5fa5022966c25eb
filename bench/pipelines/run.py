#!/usr/bin/python3
"""Wake-word pipeline benchmark: perch's `wakeword` pipeline per 80 ms chunk
against the sum of its steps run in-process (bench_pipeline_steps: the same
step models one after the other with ONNX Runtime called directly), and how
many concurrent real-time audio streams one machine keeps up with. Writes
the "## Pipelines" section of bench/RESULTS.md (between
<!-- section:pipelines --> markers) unless --no-results.

    make build && cmake --build build --target bench_pipeline_steps
    /usr/bin/python3 bench/pipelines/run.py                   # about 3 minutes
    /usr/bin/python3 bench/pipelines/run.py --chunks 30 --repeats 1 \\
        --streams 1,2 --duration 2 --no-results               # smoke test

Latency: each pair streams --chunks chunks of noise on a fresh stream
through perch's REST API (binary tensors, one keep-alive connection) and
runs the baseline over as many chunks; pairs alternate which side goes
first (ABAB). The figure is the median of the per-pair ratios of p50 per
chunk, perch / in-process steps, with their spread. Goal: <= 1.1x.

Real time: N streams each send one chunk every 80 ms for --duration
seconds; N is kept up with when every chunk is answered within 80 ms at
p99 and no stream falls behind its clock.
"""

import argparse
import http.client
import json
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402  (bench/run.py: helpers)

CHUNK = 1280
PERIOD = 0.08


def chunk_body(samples, stream_id):
    audio = struct.pack(f"<{CHUNK}h", *samples)
    header = json.dumps({
        "parameters": {"stream_id": stream_id},
        "inputs": [
            {"name": "audio", "datatype": "INT16", "shape": [CHUNK],
             "parameters": {"binary_data_size": len(audio)}}],
        "outputs": [{"name": "vad"}, {"name": "hey_jarvis"}, {"name": "alexa"}]}).encode()
    return header + audio, {
        "Inference-Header-Content-Length": str(len(header)),
        "Content-Type": "application/octet-stream"}


def noise(count, seed):
    state = seed
    samples = []
    for _ in range(count):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        samples.append((state >> 8) % 6000 - 3000)
    return samples


class Streamer:
    """One keep-alive connection sending one stream's chunks."""

    def __init__(self, port, stream_id):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.stream_id = stream_id
        self.samples = noise(CHUNK * 16, hash(stream_id) & 0xFFFF)

    def send(self, k):
        offset = (k % 16) * CHUNK
        body, headers = chunk_body(self.samples[offset:offset + CHUNK], self.stream_id)
        started = time.perf_counter()
        self.connection.request("POST", "/v2/models/wakeword/infer", body, headers)
        response = self.connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"perch answered {response.status}")
        return time.perf_counter() - started

    def close(self):
        self.connection.close()


def perch_p50(port, chunks, run):
    streamer = Streamer(port, f"latency-{run}")
    try:
        return statistics.median(streamer.send(k) for k in range(chunks))
    finally:
        streamer.close()


def steps_p50(args, repo, chunks):
    result = subprocess.run([args.baseline, "--models", str(repo), "--chunks", str(chunks),
                             "--threads", str(args.threads)],
                            capture_output=True, text=True, check=True)
    return statistics.median(json.loads(result.stdout)["micros"]) / 1e6


def real_time(port, streams, duration):
    """(kept up, p99 seconds) for `streams` streams at one chunk per 80 ms."""
    latencies = []
    behind = []
    lock = threading.Lock()

    def run(index):
        streamer = Streamer(port, f"rt-{streams}-{index}")
        start = time.perf_counter() + index * PERIOD / streams
        k = 0
        try:
            while True:
                due = start + k * PERIOD
                if due > start + duration:
                    break
                time.sleep(max(0.0, due - time.perf_counter()))
                latency = streamer.send(k)
                with lock:
                    latencies.append(latency)
                    if time.perf_counter() - due > 2 * PERIOD:
                        behind.append(index)
                k += 1
        finally:
            streamer.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(streams)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    return p99 <= PERIOD and not behind, p99


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perch", default=str(ROOT / "build/perch"))
    parser.add_argument("--baseline", default=str(ROOT / "build/bench/bench_pipeline_steps"))
    parser.add_argument("--chunks", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--streams", default="1,2,4,8,12,16,24,32")
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
        perch_p50(port, 20, "warmup")
        ratios = []
        rows = []
        for repeat in range(args.repeats):
            order = ["perch", "steps"] if repeat % 2 == 0 else ["steps", "perch"]
            measured = {}
            for side in order:
                measured[side] = (perch_p50(port, args.chunks, repeat) if side == "perch"
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
            ok, p99 = real_time(port, streams, args.duration)
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
