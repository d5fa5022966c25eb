#!/usr/bin/python3
"""Signature verification benchmark: `perch verify` of a signed model folder
against `sha256sum` of the same files, side by side in one run. Writes the
"## Model signatures" section of bench/RESULTS.md (between
<!-- section:signing --> markers) unless --no-results.

    make build
    /usr/bin/python3 bench/signing/run.py            # about 1 minute
    /usr/bin/python3 bench/signing/run.py --size-mib 8 --repeats 3 --no-results   # smoke test

The model: --size-mib MiB of random bytes in --files files (one large
weights file and small ones, as a model folder holds), signed once with a
P-256 key made by the openssl CLI. Both sides read the files from the page
cache (a warm-up pass of each comes first): perch verify hashes every file,
checks the folder against the signature's list and the ECDSA signature;
sha256sum only hashes. Pairs alternate which side goes first (ABAB); the
figure is the median of the per-pair ratios perch / sha256sum, with their
spread. Goal: <= 1.1x. Work files go to build/bench-work/signing/.
"""

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("perch_bench", ROOT / "bench" / "run.py")
perch_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(perch_bench)

WORK = ROOT / "build" / "bench-work" / "signing"
GOAL = 1.1


def log(message):
    print(message, flush=True)


def make_model(folder, size_mib, files):
    """One weights file with most of the bytes, and files-1 small ones."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    small = 64 * 1024
    sizes = [size_mib * (1 << 20) - small * (files - 1)] + [small] * (files - 1)
    paths = []
    for i, size in enumerate(sizes):
        path = folder / ("model.onnx" if i == 0 else f"extra-{i}.bin")
        with open(path, "wb") as out:
            remaining = size
            while remaining:
                chunk = min(remaining, 8 << 20)
                out.write(os.urandom(chunk))
                remaining -= chunk
        paths.append(path)
    return paths


def timed(command):
    start = time.perf_counter()
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{command[0]} failed: {result.stderr.decode(errors='replace')}")
    return elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(ROOT / "build" / "perch"))
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--no-results", action="store_true")
    parser.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"))
    args = parser.parse_args()

    WORK.mkdir(parents=True, exist_ok=True)
    perch = WORK / "perch"
    shutil.copy(args.perch, perch)  # a rebuild during the run changes nothing
    key, public = WORK / "key.pem", WORK / "key.pub.pem"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout",
                    "-out", key], check=True)
    subprocess.run(["openssl", "ec", "-in", key, "-pubout", "-out", public], check=True,
                   capture_output=True)
    model = WORK / "model"
    files = make_model(model, args.size_mib, args.files)
    subprocess.run([perch, "sign", model, "--key", key], check=True, stdout=subprocess.DEVNULL)

    verify = [str(perch), "verify", str(model), "--key", str(public)]
    sha256sum = ["sha256sum", *map(str, files)]
    timed(verify)  # warm-up: both sides read from the page cache
    timed(sha256sum)
    perch_times, sum_times, ratios = [], [], []
    for repeat in range(args.repeats):
        first, second = perch_bench.alternate(repeat, verify, sha256sum)
        t_first, t_second = timed(first), timed(second)
        t_perch, t_sum = (t_first, t_second) if first is verify else (t_second, t_first)
        perch_times.append(t_perch)
        sum_times.append(t_sum)
        ratios.append(t_perch / t_sum)
        log(f"pair {repeat + 1}: perch verify {t_perch * 1000:.1f} ms, "
            f"sha256sum {t_sum * 1000:.1f} ms, ratio {t_perch / t_sum:.3f}")

    ratio = statistics.median(ratios)
    size_mb = args.size_mib * (1 << 20) / 1e6
    machine = perch_bench.machine_info()
    body = (
        f"Machine: {machine['nproc']} cores, {machine['cpu']}, {machine['ram_gib']} GiB RAM, "
        f"Linux {machine['kernel']}; {machine['date']}; perch commit {machine['commit']}. "
        f"A {args.size_mib} MiB model in {args.files} files, signed with P-256; {args.repeats} "
        "pairs, sides alternating (ABAB), files in the page cache.\n\n"
        + perch_bench.table(
            ["", "perch verify", "sha256sum of the files", "ratio (median of pairs)",
             "spread of pair ratios", "goal"],
            [["verify a signed model", f"{statistics.median(perch_times) * 1000:.0f} ms "
              f"({size_mb / statistics.median(perch_times):.0f} MB/s)",
              f"{statistics.median(sum_times) * 1000:.0f} ms "
              f"({size_mb / statistics.median(sum_times):.0f} MB/s)",
              f"{ratio:.3f}×", f"{min(ratios):.3f}–{max(ratios):.3f}",
              perch_bench.verdict(ratio, GOAL)]])
        + "\nperch's time includes what sha256sum's does not: starting the binary, reading "
        "the key and the signature, walking the folder, checking the file list against the "
        "signature and the ECDSA verification.\n")
    log(body)
    if not args.no_results:
        perch_bench.replace_results_section(args.results, "signing", "Model signatures", body)
        log(f"wrote the signing section of {args.results}")


if __name__ == "__main__":
    main()
