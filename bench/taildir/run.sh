#!/usr/bin/env bash
# Benchmark of the taildir source (see bench.py for what is measured); results go to
# RESULTS.md by hand.
#
#   bench/taildir/run.sh
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
cargo build --release -q -p sluice-agent --bin sluice
python3 "$repo/bench/taildir/bench.py" "$repo/target/release/sluice"
