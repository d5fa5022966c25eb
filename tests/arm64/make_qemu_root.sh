#!/usr/bin/env bash
# Makes the folder `qemu-aarch64-static -L DIR` looks in first:
#   tests/arm64/make_qemu_root.sh DIR
# with an Arm /proc/cpuinfo (a Cortex-A72 per host CPU). User-mode qemu 7.2
# shows the arm64 program the host's x86 /proc/cpuinfo, and ONNX Runtime's
# CPU detection (pytorch cpuinfo) crashes on it at load time; every other
# path falls through to the host (the arm64 libraries are where multiarch put
# them). The device facts of an emulated agent therefore say Cortex-A72.
set -euo pipefail
dir="$1"
mkdir -p "$dir/proc"
for ((i = 0; i < $(nproc); i++)); do
  printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
  printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n'
  printf 'CPU revision\t: 3\n\n'
done >"$dir/proc/cpuinfo"
