#!/usr/bin/python3
"""Durability benchmark: what acknowledging only durable records costs.
Two agents on one broker, one with `--outbox-sync full` (the default: the
inbox and outbox commit with synchronous=FULL, a disk flush per
transaction) and one with `--outbox-sync normal` (the weaker mode: durable
against a crash, not a power loss), measured in ABAB order (each repeat
alternates which goes first). Writes the "## Durability" section of
bench/RESULTS.md (between <!-- section:durability --> markers) unless
--no-results.

    make build test-models
    /usr/bin/python3 bench/durability/run.py            # about 3 minutes
    /usr/bin/python3 bench/durability/run.py --repeats 2 --duration 1 \\
        --requests 100 --no-results                     # smoke test, ~30 s

a. Latency, concurrency 1: p50 and p99 of an MQTT 5 request/reply (QoS 1,
   identity model FP32 [1,256]): each request is an inbox append (before the
   PUBACK), an outbox append and an inbox removal, so three commits; with
   `full`, about 1.7 disk flushes per request (docs/durability.md).
b. Throughput, QoS 1, N requests in flight: replies/s.

Each figure is the median over the repeats of the per-pair ratio
full / normal, with the smallest and largest ratio beside it.
"""

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "mqtt_bench", ROOT / "bench" / "mqtt" / "run.py")
mqtt_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(mqtt_bench)  # the MQTT benchmark's agent and client
Broker, Client, unique = (mqtt_bench.Broker, mqtt_bench.Client,
                          mqtt_bench.unique)

WORK = ROOT / "build" / "bench-work" / "durability"
LOCATION = mqtt_bench.LOCATION
MODEL = mqtt_bench.MODEL
MODES = ("full", "normal")


def log(message):
    mqtt_bench.log(f"durability: {message}")


class SyncAgent(mqtt_bench.Agent):
    def __init__(self, perch, repo, broker_url, device, state, logs, sync):
        super().__init__(perch, repo, broker_url, device, state, logs)
        self.command += ["--outbox-sync", sync]


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(args, quiet, broker, topics, payload):
    client = Client(broker.port).connect()
    reply = unique(f"{LOCATION}/reply/")
    client.subscribe(reply)
    runs = {mode: {"p50_ms": [], "p99_ms": [],
                   **{f"tput_{n}": [] for n in args.inflight}}
            for mode in MODES}
    for repeat in range(args.repeats):
        order = MODES if repeat % 2 == 0 else MODES[::-1]
        for mode in order:
            quiet()
            mqtt_bench.round_trips(client, topics[mode], payload,
                                   args.warmup_requests, reply, 1.0)
            times = mqtt_bench.round_trips(client, topics[mode], payload,
                                           args.requests, reply,
                                           args.latency_seconds)
            runs[mode]["p50_ms"].append(percentile(times, 0.5) * 1000)
            runs[mode]["p99_ms"].append(percentile(times, 0.99) * 1000)
            for inflight in args.inflight:
                quiet()
                runs[mode][f"tput_{inflight}"].append(mqtt_bench.throughput(
                    client, topics[mode], payload, inflight, args.duration,
                    args.warmup))
            log(f"repeat {repeat + 1} {mode}: " + ", ".join(
                f"{k} {v[-1]:.2f}" for k, v in runs[mode].items()))
    client.close()
    return runs


def ratios(runs, key):
    """Per-pair ratios full / normal, one per repeat."""
    return [f / n for f, n in zip(runs["full"][key], runs["normal"][key])
            if n > 0]


def report(machine, args, quiet, runs):
    lines = [
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, "
        f"{machine['ram_gib']} GiB RAM, kernel {machine['kernel']}; "
        f"{machine['date']}; perch {machine['commit']}; "
        f"{args.repeats} repeats in ABAB order. {quiet.note()}",
        "",
        "| measure | full (default) | normal | full / normal: median "
        "(min–max) |",
        "|---|---|---|---|",
    ]
    keys = [("p50_ms", "latency p50, ms"), ("p99_ms", "latency p99, ms")] + [
        (f"tput_{n}", f"replies/s, {n} in flight") for n in args.inflight]
    for key, label in keys:
        pair = ratios(runs, key)
        lines.append(
            f"| {label} | {statistics.median(runs['full'][key]):.2f} | "
            f"{statistics.median(runs['normal'][key]):.2f} | "
            f"{statistics.median(pair):.2f}× "
            f"({min(pair):.2f}–{max(pair):.2f}) |")
    lines += ["", "`full` flushes the inbox before each request's PUBACK, "
              "and the outbox after each answer is published (while it "
              "travels); answered requests leave the inbox, and delivered "
              "answers the outbox, in batches under one flush: about 1.7 "
              "disk flushes per request, counted with strace. `normal` "
              "flushes only at checkpoints. See docs/durability.md for "
              "what each loses on a power loss."]
    return "\n".join(lines)


def write_section(path, body):
    start, end = "<!-- section:durability -->", "<!-- /section:durability -->"
    section = f"{start}\n## Durability\n\n{body.rstrip()}\n{end}"
    text = path.read_text()
    if start in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text.rstrip() + "\n")
    log(f"wrote the Durability section of {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--requests", type=int, default=1000,
                        help="exchanges per latency run")
    parser.add_argument("--latency-seconds", type=float, default=5.0)
    parser.add_argument("--warmup-requests", type=int, default=100)
    parser.add_argument("--duration", type=float, default=3.0,
                        help="seconds per throughput point")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--inflight", default="1,16",
                        type=lambda s: [int(x) for x in s.split(",")])
    parser.add_argument("--wait-quiet", type=float, default=30)
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    logs = WORK / "logs"
    logs.mkdir(exist_ok=True)
    shutil.rmtree(WORK / "state", ignore_errors=True)
    mqtt_bench.WORK = WORK  # model_repo() builds under our work folder
    perch = WORK / "perch"
    shutil.copy2(args.perch, perch)
    repo = mqtt_bench.model_repo()
    payload = mqtt_bench.request_body()
    machine = mqtt_bench.machine_info()
    quiet = mqtt_bench.Quiet(args.wait_quiet)
    broker_dir = WORK / "broker"
    shutil.rmtree(broker_dir, ignore_errors=True)
    broker = Broker(broker_dir, persistence=True,
                    extra=["set_tcp_nodelay true"]).start()
    agents = []
    try:
        topics = {}
        for mode in MODES:
            device = f"sync-{mode}"
            agent = SyncAgent(perch, repo, broker.url, device,
                              WORK / "state" / device, logs, mode).start()
            agents.append(agent)
            if agent.wait_metric("perch_mqtt_connected", 1, 20) < 1:
                sys.exit(f"the {mode} agent did not connect to the broker")
            topics[mode] = f"perch/{LOCATION}/{device}/infer/{MODEL}"
        runs = measure(args, quiet, broker, topics, payload)
    finally:
        for agent in agents:
            agent.stop()
        broker.stop()
    (WORK / "last_summary.json").write_text(json.dumps(
        {"machine": machine, "runs": runs,
         "background_busy": quiet.seen}, indent=2))
    body = report(machine, args, quiet, runs)
    print("\n" + body + "\n")
    if not args.no_results:
        write_section(Path(args.results), body)


if __name__ == "__main__":
    main()
