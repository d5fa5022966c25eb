#!/usr/bin/python3
"""Location bundle import benchmark (issue 12, item 6): `perch bundle import`
of a ~1 GiB bundle into a fresh agent state, against `tar -xf` of the same
file into a fresh folder, side by side in one run (ABAB: the order
alternates every pair), and perch's peak RSS. Writes the "## Location
bundles" section of bench/RESULTS.md (between <!-- section:bundles -->
markers) unless --no-results.

    make build
    /usr/bin/python3 bench/bundles/run.py              # ~1 GiB, 5 pairs
    /usr/bin/python3 bench/bundles/run.py --size-mib 16 --pairs 2 --no-results   # smoke test

The model is a tiny ONNX model plus --size-mib MiB of data files (8 of
them), signed with `perch sign`, pushed to a `perch hub`, and exported
with `perch bundle export`. What an import does beyond tar: it hashes every
blob as it streams (and fsyncs it), checks index, state signature and
every model, hashes the model's files again to verify its signature, and
builds the release of hard links. Ratio = import time / tar time per pair;
the median and the spread (min..max) of the ratios are reported. Peak RSS
is the import process's maxrss (wait4), which shows memory stays bounded
whatever the bundle's size. Work files go to build/bench-work/bundles/.
"""

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import time
from pathlib import Path

from onnx import TensorProto, helper, save

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("perch_bench", ROOT / "bench" / "run.py")
perch_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perch_bench)

WORK = ROOT / "build" / "bench-work" / "bundles"
SHARDS = 8


def log(message):
    print(message, flush=True)


def run(command, **kwargs):
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {result.stderr}")
    return result


def measured(command):
    """(seconds, peak RSS in MiB) of one command, from wait4's rusage."""
    start = time.perf_counter()
    process = subprocess.Popen([str(c) for c in command], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    elapsed = time.perf_counter() - start
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed: {stderr}")
    return elapsed, usage.ru_maxrss / 1024


def make_model(folder, size_mib):
    folder.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(
        [helper.make_node("Identity", ["INPUT0"], ["OUTPUT0"])], "identity",
        [helper.make_tensor_value_info("INPUT0", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("OUTPUT0", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    save(model, folder / "model.onnx")
    shard = size_mib * (1 << 20) // SHARDS
    for i in range(SHARDS):
        with open(folder / f"data-{i}.bin", "wb") as out:
            left = shard
            while left:
                piece = min(left, 8 << 20)
                out.write(os.urandom(piece))
                left -= piece


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    perch = WORK / "perch"
    shutil.copyfile(args.perch, perch)
    perch.chmod(0o755)
    key, public = WORK / "site.pem", WORK / "site.pub.pem"
    run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key])
    run(["openssl", "ec", "-in", key, "-pubout", "-out", public])

    bundle = WORK / "site.tar"
    log(f"== preparing a {args.size_mib} MiB model, signing, pushing, exporting")
    model = perch_bench.fresh(WORK / "src") / "big" / "1"
    make_model(model, args.size_mib)
    run([perch, "sign", model, "--key", key])
    hub = perch_bench.Hub(perch, perch_bench.fresh(WORK / "hub-data"), ["--max-blob-bytes", 8 << 30])
    try:
        ref = f"{hub.host}/bench/big:1"
        run([perch, "push", model, ref, "--token", hub.token])
        run([perch, "bundle", "export", ref, "--key", key, "--out", bundle, "--generation", "1",
             "--cache", perch_bench.fresh(WORK / "export-cache"), "--token", hub.token])
    finally:
        hub.stop()
    shutil.rmtree(WORK / "src", ignore_errors=True)
    shutil.rmtree(WORK / "export-cache", ignore_errors=True)
    size = bundle.stat().st_size
    log(f"bundle: {size / (1 << 20):.0f} MiB")

    def perch_import():
        state = perch_bench.fresh(WORK / "state")
        seconds, rss = measured([perch, "bundle", "import", bundle, "--state", state,
                                 "--trust-key", public])
        return seconds, rss

    def tar_extract():
        seconds, rss = measured(["tar", "-xf", bundle, "-C", perch_bench.fresh(WORK / "extract")])
        return seconds, rss

    # One of each first, unmeasured: the bundle in the page cache for both.
    perch_import()
    tar_extract()
    rows, ratios, rsses = [], [], []
    for pair in range(args.pairs):
        results = {}
        for name in perch_bench.alternate(pair, "perch", "tar"):
            results[name] = perch_import() if name == "perch" else tar_extract()
        ratio = results["perch"][0] / results["tar"][0]
        ratios.append(ratio)
        rsses.append(results["perch"][1])
        rows.append([pair + 1, f"{results['perch'][0]:.2f}", f"{results['tar'][0]:.2f}",
                     f"{ratio:.2f}", f"{results['perch'][1]:.0f}"])
        log(f"pair {pair + 1}: import {results['perch'][0]:.2f} s, tar -x "
            f"{results['tar'][0]:.2f} s, ratio {ratio:.2f}, import peak RSS "
            f"{results['perch'][1]:.0f} MiB")
    shutil.rmtree(WORK / "state", ignore_errors=True)
    shutil.rmtree(WORK / "extract", ignore_errors=True)

    median = statistics.median(ratios)
    body = (f"Bundle of {size / (1 << 20):.0f} MiB (one signed model: a tiny ONNX model and "
            f"{SHARDS} data files), imported into a fresh state by `perch bundle import` against "
            f"`tar -xf` into a fresh folder; {args.pairs} pairs, order alternating.\n\n"
            + perch_bench.table(["pair", "import s", "tar -x s", "import / tar", "import peak RSS MiB"],
                                rows)
            + f"\nMedian ratio import / tar -x: **{median:.2f}×** (spread {min(ratios):.2f}–"
            f"{max(ratios):.2f}); peak RSS of the import: median {statistics.median(rsses):.0f} "
            f"MiB, max {max(rsses):.0f} MiB for a {size / (1 << 20):.0f} MiB bundle.\n")
    log(body)
    if not args.no_results:
        path = Path(args.results)
        text = path.read_text() if path.exists() else "# Benchmark results\n"
        start, end = "<!-- section:bundles -->", "<!-- /section:bundles -->"
        machine = perch_bench.machine_info()
        section = (f"{start}\n## Location bundles\n\nMachine: {machine['nproc']} cores, "
                   f"{machine['cpu']}, {machine['ram_gib']} GiB RAM; {machine['date']}.\n\n"
                   f"{body.rstrip()}\n{end}")
        if start in text:
            text = text[:text.index(start)] + section + text[text.index(end) + len(end):]
        else:
            text = text.rstrip() + "\n\n" + section + "\n"
        path.write_text(text)
        log(f"wrote the bundles section of {path}")


if __name__ == "__main__":
    main()
