#!/usr/bin/python3
"""CPU cost of the wakeword pipeline per 80 ms chunk: `perf stat` of the
perch process while one stream sends --chunks chunks back to back (the
latency side of run.py), against the same count for the in-process steps
(bench_pipeline_steps, its start-up taken off by a one-chunk run). CPU time
and context switches per chunk move far less with the machine's load than
wall time does, so they show what a change to the pipeline's overhead did.

    /usr/bin/python3 bench/pipelines/cost.py [--chunks 2000] [--streams 1]

Needs `perf` (Debian's linux-perf) and perf_event_paranoid <= 1 or root.
"""

import argparse
import importlib.util
import re
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402  (bench/run.py: helpers)

# bench/pipelines/run.py, whose module name bench/run.py already holds.
_spec = importlib.util.spec_from_file_location("pipelines_run", HERE / "run.py")
pipelines = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pipelines)
Streamer = pipelines.Streamer

EVENTS = "task-clock,context-switches,cpu-migrations"


def parse_perf(text):
    """{event: count} from `perf stat -x,` output."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and re.match(r"^[0-9.]+$", fields[0]):
            counts[fields[2]] = float(fields[0])
    return counts


def perch_cost(port, pid, chunks, streams):
    stat = subprocess.Popen(["perf", "stat", "-x,", "-e", EVENTS, "-p", str(pid)],
                            stderr=subprocess.PIPE, text=True)
    try:
        def send(index):
            streamer = Streamer(port, f"cost-{index}")
            try:
                for k in range(chunks):
                    streamer.send(k)
            finally:
                streamer.close()
        threads = [threading.Thread(target=send, args=(i,)) for i in range(streams)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        stat.send_signal(2)
        _, err = stat.communicate(timeout=30)
    return parse_perf(err)


def steps_cost(baseline, repo, chunks):
    def measure(count):
        result = subprocess.run(["perf", "stat", "-x,", "-e", EVENTS, baseline, "--models",
                                 str(repo), "--chunks", str(count)],
                                capture_output=True, text=True, check=True)
        return parse_perf(result.stderr)
    one = measure(1)
    many = measure(chunks + 1)
    return {event: many[event] - one[event] for event in many}


def report(side, counts, chunks):
    bench.log(f"{side}: CPU {counts['task-clock'] * 1e3 / chunks:.0f} us/chunk, "
              f"context switches {counts['context-switches'] / chunks:.2f}/chunk, "
              f"migrations {counts['cpu-migrations'] / chunks:.2f}/chunk")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perch", default=str(ROOT / "build/perch"))
    parser.add_argument("--baseline", default=str(ROOT / "build/bench/bench_pipeline_steps"))
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()

    work = bench.fresh(ROOT / "build/bench-work/pipelines-cost")
    repo = work / "repo"
    subprocess.run([str(ROOT / "scripts/make_sample_repo.sh"), str(repo)], check=True)
    port = bench.free_port()
    log = open(work / "perch.log", "wb")
    perch = subprocess.Popen([args.perch, "serve", "--repo", str(repo), "--http-port", str(port),
                              "--grpc-port", str(bench.free_port()), "--log-level", "warn"],
                             stdout=log, stderr=log)
    try:
        bench.wait_http_ready(port, process=perch)
        Streamer(port, "warmup").send(0)
        for _ in range(args.repeats):
            report(f"perch ({args.streams} stream(s))",
                   perch_cost(port, perch.pid, args.chunks, args.streams),
                   args.chunks * args.streams)
            report("steps in-process", steps_cost(args.baseline, repo, args.chunks), args.chunks)
    finally:
        perch.terminate()
        perch.wait(30)
        log.close()


if __name__ == "__main__":
    main()
