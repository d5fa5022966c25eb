#!/usr/bin/python3
"""perch benchmarks against their baselines (see bench/README.md).

    bench/run.py tiny        a. REST/gRPC p50 on a tiny model vs nginx `return 200` and echo servers
    bench/run.py mobilenet   b. MobileNetV2 p50 and saturated throughput vs ORT in-process
    bench/run.py batching    c. dynamic batching on vs off (MobileNetV2)
    bench/run.py node        d. onnxruntime-node server vs perch REST JSON (MobileNetV2)
    bench/run.py coldstart   e. cold start vs a bare ORT program, and perch's idle RSS
    bench/run.py all         all of the above, in that order

Every comparison starts and stops its own servers on free loopback ports,
measures perch and its baseline in interleaved pairs of short slices
(--repeats pairs, ABAB..., alternating which side goes first), prints the
median of the per-pair ratios perch/baseline with their spread, and
rewrites its own section of bench/RESULTS.md: the machine drifts by up to
1.5x from one minute to the next, and a ratio within a pair cancels it. Run
with Debian's /usr/bin/python3 after `make build`, or `make bench`.
"""
import argparse
import http.client
import json
import os
import re
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = "/usr/bin/python3"


# ---------------------------------------------------------------- helpers --

def log(message):
    print(message, flush=True)


def median(values):
    return statistics.median(values) if values else float("nan")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_tcp(port, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def fresh(path):
    """`path` emptied and made again: a benchmark's scratch folder."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


class Hub:
    """A `perch hub` on loopback for the store, bundle and network-local
    benchmarks: its data folder, registry host, admin token."""

    def __init__(self, perch, data, extra_args=()):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.log = open(data.parent / "hub.log", "wb")
        self.process = subprocess.Popen(
            [str(perch), "hub", "--data", str(data), "--port", str(self.port),
             *[str(arg) for arg in extra_args]],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 30
        while True:
            try:
                if http_request(self.port, "GET", "/healthz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the hub did not answer within 30 s; see {self.log.name}")
            time.sleep(0.05)
        self.token = (data / "admin-token").read_text().strip()

    def stop(self):
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def replace_results_section(path, key, title, body):
    """Writes `body` as section `key` of RESULTS.md at `path` (between its
    <!-- section:KEY --> markers), replacing the one there or appending it."""
    path = Path(path)
    text = path.read_text()
    start, end = f"<!-- section:{key} -->", f"<!-- /section:{key} -->"
    section = f"{start}\n## {title}\n\n{body.rstrip()}\n{end}"
    if start in text:
        text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def http_request(port, method, path, body=None, headers=None, timeout=30.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def wait_http_ready(port, timeout=120.0, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            status, _, _ = http_request(port, "GET", "/v2/health/ready", timeout=2.0)
            if status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def cpu_busy(seconds=1.0):
    """Fraction of the machine's CPU time that was busy over `seconds` (0..1)."""
    def sample():
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return idle, sum(fields)
    idle0, total0 = sample()
    time.sleep(seconds)
    idle1, total1 = sample()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks():
    """(busy, total) ticks of the whole machine; steal counts as busy."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    total = sum(fields[:8])  # guest time is already inside user
    return total - fields[3] - fields[4], total


def process_ticks(pid):
    """utime + stime of a live process (all its threads), in ticks; 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def read_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def perch_stage_totals(http_port, model):
    """perch's own per-request timing sums from /metrics: {count, queue_s, compute_s}."""
    _, _, text = http_request(http_port, "GET", "/metrics")
    totals = {"count": 0.0, "queue_s": 0.0, "compute_s": 0.0}
    names = {"perch_inference_queue_duration_seconds_sum": "queue_s",
             "perch_inference_compute_duration_seconds_sum": "compute_s",
             "perch_inference_compute_duration_seconds_count": "count"}
    for line in text.decode().splitlines():
        for name, key in names.items():
            if line.startswith(name + "{") and f'model="{model}"' in line:
                totals[key] += float(line.rsplit(" ", 1)[1])
    return totals


class StageMeter:
    """Mean time a request spent queued for a worker and in the engine, in
    perch, over one perch perf run (from the /metrics histograms' sums)."""

    def __init__(self, http_port, model):
        self.http_port, self.model = http_port, model
        self.before = perch_stage_totals(http_port, model)

    def done(self):
        after = perch_stage_totals(self.http_port, self.model)
        count = after["count"] - self.before["count"]
        if count <= 0:
            return {"queue_ms": float("nan"), "compute_ms": float("nan")}
        return {"queue_ms": 1000 * (after["queue_s"] - self.before["queue_s"]) / count,
                "compute_ms": 1000 * (after["compute_s"] - self.before["compute_s"]) / count}


class Server:
    """A server process of one benchmark, logged to WORK/logs/NAME.log."""

    def __init__(self, ctx, name, argv, http_port=None, grpc_port=None, cwd=None):
        self.name = name
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.log_path = ctx.work / "logs" / f"{name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=cwd)
        ctx.servers.append(self)

    def wait_ready(self, timeout=180.0):
        ok = True
        if self.http_port:
            ok = wait_http_ready(self.http_port, timeout, self.process)
        if ok and self.grpc_port:
            ok = wait_tcp(self.grpc_port, timeout)
        if not ok or self.process.poll() is not None:
            self.stop()
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.name} did not become ready; its log ends with:\n{tail}")
        return self

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


class Context:
    def __init__(self, args):
        self.args = args
        self.perch = Path(args.perch).resolve()
        self.work = Path(args.work).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.servers = []
        self.bin = None
        self.background = []  # CPU busy fraction seen before each measurement
        self.failures = []    # perf runs that failed and were repeated
        self.during = []      # CPU share other work took during each kept measurement
        self.remeasured = 0   # measurements repeated because other work disturbed them

    def quiet_check(self):
        """Before a measurement: how busy is the machine with others' work?

        Our servers are idle at this point, so anything busy is someone else
        (a build, another test). With --wait-quiet, waits for it to calm down."""
        deadline = time.monotonic() + self.args.wait_quiet
        busy = cpu_busy(0.5)
        while busy > 0.15 and time.monotonic() < deadline:
            busy = cpu_busy(1.0)
        self.background.append(busy)
        if busy > 0.15:
            log(f"  warning: the machine was {busy:.0%} busy with other work before this point")
        return busy

    def own_ticks(self):
        """CPU ticks used by this benchmark: its servers, and its finished children
        (perch perf, the in-process baseline, cold-started processes)."""
        ticks = sum(process_ticks(server.process.pid) for server in self.servers)
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ticks + (usage.ru_utime + usage.ru_stime) * CLK_TCK

    def guarded(self, what, measure):
        """Runs `measure()`, and again (up to --retries times) when other work
        on the machine took more than --max-other-load of its CPU meanwhile;
        keeps the least disturbed run."""
        best = None
        for attempt in range(1 + self.args.retries):
            self.quiet_check()
            busy0, total0 = cpu_ticks()
            own0 = self.own_ticks()
            result = measure()
            busy1, total1 = cpu_ticks()
            own1 = self.own_ticks()
            other = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(1, total1 - total0)
            if best is None or other < best[0]:
                best = (other, result)
            if other <= self.args.max_other_load:
                break
            log(f"  {what}: other work took {other:.0%} of the CPU meanwhile"
                + ("; measuring again" if attempt < self.args.retries else "; keeping the "
                   f"least disturbed run ({best[0]:.0%})"))
            if attempt < self.args.retries:
                self.remeasured += 1
        self.during.append(best[0])
        return best[1]

    def background_note(self):
        failures = ""
        if self.failures:
            failures = (" Points measured again after a failed run: " +
                        "; ".join(self.failures) + ".")
            self.failures = []
        if not self.during:
            return failures
        values, remeasured = self.during, self.remeasured
        self.during, self.background, self.remeasured = [], [], 0
        return failures + (
            f" Other work on the machine (CPU not used by this benchmark's own processes) "
            f"during the kept measurements: median {median(values):.0%}, max {max(values):.0%} "
            f"of both cores; {remeasured} measurement(s) were repeated because other work took "
            f"more than {self.args.max_other_load:.0%}.")

    def stop_all(self):
        for server in reversed(self.servers):
            try:
                server.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self.servers.clear()

    # --- tools -----------------------------------------------------------
    def bench_bin(self, name):
        if self.bin is None:
            self.bin = find_or_build_bench_binaries(self)
        return str(self.bin / name)

    def perf(self, model, protocol, port, concurrency, input_data, binary=False,
             duration=None, warmup=None):
        argv = [str(self.perch), "perf", model, "--protocol", protocol,
                "--concurrency", ",".join(str(c) for c in concurrency),
                "--duration", duration or self.args.duration,
                "--warmup", warmup or self.args.warmup,
                "--input-data", str(input_data), "--json"]
        if protocol == "rest":
            argv += ["--url", f"http://127.0.0.1:{port}"]
        else:
            argv += ["--grpc-target", f"127.0.0.1:{port}"]
        if binary:
            argv.append("--binary")
        for attempt in (1, 2):
            done = self.guarded(
                f"{model} {protocol} c={argv[argv.index('--concurrency') + 1]}",
                lambda: subprocess.run(argv, capture_output=True, text=True, timeout=1800))
            levels = json.loads(done.stdout) if done.returncode == 0 else []
            errors = sum(level["errors"] for level in levels)
            if done.returncode == 0 and errors == 0:
                return {level["concurrency"]: level for level in levels}
            # Find out what went wrong (the table output names the first error),
            # then try the point once more.
            probe = [a for a in argv if a != "--json"]
            probe[probe.index("--duration") + 1] = "1s"
            probe[probe.index("--warmup") + 1] = "0s"
            seen = subprocess.run(probe, capture_output=True, text=True, timeout=600)
            log(f"  perch perf failed (exit {done.returncode}, {errors} errors) on attempt "
                f"{attempt}: {done.stderr.strip()[-500:]} / probe: {seen.stderr.strip()[-500:]}")
            self.failures.append(f"{' '.join(argv[2:5])}: {seen.stderr.strip()[-300:]}")
        raise RuntimeError(f"perch perf failed twice: {' '.join(argv)}")

    def perch_serve(self, name, repo, extra=()):
        http_port, grpc_port = free_port(), free_port()
        argv = [str(self.perch), "serve", "--repo", str(repo), "--http-port", str(http_port),
                "--grpc-port", str(grpc_port), *extra]
        return Server(self, name, argv, http_port=http_port, grpc_port=grpc_port).wait_ready()


def find_or_build_bench_binaries(ctx):
    names = ["bench_ort_inprocess", "bench_echo_http", "bench_echo_grpc"]
    candidates = []
    if ctx.args.bench_bin:
        candidates.append(Path(ctx.args.bench_bin))
    candidates += [ctx.perch_build / "bench", ROOT / "build" / "bench-standalone"]
    for folder in candidates:
        if all((folder / n).exists() for n in names):
            return folder.resolve()
    # Not built by the main tree (no add_subdirectory(bench) yet): build alone.
    out = ROOT / "build" / "bench-standalone"
    log(f"building the baselines in {out}")
    subprocess.run(["cmake", "-S", str(BENCH), "-B", str(out),
                    "-DCMAKE_BUILD_TYPE=RelWithDebInfo"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", str(out), "-j", str(os.cpu_count() or 2)], check=True)
    return out


# ---------------------------------------------------------- models & data --

def prepare_models(ctx):
    """Models, repositories and request bodies under WORK; made once."""
    w = ctx.work
    models = w / "models"
    models.mkdir(exist_ok=True)
    exporter = BENCH / "models" / "export_mobilenet.py"
    if not (models / "mobilenet.onnx").exists():
        log("exporting MobileNetV2 (torchvision, random weights)")
        subprocess.run([PYTHON, str(exporter), str(models / "mobilenet.onnx")], check=True)
    if not (models / "tiny.onnx").exists():
        subprocess.run([PYTHON, str(exporter), "--tiny", str(models / "tiny.onnx")], check=True)

    def repo(name, entries):
        root = w / "repos" / name
        if root.exists():
            shutil.rmtree(root)
        for model, (onnx, config) in entries.items():
            (root / model / "1").mkdir(parents=True)
            shutil.copyfile(models / onnx, root / model / "1" / "model.onnx")
            if config is not None:
                (root / model / "model.json").write_text(json.dumps(config, indent=2) + "\n")
        return root

    batch_off = {"max_batch_size": 8}
    batch_on = {"max_batch_size": 8,
                "dynamic_batching": {"preferred_batch_sizes": [4, 8],
                                     "max_queue_delay_us": ctx.args.batch_delay_us}}
    ctx.repos = {
        "tiny": repo("tiny", {"tiny": ("tiny.onnx", None)}),
        "mobilenet": repo("mobilenet", {"mobilenet": ("mobilenet.onnx", None)}),
        "batch_off": repo("batch_off", {"mobilenet": ("mobilenet.onnx", batch_off)}),
        "batch_on": repo("batch_on", {"mobilenet": ("mobilenet.onnx", batch_on)}),
        "all": repo("all", {"tiny": ("tiny.onnx", None), "mobilenet": ("mobilenet.onnx", None)}),
    }
    ctx.models = {"tiny": models / "tiny.onnx", "mobilenet": models / "mobilenet.onnx"}

    # Request bodies: OIP JSON, fixed pseudo-random data (perch perf --input-data).
    import random
    rng = random.Random(42)
    ctx.inputs = {}
    for name, shape in (("tiny", [1, 256]), ("mobilenet", [1, 3, 224, 224])):
        path = w / f"{name}_request.json"
        count = 1
        for dim in shape:
            count *= dim
        values = [round(rng.random(), 6) for _ in range(count)]
        if not path.exists():
            path.write_text(json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                                    "shape": shape, "data": values}]}))
        ctx.inputs[name] = path
        # The same tensor as a binary-extension request (for cold start polling).
        header = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": shape,
                                         "parameters": {"binary_data_size": 4 * count}}],
                             "parameters": {"binary_data_output": True}}).encode()
        setattr(ctx, f"{name}_binary_request",
                (header + struct.pack(f"<{count}f", *values), len(header)))


# ---------------------------------------------------------- machine info --

PERCH_COMMIT = "unknown"  # of the perch binary measured, read when the run starts


def current_commit():
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src", "proto",
                            "CMakeLists.txt"], capture_output=True, text=True).stdout.strip()
    return commit + (" (+ uncommitted changes in src/)" if dirty else "")


def machine_info():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": PERCH_COMMIT,
        "kernel": os.uname().release,
    }


def machine_line(ctx):
    m = machine_info()
    a = ctx.args
    return (f"Machine: {m['nproc']} cores, {m['cpu']}, {m['ram_gib']} GiB RAM, Linux {m['kernel']}; "
            f"{m['date']}; perch commit {m['commit']}. Settings: {a.repeats} repeats, "
            f"{a.duration} per point after {a.warmup} warm-up; medians of the repeats.")


def write_section(ctx, key, title, body):
    if ctx.args.no_results:
        return
    path = Path(ctx.args.results)
    text = path.read_text() if path.exists() else (
        "# Benchmark results\n\nWritten by `bench/run.py` (see bench/README.md); every figure "
        "below was measured, none is estimated. Ratios are perch / baseline.\n")
    start, end = f"<!-- section:{key} -->", f"<!-- /section:{key} -->"
    note = ctx.background_note()
    section = (f"{start}\n## {title}\n\n{machine_line(ctx)} {note}\n\n{body.rstrip()}\n{end}")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        # Keep sections in a..e order whatever order they are run in.
        order = ["tiny", "mobilenet", "batching", "node", "coldstart"]
        insert_at = len(text)
        for later in order[order.index(key) + 1:] if key in order else []:
            found = text.find(f"<!-- section:{later} -->")
            if found >= 0:
                insert_at = min(insert_at, found)
        text = text[:insert_at].rstrip() + "\n\n" + section + "\n\n" + text[insert_at:].lstrip()
    path.write_text(text.rstrip() + "\n")
    log(f"wrote section '{key}' of {path}")


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(out) + "\n"


def fmt_ms(v):
    return f"{v:.3f}" if v < 10 else f"{v:.2f}"


def verdict(ratio, goal, lower_is_better=True):
    ok = ratio <= goal if lower_is_better else ratio >= goal
    return ("met" if ok else "MISSED") + f" (goal {'≤' if lower_is_better else '≥'} {goal}×)"


def alternate(repeat, a, b):
    """Measurement order for one repeat: a then b, then b then a, ..."""
    return (a, b) if repeat % 2 == 0 else (b, a)


def pair_ratios(numerators, denominators):
    """The ratio within each pair of interleaved runs (run i of each side):
    drift of the machine between pairs cancels out, within a pair it does
    not have the time to."""
    return [n / d for n, d in zip(numerators, denominators)]


def ratio_cell(ratios):
    """The median of per-pair ratios with their spread: "1.234× (1.180–1.330)"."""
    return f"{median(ratios):.3f}× ({min(ratios):.3f}–{max(ratios):.3f})"


def nginx_return(ctx, name, body, content_type, headers=()):
    """nginx answering every request with `return 200 BODY` (the physical
    floor of an HTTP answer): one worker process, keep-alive without limit,
    no access log."""
    if not shutil.which("nginx"):
        raise RuntimeError("nginx is not installed: run `scripts/bootstrap.sh bench`")
    port = free_port()
    folder = ctx.work / "nginx" / name
    folder.mkdir(parents=True, exist_ok=True)
    quoted = body.replace("\\", "\\\\").replace("'", "\\'").replace("$", "${dollar}")
    extra = "".join(f"      add_header {key} {value} always;\n" for key, value in headers)
    temp = "".join(f"  {kind}_temp_path {folder / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (folder / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {folder / 'nginx.pid'};\n"
        f"error_log {folder / 'error.log'} warn;\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n  keepalive_requests 100000000;\n"
        f"  keepalive_timeout 600s;\n{temp}"
        f"  geo $dollar {{ default \"$\"; }}\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    location / {{\n"
        f"      default_type {content_type};\n{extra}      return 200 '{quoted}';\n"
        f"    }}\n  }}\n}}\n")
    return Server(ctx, name, ["nginx", "-c", str(folder / "nginx.conf"), "-p", str(folder)],
                  http_port=port).wait_ready()


# ------------------------------------------------------- a. tiny model --

def bench_tiny(ctx):
    log("== a. tiny model: perch vs bare echo servers (concurrency 1)")
    perch = ctx.perch_serve("perch-tiny", ctx.repos["tiny"])
    tiny_json = ctx.inputs["tiny"].read_bytes()
    # perch's own answers, so the echo servers send the same bytes.
    status, _, json_answer = http_request(perch.http_port, "POST", "/v2/models/tiny/infer",
                                          tiny_json, {"Content-Type": "application/json"})
    assert status == 200, json_answer
    body, header_len = ctx.tiny_binary_request
    status, headers, bin_answer = http_request(
        perch.http_port, "POST", "/v2/models/tiny/infer", body,
        {"Content-Type": "application/octet-stream",
         "Inference-Header-Content-Length": str(header_len)})
    assert status == 200, bin_answer
    headers = {k.lower(): v for k, v in headers.items()}
    (ctx.work / "tiny_answer.json").write_bytes(json_answer)
    (ctx.work / "tiny_answer.bin").write_bytes(bin_answer)
    bin_header = headers.get("inference-header-content-length", str(len(bin_answer)))

    def echo_http(name, answer, content_type, extra):
        port = free_port()
        argv = [ctx.bench_bin("bench_echo_http"), "--port", str(port), "--response-file",
                str(answer), "--content-type", content_type, *extra]
        return Server(ctx, name, argv, http_port=port).wait_ready()

    echo_json = echo_http("echo-http-json", ctx.work / "tiny_answer.json", "application/json", [])
    echo_bin = echo_http("echo-http-binary", ctx.work / "tiny_answer.bin",
                         headers.get("content-type", "application/octet-stream"),
                         ["--header", f"Inference-Header-Content-Length:{bin_header}"])
    grpc_port = free_port()
    echo_grpc = Server(ctx, "echo-grpc", [ctx.bench_bin("bench_echo_grpc"), "--port",
                                          str(grpc_port), "--output-bytes", "1024"],
                       grpc_port=grpc_port).wait_ready()

    # The floors: nginx's `return 200` of a body as long as perch's answer
    # (perf checks only the status), beside the echo servers on perch's own
    # HTTP and gRPC libraries.
    nginx_json = nginx_return(ctx, "nginx-json", json_answer.decode(), "application/json")
    nginx_bin = nginx_return(
        ctx, "nginx-binary", (json_answer.decode() * 8)[:len(bin_answer)],
        "application/octet-stream", [("Inference-Header-Content-Length", bin_header)])

    # label, protocol, binary, {side: port}, floor side, goal against the floor
    cases = [
        ("REST JSON", "rest", False, {"perch": perch.http_port, "nginx": nginx_json.http_port,
                                      "echo": echo_json.http_port}, "nginx", 1.5),
        ("REST binary", "rest", True, {"perch": perch.http_port, "nginx": nginx_bin.http_port,
                                       "echo": echo_bin.http_port}, "nginx", 1.5),
        ("gRPC", "grpc", False, {"perch": perch.grpc_port, "echo": echo_grpc.grpc_port},
         "echo", 1.3),
    ]
    samples = {(case[0], side): [] for case in cases for side in case[3]}
    stages = {case[0]: [] for case in cases}
    for r in range(ctx.args.repeats):
        for label, protocol, binary, ports, _, _ in cases:
            sides = list(ports)
            for side in sides[r % len(sides):] + sides[:r % len(sides)]:
                meter = StageMeter(perch.http_port, "tiny") if side == "perch" else None
                level = ctx.perf("tiny", protocol, ports[side], [1], ctx.inputs["tiny"],
                                 binary)[1]
                if meter:
                    stages[label].append(meter.done())
                samples[(label, side)].append(level["p50_ms"])
                log(f"  pair {r + 1} {label:11s} {side:5s} p50 {level['p50_ms']:.4f} ms "
                    f"({level['throughput']:.0f}/s)")
    ctx.stop_all()

    rows, summary = [], {}
    for label, _, _, ports, floor, goal in cases:
        perch_p50 = samples[(label, "perch")]
        ratios = pair_ratios(perch_p50, samples[(label, floor)])
        echo_ratios = pair_ratios(perch_p50, samples[(label, "echo")])
        queue_ms = median([x["queue_ms"] for x in stages[label]])
        compute_ms = median([x["compute_ms"] for x in stages[label]])
        summary[label] = {"perch_p50_ms": median(perch_p50),
                          f"{floor}_p50_ms": median(samples[(label, floor)]),
                          "ratio": median(ratios), "ratio_min": min(ratios),
                          "ratio_max": max(ratios), "echo_ratio": median(echo_ratios),
                          "perch_queue_ms": queue_ms, "perch_compute_ms": compute_ms}
        floor_name = "nginx `return 200`" if floor == "nginx" else "bare gRPC echo"
        rows.append([label, fmt_ms(median(perch_p50)),
                     f"{fmt_ms(median(samples[(label, floor)]))} ({floor_name})",
                     ratio_cell(ratios), verdict(median(ratios), goal),
                     ratio_cell(echo_ratios) if floor != "echo" else "—",
                     f"{queue_ms * 1000:.0f} / {compute_ms * 1000:.0f}"])
        log(f"  {label}: perch / {floor} {ratio_cell(ratios)}")
    body = (
        f"Model `tiny`: FP32 [1,256] in and out (y = x·1). Client: `perch perf`, concurrency 1, "
        f"{ctx.args.repeats} rounds of {ctx.args.duration} slices, the sides of a round in "
        f"rotating order; a ratio is perch's p50 over the baseline's within one round, the "
        f"table gives their median and spread (min–max). Baselines answer a fixed body as long "
        f"as perch's answer ({len(json_answer)} B JSON, {len(bin_answer)} B binary; gRPC 1024 "
        f"raw bytes) without reading the request: nginx `return 200` (one worker process) and "
        f"echo servers on perch's own HTTP and gRPC libraries.\n\n" +
        table(["protocol", "perch p50 ms", "floor p50 ms", "perch / floor", "goal",
               "perch / echo on perch's library", "perch queue / engine µs"], rows) +
        "\n*perch queue / engine µs*: mean time a request waited for an inference worker and "
        "mean time in `Session::Run` (ONNX Runtime plus tensor copies), from perch's own "
        "`/metrics` histograms over the same runs.\n")
    write_section(ctx, "tiny", "a. Tiny model: perch vs bare HTTP and gRPC servers", body)
    return summary


# ---------------------------------------------- b. MobileNetV2 vs engine --

def bench_mobilenet(ctx):
    log("== b. MobileNetV2: perch end to end vs ONNX Runtime in-process")
    conc = ctx.args.saturation
    perch = ctx.perch_serve("perch-mobilenet", ctx.repos["mobilenet"])
    samples = {k: [] for k in ("ort_p50", "ort_tput", "rest_p50", "rest_tput", "grpc_p50",
                               "grpc_tput")}
    details = []
    stages = {"rest": [], "grpc": []}
    seconds = float(ctx.args.duration.rstrip("s"))
    warm = float(ctx.args.warmup.rstrip("s"))
    for r in range(ctx.args.repeats):
        for side in alternate(r, "perch", "ort"):
            if side == "ort":
                argv = [ctx.bench_bin("bench_ort_inprocess"), "--model",
                        str(ctx.models["mobilenet"]), "--duration", str(seconds), "--warmup",
                        str(warm), "--concurrency", ",".join(map(str, conc))]
                done = ctx.guarded("ORT in-process", lambda: subprocess.run(
                    argv, capture_output=True, text=True, check=True))
                result = json.loads(done.stdout)
                best = max(t["throughput"] for t in result["throughput"])
                samples["ort_p50"].append(result["latency"]["p50_ms"])
                samples["ort_tput"].append(best)
                details.append(("ORT in-process", result["latency"]["p50_ms"],
                                {t["concurrency"]: t["throughput"] for t in result["throughput"]}))
                log(f"  repeat {r + 1} ORT    p50 {result['latency']['p50_ms']:.3f} ms, "
                    f"throughput {[round(t['throughput'], 1) for t in result['throughput']]}")
            else:
                for proto, binary, port in (("rest", True, perch.http_port),
                                            ("grpc", False, perch.grpc_port)):
                    meter = StageMeter(perch.http_port, "mobilenet")
                    levels = ctx.perf("mobilenet", proto, port, [1], ctx.inputs["mobilenet"],
                                      binary)
                    stages[proto].append(meter.done())
                    rest_of = [c for c in conc if c != 1]
                    if rest_of:
                        levels.update(ctx.perf("mobilenet", proto, port, rest_of,
                                               ctx.inputs["mobilenet"], binary))
                    samples[f"{proto}_p50"].append(levels[1]["p50_ms"] if 1 in levels
                                                   else float("nan"))
                    samples[f"{proto}_tput"].append(max(l["throughput"] for l in levels.values()))
                    name = "perch REST binary" if proto == "rest" else "perch gRPC"
                    details.append((name, levels.get(1, {}).get("p50_ms", float("nan")),
                                    {c: l["throughput"] for c, l in levels.items()}))
                    log(f"  repeat {r + 1} {proto:5s}  p50 {levels[1]['p50_ms']:.3f} ms, "
                        f"throughput {[round(l['throughput'], 1) for l in levels.values()]}")
    ctx.stop_all()

    m = {k: median(v) for k, v in samples.items()}
    ratios = {
        "rest_p50": pair_ratios(samples["rest_p50"], samples["ort_p50"]),
        "grpc_p50": pair_ratios(samples["grpc_p50"], samples["ort_p50"]),
        "rest_tput": pair_ratios(samples["rest_tput"], samples["ort_tput"]),
        "grpc_tput": pair_ratios(samples["grpc_tput"], samples["ort_tput"]),
    }
    summary = {
        "ort_p50_ms": m["ort_p50"], "ort_throughput": m["ort_tput"],
        "rest_p50_ms": m["rest_p50"], "grpc_p50_ms": m["grpc_p50"],
        "rest_throughput": m["rest_tput"], "grpc_throughput": m["grpc_tput"],
        **{f"{key}_ratio": median(values) for key, values in ratios.items()},
    }
    for proto in ("rest", "grpc"):
        summary[f"{proto}_queue_ms"] = median([x["queue_ms"] for x in stages[proto]])
        summary[f"{proto}_compute_ms"] = median([x["compute_ms"] for x in stages[proto]])
    for k, v in summary.items():
        log(f"  {k}: {v:.3f}")
    rows = [
        ["p50 latency, REST binary, concurrency 1", f"{fmt_ms(m['rest_p50'])} ms",
         f"{fmt_ms(m['ort_p50'])} ms", ratio_cell(ratios["rest_p50"]),
         verdict(summary["rest_p50_ratio"], 1.08)],
        ["p50 latency, gRPC, concurrency 1", f"{fmt_ms(m['grpc_p50'])} ms",
         f"{fmt_ms(m['ort_p50'])} ms", ratio_cell(ratios["grpc_p50"]),
         verdict(summary["grpc_p50_ratio"], 1.08)],
        ["saturated throughput, REST binary", f"{m['rest_tput']:.1f}/s", f"{m['ort_tput']:.1f}/s",
         ratio_cell(ratios["rest_tput"]), verdict(summary["rest_tput_ratio"], 0.97, False)],
        ["saturated throughput, gRPC", f"{m['grpc_tput']:.1f}/s", f"{m['ort_tput']:.1f}/s",
         ratio_cell(ratios["grpc_tput"]), verdict(summary["grpc_tput_ratio"], 0.97, False)],
    ]
    run_rows = [[name, fmt_ms(p50), ", ".join(f"{c}: {t:.1f}" for c, t in sorted(tput.items()))]
                for name, p50, tput in details]
    body = (
        f"Model: torchvision MobileNetV2 (random weights), FP32 [1,3,224,224] → [1,1000]. "
        f"perch with its defaults (shared ONNX Runtime pool of one thread per core, "
        f"one worker per core, instances 1); client `perch perf` at concurrency "
        f"{','.join(map(str, conc))}. Baseline: `bench_ort_inprocess`, ONNX Runtime set up as "
        f"perch sets it up, Run() in a loop (latency: one thread; throughput: K threads sharing "
        f"the session, K = {','.join(map(str, conc))}). Saturated throughput = best over the "
        f"concurrency levels.\n\n" +
        f"{ctx.args.repeats} pairs, sides alternating; a ratio is perch over ONNX Runtime "
        f"within one pair; the table gives their median and spread (min–max).\n\n" +
        table(["measure", "perch (median)", "ORT in-process (median)", "perch / ORT", "goal"],
              rows) +
        f"\nInside perch at concurrency 1 (means from its `/metrics`): REST binary: queued "
        f"{summary['rest_queue_ms'] * 1000:.0f} µs, in `Session::Run` "
        f"{summary['rest_compute_ms']:.2f} ms; gRPC: queued {summary['grpc_queue_ms'] * 1000:.0f} µs, "
        f"in `Session::Run` {summary['grpc_compute_ms']:.2f} ms.\n" +
        "\nEach run (p50 at concurrency 1; throughput per concurrency, infer/s):\n\n" +
        table(["run", "p50 ms", "throughput by concurrency"], run_rows))
    write_section(ctx, "mobilenet", "b. MobileNetV2: perch end to end vs ONNX Runtime in-process",
                  body)
    return summary


# ------------------------------------------------ c. dynamic batching --

def bench_batching(ctx):
    log("== c. dynamic batching on vs off (MobileNetV2, gRPC)")
    conc = sorted(set([1] + ctx.args.batching_concurrency))
    off = ctx.perch_serve("perch-batch-off", ctx.repos["batch_off"])
    on = ctx.perch_serve("perch-batch-on", ctx.repos["batch_on"])
    samples = {side: {"p50": [], "tput": [], "levels": []} for side in ("on", "off")}
    for r in range(ctx.args.repeats):
        for side in alternate(r, "on", "off"):
            server = on if side == "on" else off
            levels = ctx.perf("mobilenet", "grpc", server.grpc_port, conc, ctx.inputs["mobilenet"])
            samples[side]["p50"].append(levels[1]["p50_ms"])
            samples[side]["tput"].append(max(l["throughput"] for l in levels.values()))
            samples[side]["levels"].append(levels)
            log(f"  repeat {r + 1} batching {side:3s} p50@1 {levels[1]['p50_ms']:.3f} ms, "
                + ", ".join(f"c{c}: {l['throughput']:.1f}/s p50 {l['p50_ms']:.1f}"
                            for c, l in levels.items()))
    ctx.stop_all()

    on_p50, off_p50 = median(samples["on"]["p50"]), median(samples["off"]["p50"])
    on_t, off_t = median(samples["on"]["tput"]), median(samples["off"]["tput"])
    p50_ratios = pair_ratios(samples["on"]["p50"], samples["off"]["p50"])
    gains = pair_ratios(samples["on"]["tput"], samples["off"]["tput"])
    summary = {"p50_on_ms": on_p50, "p50_off_ms": off_p50, "p50_ratio": median(p50_ratios),
               "throughput_on": on_t, "throughput_off": off_t, "throughput_gain": median(gains)}
    for k, v in summary.items():
        log(f"  {k}: {v:.3f}")
    per_level = []
    for c in conc:
        row = [c]
        for side in ("off", "on"):
            row.append(f"{median([lv[c]['throughput'] for lv in samples[side]['levels']]):.1f}")
            row.append(fmt_ms(median([lv[c]["p50_ms"] for lv in samples[side]["levels"]])))
        per_level.append(row)
    body = (
        f"Both perch servers serve MobileNetV2 with `max_batch_size: 8`; the second adds "
        f"`dynamic_batching: {{preferred_batch_sizes: [4, 8], max_queue_delay_us: "
        f"{ctx.args.batch_delay_us}}}`. Client: `perch perf --protocol grpc`.\n\n" +
        f"{ctx.args.repeats} pairs, sides alternating; ratios within a pair, their median "
        f"and spread (min–max).\n\n" +
        table(["measure", "batching on (median)", "batching off (median)", "on / off", "goal"], [
            ["p50 at concurrency 1", f"{fmt_ms(on_p50)} ms", f"{fmt_ms(off_p50)} ms",
             ratio_cell(p50_ratios), verdict(summary["p50_ratio"], 1.05)],
            ["best throughput", f"{on_t:.1f}/s", f"{off_t:.1f}/s", ratio_cell(gains),
             "gain (no fixed goal)"],
        ]) +
        "\nPer concurrency (medians):\n\n" +
        table(["concurrency", "off infer/s", "off p50 ms", "on infer/s", "on p50 ms"], per_level))
    write_section(ctx, "batching", "c. Dynamic batching on vs off (MobileNetV2)", body)
    return summary


# ---------------------------------------------- d. Node.js server --

def ensure_node_modules():
    folder = BENCH / "baselines" / "node_server"
    if not (folder / "node_modules" / "onnxruntime-node").exists():
        log("installing onnxruntime-node (npm, --ignore-scripts)")
        subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=folder,
                       check=True)
    return folder


def bench_node(ctx):
    log("== d. onnxruntime-node server vs perch REST JSON (MobileNetV2)")
    conc = ctx.args.node_concurrency
    folder = ensure_node_modules()
    perch = ctx.perch_serve("perch-node-cmp", ctx.repos["mobilenet"])
    node_port = free_port()
    node = Server(ctx, "node-server", ["node", "server.js", "--model", str(ctx.models["mobilenet"]),
                                       "--name", "mobilenet", "--port", str(node_port)],
                  http_port=node_port, cwd=folder).wait_ready()
    samples = {side: [] for side in ("perch", "node")}
    for r in range(ctx.args.repeats):
        for side in alternate(r, "perch", "node"):
            port = perch.http_port if side == "perch" else node.http_port
            levels = ctx.perf("mobilenet", "rest", port, conc, ctx.inputs["mobilenet"])
            samples[side].append(levels)
            log(f"  repeat {r + 1} {side:5s} " + ", ".join(
                f"c{c}: {l['throughput']:.1f}/s p50 {l['p50_ms']:.2f} ms" for c, l in levels.items()))
    ctx.stop_all()

    rows, summary = [], {}
    for c in conc:
        pt = median([s[c]["throughput"] for s in samples["perch"]])
        nt = median([s[c]["throughput"] for s in samples["node"]])
        pp = median([s[c]["p50_ms"] for s in samples["perch"]])
        np_ = median([s[c]["p50_ms"] for s in samples["node"]])
        summary[c] = {"perch_throughput": pt, "node_throughput": nt, "perch_p50_ms": pp,
                      "node_p50_ms": np_}
        rows.append([c, f"{pt:.1f}", f"{nt:.1f}", f"{pt / nt:.2f}×", fmt_ms(pp), fmt_ms(np_),
                     f"{pp / np_:.2f}×",
                     "perch wins both" if pt > nt and pp < np_ else "perch does NOT win both"])
        log(f"  c{c}: throughput perch {pt:.1f} node {nt:.1f}; p50 perch {pp:.2f} node {np_:.2f}")
    body = (
        "Same model (MobileNetV2), same client (`perch perf --protocol rest`, JSON request of "
        f"{ctx.inputs['mobilenet'].stat().st_size // 1024} KiB), same concurrency. Node.js "
        f"{subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}, "
        "onnxruntime-node 1.30.0 with its default session options (bench/baselines/node_server)."
        "\n\n" +
        table(["concurrency", "perch infer/s", "node infer/s", "throughput ratio", "perch p50 ms",
               "node p50 ms", "p50 ratio", "goal"], rows))
    write_section(ctx, "node", "d. Node.js (onnxruntime-node) server vs perch, REST JSON", body)
    return summary


# ---------------------------------------------- e. cold start and RSS --

def perch_cold_start(ctx):
    """Seconds from spawning `perch serve` to its first successful inference,
    and when (ms after the spawn) perch logged its milestones.

    Polls the cheap GET /v2/models/mobilenet/ready every 2 ms (a poll that
    sent the 600 KB inference would itself slow the loading down on two
    cores), then sends the inference; retries it if it is refused."""
    http_port, grpc_port = free_port(), free_port()
    body, header_len = ctx.mobilenet_binary_request
    headers = {"Content-Type": "application/octet-stream",
               "Inference-Header-Content-Length": str(header_len)}
    log_path = ctx.work / "logs" / "perch-coldstart.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        wall = datetime.now()
        start = time.monotonic()
        process = subprocess.Popen(
            [str(ctx.perch), "serve", "--repo", str(ctx.repos["mobilenet"]), "--http-port",
             str(http_port), "--grpc-port", str(grpc_port)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"perch serve exited: see {log_path}")
                if time.monotonic() - start > 120:
                    raise RuntimeError("perch did not answer an inference within 120 s")
                try:
                    status, _, _ = http_request(http_port, "GET", "/v2/models/mobilenet/ready",
                                                timeout=30)
                    if status == 200:
                        status, _, _ = http_request(http_port, "POST",
                                                    "/v2/models/mobilenet/infer", body, headers,
                                                    timeout=30)
                        if status == 200:
                            elapsed = time.monotonic() - start
                            break
                except OSError:
                    pass
                time.sleep(0.002)
        finally:
            process.terminate()
            process.wait(timeout=15)
    milestones = {}
    patterns = {"engine_ready_ms": "ONNX Runtime", "http_listening_ms": "REST API on",
                "model_ready_ms": "is ready"}
    for line in log_path.read_text(errors="replace").splitlines():
        try:
            stamp = datetime.fromisoformat(line[:23])
        except ValueError:
            continue
        for key, needle in patterns.items():
            if needle in line and key not in milestones:
                milestones[key] = (stamp - wall).total_seconds() * 1000
    return elapsed, milestones


def bare_cold_start(ctx):
    """Seconds from spawning the bare ORT program to it printing its first result."""
    start = time.monotonic()
    process = subprocess.Popen([ctx.bench_bin("bench_ort_inprocess"), "--model",
                                str(ctx.models["mobilenet"]), "--cold-start"],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    elapsed = time.monotonic() - start
    process.wait(timeout=30)
    return elapsed, json.loads(line)


def idle_rss(ctx, name, repo):
    server = ctx.perch_serve(name, repo)
    time.sleep(2.0)
    rss = read_rss_kb(server.process.pid)
    server.stop()
    ctx.servers.remove(server)
    return rss


def echo_idle_rss(ctx):
    """VmRSS of the bare HTTP echo and the bare gRPC echo together (2 s after
    both are ready, no request served): the floor for perch with no model,
    which serves both protocols from one process."""
    answer = ctx.work / "echo_rss_answer.json"
    answer.write_bytes(b'{"outputs": []}')
    http_port, grpc_port = free_port(), free_port()
    servers = [
        Server(ctx, "echo-http-rss", [ctx.bench_bin("bench_echo_http"), "--port", str(http_port),
                                      "--response-file", str(answer), "--content-type",
                                      "application/json"], http_port=http_port).wait_ready(),
        Server(ctx, "echo-grpc-rss", [ctx.bench_bin("bench_echo_grpc"), "--port", str(grpc_port),
                                      "--output-bytes", "1024"], grpc_port=grpc_port).wait_ready()]
    time.sleep(2.0)
    rss = sum(read_rss_kb(server.process.pid) for server in servers)
    for server in servers:
        server.stop()
        ctx.servers.remove(server)
    return rss


def bench_coldstart(ctx):
    log("== e. cold start and idle RSS")
    repeats = max(ctx.args.repeats, 5)
    perch_s, bare_s, bare_details, perch_milestones = [], [], [], []
    ctx.bench_bin("bench_ort_inprocess")  # build before timing anything
    for r in range(repeats):
        for side in alternate(r, "perch", "bare"):
            if side == "perch":
                elapsed, milestones = ctx.guarded("perch cold start",
                                                  lambda: perch_cold_start(ctx))
                perch_s.append(elapsed)
                perch_milestones.append(milestones)
                log(f"  repeat {r + 1} perch serve → first inference {elapsed * 1000:.1f} ms "
                    f"({', '.join(f'{k} {v:.0f}' for k, v in milestones.items())})")
            else:
                elapsed, details = ctx.guarded("bare cold start", lambda: bare_cold_start(ctx))
                bare_s.append(elapsed)
                bare_details.append(details)
                log(f"  repeat {r + 1} bare ORT program → first result {elapsed * 1000:.1f} ms "
                    f"(load {details['load_ms']:.1f} ms, first run {details['first_infer_ms']:.1f} ms)")
    p, b = median(perch_s) * 1000, median(bare_s) * 1000
    cold_ratios = pair_ratios(perch_s, bare_s)
    rss = {"bench models (tiny + MobileNetV2)": idle_rss(ctx, "perch-rss-bench", ctx.repos["all"]),
           "MobileNetV2 alone": idle_rss(ctx, "perch-rss-mobilenet", ctx.repos["mobilenet"])}
    sample_repo = ctx.perch_build / "sample-repo"
    if sample_repo.is_dir() and any(sample_repo.iterdir()):
        rss["sample repo (openWakeWord models, `make sample-repo`)"] = idle_rss(
            ctx, "perch-rss-sample", sample_repo)
    empty = ctx.work / "repos" / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    # perch with no model against the two echo baselines, in alternating pairs.
    empty_rss, echo_rss = [], []
    for r in range(3):
        for side in alternate(r, "perch", "echo"):
            if side == "perch":
                empty_rss.append(idle_rss(ctx, "perch-rss-empty", empty))
            else:
                echo_rss.append(echo_idle_rss(ctx))
    rss["no model"] = median(empty_rss)
    rss_ratios = pair_ratios(empty_rss, echo_rss)
    bare_rss = median([d["rss_kb"] for d in bare_details])
    ctx.stop_all()
    summary = {"perch_ms": p, "bare_ms": b, "ratio": median(cold_ratios), "rss_kb": rss,
               "bare_rss_kb": bare_rss, "echo_rss_kb": median(echo_rss),
               "rss_ratio": median(rss_ratios)}
    log(f"  cold start perch {p:.1f} ms, bare {b:.1f} ms, ratio {ratio_cell(cold_ratios)}")
    for k, v in rss.items():
        log(f"  idle RSS, {k}: {v / 1024:.1f} MiB")
    log(f"  idle RSS, HTTP + gRPC echo: {median(echo_rss) / 1024:.1f} MiB; no model / echo "
        f"{ratio_cell(rss_ratios)}")
    body = (
        f"Cold start: wall time from spawning the process to the first successful MobileNetV2 "
        f"inference seen by the caller. perch: `perch serve --repo` (MobileNetV2 only); the "
        f"caller polls `GET /v2/models/mobilenet/ready` every 2 ms, then sends one binary REST "
        f"infer request (retried until it answers 200). Bare: "
        f"`bench_ort_inprocess --cold-start` (Ort::Env, load, one Run, print). {repeats} pairs, "
        f"sides alternating; ratios within a pair, their median and spread (min–max).\n\n" +
        table(["measure", "perch (median)", "bare ORT program (median)", "perch / bare", "goal"], [
            ["start → first inference", f"{p:.1f} ms", f"{b:.1f} ms", ratio_cell(cold_ratios),
             verdict(median(cold_ratios), 1.2)]]) +
        f"\nRuns (ms): perch {', '.join(f'{v * 1000:.0f}' for v in perch_s)}; bare "
        f"{', '.join(f'{v * 1000:.0f}' for v in bare_s)}. Bare program breakdown (median): "
        f"Ort::Env {median([d['env_ms'] for d in bare_details]):.1f} ms, load "
        f"{median([d['load_ms'] for d in bare_details]):.1f} ms, first Run "
        f"{median([d['first_infer_ms'] for d in bare_details]):.1f} ms; the rest of its "
        f"wall time is process start (exec, dynamic linking) and reading its output. "
        f"perch milestones from its log (median ms after spawn, 1 ms resolution): "
        + ", ".join(f"{k.replace('_ms', '').replace('_', ' ')} {median([m[k] for m in perch_milestones if k in m]):.0f}"
                    for k in ("engine_ready_ms", "http_listening_ms", "model_ready_ms")) +
        f", first inference answered {p:.0f}.\n\n"
        "Idle RSS of `perch serve` (VmRSS, 2 s after ready, no request served):\n\n" +
        table(["models loaded", "VmRSS"], [[k, f"{v / 1024:.1f} MiB"] for k, v in rss.items()] +
              [["(bare ORT program with MobileNetV2, after one Run)", f"{bare_rss / 1024:.1f} MiB"],
               ["(bare HTTP echo + bare gRPC echo, bench/baselines)",
                f"{median(echo_rss) / 1024:.1f} MiB"]]) +
        "\nperch with no model against the two echo servers together (3 alternating pairs):\n\n" +
        table(["measure", "perch, no model", "HTTP + gRPC echo", "perch / echo", "goal"], [
            ["idle VmRSS", f"{median(empty_rss) / 1024:.1f} MiB", f"{median(echo_rss) / 1024:.1f} MiB",
             ratio_cell(rss_ratios), verdict(median(rss_ratios), 1.5)]]))
    write_section(ctx, "coldstart", "e. Cold start and idle memory", body)
    return summary


# ------------------------------------------------------------------ main --

BENCHES = {"tiny": bench_tiny, "mobilenet": bench_mobilenet, "batching": bench_batching,
           "node": bench_node, "coldstart": bench_coldstart}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="+", choices=[*BENCHES, "all"])
    parser.add_argument("--perch", default=os.environ.get("PERCH_BIN", str(ROOT / "build" / "perch")))
    parser.add_argument("--bench-bin", default=os.environ.get("PERCH_BENCH_BIN"),
                        help="folder with bench_* (default: build/bench, else build/bench-standalone)")
    parser.add_argument("--work", default=str(ROOT / "build" / "bench-work"),
                        help="models, repositories, request bodies and server logs")
    parser.add_argument("--results", default=str(BENCH / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--repeats", type=int, default=10,
                        help="interleaved pairs (rounds) per comparison")
    parser.add_argument("--max-other-load", type=float, default=0.15,
                        help="measure a point again when other work took more than this share "
                             "of the CPU during it")
    parser.add_argument("--retries", type=int, default=2,
                        help="how many times a disturbed point is measured again")
    parser.add_argument("--wait-quiet", type=float, default=60.0,
                        help="before each point, wait up to SECONDS for other work on the "
                             "machine to fall below 15%% CPU (0: do not wait)")
    parser.add_argument("--duration", default="2s",
                        help="measuring time per point (seconds): short slices, so that the "
                             "sides of a pair see the same machine")
    parser.add_argument("--warmup", default="1s", help="unmeasured time before each point")
    parser.add_argument("--saturation", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 2, 4], help="concurrency levels for saturated throughput (b)")
    parser.add_argument("--batching-concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4, 8], help="concurrency levels for (c)")
    parser.add_argument("--batch-delay-us", type=int, default=2000,
                        help="dynamic_batching.max_queue_delay_us for (c)")
    parser.add_argument("--node-concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 4], help="concurrency levels for (d)")
    args = parser.parse_args()
    for value in (args.duration, args.warmup):
        if not re.fullmatch(r"[0-9.]+s", value):
            parser.error("--duration and --warmup are given in seconds, e.g. 5s")
    which = list(BENCHES) if "all" in args.which else args.which
    ctx = Context(args)
    if not ctx.perch.exists():
        parser.error(f"{ctx.perch} does not exist: run `make build` first")
    # A private copy, so that a rebuild during the run changes nothing; the
    # baselines are still looked up beside the original.
    ctx.perch_build = ctx.perch.parent
    snapshot = ctx.work / "perch"
    global PERCH_COMMIT
    PERCH_COMMIT = current_commit()
    shutil.copy2(ctx.perch, snapshot)
    ctx.perch = snapshot
    prepare_models(ctx)
    summaries = {}
    try:
        for name in which:
            summaries[name] = BENCHES[name](ctx)
    finally:
        ctx.stop_all()
    (ctx.work / "last_summary.json").write_text(json.dumps(summaries, indent=2, default=str))
    log(f"summary written to {ctx.work / 'last_summary.json'}")


if __name__ == "__main__":
    main()
