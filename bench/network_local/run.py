#!/usr/bin/python3
"""Network local benchmark, blobs shared on the LAN: three agents of one
location deploy a large model from the hub at the same moment. Writes the
"## Network local: shared blobs" section of bench/RESULTS.md (between
<!-- section:network-local-blobs --> markers) unless --no-results.

    make build
    /usr/bin/python3 bench/network_local/run.py            # about 3 minutes
    /usr/bin/python3 bench/network_local/run.py --size-mib 8 --repeats 1 --no-results   # smoke

Each repeat runs both sides, alternating which goes first (ABAB):
  peers     three agents enrolled in ONE location: they find each other
            through the hub and share blobs on the LAN;
  registry  three agents, each in a location of its own: each pulls every
            byte from the hub's registry (what every agent did before).
For each side, fresh agents (empty --state) are started and heartbeat,
then one deployment names all three (a label selector) and the clock runs
until all three answer the model READY.

Measured: the blob bytes the hub's registry sends (through a counting
proxy in front of it, the location's WAN link), as a multiple of one copy
of the model's layer (goal for `peers`: <= 1.1x; `registry` sends 3x); and
the time until all three serve, peers / registry, the median of the
per-pair ratios with their spread. Work files go to build/bench-work/network-local/.
"""

import argparse
import importlib.util
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "store"))
_spec = importlib.util.spec_from_file_location("perch_bench", ROOT / "bench" / "run.py")
perch_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perch_bench)
_store = importlib.util.spec_from_file_location("perch_bench_store",
                                                ROOT / "bench" / "store" / "run.py")
store_bench = importlib.util.module_from_spec(_store)
_store.loader.exec_module(store_bench)

WORK = ROOT / "build" / "bench-work" / "network-local"
PROXY = ROOT / "tests" / "tools" / "counting_proxy.py"
DEVICES = ("edge-1", "edge-2", "edge-3")


def log(message):
    print(message, flush=True)


class Proxy:
    """tests/tools/counting_proxy.py in front of the hub."""

    def __init__(self, upstream):
        self.process = subprocess.Popen(["/usr/bin/python3", str(PROXY), upstream],
                                        stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"
        self.host = f"127.0.0.1:{self.port}"

    def layer_bytes(self, digest):
        stats = requests.get(self.url + "/_proxy/stats", timeout=10).json()
        return sum(sent for path, _, sent in stats["blob_requests"] if digest in path)

    def reset(self):
        requests.post(self.url + "/_proxy/reset", timeout=10)

    def stop(self):
        self.process.kill()
        self.process.wait()


def admin(perch, hub, *args):
    return subprocess.run([perch, *args, "--hub", f"http://{hub.host}", "--token", hub.token],
                          capture_output=True, text=True, check=True)


def create_location(hub, name):
    answer = requests.post(f"http://{hub.host}/api/v1/locations", json={"name": name},
                           headers={"Authorization": f"Bearer {hub.token}"}, timeout=10)
    answer.raise_for_status()
    return answer.json()["enrolment_token"]


class Agent:
    def __init__(self, perch, hub, token, device, label, workdir):
        self.port = perch_bench.free_port()
        self.grpc_port = perch_bench.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(workdir / f"{device}.log", "wb")
        self.process = subprocess.Popen(
            [perch, "serve", "--hub", f"http://{hub.host}", "--token", token,
             "--device", device, "--label", label, "--state", str(perch_bench.fresh(workdir / device)),
             "--http-port", str(self.port), "--grpc-port", str(self.grpc_port),
             "--hub-poll", "0.2", "--heartbeat", "0.3"],
            stdout=self.log, stderr=self.log)

    def ready(self, model):
        try:
            return requests.get(f"{self.url}/v2/models/{model}/ready", timeout=2).ok
        except requests.RequestException:
            return False

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def wait(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out after {timeout} s waiting for {what}")


def one_run(perch, hub, proxy, reference, digest, side, run, timeout):
    """Seconds from the deployment until all three agents serve, and the
    layer bytes the registry sent meanwhile."""
    workdir = perch_bench.fresh(WORK / f"{side}-{run}")
    label = f"bench-run=r{run}-{side}"
    if side == "peers":
        token = create_location(hub, f"site-{run}")
        tokens = [token] * 3
    else:
        tokens = [create_location(hub, f"alone-{run}-{i}") for i in range(3)]
    agents = [Agent(perch, hub, token, f"{device}-r{run}-{side}", label, workdir)
              for device, token in zip(DEVICES, tokens)]
    try:
        for agent in agents:
            if not perch_bench.wait_http_ready(agent.port, timeout=60, process=agent.process):
                raise RuntimeError(f"an agent did not start; see {workdir}")
        if side == "peers":
            def all_know_each_other():
                for agent_name in (f"{d}-r{run}-{side}" for d in DEVICES):
                    answer = requests.get(
                        f"http://{hub.host}/api/v1/devices/{agent_name}/peers",
                        headers={"Authorization": f"Bearer {hub.token}"}, timeout=5).json()
                    if len([p for p in answer["peers"] if p["url"]]) != 2:
                        return False
                return True
            wait(all_know_each_other, 30, "the agents to be listed as each other's peers")
        # Let every agent see its peers through a desired-state poll.
        time.sleep(1.0)
        proxy.reset()
        start = time.perf_counter()
        admin(perch, hub, "deploy", reference, "--name", f"big-r{run}-{side}",
              "--label", label)
        wait(lambda: all(agent.ready("big") for agent in agents), timeout,
             "all three agents to serve the model")
        elapsed = time.perf_counter() - start
        return elapsed, proxy.layer_bytes(digest)
    finally:
        for agent in agents:
            agent.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perch", default=os.environ.get("PERCH_BIN",
                                                          str(ROOT / "build" / "perch")))
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()

    perch_bench.fresh(WORK)
    perch = str(WORK / "perch")
    shutil.copy2(args.perch, perch)  # a rebuild during the run changes nothing
    perch_bench.PERCH_COMMIT = perch_bench.current_commit()
    model = WORK / "src" / "big"
    log(f"making a {args.size_mib} MiB model")
    store_bench.make_model(model / "1" / "model.onnx", args.size_mib)
    hub = perch_bench.Hub(perch, perch_bench.fresh(WORK / "hub-data"))
    proxy = Proxy(f"http://{hub.host}")
    runs = {"peers": [], "registry": []}
    try:
        subprocess.run([perch, "push", str(model), f"{hub.host}/bench/big:1", "--token",
                        hub.token], capture_output=True, text=True, check=True)
        manifest = requests.get(f"http://{hub.host}/v2/bench/big/manifests/1", headers={
            "Accept": "application/vnd.oci.image.manifest.v1+json",
            "Authorization": f"Bearer {hub.token}"}, timeout=10).json()
        layer = manifest["layers"][0]
        digest, size = layer["digest"], layer["size"]
        reference = f"{proxy.host}/bench/big:1"
        log(f"pushed bench/big:1; layer {digest}, {size} bytes")
        for repeat in range(args.repeats):
            for side in perch_bench.alternate(repeat, "peers", "registry"):
                elapsed, sent = one_run(perch, hub, proxy, reference, digest, side, repeat,
                                        args.timeout)
                runs[side].append((elapsed, sent / size))
                log(f"  repeat {repeat + 1} {side}: all three serving after {elapsed:.2f} s; "
                    f"the registry sent {sent / size:.3f}x the layer")
    finally:
        proxy.stop()
        hub.stop()

    ratios = [p[0] / r[0] for p, r in zip(runs["peers"], runs["registry"])]
    peer_bytes = statistics.median(b for _, b in runs["peers"])
    registry_bytes = statistics.median(b for _, b in runs["registry"])
    machine = perch_bench.machine_info()
    body = (
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, {machine['ram_gib']} GiB RAM, "
        f"Linux {machine['kernel']}; {machine['date']}; perch commit {machine['commit']}. "
        f"A {args.size_mib} MiB model (one layer); {args.repeats} repeats, sides alternating "
        "(ABAB); three agents on loopback, `--hub-poll 0.2`.\n\n"
        + perch_bench.table(
            ["measure", "peers (one location)", "registry (three locations)", "ratio", "goal"],
            [["blob bytes the registry sent, × one copy (median)", f"{peer_bytes:.3f}×",
              f"{registry_bytes:.3f}×", "", perch_bench.verdict(peer_bytes, 1.1)],
             ["time until all three serve, s (median)",
              f"{statistics.median(e for e, _ in runs['peers']):.2f}",
              f"{statistics.median(e for e, _ in runs['registry']):.2f}",
              f"{statistics.median(ratios):.2f}× (spread {min(ratios):.2f}–{max(ratios):.2f})",
              "(reported)"]])
        + "\nEach run (s, × one copy): peers "
        + ", ".join(f"{e:.2f} s / {b:.2f}×" for e, b in runs["peers"])
        + "; registry " + ", ".join(f"{e:.2f} s / {b:.2f}×" for e, b in runs["registry"])
        + ".\n\nWith peers one agent (the first in a ranking of device name and digest) "
        "fetches the layer from the registry while the two others wait for it and then "
        "take it from that agent over the LAN, so the time is one registry download plus "
        "one LAN copy; on loopback the registry is as fast as the LAN, which is the least "
        "favourable case for sharing: on a real WAN link the registry side takes three "
        "times the bytes over the slow link.\n")
    log(body)
    if not args.no_results:
        perch_bench.replace_results_section(args.results, "network-local-blobs",
                                            "Network local: shared blobs", body)
        log(f"wrote the network-local-blobs section of {args.results}")


if __name__ == "__main__":
    main()
