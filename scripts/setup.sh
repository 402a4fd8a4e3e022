#!/usr/bin/env bash
# Installs everything the tests need on Debian or Ubuntu, as root (or through sudo): the one list
# that README.md's setup step and CI (.ci/run) both use. Safe to run again.
#   bash scripts/setup.sh            everything the tests use
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update
# Software Vulkan (lavapipe) and EGL/GL (llvmpipe) drivers, which the GPU tests run on without a
# GPU; the SPIR-V and GLSL validators (tests/shaders.rs); a virtual X server and the X client
# libraries winit loads (tests/examples.rs, the live viewer's window); Chromium and ChromeDriver
# (tests/web.rs, WebGPU on Chromium's SwiftShader).
$sudo apt-get install -y --no-install-recommends \
  mesa-vulkan-drivers libvulkan1 libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 \
  spirv-tools glslang-tools \
  xvfb xauth libx11-6 libxcursor1 libxrandr2 libxi6 libxkbcommon-x11-0 \
  chromium chromium-driver
# npm, for binaryen's wasm-opt below (a machine whose Node.js came with its own npm keeps that).
command -v npm >/dev/null || $sudo apt-get install -y --no-install-recommends npm

rustup component add rustfmt clippy
# The browser build: the wasm32 target and the wasm-bindgen CLI at the version of the
# wasm-bindgen crate in Cargo.lock (they must match).
rustup target add wasm32-unknown-unknown
wasm_bindgen=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wasm_bindgen" ]; then
  # No TLS: only wasm-bindgen's test runner downloads anything, and ring takes minutes to build.
  cargo install wasm-bindgen-cli --version "$wasm_bindgen" --no-default-features
fi
# wasm-opt (binaryen 132 from npm; Debian's 108 breaks the module), which shrinks the wasm;
# web/build.sh finds it in /opt/binaryen.
if [ ! -x /opt/binaryen/node_modules/.bin/wasm-opt ]; then
  $sudo npm install --prefix /opt/binaryen --no-audit --no-fund binaryen@132.0.0
fi
echo "setup done: cargo run --release (the main job), cargo test --release (the tests)"
