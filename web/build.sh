#!/usr/bin/env bash
# Builds the page's engine into web/pkg (scorefield_web.js and scorefield_web_bg.wasm): the
# library and web/src compiled for wasm32-unknown-unknown with the small `web` profile, bound
# to JavaScript by wasm-bindgen (the CLI must match the wasm-bindgen crate in Cargo.lock), and
# shrunk by wasm-opt where it is installed. Serve web/ over HTTP to open the page.
set -euo pipefail
cd "$(dirname "$0")/.."

# scripts/setup.sh installs binaryen's wasm-opt there.
export PATH="/opt/binaryen/node_modules/.bin:$PATH"

cargo build --profile web --target wasm32-unknown-unknown -p scorefield-web
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  target/wasm32-unknown-unknown/web/scorefield_web.wasm
# wasm-opt from binaryen 132 or newer (npm install binaryen): older ones, such as Debian
# bookworm's 108, emit a module whose function table the browser refuses.
# (Without wasm-opt the page is built unoptimised: `|| true` keeps pipefail from ending the script.)
opt_version=$( (wasm-opt --version 2>/dev/null || true) | sed -n 's/^wasm-opt version \([0-9]*\).*/\1/p')
if [ -n "$opt_version" ] && [ "$opt_version" -ge 132 ]; then
  wasm-opt -Os --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    web/pkg/scorefield_web_bg.wasm -o web/pkg/scorefield_web_bg.wasm
elif [ -n "$opt_version" ]; then
  echo "wasm-opt $opt_version is older than 132 (it breaks the module): left unoptimised" >&2
fi
echo "web/pkg/scorefield_web_bg.wasm: $(stat -c %s web/pkg/scorefield_web_bg.wasm) bytes"
