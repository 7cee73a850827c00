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
# The test binaries run two at a time: several hold one long test that leaves a core idle. Each
# binary's output is kept whole and printed when it ends.
run cargo test --profile ci -p qplay-core -p qplay-cli --no-run
mapfile -t bins < <(cargo test --profile ci -p qplay-core -p qplay-cli --no-run --message-format=json 2>/dev/null | grep -E '"profile":\{[^}]*"test":true' | grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//')
# Longest first (compression, OCR, mixed precision, training, AdaRound, interop), short ones last.
mapfile -t bins < <(printf '%s\n' "${bins[@]}" | awk '{ print (($0 ~ /\/(compress|ocr|mixed|train|adaround|interop)-[0-9a-f]+$/) ? 0 : 1) "\t" $0 }' | sort -s -k1,1 | cut -f2)
outs=$(mktemp -d)
trap 'rm -rf "$log" "$outs"' EXIT
printf '%s\n' "${bins[@]}" | xargs -P 2 -I{} sh -c '"$1" > "$2/$(basename "$1").log" 2>&1; echo $? > "$2/$(basename "$1").rc"' _ {} "$outs"
status=0
for b in "${bins[@]}"; do
  n=$(basename "$b")
  echo "== $n" | tee -a "$log"
  tee -a "$log" < "$outs/$n.log"
  [ "$(cat "$outs/$n.rc")" = 0 ] || { echo "FAILED: $n"; status=1; }
done
[ "$status" = 0 ] || exit 1

say "wasm32 tests (SIMD128, under Node)"
run cargo test --profile ci --target wasm32-unknown-unknown -p qplay-core

say "wasm32 tests of the relaxed-SIMD build (under Node 22, where relaxed SIMD is on)"
# The kernels against their naive twins, and whole networks against the simulation.
PATH="$NODE_RELAXED:$PATH" run cargo test --profile ci --target wasm32-unknown-unknown -p qplay-core --features relaxed --test kernels --test int8

say "building the playground, and the deployable site (served from a sub-path in the browser tests)"
trunk build --release
bash scripts/build-site.sh target/site/qplay

say "browser tests (Playwright + Chromium)"
# The zoo test compares the page with the CLI built above.
export QPLAY_CLI="$ROOT/target/ci/qplay"
run node --test tests/e2e/

passed=$(grep -Eo '([0-9]+ passed;|^# pass [0-9]+)' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '([0-9]+ failed;|^# fail [0-9]+)' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
say "all tests passed in $(( $(date +%s) - start )) s"
echo "tests: $passed passed, $failed failed"
