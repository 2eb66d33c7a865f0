#!/usr/bin/env bash
# Short, CI-friendly run of every cargo-fuzz target: each target replays its
# stored corpus (fuzz/corpus/<target>, if any) and fuzzes on, FUZZ_SECONDS
# (default 10) in total per target. Exits non-zero on the first crash (the
# crashing input is left in fuzz/artifacts/<target>/). Needs cargo-fuzz and a
# nightly-capable rustc (RUSTC_BOOTSTRAP=1 is set here).
#   scripts/fuzz-smoke.sh                 # every target, 10 s each
#   FUZZ_SECONDS=600 scripts/fuzz-smoke.sh framer   # one target, 10 min
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-10}"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi
cargo fuzz build -O
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== $t (${seconds}s)" >&2
  if ! cargo fuzz run -O "$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "FAILED: fuzz target $t crashed (input in fuzz/artifacts/$t/)" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done )' "$log" >&2 || true
done
echo "fuzz smoke: ${#targets[@]} targets passed" >&2
