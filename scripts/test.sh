#!/usr/bin/env bash
# Runs every test: native (unit, golden vs onnxruntime, kernel proptests, malformed models, AIMET
# comparisons, AdaRound, CLI, QDQ export checked by onnxruntime in Python), the same suites
# compiled to wasm32 and run under Node, then the playground in Chromium. Ends with one line counting every test that ran.
source "$(dirname "$0")/setup.sh"
need_wasm_target
need_wasm_bindgen
need_trunk
need_apt chromium chromium-driver
need_npm
need_python
cd "$ROOT"
start=$(date +%s)
log=$(mktemp)
trap 'rm -f "$log"' EXIT
run() { "$@" 2>&1 | tee -a "$log"; }

say "native tests"
run cargo test --release -p qplay-core -p qplay-cli

say "wasm32 tests (SIMD128, under Node)"
run cargo test --release --target wasm32-unknown-unknown -p qplay-core

say "building the playground"
trunk build --release

say "browser tests (Playwright + Chromium)"
run node --test tests/e2e/

passed=$(grep -Eo '([0-9]+ passed;|^# pass [0-9]+)' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '([0-9]+ failed;|^# fail [0-9]+)' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
say "all tests passed in $(( $(date +%s) - start )) s"
echo "tests: $passed passed, $failed failed"
