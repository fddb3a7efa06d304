#!/usr/bin/env bash
# Before/after comparison of two sets of pre-built binaries on the same machine, alternating
# the two sets run by run (round 1: before then after, round 2: after then before, ...), with
# the existing benchmarks and nothing else changed in what they measure:
#
#   spooldir  bench/spooldir/run.sh SPOOL_MB (300): framing alone (framing_bench, 3 figures
#             a run), and spooldir -> memory -> console on a file of Loghub lines of that size
#   many      bench/spooldir/many_files.sh MANY_FILES (2000): two-line files in one spool
#   taildir   bench/taildir/run.sh TAIL_FILES ("1 100"): catch-up throughput on that many files
#   wal       bench/file_channel/run.sh with WAL_MIB (256) per run, one run per figure, every
#             fsync policy, the raw writer's figure beside each (the disk's speed at that
#             moment); WAL_BACKLOG_MIB (0: none) for the recovery figure, which as root also
#             drops the page cache
#   kafka     bench/kafka/run.py --lines KAFKA_LINES (500000) --runs KAFKA_RUNS (3): its own
#             broker, kcat beside sluice in every run; with --apis unless KAFKA_APIS=0
#
#   bench/compare.sh BEFORE_DIR AFTER_DIR [ROUNDS]      (default 3 rounds)
#
# Each DIR holds sluice, framing_bench, wal_bench and producer_apis (release builds; an
# optional COMMIT file names what they were built from). PATHS picks the benchmarks (default
# "spooldir many taildir wal kafka"). Logs, every figure (samples.tsv) and the summary
# (summary.md: medians, after/before ratio) go to bench/out/compare/DATE/ (OUT: elsewhere).
# Each run gives one sample of each figure, framing three and kafka KAFKA_RUNS; the medians
# are over all samples of all rounds.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
[[ $# -ge 2 ]] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 2; }
before=$(cd "$1" && pwd)
after=$(cd "$2" && pwd)
rounds=${3:-3}
paths=${PATHS:-spooldir many taildir wal kafka}
spool_mb=${SPOOL_MB:-300}
many_files=${MANY_FILES:-2000}
tail_files=${TAIL_FILES:-1 100}
wal_mib=${WAL_MIB:-256}
wal_backlog=${WAL_BACKLOG_MIB:-0}
kafka_lines=${KAFKA_LINES:-500000}
kafka_runs=${KAFKA_RUNS:-3}
out=${OUT:-$repo/bench/out/compare/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
samples=$out/samples.tsv
: >"$samples"

for d in "$before" "$after"; do
  for b in sluice framing_bench wal_bench producer_apis; do
    [[ -x "$d/$b" ]] || { echo "missing $d/$b" >&2; exit 1; }
  done
done
if [[ " $paths " == *" kafka "* ]] && ! command -v kcat >/dev/null; then
  echo "the kafka benchmark needs kcat (apt-get install -y kcat)" >&2
  exit 1
fi

{
  echo "before: $before ($(cat "$before/COMMIT" 2>/dev/null || echo 'no COMMIT file'))"
  echo "after:  $after ($(cat "$after/COMMIT" 2>/dev/null || echo 'no COMMIT file'))"
  echo "$(nproc) cores; rounds: $rounds; paths: $paths; started $(date -u '+%F %T') UTC"
} | tee "$out/setup.txt"

# record LABEL ROUND METRIC VALUE...: one line of samples.tsv per value.
record() {
  local label=$1 round=$2 metric=$3
  shift 3
  for v in "$@"; do printf '%s\t%s\t%s\t%s\n' "$metric" "$label" "$round" "$v" >>"$samples"; done
}

# One benchmark with one set of binaries; its output goes to LOG, its figures to samples.tsv.
run_one() {
  local path=$1 label=$2 round=$3 dir=$4
  local log=$out/$path-$label-$round.log
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  record "$label" "$round" load1 "$load"
  printf '%s round %s %-6s %-8s load %s ... ' "$(date -u +%T)" "$round" "$label" "$path" "$load"
  local rc=0
  case $path in
    spooldir)
      SLUICE_BIN=$dir/sluice FRAMING_BENCH=$dir/framing_bench \
        "$repo/bench/spooldir/run.sh" "$spool_mb" >"$log" 2>&1 || rc=$?
      record "$label" "$round" framing_GB_per_s $(sed -n 's/^round .* s: \([0-9.]*\) GB\/s.*/\1/p' "$log")
      record "$label" "$round" spooldir_wall_s $(sed -n '/; CPU/s/.* MB in \([0-9.]*\) s: .*/\1/p' "$log")
      record "$label" "$round" spooldir_cpu_s $(sed -n 's/.*; CPU \([0-9.]*\) s (.*/\1/p' "$log")
      ;;
    many)
      SLUICE_BIN=$dir/sluice "$repo/bench/spooldir/many_files.sh" "$many_files" >"$log" 2>&1 || rc=$?
      record "$label" "$round" many_files_wall_s $(sed -n 's/.* wall=\([0-9.]*\)s .*/\1/p' "$log")
      record "$label" "$round" many_files_cpu_s $(sed -n 's/.* cpu=\([0-9.]*\)s$/\1/p' "$log")
      ;;
    taildir)
      # shellcheck disable=SC2086
      SLUICE_BIN=$dir/sluice "$repo/bench/taildir/run.sh" $tail_files >"$log" 2>&1 || rc=$?
      local n
      for n in $tail_files; do
        record "$label" "$round" "taildir_${n}_wall_s" \
          $(sed -n "s/^ *$n files, .* M lines\/s (\([0-9.]*\) s, CPU .*/\1/p" "$log")
        record "$label" "$round" "taildir_${n}_cpu_s" \
          $(sed -n "s/^ *$n files, .*, CPU \([0-9.]*\) s).*/\1/p" "$log")
      done
      ;;
    wal)
      WAL_BENCH=$dir/wal_bench "$repo/bench/file_channel/run.sh" "$out/wal-bench" \
        "$wal_mib" "$wal_backlog" 1 >"$log" 2>&1 || rc=$?
      # | Always | 1024 B | channel MB/s | disk MB/s | per fsync | raw MB/s | ratio% (..) |
      local policy size mbs raw pct
      while IFS='|' read -r _ policy size mbs _ _ raw pct _; do
        policy=$(echo $policy | tr 'A-Z' 'a-z')
        size=${size// B/}
        size=${size// /}
        record "$label" "$round" "wal_${policy}_${size}B_MB_per_s" $mbs
        record "$label" "$round" "wal_${policy}_${size}B_raw_MB_per_s" $raw
        record "$label" "$round" "wal_${policy}_${size}B_pct_of_raw" ${pct%%%*}
      done < <(grep -E '^\| (Always|Interval|Never) ' "$log")
      record "$label" "$round" wal_recovery_warm_s \
        $(sed -n 's/^recovery of .*, warm cache: \([0-9.]*\) s/\1/p' "$log")
      ;;
    kafka)
      local apis=--apis
      [[ ${KAFKA_APIS:-1} == 0 ]] && apis=
      # shellcheck disable=SC2086
      SLUICE_BIN=$dir/sluice PRODUCER_APIS=$dir/producer_apis BENCH_OUT=$out/kafka-$label \
        "$repo/bench/kafka/run.py" --lines "$kafka_lines" --runs "$kafka_runs" $apis \
        >"$log" 2>&1 || rc=$?
      local p t
      for p in headers plain; do
        for t in sluice kcat; do
          record "$label" "$round" "kafka_${p}_${t}_wall_s" \
            $(sed -n "s/^round [0-9]* $p *$t *: *\([0-9.]*\) s,.*/\1/p" "$log")
          record "$label" "$round" "kafka_${p}_${t}_cpu_s" \
            $(sed -n "s/^round [0-9]* $p *$t *: .*, cpu *\([0-9.]*\) s$/\1/p" "$log")
        done
        # sluice's wall time over kcat's in the same run (same broker, same minute).
        record "$label" "$round" "kafka_${p}_sluice_over_kcat_wall" $(paste \
          <(sed -n "s/^round [0-9]* $p *sluice *: *\([0-9.]*\) s,.*/\1/p" "$log") \
          <(sed -n "s/^round [0-9]* $p *kcat *: *\([0-9.]*\) s,.*/\1/p" "$log") |
          awk '$2 > 0 { printf "%.3f\n", $1 / $2 }')
      done
      for t in sink threaded future; do
        record "$label" "$round" "apis_${t}_wall_s" \
          $(sed -n "s/^{\"mode\": *\"$t\".*\"wall_s\": *\([0-9.]*\),.*/\1/p" "$log")
        record "$label" "$round" "apis_${t}_cpu_s" \
          $(sed -n "s/^{\"mode\": *\"$t\".*\"cpu_s\": *\([0-9.]*\),.*/\1/p" "$log")
      done
      ;;
    *) echo "unknown path $path" >&2; exit 2 ;;
  esac
  if ((rc != 0)); then
    echo "FAILED ($rc), see $log"
  else
    echo "done"
  fi
}

for ((r = 1; r <= rounds; r++)); do
  for path in $paths; do
    if ((r % 2 == 1)); then
      run_one "$path" before "$r" "$before"
      run_one "$path" after "$r" "$after"
    else
      run_one "$path" after "$r" "$after"
      run_one "$path" before "$r" "$before"
    fi
  done
done
echo "finished $(date -u '+%F %T') UTC; load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out/setup.txt"

python3 - "$samples" "$out/setup.txt" >"$out/summary.md" <<'PY'
import statistics
import sys
from collections import defaultdict

vals = defaultdict(list)
order = []
for row in open(sys.argv[1]):
    metric, label, _, v = row.rstrip("\n").split("\t")
    if metric not in order:
        order.append(metric)
    vals[(metric, label)].append(float(v))
print("".join(f"    {l}" for l in open(sys.argv[2])))
print("Medians over all samples; ratio = after / before (for *_s lower is better, for")
print("*_per_s and *_pct_of_raw higher is better); min..max over the samples; n = samples")
print("per side. load1: the 1-minute load average as each run started.")
print()
print("| metric | before | after | ratio | before min..max | after min..max | n |")
print("|---|---:|---:|---:|---|---|---:|")
for m in order:
    b, a = vals[(m, "before")], vals[(m, "after")]
    if not b or not a:
        print(f"| {m} | {len(b)} samples | {len(a)} samples | | | | |")
        continue
    mb, ma = statistics.median(b), statistics.median(a)
    f = lambda v: f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
    ratio = f"{ma / mb:.2f}" if mb else "-"
    print(f"| {m} | {f(mb)} | {f(ma)} | {ratio} | {f(min(b))}..{f(max(b))} "
          f"| {f(min(a))}..{f(max(a))} | {len(b)}/{len(a)} |")
PY
cat "$out/summary.md"
echo "logs and samples: $out"
