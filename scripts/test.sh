#!/usr/bin/env bash
# Runs every test of rowstream, installing what is missing first:
#   format and lints (native and wasm32), native tests (core + server),
#   wasm tests in Node and in headless Chromium, the JS suites against the
#   built npm package and a real server, the browser end-to-end test, and a
#   short run of every fuzz target.
# Logs go to test-output/. Exits non-zero on the first failing step, or when
# a runner ran no test at all.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
ROWSTREAM_SETUP_BROWSER=1 ensure_toolchain

# The load suite holds ~1,300 sockets at once: lift the soft descriptor limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

out="test-output"
rm -rf "$out"
mkdir -p "$out"
passed=0
failed=0
started=$(date +%s)

# run_step NAME CMD...: runs CMD, keeps its output in $out/NAME.log.
run_step() {
  local name="$1"
  shift
  say "$name"
  local t0=$(date +%s)
  if ! "$@" >"$out/$name.log" 2>&1; then
    tail -n 80 "$out/$name.log"
    echo "FAILED: $name (full log: $out/$name.log)" >&2
    echo "rowstream tests: $passed passed, $((failed + 1)) failed"
    exit 1
  fi
  echo "    ok in $(($(date +%s) - t0))s" >&2
}

# Sums "test result: ok. N passed; M failed" lines of a cargo/wasm-bindgen log.
count_rust() {
  local log="$1" p f
  p=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
  f=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
  passed=$((passed + p))
  failed=$((failed + f))
  echo "    $p passed, $f failed" >&2
  if [ "$p" -eq 0 ]; then
    echo "FAILED: $log ran no test" >&2
    exit 1
  fi
}

# Sums node --test's "# pass N" / "# fail N".
count_node() {
  local log="$1" p f
  p=$(awk '/^# pass /{s+=$3} END {print s+0}' "$log")
  f=$(awk '/^# fail /{s+=$3} END {print s+0}' "$log")
  passed=$((passed + p))
  failed=$((failed + f))
  echo "    $p passed, $f failed" >&2
  if [ "$p" -eq 0 ]; then
    echo "FAILED: $log ran no test" >&2
    exit 1
  fi
}

run_step fmt cargo fmt --all --check
# `client` adds rowstream::client and the `export` subcommand (and its tests).
run_step clippy-native cargo clippy --all-targets --features server,client -- -D warnings
run_step clippy-wasm32 cargo clippy --target wasm32-unknown-unknown --all-targets -- -D warnings

run_step native-tests cargo test --features server,client
count_rust "$out/native-tests.log"

# The wasm suites through wasm-pack, in Node and in headless Chromium. Each run
# must run every test of the suite: the expected count is the runner's own
# listing of the same build (unit, integration and doc tests).
run_step wasm-list env CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test --target wasm32-unknown-unknown -- --list
wasm_expected=$(grep -c ': test$' "$out/wasm-list.log" || true)

# count_wasm LOG: count_rust, then exactly $wasm_expected tests must have passed.
count_wasm() {
  local log="$1" p
  count_rust "$log"
  p=$(grep -Eo 'test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
  if [ "$p" -ne "$wasm_expected" ]; then
    echo "FAILED: $log ran $p tests, the suite lists $wasm_expected" >&2
    exit 1
  fi
}

run_step wasm-node wasm-pack test --node
count_wasm "$out/wasm-node.log"

# wasm-pack's browser run only picks the tests the runner sends to a browser:
# with no run_in_browser in the code (the same suite also runs in Node),
# WASM_BINDGEN_USE_BROWSER=1 makes it Chromium.
run_step wasm-chromium env WASM_BINDGEN_USE_BROWSER=1 \
  wasm-pack test --headless --chrome --chromedriver /usr/bin/chromedriver
if grep -q 'only configured to run in node.js' "$out/wasm-chromium.log" ||
  ! grep -q 'Running headless tests in Chrome' "$out/wasm-chromium.log"; then
  echo "FAILED: the wasm browser run did not run in Chromium" >&2
  exit 1
fi
count_wasm "$out/wasm-chromium.log"

run_step build-pkg scripts/build-pkg.sh

# The JS suites and the browser e2e test run against the built package (pkg/)
# and a real server binary.
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
run_step build-server cargo build --features server --bin rowstream --example demo_db
export ROWSTREAM_BIN="$target_dir/debug/rowstream"
export ROWSTREAM_DEMO_DB_BIN="$target_dir/debug/examples/demo_db"

ensure_node_modules tests/js
run_step js-tests node --test --test-reporter=tap tests/js/
count_node "$out/js-tests.log"

ensure_node_modules tests/e2e
run_step e2e-tests node --test --test-reporter=tap tests/e2e/
count_node "$out/e2e-tests.log"

# Every cargo-fuzz target for a few seconds: a crash fails the run.
ensure_cargo_fuzz
run_step fuzz-smoke env FUZZ_SECONDS=5 scripts/fuzz-smoke.sh

say "all steps passed in $(($(date +%s) - started))s"
echo "rowstream tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
