#!/usr/bin/python3
"""The soak of issue 19 (`make soak HOURS=N`, docs/durability.md): an agent
that takes its models from a hub and its requests from a broker, both links
through fault proxies (500 ms latency, flaps every 10 minutes, a 1-minute
outage every hour), driven at 70 % of the capacity measured at the start
with 1 % malformed requests. Every 30 s it records the agent's RSS, open
files, the size of its --state, and the p99 of request -> answer over the
last interval, into build/soak/samples.csv; at the end it checks:

    RSS drift < 5 %, open files flat, disk flat once its bounded tables are
    full (CLAIM_SLOTS below), p99 within 1.2x of the first 10 minutes, 0 crashes, 0 acknowledged requests lost, 0 duplicates after
    dedupe (a repeat only under the same idempotency key), answers in order.

and prints a summary for bench/RESULTS.md. Exits 1 when a check fails.

    make soak HOURS=2                      # the recorded run
    make soak HOURS=0.05                   # a 3-minute smoke test
"""

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from fault_proxy import FaultProxy  # noqa: E402
from fleet_harness import (admin, create_location, make_scorer_repo,  # noqa: E402
                           push_scorer, wait_scores, fleet_agent)
from hub_harness import HubServer  # noqa: E402
from mqtt_harness import Broker, Client, unique  # noqa: E402

OUT = ROOT / "build" / "soak"
LOCATION = "soak"
DEVICE = "s1"
SAMPLE_EVERY = 30
FLAP_EVERY = 600
OUTAGE_EVERY = 3600
OUTAGE = 60
MALFORMED_SHARE = 0.01
# The inbox remembers the last request under each of MQTT's 65,536 packet
# identifiers (docs/mqtt.md, "What counts as a redelivery"): a table that
# grows over the first 65,536 requests and then keeps its size, as SQLite's
# WAL files grow to their checkpoint size and stay there. The state folder
# is judged flat once both are full.
CLAIM_SLOTS = 65536
WAL_FILL_REQUESTS = 2000


def log(message):
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def request(value):
    return json.dumps({"inputs": [{"name": "INPUT0", "datatype": "FP32",
                                   "shape": [1], "data": [value]}]}).encode()


class Load:
    """Request/reply over MQTT on the agent's device topic: numbered
    requests (Correlation Data = the number), answers matched back, with
    the time each took."""

    def __init__(self, broker, topic):
        self.topic = topic
        self.reply = unique(f"{LOCATION}/replies/")
        self.client = Client(broker.port, max_inflight=10000).connect()
        self.client.subscribe(self.reply)
        self.sent = {}        # number -> monotonic time sent (valid ones)
        self.malformed = 0
        self.latencies = []   # (answered at, seconds) of first answers
        self.keys = {}        # number -> idempotency keys seen
        self.order = []       # first arrivals
        self.lock = threading.Lock()
        self.stop = threading.Event()
        threading.Thread(target=self._receive, daemon=True).start()

    def send(self, number, malformed=False):
        payload = b"{not json" if malformed else request(float(number))
        with self.lock:
            if malformed:
                self.malformed += 1
            else:
                self.sent[number] = time.monotonic()
        self.client.publish(self.topic, payload, response_topic=self.reply,
                            correlation=str(number).encode(), wait=False)

    def _receive(self):
        while not self.stop.is_set():
            message = self.client.next(1)
            if message is None:
                continue
            try:
                number = int(message.correlation.decode())
                body = message.json()
            except (ValueError, AttributeError):
                continue  # not one of ours
            with self.lock:
                if number not in self.sent:
                    continue  # the answer to a malformed request: an error
                key = body.get("idempotency_key")
                if number not in self.keys:
                    self.order.append(number)
                    self.latencies.append(
                        (time.monotonic(),
                         time.monotonic() - self.sent[number]))
                self.keys.setdefault(number, set()).add(key)

    def answered(self):
        with self.lock:
            return len(self.keys)

    def close(self):
        self.stop.set()
        self.client.close()


def process_stats(pid, state):
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(next(line.split()[1] for line in status.splitlines()
                       if line.startswith("VmRSS")))
    files = len(os.listdir(f"/proc/{pid}/fd"))
    disk = sum(f.stat().st_size for f in Path(state).rglob("*")
               if f.is_file())
    return rss_kib, files, disk


def percentile(values, share):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] \
        if ordered else 0.0


def measure_capacity(load, seconds):
    """Answers per second with plenty in flight (through the proxies)."""
    start_answered = load.answered()
    start = time.monotonic()
    number = 10**9
    while time.monotonic() - start < seconds:
        while len(load.sent) - load.answered() < 200:
            load.send(number)
            number += 1
        time.sleep(0.05)
    rate = (load.answered() - start_answered) / seconds
    # Let the backlog drain before the soak proper.
    deadline = time.monotonic() + 120
    while load.answered() < len(load.sent) and time.monotonic() < deadline:
        time.sleep(0.2)
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--capacity-seconds", type=float, default=30)
    args = parser.parse_args()
    seconds = args.hours * 3600
    baseline_window = min(600, seconds / 6)
    OUT.mkdir(parents=True, exist_ok=True)
    work = OUT / "work"
    if work.exists():
        shutil.rmtree(work)
    (work / "hub").mkdir(parents=True)

    broker = Broker(work / "broker", persistence=True).start()
    hub = HubServer(work / "hub").start()
    hub_link = FaultProxy(hub.port, seed=args.seed, latency=0.5).start()
    mqtt_link = FaultProxy(broker.port, seed=args.seed + 1,
                           latency=0.5).start()
    repo = make_scorer_repo(work / "models")
    reference = push_scorer(hub, repo, hub_link.url, "1")
    token = create_location(hub, LOCATION)
    agent = fleet_agent(work, f"http://{hub_link.url}", token, DEVICE,
                        work / "state")
    agent.command += ["--mqtt", f"mqtt://{mqtt_link.url}",
                      "--location", LOCATION]
    agent.start()
    load = None
    failures = []
    try:
        admin(hub, "deploy", reference, "--name", "scorer")
        wait_scores([agent], 11.0, timeout=120)
        load = Load(broker, f"perch/{LOCATION}/{DEVICE}/infer/scorer")
        capacity = measure_capacity(load, args.capacity_seconds)
        capacity_requests = len(load.sent)
        rate = 0.7 * capacity
        with load.lock:
            load.order.clear()  # order is checked over the soak's numbers
        log(f"capacity {capacity:.1f} answers/s through the proxies; "
            f"driving {rate:.1f}/s for {seconds / 3600:.2f} h")

        samples = []
        start = time.monotonic()
        next_sample = start + SAMPLE_EVERY
        next_flap = start + min(FLAP_EVERY, seconds / 4)
        next_outage = start + min(OUTAGE_EVERY, seconds / 2)
        number = 0
        flaps = outages = 0
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            due = int((now - start) * rate)
            while number < due:
                malformed = (number * 7919) % 100 < MALFORMED_SHARE * 100
                load.send(number, malformed=malformed)
                number += 1
            if now >= next_flap:
                hub_link.cut()
                mqtt_link.cut()
                flaps += 1
                next_flap += min(FLAP_EVERY, seconds / 4)
            if now >= next_outage:
                hub_link.down(min(OUTAGE, seconds / 20))
                mqtt_link.down(min(OUTAGE, seconds / 20))
                outages += 1
                next_outage += min(OUTAGE_EVERY, seconds / 2)
            if now >= next_sample:
                if agent.process.poll() is not None:
                    failures.append(f"the agent exited with "
                                    f"{agent.process.returncode}")
                    break
                rss, files, disk = process_stats(agent.process.pid,
                                                 work / "state")
                recent = [s for t, s in load.latencies
                          if t >= next_sample - SAMPLE_EVERY]
                samples.append({
                    "t_s": round(now - start), "rss_kib": rss,
                    "open_files": files, "state_bytes": disk,
                    "p99_ms": round(percentile(recent, 0.99) * 1000, 1),
                    "answered": load.answered(), "sent": number,
                    "requests": capacity_requests + number})
                log(f"{samples[-1]}")
                next_sample += SAMPLE_EVERY
            time.sleep(0.02)

        deadline = time.monotonic() + 180
        while load.answered() < len(load.sent) and \
                time.monotonic() < deadline:
            time.sleep(0.5)
        with (OUT / "samples.csv").open("w", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=list(samples[0]))
            writer.writeheader()
            writer.writerows(samples)

        first = [s for s in samples if s["t_s"] <= baseline_window] or \
            samples[:1]
        last = samples[-max(1, len(first)):]
        rss_drift = statistics.median(s["rss_kib"] for s in last) / \
            statistics.median(s["rss_kib"] for s in first) - 1
        files_range = max(s["open_files"] for s in samples[len(first):] or
                          samples) - min(s["open_files"] for s in first)
        full = [s for s in samples
                if s["requests"] >= CLAIM_SLOTS + WAL_FILL_REQUESTS]
        disk_from = full[:len(first)]
        disk_judged = len(full) > len(last)
        disk_growth = max(s["state_bytes"] for s in last) / \
            max(1, max(s["state_bytes"] for s in disk_from or first)) - 1
        p99_first = statistics.median(s["p99_ms"] for s in first)
        p99_last = statistics.median(s["p99_ms"] for s in last)
        lost = sorted(set(load.sent) - set(load.keys))
        rekeyed = [n for n, k in load.keys.items() if len(k) > 1]
        out_of_order = sum(1 for a, b in zip(load.order, load.order[1:])
                           if b < a)
        summary = {
            "hours": args.hours, "capacity_per_s": round(capacity, 1),
            "rate_per_s": round(rate, 1), "valid_sent": len(load.sent),
            "malformed_sent": load.malformed, "flaps": flaps,
            "outages": outages, "rss_drift": round(rss_drift, 4),
            "open_files_range": files_range,
            "disk_growth": round(disk_growth, 4),
            "disk_growth_from_s": disk_from[0]["t_s"] if disk_judged else None,
            "state_bytes_first": max(s["state_bytes"] for s in first),
            "p99_first_ms": p99_first, "p99_last_ms": p99_last,
            "lost": len(lost), "rekeyed": len(rekeyed),
            "out_of_order": out_of_order,
            "crashes": 0 if agent.process.poll() is None else 1,
        }
        (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
        log(json.dumps(summary))
        if rss_drift >= 0.05:
            failures.append(f"RSS drifted {rss_drift:.1%}")
        if files_range > 5:
            failures.append(f"open files varied by {files_range}")
        if not disk_judged:
            log(f"--state not judged: the inbox's claim table is full after "
                f"{CLAIM_SLOTS + WAL_FILL_REQUESTS} requests, and this run "
                f"had {samples[-1]['requests']}")
        elif disk_growth > 0.10:
            failures.append(f"--state grew {disk_growth:.1%} after "
                            f"t = {disk_from[0]['t_s']} s")
        if p99_first and p99_last > 1.2 * p99_first:
            failures.append(f"p99 {p99_last} ms > 1.2 x {p99_first} ms")
        if lost:
            failures.append(f"{len(lost)} requests never answered, "
                            f"e.g. {lost[:5]}")
        if rekeyed:
            failures.append(f"{len(rekeyed)} answered under two keys")
        # MQTT orders per topic; the agent answers one device topic in order.
        if out_of_order:
            failures.append(f"{out_of_order} answers out of order")
    finally:
        if load:
            load.close()
        if agent.process and agent.process.poll() is None:
            agent.stop()
        hub_link.close()
        mqtt_link.close()
        hub.stop()
        broker.stop()
    for failure in failures:
        log(f"FAILED: {failure}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
