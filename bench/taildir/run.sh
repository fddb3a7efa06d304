#!/usr/bin/env bash
# Benchmark of the taildir source (see bench.py for what is measured); results go to
# RESULTS.md by hand.
#
#   bench/taildir/run.sh [FILES...]
#
# With FILES (e.g. `1 100`), only the catch-up throughput on that many files is measured.
# SLUICE_BIN picks the binary (default: builds target/release/sluice).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
if [[ -z "${SLUICE_BIN:-}" ]]; then
  cargo build --release -q -p sluice-agent --bin sluice
  SLUICE_BIN=$repo/target/release/sluice
fi
python3 "$repo/bench/taildir/bench.py" "$SLUICE_BIN" "$@"
