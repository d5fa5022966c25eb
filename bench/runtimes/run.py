#!/usr/bin/python3
"""Process runtime benchmark (issue 15, item 4): what perch in front of a
model's own OIP server costs. A tiny scikit-learn model (logistic
regression on iris, FP32 [1,4] in) served by the test's small Python OIP
server (tests/integration/process_models.py), started by `perch serve`
under bubblewrap; `perch perf` at concurrency 1 sends the same request
body to perch (REST) and to the process directly (the very same server,
its port read from perch's log), in ABAB pairs (the order alternates every
pair). Ratio = perch p50 / direct p50 per pair; the median and the spread
(min..max) of the ratios are reported. Goal: p50 <= 1.3x. For every perch
point it also reports what perch itself spent per request, which the
machine's other load moves much less than latency: CPU time (utime+stime
of all its threads, from /proc), context switches (voluntary and not, summed
over /proc/PID/task/*/status) and, with --strace, system calls (strace -c -f
around a separate 3 s run, which slows perch: not used for latency). Writes the
"## Process runtime" section of bench/RESULTS.md (between
<!-- section:runtimes --> markers) unless --no-results.

    make build
    /usr/bin/python3 bench/runtimes/run.py                          # 7 pairs of 10 s
    /usr/bin/python3 bench/runtimes/run.py --pairs 1 --duration 1s --no-results   # smoke test
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from process_models import train_iris, write_process_model  # noqa: E402

WORK = ROOT / "build" / "bench-work" / "runtimes"
RESULTS = ROOT / "bench" / "RESULTS.md"


def log(message):
    print(message, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def perf_p50(perch, url, duration, warmup, body):
    argv = [str(perch), "perf", "iris", "--protocol", "rest", "--url", url,
            "--concurrency", "1", "--duration", duration, "--warmup", warmup,
            "--input-data", str(body), "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"perch perf failed: {done.stderr[-500:]}")
    [level] = json.loads(done.stdout)
    if level["errors"]:
        raise RuntimeError(f"perch perf saw {level['errors']} errors against {url}")
    return level["p50_ms"] if "p50_ms" in level else level["latency_ms"]["p50"]


def perch_counters(pid, url):
    """(CPU seconds, context switches, requests served) of perch so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    switches = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches += int(line.split()[1])
        except OSError:
            pass  # a thread that ended meanwhile
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as answer:
        metrics = answer.read().decode()
    served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith('perch_inference_requests_total{model="iris"'))
    return cpu, switches, served


def per_request(before, after):
    """perch's CPU us and context switches per request between two counters."""
    requests = max(after[2] - before[2], 1)
    return {"cpu_us": (after[0] - before[0]) * 1e6 / requests,
            "switches": (after[1] - before[1]) / requests}


def syscalls_per_request(perch, pid, url, body):
    """System calls of perch per request: strace -c -f attached around a
    3 s perch perf run (which it slows down: not used for latency)."""
    report = WORK / "strace.txt"
    tracer = subprocess.Popen(["strace", "-c", "-f", "-p", str(pid), "-o", str(report)],
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)  # attached to every thread before the first request
        before = perch_counters(pid, url)
        perf_p50(perch, url, "3s", "0s", body)
        after = perch_counters(pid, url)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    total = re.search(r"^\s*100\.00\s+\S+\s+\S+\s+(\d+)", report.read_text(), re.M)
    return int(total.group(1)) / max(after[2] - before[2], 1) if total else None


def write_results(text):
    begin, end = "<!-- section:runtimes -->", "<!-- /section:runtimes -->"
    current = RESULTS.read_text()
    block = f"{begin}\n{text}\n{end}"
    if begin in current:
        current = re.sub(re.escape(begin) + ".*?" + re.escape(end), block, current,
                         flags=re.S)
    else:
        current = current.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(current)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--duration", default="10s")
    parser.add_argument("--warmup", default="2s")
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--strace", action="store_true",
                        help="also count perch's system calls per request (strace -c -f)")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    perch = WORK / "perch"  # a rebuild during the run changes nothing
    shutil.copy2(args.perch, perch)
    model, x = train_iris()
    write_process_model(WORK / "repo", "iris", model)
    body = WORK / "request.json"
    body.write_text(json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                            "shape": [1, 4],
                                            "data": x[0].tolist()}]}))
    port = free_port()
    log_file = WORK / "perch.log"
    with open(log_file, "wb") as out:
        server = subprocess.Popen([str(perch), "serve", "--repo", str(WORK / "repo"),
                                   "--http-port", str(port), "--grpc-port",
                                   str(free_port()), "--state", str(WORK / "state")],
                                  stdout=out, stderr=subprocess.STDOUT)
    try:
        direct = None
        deadline = time.monotonic() + 60
        while direct is None and time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError("perch exited:\n" + log_file.read_text()[-2000:])
            found = re.search(r"its server is ready at (http://127\.0\.0\.1:\d+)",
                              log_file.read_text())
            direct = found and found.group(1)
            time.sleep(0.2)
        if direct is None:
            raise RuntimeError("the model's server was not ready within 60 s")
        perch_url = f"http://127.0.0.1:{port}"
        ratios, rows, costs = [], [], []
        for pair in range(args.pairs):
            order = [("perch", perch_url), ("direct", direct)]
            if pair % 2:
                order.reverse()
            p50 = {}
            for name, url in order:
                before = perch_counters(server.pid, perch_url)
                p50[name] = perf_p50(perch, url, args.duration, args.warmup, body)
                if name == "perch":
                    costs.append(per_request(before, perch_counters(server.pid, perch_url)))
            ratios.append(p50["perch"] / p50["direct"])
            rows.append(p50)
            log(f"pair {pair + 1}: perch {p50['perch']:.3f} ms, direct "
                f"{p50['direct']:.3f} ms, ratio {ratios[-1]:.3f}; perch "
                f"{costs[-1]['cpu_us']:.0f} us CPU and {costs[-1]['switches']:.2f} context "
                f"switches per request")
        syscalls = (syscalls_per_request(perch, server.pid, perch_url, body)
                    if args.strace else None)
    finally:
        server.terminate()
        server.wait(30)
    median = statistics.median(ratios)
    summary = (f"p50 perch / direct: median {median:.3f}x "
               f"(spread {min(ratios):.3f}..{max(ratios):.3f}) over {len(ratios)} pairs; "
               f"goal <= 1.3x: {'met' if median <= 1.3 else 'MISSED'}")
    cost = (f"perch per request (median of its {len(costs)} points): "
            f"{statistics.median(c['cpu_us'] for c in costs):.0f} us CPU, "
            f"{statistics.median(c['switches'] for c in costs):.2f} context switches"
            + (f", {syscalls:.1f} system calls (strace -c -f)" if syscalls else ""))
    log(summary)
    log(cost)
    if not args.no_results:
        lines = ["## Process runtime", "",
                 "`bench/runtimes/run.py`: a tiny scikit-learn model behind its own Python OIP "
                 "server, sandboxed by perch; `perch perf` REST at concurrency 1 to perch and "
                 f"to the process directly, ABAB, {args.duration} per point.", "",
                 "| pair | perch p50 ms | direct p50 ms | ratio |", "|---|---|---|---|"]
        lines += [f"| {i + 1} | {r['perch']:.3f} | {r['direct']:.3f} | {q:.3f} |"
                  for i, (r, q) in enumerate(zip(rows, ratios))]
        lines += ["", summary, "", cost]
        write_results("\n".join(lines))


if __name__ == "__main__":
    main()
