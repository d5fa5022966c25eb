#!/usr/bin/python3
"""CPU cost of the wakeword pipeline per 80 ms chunk: `perf stat` of the
perch process while --streams streams send --chunks chunks each back to
back (bench_pipeline_client, as run.py's latency side), against the same count for the in-process steps
(bench_pipeline_steps, its start-up taken off by a one-chunk run). CPU time
and context switches per chunk move far less with the machine's load than
wall time does, so they show what a change to the pipeline's overhead did.

    /usr/bin/python3 bench/pipelines/cost.py [--chunks 2000] [--streams 1] [--repeats 1]

Needs `perf` (Debian's linux-perf) and perf_event_paranoid <= 1 or root.
"""

import argparse
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402  (bench/run.py: helpers)

EVENTS = "task-clock,context-switches,cpu-migrations"


def parse_perf(text):
    """{event: count} from `perf stat -x,` output."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) >= 3 and re.match(r"^[0-9.]+$", fields[0]):
            counts[fields[2]] = float(fields[0])
    return counts


def perch_cost(args, port, pid, streams):
    stat = subprocess.Popen(["perf", "stat", "-x,", "-e", EVENTS, "-p", str(pid)],
                            stderr=subprocess.PIPE, text=True)
    try:
        subprocess.run([args.client, "--port", str(port), "--streams", str(streams), "--chunks",
                        str(args.chunks), "--period-ms", "0", "--prefix", "cost"],
                       check=True, stdout=subprocess.DEVNULL)
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
    parser.add_argument("--client", default=str(ROOT / "build/bench/bench_pipeline_client"))
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
        subprocess.run([args.client, "--port", str(port), "--chunks", "20", "--period-ms", "0",
                        "--prefix", "warmup"], check=True, stdout=subprocess.DEVNULL)
        for _ in range(args.repeats):
            report(f"perch ({args.streams} stream(s))",
                   perch_cost(args, port, perch.pid, args.streams),
                   args.chunks * args.streams)
            report("steps in-process", steps_cost(args.baseline, repo, args.chunks), args.chunks)
    finally:
        perch.terminate()
        perch.wait(30)
        log.close()


if __name__ == "__main__":
    main()
