#!/usr/bin/env bash
# Processing stages on the hot path: spooldir -> memory channel -> Kafka, base vs head binary.
#
#   BASE_BIN=/path/to/base/sluice HEAD_BIN=/path/to/head/sluice bench/pipeline/run.sh [ROUNDS]
#
# ROUNDS (default 3) rounds; each round runs every case once, in the order of CASES, reversed
# every other round (so neither binary always goes first). Cases (all on the same private
# broker started by scripts/kafka-dev, each run to a fresh 4-partition topic, key = file name,
# acks=all, lz4, default record headers: the settings of bench/kafka/run.py):
#
#   A-base  base binary, plain lines                  A-head  head binary, plain lines
#   B-ref   head, stack-trace input, no stage         B       head, same input, multiline start '^\d{4}-'
#   C       head, plain lines, interceptors: regex_filter (exclude) + static + regex_extractor
#   D-ref   head, CRI input read as plain lines       D       head, same input, format: cri
#
# Input (bench/pipeline/gen.py, regenerated into OUT/input unless present): the Loghub samples
# (SLUICE_CORPUS, default /work/shared/corpus/loghub) as FILES files (default 6) of TOTAL_MB MB
# in all (default 200) per variant: plain, stack (Java stack traces), cri.
#
# Wall time: from the agent's start (files already in its spool, dated a minute back) until
# every spool file is renamed .COMPLETED, which spooldir does once Kafka acknowledged (acks=all)
# all of the file's records: the last record is in the topic. CPU: user+system of the agent
# (/proc/PID/stat) at that moment; peak RSS: VmHWM. Every run's topic must hold exactly the
# expected record count (sum over partitions of the high watermark), else the script stops.
# AUDIT=last (default) also runs `sluice audit --expect` (head binary) on each case's topic
# in the last round, outside the timing; AUDIT=all
# every round, AUDIT=none never. A failed audit is reported and listed in audit-failures.tsv.
# INPUT=DIR reuses inputs generated before (gen.py's OUT_DIR).
# PERF="B C" records `perf record -F 999 -g` of one extra run of each of those cases after the
# rounds (not in runs.tsv): self time per symbol in OUT/perf-CASE.txt, per thread in
# OUT/perf-CASE-threads.txt.
#
# Output: OUT (default ${TMPDIR:-/tmp}/sluice-pipeline-bench/DATE): runs.tsv (every run),
# summary.md (medians, ratios), agent logs. Nothing is written into the repository.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
rounds=${1:-3}
base_bin=${BASE_BIN:?set BASE_BIN to the base release binary}
head_bin=${HEAD_BIN:?set HEAD_BIN to the head release binary}
total_mb=${TOTAL_MB:-200}
files=${FILES:-6}
corpus=${SLUICE_CORPUS:-/work/shared/corpus/loghub}
cases=${CASES:-A-base A-head B-ref B C D-ref D}
audit=${AUDIT:-last}
perf_cases=${PERF:-}
out=${OUT:-${TMPDIR:-/tmp}/sluice-pipeline-bench/$(date -u +%Y%m%dT%H%M%SZ)}
partitions=4
mkdir -p "$out"
out=$(cd "$out" && pwd)
runs=$out/runs.tsv
hz=$(getconf CLK_TCK)

# Inputs (generated data stays in OUT, never in the repository).
gen=${INPUT:-$out/input}
if [[ ! -f "$gen/expected.env" ]]; then
  echo "generating ${total_mb} MB x 3 variants in $files files into $gen ..." >&2
  python3 "$repo/bench/pipeline/gen.py" "$corpus" "$gen" "$total_mb" "$files" >&2
  # Finished a while ago: spooldir reads a file once it stayed unchanged for `ready_after`.
  touch -d '1 minute ago' "$gen"/*/*.log
fi
# shellcheck disable=SC1091
source "$gen/expected.env"

# A private broker on a free loopback port, stopped at exit.
broker=$out/broker
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$repo/scripts/kafka-dev" start --dir "$broker" --port "$port" --owner-pid $$ >&2
bootstrap=127.0.0.1:$port
trap '"$repo/scripts/kafka-dev" stop --dir "$broker" >/dev/null 2>&1 || true' EXIT

{
  echo "base: $base_bin ($("$base_bin" --version 2>&1 | head -1))"
  echo "head: $head_bin ($("$head_bin" --version 2>&1 | head -1))"
  echo "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); rounds $rounds; cases: $cases"
  echo "input: $gen: plain $plain_bytes B / $plain_lines lines; stack $stack_bytes B / $stack_lines lines" \
    "($stack_records events); cri $cri_bytes B / $cri_lines records ($cri_records lines); $files files each"
  echo "started $(date -u '+%F %T') UTC, load $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out/setup.txt" >&2
printf 'case\tround\twall_s\tcpu_s\tuser_s\tsys_s\tpeak_rss_kib\trecords\texpected\tinput_bytes\tinput_lines\tload1\n' >"$runs"

# case_setup CASE: sets bin, variant, stage (YAML lines under the source), expected.
case_setup() {
  bin=$head_bin variant=plain stage=""
  case $1 in
    A-base) bin=$base_bin ;;
    A-head) ;;
    B-ref) variant=stack ;;
    B) variant=stack stage="      multiline: { start: '^\\d{4}-' }" ;;
    C) stage=$(cat <<'YAML'
      interceptors:
        - { type: regex_filter, regex: '^\d\d-\d\d \S+ +\d+ +\d+ [DV] ', exclude: true }
        - { type: static, key: env, value: prod }
        - { type: regex_extractor, regex: '(?P<level>INFO|WARN|ERROR|DEBUG|FATAL)' }
YAML
      ) ;;
    D-ref) variant=cri ;;
    D) variant=cri stage="      format: cri" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
  case $1 in
    B) expected=$stack_records ;;
    B-ref) expected=$stack_lines ;;
    C) expected=$filtered_records ;;
    D) expected=$cri_records ;;
    D-ref) expected=$cri_lines ;;
    *) expected=$plain_records ;;
  esac
  local b=${variant}_bytes l=${variant}_lines
  input_bytes=${!b} input_lines=${!l}
}

topic_records() {
  local topic=$1 p n total=0
  for ((p = 0; p < partitions; p++)); do
    n=$(kcat -C -b "$bootstrap" -t "$topic" -p "$p" -o -1 -c 1 -e -q -f '%o\n' 2>/dev/null || true)
    [[ -n "$n" ]] && total=$((total + n + 1))
  done
  echo "$total"
}

# run_case CASE ROUND [PREFIX...]: one run; PREFIX (e.g. perf record ...) wraps the agent.
run_case() {
  local name=$1 round=$2
  shift 2
  case_setup "$name"
  local topic=pipe-${name}-r${round}-$RANDOM
  local work=$out/work/$name-r$round
  rm -rf "$work"
  mkdir -p "$work/spool" "$work/data"
  "$repo/scripts/kafka-dev" topic "$topic" "$partitions" --bootstrap "$bootstrap" >/dev/null
  local f
  for f in "$gen/$variant"/*.log; do ln "$f" "$work/spool/"; done
  cat >"$work/agent.yaml" <<YAML
bench:
  data_dir: $work/data
  shutdown_timeout: 30s
  sources:
    r1:
      type: spooldir
      dir: $work/spool
      channel: c1
$stage
  channels:
    c1: { type: memory }
  sinks:
    k1:
      type: kafka
      channel: c1
      brokers: $bootstrap
      topic: $topic
      key: "%{file}"
      acks: all
      compression: lz4
YAML
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  local start end pid
  start=$(date +%s.%N)
  "$@" "$bin" agent -n bench -f "$work/agent.yaml" >/dev/null 2>"$work/agent.log" &
  pid=$!
  if (($#)); then  # wrapped (perf): the agent is the wrapper's child
    local child=""
    while [[ -z "$child" ]]; do child=$(pgrep -P "$pid" -x sluice || true); sleep 0.01; done
    pid=$child
  fi
  while (($(find "$work/spool" -name '*.COMPLETED' | wc -l) < files)); do
    kill -0 "$pid" 2>/dev/null || { tail -20 "$work/agent.log" >&2; exit 1; }
    sleep 0.02
  done
  end=$(date +%s.%N)
  local stat user sys rss
  stat=$(sed 's/.*) //' "/proc/$pid/stat")
  user=$(awk '{print $12}' <<<"$stat")
  sys=$(awk '{print $13}' <<<"$stat")
  rss=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
  kill -TERM "$pid"
  local rc=0
  wait "$!" 2>/dev/null || rc=$?
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  ((rc == 0)) || echo "$name round $round: the agent exited with $rc after SIGTERM (see $work/agent.log)" >&2
  local got
  got=$(topic_records "$topic")
  local wall cpu
  wall=$(awk -v s="$start" -v e="$end" 'BEGIN {printf "%.3f", e - s}')
  cpu=$(awk -v u="$user" -v s="$sys" -v hz="$hz" 'BEGIN {printf "%.2f", (u + s) / hz}')
  printf '%-7s round %s: %7.3f s wall, %6.2f s CPU, %6d MiB peak RSS, %d records (expected %d), load %s\n' \
    "$name" "$round" "$wall" "$cpu" $((rss / 1024)) "$got" "$expected" "$load" >&2
  if [[ "$got" != "$expected" ]]; then
    echo "$name round $round: topic $topic holds $got records, expected $expected" >&2
    exit 1
  fi
  if [[ -z "${*}" && $round != 0 ]]; then  # neither the perf run nor the warm-up
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$wall" "$cpu" \
      "$(awk -v u="$user" -v hz="$hz" 'BEGIN {printf "%.2f", u / hz}')" \
      "$(awk -v u="$sys" -v hz="$hz" 'BEGIN {printf "%.2f", u / hz}')" \
      "$rss" "$got" "$expected" "$input_bytes" "$input_lines" "$load" >>"$runs"
  fi
  if [[ $audit == all || ($audit == last && $round == "$rounds") ]]; then
    # --expect compares the topic with the originals byte for byte.
    local expect=(--expect "$gen/$variant")
    if "$head_bin" audit -b "$bootstrap" -t "$topic" "${expect[@]}" >"$work/audit.txt" 2>&1; then
      echo "        audit${expect[*]:+ --expect}: $(grep -m1 '^summary:' "$work/audit.txt" || tail -1 "$work/audit.txt")" >&2
    else
      echo "        AUDIT PROBLEMS (kept going): $(grep -m1 '^summary:' "$work/audit.txt" || tail -1 "$work/audit.txt"); see $work/audit.txt" >&2
      printf '%s\t%s\taudit failed\n' "$name" "$round" >>"$out/audit-failures.tsv"
    fi
  fi
  rm -rf "$work/spool" "$work/data"
}

# Warm the broker (JIT, page cache of the inputs) with one unmeasured run.
echo "warm-up run (not measured)" >&2
audit=none run_case A-head 0

read -r -a order <<<"$cases"
for ((r = 1; r <= rounds; r++)); do
  list=("${order[@]}")
  if ((r % 2 == 0)); then
    list=()
    for ((i = ${#order[@]} - 1; i >= 0; i--)); do list+=("${order[$i]}"); done
  fi
  for c in "${list[@]}"; do run_case "$c" "$r"; done
done

for c in $perf_cases; do
  echo "perf record of case $c" >&2
  audit=none run_case "$c" perf perf record -F 999 -g -o "$out/perf-$c.data" --
  # Self time per symbol (all threads), then per thread name.
  perf report -i "$out/perf-$c.data" --no-children --sort dso,sym -g none --percent-limit 0.5 \
    --stdio 2>/dev/null | grep -v '^$' | head -70 >"$out/perf-$c.txt" || true
  perf report -i "$out/perf-$c.data" --no-children --sort comm -g none --stdio 2>/dev/null |
    grep -v '^$' | head -30 >"$out/perf-$c-threads.txt" || true
done

# Medians per case and ratios.
python3 "$repo/bench/pipeline/summary.py" "$runs" "$out/summary.md"
echo "results in $out (runs.tsv, summary.md)" >&2
