#!/usr/bin/env bash
# Builds the npm package into pkg/ (or $1): the release wasm, wasm-bindgen's
# `--target web` output, and the hand-written files of pkg-template/.
#
#   scripts/build-pkg.sh            # → pkg/
#   WASM_OPT=path/to/wasm-opt scripts/build-pkg.sh   # also size-optimise
#
# Needs the wasm32-unknown-unknown target and the wasm-bindgen CLI at the
# version Cargo.toml pins.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-"$root/pkg"}
target_dir=${CARGO_TARGET_DIR:-"$root/target"}

pinned=$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' "$root/Cargo.toml" | head -n1)
have=$(wasm-bindgen --version | awk '{print $2}')
if [[ -n "$pinned" && "$have" != "$pinned" ]]; then
  echo "build-pkg: wasm-bindgen CLI is $have but Cargo.toml pins $pinned" >&2
  echo "build-pkg: cargo install wasm-bindgen-cli --version $pinned" >&2
  exit 1
fi

cargo build --release --target wasm32-unknown-unknown --lib --manifest-path "$root/Cargo.toml"

rm -rf "$out"
mkdir -p "$out"
wasm-bindgen --target web --out-dir "$out" --out-name rowstream \
  "$target_dir/wasm32-unknown-unknown/release/rowstream.wasm"

if [[ -n "${WASM_OPT:-}" ]]; then
  "$WASM_OPT" -Oz --enable-bulk-memory --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-reference-types \
    --enable-multivalue \
    "$out/rowstream_bg.wasm" -o "$out/rowstream_bg.wasm.opt"
  mv "$out/rowstream_bg.wasm.opt" "$out/rowstream_bg.wasm"
fi

for f in package.json README.md index.js index.d.ts exact-json.js exact-json.d.ts; do
  cp "$root/pkg-template/$f" "$out/$f"
done

# Every file package.json lists must exist.
node -e '
  const fs = require("node:fs"), path = require("node:path");
  const dir = process.argv[1];
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  const missing = pkg.files.filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) { console.error("build-pkg: missing " + missing.join(", ")); process.exit(1); }
' "$out"

gz() { gzip -9 -c "$@" | wc -c; }
wasm=$(wc -c <"$out/rowstream_bg.wasm")
echo "build-pkg: $out"
echo "  rowstream_bg.wasm        $wasm bytes, $(gz "$out/rowstream_bg.wasm") gzipped"
echo "  JS (glue + generated)    $(cat "$out"/index.js "$out"/exact-json.js "$out"/rowstream.js | wc -c) bytes, $(cat "$out"/index.js "$out"/exact-json.js "$out"/rowstream.js | gzip -9 | wc -c) gzipped"
