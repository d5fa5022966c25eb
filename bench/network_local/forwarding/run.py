#!/usr/bin/python3
"""Forwarding benchmark (issue 11 item 6): what a request pays for being
forwarded by the agent it reached to the agent of the location that serves
its model. Writes the "Network local: forwarding" section of
bench/RESULTS.md (between <!-- section:forwarding --> markers) unless
--no-results.

    make build
    /usr/bin/python3 bench/network_local/forwarding/run.py    # about 6 minutes

Two agents of one location on loopback, each with --peer to the other and
a shared --peer-token: `far` serves the models (tiny: FP32 [1,256] y = x·1;
MobileNetV2, random weights), `near` serves none. `perch perf` at
concurrency 1 measures the p50 of the same requests sent to `far` directly
and sent to `near`, which forwards them (REST with the binary tensor
extension, and gRPC). Direct and forwarded alternate in each repeat (ABAB:
direct first in even repeats, forwarded first in odd ones); each repeat
gives one pair per case, and the figures are the medians over the pairs of
forwarded / direct (MobileNetV2) and forwarded − direct (tiny), with their
spread (min–max).

Goals: MobileNetV2 forwarded p50 ≤ 1.15× direct; tiny forwarded adds
≤ 0.3 ms at p50. Models are exported once (bench/models/export_mobilenet.py;
reused from build/bench-work/models when bench/run.py made them); logs and
the last summary go to build/bench-work/network_local_forwarding/.
"""
import argparse
import os
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bench"))
import run as bench  # noqa: E402  (bench/run.py: servers, perf, machine line, sections)

PEER_TOKEN = "forwarding-bench-peer-token-0123456789"
GOAL_MOBILENET_RATIO = 1.15
GOAL_TINY_ADDED_MS = 0.3
SHAPES = {"tiny": [1, 256], "mobilenet": [1, 3, 224, 224]}
CASES = [
    # (label, model, protocol, binary)
    ("tiny, REST binary", "tiny", "rest", True),
    ("tiny, gRPC", "tiny", "grpc", False),
    ("MobileNetV2, REST binary", "mobilenet", "rest", True),
    ("MobileNetV2, gRPC", "mobilenet", "grpc", False),
]


def log(message):
    print(f"[forwarding-bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def prepare_models(ctx, models):
    """The models (exported once, or copied from bench/run.py's work folder),
    far's repository and the request bodies (OIP JSON, fixed pseudo-random
    data, as bench/run.py makes them)."""
    folder = ctx.work / "models"
    folder.mkdir(parents=True, exist_ok=True)
    shared = ROOT / "build" / "bench-work" / "models"
    exporter = ROOT / "bench" / "models" / "export_mobilenet.py"
    repo = ctx.work / "repos" / "far"
    if repo.exists():
        shutil.rmtree(repo)
    ctx.inputs = {}
    for model in models:
        onnx = folder / f"{model}.onnx"
        if not onnx.exists() and (shared / onnx.name).exists():
            shutil.copyfile(shared / onnx.name, onnx)
        if not onnx.exists():
            log(f"exporting {model}")
            subprocess.run([bench.PYTHON, str(exporter), *(["--tiny"] if model == "tiny" else []),
                            str(onnx)], check=True)
        (repo / model / "1").mkdir(parents=True)
        shutil.copyfile(onnx, repo / model / "1" / "model.onnx")
        shape = SHAPES[model]
        count = 1
        for dim in shape:
            count *= dim
        rng = random.Random(42)
        path = ctx.work / f"{model}_request.json"
        path.write_text(json.dumps({"inputs": [{
            "name": "input", "datatype": "FP32", "shape": shape,
            "data": [round(rng.random(), 6) for _ in range(count)]}]}))
        ctx.inputs[model] = path
    ctx.repos = {"far": repo}


def start_location(ctx, models):
    """(near, far): far serves tiny and MobileNetV2, near nothing; each has
    the other as its --peer. Returns once near lists far's models."""
    empty = ctx.work / "repos" / "empty"
    empty.mkdir(parents=True, exist_ok=True)
    ports = {name: (bench.free_port(), bench.free_port()) for name in ("near", "far")}
    servers = {}
    for name, other, repo in (("far", "near", ctx.repos["far"]), ("near", "far", empty)):
        http_port, grpc_port = ports[name]
        argv = []
        if ctx.args.hosts == "split":
            # Two hosts on one 2-core machine: far (the agent that runs the
            # model) alone on CPU 1 with one engine thread; near, and the
            # client (this script's children, see main), on CPU 0. Otherwise
            # near's forwarding competes with far's inference for the same
            # cores, which two machines on a LAN do not.
            argv = ["taskset", "-c", "1" if name == "far" else "0"]
        argv += [str(ctx.perch), "serve", "--repo", str(repo), "--device", name,
                "--http-port", str(http_port), "--grpc-port", str(grpc_port),
                "--peer", f"http://127.0.0.1:{ports[other][0]}", "--peer-token", PEER_TOKEN,
                "--log-level", "warn"]
        if ctx.args.hosts == "split" and name == "far":
            argv += ["--threads", "1"]
        servers[name] = bench.Server(ctx, name, argv, http_port=http_port, grpc_port=grpc_port)
    for server in servers.values():
        server.wait_ready()
    near = servers["near"]
    deadline = time.monotonic() + 60
    while True:
        status, _, body = bench.http_request(near.http_port, "POST", "/v2/repository/index",
                                             b'{"location": true}',
                                             {"Content-Type": "application/json"})
        listed = {row["name"]: row.get("device") for row in json.loads(body)} if status == 200 \
            else {}
        if all(listed.get(model) == "far" for model in models):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"near does not list far's models after 60 s: {status} {body!r}")
        time.sleep(0.2)
    # Every answer through near must come from far.
    status, headers, _ = bench.http_request(near.http_port, "GET", f"/v2/models/{models[0]}")
    served_by = {k.lower(): v for k, v in headers.items()}.get("perch-device")
    if status != 200 or served_by != "far":
        raise RuntimeError(f"near did not forward: {status}, Perch-Device {served_by!r}")
    return near, servers["far"]


def measure(ctx, cases):
    near, far = start_location(ctx, sorted({case[1] for case in cases}))
    ports = {("near", "rest"): near.http_port, ("near", "grpc"): near.grpc_port,
             ("far", "rest"): far.http_port, ("far", "grpc"): far.grpc_port}
    pairs = {label: [] for label, *_ in cases}
    for repeat in range(ctx.args.repeats):
        for label, model, protocol, binary in cases:
            p50 = {}
            for side in bench.alternate(repeat, "direct", "forwarded"):
                agent = "far" if side == "direct" else "near"
                level = ctx.perf(model, protocol, ports[(agent, protocol)], [1],
                                 ctx.inputs[model], binary)[1]
                p50[side] = level["p50_ms"]
            pairs[label].append(p50)
            log(f"  repeat {repeat + 1} {label:26s} direct {p50['direct']:.4f} ms, "
                f"forwarded {p50['forwarded']:.4f} ms")
    ctx.stop_all()
    return pairs


def report(pairs, cases, args_hosts):
    rows, summary = [], {}
    for label, model, *_ in cases:
        runs = pairs[label]
        direct = bench.median([p["direct"] for p in runs])
        forwarded = bench.median([p["forwarded"] for p in runs])
        ratios = [p["forwarded"] / p["direct"] for p in runs]
        added = [p["forwarded"] - p["direct"] for p in runs]
        ratio, extra = bench.median(ratios), bench.median(added)
        if model == "mobilenet":
            goal = (("met" if ratio <= GOAL_MOBILENET_RATIO else "MISSED")
                    + f" (goal ≤ {GOAL_MOBILENET_RATIO}×)")
        else:
            goal = (("met" if extra <= GOAL_TINY_ADDED_MS else "MISSED")
                    + f" (goal ≤ +{GOAL_TINY_ADDED_MS} ms)")
        summary[label] = {"direct_p50_ms": direct, "forwarded_p50_ms": forwarded,
                          "ratio": ratio, "added_ms": extra, "pairs": runs}
        rows.append([label, bench.fmt_ms(direct), bench.fmt_ms(forwarded),
                     f"{ratio:.3f}× ({min(ratios):.3f}–{max(ratios):.3f})",
                     f"{extra:+.3f} ({min(added):+.3f} – {max(added):+.3f})", goal])
        log(f"  {label}: direct {direct:.4f} ms, forwarded {forwarded:.4f} ms, "
            f"ratio {ratio:.3f}, added {extra:+.4f} ms")
    hosts = ("`--hosts split`: far alone on CPU 1 with `--threads 1`, near and the "
             "client on CPU 0 (`taskset`), as two machines would be. " if args_hosts == "split"
             else "`--hosts shared`: every process on both cores. ")
    body = (
        hosts +
        "Two agents of one location on loopback (`--peer` to each other, `--peer-token`): "
        "`far` serves the models, `near` none and forwards. Client: `perch perf`, "
        "concurrency 1, the same request sent to `far` (direct) and to `near` (forwarded), "
        "alternating which goes first. Per case, the medians of the per-repeat p50s and the "
        "median (min–max) over the repeats of each pair's forwarded / direct and forwarded − "
        "direct.\n\n" +
        bench.table(["case", "direct p50 ms", "forwarded p50 ms", "forwarded / direct",
                     "added ms", "goal"], rows))
    return body, summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--work", default=str(ROOT / "build" / "bench-work" /
                                              "network_local_forwarding"))
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--duration", default="5s", help="measuring time per point (seconds)")
    parser.add_argument("--warmup", default="2s", help="unmeasured time before each point")
    parser.add_argument("--wait-quiet", type=float, default=60.0)
    parser.add_argument("--max-other-load", type=float, default=0.15)
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--hosts", choices=("split", "shared"), default="split",
                        help="split: near and far on a core each, as on two machines "
                             "(default); shared: every process on both cores")
    parser.add_argument("--models", default="tiny,mobilenet",
                        help="which models to measure (MobileNetV2 needs python3-torchvision "
                             "to export it: `scripts/bootstrap.sh bench`)")
    args = parser.parse_args()
    models = args.models.split(",")
    if not models or any(model not in SHAPES for model in models):
        parser.error(f"--models takes a list of {', '.join(SHAPES)}")
    cases = [case for case in CASES if case[1] in models]
    ctx = bench.Context(args)
    perch = Path(args.perch)
    if not perch.exists():
        parser.error(f"{perch} does not exist: run `make build` first")
    bench.PERCH_COMMIT = bench.current_commit()
    ctx.perch = ctx.work / "perch"
    shutil.copy2(perch, ctx.perch)
    prepare_models(ctx, models)
    if args.hosts == "split":
        os.sched_setaffinity(0, {0})  # near and perf inherit it; far is placed by taskset
    try:
        pairs = measure(ctx, cases)
    finally:
        ctx.stop_all()
    body, summary = report(pairs, cases, args.hosts)
    (ctx.work / "last_summary.json").write_text(json.dumps(summary, indent=2))
    print(body)
    section = "forwarding" if args.hosts == "split" else "forwarding-shared-cores"
    title = "Network local: forwarding" + ("" if args.hosts == "split" else " (shared cores)")
    bench.write_section(ctx, section, title, body)


if __name__ == "__main__":
    main()
