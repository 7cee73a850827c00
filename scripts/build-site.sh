#!/usr/bin/env bash
# Builds the deployable playground into OUT_DIR: a static folder that works from any sub-path with
# a plain static server, and offline after the first visit. Usage: bash scripts/build-site.sh OUT_DIR
#   - every URL relative (trunk's public URL "./");
#   - the start-up script moved out of index.html and a Content-Security-Policy meta tag added
#     (scripts, workers, fetches and connections from the site's own origin only);
#   - the three wasm files (the page, the worker and its relaxed-SIMD build) optimized by wasm-opt -O2 (binaryen 132 from npm: Debian's 108 breaks
#     wasm-bindgen's externref table), integrity hashes recomputed;
#   - sw.js, a service worker caching every file of the build (versioned by their hash);
#   - .br and .gz next to each compressible file, for hosts that serve them;
#   - _headers: the headers to set where the host allows it (CSP, cross-origin isolation).
source "$(dirname "$0")/setup.sh"
OUT=${1:?usage: bash scripts/build-site.sh OUT_DIR}
need_wasm_target
need_wasm_bindgen
need_trunk
need_npm
need_apt brotli
cd "$ROOT"
OUT=$(realpath -m "$OUT")
say "building the site into $OUT"
rm -rf "$OUT"
trunk build --release --public-url ./ --dist "$OUT" >/dev/null
# -O2, both files at once: binaryen's JavaScript build spends 5 minutes on the worker at -O3 for
# 5 % less size (-O2: 40 s).
pids=()
for w in "$OUT"/*.wasm "$OUT"/relaxed/*.wasm; do
  relaxed=()
  case "$w" in */relaxed/*) relaxed=(--enable-relaxed-simd) ;; esac
  node tests/e2e/node_modules/binaryen/bin/wasm-opt -O2 --enable-bulk-memory --enable-simd --enable-nontrapping-float-to-int \
    --enable-sign-ext --enable-mutable-globals --enable-multivalue --enable-reference-types "${relaxed[@]}" "$w" -o "$w.opt" &
  pids+=($!)
  # Two at a time (2 cores).
  if [ ${#pids[@]} = 2 ]; then
    for p in "${pids[@]}"; do wait "$p" || { echo "wasm-opt failed" >&2; exit 1; }; done
    pids=()
  fi
done
for p in "${pids[@]}"; do wait "$p" || { echo "wasm-opt failed" >&2; exit 1; }; done
for w in "$OUT"/*.wasm "$OUT"/relaxed/*.wasm; do mv "$w.opt" "$w"; done
node scripts/site/finish.mjs "$OUT"
find "$OUT" -type f \( -name '*.html' -o -name '*.js' -o -name '*.css' -o -name '*.wasm' -o -name '*.json' \
  -o -name '*.txt' -o -name '*.md' -o -name '*.onnx' -o -name '*.npy' \) -print0 |
  xargs -0 -P 2 -I{} sh -c 'gzip -9 -k -n -f "$1" && brotli -q 9 -f -k "$1"' _ {}
node scripts/site/finish.mjs "$OUT" --report
