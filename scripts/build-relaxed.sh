#!/usr/bin/env bash
# Trunk's post-build hook: builds the compute worker a second time with relaxed SIMD (the INT8
# GEMM on i32x4.relaxed_dot_i8x16_i7x16_add_s) into relaxed/ of the build, next to the SIMD128
# worker. app/js/worker_loader.js chooses between them. Only the feature differs, so cargo reuses
# every dependency and rebuilds qplay-core and the app.
set -euo pipefail
: "${TRUNK_STAGING_DIR:?run by trunk (a post_build hook)}"
cd "$(dirname "$0")/.."
profile=()
dir=debug
if [ "${TRUNK_PROFILE:-debug}" = release ]; then profile=(--release); dir=release; fi
cargo build -q "${profile[@]}" --target wasm32-unknown-unknown -p qplay-app --bin worker --features relaxed
mkdir -p "$TRUNK_STAGING_DIR/relaxed"
wasm-bindgen --target no-modules --no-typescript --out-name worker --out-dir "$TRUNK_STAGING_DIR/relaxed" \
  "target/wasm32-unknown-unknown/$dir/worker.wasm"
