#!/usr/bin/env bash
# Runs every test: native (unit, golden vs onnxruntime, kernel proptests, malformed models, CLI),
# the same suites compiled to wasm32 and run under Node, then the playground in Chromium.
source "$(dirname "$0")/setup.sh"
need_wasm_target
need_wasm_bindgen
need_trunk
need_apt chromium chromium-driver
need_npm
cd "$ROOT"
start=$(date +%s)

say "native tests"
cargo test --release -p qplay-core -p qplay-cli

say "wasm32 tests (SIMD128, under Node)"
cargo test --release --target wasm32-unknown-unknown -p qplay-core

say "building the playground"
trunk build --release

say "browser tests (Playwright + Chromium)"
node --test tests/e2e/

say "all tests passed in $(( $(date +%s) - start )) s"
