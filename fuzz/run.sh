#!/usr/bin/env bash
# Run every fuzz target for a bounded time, seeded with the spec vectors.
# usage: fuzz/run.sh [SECONDS_PER_TARGET]   (default 60)
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz`); runs on stable through
# RUSTC_BOOTSTRAP=1 (libFuzzer + AddressSanitizer).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
export RUSTC_BOOTSTRAP=1
python3 seed_corpus.py
for t in $(cargo fuzz list); do
  echo "== $t (${secs}s)"
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=4096 2>&1 | tail -3
done
