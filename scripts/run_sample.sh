#!/usr/bin/env bash
# Starts `perch serve` on the sample repository and tells the user how to call it.
set -euo pipefail
perch="${1:?usage: run_sample.sh PERCH REPO}"
repo="${2:?usage: run_sample.sh PERCH REPO}"
port="${PERCH_HTTP_PORT:-8000}"
cat <<MSG

perch is starting on http://127.0.0.1:$port with the models in $repo.
In another terminal:

  curl -s localhost:$port/v2/models/hey_jarvis_v0.1
  curl -s -X POST localhost:$port/v2/repository/index
  /usr/bin/python3 -c 'import json; print(json.dumps({"inputs":[{"name":"x.1","datatype":"FP32","shape":[1,16,96],"data":[0.1]*1536}]}))' \\
    | curl -s -X POST localhost:$port/v2/models/hey_jarvis_v0.1/infer -H 'Content-Type: application/json' -d @-
  curl -s localhost:$port/metrics | grep perch_

Press Ctrl-C to stop.

MSG
exec "$perch" serve --repo "$repo" --http-port "$port" --poll 2
