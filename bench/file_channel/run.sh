#!/usr/bin/env bash
# Benchmark of the file channel (channels/examples/wal_bench.rs): put+take throughput per fsync
# policy with 1 KiB and 200-byte events, beside a raw sequential writer with the same fsync
# cadence on the same disk, and the recovery time of a backlog; then `dd oflag=dsync` as an
# independent raw figure.
#
#   bench/file_channel/run.sh [DIR] [MIB_PER_RUN] [BACKLOG_MIB] [REPS]
#
# DIR (default target/wal-bench) must be on the disk to measure. Defaults: 1024 MiB per run,
# a 1024 MiB backlog, each figure the median of 3 runs. Run as root to also measure recovery
# with a cold page cache. WAL_BENCH picks a pre-built wal_bench binary (default: cargo run).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$repo/target/wal-bench}
mib=${2:-1024}
backlog=${3:-1024}
cd "$repo"
mkdir -p "$dir"
trap 'rm -rf "$dir"' EXIT
echo "== $(nproc) cores, $(df -h --output=source,fstype "$dir" | tail -1), $(date -u +%F)"
if [[ -n "${WAL_BENCH:-}" ]]; then
  "$WAL_BENCH" "$dir" "$mib" "$backlog" "${4:-3}"
else
  cargo run --release -q -p sluice-channels --example wal_bench -- "$dir" "$mib" "$backlog" "${4:-3}"
fi
echo "== dd, 16 MiB writes, oflag=dsync (one sync per write)"
sync
dd if=/dev/zero of="$dir/dd" bs=16M count=$((mib / 16)) oflag=dsync 2>&1 | tail -1
rm -f "$dir/dd"
