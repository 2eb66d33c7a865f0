#!/usr/bin/env bash
# The rowstream demo, in one command:
#   1. installs what the build needs (wasm32 target, wasm-bindgen-cli; scripts/setup.sh),
#   2. builds the npm package (scripts/build-pkg.sh) into www/pkg/, where the page imports it,
#   3. builds the server and the demo database generator (release),
#   4. creates demo-data/demo.db (1,000,000 events + users + products) on the
#      first run and reuses it afterwards,
#   5. serves www/ and the stream API on loopback and prints the URL to open.
#
# Environment:
#   PORT=8080            listen port on 127.0.0.1 (0 picks a free one)
#   DEMO_ROWS=1000000    rows of the events table (a different count regenerates)
#   DEMO_DB=demo-data/demo.db
#   DEMO_SKIP_BUILD=1    reuse the binaries and www/pkg/ of a previous run
# Stop it with Ctrl+C.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
source scripts/setup.sh

port=${PORT:-8080}
rows=${DEMO_ROWS:-1000000}
db=${DEMO_DB:-demo-data/demo.db}
target_dir=${CARGO_TARGET_DIR:-$root/target}
bin="$target_dir/release/rowstream"
gen="$target_dir/release/examples/demo_db"
t0=$(date +%s)

if [ "${DEMO_SKIP_BUILD:-0}" != 1 ] || [ ! -x "$bin" ] || [ ! -x "$gen" ] || [ ! -f www/pkg/index.js ]; then
  ensure_toolchain

  # Straight into www/pkg/ (gitignored): the same files as pkg/, without
  # touching a pkg/ that someone may be testing or packing.
  say "building the wasm package (scripts/build-pkg.sh www/pkg)"
  scripts/build-pkg.sh "$root/www/pkg"

  say "building the server and the demo data generator (release)"
  cargo build --release --features server --bin rowstream --example demo_db
fi

say "demo database: $db"
mkdir -p "$(dirname "$db")"
"$gen" --db "$db" --rows "$rows" --if-missing || {
  echo "demo: could not create $db" >&2
  exit 1
}

audit="$(dirname "$db")/audit.jsonl"
say "starting the server (prepared in $(($(date +%s) - t0))s; audit log: $audit)"

# The server prints "listening on http://ADDR" once it accepts connections;
# turn that into the line to open (it also tells the real port for PORT=0).
"$bin" serve \
  --db "$db" \
  --static-dir www \
  --listen "127.0.0.1:$port" \
  --audit-log "$audit" \
  --set stream.snapshot.ttl_ms=300000 |
  while IFS= read -r line; do
    case "$line" in
      "listening on "*)
        url=${line#listening on }
        printf '\n  \033[1;32mrowstream demo ready\033[0m — open \033[1m%s/\033[0m\n' "$url"
        printf '  %s events in %s; the server is open (no token) and listens on loopback only.\n' \
          "$(echo "$rows" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta')" "$db"
        printf '  Try: Run "All events", press "Drop connection" mid-stream, watch it resume and verify.\n'
        printf '  Ctrl+C stops the server.\n\n'
        ;;
      *) printf '%s\n' "$line" ;;
    esac
  done || {
  status=$?
  echo "demo: the server stopped (exit $status). Port $port busy? Try: PORT=$((port + 1)) scripts/demo.sh" >&2
  exit "$status"
}
