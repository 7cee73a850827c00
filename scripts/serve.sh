#!/usr/bin/env bash
# Builds the playground and serves it on http://127.0.0.1:8080 (installs what is missing first).
source "$(dirname "$0")/setup.sh"
need_wasm_target
need_wasm_bindgen
need_trunk
cd "$ROOT"
say "building and serving on http://127.0.0.1:8080"
exec trunk serve --release
