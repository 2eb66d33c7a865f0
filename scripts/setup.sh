#!/usr/bin/env bash
# Installs what the build and the tests need, skipping whatever is already there.
# Sourced by scripts/test.sh and scripts/demo.sh; safe to run on its own.
#   - the wasm32-unknown-unknown Rust target
#   - wasm-bindgen-cli at exactly the version pinned in Cargo.toml
#   - wasm-pack (builds the npm package, runs the wasm suites) at $WASM_PACK_VERSION
#   - binaryen's wasm-opt from npm (binaryen@$BINARYEN_VERSION) into .tools/ in the
#     clone; Debian's binaryen 108 writes broken modules, and wasm-pack would
#     otherwise try to download one
#   - (tests only, ROWSTREAM_SETUP_BROWSER=1) Debian's chromium + chromium-driver, the
#     sqlite3 CLI the JS suites use to build fixtures, and Debian's postgresql (the
#     PostgreSQL suites start throwaway servers from its binaries)
set -euo pipefail

rowstream_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

# The wasm-pack the scripts drive, and the npm binaryen whose wasm-opt it runs.
WASM_PACK_VERSION=0.15.1
BINARYEN_VERSION=132.0.0
# Where ensure_binaryen installs it; scripts/build-pkg.sh puts its bin on PATH.
ROWSTREAM_TOOLS="$rowstream_root/.tools"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

pinned_wasm_bindgen_version() {
  sed -nE 's/^wasm-bindgen = "=([0-9.]+)".*/\1/p' "$rowstream_root/Cargo.toml" | head -n 1
}

ensure_wasm_target() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    say "installing the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown
  fi
}

ensure_wasm_bindgen() {
  local want have
  want="$(pinned_wasm_bindgen_version)"
  have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
  if [ "$have" != "$want" ]; then
    say "installing wasm-bindgen-cli $want (found '${have:-none}'; takes 5-15 minutes once)"
    # --locked fails on this registry (a locked dependency version is missing).
    cargo install wasm-bindgen-cli --version "$want" --force
  fi
}

ensure_wasm_pack() {
  local have
  have="$(wasm-pack --version 2>/dev/null | awk '{print $2}' || true)"
  if [ "$have" != "$WASM_PACK_VERSION" ]; then
    say "installing wasm-pack $WASM_PACK_VERSION (found '${have:-none}'; takes a few minutes once)"
    cargo install wasm-pack --version "$WASM_PACK_VERSION" --force
  fi
}

ensure_binaryen() { # npm's binaryen (wasm-opt as a Node program) into $ROWSTREAM_TOOLS
  local have
  have="$("$ROWSTREAM_TOOLS/node_modules/.bin/wasm-opt" --version 2>/dev/null || true)"
  if [ "$have" != "wasm-opt version ${BINARYEN_VERSION%%.*} (version_${BINARYEN_VERSION%%.*})" ]; then
    say "installing binaryen@$BINARYEN_VERSION from npm into $ROWSTREAM_TOOLS (wasm-opt)"
    mkdir -p "$ROWSTREAM_TOOLS"
    npm install --prefix "$ROWSTREAM_TOOLS" --no-save --no-audit --no-fund --loglevel=error \
      "binaryen@$BINARYEN_VERSION"
  fi
}

ensure_browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null || ! command -v sqlite3 >/dev/null; then
    say "installing Debian chromium + chromium-driver + sqlite3 (test fixtures)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver sqlite3 >/dev/null
  fi
}

ensure_postgres() { # the PostgreSQL server the PostgreSQL and cluster suites start themselves
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v psql >/dev/null; then
    say "installing Debian postgresql (the tests start throwaway servers of their own)"
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  fi
}

ensure_cargo_fuzz() {
  if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2
  fi
}

ensure_node_modules() { # DIR: npm ci (or install) when node_modules is missing or stale
  local dir="$1"
  [ -f "$dir/package.json" ] || return 0
  if [ ! -d "$dir/node_modules" ] || [ "$dir/package.json" -nt "$dir/node_modules" ]; then
    say "installing npm dev dependencies in $dir"
    if [ -f "$dir/package-lock.json" ]; then
      (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    else
      (cd "$dir" && npm install --no-audit --no-fund --loglevel=error)
    fi
    touch "$dir/node_modules"
  fi
}

ensure_toolchain() {
  command -v node >/dev/null || { echo "node (20+) is required" >&2; exit 1; }
  ensure_wasm_target
  ensure_wasm_bindgen
  ensure_wasm_pack
  ensure_binaryen
  if [ "${ROWSTREAM_SETUP_BROWSER:-0}" = 1 ]; then
    ensure_browser
    ensure_postgres
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  ROWSTREAM_SETUP_BROWSER=1 ensure_toolchain
fi
