#!/usr/bin/python3
"""Model store benchmark: `perch pull` from the hub against a plain HTTP GET
of the same blob from the same hub, side by side in one run. Writes the
"## Model store" section of bench/RESULTS.md (between <!-- section:store -->
markers) unless --no-results.

    make build
    /usr/bin/python3 bench/store/run.py          # about 2 minutes

a. Throughput: a model whose one layer is --size-mib MiB of weights.
   `perch pull REF --to DIR --cache DIR` into fresh folders (manifest,
   config and layer fetched, every byte hashed, the blob fsynced, then
   installed into the repository) against `curl -o FILE` of the layer
   blob, in interleaved pairs (ABAB..., --repeats pairs, which side goes
   first alternating): the ratio perch MB/s / curl MB/s within each pair,
   median and spread over the pairs; goal >= 0.8. Beside it, curl
   followed by `sync FILE` in the same pair: the same bytes made as
   durable as perch makes them (perch fsyncs every blob before it becomes
   visible).
b. Resume: the pull goes through a relay that cuts the connection after
   half the layer; the second pull must transfer at most 1.05x the bytes
   that were still missing (the relay counts every byte, headers too).
c. Re-pull of an unchanged model with a warm cache: bytes transferred,
   against the size of the manifest (the goal: only the manifest moves).

b. and c. are repeated --repeats times and their medians reported. Work files go to build/bench-work/store/.
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import requests
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench" / "store"))
from byte_proxy import ByteProxy  # noqa: E402

# bench/run.py's helpers (machine facts, tables, verdicts), loaded by path:
# its module name would be this file's own.
_spec = importlib.util.spec_from_file_location("perch_bench", ROOT / "bench" / "run.py")
perch_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perch_bench)

WORK = ROOT / "build" / "bench-work" / "store"


def log(message):
    print(message, flush=True)


def make_model(path, size_mib):
    """OUTPUT0 = INPUT0 + WEIGHTS: one initializer of size_mib MiB."""
    count = size_mib * (1 << 20) // 4
    weights = np.random.default_rng(3).standard_normal(count).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Add", ["INPUT0", "WEIGHTS"], ["OUTPUT0"])], "big",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [count])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [count])],
        [numpy_helper.from_array(weights, "WEIGHTS")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)


def timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result.stderr}")
    return elapsed, result


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perch", default=os.environ.get("PERCH_BIN",
                                                          str(ROOT / "build" / "perch")))
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=10,
                        help="interleaved pairs for a., repeats of b. and c.")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args()

    perch_bench.fresh(WORK)
    perch = str(WORK / "perch")
    shutil.copy2(args.perch, perch)  # a rebuild during the run changes nothing
    perch_bench.PERCH_COMMIT = perch_bench.current_commit()
    model_dir = WORK / "src" / "big" / "1"
    log(f"making a {args.size_mib} MiB model")
    make_model(model_dir / "model.onnx", args.size_mib)
    hub = perch_bench.Hub(perch, perch_bench.fresh(WORK / "hub-data"))
    proxy = ByteProxy(hub.port)
    try:
        ref = f"{hub.host}/bench/big:1"
        pushed = subprocess.run([perch, "push", str(WORK / "src" / "big"), ref,
                                 "--token", hub.token], capture_output=True, text=True,
                                check=True)
        digest = next(line.split()[1] for line in pushed.stdout.splitlines()
                      if line.startswith("digest: "))
        manifest = requests.get(f"http://{hub.host}/v2/bench/big/manifests/{digest}",
                                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        manifest_bytes = len(manifest.content)
        layer = json.loads(manifest.content)["layers"][0]
        blob_url = f"http://{hub.host}/v2/bench/big/blobs/{layer['digest']}"
        size = layer["size"]
        log(f"pushed {ref} ({digest}); layer {size} bytes")

        # a. throughput
        perch_times, curl_times, synced_times = [], [], []
        for repeat in range(args.repeats):
            for side in perch_bench.alternate(repeat, "perch", "curl"):
                if side == "perch":
                    elapsed, _ = timed([perch, "pull", ref, "--to", str(perch_bench.fresh(WORK / "to")),
                                        "--cache", str(perch_bench.fresh(WORK / "cache"))])
                    perch_times.append(elapsed)
                else:
                    target = perch_bench.fresh(WORK / "curl") / "blob"
                    elapsed, _ = timed(["curl", "-sf", "-o", str(target), blob_url])
                    curl_times.append(elapsed)
                    target = perch_bench.fresh(WORK / "curl") / "blob"
                    elapsed, _ = timed(["sh", "-c", 'curl -sf -o "$1" "$2" && sync "$1"', "sh",
                                        str(target), blob_url])
                    synced_times.append(elapsed)
            log(f"  pair {repeat + 1}: perch pull {perch_times[-1]:.3f} s, "
                f"curl {curl_times[-1]:.3f} s, curl + sync {synced_times[-1]:.3f} s, "
                f"ratio {curl_times[-1] / perch_times[-1]:.3f}")
        perch_mbps = size / 1e6 / statistics.median(perch_times)
        curl_mbps = size / 1e6 / statistics.median(curl_times)
        synced_mbps = size / 1e6 / statistics.median(synced_times)
        # Speed ratio within each pair: the other side's time / perch's.
        pair_ratios = perch_bench.pair_ratios(curl_times, perch_times)
        synced_ratios = perch_bench.pair_ratios(synced_times, perch_times)
        throughput_ratio = statistics.median(pair_ratios)

        # b. resume and c. unchanged re-pull, through the counting relay
        proxy_ref = f"127.0.0.1:{proxy.port}/bench/big:1"
        resume_ratios, repull_bytes = [], []
        for repeat in range(args.repeats):
            cache, to = perch_bench.fresh(WORK / "cache"), perch_bench.fresh(WORK / "to")
            proxy.reset(cut_after_bytes=size // 2)
            cut = subprocess.run([perch, "pull", proxy_ref, "--to", str(to), "--cache",
                                  str(cache)], capture_output=True, text=True)
            if cut.returncode == 0:
                raise RuntimeError("the cut pull succeeded: the relay did not cut it")
            partial = sum(f.stat().st_size for f in (cache / "writing").iterdir()) \
                if (cache / "writing").exists() else 0
            proxy.reset()
            subprocess.run([perch, "pull", proxy_ref, "--to", str(to), "--cache", str(cache)],
                           capture_output=True, text=True, check=True)
            resume_ratios.append(proxy.to_client / (size - partial))
            proxy.reset()
            subprocess.run([perch, "pull", proxy_ref, "--to", str(to), "--cache", str(cache)],
                           capture_output=True, text=True, check=True)
            repull_bytes.append(proxy.to_client)
            log(f"  repeat {repeat + 1}: kept {partial} bytes, resume moved "
                f"{resume_ratios[-1]:.4f}x the rest; unchanged re-pull moved "
                f"{repull_bytes[-1]} bytes")
    finally:
        proxy.stop()
        hub.stop()

    resume_ratio = statistics.median(resume_ratios)
    repull = statistics.median(repull_bytes)
    machine = perch_bench.machine_info()
    body = (
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, {machine['ram_gib']} GiB RAM, "
        f"Linux {machine['kernel']}; {machine['date']}; perch commit {machine['commit']}. "
        f"A {args.size_mib} MiB layer. a.: {args.repeats} interleaved pairs (ABAB..., "
        "which side goes first alternating); the ratio is the median of the per-pair speed "
        "ratios (spread in brackets), MB/s the medians of each side. b., c.: medians of "
        f"{args.repeats} repeats. Other work on the machine shows in the spread.\n\n"
        + perch_bench.table(
            ["", "perch", "baseline", "ratio", "goal"],
            [["a. pull throughput, MB/s", f"{perch_mbps:.0f}", f"{curl_mbps:.0f} (curl GET of "
              "the blob)", perch_bench.ratio_cell(pair_ratios),
              perch_bench.verdict(throughput_ratio, 0.8, lower_is_better=False)],
             ["a'. the same, baseline made durable", f"{perch_mbps:.0f}",
              f"{synced_mbps:.0f} (curl, then sync of the file)",
              perch_bench.ratio_cell(synced_ratios), "(for reading a.)"],
             ["b. resumed pull, bytes moved / bytes missing", "", "", f"{resume_ratio:.4f}×",
              perch_bench.verdict(resume_ratio, 1.05)],
             ["c. unchanged re-pull, bytes moved", f"{repull:.0f}",
              f"{manifest_bytes} (the manifest)", f"{repull / manifest_bytes:.1f}×",
              "met (no blob moved)" if repull < size / 100 else "MISSED"]])
        + "\nperch's time includes what curl's does not: starting a larger program, the "
        "manifest and config round trips, SHA-256 of every byte (OpenSSL, SHA-NI), the fsync "
        "that makes the blob durable before it is visible, and installing the model into "
        "the repository (a hard link). The re-pull bytes are HTTP headers and the manifest: "
        "perch resolves the tag, finds every blob in its cache and the version already "
        "installed. Where a pull's time went before the blob path was reworked (perf record -g "
        "and strace -c of a 256 MiB pull from a local hub, 2026-12-01): libcurl's 16 KiB reads "
        "(16,400 recv and 16,600 poll calls), SHA-256 36% of the client's CPU on the same "
        "thread as receiving and writing; the final fsync already took under 1 ms (writeback "
        "is started per MiB). Now perch reads 64 KiB at a time, gathers 1 MiB chunks, writes "
        "each with one call and starts its writeback, and hashes it on a second thread while "
        "the next arrives (docs/model-store.md). The chunks are page-aligned: written from "
        "malloc's 16-byte-offset buffers, the kernel's copy into the page cache took 35-40% "
        "of the pull's CPU instead of 5-8% on this AMD EPYC; 512 KiB reads were no faster than "
        "64 KiB ones (the bytes leave the CPU's caches before they are copied on).\n")
    log(body)
    if not args.no_results:
        perch_bench.replace_results_section(args.results, "store", "Model store", body)
        log(f"wrote the store section of {args.results}")


if __name__ == "__main__":
    main()
