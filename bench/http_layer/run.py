#!/usr/bin/env python3
"""The HTTP layer's choice, measured: perch on its own server (Boost.Beast,
event-driven) against the same agent on the server it replaced (cpp-httplib,
a pool thread per connection), in one run, interleaved.

    /usr/bin/python3 bench/http_layer/run.py --baseline-perch OLD/perch [--perch build/perch]

OLD/perch is `perch` built from the last commit before the switch
(be43592). Three comparisons, each perch / baseline:
  latency     REST JSON p50 on `tiny` at concurrency 1 (`perch perf`, same client for both)
  throughput  REST JSON requests/s on `tiny` at concurrency 16
  stalled     p50 / p99 of GET /v2/health/ready, each on a fresh connection,
              while STALLED other connections have sent half a request head
Latency and throughput alternate short slices (A B, B A, ...) and report the
median of the per-pair ratios with their spread, since the machine drifts
from one minute to the next. Results go to bench/RESULTS.md, section
`http_layer`.
"""
import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))
import run as common  # noqa: E402  (bench/run.py: servers, machine line, RESULTS.md)

PYTHON = "/usr/bin/python3"


def make_tiny(work):
    """The `tiny` model (FP32 [1,256] -> [1,256]) and one request body for it."""
    repo = work / "repos" / "tiny"
    model = repo / "tiny" / "1" / "model.onnx"
    if not model.exists():
        model.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([PYTHON, str(BENCH / "models" / "export_mobilenet.py"), "--tiny",
                        str(model)], check=True)
    request = work / "tiny_request.json"
    request.write_text(json.dumps({"inputs": [{"name": "input", "datatype": "FP32",
                                               "shape": [1, 256],
                                               "data": [i / 256 for i in range(256)]}]}))
    return repo, request


def serve(ctx, name, binary, repo):
    http_port, grpc_port = common.free_port(), common.free_port()
    argv = [str(binary), "serve", "--repo", str(repo), "--http-port", str(http_port),
            "--grpc-port", str(grpc_port)]
    return common.Server(ctx, name, argv, http_port=http_port,
                         grpc_port=grpc_port).wait_ready()


def perf(client, port, request, concurrency, seconds):
    done = subprocess.run([str(client), "perf", "tiny", "--url", f"http://127.0.0.1:{port}",
                           "--concurrency", str(concurrency), "--duration", f"{seconds}s",
                           "--warmup", "1s", "--input-data", str(request), "--json"],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"perch perf failed: {done.stderr[-500:]}")
    level = json.loads(done.stdout)[0]
    if level["errors"]:
        raise RuntimeError(f"perch perf saw {level['errors']} errors on port {port}")
    return level


def probe_ready(port, timeout):
    """Milliseconds for GET /v2/health/ready on a fresh connection; None past `timeout`."""
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            answer = sock.recv(64)
            if not answer.startswith(b"HTTP/1.1 200"):
                return None
    except OSError:
        return None
    return (time.monotonic() - start) * 1000


def stalled(port, count, probes, timeout):
    """Opens `count` connections that send half a request head and stall, then probes."""
    held = []
    try:
        for _ in range(count):
            try:
                sock = socket.create_connection(("127.0.0.1", port), timeout=2)
                sock.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: ben")
                held.append(sock)
            except OSError:
                break
        times = [probe_ready(port, timeout) for _ in range(probes)]
    finally:
        for sock in held:
            sock.close()
    answered = sorted(t for t in times if t is not None)
    result = {"opened": len(held), "probes": probes, "unanswered": probes - len(answered)}
    if answered:
        result["p50_ms"] = answered[len(answered) // 2]
        result["p99_ms"] = answered[min(len(answered) - 1, int(len(answered) * 0.99))]
    return result


def spread(ratios):
    return f"{statistics.median(ratios):.2f}× (pairs {min(ratios):.2f}–{max(ratios):.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perch", default=str(common.ROOT / "build" / "perch"))
    parser.add_argument("--baseline-perch", required=True,
                        help="perch built from the last cpp-httplib commit (be43592)")
    parser.add_argument("--work", default=str(common.ROOT / "build" / "bench-work"))
    parser.add_argument("--results", default=str(BENCH / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--pairs", type=int, default=8, help="A/B slice pairs per comparison")
    parser.add_argument("--slice", type=int, default=3, help="seconds per slice")
    parser.add_argument("--stalled", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=100)
    # bench/run.py's Context reads these.
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--duration", default="3s")
    parser.add_argument("--warmup", default="1s")
    parser.add_argument("--wait-quiet", type=float, default=60.0)
    parser.add_argument("--max-other-load", type=float, default=0.15)
    parser.add_argument("--retries", type=int, default=0)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ctx = common.Context(args)
    common.PERCH_COMMIT = common.current_commit()
    repo, request = make_tiny(ctx.work)
    sides = {"beast": Path(args.perch).resolve(), "httplib": Path(args.baseline_perch).resolve()}
    client = sides["beast"]
    results = {"latency": [], "throughput": []}
    try:
        servers = {side: serve(ctx, f"http-layer-{side}", binary, repo)
                   for side, binary in sides.items()}
        for pair in range(args.pairs):
            for what, concurrency in (("latency", 1), ("throughput", 16)):
                seen = {}
                for side in common.alternate(pair, "beast", "httplib"):
                    ctx.quiet_check()
                    seen[side] = perf(client, servers[side].http_port, request, concurrency,
                                      args.slice)
                key = "p50_ms" if what == "latency" else "throughput"
                results[what].append((seen["beast"][key], seen["httplib"][key]))
                common.log(f"  pair {pair + 1} {what}: beast {seen['beast'][key]:.4g}, "
                           f"httplib {seen['httplib'][key]:.4g}")
        ctx.stop_all()
        stall = {}
        for side, binary in sides.items():
            server = serve(ctx, f"http-layer-stall-{side}", binary, repo)
            stall[side] = stalled(server.http_port, args.stalled, args.probes, timeout=2.0)
            common.log(f"  stalled {side}: {stall[side]}")
            server.stop()
            ctx.servers.remove(server)
    finally:
        ctx.stop_all()

    latency = [b / h for b, h in results["latency"]]
    throughput = [b / h for b, h in results["throughput"]]

    def stall_cell(r):
        if "p50_ms" not in r:
            return f"no answer to any of {r['probes']} probes (2 s timeout each)"
        text = f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
        if r["unanswered"]:
            text += f"; {r['unanswered']} of {r['probes']} unanswered within 2 s"
        return text

    rows = [
        ["REST JSON p50, concurrency 1 (lower is better)",
         f"{statistics.median(b for b, _ in results['latency']):.3f} ms",
         f"{statistics.median(h for _, h in results['latency']):.3f} ms", spread(latency)],
        ["REST JSON throughput, concurrency 16 (higher is better)",
         f"{statistics.median(b for b, _ in results['throughput']):.0f}/s",
         f"{statistics.median(h for _, h in results['throughput']):.0f}/s", spread(throughput)],
        [f"/v2/health/ready on fresh connections, {args.stalled} stalled clients",
         stall_cell(stall["beast"]), stall_cell(stall["httplib"]), "—"],
    ]
    body = (f"perch on Boost.Beast (this commit) against perch on cpp-httplib 0.11 (commit "
            f"be43592, 16 pool threads), same `tiny` model and same client (`perch perf` of "
            f"this commit). {args.pairs} interleaved pairs of {args.slice} s slices; the ratio "
            f"column is the median of the per-pair ratios beast / httplib, with their "
            f"range.\n\n" + common.table(["measure", "beast", "httplib", "ratio"], rows))
    if not args.no_results:
        common.write_section(ctx, "http_layer", "The HTTP layer: Beast vs cpp-httplib", body)
    print(body)


if __name__ == "__main__":
    main()
