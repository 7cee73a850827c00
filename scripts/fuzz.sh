#!/usr/bin/env bash
# Fuzzes the loader (`load`: bytes -> load -> validate -> plan) and the executors (`execute`: load ->
# run in float, through the INT8 simulation and the integer engine) with cargo-fuzz / libFuzzer:
#   bash scripts/fuzz.sh [SECONDS per target, default 60] [TARGET...]
# Extra libFuzzer flags go in FUZZ_ARGS, e.g. FUZZ_ARGS=-runs=10000000 for the long runs.
# Seeds: fuzz/seeds (the malformed suite's small cases), the golden op models and the digits models.
# The corpus grows in fuzz/corpus/<target> (not checked in); a crash is saved under fuzz/artifacts/.
source "$(dirname "$0")/setup.sh"
cd "$ROOT"
if ! cargo fuzz --version >/dev/null 2>&1; then
  say "installing cargo-fuzz (a few minutes)"
  cargo install -q --locked cargo-fuzz
fi
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(load execute)
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
cp fuzz/seeds/*.onnx assets/models/digits_*.onnx "$seeds"/
for f in tests/golden/ops/*/model.onnx; do cp "$f" "$seeds/$(basename "$(dirname "$f")").onnx"; done
# cargo-fuzz passes -Zsanitizer=address; the stable toolchain accepts it with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  say "fuzzing $t for $secs s"
  mkdir -p "fuzz/corpus/$t"
  cargo fuzz run -O "$t" "fuzz/corpus/$t" "$seeds" -- \
    -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 ${FUZZ_ARGS:-}
done
