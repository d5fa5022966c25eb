#!/usr/bin/env bash
# Runs the flapping-link tests of issue 19 (docs/durability.md#flapping-links)
# for SECONDS each, the broker-link test and the hub-link test side by side:
# both mostly wait on a slow link, so together they take as long as one.
# PERCH_TEST_PORTS keeps their ports apart from a test suite running beside
# them. Prints each run's output; fails if either failed.
set -uo pipefail
seconds="${1:?usage: flapping_links.sh SECONDS LOG_FOLDER}"
logs="${2:?usage: flapping_links.sh SECONDS LOG_FOLDER}"
python="${PYTHON:-/usr/bin/python3}"
test_file="$(dirname "${BASH_SOURCE[0]}")/../tests/integration/test_flapping_links.py"
mkdir -p "$logs"
export PERCH_FLAP_SECONDS="$seconds" PERCH_TEST_PORTS="${PERCH_TEST_PORTS:-20000-29999}"

run() {
  "$python" -m pytest -q -s -p no:cacheprovider "$test_file" -k "$2" >"$logs/$1.log" 2>&1
}
run broker-link "stream_over" &
broker=$!
run hub-link "not stream_over" &
hub=$!
wait $broker
broker_status=$?
wait $hub
hub_status=$?

for name in broker-link hub-link; do
  echo "--- flapping links, $name, ${seconds} s ($logs/$name.log)"
  tail -n 40 "$logs/$name.log"
done
[ $broker_status -eq 0 ] && [ $hub_status -eq 0 ]
