#!/usr/bin/env bash
# Benchmark: N small files (two lines each) in one spool folder, spooldir -> memory channel ->
# console sink (stdout to a file), from the agent's start until every file is `.COMPLETED`.
# The files are written before the agent starts and dated a minute back (finished files).
#
#   bench/spooldir/many_files.sh [N] [--strace]    (default N: 5000)
#
# SLUICE_BIN picks the binary (default: builds target/release/sluice). With --strace the agent
# runs under `strace -c -f` and the system calls that matter for listing (statx, getdents64,
# openat, fsync) are printed; the wall time is then not comparable.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
n=${1:-5000}
mode=${2:-}
if [[ -z "${SLUICE_BIN:-}" ]]; then
  (cd "$repo" && cargo build --release -q -p sluice-agent --bin sluice)
  SLUICE_BIN=$repo/target/release/sluice
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-many.XXXXXX")
pid=""
trap '[[ -n "$pid" ]] && kill -KILL "$pid" 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/spool" "$work/data"
for ((i = 1; i <= n; i++)); do printf 'file %d line 1\nfile %d line 2\n' "$i" "$i" >"$work/spool/f$i.log"; done
find "$work/spool" -name '*.log' -exec touch -d '1 minute ago' {} +
cat >"$work/agent.yaml" <<YAML
bench:
  data_dir: $work/data
  sources:
    r1: { type: spooldir, dir: $work/spool, channel: c1 }
  channels:
    c1: { type: memory }
  sinks:
    k1: { type: console, channel: c1 }
YAML
start=$(date +%s.%N)
if [[ "$mode" == --strace ]]; then
  strace -c -f -o "$work/strace.txt" "$SLUICE_BIN" agent -n bench -f "$work/agent.yaml" >"$work/out" 2>"$work/log" &
  tracer=$!
  until pid=$(pgrep -P "$tracer"); do sleep 0.05; done
else
  "$SLUICE_BIN" agent -n bench -f "$work/agent.yaml" >"$work/out" 2>"$work/log" &
  pid=$!
fi
completed() { find "$work/spool" -name '*.COMPLETED' -printf . | wc -c; }
while (($(completed) < n)); do
  kill -0 "$pid" 2>/dev/null || { cat "$work/log"; exit 1; }
  sleep 0.05
done
end=$(date +%s.%N)
cpu=$(awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$pid/stat")
kill -TERM "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
pid=""
[[ "$mode" == --strace ]] && wait "$tracer"
printf 'files=%d lines=%d wall=%.2fs cpu=%ss\n' "$n" "$(wc -l <"$work/out")" "$(echo "$end - $start" | bc)" "$cpu"
if [[ "$mode" == --strace ]]; then
  awk '$NF ~ /^(statx|newfstatat|getdents64|openat|fsync)$/ { printf "  %-12s %s calls\n", $NF, $4 }' "$work/strace.txt"
fi
