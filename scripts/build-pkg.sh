#!/usr/bin/env bash
# Builds the npm package into pkg/ (or $1): `wasm-pack build --target web`
# (release wasm, wasm-bindgen's output, wasm-opt -Oz), then the hand-written
# files of pkg-template/ over wasm-pack's package.json and README.
#
#   scripts/build-pkg.sh            # → pkg/
#   scripts/build-pkg.sh www/pkg    # → anywhere
#
# Offline once scripts/setup.sh has run (it is sourced here and installs what
# is missing): the wasm32 target, the wasm-bindgen CLI at the version
# Cargo.toml pins, wasm-pack, and npm's binaryen in .tools/, whose wasm-opt
# wasm-pack finds on PATH (its flags: [package.metadata.wasm-pack] in
# Cargo.toml). `--mode no-install` keeps wasm-pack from downloading anything.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=${1:-"$root/pkg"}
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

source "$root/scripts/setup.sh"
ensure_wasm_target
ensure_wasm_bindgen
ensure_wasm_pack
ensure_binaryen
export PATH="$ROWSTREAM_TOOLS/node_modules/.bin:$PATH"

rm -rf "$out"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
wasm-pack build "$root" --release --target web --mode no-install \
  --out-dir "$out" --out-name rowstream 2>&1 | tee "$log" >&2
# Without a wasm-opt on PATH wasm-pack would skip it and still succeed.
if ! grep -q 'Optimizing wasm binaries with `wasm-opt`' "$log"; then
  echo "build-pkg: wasm-pack did not run wasm-opt (is $ROWSTREAM_TOOLS/node_modules/.bin on PATH?)" >&2
  exit 1
fi

# wasm-pack's own package.json, README and .gitignore give way to ours.
rm -f "$out/.gitignore"
for f in package.json README.md index.js index.d.ts exact-json.js exact-json.d.ts; do
  cp "$root/pkg-template/$f" "$out/$f"
done

# The package is exactly the files package.json lists.
node -e '
  const fs = require("node:fs"), path = require("node:path");
  const dir = process.argv[1];
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, "package.json"), "utf8"));
  const missing = pkg.files.filter((f) => !fs.existsSync(path.join(dir, f)));
  if (missing.length) { console.error("build-pkg: missing " + missing.join(", ")); process.exit(1); }
  const extra = fs.readdirSync(dir).filter((f) => !pkg.files.includes(f) && f !== "package.json");
  if (extra.length) { console.error("build-pkg: not in package.json files: " + extra.join(", ")); process.exit(1); }
' "$out"

gz() { gzip -9 -c "$@" | wc -c; }
js=("$out/rowstream.js" "$out/index.js" "$out/exact-json.js")
wasm_gz=$(gz "$out/rowstream_bg.wasm")
js_gz=$(cat "${js[@]}" | gzip -9 | wc -c)
echo "build-pkg: $out"
echo "  rowstream_bg.wasm        $(wc -c <"$out/rowstream_bg.wasm") bytes, $wasm_gz gzipped"
echo "  JS (generated + glue)    $(cat "${js[@]}" | wc -c) bytes, $js_gz gzipped"
# BENCHMARKS.md item 8: the wasm and the JS, each gzip -9, within 250 KB.
echo "  package size             $((wasm_gz + js_gz)) bytes gzipped (budget 250000)"
if [ $((wasm_gz + js_gz)) -gt 250000 ]; then
  echo "build-pkg: the package is over its 250 KB gzipped budget" >&2
  exit 1
fi
