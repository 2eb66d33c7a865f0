#!/usr/bin/env bash
# The benchmark command of issue 7: rowstream side by side with what users
# would pick instead, in one run, on the same data. Prints a table with
# ratios and writes BENCHMARKS.md (machine, date, command, table).
#
#   scripts/bench.sh                          # the full run (~5–10 min on 2 cores)
#   ROWSTREAM_BENCH_QUICK=1 scripts/bench.sh  # smoke run, fewer repetitions
#
# Not part of scripts/test.sh. Needs what scripts/setup.sh installs (Rust with
# the wasm32 target, wasm-bindgen-cli at the pinned version, Node 20,
# Debian's chromium); the client benchmarks' npm dev dependencies are
# installed into benches/js/node_modules from benches/js/package-lock.json.
# The generated tables (1M and 10M rows) are cached under
# $CARGO_TARGET_DIR/tmp/rowstream-bench/.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-"$root/target"}
export ROWSTREAM_BENCH_PKG="$CARGO_TARGET_DIR/bench-pkg"

echo "bench: building the npm package into $ROWSTREAM_BENCH_PKG" >&2
scripts/build-pkg.sh "$ROWSTREAM_BENCH_PKG" >&2

if [[ ! -d benches/js/node_modules/playwright-core || benches/js/package-lock.json -nt benches/js/node_modules ]]; then
  echo "bench: npm ci in benches/js" >&2
  (cd benches/js && npm ci --no-audit --no-fund >&2)
fi

cargo bench --features server --bench stream
# Issue 14: `rowstream export` of the 1M-row table vs `curl -o` and the
# sqlite3 CLI, and a resume after 900,000 rows (writes its section of
# BENCHMARKS.md). The sqlite3 column is skipped with a note without the CLI.
if [[ "${ROWSTREAM_BENCH_ONLY:-}" != throughput ]]; then
  cargo bench --features server,client --bench export
fi
# Issue 13: Content-Encoding of the 1M-row stream (identity, zstd, br, gzip)
# on loopback and through a bandwidth-limiting relay at 1 Gbit/s and
# 100 Mbit/s (writes its section of BENCHMARKS.md; ~3 min).
if [[ "${ROWSTREAM_BENCH_ONLY:-}" != throughput ]]; then
  cargo bench --features server --bench compression
fi
# Issue 12: PostgreSQL tenants and two instances (starts its own PostgreSQL
# server; writes its section of BENCHMARKS.md).
if [[ "${ROWSTREAM_BENCH_ONLY:-}" != throughput ]]; then
  source scripts/setup.sh
  ensure_postgres
  cargo bench --features server --bench postgres
fi
