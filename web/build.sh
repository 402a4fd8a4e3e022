#!/usr/bin/env bash
# Builds the page's engine into web/pkg (scorefield_web.js and scorefield_web_bg.wasm): the
# library and web/src compiled for wasm32-unknown-unknown with the small `web` profile, bound
# to JavaScript by wasm-bindgen (the CLI must match the wasm-bindgen crate in Cargo.lock), and
# shrunk by wasm-opt where it is installed. Serve web/ over HTTP to open the page.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --profile web --target wasm32-unknown-unknown -p scorefield-web
wasm-bindgen --target web --no-typescript --out-dir web/pkg \
  target/wasm32-unknown-unknown/web/scorefield_web.wasm
if command -v wasm-opt >/dev/null; then
  wasm-opt -Os --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
    --enable-mutable-globals --enable-reference-types --enable-multivalue \
    web/pkg/scorefield_web_bg.wasm -o web/pkg/scorefield_web_bg.wasm
fi
echo "web/pkg/scorefield_web_bg.wasm: $(stat -c %s web/pkg/scorefield_web_bg.wasm) bytes"
