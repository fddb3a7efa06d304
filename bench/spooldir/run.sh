#!/usr/bin/env bash
# Benchmark: spooldir -> memory channel -> console sink, stdout to /dev/null, on a generated
# file of real log lines (the Loghub samples in ../shared/corpus, repeated to SIZE_MB).
# Also measures raw line framing on one core (sources/examples/framing_bench.rs) on the same file.
#
#   bench/spooldir/run.sh [SIZE_MB]      (default 1100)
#
# SLUICE_BIN and FRAMING_BENCH pick pre-built binaries (default: builds target/release/sluice
# and the framing_bench example).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
size_mb=${1:-1100}
corpus=${SLUICE_CORPUS:-$repo/../shared/corpus/loghub}
work=$(mktemp -d "${TMPDIR:-/tmp}/sluice-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

cd "$repo"
if [[ -z "${SLUICE_BIN:-}" ]]; then
  cargo build --release -q -p sluice-agent --bin sluice
  SLUICE_BIN=$repo/target/release/sluice
fi
if [[ -z "${FRAMING_BENCH:-}" ]]; then
  cargo build --release -q -p sluice-sources --example framing_bench
  FRAMING_BENCH=$repo/target/release/examples/framing_bench
fi
bin=$SLUICE_BIN

mkdir -p "$work/spool" "$work/data"
input=$work/input.log
echo "generating ${size_mb} MB from $corpus ..." >&2
cat "$corpus"/*.log > "$work/one.log"
printf '\n' >> "$work/one.log"
while [ "$(stat -c %s "$input" 2>/dev/null || echo 0)" -lt $((size_mb * 1000 * 1000)) ]; do
  cat "$work/one.log" >> "$input"
done
bytes=$(stat -c %s "$input")
lines=$(wc -l < "$input")

echo "== framing only (one core, file in page cache)"
"$FRAMING_BENCH" "$input" 3

cat > "$work/agent.yaml" <<YAML
bench:
  data_dir: $work/data
  sources:
    r1: { type: spooldir, dir: $work/spool, channel: c1 }
  channels:
    c1: { type: memory }
  sinks:
    k1: { type: console, channel: c1 }
YAML

echo "== spooldir -> memory -> console (stdout to /dev/null)"
# A file finished a while ago: the source reads a file only once it has stayed unchanged for
# `ready_after` (1s), which the measure is not about.
touch -d '1 minute ago' "$input"
mv "$input" "$work/spool/input.log"
start=$(date +%s.%N)
"$bin" agent -n bench -f "$work/agent.yaml" > /dev/null 2> "$work/agent.log" &
pid=$!
while [ ! -e "$work/spool/input.log.COMPLETED" ]; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/agent.log"; exit 1; }
  sleep 0.05
done
end=$(date +%s.%N)
# utime + stime of the agent, in clock ticks (fields 14 and 15 of /proc/PID/stat).
ticks=$(awk '{print $14 + $15}' "/proc/$pid/stat")
kill -TERM "$pid"; wait "$pid"
hz=$(getconf CLK_TCK)
awk -v b="$bytes" -v l="$lines" -v s="$start" -v e="$end" -v t="$ticks" -v hz="$hz" 'BEGIN {
  secs = e - s; cpu = t / hz;
  printf "%d lines, %.0f MB in %.2f s: %.2f M lines/s, %.0f MB/s; CPU %.2f s (%.2f CPU s/GB)\n",
    l, b / 1e6, secs, l / secs / 1e6, b / secs / 1e6, cpu, cpu / (b / 1e9) }'
