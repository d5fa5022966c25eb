#!/usr/bin/env bash
# Installs the perch .deb into a fresh Debian 12 root and checks it there:
#   tests/package/test_package.sh PERCH_DEB WORK_DIR TEST_MODELS
# The root comes from debootstrap (the mirror apt uses), made once and kept
# as WORK_DIR/debian12-root.tar.gz; each run unpacks a fresh copy, installs
# the package with its dependencies (apt, downloads kept in
# WORK_DIR/apt-archives), runs the binary in the root (chroot, as the perch
# user), serves a model from it over loopback, then removes the package (the
# state stays) and purges it (the state goes). Needs root. See docs/install.md.
set -euo pipefail

deb="$(realpath "$1")" work="$(realpath -m "$2")" models="$(realpath "$3")"
mkdir -p "$work/apt-archives"
cache="$work/debian12-root.tar.gz"
mirror=$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1)
mirror=${mirror:-$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null)}
mirror=${mirror:-http://deb.debian.org/debian}

fail() { echo "package-test: FAILED: $*" >&2; exit 1; }

if [ ! -f "$cache" ]; then
  echo "package-test: debootstrap of Debian 12 from $mirror (once; cached in $cache)"
  tmp="$work/debian12-root.tmp"
  rm -rf "$tmp"
  debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log"; fail "debootstrap"; }
  echo "deb $mirror bookworm main" >"$tmp/etc/apt/sources.list"
  tar -C "$tmp" -czf "$cache.part" . && mv "$cache.part" "$cache"
  rm -rf "$tmp"
fi

root="$work/root"
server_pid=""
cleanup() {
  [ -z "$server_pid" ] || kill "$server_pid" 2>/dev/null || true
  for mount in "$root/var/cache/apt/archives" "$root/proc"; do
    mountpoint -q "$mount" 2>/dev/null && umount "$mount"
  done
  rm -rf "$root"
}
trap cleanup EXIT
rm -rf "$root"
mkdir -p "$root"
tar -C "$root" -xzf "$cache"
mount -t proc proc "$root/proc"
mount --bind "$work/apt-archives" "$root/var/cache/apt/archives"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

echo "package-test: installing $(basename "$deb") with apt in a fresh root"
cp "$deb" "$root/tmp/perch.deb"
in_root apt-get update -qq >"$work/apt.log" 2>&1 || { tail "$work/apt.log"; fail "apt-get update"; }
DEBIAN_FRONTEND=noninteractive in_root apt-get install -y -qq --no-install-recommends \
  /tmp/perch.deb >>"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log"; fail "apt-get install"; }

in_root perch --version | grep -q . || fail "perch --version does not run in the root"
in_root getent passwd perch >/dev/null || fail "no perch user"
[ "$(in_root stat -c %U /var/lib/perch)" = perch ] || fail "/var/lib/perch is not the perch user's"
[ -f "$root/etc/perch/agent.env" ] && [ -f "$root/etc/perch/hub.env" ] || fail "no /etc/perch/*.env"
[ -L "$root/etc/systemd/system/multi-user.target.wants/perch-agent.service" ] \
  || fail "perch-agent.service is not enabled"

echo "package-test: serving a model from the root as the perch user"
cp -r "$models/multi_version" "$root/var/lib/perch/models/adder"
rm -f "$root/var/lib/perch/models/adder/model.json"
in_root chown -R perch:perch /var/lib/perch/models
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
chroot "$root" env -i PATH=/usr/bin:/bin setpriv --reuid=perch --regid=perch --init-groups \
  /usr/bin/perch serve --repo /var/lib/perch/models --state /var/lib/perch/agent \
  --host 127.0.0.1 --http-port "$port" --grpc-port 0 >"$work/serve.log" 2>&1 &
server_pid=$!
ready=""
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/v2/health/ready" >/dev/null; then ready=1; break; fi
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.2
done
[ -n "$ready" ] || { cat "$work/serve.log"; fail "perch serve in the root was not ready in 20 s"; }
answer=$(curl -sf -m 10 "http://127.0.0.1:$port/v2/models/adder/infer" \
  -d '{"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [2], "data": [1.5, 2]}]}')
echo "$answer" | python3 -c 'import json, sys; sys.exit(json.load(sys.stdin)["outputs"][0]["data"] != [4.5, 5.0])' \
  || fail "the model answered $answer, not [4.5, 5] (version 3 adds 3)"
kill "$server_pid" && wait "$server_pid" || true
server_pid=""
[ -d "$root/var/lib/perch/agent" ] || fail "perch serve wrote no state"

echo "package-test: removal keeps the state and settings, a purge deletes them"
in_root dpkg -r perch >>"$work/apt.log" 2>&1 || fail "dpkg -r"
[ ! -e "$root/usr/bin/perch" ] || fail "dpkg -r left /usr/bin/perch"
[ -d "$root/var/lib/perch/models/adder" ] || fail "dpkg -r removed the state"
[ -f "$root/etc/perch/agent.env" ] || fail "dpkg -r removed the settings"
in_root dpkg -P perch >>"$work/apt.log" 2>&1 || fail "dpkg -P"
[ ! -e "$root/var/lib/perch" ] || fail "dpkg -P left /var/lib/perch"
[ ! -e "$root/etc/perch" ] || fail "dpkg -P left /etc/perch"
echo "package-test: ok"
