#!/usr/bin/python3
"""MQTT benchmark: perch's MQTT bridge against the bare broker, side by side
in one run, on this machine. Writes the "## MQTT" section of bench/RESULTS.md
(between <!-- section:mqtt --> markers) unless --no-results.

    make build test-models
    /usr/bin/python3 bench/mqtt/run.py            # about 5 minutes

a. Latency, concurrency 1: p50 of an MQTT 5 request/reply to perch (identity
   model, FP32 [1,256], Response Topic + Correlation Data, QoS 1) against the
   same exchange answered by `mqtt_echo` (mqtt_echo.c: libmosquitto 2.0,
   answers perch's own answer bytes with perch's properties, does not read
   the request): the same two broker hops without inference, queues or
   JSON. Beside them: the plain round trip of a publish to a topic the
   client subscribes to (one hop each way), mqtt_echo without TCP_NODELAY
   (perch's socket settings before it set TCP_NODELAY), and, as a
   diagnostic, perch with TCP_NODELAY forced on its broker connection by
   LD_PRELOAD (nodelay_preload.c; perch sets it itself now, so the two
   perch rows should agree). Goal: perch <= 1.3x mqtt_echo; the ratio to
   the broker's own round trip is reported too.
b. Throughput, QoS 1, N requests in flight: replies/s with the client
   keeping N requests outstanding: perch, mqtt_echo, the diagnostic perch.
c. Outbox drain after a broker outage: the agent takes a backlog of
   requests, the broker stops while the answers flow, the agent finishes
   the answers into its outbox, the broker comes back: messages/s from the
   reconnect until the outbox is empty, against `mqtt_echo burst`
   publishing as many answers of the same size through the same broker.

Every point is repeated (--repeats, alternating which side goes first) and
the median is reported. The client is paho-mqtt 1.6.1 (Python) for every
side, so its cost is in every figure. Work files and logs go to
build/bench-work/mqtt/, the last figures to its last_summary.json.
"""

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
from mqtt_harness import Broker, Client, unique  # noqa: E402  (the tests' broker and client)

WORK = ROOT / "build" / "bench-work" / "mqtt"
LOCATION = "bench"
MODEL = "identity_fp32"
ELEMENTS = 256  # FP32 [1,256]: 1 KB of tensor data
QUIET_BUSY = 0.15


def log(message):
    print(f"[mqtt-bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the machine ------------------------------------------------------------------


def machine_info():
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(re.search(r"MemTotal:\s+(\d+)",
                            Path("/proc/meminfo").read_text())[1])
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short",
                             "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                            "src"], capture_output=True, text=True).stdout
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit.strip() + (" with uncommitted changes in src/"
                                    if dirty.strip() else ""),
        "mosquitto": subprocess.run(["/usr/sbin/mosquitto", "-h"],
                                    capture_output=True, text=True
                                    ).stdout.splitlines()[0].strip(),
    }


def busy_fraction(seconds=0.5):
    """Share of all cores busy over the next `seconds`."""
    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text()
                  .splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1 - (idle1 - idle0) / max(1, total1 - total0)


class Quiet:
    """Waits for the machine to calm down before each point and remembers
    how busy it was (our own processes idle at that moment)."""

    def __init__(self, wait):
        self.wait = wait
        self.seen = []

    def __call__(self):
        deadline = time.monotonic() + self.wait
        busy = busy_fraction()
        while busy > QUIET_BUSY and time.monotonic() < deadline:
            busy = busy_fraction(1.0)
        self.seen.append(busy)

    def note(self):
        if not self.seen:
            return ""
        return (f"Other load on the machine before each point: median "
                f"{statistics.median(self.seen):.0%}, max {max(self.seen):.0%}"
                f" of all cores (above ~15% the figures are disturbed).")


# --- processes -----------------------------------------------------------------------


class Agent:
    """One `perch serve --mqtt`."""

    def __init__(self, perch, repo, broker_url, device, state, logs,
                 preload=None):
        self.env = dict(os.environ)
        if preload:
            self.env["LD_PRELOAD"] = str(preload)
        self.http_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.command = [str(perch), "serve", "--repo", str(repo),
                        "--http-port", str(self.http_port),
                        "--grpc-port", str(free_port()),
                        "--mqtt", broker_url, "--location", LOCATION,
                        "--device", device, "--state", str(state),
                        "--log-level", "warn"]
        self.log = Path(logs) / f"perch-{device}-{self.http_port}.log"
        self.process = None

    def start(self):
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(self.command, stdout=out,
                                            stderr=subprocess.STDOUT,
                                            env=self.env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                sys.exit(f"perch exited: see {self.log}")
            try:
                if requests.get(self.url + "/v2/health/ready",
                                timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        sys.exit(f"perch not ready in 30 s: see {self.log}")

    def metric(self, name, queue=None):
        key = name if queue is None else f'{name}{{queue="{queue}"}}'
        for line in requests.get(self.url + "/metrics", timeout=5).text \
                .splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return 0.0

    def wait_metric(self, name, at_least, timeout, queue=None, interval=0.02):
        deadline = time.monotonic() + timeout
        value = self.metric(name, queue)
        while value < at_least and time.monotonic() < deadline:
            time.sleep(interval)
            value = self.metric(name, queue)
        return value

    def stop(self, sig=signal.SIGTERM):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Echo:
    """mqtt_echo answering on bench/<name>/+; nodelay sets TCP_NODELAY on
    its socket (as perch's bridge does)."""

    def __init__(self, binary, port, answer_file, name="echo", nodelay=True):
        self.topic = f"{LOCATION}/{name}/{MODEL}"
        env = dict(os.environ, MQTT_ECHO_TCP_NODELAY="1" if nodelay else "0")
        self.process = subprocess.Popen(
            [str(binary), "echo", str(port), f"{LOCATION}/{name}/+",
             str(answer_file)], stdout=subprocess.PIPE, text=True, env=env)
        if self.process.stdout.readline().strip() != "ready":
            sys.exit("mqtt_echo did not start")

    def stop(self):
        self.process.kill()
        self.process.wait()


class EchoSide:
    """An mqtt_echo started for one measurement and stopped after it. A
    long-lived echo connection sometimes falls into a mode where every
    answer waits ~40 ms (a delayed ACK, although every socket on the path
    has TCP_NODELAY) and stays there; a fresh one starts without it. perch
    runs throughout, as in use."""

    def __init__(self, binary, port, answer_file, name, nodelay):
        self.args = (binary, port, answer_file, name, nodelay)
        self.topic = f"{LOCATION}/{name}/{MODEL}"

    def __enter__(self):
        self.echo = Echo(*self.args)
        return self.topic

    def __exit__(self, *exc):
        self.echo.stop()


class Always:
    """A topic that needs nothing started."""

    def __init__(self, topic):
        self.topic = topic

    def __enter__(self):
        return self.topic

    def __exit__(self, *exc):
        pass


def side_topic(topics, side):
    entry = topics[side]
    return entry if hasattr(entry, "__enter__") else Always(entry)


def build_echo():
    source = ROOT / "bench" / "mqtt" / "mqtt_echo.c"
    binary = WORK / "mqtt_echo"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        log("building mqtt_echo")
        subprocess.run(["cc", "-O2", "-o", str(binary), str(source),
                        "-lmosquitto"], check=True)
    return binary


def build_preload():
    source = ROOT / "bench" / "mqtt" / "nodelay_preload.c"
    library = WORK / "nodelay_preload.so"
    if not library.exists() or \
            library.stat().st_mtime < source.stat().st_mtime:
        log("building nodelay_preload.so")
        subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", str(library),
                        str(source), "-ldl"], check=True)
    return library


def model_repo():
    """A repository holding the tests' identity_fp32 model."""
    models = Path(os.environ.get("PERCH_TEST_MODELS",
                                 ROOT / "build" / "test-models"))
    if not (models / MODEL).exists():
        models = WORK / "test-models"
        subprocess.run(["/usr/bin/python3",
                        str(ROOT / "tests" / "models" / "make_models.py"),
                        str(models)], check=True)
    repo = WORK / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    repo.mkdir(parents=True)
    shutil.copytree(models / MODEL, repo / MODEL)
    return repo


def request_body():
    values = np.random.default_rng(0).standard_normal(ELEMENTS) \
        .astype(np.float32)
    return json.dumps({"inputs": [{
        "name": "INPUT0", "datatype": "FP32", "shape": [1, ELEMENTS],
        "data": [float(v) for v in values]}]}).encode()


# --- measurements ----------------------------------------------------------------------


STRAYS = []


def round_trips(client, topic, payload, count, reply_topic=None,
                max_seconds=None):
    """Seconds per exchange, one at a time: a request with reply_topic
    (Response Topic + Correlation Data) answered on it, or (no reply_topic)
    a publish to topic that the client itself receives. Stops after count
    exchanges or max_seconds, whichever comes first."""
    times = []
    stop = time.perf_counter() + max_seconds if max_seconds else None
    for i in range(count):
        if stop and time.perf_counter() > stop:
            break
        correlation = str(i).encode()
        start = time.perf_counter()
        if reply_topic:
            client.publish(topic, payload, response_topic=reply_topic,
                           correlation=correlation, wait=False)
        else:
            client.publish(topic, payload, wait=False)
        while True:
            message = client.next(10)
            if message is None:
                sys.exit(f"no answer on {reply_topic or topic} within 10 s")
            if not reply_topic or message.correlation == correlation:
                break
            # An answer to no request of this exchange: counted, skipped.
            STRAYS.append(message.payload[:200].decode(errors="replace"))
            log(f"  stray message on {message.topic}: {STRAYS[-1]}")
        times.append(time.perf_counter() - start)
    return times


def throughput(client, topic, payload, inflight, duration, warmup):
    """Replies per second while the client keeps `inflight` requests out."""
    reply = unique(f"{LOCATION}/tput/")
    client.subscribe(reply)
    for i in range(inflight):
        client.publish(topic, payload, response_topic=reply,
                       correlation=b"x", wait=False)
    counted = 0
    start = time.perf_counter()
    measure_from = start + warmup
    end = measure_from + duration
    while True:
        message = client.next(10)
        if message is None:
            sys.exit(f"throughput: no answer on {reply} within 10 s")
        now = time.perf_counter()
        if now >= end:
            break
        if now >= measure_from:
            counted += 1
        client.publish(topic, payload, response_topic=reply,
                       correlation=b"x", wait=False)
    # The ones still out, so that the next point starts clean.
    client.collect(inflight - 1, timeout=10)
    client._paho.unsubscribe(reply)
    return counted / duration


def p50_ms(times):
    return statistics.median(times) * 1000


def median(values):
    return statistics.median(values)


SIDES = {
    "perch": "perch: request → perch → reply (2 broker hops)",
    "echo": "mqtt_echo (TCP_NODELAY): request → echo → reply (2 broker hops)",
    "loop": "broker alone: publish → own subscription (1 hop)",
    "echo_nagle": "mqtt_echo without TCP_NODELAY (Nagle's algorithm on)",
    "perch_nodelay": "perch with TCP_NODELAY forced by LD_PRELOAD (diagnostic)",
}


def run_latency(args, quiet, broker, topics, payload):
    log("a. latency at concurrency 1")
    client = Client(broker.port).connect()
    reply = unique(f"{LOCATION}/reply/")
    loop = unique(f"{LOCATION}/loop/")
    client.subscribe(reply)
    client.subscribe(loop)
    runs = {side: [] for side in SIDES}

    def exchange(side, topic, count, seconds):
        if side == "loop":
            return round_trips(client, loop, payload, count,
                               max_seconds=seconds)
        return round_trips(client, topic, payload, count, reply,
                           max_seconds=seconds)
    for repeat in range(args.repeats):
        order = list(SIDES) if repeat % 2 == 0 else list(SIDES)[::-1]
        for side in order:
            with side_topic(topics, side) if side != "loop" \
                    else Always(loop) as topic:
                quiet()
                exchange(side, topic, args.warmup_requests, 1.0)
                runs[side].append(p50_ms(exchange(side, topic, args.requests,
                                                  args.latency_seconds)))
            log(f"  {side}: p50 {runs[side][-1]:.3f} ms")
    client.close()
    return runs


THROUGHPUT_SIDES = ("perch", "echo", "perch_nodelay")


def run_throughput(args, quiet, broker, topics, payload):
    log("b. QoS 1 throughput")
    results = {}
    for inflight in args.inflight:
        client = Client(broker.port, max_inflight=0).connect()
        runs = {side: [] for side in THROUGHPUT_SIDES}
        for repeat in range(args.repeats):
            order = THROUGHPUT_SIDES if repeat % 2 == 0 \
                else THROUGHPUT_SIDES[::-1]
            for side in order:
                with side_topic(topics, side) as topic:
                    quiet()
                    runs[side].append(throughput(client, topic, payload,
                                                 inflight, args.duration,
                                                 args.warmup))
                log(f"  {inflight} in flight, {side}: "
                    f"{runs[side][-1]:.0f} replies/s")
        client.close()
        results[inflight] = runs
    return results


def drain_once(args, broker, perch, repo, payload, echo_binary, answer_file,
               repeat, logs):
    """One outage: returns (perch backlog, perch msgs/s, echo msgs/s)."""
    device = f"drain{repeat}-{unique('')}"
    state = WORK / "state" / device
    drain_topic = unique(f"{LOCATION}/drain/")
    subscriber = Client(broker.port, clean_start=False,
                        session_expiry=600).connect()
    subscriber.subscribe(drain_topic)
    # The agent's session first, then a backlog of requests queued in it.
    agent = Agent(perch, repo, broker.url, device, state, logs).start()
    agent.wait_metric("perch_mqtt_connected", 1, 20)
    agent.stop()
    publisher = Client(broker.port, max_inflight=0).connect()
    infos = [publisher._paho.publish(
        f"perch/{LOCATION}/{device}/infer/{MODEL}", payload, qos=1,
        properties=reply_properties(drain_topic)) for _ in range(args.backlog)]
    for info in infos:
        info.wait_for_publish(60)
    publisher.close()
    agent = Agent(perch, repo, broker.url, device, state, logs).start()
    agent.wait_metric("perch_mqtt_received_total", args.backlog, 120)
    time.sleep(0.5)  # the last acknowledgements reach the broker
    broker.stop()
    # The agent answers the rest into its outbox.
    deadline = time.monotonic() + 120
    while agent.metric("perch_queue_depth", "mqtt-inbox") > 0 \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    backlog = agent.metric("perch_queue_depth", "outbox")
    connects = agent.metric("perch_mqtt_connects_total")
    subscriber.drain(0.2)
    broker.start()
    agent.wait_metric("perch_mqtt_connects_total", connects + 1, 30,
                      interval=0.005)
    connected_at = time.perf_counter()
    deadline = time.monotonic() + 120
    while agent.metric("perch_queue_depth", "outbox") > 0 \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    drained_at = time.perf_counter()
    perch_rate = backlog / (drained_at - connected_at)
    agent.stop()
    subscriber.wait_connected(10)
    subscriber.drain(1.0)
    # The baseline: as many answers of the same size, published by a bare
    # libmosquitto client through the same broker to the same subscriber.
    burst = subprocess.run(
        [str(echo_binary), "burst", str(broker.port), drain_topic,
         str(answer_file), str(int(backlog))],
        capture_output=True, text=True, timeout=120)
    if burst.returncode != 0:
        sys.exit(f"mqtt_echo burst failed: {burst.stderr}")
    seconds = json.loads(burst.stdout)["seconds"]
    echo_rate = backlog / seconds
    subscriber.drain(1.0)
    subscriber.close()
    shutil.rmtree(state, ignore_errors=True)
    return backlog, perch_rate, echo_rate


def reply_properties(reply_topic):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = reply_topic
    properties.CorrelationData = b"drain"
    return properties


def run_drain(args, quiet, broker, perch, repo, payload, echo_binary,
              answer_file, logs):
    log(f"c. outbox drain after a broker outage ({args.backlog} requests)")
    runs = {"backlog": [], "perch": [], "echo": []}
    for repeat in range(args.repeats):
        quiet()
        backlog, perch_rate, echo_rate = drain_once(
            args, broker, perch, repo, payload, echo_binary, answer_file,
            repeat, logs)
        runs["backlog"].append(backlog)
        runs["perch"].append(perch_rate)
        runs["echo"].append(echo_rate)
        log(f"  backlog {backlog:.0f}: perch {perch_rate:.0f}/s, "
            f"echo burst {echo_rate:.0f}/s")
    return runs


# --- the report ------------------------------------------------------------------------


def fmt_runs(values, digits):
    return ", ".join(f"{v:.{digits}f}" for v in values)


def report(machine, args, quiet, sizes, latency, tput, drain):
    lines = []
    lines.append(
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, "
        f"{machine['ram_gib']} GiB RAM, Linux {machine['kernel']}; "
        f"{machine['date']}; perch commit {machine['commit']}; "
        f"{machine['mosquitto']}. Settings: {args.repeats} repeats; "
        f"{args.requests} exchanges or {args.latency_seconds:g} s per latency"
        f" run (whichever ends first) after {args.warmup_requests} or 1 s; "
        f"{args.duration:g} s per throughput point "
        f"after {args.warmup:g} s; medians of the repeats. {quiet.note()}")
    lines.append("")
    lines.append(
        f"Written by `bench/mqtt/run.py` (see its header). Model "
        f"`{MODEL}` from the test models, FP32 [1,{ELEMENTS}] in and out; "
        f"request {sizes['request']} B of JSON, perch's answer "
        f"{sizes['answer']} B (mqtt_echo answers those same bytes). Client: "
        f"paho-mqtt 1.6.1 (Python, TCP_NODELAY set), MQTT 5, QoS 1 both "
        f"ways, the same for every side. Broker: mosquitto on loopback with "
        f"`set_tcp_nodelay true`, `max_queued_messages 0`, persistence on "
        f"(written at exit only), otherwise its defaults; one for "
        f"everything.")
    lines.append("")
    lines.append("| a. latency, concurrency 1 | p50 ms | runs ms |")
    lines.append("|---|---|---|")
    for side, name in SIDES.items():
        lines.append(f"| {name} | {median(latency[side]):.3f} | "
                     f"{fmt_runs(latency[side], 3)} |")
    ratio = median(latency["perch"]) / median(latency["echo"])
    verdict = "met" if ratio <= 1.3 else "MISSED"
    to_loop = median(latency["perch"]) / median(latency["loop"])
    loop_verdict = "met" if to_loop <= 1.3 else "MISSED"
    echo_to_loop = median(latency["echo"]) / median(latency["loop"])
    diagnostic = median(latency["perch_nodelay"]) / median(latency["echo"])
    lines.append("")
    lines.append(
        f"**perch / mqtt_echo p50: {ratio:.2f}×** (goal ≤ 1.3×: {verdict}). "
        f"**perch / the broker's own round trip: {to_loop:.2f}×** (goal "
        f"≤ 1.3×: {loop_verdict}); but mqtt_echo, which takes the same two "
        f"broker hops as perch and does nothing else, is itself "
        f"{echo_to_loop:.2f}× the one-hop round trip, so no request/reply "
        f"over a broker can meet a goal set against one hop. perch sets "
        f"TCP_NODELAY on its broker connection (the diagnostic row, forcing "
        f"it from outside, gives {diagnostic:.2f}×: the same within noise); "
        f"without it every answer waits for the broker's delayed ACK, as the "
        f"mqtt_echo row without TCP_NODELAY shows. What perch adds over "
        f"mqtt_echo is the durable inbox and outbox (an SQLite transaction "
        f"each, WAL, synchronous=NORMAL), JSON decoding and encoding, the "
        f"inference, and the hand-offs from the network thread to a lane and "
        f"to an inference worker.")
    lines.append("")
    if STRAYS:
        lines.append(f"During (a) the client received {len(STRAYS)} answer(s)"
                     f" to no request it was waiting for (skipped; see "
                     f"last_summary.json).")
        lines.append("")
    lines.append("| b. QoS 1 throughput | perch replies/s | mqtt_echo "
                 "replies/s | perch / echo | perch TCP_NODELAY (diagnostic) "
                 "| runs (perch / echo / diagnostic) |")
    lines.append("|---|---|---|---|---|---|")
    for inflight, runs in tput.items():
        p, e = median(runs["perch"]), median(runs["echo"])
        d = median(runs["perch_nodelay"])
        lines.append(f"| {inflight} in flight | {p:.0f} | {e:.0f} | "
                     f"{p / e:.2f}× | {d:.0f} | {fmt_runs(runs['perch'], 0)}"
                     f" / {fmt_runs(runs['echo'], 0)} / "
                     f"{fmt_runs(runs['perch_nodelay'], 0)} |")
    lines.append("")
    lines.append("| c. outbox drain after the broker comes back | backlog | "
                 "messages/s | runs |")
    lines.append("|---|---|---|---|")
    lines.append(f"| perch: from the reconnect to an empty outbox | "
                 f"{median(drain['backlog']):.0f} | "
                 f"{median(drain['perch']):.0f} | "
                 f"{fmt_runs(drain['perch'], 0)} |")
    lines.append(f"| mqtt_echo burst: as many answers, published to the "
                 f"broker's acknowledgement of the last | "
                 f"{median(drain['backlog']):.0f} | "
                 f"{median(drain['echo']):.0f} | "
                 f"{fmt_runs(drain['echo'], 0)} |")
    lines.append("")
    lines.append(
        f"c: {args.backlog} requests wait in the agent's broker session; "
        f"the agent takes them all, the broker stops (SIGTERM) 0.5 s later "
        f"while answers are still flowing, the agent answers the rest into "
        f"its outbox (the backlog column), the broker restarts; timed from "
        f"the agent's reconnect (perch_mqtt_connects_total, polled every "
        f"5 ms) until perch_queue_depth{{queue=\"outbox\"}} is 0 (polled "
        f"every 10 ms). A subscriber to the answers is online throughout.")
    lines.append("")
    lines.append(
        "Notes: each mqtt_echo is started afresh for its measurement (a "
        "long-lived echo connection was seen to fall, now and then, into a "
        "mode where every answer waited ~40 ms, and to stay there); the "
        "agents run throughout. Live throughput "
        "(b) is bounded by what perch does per request; the drain (c) only "
        "reads and deletes outbox records and publishes, 64 in flight.")
    return "\n".join(lines)


def write_section(path, body):
    start, end = "<!-- section:mqtt -->", "<!-- /section:mqtt -->"
    section = f"{start}\n## MQTT\n\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else (
        "# Benchmark results\n\nWritten by `bench/run.py` (see "
        "bench/README.md); every figure below was measured, none is "
        "estimated. Ratios are perch / baseline.\n")
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text.rstrip() + "\n")
    log(f"wrote the MQTT section of {path}")


def rewrite_from_summary(args):
    summary = json.loads((WORK / "last_summary.json").read_text())
    for key, value in summary["settings"].items():
        setattr(args, key, value)
    quiet = Quiet(0)
    quiet.seen = summary["background_busy"]
    STRAYS.extend(summary.get("stray_messages", []))
    tput = {int(k): v for k, v in summary["throughput"].items()}
    body = report(summary["machine"], args, quiet, summary["sizes"],
                  summary["latency_ms"], tput, summary["drain"])
    print(body)
    if not args.no_results:
        write_section(Path(args.results), body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000,
                        help="exchanges per latency run")
    parser.add_argument("--latency-seconds", type=float, default=5.0,
                        help="at most this long per latency run")
    parser.add_argument("--warmup-requests", type=int, default=200)
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per throughput point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--inflight", default="1,16,64",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--backlog", type=int, default=6000,
                        help="requests queued for the drain measurement")
    parser.add_argument("--wait-quiet", type=float, default=30)
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--perch-commit",
                        help="the commit --perch was built from, for the "
                        "record (default: the work tree's HEAD)")
    parser.add_argument("--only", default="a,b,c")
    parser.add_argument("--report-only", action="store_true",
                        help="write RESULTS.md from the last run's "
                        "last_summary.json without measuring")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if args.report_only:
        rewrite_from_summary(args)
        return

    WORK.mkdir(parents=True, exist_ok=True)
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    shutil.rmtree(WORK / "state", ignore_errors=True)
    # A copy, so that a rebuild during the run changes nothing.
    perch = WORK / "perch"
    shutil.copy2(args.perch, perch)
    echo_binary = build_echo()
    preload_lib = build_preload()
    repo = model_repo()
    payload = request_body()
    machine = machine_info()
    if args.perch_commit:
        machine["commit"] = args.perch_commit
    quiet = Quiet(args.wait_quiet)

    broker_dir = WORK / "broker"
    shutil.rmtree(broker_dir, ignore_errors=True)
    # Without set_tcp_nodelay, Nagle's algorithm on the broker's sockets
    # adds a delayed ACK (40 ms) to most exchanges, whoever the clients are.
    broker = Broker(broker_dir, persistence=True,
                    extra=["set_tcp_nodelay true"]).start()
    processes = []
    try:
        agents = {}
        for side, device, preload in (("perch", "d1", None),
                                      ("perch_nodelay", "d2", preload_lib)):
            agent = Agent(perch, repo, broker.url, device,
                          WORK / "state" / device, logs, preload).start()
            processes.append(agent)
            agent.wait_metric("perch_mqtt_connected", 1, 20)
            agents[side] = f"perch/{LOCATION}/{device}/infer/{MODEL}"
        # perch's own answer, byte for byte, for the echo to send back.
        probe = Client(broker.port).connect()
        probe.subscribe(f"{LOCATION}/probe")
        probe.publish(agents["perch"], payload,
                      response_topic=f"{LOCATION}/probe", correlation=b"probe")
        answer = probe.next(10).payload
        probe.close()
        assert b'"outputs"' in answer, answer
        answer_file = WORK / "answer.json"
        answer_file.write_bytes(answer)
        # The echoes are started afresh for every measurement (see
        # EchoSide); the agents run throughout.
        topics = {**agents,
                  "echo": EchoSide(echo_binary, broker.port, answer_file,
                                   "echo", True),
                  "echo_nagle": EchoSide(echo_binary, broker.port,
                                         answer_file, "nagle", False)}
        sizes = {"request": len(payload), "answer": len(answer)}

        latency = run_latency(args, quiet, broker, topics, payload) \
            if "a" in only else None
        tput = run_throughput(args, quiet, broker, topics, payload) \
            if "b" in only else None
        for process in processes:
            process.stop()
        processes = []
        drain = run_drain(args, quiet, broker, perch, repo, payload,
                          echo_binary, answer_file, logs) \
            if "c" in only else None
    finally:
        for process in processes:
            process.stop()
        broker.stop()

    summary = {"machine": machine, "sizes": sizes, "latency_ms": latency,
               "throughput": {str(k): v for k, v in (tput or {}).items()},
               "drain": drain, "background_busy": quiet.seen,
               "stray_messages": STRAYS,
               "settings": {k: getattr(args, k) for k in (
                   "repeats", "requests", "latency_seconds",
                   "warmup_requests", "duration", "warmup", "backlog")}}
    (WORK / "last_summary.json").write_text(json.dumps(summary, indent=2))
    if latency and tput and drain:
        body = report(machine, args, quiet, sizes, latency, tput, drain)
        print("\n" + body + "\n")
        if not args.no_results:
            write_section(Path(args.results), body)
    else:
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
