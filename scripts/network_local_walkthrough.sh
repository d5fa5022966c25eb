#!/usr/bin/env bash
# The walkthrough of docs/network-local.md, end to end on one machine: a
# hub, three agents of one location, six models placed over them, every
# agent answering every model over REST and gRPC, then one agent killed
# and the other two still answering.
#
#   scripts/network_local_walkthrough.sh [PERCH] [SAMPLE_REPO]
#
# PERCH defaults to build/perch, SAMPLE_REPO to build/sample-repo (`make
# sample-repo`). PORT_BASE (default 18000) moves every port. Everything it
# starts is stopped when it ends; it exits non-zero at the first step that
# does not hold.
set -euo pipefail

perch="$(realpath "${1:-build/perch}")"
sample="$(realpath "${2:-build/sample-repo}")"
base="${PORT_BASE:-18000}"
hub_port=$((base + 80))
hub="http://127.0.0.1:$hub_port"
registry="127.0.0.1:$hub_port"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }
fail() {
  printf 'walkthrough failed: %s\n' "$*" >&2
  tail -n 15 "$work"/*.log >&2 || true
  exit 1
}
# wait_until SECONDS DESCRIPTION COMMAND...: runs COMMAND every 0.2 s until it
# succeeds; fails the walkthrough when SECONDS pass first.
wait_until() {
  local seconds="$1" what="$2"
  shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "no $what within ${seconds} s"
    sleep 0.2
  done
}

step "1. A hub: the registry and the control plane on $hub"
# A short placement grace, so that step 8 shows models moving within
# seconds; the default is 300 s (docs/fleet.md, Placement).
"$perch" hub --data "$work/hub" --port "$hub_port" --placement-grace 10 2>"$work/hub.log" &
pids+=($!)
wait_until 20 "hub" curl -sf "$hub/healthz"
token="$(cat "$work/hub/admin-token")"

step "2. Six models pushed to it"
mkdir -p "$work/models"
cp -r "$sample"/. "$work/models/"
# A sixth model: the same wake word under another name (say, with the
# night shift's threshold in its client).
cp -r "$work/models/hey_jarvis_v0.1" "$work/models/hey_jarvis_night"
models=(melspectrogram embedding_model hey_jarvis_v0.1 alexa_v0.1 silero_vad hey_jarvis_night)
for model in "${models[@]}"; do
  "$perch" push "$work/models/$model" "$registry/wakeword/$model:1" --token "$token" >/dev/null
done
echo "pushed: ${models[*]}"

step "3. A location and three agents in it (edge-1..3)"
enrolment="$("$perch" locations create branch --hub "$hub" --token "$token" |
  sed -n 's/^enrolment token: //p')"
[ -n "$enrolment" ] || fail "no enrolment token"
for i in 1 2 3; do
  "$perch" serve --hub "$hub" --token "$enrolment" --device "edge-$i" \
    --state "$work/edge-$i" --http-port $((base + i)) --grpc-port $((base + 10 + i)) \
    --hub-poll 1 --heartbeat 1 --warmup-runs 0 2>"$work/edge-$i.log" &
  pids+=($!)
done
for i in 1 2 3; do
  wait_until 30 "edge-$i" curl -sf "http://127.0.0.1:$((base + i))/v2/health/live"
done

step "4. Each model deployed to the location with --replicas 1: the hub places them"
for model in "${models[@]}"; do
  "$perch" deploy "$registry/wakeword/$model:1" --location branch --replicas 1 \
    --hub "$hub" --token "$token" | grep 'placed on'
done

# Every model READY on one of the three, and every agent knows where: each
# learns its peers' models with its own next poll of the hub.
served_everywhere() {
  local i model
  for i in 1 2 3; do
    for model in "${models[@]}"; do
      curl -sf "http://127.0.0.1:$((base + i))/v2/models/$model/ready" >/dev/null || return 1
    done
  done
}
wait_until 120 "model served in the location" served_everywhere
"$perch" deployments --hub "$hub" --token "$token"

step "5. Any agent answers any model: REST (the Perch-Device header names who served it)"
for i in 1 2 3; do
  for model in "${models[@]}"; do
    device="$(curl -sf -D - -o /dev/null "http://127.0.0.1:$((base + i))/v2/models/$model/ready" |
      tr -d '\r' | sed -n 's/^[Pp]erch-[Dd]evice: //p')"
    [ -n "$device" ] || fail "edge-$i did not answer for $model"
    printf 'asked edge-%s for %-17s answered by %s\n' "$i" "$model" "$device"
  done
done

# melspectrogram and silero_vad take audio of any length, which random
# inputs shaped after the metadata (a length of 1) are too short for.
step "6. ... and gRPC: inferences of the fixed-shape models through edge-1 (random inputs)"
for model in embedding_model hey_jarvis_v0.1 alexa_v0.1 hey_jarvis_night; do
  "$perch" perf "$model" --protocol grpc --grpc-target "127.0.0.1:$((base + 11))" \
    --url "http://127.0.0.1:$((base + 1))" --duration 500ms --warmup 0s --json |
    grep -Eq '"errors": ?0[,}]' || fail "gRPC inference of $model through edge-1 failed"
  echo "gRPC $model through edge-1: ok"
done

step "7. Where each model runs, asked of any agent"
curl -sf -X POST "http://127.0.0.1:$((base + 2))/v2/repository/index" \
  -H 'Content-Type: application/json' -d '{"location": true}'
echo

step "8. edge-3 killed: the other two keep answering every model they serve"
kill -9 "${pids[3]}"
answered_by_survivors() {
  local model
  for model in "${models[@]}"; do
    curl -sf "http://127.0.0.1:$((base + 1))/v2/models/$model/ready" >/dev/null || return 1
  done
}
for model in "${models[@]}"; do
  if curl -sf -o /dev/null "http://127.0.0.1:$((base + 1))/v2/models/$model/ready"; then
    echo "$model: still answered"
  else
    echo "$model: was on edge-3; the hub moves it after the placement grace"
  fi
done
wait_until 90 "answer for every model from the two survivors" answered_by_survivors
echo "every model answered again:"
curl -sf -X POST "http://127.0.0.1:$((base + 1))/v2/repository/index" \
  -H 'Content-Type: application/json' -d '{"location": true}'
echo
echo "walkthrough done"
