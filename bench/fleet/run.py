#!/usr/bin/python3
"""Fleet scale benchmark: one `perch hub` under the heartbeats and
desired-state polls of many simulated devices (issue 5 item 5). Writes the
"## Fleet hub scale" section of bench/RESULTS.md (between
<!-- section:fleet --> markers) unless --no-results.

    make build                              # build/perch and build/bench/bench_fleet_load
    /usr/bin/python3 bench/fleet/run.py     # about 5 minutes with the defaults

Each repeat starts a fresh hub (`perch hub --data TMP --port FREE --threads
N`, admin token from PERCH_HUB_ADMIN_TOKEN) and runs bench_fleet_load
(bench/fleet_load.cpp) against it: enrol --devices devices in --locations
locations through the API, create deployments (one canary in progress),
then every device heartbeats every --interval s and polls its desired
state (ETag'd) every --poll-interval s, divided by --compression, open
loop, one new connection per request as perch's agent does. Measured
over --duration after --warmup: latency percentiles (from each request's
scheduled send time), errors, achieved rate; the hub's CPU (utime+stime
from /proc/PID/stat between the load generator's measure_start and
measure_end markers), VmHWM and VmRSS.

Baseline, side by side in the same repeat (alternating which goes first):
the same load generator on the same schedule sending GET /healthz to a
fresh hub instead: what the HTTP connections alone cost. Medians of the
repeats; the goal is heartbeat p99 < 100 ms. Logs and the last summary go to
build/bench-work/fleet/.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402  (bench/run.py: machine line, sections, helpers)

GOAL_P99_MS = 100.0
ADMIN_TOKEN = "fleet-bench-admin-token-0123456789"


def log(message):
    print(f"[fleet-bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def read_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class Hub:
    """A fresh `perch hub` with its own temporary data folder."""

    def __init__(self, ctx, name):
        self.port = bench.free_port()
        self.data = Path(tempfile.mkdtemp(prefix="perch-fleet-bench-"))
        self.log_path = ctx.work / "logs" / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "w")
        env = dict(os.environ, PERCH_HUB_ADMIN_TOKEN=ADMIN_TOKEN)
        argv = [str(ctx.perch), "hub", "--data", str(self.data), "--port", str(self.port),
                "--threads", str(ctx.args.hub_threads), "--log-level", ctx.args.hub_log_level]
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if bench.http_request(self.port, "GET", "/healthz", timeout=1.0)[0] == 200:
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"the hub did not start; see {self.log_path}")

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()
        shutil.rmtree(self.data, ignore_errors=True)


def run_once(ctx, target, repeat):
    """One hub, one load run; returns the load generator's figures plus the
    hub's CPU and memory, and how much CPU other work took meanwhile."""
    a = ctx.args
    hub = Hub(ctx, f"hub-{target}-{repeat}")
    try:
        argv = [str(ctx.load), "--url", hub.url, "--target", target,
                "--devices", str(a.devices), "--locations", str(a.locations),
                "--interval", str(a.interval), "--poll-interval", str(a.poll_interval),
                "--compression", str(a.compression), "--warmup", str(a.warmup_s),
                "--duration", str(a.duration_s), "--threads", str(a.threads)]
        if a.keep_alive:
            argv.append("--keep-alive")
        env = dict(os.environ, PERCH_HUB_ADMIN_TOKEN=ADMIN_TOKEN)
        stderr_path = ctx.work / "logs" / f"load-{target}-{repeat}.err"
        with open(stderr_path, "w") as stderr:
            load = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                    env=env)
            marks, result = {}, None
            for line in load.stdout:
                event = json.loads(line)
                name = event.get("event")
                if name is None:
                    result = event
                    continue
                marks[name] = {"time": time.monotonic(), "hub": bench.process_ticks(hub.process.pid),
                               "load": bench.process_ticks(load.pid), "machine": bench.cpu_ticks(),
                               "rss_kb": read_status_kb(hub.process.pid, "VmRSS"),
                               "hwm_kb": read_status_kb(hub.process.pid, "VmHWM")}
            load.wait()
        if load.returncode != 0 or result is None or "measure_end" not in marks:
            tail = stderr_path.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"bench_fleet_load failed (exit {load.returncode}): {tail}")
        start, end = marks["measure_start"], marks["measure_end"]
        seconds = end["time"] - start["time"]
        hub_ticks = end["hub"] - start["hub"]
        load_ticks = end["load"] - start["load"]
        busy = end["machine"][0] - start["machine"][0]
        total = end["machine"][1] - start["machine"][1]
        result["hub"] = {
            "cpu_cores": hub_ticks / bench.CLK_TCK / seconds,
            "load_cpu_cores": load_ticks / bench.CLK_TCK / seconds,
            "rss_after_setup_mib": marks["setup_done"]["rss_kb"] / 1024,
            "hwm_mib": end["hwm_kb"] / 1024,
            "rss_mib": end["rss_kb"] / 1024,
            "threads": a.hub_threads,
        }
        result["other_load"] = max(0.0, busy - hub_ticks - load_ticks) / max(1, total)
        return result
    finally:
        hub.stop()


def measure(ctx, target, repeat):
    """run_once, again when other work on the machine disturbed it (as
    bench/run.py does); keeps the least disturbed run."""
    best = None
    for attempt in range(1 + ctx.args.retries):
        ctx.quiet_check()
        result = run_once(ctx, target, repeat)
        if best is None or result["other_load"] < best["other_load"]:
            best = result
        if result["other_load"] <= ctx.args.max_other_load:
            break
        log(f"  {target}: other work took {result['other_load']:.0%} of the CPU meanwhile"
            + ("; measuring again" if attempt < ctx.args.retries else "; keeping the least "
               "disturbed run"))
        if attempt < ctx.args.retries:
            ctx.remeasured += 1
    ctx.during.append(best["other_load"])
    return best


def brief(result):
    hb, poll, hub = result["heartbeat"], result["poll"], result["hub"]
    return (f"heartbeat p50 {hb['p50_ms']:.2f} p99 {hb['p99_ms']:.2f} max {hb['max_ms']:.1f} ms "
            f"({hb['rate']:.0f}/s, {hb['errors']} errors); poll p99 {poll['p99_ms']:.2f} ms "
            f"({poll['rate']:.0f}/s, {poll['errors']} errors); hub {hub['cpu_cores']:.2f} cores, "
            f"HWM {hub['hwm_mib']:.0f} MiB; other load {result['other_load']:.0%}")


def med(runs, *path):
    values = []
    for run in runs:
        value = run
        for key in path:
            value = value[key]
        values.append(value)
    return bench.median(values)


def report(ctx, runs):
    a = ctx.args
    fleet, base = runs["fleet"], runs["healthz"]
    setup = fleet[0]["setup"]
    hb_rate = a.devices * a.compression / a.interval
    poll_rate = a.devices * a.compression / a.poll_interval
    connections = ("one keep-alive connection per client thread (--keep-alive), as perch's "
                   "agent (HubClient on one kept-alive http::Client) does" if a.keep_alive
                   else "a new TCP connection per request (the worst case)")
    lines = [
        f"Written by `bench/fleet/run.py` (see bench/README.md). {a.devices} simulated devices "
        f"in {a.locations} locations, enrolled through `POST /api/v1/enrol`; "
        f"{setup['deployments']} deployments (one for all devices, one per location, one on "
        f"arm64 devices whose second revision is a 10% canary kept in progress), "
        f"{setup['models_per_device']:.2f} models per device. Each device heartbeats every "
        f"{a.interval:g} s and polls its desired state (`If-None-Match`) every "
        f"{a.poll_interval:g} s as perch's agent does, compressed ×{a.compression:g}: "
        f"{hb_rate:.0f} heartbeats/s and {poll_rate:.0f} polls/s scheduled, each device at its "
        f"own random phase, open loop (latency counted from each request's scheduled send "
        f"time). Heartbeat bodies report the device's desired models READY (~"
        f"{int(setup['models_per_device'] + 0.5)} model reports). Client: `bench_fleet_load`, "
        f"{a.threads} threads, {connections}. Hub: `perch hub --threads {a.hub_threads}`, "
        f"fresh data folder per run (SQLite WAL, synchronous=NORMAL). Baseline: the same "
        f"client and schedule sending `GET /healthz` to a fresh hub. Hub CPU: utime+stime over "
        f"the measured window / its length (1.0 = one core of {os.cpu_count()}).",
        "",
    ]
    rows = []

    def row(label, path, fmt, ratio=True):
        f, b = med(fleet, *path), med(base, *path)
        rows.append([label, fmt(f), fmt(b), f"{f / b:.2f}×" if ratio and b else "—"])

    ms = lambda v: f"{v:.2f} ms"  # noqa: E731
    for kind, title in (("heartbeat", "heartbeat"), ("poll", "desired-state poll")):
        for p in ("p50", "p90", "p99", "max"):
            row(f"{title} {p}", (kind, f"{p}_ms"), ms)
        row(f"{title} rate achieved (scheduled {hb_rate if kind == 'heartbeat' else poll_rate:.0f}/s)",
            (kind, "rate"), lambda v: f"{v:.0f}/s", ratio=False)
        row(f"{title} errors", (kind, "errors"), lambda v: f"{v:.0f}", ratio=False)
    row("hub CPU (cores)", ("hub", "cpu_cores"), lambda v: f"{v:.2f}")
    row("hub peak RSS (VmHWM)", ("hub", "hwm_mib"), lambda v: f"{v:.1f} MiB")
    row("hub RSS at the end (VmRSS)", ("hub", "rss_mib"), lambda v: f"{v:.1f} MiB")
    row("client CPU (cores)", ("hub", "load_cpu_cores"), lambda v: f"{v:.2f}")
    lines.append(bench.table(["measure (median of runs)", "fleet API", "/healthz baseline",
                              "fleet / baseline"], rows))
    p99 = med(fleet, "heartbeat", "p99_ms")
    poll_p99 = med(fleet, "poll", "p99_ms")
    met = p99 < GOAL_P99_MS
    lines.append(f"**Heartbeat p99 {p99:.2f} ms: goal p99 < {GOAL_P99_MS:.0f} ms "
                 f"{'met' if met else 'MISSED'}** (desired-state poll p99 {poll_p99:.2f} ms). "
                 f"Setup (not timed as load): {a.devices} enrolments at "
                 f"{med(fleet, 'setup', 'enrolments_per_second'):.0f}/s; hub RSS after setup "
                 f"{med(fleet, 'hub', 'rss_after_setup_mib'):.1f} MiB.")
    lines.append("")
    lines.append("Each run:")
    lines.append("")
    per_run = []
    for target in ("fleet", "healthz"):
        for i, r in enumerate(runs[target]):
            per_run.append([target, i + 1, f"{r['heartbeat']['p50_ms']:.2f}",
                            f"{r['heartbeat']['p99_ms']:.2f}", f"{r['heartbeat']['max_ms']:.1f}",
                            f"{r['poll']['p99_ms']:.2f}",
                            f"{r['heartbeat']['rate'] + r['poll']['rate']:.0f}",
                            r['heartbeat']['errors'] + r['poll']['errors'],
                            f"{r['hub']['cpu_cores']:.2f}", f"{r['hub']['hwm_mib']:.1f}",
                            f"{r['other_load']:.0%}"])
    lines.append(bench.table(["side", "run", "hb p50 ms", "hb p99 ms", "hb max ms",
                              "poll p99 ms", "req/s", "errors", "hub cores", "HWM MiB",
                              "other load"], per_run))
    if a.analysis:
        lines.append(Path(a.analysis).read_text().strip())
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--load", help="bench_fleet_load (default: build/bench/)")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench-work" / "fleet"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", type=int, default=10000)
    parser.add_argument("--locations", type=int, default=10)
    parser.add_argument("--interval", type=float, default=10.0,
                        help="seconds between a device's heartbeats (the agent's default: 10)")
    parser.add_argument("--poll-interval", type=float, default=5.0,
                        help="seconds between a device's desired-state polls (agent: 5)")
    parser.add_argument("--compression", type=float, default=1.0,
                        help="divide both intervals by this (time compression)")
    parser.add_argument("--duration", default="30s", help="measured window per run")
    parser.add_argument("--warmup", default="5s", help="load before the window opens")
    parser.add_argument("--threads", type=int, default=64, help="client threads")
    parser.add_argument("--hub-threads", type=int, default=16,
                        help="perch hub --threads (each keep-alive connection holds one)")
    parser.add_argument("--keep-alive", action="store_true",
                        help="client threads keep their connections (needs --hub-threads "
                             "above --threads)")
    parser.add_argument("--hub-log-level", default="info")
    parser.add_argument("--wait-quiet", type=float, default=60.0)
    parser.add_argument("--max-other-load", type=float, default=0.15)
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--analysis", help="a Markdown file appended to the section (the "
                        "hand-written reading of the figures)")
    args = parser.parse_args()
    args.duration_s = float(args.duration.rstrip("s"))
    args.warmup_s = float(args.warmup.rstrip("s"))
    if args.keep_alive and args.hub_threads <= args.threads:
        parser.error("--keep-alive pins one hub thread per client thread: give --hub-threads "
                     "more than --threads")

    ctx = bench.Context(args)
    perch = Path(args.perch)
    if not perch.exists():
        parser.error(f"{perch} does not exist: build first (see bench/README.md)")
    candidates = [Path(args.load)] if args.load else [
        perch.parent / "bench" / "bench_fleet_load", ROOT / "build" / "bench" / "bench_fleet_load"]
    found = [c for c in candidates if c.exists()]
    if not found:
        parser.error("bench_fleet_load not found in " + ", ".join(map(str, candidates)) +
                     ": build the main tree (`cmake --build build --target bench_fleet_load`)")
    ctx.load = found[0].resolve()
    # A private copy of perch, so that a rebuild during the run changes nothing.
    bench.PERCH_COMMIT = bench.current_commit()
    ctx.perch = ctx.work / "perch"
    shutil.copy2(perch, ctx.perch)

    runs = {"fleet": [], "healthz": []}
    for repeat in range(args.repeats):
        for target in bench.alternate(repeat, "fleet", "healthz"):
            log(f"run {repeat + 1}/{args.repeats}: {target}")
            result = measure(ctx, target, repeat)
            runs[target].append(result)
            log("  " + brief(result))
    summary = {"machine": bench.machine_info(), "settings": {
        k: v for k, v in vars(args).items() if k not in ("analysis",)}, "runs": runs}
    (ctx.work / "last_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    body = report(ctx, runs)
    print(body)
    bench.write_section(ctx, "fleet", "Fleet hub scale", body)


if __name__ == "__main__":
    main()
