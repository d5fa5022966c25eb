#!/usr/bin/env bash
# Fails, printing them, when the sanitizers wrote any report into $1: a report
# from a process whose exit status nobody checks (a server the integration
# harness killed) must still fail the run.
set -euo pipefail
dir="$1"
shopt -s nullglob
reports=("$dir"/*)
if ((${#reports[@]} == 0)); then
  exit 0
fi
for report in "${reports[@]}"; do
  echo "=== sanitizer report $report"
  cat "$report"
done
echo "sanitizers: ${#reports[@]} report(s) in $dir" >&2
exit 1
